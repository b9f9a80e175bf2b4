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
# # Assignment 3 · The closed-form backdoor loss and its gradient
#
# **Learning goals.** After this assignment you can
# 1. write NTBA's backdoor loss of a poison set in closed form, through kernel regression on the
#    poisoned training set;
# 2. derive its gradient with respect to the kernel blocks by the adjoint (one extra solve, never a
#    derivative of a matrix inverse entry by entry), and chain it through a kernel to the poison pixels;
# 3. check a gradient against central finite differences in float64, and use it for a few steps of
#    projected gradient descent on the poisons.
#
# **Prerequisites:** notebook `02_backdoor_loss`; matrix calculus ($d(A^{-1}) = -A^{-1}\,dA\,A^{-1}$).
# **Time:** about 2 hours. **Points:** 10 (autograded), of which some tests are hidden.
#
# Notation (the repository's docs/design.md): clean training set $d$ (labels $\pm 1$), poisons $p$ (all
# labelled $+1$), $D = d \cup p$; clean evaluation set $t$ and triggered source images $a$ (desired
# label $+1$). Kernel regression with the shift $s$: $\alpha = (K_{DD} + sI)^{-1} y_D$ and
# $f(x) = K_{xD}\,\alpha$. The backdoor loss (Hayase & Oh 2023, Sec. 3):
#
# $$L(X_p) = \sum_{t} (f(x_t) - y_t)^2 + \sum_{a} \min(f(x_a) - 1, 0)^2 .$$
#
# The kernel here is the Gaussian RBF $k(x, x') = \exp(-\lVert x - x'\rVert^2 / (2\ell^2))$ with
# $\ell = 2$ on flattened images (`rbf` below), so that everything fits in NumPy.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

import ntklib  # noqa: F401  (sets up JAX)
from ntklib import attack, data, kernels, models

ELL = 2.0
task = data.make_task("digits", source=7, target=1, n_train_per_class=15, n_eval_per_class=6, seed=0)
problem = attack.BackdoorProblem.from_task(task, kernels.rbf(ELL, dtype="float64"), ridge=1e-3)
s = problem.shift  # the diagonal shift of every solve (ridge 1e-3: well conditioned)
X_d, X_t, X_a = (np.asarray(x, dtype=np.float64) for x in (task.X_d, task.X_t, task.X_a))  # float64 throughout
y_d, y_t = task.y_d, task.y_t
X_p0 = task.X_cand[:2].astype(np.float64)  # two triggered source images: the starting poisons
models.mlp(8, depth=1)  # loads neural-tangents (and TensorFlow) now: their start-up messages land here


def rbf(A, B):
    """k(A_i, B_j) for image batches A (n, 8, 8, 1) and B (m, 8, 8, 1): (n, m)."""
    a = np.asarray(A, dtype=np.float64).reshape(len(A), -1)
    b = np.asarray(B, dtype=np.float64).reshape(len(B), -1)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2 * ELL ** 2))

# %% [markdown] nbgrader={"grade": false, "grade_id": "q1-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 1. The loss (3 points)
#
# Implement $L(X_p)$ for poisons `X_p` (n_p, 8, 8, 1): build $K_{DD}$, $K_{tD}$ and $K_{aD}$ with
# `rbf`, solve once with $K_{DD} + sI$ (use `np.linalg.solve`, never `inv`), and return the loss as a
# float. All poisons carry the label $+1$.

