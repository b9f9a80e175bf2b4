"""How the attack's time and memory grow with |d|, and the largest d that fits.

For each size n (= |d|), a fresh Python process builds the closed-form problem
(kernel blocks K(X_d, [X_d; X_t; X_a]) in float32, float64 Cholesky of K_dd) and
takes one loss + gradient step with 10 poisons, on random 8x8 images with the
infinite-width ReLU-MLP NTK (the cheapest kernel, so the O(n^2) memory and
O(n^3) solve dominate as they do at scale; image content does not change cost).
Each child reports its wall times and its peak resident memory (ru_maxrss).

The script fits   memory(n) = a n^2 + b   and   time(n) ~ c n^k  (k between the two
largest sizes, where the O(n^3) factorization takes over), then solves
memory(n) = 90% of this machine's RAM for the largest d that fits, and prints
the bytes per kernel entry (the float64 matrices the solve keeps alive).

    python bench/scale.py            # n = 2000 ... 16000 (about 3 minutes on 2 cores)
    python bench/scale.py --quick    # n = 200, 400 (seconds)
    python bench/scale.py --check-largest   # then run once at 95% of the predicted largest
                                            # |d| (minutes; needs the machine's RAM free)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import faulthandler, json, os, resource, sys, time
faulthandler.enable()  # a crash in native code (e.g. BLAS) still says where it was
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from ntklib import attack, kernels, models
n, n_eval, n_p = int(sys.argv[1]), 100, 10
rng = np.random.default_rng(0)
img = lambda m: rng.uniform(0, 1, size=(m, 8, 8, 1)).astype(np.float32)
X_d, X_t, X_a, X_p = img(n), img(n_eval), img(n_eval), img(n_p)
y_d, y_t = np.where(np.arange(n) % 2, 1.0, -1.0), np.where(np.arange(n_eval) % 2, 1.0, -1.0)
k = kernels.infinite_ntk(models.mlp(512), input_shape=(8, 8, 1))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
P = attack.BackdoorProblem(k, X_d, y_d, X_t, y_t, X_a)
t1 = time.perf_counter()
P.evaluate(X_p, grad=True)  # the first step compiles the kernel's new tile shapes
t2 = time.perf_counter()
P.evaluate(np.clip(X_p + 1e-3, 0, 1), grad=True)  # new poisons, compiled shapes
t3 = time.perf_counter()
print(json.dumps(dict(n=n, setup_s=t1 - t0, first_step_s=t2 - t1, step_s=t3 - t2, baseline_rss_mb=rss0,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure(n: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode != 0:
        raise RuntimeError(f"size {n} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    from kernels import machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="*", help="override the sizes n = |d|")
    ap.add_argument("--out", default=None)
    ap.add_argument("--check-largest", action="store_true",
                    help="after the fit, run one size at 95%% of the predicted largest |d|")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([200, 400] if args.quick else [2000, 4000, 8000, 16000])
    info = machine()
    ram = ram_bytes()
    info["ram_gib"] = ram / 2 ** 30
    print("machine:", info)
    rows = []
    for n in sizes:
        r = measure(n)
        rows.append(r)
        print(f"|d|={n:6d}  setup {r['setup_s']:8.2f} s  loss+grad {r['step_s']:7.2f} s "
              f"(first, compiling: {r['first_step_s']:.2f} s)  "
              f"peak RSS {r['peak_rss_mb']:9.0f} MB (baseline {r['baseline_rss_mb']:.0f} MB)", flush=True)
    n = np.array([r["n"] for r in rows], float)
    mem = np.array([r["peak_rss_mb"] for r in rows]) * 2 ** 20
    a, b = np.polyfit(n ** 2, mem, 1)
    def exponent(key):  # local exponent between the two largest sizes
        (n0, t0), (n1, t1) = sorted((r["n"], r[key]) for r in rows)[-2:]
        return float(np.log(t1 / t0) / np.log(n1 / n0))

    k_setup, k_step = exponent("setup_s"), exponent("step_s")
    budget = 0.9 * ram
    n_max = int(np.sqrt(max(budget - b, 0) / a)) if a > 0 else None
    n_big, t_big = max((r["n"], r["setup_s"]) for r in rows)
    model = dict(bytes_per_entry=float(a), fixed_mb=float(b / 2 ** 20), exponent_setup=k_setup,
                 exponent_step=k_step, largest_d=n_max, memory_budget_gib=budget / 2 ** 30,
                 predicted_setup_s_at_largest=float(t_big * (n_max / n_big) ** k_setup) if n_max else None)
    print(f"memory ~ {a:.1f} bytes x n^2 + {b / 2 ** 20:.0f} MB; time ~ n^{k_setup:.2f} (setup), "
          f"n^{k_step:.2f} (loss+grad)")
    if n_max:
        print(f"largest |d| within 90% of {ram / 2 ** 30:.1f} GiB: {n_max} "
              f"(setup predicted {model['predicted_setup_s_at_largest']:.0f} s)")
    else:  # the n^2 term is lost in the noise of the resident memory at these sizes (--quick)
        print("largest |d|: not estimated (peak memory did not grow with n^2 at these sizes; measure larger ones)")
    if args.check_largest and n_max:
        n_check = int(0.95 * n_max)
        print(f"checking |d|={n_check} (predicted peak {(a * n_check ** 2 + b) / 2 ** 30:.1f} GiB) ...", flush=True)
        r = measure(n_check)
        model["checked"] = dict(r, predicted_peak_mb=float((a * n_check ** 2 + b) / 2 ** 20))
        print(f"|d|={n_check}: peak RSS {r['peak_rss_mb'] / 1024:.1f} GiB (predicted "
              f"{model['checked']['predicted_peak_mb'] / 1024:.1f}), setup {r['setup_s']:.0f} s, "
              f"loss+grad {r['step_s']:.1f} s", flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"scale_{info['platform']}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=info, kernel="infinite_ntk/mlp-512 float32, solves float64",
                                   rows=rows, model=model), indent=2))
    print("saved", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
