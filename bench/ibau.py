"""Does I-BAU's hypergradient matter? I-BAU beside its two ablations, across perturbed portions.

Zeng et al. (ICLR 2022) remove a backdoor by a minimax over one universal perturbation delta*,
updating the network with the implicit hypergradient (a K-term Neumann series). The ablations
(``ntklib.defense_study.IBAU_VARIANTS``): the same delta* with the indirect term left out (K = 0,
adversarial fine-tuning), and plain fine-tuning on the same clean images. The paper's setting
has thousands of clean images; the portion of each minibatch that carries delta* is 1% in the
reference code. Here: sampling-attack victims (two seeds), the clean images the task offers
(digits: the 60 held-out images t; CIFAR-10 truck -> deer at CPU scale: 1000 spare images), and
portions 1%, 10%, 50%; per run the network ASR and clean accuracy after 5 rounds, and the
fixed-point residual and spectral radius of d_delta Phi at delta* (the hypergradient's derivation
assumes a fixed point and a radius below 1).

    python bench/ibau.py [--quick] [--datasets digits cifar10]
    # JSON: bench/results/ibau_<platform>.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import pandas as pd  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import save_results  # noqa: E402
from ntklib import data, defense_study, pipeline  # noqa: E402

SETTINGS = {  # dataset -> the experiment (the victims of notebook 07's defaults and of params/cifar10_defenses.yaml)
    "digits": dict(prepare=dict(width=256, depth=2, train_config=pipeline.victim_config("digits")),
                   budget=10, n_clean=60),
    "cifar10": dict(prepare=dict(source=9, target=4, width=128, depth=2,
                                 train_config=pipeline.victim_config("cifar10", optimizer="adam", lr=1e-3, steps=2000,
                                                                     target_loss=1e-3),
                                 task_kw=dict(n_train_per_class=150, n_eval_per_class=30, n_test_per_class=200,
                                              n_spare_per_class=500)),
                    budget=40, n_clean=1000),
}


def study(dataset: str, portions, seeds, rounds: int) -> pd.DataFrame:
    s = SETTINGS[dataset]
    exp = pipeline.prepare(dataset, progress=False, **s["prepare"])
    sets = [p for p in defense_study.poison_sets(exp, 1, [s["budget"]], seeds=seeds, opt_steps=0)
            if p["attack"] == "sampling"]
    _, victims = defense_study.detection_study(exp, sets, ["spectral"], retrain=False, progress=False)
    n_clean = min(s["n_clean"], len(exp.task.X_spare) or len(exp.task.X_t))
    tables = []
    for portion in portions:
        t = defense_study.ibau_study(exp, sets, victims, n_clean=[n_clean], rounds=rounds,
                                     variants={v: dict(kw, diagnostics=v == "I-BAU") for v, kw in
                                               defense_study.IBAU_VARIANTS.items()}, portion=portion,
                                     progress=False)
        tables.append(t.assign(portion=portion, dataset=dataset))
        last = t[t["round"] == rounds].groupby("variant")[["net_asr", "net_ca"]].mean()
        print(f"{dataset} portion {portion:g} ({n_clean} clean images, {len(sets)} victims): " +
              "; ".join(f"{v} ASR {r.net_asr:.2f} acc {r.net_ca:.2f}" for v, r in last.iterrows()), flush=True)
    return pd.concat(tables, ignore_index=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits, one victim, one portion, 2 rounds")
    ap.add_argument("--datasets", nargs="+", default=["digits", "cifar10"], choices=list(SETTINGS))
    ap.add_argument("--out", help="JSON path (default bench/results/ibau_<platform>.json)")
    args = ap.parse_args(argv)
    datasets = ["digits"] if args.quick else args.datasets
    if "cifar10" in datasets and data.find_cifar10_subset([9, 4]) is None:
        try:
            data.find_cifar10()
        except (FileNotFoundError, ValueError) as e:
            print(f"CIFAR-10 not found ({e}): digits only", flush=True)
            datasets = [d for d in datasets if d != "cifar10"]
    portions, seeds, rounds = ([0.01], [0], 2) if args.quick else ([0.01, 0.1, 0.5], [0, 1], 5)
    tables = []
    for d in datasets:  # saved after each dataset (CIFAR-10 takes the longer part)
        tables.append(study(d, portions, seeds, rounds))
        table = pd.concat(tables, ignore_index=True)
        final = table[table["round"] == rounds].groupby(["dataset", "portion", "variant"])[["net_asr",
                                                                                           "net_ca"]].mean()
        diag = table[(table.variant == "I-BAU") & (table["round"] > 0)].groupby(["dataset", "portion"])[
            ["residual", "spectral_radius"]].agg(["min", "max"])
        save_results("ibau", args.out, args.quick, rows=table.to_dict("records"),
                     final=final.reset_index().to_dict("records"))
    print(final.round(3).to_string())
    print(diag.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