# %% nbgrader={"grade": false, "grade_id": "q1-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def backdoor_loss(X_p):
    """L(X_p): a float."""
    ### BEGIN SOLUTION
    X_D = np.concatenate([X_d, X_p])
    y_D = np.concatenate([y_d, np.ones(len(X_p))])
    alpha = np.linalg.solve(rbf(X_D, X_D) + s * np.eye(len(X_D)), y_D)
    f_t, f_a = rbf(X_t, X_D) @ alpha, rbf(X_a, X_D) @ alpha
    return float(np.sum((f_t - y_t) ** 2) + np.sum(np.minimum(f_a - 1.0, 0.0) ** 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q1-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
L0 = backdoor_loss(X_p0)
assert isinstance(L0, float)
assert np.isclose(L0, problem.loss(X_p0).loss, rtol=1e-6), "compare with ntklib's BackdoorProblem.loss"
assert backdoor_loss(X_p0[:1]) > 0
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(1)
for X_p in (task.X_cand[5:12], np.clip(X_p0 + 0.1 * rng.standard_normal(X_p0.shape), 0, 1)):
    assert np.isclose(backdoor_loss(X_p), problem.loss(X_p).loss, rtol=1e-6)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q2-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 2. Its gradient (4 points)
#
# **Derive** (on paper): with the residuals $r_t = 2(f_t - y_t)$, $r_a = 2\min(f_a - 1, 0)$,
# $g = K_{tD}^\top r_t + K_{aD}^\top r_a$ and $\beta = (K_{DD} + sI)^{-1} g$,
#
# $$\frac{\partial L}{\partial K_{tD}} = r_t\,\alpha^\top,\qquad
#   \frac{\partial L}{\partial K_{aD}} = r_a\,\alpha^\top,\qquad
#   \frac{\partial L}{\partial K_{DD}} = -\beta\,\alpha^\top .$$
#
# (Hint: $d\alpha = -(K_{DD} + sI)^{-1}\,dK_{DD}\,\alpha$.) The poisons enter $K_{DD}$ twice (their
# rows and their columns), $K_{tD}$ and $K_{aD}$ once. **Then chain** through the RBF kernel,
# $\partial k(x, x') / \partial x = -k(x, x')\,(x - x') / \ell^2$, and implement
# `loss_and_grad(X_p)` returning $L$ and $\partial L / \partial X_p$ (shape of `X_p`). Use no
# autodiff; the tests compare with central finite differences.

# %% nbgrader={"grade": false, "grade_id": "q2-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def loss_and_grad(X_p):
    """(L, dL/dX_p) with dL/dX_p of the shape of X_p."""
    ### BEGIN SOLUTION
    n_d, n_p = len(X_d), len(X_p)
    X_D = np.concatenate([X_d, X_p])
    y_D = np.concatenate([y_d, np.ones(n_p)])
    A = rbf(X_D, X_D) + s * np.eye(len(X_D))
    K_tD, K_aD = rbf(X_t, X_D), rbf(X_a, X_D)
    alpha = np.linalg.solve(A, y_D)
    f_t, f_a = K_tD @ alpha, K_aD @ alpha
    L = float(np.sum((f_t - y_t) ** 2) + np.sum(np.minimum(f_a - 1.0, 0.0) ** 2))
    r_t, r_a = 2 * (f_t - y_t), 2 * np.minimum(f_a - 1.0, 0.0)
    beta = np.linalg.solve(A, K_tD.T @ r_t + K_aD.T @ r_a)
    G = -np.outer(beta, alpha)
    # cotangent of K(X_p, X) for X = [X_D; X_t; X_a]: rows of dL/dK_DD and columns, then t and a
    X_all = np.concatenate([X_D, X_t, X_a])
    C = np.hstack([G[n_d:] + G[:, n_d:].T, np.outer(alpha[n_d:], r_t), np.outer(alpha[n_d:], r_a)])
    K = rbf(X_p, X_all)
    p, x = X_p.reshape(n_p, -1), X_all.reshape(len(X_all), -1)
    W = C * K  # (n_p, N)
    grad = -(W.sum(1)[:, None] * p - W @ x) / ELL ** 2
    return L, grad.reshape(X_p.shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q2-tests", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
L, G = loss_and_grad(X_p0)
assert G.shape == X_p0.shape
assert np.isclose(L, backdoor_loss(X_p0))
rng = np.random.default_rng(0)
for _ in range(3):  # directional derivatives against central differences
    V = rng.standard_normal(X_p0.shape)
    h = 1e-5
    fd = (backdoor_loss(X_p0 + h * V) - backdoor_loss(X_p0 - h * V)) / (2 * h)
    assert np.isclose(np.sum(G * V), fd, rtol=1e-5, atol=1e-8), f"directional derivative {np.sum(G * V)} vs {fd}"
### BEGIN HIDDEN TESTS
for X_p in (X_p0[:1], task.X_cand[5:12]):
    ref = problem.evaluate(X_p, grad=True)[1]
    assert np.allclose(loss_and_grad(X_p)[1], ref, rtol=1e-5, atol=1e-8)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q3-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 3. A few optimization steps (3 points)
#
# Implement projected gradient descent on the pixels: `steps` steps of
# $X_p \leftarrow \mathrm{clip}_{[0,1]}\big(X_p - \eta\,\nabla L / \max|\nabla L|\big)$ (the step's
# largest pixel change is $\eta$), keeping the best iterate. Return the best poisons and the list of
# losses (the start's first, one per step after). Then look at what the kernel model's attack
# success rate does (`problem.loss(X).asr`).

# %% nbgrader={"grade": false, "grade_id": "q3-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def descend(X_p, steps=10, eta=0.05):
    """(best poisons, losses): losses[0] is the start's loss, then one per step."""
    ### BEGIN SOLUTION
    X = np.array(X_p, dtype=np.float64)
    L, G = loss_and_grad(X)
    best, losses = (L, X), [L]
    for _ in range(steps):
        X = np.clip(X - eta * G / np.max(np.abs(G)), 0.0, 1.0)
        L, G = loss_and_grad(X)
        losses.append(L)
        if L < best[0]:
            best = (L, X)
    return best[1], losses
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q3-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
X_best, losses = descend(X_p0, steps=8)
assert len(losses) == 9 and np.isclose(losses[0], L0)
assert X_best.shape == X_p0.shape and X_best.min() >= 0 and X_best.max() <= 1
assert backdoor_loss(X_best) < 0.9 * L0, "the loss should fall by more than 10% in 8 steps"
print(f"loss {L0:.3f} -> {backdoor_loss(X_best):.3f}; kernel ASR {problem.loss(X_p0).asr:.2f} -> "
      f"{problem.loss(X_best).asr:.2f}")
### BEGIN HIDDEN TESTS
assert np.isclose(backdoor_loss(X_best), min(losses), rtol=1e-9), "return the best iterate"
X_one, l_one = descend(X_p0, steps=1, eta=0.02)
assert np.abs(X_one - X_p0).max() <= 0.02 + 1e-12 or np.allclose(X_one, X_p0)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q4-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 4. What the gradient buys (not graded)
#
# Count the cost of one gradient: how many solves with $K_{DD} + sI$, and how many kernel entries?
# Compare with finite differences over all $64\,n_p$ pixels. Why does ntklib never form $\partial K /
# \partial X_p$ per pair, and what does `Kernel.vjp` do instead? Run `attack.optimize_poisons` (L-BFGS-B)
# from the same start for 50 steps: how much lower does it get than your 10 steps of descent?
