"""What the input checks cost next to the work they guard (issue: "validation costs
under 1% of a notebook's runtime").

1. ``pipeline``: the paper's pipeline at notebook 05's defaults (digits 7 -> 1, MLP-256,
   empirical NTK, budgets 1-10, 3 seeds, 30 L-BFGS-B steps, victims trained to fit),
   cache off, timed whole and by kind of work (:mod:`ntklib.profiling`, where every
   validator of :mod:`ntklib.validation` counts under "validation").
2. ``checks``: single validators on the largest inputs they see: the image batches of the
   digits task and of a CIFAR-10-sized task (8000 training images, 32 x 32 x 3).
3. ``notebooks``: the "validation" share of each notebook in the last ``make figures``
   (``bench/results/figures_cpu.json``), when that run recorded it.

    python bench/validation.py [--quick]     # JSON: bench/results/validation_<platform>.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NTKLIB_CACHE_DIR", "off")  # time the work, not the cache
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import numpy as np  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import machine  # noqa: E402
from ntklib import data, params, pipeline, profiling, train  # noqa: E402
from ntklib import validation as V  # noqa: E402


def timed(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def pipeline_share(quick: bool) -> dict:
    cfg = pipeline.victim_config("digits", steps=4000, lr=2.0, target_loss=1e-3, target_residual=0.1)
    kw = dict(smoke=True) if quick else dict(width=256, budgets=(1, 2, 3, 5, 10), seeds=(0, 1, 2), opt_steps=30,
                                             train_config=cfg)
    profiling.reset()
    t0 = time.perf_counter()
    pipeline.run(progress=False, **kw)
    wall = time.perf_counter() - t0
    tot = profiling.totals()
    row = dict(wall_s=wall, **{k.replace(" ", "_") + "_s": v for k, v in tot.items()})
    row["validation_share"] = tot["validation"] / wall
    print(f"pipeline ({'smoke' if quick else 'notebook 05 defaults'}): {wall:.1f} s; validation "
          f"{tot['validation']:.3f} s = {100 * row['validation_share']:.3f}% "
          f"(victims {tot['victim training']:.1f} s, kernels {tot['kernel evaluation']:.1f} s, "
          f"greedy {tot['greedy']:.1f} s, optimization {tot['optimization']:.1f} s)", flush=True)
    return row


def single_checks(quick: bool) -> list[dict]:
    task = data.make_task("digits")
    n_cifar = 1000 if quick else 8000
    cifar = np.random.default_rng(0).uniform(0, 1, (n_cifar, 32, 32, 3)).astype(np.float32)
    cases = {
        f"check_images digits d {task.X_d.shape}": lambda: V.check_images(task.X_d, "X_d"),
        f"check_images CIFAR-sized {cifar.shape}": lambda: V.check_images(cifar, "X_d"),
        f"check_labels digits y_d {task.y_d.shape}": lambda: V.check_labels(task.y_d, "y_d", len(task.X_d)),
        "TrainConfig() (10 fields)": lambda: train.TrainConfig(),
        "params.check (notebook 05's parameters)": lambda: params.check(
            "05_transfer_to_networks", params.defaults("05_transfer_to_networks")),
        "check_int": lambda: V.check_int(5, "budget", min=1, max=10),
    }
    rows = []
    for name, fn in cases.items():
        t = timed(fn)
        rows.append(dict(check=name, seconds=t))
        print(f"{name:48s} {1e3 * t:9.3f} ms", flush=True)
    return rows


def notebook_shares() -> list[dict]:
    path = ROOT / "bench" / "results" / "figures_cpu.json"
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    rows = []
    for nb, prof in res.get("notebook_profile", {}).items():
        if "validation" in prof:
            wall = res["notebook_seconds"][nb]
            rows.append(dict(notebook=nb, seconds=wall, validation_s=prof["validation"],
                             share=prof["validation"] / wall))
            print(f"make figures, {nb:26s} {wall:7.1f} s, validation {prof['validation']:.3f} s "
                  f"({100 * rows[-1]['share']:.3f}%)")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke-sized pipeline, smaller batches")
    ap.add_argument("--out", help="JSON path (default bench/results/validation_<platform>.json)")
    args = ap.parse_args(argv)
    info = machine()
    rows = single_checks(args.quick)
    pipe = pipeline_share(args.quick)
    nbs = notebook_shares()
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"validation_{info['platform']}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=info, quick=args.quick, checks=rows, pipeline=pipe, notebooks=nbs),
                              indent=2))
    print("written to", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
