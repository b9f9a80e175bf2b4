"""Reconstruction from weights: the authors' quality check, and what one attack step costs.

Quality (Loo et al. 2024, the setting of their digits experiment): digits odd (-1) vs even (+1),
N = 40 training images, two-hidden-layer ReLU MLPs of width 256 and 1024 trained by full-batch
SGD (momentum 0.9, and plain gradient descent for the standard network; float64) to a loss
below 1e-10, standard (gradients at the trained weights, at the initial ones, and at both: the
authors' ``both_kernels``) and linearized; N_R = 2N candidates from the authors' flat start
(the training set's scalar mean + 0.2 N(0, 1)), 5000 Adam steps (lr 0.02); one-to-one matching by
L2, SSIM on 8x8 images with a 3x3 window. Reported: mean SSIM, the fraction above 0.9, the start's
SSIM, and the quality at 1000, 2000 and 5000 steps. The authors' own experiment is MNIST at
28 x 28 (their SSIM window on those images): image size and window differ, so their numbers are
a reference in kind, not a target.

Speed: one attack step (the loss, its gradient by reverse over reverse, Adam) against one
forward-backward pass over the N_R candidates (the gradient of sum f with respect to the
parameters), both jitted, width 1024.

    python bench/reconstruction.py [--quick]    # JSON: bench/results/reconstruction_<platform>.json
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
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ntklib  # noqa: E402,F401  (before JAX: see ntklib/_xla.py)
from kernels import save_results  # noqa: E402
from ntklib import data, models, parallel, reconstruction, train  # noqa: E402


def odd_even(n, seed=0):
    X, labels = data.load_digits()[:2]
    idx = np.random.default_rng(seed).permutation(len(X))[:n]
    return X[idx].astype(np.float32), np.where(labels[idx] % 2 == 0, 1.0, -1.0)


def step_cost(width, n_r, reps=20):
    arch = models.plain_mlp(width, depth=2)
    X, _ = odd_even(n_r)
    p0 = arch.init(0, X.shape[1:])
    p1 = jax.tree_util.tree_map(lambda v: v + 0.01, p0)
    apply = reconstruction.mlp_apply(arch, beta=10.0)
    delta = reconstruction.param_delta(p1, p0)
    a = jnp.ones(n_r) * 0.1
    attack = jax.jit(jax.value_and_grad(lambda Z, b: reconstruction.match_loss(apply, delta, p1, Z, b), argnums=(0, 1)))
    fb = jax.jit(jax.grad(lambda p: jnp.sum(apply(p, jnp.asarray(X)))))
    Xj = jnp.asarray(X)
    jax.block_until_ready(attack(Xj, a))
    jax.block_until_ready(fb(p1))
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(attack(Xj, a))
    t_attack = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(fb(p1))
    t_fb = (time.perf_counter() - t0) / reps
    return dict(width=width, n_r=n_r, attack_step_s=t_attack, forward_backward_s=t_fb, ratio=t_attack / t_fb)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 10, width 64, 300 steps: a smoke run")
    ap.add_argument("--out", help="JSON path (default bench/results/reconstruction_<platform>.json)")
    ap.add_argument("--widths", type=int, nargs="+", help="widths to run (default 256 and 1024)")
    args = ap.parse_args(argv)
    n, widths, steps = (10, [64], 300) if args.quick else (40, args.widths or [256, 1024], 5000)
    snaps = sorted({s for s in (1000, 2000, steps) if s <= steps})
    X, y = odd_even(n)
    rows = []
    forms = ((False, 0.9, "final"), (False, 0.0, "final"), (False, 0.9, "init"), (False, 0.9, "both"),
             (True, 0.9, "init"))  # (linearized, momentum, where the gradients are taken)
    for w in widths:
        arch = models.plain_mlp(w, depth=2)
        victims = {}  # one victim per (linear, momentum): the forms at 0.9 share the standard network
        for lin, momentum, _ in forms:
            if (lin, momentum) not in victims:
                cfg = train.TrainConfig(optimizer="sgd", lr=0.5, momentum=momentum, steps=40000, target_loss=1e-10,
                                        eval_every=100, dtype="float64")
                t0 = time.perf_counter()
                p0, r, _ = reconstruction.train_victim(arch, X, y, cfg, linear=lin)
                victims[(lin, momentum)] = (p0, r, time.perf_counter() - t0)

        def attack(form, arch=arch, victims=victims, w=w):
            lin, momentum, grad_at = form
            p0, r, t_train = victims[(lin, momentum)]
            t0 = time.perf_counter()
            res = reconstruction.reconstruct(arch, p0, r.params, 2 * n, X.shape[1:], steps=steps, snapshots=[0, *snaps],
                                             grad_at=grad_at, init_mean=reconstruction.start_level(X, "flat"),
                                             progress=False)
            t_rec = time.perf_counter() - t0
            by_step = {}
            for s, Xs in res.history["snapshots"].items():
                q = reconstruction.quality(X, Xs)
                by_step[s] = dict(ssim=q["ssim"], above_0_9=float(np.mean(q["per_image"]["ssim"] > 0.9)))
            return dict(width=w, linear=lin, momentum=momentum, grad_at=grad_at, n=n, train_loss=r.final_loss,
                        train_steps=r.steps, train_s=t_train, attack_s=t_rec, match=res.history["match"][-1],
                        by_step=by_step)

        # the attacks are independent: side by side on the cores (attack_s is then a shared-core time)
        for row in parallel.thread_map(attack, forms):
            rows.append(row)
            by_step, last = row["by_step"], row["by_step"][steps]
            kind = ("linearized" if row["linear"] else "standard  ") + f" @ {row['grad_at']:5s}"
            print(f"width {w:5d} {kind} momentum {row['momentum']}: loss {row['train_loss']:.1e} "
                  f"({row['train_steps']} steps); SSIM start {by_step[0]['ssim']:.3f}, " +
                  ", ".join(f"{s} steps {v['ssim']:.3f}" for s, v in by_step.items() if s) +
                  f"; above 0.9: {last['above_0_9']:.2f}; attack {row['attack_s']:.0f} s", flush=True)
    cost = step_cost(64 if args.quick else 1024, 2 * n)
    print(f"one attack step {cost['attack_step_s'] * 1e3:.1f} ms = {cost['ratio']:.1f}x one forward-backward pass over "
          f"{cost['n_r']} images ({cost['forward_backward_s'] * 1e3:.1f} ms), width {cost['width']}", flush=True)
    save_results("reconstruction", args.out, args.quick, rows=rows, step_cost=cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
