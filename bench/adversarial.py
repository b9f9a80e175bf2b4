"""Training-free attacks on the kernel predictor: what FGSM costs.

FGSM on ``--n-test`` test images against a ``--n-train``-point kernel predictor (the
infinite NTK of a one-hidden-layer ReLU network, CIFAR-10-shaped 32x32x3 images), timed in
its parts: the predictor (the n x n kernel and its Cholesky factor), one FGSM step (the
(m, n) kernel block and its VJP) and a prediction. Images are random in [0, 1]: the cost of
the infinite NTK does not depend on their content.

    python bench/adversarial.py [--quick]    # JSON: bench/results/adversarial_<platform>.json
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
from ntklib import adversarial, kernels, models  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 training and 100 test images")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--out", help="JSON path (default bench/results/adversarial_<platform>.json)")
    args = ap.parse_args(argv)
    n, m = (200, 100) if args.quick else (args.n_train, args.n_test)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    Xt = rng.uniform(0, 1, (m, 32, 32, 3)).astype(np.float32)
    yt = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
    k = kernels.infinite_ntk(models.mlp(512, depth=1, W_std=np.sqrt(2), b_std=0.1), dtype="float32")
    k(X[:8], X[:8])  # compile
    t0 = time.perf_counter()
    pred = adversarial.kernel_predictor(k, X, y)
    t_fit = time.perf_counter() - t0
    adversarial.fgsm(pred, Xt[:8], yt[:8], 8 / 255)  # compile the VJP
    t0 = time.perf_counter()
    adv = adversarial.fgsm(pred, Xt, yt, 8 / 255)
    t_fgsm = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred(adv)
    t_pred = time.perf_counter() - t0
    rows = [dict(kernel="infinite_ntk/mlp depth 1", dtype="float32", n_train=n, n_test=m, fit_s=t_fit,
                 fgsm_s=t_fgsm, predict_s=t_pred)]
    print(f"n_train={n} n_test={m} float32: predictor {t_fit:.2f} s, FGSM on {m} images {t_fgsm:.2f} s, "
          f"prediction {t_pred:.2f} s", flush=True)
    save_results("adversarial", args.out, args.quick, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
