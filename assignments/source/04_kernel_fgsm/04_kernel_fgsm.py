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
# # Assignment 4 · Adversarial examples from the kernel, without training
#
# **Learning goals.** After this assignment you can
# 1. write the input gradient of a kernel-regression predictor in closed form and check it against
#    finite differences;
# 2. build the fast gradient sign method (FGSM) on it, training-free, and judge it against the
#    baseline of the same budget (random signs);
# 3. split the predictor into the kernel's eigen-features (Tsilivis & Kempe, NeurIPS 2022, Sec. 4)
#    and say which of them an attack moves.
#
# **Prerequisites:** notebook `08_adversarial_ntk`; eigendecomposition of a symmetric matrix.
# **Time:** about 1.5 hours. **Points:** 10 (autograded), of which some tests are hidden.
#
# The task is the repository's default binary digits task (a 7 is labelled $-1$, a 1 is $+1$). The
# predictor is kernel regression with the shift $s$: $f(x) = k(x, X)\,\alpha$,
# $\alpha = (K + sI)^{-1} y$, with the Gaussian RBF kernel $k(x, x') = \exp(-\lVert x - x'\rVert^2 / (2\ell^2))$,
# $\ell = 2$, on flattened images (`rbf` below). An attack with budget $\varepsilon$ (L-infinity) may move
# every pixel by at most $\varepsilon$ and must stay in $[0, 1]$; it succeeds on $x$ when the margin
# $y f(x)$ turns negative.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

import ntklib  # noqa: F401  (sets up JAX)
from ntklib import adversarial, data, kernels, models

ELL, s = 2.0, 1e-3
task = data.make_task("digits", source=7, target=1, n_train_per_class=20, n_eval_per_class=20, seed=0)
X, X_test = (np.asarray(x, dtype=np.float64) for x in (task.X_d, task.X_t))  # float64 throughout
y, y_test = task.y_d, task.y_t
kernel = kernels.rbf(ELL, dtype="float64")
models.mlp(8, depth=1)  # loads neural-tangents (and TensorFlow) now: their start-up messages land here


def rbf(A, B):
    """k(A_i, B_j) for image batches A (n, 8, 8, 1) and B (m, 8, 8, 1): (n, m)."""
    a = np.asarray(A, dtype=np.float64).reshape(len(A), -1)
    b = np.asarray(B, dtype=np.float64).reshape(len(B), -1)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2 * ELL ** 2))

# %% [markdown] nbgrader={"grade": false, "grade_id": "q1-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 1. The predictor and its input gradient (3 points)
#
# Implement `fit(X, y)` returning $\alpha$ (one solve), and `input_grad(x, alpha)` returning
# $\nabla_x f(x)$ for every test image in `x` (m, 8, 8, 1), shaped like `x`. Derive it first:
# $\nabla_x k(x, x_i) = k(x, x_i)\,(x_i - x) / \ell^2$. No autodiff.

# %% nbgrader={"grade": false, "grade_id": "q1-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fit(X, y):
    """alpha (n,) of kernel regression with the shift s."""
    ### BEGIN SOLUTION
    return np.linalg.solve(rbf(X, X) + s * np.eye(len(X)), y)
    ### END SOLUTION


