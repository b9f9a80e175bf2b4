"""Plausible one-line bugs, applied one at a time to a scratch copy of the working tree, each
against the tests that must catch it: every one must fail at least one test ("killed").

Three sets: ``issue`` (the bugs issue 27 lists, and the settings it added), ``open_gaps`` (mutmut's
survivors that the triage had left open, without a test) and ``reconstruction``
(a hand-written set for :mod:`ntklib.reconstruction`, written before mutmut's full run of the
module, about 2 h on 2 cores, was done; it runs in minutes: the smoothing, the linearization, the
gradient sum and the match loss, the penalties, the start, SSIM, the matching, the quality
measures and the study plumbing of notebook 09).

    python bench/listed_mutants.py                      # about 3 minutes: bench/results/listed_mutants.json
    python bench/listed_mutants.py --set reconstruction # bench/results/mutation_reconstruction_by_hand.json
    python bench/listed_mutants.py --set open_gaps      # bench/results/mutation_open_gaps_by_hand.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from mutation import copy_tree  # noqa: E402

MUTANTS = [  # (name, file, original line fragment, mutated fragment, tests that must kill it)
    ("kernel datamodel returns its transpose", "ntklib/defenses.py",
     "return np.linalg.solve(G, Mc.T @ (margins - margins.mean(0)))",
     "return np.linalg.solve(G, Mc.T @ (margins - margins.mean(0))).T", "tests/test_defenses.py -k datamodel"),
    ("strongest-feature diagonal with the wrong sign", "ntklib/defenses.py",
     "np.fill_diagonal(B, -rowsum * k / n)", "np.fill_diagonal(B, rowsum * k / n)",
     "tests/test_defenses.py -k strongest"),
    ("SPECTRE whitens with the plain covariance", "ntklib/defenses.py",
     "white = Y @ _inv_sqrt(np.cov(Y[sel].T, bias=True))", "white = Y @ _inv_sqrt(np.cov(Y.T, bias=True))",
     "tests/test_defenses.py -k spectre"),
    ("PGD takes every gradient at the clean image", "ntklib/adversarial.py",
     "g = predictor.input_grad(x, -y)  # d/dx sum_i -y_i f(x_i)", "g = predictor.input_grad(X0, -y)",
     "tests/test_adversarial.py -k pgd"),
    ("network_pgd descends instead of ascending", "ntklib/adversarial.py",
     "g = jax.grad(margin)(u)", "g = -jax.grad(margin)(u)", "tests/test_adversarial.py -k network_pgd"),
    ("Neumann series one term short", "ntklib/unlearning.py",
     "for _ in range(K - 1):", "for _ in range(K - 2):", "tests/test_defenses.py -k neumann"),
    ("Neumann series one term long", "ntklib/unlearning.py",
     "for _ in range(K - 1):", "for _ in range(K):", "tests/test_defenses.py -k neumann"),
    ("defense_study's truth mask misaligned with the poisons", "ntklib/defense_study.py",
     "truth = np.r_[np.zeros(n_d, bool), np.ones(len(X) - n_d, bool)]",
     "truth = np.r_[np.ones(len(X) - n_d, bool), np.zeros(n_d, bool)]", "tests/test_defenses.py -k aligns"),
    ("both_kernels drops the gradient at theta_0", "ntklib/reconstruction.py",
     "total = jax.tree_util.tree_map(lambda d, g: d - g, total, gradient_sum(apply, p, X, a))",
     "total = jax.tree_util.tree_map(lambda d, g: d - g, total, gradient_sum(apply, points[0], X, a))",
     "tests/test_reconstruction.py -k both_kernels"),
    # the settings this change added (each one line, each with its test)
    ("I-BAU ignores fixed_point_batch (always the current batch)", "ntklib/unlearning.py",
     'xf, yf = (x_first, y_first) if fixed_point_batch == "first" else (xb, yb)', "xf, yf = (xb, yb)",
     "tests/test_defenses.py -k ablations"),
    ("I-BAU's inner maximization uses the true labels whatever inner_labels says", "ntklib/unlearning.py",
     'y_inner = arch.predict_labels(params, X) if inner_labels == "predicted" else y', "y_inner = y",
     "tests/test_defenses.py -k own_labels"),
    ("distillation intervals not paired (difference taken from zero)", "ntklib/reconstruction.py",
     "        d = a - ref", "        d = a", "tests/test_reconstruction.py -k distillation"),
    ("the attack starts from the private mean image", "ntklib/reconstruction.py",
     'return X.mean(axis=(0, 1, 2)).astype(np.float32)', 'return X.mean(0).astype(np.float32)',
     "tests/test_reconstruction.py -k flat"),
]

R_TESTS = "tests/test_reconstruction.py tests/test_defaults.py"
RECONSTRUCTION = [  # (name, original line fragment, mutated fragment): all in ntklib/reconstruction.py
    ("softplus without its beta inside", "h = jax.nn.softplus(beta * h) / beta", "h = jax.nn.softplus(h) / beta"),
    ("the readout smoothed too", "            if i < len(params) - 1:\n                h = jax.nn.softplus",
     "            if i < len(params):\n                h = jax.nn.softplus"),
    ("NTK scaling by fan-out", "h = W_std / jnp.sqrt(W.shape[0]) * (h @ W) + b_std * b",
     "h = W_std / jnp.sqrt(W.shape[1]) * (h @ W) + b_std * b"),
    ("linearization's tangent reversed", "lambda a, b: a - b, params, base", "lambda a, b: b - a, params, base"),
    ("linearization subtracts its first-order term", "        return f0 + df", "        return f0 - df"),
    ("gradient sum with the cotangent negated", "return vjp(alpha)[0]", "return vjp(-alpha)[0]"),
    ("weight change theta_0 - theta_f", "(np.asarray(a, np.float64) - np.asarray(b, np.float64))",
     "(np.asarray(b, np.float64) - np.asarray(a, np.float64))"),
    ("match loss adds the gradient sum", "lambda d, g: d - g, total", "lambda d, g: d + g, total"),
    ("match loss not relative", "return _sq_norm(total) / _sq_norm(delta)", "return _sq_norm(total)"),
    ("TV compares a row with itself", "(X[:, 1:] - X[:, :-1]) ** 2", "(X[:, 1:] - X[:, 1:]) ** 2"),
    ("range penalty on positive pixels", "jax.nn.relu(-X) ** 2 + jax.nn.relu(X - 1) ** 2",
     "jax.nn.relu(X) ** 2 + jax.nn.relu(X - 1) ** 2"),
    ("range penalty not scaled by N_R", "range_weight * n_candidates * jnp.mean", "range_weight * jnp.mean"),
    ("start noise 0.02 instead of 0.2", "X0 = (mean + 0.2 * rng", "X0 = (mean + 0.02 * rng"),
    ("alpha drawn from U[0, 0.5]", "a0 = rng.uniform(-0.5, 0.5,", "a0 = rng.uniform(0.0, 0.5,"),
    ("grad_at=init takes the trained weights", '(params_init,) if grad_at == "init"',
     '(params_final,) if grad_at == "init"'),
    ("history's match column logs the total loss", 'hist["match"].append(float(m))',
     'hist["match"].append(float(loss))'),
    ("SSIM's two constants swapped", "c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2",
     "c1, c2 = (0.03 * data_range) ** 2, (0.01 * data_range) ** 2"),
    ("SSIM covariance without its mean product", "sxy = _filter(x * y, w) - mx * my",
     "sxy = _filter(x * y, w) + mx * my"),
    ("SSIM structure term without its 2", "(2 * sxy + c2)", "(sxy + c2)"),
    ("SSIM default window 3 on 16-pixel images", "(7 if side >= 16 else 3)", "(7 if side > 16 else 3)"),
    ("Gaussian window off-centre", "r = np.arange(size) - (size - 1) / 2", "r = np.arange(size) - size / 2"),
    ("matching maximizes the distance", "rows, cols = linear_sum_assignment(D)",
     "rows, cols = linear_sum_assignment(-D)"),
    ("matching distance with the cross term's sign flipped", "(b * b).sum(1)[None] - 2 * a @ b.T, 0))\n    rows",
     "(b * b).sum(1)[None] + 2 * a @ b.T, 0))\n    rows"),
    ("beats_unseen counts the reconstructions farther than the unseen", 'np.mean(m["l2"] < nearest)',
     'np.mean(m["l2"] > nearest)'),
    ("nearest unseen image is the farthest", "2 * a @ b.T, 0)).min(1)", "2 * a @ b.T, 0)).max(1)"),
    ("distilled ridge not relative to the kernel's scale", "ridge=_val.check_float(ridge, \"ridge\", min=0) * K_scale)",
     "ridge=_val.check_float(ridge, \"ridge\", min=0))"),
    ("grey start at 0 instead of 0.5", 'np.float32(0.5) if init == "grey"', 'np.float32(0.0) if init == "grey"'),
    ("baseline images drawn with replacement", "choice(len(X_other), n, replace=False)",
     "choice(len(X_other), n, replace=True)"),
    ("linear=True trains the standard network", "net = linearized(arch, p0) if linear else arch", "net = arch"),
    ("start_ssim measured on the final candidates", 'quality(X, res.history["snapshots"][0], threshold)',
     "quality(X, res.X, threshold)"),
    ("linearized networks attacked at the final weights by default", '("init" if linear else "final")',
     '("final" if linear else "init")'),
    ("N candidates instead of 2N", "res = reconstruct(arch, p0, r.params, 2 * len(X)",
     "res = reconstruct(arch, p0, r.params, len(X)"),
    ("n_over_w inverted", "n_over_w=len(X) / width", "n_over_w=width / len(X)"),
    ("the N sweep runs only both_kernels", 'if v.get("grad_at") != "both"]', 'if v.get("grad_at") == "both"]'),
    ("distillation scores the starting images as reconstructions",
     '("reconstructions (2N)", R, net.predict_labels(pf, R))',
     '("reconstructions (2N)", start, net.predict_labels(pf, start))'),
    ("t quantile with n instead of n - 1 degrees of freedom", "stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1)",
     "stats.t.ppf(0.5 + confidence / 2, len(seeds))"),
    ("interval from the biased standard deviation", "half, half_d = q * a.std(ddof=1)", "half, half_d = q * a.std()"),
    # the studies' runs side by side (ntklib.parallel): rows must come back to their own settings
    ("scaling_study's rows not mapped back from the costliest-first order",
     "done = dict(zip(order, _rows([jobs[i] for i in order], workers), strict=True))",
     "done = dict(zip(range(len(order)), _rows([jobs[i] for i in order], workers), strict=True))"),
    ("study's setting column names the merged arguments, not what the entry changed",
     "return pd.DataFrame(_rows([(X, y, X_unseen, kw, a) for kw, a in zip(settings, args, strict=True)], workers))",
     "return pd.DataFrame(_rows([(X, y, X_unseen, a, a) for kw, a in zip(settings, args, strict=True)], workers))"),
    ("distillation keeps only the last seed's rows",
     "rows = [row for part in _parallel.thread_map(one_seed, seeds, workers=workers) for row in part]",
     "rows = _parallel.thread_map(one_seed, seeds, workers=workers)[-1]"),
]
OPEN_GAPS = [  # mutmut's survivors the triage had left open (no test yet), applied by hand
    ("pgd drops random_start (always from the clean image)", "ntklib/adversarial.py",
     "return attack(predictor, X, y, eps, norm, steps=steps, step_size=step_size, random_start=random_start,",
     "return attack(predictor, X, y, eps, norm, steps=steps, step_size=step_size,",
     "tests/test_adversarial.py"),
    ("robustness_curve's PGD step 3.5 eps / steps", "ntklib/adversarial.py",
     "step = max(pgd_step, 2.5 * e / pgd_steps)", "step = max(pgd_step, 3.5 * e / pgd_steps)",
     "tests/test_adversarial.py"),
    ("robustness_curve's PGD runs pgd's default number of steps", "ntklib/adversarial.py",
     "pgd(predictor, X, y, e, norm, steps=pgd_steps, step_size=step)", "pgd(predictor, X, y, e, norm, step_size=step)",
     "tests/test_adversarial.py"),
    ("kernel_trajectory appends None instead of its row", "ntklib/adversarial.py",
     "rows.append(dict(step=step, kernel_change=relative_kernel_change(K, K0),\n"
     "                         alignment=label_alignment(K, y_probe, k)))", "rows.append(None)",
     "tests/test_adversarial.py"),
    ("kernel_trajectory's rows without kernel_change", "ntklib/adversarial.py",
     "rows.append(dict(step=step, kernel_change=relative_kernel_change(K, K0),\n"
     "                         alignment=label_alignment(K, y_probe, k)))",
     "rows.append(dict(step=step, alignment=label_alignment(K, y_probe, k)))", "tests/test_adversarial.py"),
    ("kernel_trajectory's rows lose the kernel change", "ntklib/adversarial.py",
     "rows.append(dict(step=step, kernel_change=relative_kernel_change(K, K0),",
     "rows.append(dict(step=step, kernel_change=0.0,", "tests/test_adversarial.py"),
    ("kernel_trajectory measures the change against the current kernel", "ntklib/adversarial.py",
     "rows.append(dict(step=step, kernel_change=relative_kernel_change(K, K0),",
     "rows.append(dict(step=step, kernel_change=relative_kernel_change(K0, K),", "tests/test_adversarial.py"),
    ("power iteration not normalized when the radius is below 1", "ntklib/unlearning.py",
     "v = (w / max(lam, 1e-30)).astype(np.float32)", "v = (w / max(lam, 1.0)).astype(np.float32)",
     "tests/test_defenses.py"),
]
SETS = {"issue": (MUTANTS, "listed_mutants.json"),
        "open_gaps": (OPEN_GAPS, "mutation_open_gaps_by_hand.json"),
        "reconstruction": ([(n, "ntklib/reconstruction.py", o, m, R_TESTS) for n, o, m in RECONSTRUCTION],
                           "mutation_reconstruction_by_hand.json")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(SETS), default="issue", help="which mutants (default: issue 27's)")
    args = ap.parse_args(argv)
    mutants, result = SETS[args.set]
    stale = [name for name, rel, old, _, _ in mutants if (ROOT / rel).read_text().count(old) != 1]
    if stale:  # all of them named before any test runs
        raise SystemExit(f"the lines to mutate of {stale} are not in their files exactly once; update the list")
    scratch = ROOT / "build" / "listed_mutants"
    rows = []
    for name, rel, old, new, tests in mutants:
        copy_tree(scratch)
        src = (scratch / rel).read_text()
        if src.count(old) != 1:
            raise SystemExit(f"{name}: the line to mutate is not in {rel} exactly once; update MUTANTS")
        (scratch / rel).write_text(src.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(scratch), TF_CPP_MIN_LOG_LEVEL="2", NTKLIB_CACHE_DIR="off")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests.split()],
                              cwd=scratch, env=env, capture_output=True, text=True)
        killed = proc.returncode == 1
        rows.append(dict(mutant=name, file=rel, tests=tests, killed=killed, exit=proc.returncode))
        print(f"{'killed  ' if killed else 'SURVIVED'} {name} ({tests}; exit {proc.returncode})", flush=True)
    out = ROOT / "bench" / "results" / result
    out.write_text(json.dumps(rows, indent=1))
    print("written to", out)
    return 0 if all(r["killed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
