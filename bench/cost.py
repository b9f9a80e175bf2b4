"""The cost model against the clock: each stage timed at two sizes on this machine, beside its formula.

For each stage of :func:`ntklib.cost.study_cost` (victim training, empirical-NTK blocks, greedy,
optimization) the real ntklib call runs at a size and at a larger one; the model's FLOPs of the two
(:func:`ntklib.cost.training_flops`, ``gram_flops``, ``greedy_flops``, ``optimization_flops``,
with F counted from the network's jaxpr) are set against the measured seconds. Measured on 2 cores
(bench/results/cost_cpu.json): victim training follows its formula at about a quarter of the matrix
product's rate; at these digits sizes (n = 120) greedy and the optimization are bound by per-call
overhead (host-side float64 algebra of small matrices, Python per round), far below their FLOP
counts, which only dominate at the paper's sizes. The slope
(extra GFLOP / extra seconds) is the rate the stage reaches once compiled, the intercept its fixed
cost (compilation, dispatch); where the formula is right the slope is steady across sizes.
Beside them, in the same run, this machine's float32 matrix-product rate (2048^3): the ratio of a
stage's slope to it is the efficiency :func:`ntklib.cost.estimate` takes.

    python bench/cost.py [--quick]          # JSON: bench/results/cost_<platform>[_quick].json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("NTKLIB_CACHE_DIR", "off")  # time the work, not the cache
import numpy as np  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import save_results  # noqa: E402
from ntklib import attack, cost, data, kernels, models, train  # noqa: E402
from train import matmul_gflops  # noqa: E402


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (seconds)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    q = args.quick
    task = data.make_task("digits", 7, 1, n_train_per_class=60, n_eval_per_class=20, n_test_per_class=20, seed=0)
    shape = task.X_d.shape[1:]
    arch = models.plain_cnn(16, 2, readout="pool")
    F, P = cost.per_image_flops(arch, shape), cost.n_params(arch, shape)
    params = arch.init(0, shape)
    n, n_x = len(task.X_d), len(task.X_t) + len(task.X_a)
    k = kernels.empirical_ntk(arch.apply_fn, params)
    problem = attack.BackdoorProblem.from_task(task, k, ridge=1e-3)
    X_p = task.X_cand[:3]
    small, large = (1, 3) if q else (1, 4)

    def training(s):
        steps = 40 * s
        cfg = train.TrainConfig(optimizer="adam", lr=0.01, steps=steps, batch_size=64, target_loss=0.0, eval_every=50)
        return (lambda: train.train_many(arch, [(task.X_d, task.y_d)], cfg, progress=False, cache=False),
                cost.training_flops(F, steps, 64, n))

    k_tiles = kernels.empirical_ntk(arch.apply_fn, params, tile=(24, 1024))  # one tile shape: compiled once

    def gram(s):  # K(X_d[:m], X_t): the gradients of X_t are computed once and kept (the Kernel's feature cache)
        m = 24 * s
        return (lambda: np.asarray(k_tiles(task.X_d[:m], task.X_t)),
                cost.gram_flops(F, P, m, len(task.X_t)) - len(task.X_t) * 3 * F)

    def greedy(s):
        return (lambda: attack.greedy_init(problem, task.X_cand, 5 * s, progress=False, blocks=blocks),
                cost.greedy_flops(n, n_x, len(task.X_cand), 5 * s))

    def optimization(s):
        return (lambda: attack.optimize_poisons(problem, X_p, steps=3 * s, progress=False),
                cost.optimization_flops(F, P, n, n_x, len(X_p), 3 * s))

    blocks = None
    attack.greedy_init(problem, task.X_cand, 1, progress=False)  # warm the kernel's feature cache
    mm = matmul_gflops(2048, 2048, 2048)
    rows = []
    for name, make in (("victim training", training), ("kernel blocks", gram), ("greedy", greedy),
                       ("optimization", optimization)):
        make(small)[0]()  # compile
        (f_small, fl_small), (f_large, fl_large) = make(small), make(large)
        t_small, t_large = _seconds(f_small), _seconds(f_large)
        slope = (fl_large - fl_small) / max(t_large - t_small, 1e-9) / 1e9
        rows.append(dict(stage=name, gflop=[fl_small / 1e9, fl_large / 1e9], seconds=[t_small, t_large],
                         slope_gflops=slope, intercept_s=t_small - fl_small / 1e9 / slope, efficiency=slope / mm))
        print(f"{name:16s} model {fl_small / 1e9:7.3f} -> {fl_large / 1e9:7.3f} GFLOP, measured {t_small:6.2f} -> "
              f"{t_large:6.2f} s: {slope:6.2f} GFLOP/s once compiled ({100 * slope / mm:4.1f}% of the 2048^3 "
              f"matmul's {mm:.0f}), fixed {rows[-1]['intercept_s']:.2f} s", flush=True)
    save_results("cost", args.out, q, rows=rows, matmul_2048_gflops=mm, per_image_flops=F, n_params=P,
                 settings=dict(architecture=arch.spec, n=n, n_x=n_x, sizes=[small, large]))


if __name__ == "__main__":
    main()