def input_grad(x, alpha):
    """grad_x f(x) for each image of x: shaped like x."""
    ### BEGIN SOLUTION
    W = rbf(x, X) * alpha[None, :]                                  # (m, n)
    a, b = x.reshape(len(x), -1), X.reshape(len(X), -1)
    return ((W @ b - W.sum(1)[:, None] * a) / ELL ** 2).reshape(x.shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q1-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
alpha = fit(X, y)
f = lambda x: rbf(x, X) @ alpha  # noqa: E731
assert alpha.shape == (len(X),)
assert np.allclose(f(X), y, atol=0.05), "the predictor should interpolate its training labels (small shift)"
G = input_grad(X_test[:5], alpha)
assert G.shape == X_test[:5].shape
rng = np.random.default_rng(0)
V, h = rng.standard_normal(X_test[:5].shape), 1e-5
fd = (f(X_test[:5] + h * V) - f(X_test[:5] - h * V)) / (2 * h)
assert np.allclose((G * V).reshape(5, -1).sum(1), fd, rtol=1e-6, atol=1e-9), "compare with central differences"
### BEGIN HIDDEN TESTS
ref = adversarial.kernel_predictor(kernel, X, y, ridge=s, jitter=0.0)
assert np.allclose(alpha, ref.alpha, rtol=1e-8, atol=1e-10)
assert np.allclose(input_grad(X_test, alpha), ref.input_grad(X_test, np.ones(len(X_test))), rtol=1e-8, atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q2-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 2. FGSM, training-free (3 points)
#
# FGSM (Goodfellow et al. 2015) takes one step of size $\varepsilon$ along the sign of the gradient of
# the margin loss $-y f(x)$, then clips to $[0, 1]$. Implement `fgsm(x, y, eps, alpha)`; then compare
# the accuracy of `sign(f)` on the attacked test images with that on `random_signs(x, eps)` (the same
# budget, no gradient) for $\varepsilon \in \{0.05, 0.1, 0.2\}$.

# %% nbgrader={"grade": false, "grade_id": "q2-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fgsm(x, y, eps, alpha):
    """Adversarial images (shaped like x) within eps per pixel, in [0, 1]."""
    ### BEGIN SOLUTION
    g = -y.reshape((-1,) + (1,) * (x.ndim - 1)) * input_grad(x, alpha)
    return np.clip(x + eps * np.sign(g), 0.0, 1.0)
    ### END SOLUTION


def random_signs(x, eps, seed=0):
    return adversarial.random_sign_noise(x, eps, seed)


# %% nbgrader={"grade": true, "grade_id": "q2-tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
acc = lambda x: float(np.mean(np.sign(f(x)) == y_test))  # noqa: E731
X_adv = fgsm(X_test, y_test, 0.1, alpha)
assert X_adv.shape == X_test.shape and X_adv.min() >= 0 and X_adv.max() <= 1
assert np.abs(X_adv - X_test).max() <= 0.1 + 1e-12
for eps in (0.05, 0.1, 0.2):
    print(f"eps {eps}: clean {acc(X_test):.2f}, random signs {acc(random_signs(X_test, eps)):.2f}, "
          f"FGSM {acc(fgsm(X_test, y_test, eps, alpha)):.2f}")
assert acc(X_adv) < acc(random_signs(X_test, 0.1)), "FGSM should hurt more than random signs of the same size"
### BEGIN HIDDEN TESTS
pred = adversarial.kernel_predictor(kernel, X, y, ridge=s, jitter=0.0)
for eps in (0.05, 0.2):
    assert np.allclose(fgsm(X_test, y_test, eps, alpha), adversarial.fgsm(pred, X_test, y_test, eps), atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q3-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 3. Which features does the attack move? (4 points)
#
# With $K = \sum_i \mu_i v_i v_i^\top$ (eigenvalues in **decreasing** order, $\mu_0$ the largest), the
# ridgeless predictor $f(x) = k(x, X) K^{-1} y$ splits into eigen-features
# $f_i(x) = k(x, X)\,v_i\,(v_i^\top y)/\mu_i$ with $\sum_i f_i = f$. Implement
# `feature_values(x)` returning the (m, n) matrix of $f_i$ (use `np.linalg.eigh` and reorder), and
# `attack_shares(x, y, x_adv)`: feature $i$'s share of the total drop of the margin,
# $\sum_j y_j (f_i(x_j) - f_i(x^{adv}_j)) \,/\, \sum_j y_j (f(x_j) - f(x^{adv}_j))$ (n,), summing to 1.

# %% nbgrader={"grade": false, "grade_id": "q3-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def feature_values(x):
    """(m, n): f_i(x) for every feature i, by decreasing eigenvalue."""
    ### BEGIN SOLUTION
    mu, V = np.linalg.eigh(rbf(X, X))
    mu, V = mu[::-1], V[:, ::-1]
    return (rbf(x, X) @ V) * ((V.T @ y) / mu)[None, :]
    ### END SOLUTION


def attack_shares(x, y_x, x_adv):
    """(n,): each feature's share of the margin drop from x to x_adv."""
    ### BEGIN SOLUTION
    drop = ((feature_values(x) - feature_values(x_adv)) * y_x[:, None]).sum(0)
    return drop / drop.sum()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q3-tests", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
F = feature_values(X_test)
assert F.shape == (len(X_test), len(X))
f_ridgeless = rbf(X_test, X) @ np.linalg.solve(rbf(X, X), y)
assert np.allclose(F.sum(1), f_ridgeless, rtol=1e-6, atol=1e-6), "the features should add up to the ridgeless f"
shares = attack_shares(X_test, y_test, X_adv)
assert shares.shape == (len(X),) and np.isclose(shares.sum(), 1.0)
print("share of the top 5 features:", round(float(shares[:5].sum()), 3))
### BEGIN HIDDEN TESTS
feats = adversarial.eigen_features(kernel, X, y)
assert np.allclose(F, feats.values(X_test), rtol=1e-6, atol=1e-6), "order features by decreasing eigenvalue"
assert np.allclose(shares, adversarial.feature_attack_shares(feats, X_test, y_test, X_adv), rtol=1e-5, atol=1e-6)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q4-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 4. What it means (not graded)
#
# Plot the shares against the feature index. Are the features the attack moves the ones that carry
# the most of the prediction ($|f_i|$ large), or the ones with large eigenvalues? Tsilivis & Kempe
# (Sec. 4) find that robust features sit at the top of the spectrum and that attacks exploit the
# non-robust ones further down: does your plot agree at this scale? Replace `rbf` by the NTK of a
# trained network (`ntklib.kernels.empirical_ntk`) and `fgsm` by `ntklib.adversarial.fgsm`: do the
# adversarial images fool the network itself (notebook 08, transfer)?
