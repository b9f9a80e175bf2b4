"""Victim training: the sequential reference vs the batched path, next to matmul throughput.

For each case (the digits MLP-256 and CNN-32 victims of notebooks 05/06, and a
CIFAR-10-sized MLP when the archive is found) it trains the same victims

- ``old``: one by one with :func:`ntklib.train.train` (the reference path);
- ``new``: with :func:`ntklib.train.train_many` (vmapped chunks, worker threads),
  for each chunk size in ``--chunks`` (the default one marked);

for a fixed number of steps (no early stop, so both do the same work), and reports
victims per second, ``speedup`` (new / old), and effective training GFLOP/s:
3 x the forward pass's FLOPs (:func:`ntklib.cost.forward_flops`, counted from its jaxpr)
per victim-step. Beside them, in the same run: the throughput of a jitted matrix
product of the victim's own shape (the hidden dense layer, or a convolution's
im2col product) and of a large one (2048^3). A last row times a realistic sweep
(victims stop at their targets) both ways.

    python bench/train.py [--quick]        # JSON: bench/results/train_<platform>.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("NTKLIB_CACHE_DIR", "off")  # time the work, not the cache
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import machine  # noqa: E402
from ntklib import attack, data, models, pipeline, train  # noqa: E402
from ntklib.cost import forward_flops  # noqa: E402  (2 FLOPs per valid multiply-add, from the jaxpr)


def matmul_gflops(m, k, n, repeat=None):
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.random((m, k)), jnp.float32)
    b = jnp.asarray(rng.random((k, n)), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    reps = repeat or max(3, int(2e9 / (2 * m * k * n)))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = f(a, b)
    out.block_until_ready()
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def victims(task, budgets, seeds):
    out = []
    for b in budgets:
        for s in seeds:
            X_p = task.X_cand[attack.sampling_baseline(len(task.X_cand), b, seed=s)]
            out.append((np.concatenate([task.X_d, X_p]), np.concatenate([task.y_d, np.ones(b)])))
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def case(name, arch, task, budgets, seeds, cfg, chunks, matmul_shape):
    vs = victims(task, budgets, seeds)
    cfgs = [cfg.__class__(**{**cfg.__dict__, "seed": i}) for i in range(len(vs))]
    n = int(np.mean([len(x) for x, _ in vs]))
    fl_step = 3 * forward_flops(arch, task.X_d.shape[1:], n)
    train.train_many(arch, vs[:1], cfgs[:1], progress=False, cache=False, chunk=1)  # compile outside the timing
    train.train(arch, *vs[0], cfgs[0], progress=False)
    _, t_old = timed(lambda: [train.train(arch, x, y, c, progress=False) for (x, y), c in zip(vs, cfgs, strict=True)])
    default = train.chunk_size(arch, task.X_d.shape[1:], max(len(x) for x, _ in vs))
    work = len(vs) * cfg.steps * fl_step
    row = dict(case=name, victims=len(vs), steps=cfg.steps, n_rows=n, flops_per_step=fl_step,
               old_s=t_old, old_gflops=work / t_old / 1e9, default_chunk=default, new={})
    mm = matmul_gflops(*matmul_shape)
    print(f"{name}: {len(vs)} victims x {cfg.steps} steps, {fl_step / 1e6:.1f} MFLOP/step; old "
          f"{t_old:.1f} s ({row['old_gflops']:.1f} GFLOP/s); matmul {matmul_shape}: {mm:.1f} GFLOP/s", flush=True)
    for c in sorted(set(chunks) | {default}):
        train.train_many(arch, vs[:2], cfgs[:2], progress=False, cache=False, chunk=c)  # compile
        _, t_new = timed(lambda c=c: train.train_many(arch, vs, cfgs, progress=False, cache=False, chunk=c))
        row["new"][c] = dict(seconds=t_new, gflops=work / t_new / 1e9, speedup=t_old / t_new)
        print(f"   new, chunk {c}{' (default)' if c == default else ''}: {t_new:.1f} s "
              f"({work / t_new / 1e9:.1f} GFLOP/s), speedup {t_old / t_new:.2f}x", flush=True)
    best = row["new"][default]
    row.update(speedup=best["speedup"], new_gflops=best["gflops"], matmul_victim_shape=list(matmul_shape),
               matmul_victim_gflops=mm, fraction_of_matmul=best["gflops"] / mm)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chunks", default=None, help="comma-separated chunk sizes to compare (default 1,2,4,8)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    quick = args.quick
    chunks = [int(c) for c in (args.chunks or ("1,2" if quick else "1,2,4,8")).split(",")]
    seeds = [0, 1] if quick else [0, 1, 2]
    budgets = [1, 5] if quick else [1, 2, 3, 5, 10]
    digits = data.make_task("digits", 7, 1, data.default_trigger("digits", "periodic"),
                            **(pipeline.smoke_task_kw() if quick else {}))
    steps = 30 if quick else 400
    fixed = pipeline.victim_config("digits", steps=steps, target_loss=0.0)
    rows = []
    n = len(digits.X_d)
    rows.append(case("digits mlp-256", models.mlp(256), digits, budgets, seeds, fixed, chunks, (n, 256, 256)))
    rows.append(case("digits cnn-32", models.cnn(32, readout="flatten"), digits, budgets[:2], seeds,
                     fixed.__class__(**{**fixed.__dict__, "steps": steps // 4}), chunks, (n * 64, 9 * 32, 32)))
    cifar = None
    if not quick:
        try:
            cifar = data.make_task("cifar10", 9, 4, data.default_trigger("cifar10", "periodic"),
                                   n_train_per_class=150, n_eval_per_class=50, n_test_per_class=50)
        except FileNotFoundError as e:
            print("CIFAR-10 row skipped:", str(e).splitlines()[0])
    if cifar is not None:
        cfg = pipeline.victim_config("cifar10", steps=100, target_loss=0.0)
        rows.append(case("cifar10 mlp-128 (minibatch 256)", models.mlp(128), cifar, budgets[:2], seeds, cfg,
                         chunks, (256, 3072, 128)))
    big = matmul_gflops(2048, 2048, 2048, repeat=3 if quick else 10)
    print(f"matmul 2048^3: {big:.1f} GFLOP/s")
    # a realistic sweep: victims stop at their targets (notebook 06's victim settings)
    cfg = pipeline.victim_config("digits", steps=60 if quick else 4000, target_loss=1e-3, target_residual=0.1)
    vs = victims(digits, budgets, seeds)
    cfgs = [cfg.__class__(**{**cfg.__dict__, "seed": i}) for i in range(len(vs))]
    arch = models.mlp(256)
    old, t_old = timed(lambda: [train.train(arch, x, y, c, progress=False) for (x, y), c in zip(vs, cfgs, strict=True)])
    new, t_new = timed(lambda: train.train_many(arch, vs, cfgs, progress=False, cache=False))
    sweep = dict(victims=len(vs), old_s=t_old, new_s=t_new, speedup=t_old / t_new,
                 steps_old=[r.steps for r in old], steps_new=[r.steps for r in new],
                 same_stopping_steps=[r.steps for r in old] == [r.steps for r in new])
    print(f"sweep (digits mlp-256, stopping at loss < 1e-3 and residual < 0.1): old {t_old:.1f} s, new "
          f"{t_new:.1f} s, speedup {t_old / t_new:.2f}x; mean steps {np.mean(sweep['steps_new']):.0f}; "
          f"same stopping steps: {sweep['same_stopping_steps']}")
    info = machine()
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"train_{info['platform']}{'_quick' if quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=info, quick=quick, rows=rows, matmul_2048_gflops=big, sweep=sweep),
                              indent=2))
    print("saved", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
