"""Kernel benchmark: throughput, memory, and the cost of a loss gradient.

Prints tables and saves JSON to bench/results/kernels_<platform>.json:

1. kernel entries per second for each kernel kind, dtype and size n (an n x n
   block, after one warm-up call that compiles the tile shape), with the process's
   peak resident memory after each measurement and a fitted exponent of time ~ n^k;
2. the ratio (time of one loss + gradient with respect to X_p through the kernel) /
   (time to evaluate the kernel blocks K(X_p, X_p) and K(X_p, [X_d; X_t; X_a]) that
   step needs, in the optimization loop's steady state: new poisons every step, the
   empirical NTK's Jacobian of the fixed set cached). The usual autodiff bound puts
   it near 3; the VJP alone is timed too (the rest of a step is float64 algebra).

    python bench/kernels.py            # the CPU set (a few minutes on 2 cores)
    python bench/kernels.py --quick    # seconds; the test suite runs this
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ntklib import attack, data, kernels, models  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat=2, setup=lambda: ()):
    """Best wall time of fn(*setup()) over ``repeat`` calls (setup not timed), after a
    warm-up; a call that takes over a second is timed once."""
    args = setup()
    t0 = time.perf_counter()
    fn(*args)  # warm-up: compiles the tile shapes
    if time.perf_counter() - t0 > 1.0:
        repeat = 1
    best = np.inf
    for _ in range(repeat):
        args = setup()
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> dict:
    dev = jax.devices()[0]
    return dict(platform=dev.platform, device=getattr(dev, "device_kind", str(dev)), n_devices=jax.device_count(),
                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), jax=jax.__version__)


def save_results(name: str, out, quick: bool, **payload) -> Path:
    """Write ``payload`` with the machine's description to ``out`` (default
    bench/results/<name>_<platform>[_quick].json) and say where."""
    info = machine()
    path = Path(out) if out else Path(__file__).resolve().parent / "results" / (
        f"{name}_{info['platform']}{'_quick' if quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine=info, quick=quick, **payload), indent=2, default=str))
    print("written to", path)
    return path


def kernel_cases(shape, quick):
    mlp, cnn = models.mlp(512), models.cnn(32)
    p_mlp, p_cnn = mlp.init(0, shape), cnn.init(0, shape)
    cases = {
        "infinite_ntk/mlp": lambda dt: kernels.infinite_ntk(mlp, dtype=dt, input_shape=shape),
        "infinite_ntk/cnn-flatten": lambda dt: kernels.infinite_ntk(cnn, dtype=dt, input_shape=shape),
        "empirical_ntk/mlp-512": lambda dt: kernels.empirical_ntk(mlp.apply_fn, p_mlp, dtype=dt),
        "empirical_ntk/cnn-32": lambda dt: kernels.empirical_ntk(cnn.apply_fn, p_cnn, dtype=dt),
        "user/rbf": lambda dt: kernels.rbf(2.0, dtype=dt),
    }
    if quick:
        cases = {k: v for k, v in cases.items() if k in ("infinite_ntk/mlp", "empirical_ntk/mlp-512", "user/rbf")}
    return cases


def throughput(X, sizes, dtypes, quick):
    rows = []
    for name, make in kernel_cases(X.shape[1:], quick).items():
        for dt in dtypes:
            if dt == "float64" and name == "empirical_ntk/cnn-32":
                print(f"{name:26s} float64  skipped: float64 convolutions are ~600x slower on CPU "
                      "(31 s for a 100 x 100 block, measured)", flush=True)
                continue
            k = make(dt)
            for n in (sizes if dt == "float32" else sizes[:2]):
                # a fresh block each time: drop the empirical NTK's cached Jacobians first
                t = timed(lambda k=k, n=n: (k.clear_cache(), k(X[:n])), repeat=1 if quick else 2)
                rows.append(dict(kernel=name, dtype=dt, n=n, seconds=t, entries_per_s=n * n / t,
                                 peak_rss_mb=peak_rss_mb(), tile=list(k.tile)))
                print(f"{name:26s} {dt:8s} n={n:5d}  {t:8.3f} s  {n * n / t:12.0f} entries/s  "
                      f"peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    fits = {}
    for name in {r["kernel"] for r in rows}:
        for dt in dtypes:
            pts = [(r["n"], r["seconds"]) for r in rows if r["kernel"] == name and r["dtype"] == dt]
            if len(pts) >= 2:
                n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
                fits[f"{name}/{dt}"] = float(np.polyfit(n, t, 1)[0])
    return rows, fits


def gradient_ratio(task, n_p, quick):
    rows = []
    shape = task.X_d.shape[1:]
    mlp, cnn = models.mlp(512), models.cnn(32)
    cases = {"infinite_ntk/mlp": kernels.infinite_ntk(mlp, input_shape=shape),
             "empirical_ntk/mlp-512": kernels.empirical_ntk(mlp.apply_fn, mlp.init(0, shape))}
    if not quick:
        cases["empirical_ntk/cnn-32"] = kernels.empirical_ntk(cnn.apply_fn, cnn.init(0, shape))
        cases["infinite_ntk/cnn-flatten"] = kernels.infinite_ntk(cnn, input_shape=shape)
    rng = np.random.default_rng(0)
    for name, k in cases.items():
        P = attack.BackdoorProblem.from_task(task, k)
        base = task.X_cand[:n_p]

        def fresh(base=base):  # every step of the optimization loop sees new poisons (no cached features)
            return (np.clip(base + 1e-3 * rng.standard_normal(base.shape), 0, 1),)

        # the blocks one step needs, K(X_p, X_p) and K(X_p, X_other), as in the optimization loop
        # (where the empirical NTK's Jacobian of the fixed X_other is cached)
        t_blocks = timed(lambda X_p, k=k, P=P: (k(X_p), k(X_p, P.X_other)), repeat=5, setup=fresh)
        t_step = timed(lambda X_p, P=P: P.evaluate(X_p, grad=True), repeat=5, setup=fresh)
        # the backward pass alone (for a feature kernel it includes the features of X_p,
        # which inside a step are shared with the blocks); the rest of a step is float64 algebra
        cot, C = rng.standard_normal((n_p, len(P.X_other))), rng.standard_normal((n_p, n_p))
        t_vjp = timed(lambda X_p, k=k, P=P, cot=cot, C=C: k.vjp(X_p, P.X_other, cot, cot_self=C), repeat=5,
                      setup=fresh)
        rows.append(dict(kernel=name, n_p=n_p, n_other=len(P.X_other), kernel_blocks_s=t_blocks,
                         loss_grad_s=t_step, vjp_s=t_vjp, ratio=t_step / t_blocks))
        print(f"{name:26s} n_p={n_p:3d} others={len(P.X_other):5d}  blocks {t_blocks:.4f} s  "
              f"loss+grad {t_step:.4f} s  (vjp alone {t_vjp:.4f} s)  ratio {t_step / t_blocks:.2f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (under a minute)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/kernels_<platform>[_quick].json)")
    ap.add_argument("--no-cifar", action="store_true",
                    help="skip the gradient ratio on CIFAR-10 sizes (it runs when the archive is found)")
    args = ap.parse_args(argv)
    info = machine()
    print("machine:", info)
    X = data.load_digits()[0]
    sizes = [50, 100] if args.quick else [100, 200, 400, 800]
    dtypes = ["float32"] if args.quick else ["float32", "float64"]
    rows, fits = throughput(X, sizes, dtypes, args.quick)
    print("fitted exponent k in time ~ n^k:", json.dumps({k: round(v, 2) for k, v in sorted(fits.items())}))
    task = data.make_task(n_train_per_class=30 if args.quick else None)
    grad = gradient_ratio(task, 2 if args.quick else 10, args.quick)
    if not (args.quick or args.no_cifar):
        try:
            ct = data.make_task("cifar10", 9, 4, n_train_per_class=250, n_eval_per_class=50, n_test_per_class=10)
        except FileNotFoundError as e:
            print(f"CIFAR-10 sizes skipped: {e}".splitlines()[0])
        else:
            grad += [dict(r, dataset="cifar10") for r in gradient_ratio(ct, 10, args.quick)]
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"kernels_{info['platform']}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=info, quick=args.quick, throughput=rows, exponents=fits,
                                   gradient_ratio=grad), indent=2))
    print("saved", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
