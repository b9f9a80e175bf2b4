"""The one-line bugs issue 27 lists, applied one at a time to a scratch copy of the working tree,
each against the tests that must catch it: every one must fail at least one test ("killed").

    python bench/listed_mutants.py      # about 3 minutes; JSON: bench/results/listed_mutants.json
"""
from __future__ import annotations

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
     "white = Y @ _inv_sqrt(np.cov(Ys.T, bias=True))", "white = Y @ _inv_sqrt(np.cov(Y.T, bias=True))",
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


def main():
    scratch = ROOT / "build" / "listed_mutants"
    rows = []
    for name, rel, old, new, tests in MUTANTS:
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
    out = ROOT / "bench" / "results" / "listed_mutants.json"
    out.write_text(json.dumps(rows, indent=1))
    print("written to", out)
    return 0 if all(r["killed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
