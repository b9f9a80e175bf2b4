# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Assignment 2 · The rank-one update and greedy poison selection
#
# **Learning goals.** After this assignment you can
# 1. derive how kernel-regression predictions change when one training point is appended (the
#    Schur complement of the bordered system), and implement it for many candidates at once;
# 2. explain why it costs $O(n^2 m)$ for $m$ candidates against $O(m n^3)$ for re-solving;
# 3. implement NTBA's greedy initialization with it and pick the same poisons as `ntklib`.
#
# **Prerequisites:** notebooks `02_backdoor_loss` and `03_greedy_initialization`; block matrix
# inversion. **Time:** about 1.5 hours. **Points:** 10 (autograded), of which some tests are hidden.
#
# Kernel regression on $D$ with the shift $s$: $f(x) = K_{xD} A^{-1} y_D$, $A = K_{DD} + sI$.
# Appending a candidate $c$ with label $y_c$ gives the bordered matrix
# $\begin{pmatrix} A & k_{Dc} \\ k_{Dc}^\top & k_{cc} + s\end{pmatrix}$.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

import ntklib  # noqa: F401  (sets up JAX)
from ntklib import attack, data, kernels, regression

task = data.make_task("digits", source=7, target=1, n_train_per_class=15, n_eval_per_class=6, seed=0)
problem = attack.BackdoorProblem.from_task(task, kernels.rbf(2.0, dtype="float64"))
C = task.X_cand[:12]                                   # 12 candidate poisons (triggered source images)
K_cc, K_cd, K_ct, K_ca = problem.candidate_blocks(C)   # kernel blocks of the candidates
A = problem.K_dd + problem.shift * np.eye(problem.n_d)  # the shifted clean matrix
K_xD = np.vstack([problem.K_td, problem.K_ad])          # evaluation points: t then a
K_xc = np.vstack([K_ct.T, K_ca.T])


def loss_of(f_x):
    """The backdoor loss of predictions on [t; a] (columns: one candidate set each)."""
    return problem.terms(f_x[:problem.n_t], f_x[problem.n_t:])[0]

# %% [markdown] nbgrader={"grade": false, "grade_id": "q1-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 1. Predictions after appending each candidate alone (5 points)
#
# Show that with $v = A^{-1} k_{Dc}$ and $\sigma = k_{cc} + s - k_{Dc}^\top v$,
# $f'(x) = f(x) + (k_{xc} - K_{xD} v)\,(y_c - f(c)) / \sigma$. Implement it for all candidates at
# once: `K_Dc` is (n, m), `k_cc` (m,), `y_c` (m,); return the (n_x, m) matrix whose column $j$ is $f'$
# with candidate $j$ appended. Use one factorization of $A$ (or solves with it), never one per candidate.

# %% nbgrader={"grade": false, "grade_id": "q1-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def predictions_after_append(A, y_D, K_Dc, k_cc, y_c, K_xD, K_xc, shift):
    """(n_x, m): predictions on x after appending each candidate alone."""
    ### BEGIN SOLUTION
    V = np.linalg.solve(A, K_Dc)
    alpha = np.linalg.solve(A, y_D)
    sigma = k_cc + shift - np.einsum("nm,nm->m", K_Dc, V)
    f_x, f_c = K_xD @ alpha, K_Dc.T @ alpha
    return f_x[:, None] + (K_xc - K_xD @ V) * ((y_c - f_c) / sigma)[None, :]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q1-tests", "locked": true, "points": 5, "schema_version": 3, "solution": false, "task": false}
F = predictions_after_append(A, problem.y_d, K_cd.T, np.diag(K_cc), np.ones(len(C)), K_xD, K_xc, problem.shift)
assert F.shape == (K_xD.shape[0], len(C))
for j in (0, 5):  # against a fresh solve of the enlarged system
    big = np.block([[A, K_cd[j][:, None]], [K_cd[j][None, :], K_cc[j, j] + problem.shift]])
    f_j = np.hstack([K_xD, K_xc[:, [j]]]) @ np.linalg.solve(big, np.append(problem.y_d, 1.0))
    assert np.allclose(F[:, j], f_j, rtol=1e-8, atol=1e-10), f"candidate {j}: compare with the re-solve"
### BEGIN HIDDEN TESTS
reg = regression.KernelRegression(problem.K_dd, problem.y_d, problem.shift)
y_c = np.where(np.arange(len(C)) % 2 == 0, 1.0, -1.0)
ref = regression.append_predictions(reg, K_cd.T, np.diag(K_cc), y_c, K_xD, K_xc)
assert np.allclose(predictions_after_append(A, problem.y_d, K_cd.T, np.diag(K_cc), y_c, K_xD, K_xc,
                                            problem.shift), ref, rtol=1e-8, atol=1e-10)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q2-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 2. Greedy selection (5 points)
#
# NTBA's greedy initialization adds, round after round, the candidate whose addition (labelled +1)
# gives the lowest backdoor loss (`loss_of`). Implement it with your function: after each pick, the
# picked candidate joins $D$ (its row and column join $A$, its column of $K_{xc}$ joins $K_{xD}$).
# Return the indices into `C`, in the order picked.

# %% nbgrader={"grade": false, "grade_id": "q2-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_picks(budget, C_blocks=(K_cc, K_cd, K_xc)):
    """Indices of the greedy poisons, in order."""
    ### BEGIN SOLUTION
    Kcc, Kcd, Kxc = C_blocks
    chosen = []
    for _ in range(budget):
        rest = [j for j in range(len(Kcc)) if j not in chosen]
        A_cur = np.block([[A, Kcd[chosen].T], [Kcd[chosen], Kcc[np.ix_(chosen, chosen)] + problem.shift * np.eye(
            len(chosen))]])
        y_cur = np.append(problem.y_d, np.ones(len(chosen)))
        K_Dc = np.vstack([Kcd[rest].T, Kcc[np.ix_(chosen, rest)]])
        K_xD_cur = np.hstack([K_xD, Kxc[:, chosen]])
        F = predictions_after_append(A_cur, y_cur, K_Dc, np.diag(Kcc)[rest], np.ones(len(rest)), K_xD_cur,
                                     Kxc[:, rest], problem.shift)
        chosen.append(rest[int(np.argmin(loss_of(F)))])
    return chosen
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q2-tests", "locked": true, "points": 5, "schema_version": 3, "solution": false, "task": false}
picks = greedy_picks(3)
assert len(picks) == 3 and len(set(picks)) == 3
assert picks == attack.greedy_init(problem, C, 3, progress=False).indices, "compare with ntklib's greedy"
### BEGIN HIDDEN TESTS
C2 = task.X_cand[10:22]
b2 = problem.candidate_blocks(C2)
picks2 = greedy_picks(4, (b2[0], b2[1], np.vstack([b2[2].T, b2[3].T])))
assert picks2 == attack.greedy_init(problem, C2, 4, progress=False).indices
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q3-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 3. What it costs (not graded)
#
# Time one greedy round with your rank-one scoring against re-solving the enlarged system once per
# candidate, for |d| = 100, 200 and 400 training images per class (`data.make_task(...,
# n_train_per_class=...)`). Which grows like $n^2$ and which like $n^3$? Where does ntklib avoid even
# your per-round solve with $A$ (look at `KernelRegression.append`)?
