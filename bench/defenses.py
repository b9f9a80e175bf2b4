"""What the defenses cost: each detector on a training set of |d| points, one I-BAU round.

Detectors run on synthetic representations shaped like a victim's penultimate activations
(``--dim`` = 256 features; half of the points in the target class, ``--poisons`` of them shifted
along one direction) and on their linear Gram matrix for the kernel forms (the datamodel and
after-kernel scores over all |d| points). Their cost does not depend on what the features mean;
the ROC AUC printed for the representation detectors only checks that they ran on the planted
direction (the datamodel and attribution scores need a real backdoor: notebook 07).
One I-BAU round (the reference's 50 outer steps of 100 images, K = 5) runs on the digits
task's default victim (MLP 256 x 2) with its 60 held-out clean images.

    python bench/defenses.py [--quick]    # JSON: bench/results/defenses_<platform>.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import numpy as np  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import save_results  # noqa: E402
from ntklib import defenses, pipeline, unlearning  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="|d| = 200, 1 I-BAU outer step")
    ap.add_argument("--n", type=int, default=2000, help="|d|: training points")
    ap.add_argument("--dim", type=int, default=256, help="representation width")
    ap.add_argument("--poisons", type=int, default=50)
    ap.add_argument("--out", help="JSON path (default bench/results/defenses_<platform>.json)")
    args = ap.parse_args(argv)
    n, n_p = (200, 10) if args.quick else (args.n, args.poisons)
    rng = np.random.default_rng(0)
    R_all = rng.standard_normal((n, args.dim)) * np.linspace(2.0, 0.2, args.dim)
    y = np.where(np.arange(n) < n // 2, -1.0, 1.0)
    R_all[n - n_p:, 3] += 8.0  # the poisons: the last n_p points of the target class
    y[n - n_p:] = 1.0
    rows_t = defenses.class_rows(y)
    R, K_all = R_all[rows_t], R_all @ R_all.T
    K = K_all[np.ix_(rows_t, rows_t)]
    truth = np.zeros(n, bool)
    truth[n - n_p:] = True
    runs = {
        "spectral": lambda: defenses.spectral_signature_scores(R),
        "spectral (kernel form)": lambda: defenses.kernel_spectral_scores(K),
        "activation clustering": lambda: defenses.activation_clustering(R).scores,
        "SPECTRE": lambda: defenses.spectre(R, n_p).scores,
        "datamodel (1000 subsets) + search": lambda: defenses.strongest_feature_scores(
            defenses.kernel_datamodels(K_all, y, n_subsets=1000)),
        "leave-one-out proxy + search": lambda: defenses.strongest_feature_scores(defenses.hat_datamodels(K_all, y)),
        "after-kernel attribution (100 queries)": lambda: defenses.representer_scores(K_all, y, K_all[-100:]),
    }
    out_rows = []
    for name, fn in runs.items():
        scores, s = timed(fn)
        row = dict(what=name, n=n, points_scored=len(scores), seconds=s)
        note = ""
        if len(scores) == len(rows_t):  # the representation detectors: a sanity check that they worked
            row["auc"] = defenses.detection_metrics(scores, truth[rows_t])["auc"]
            note = f" (ROC AUC {row['auc']:.3f} on the planted direction)"
        out_rows.append(row)
        print(f"{name:42s} |d|={n}: {s:7.2f} s{note}", flush=True)
    exp = pipeline.prepare("digits", width=256, depth=2, progress=False)
    steps = 1 if args.quick else 50
    unlearning.ibau(exp.arch, exp.clean.params, exp.task.X_t, exp.task.y_t, rounds=1, outer_steps=1,
                    progress=False)  # compile
    _, s = timed(lambda: unlearning.ibau(exp.arch, exp.clean.params, exp.task.X_t, exp.task.y_t, rounds=1,
                                         outer_steps=steps, progress=False))
    out_rows.append(dict(what=f"I-BAU round ({steps} outer steps, K = 5)", n=len(exp.task.X_t), seconds=s))
    print(f"{'I-BAU round, digits MLP 256 x 2':42s} {steps} outer steps: {s:7.2f} s", flush=True)
    save_results("defenses", args.out, args.quick, rows=out_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
