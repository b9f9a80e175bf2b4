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
# # Assignment 1 · The NTK of a two-layer network, by hand
#
# **Learning goals.** After this assignment you can
# 1. write the gradient of a two-layer network with respect to each of its parameter blocks, in
#    the NTK parameterization, and add their inner products up to the empirical NTK;
# 2. say which parameter block contributes which term, and check a formula against autodiff
#    (`ntklib.kernels.empirical_ntk`);
# 3. derive the infinite-width limit of the same kernel (the arc-cosine expectations of a ReLU)
#    and check it against neural-tangents (`ntklib.kernels.infinite_ntk`).
#
# **Prerequisites:** notebook `01_ntk_background`; the chain rule; Gaussian integrals.
# **Time:** about 1.5 hours. **Points:** 10 (autograded), of which some tests are hidden.
#
# The network (ntklib's `plain_mlp(width=m, depth=1)`, inputs flattened to $x \in \mathbb{R}^d$):
#
# $$h(x) = \frac{\sigma_w}{\sqrt d} W^\top x + \sigma_b b, \qquad
#   f(x) = \frac{\sigma_w}{\sqrt m} v^\top \phi(h(x)) + \sigma_b c,\qquad \phi = \mathrm{ReLU},$$
#
# with $W \in \mathbb{R}^{d \times m}$, $b \in \mathbb{R}^m$, $v \in \mathbb{R}^{m}$, $c \in \mathbb{R}$,
# all drawn $\mathcal N(0, 1)$, and $\sigma_w = \sqrt 2$, $\sigma_b = 0.05$. Its empirical NTK is
# $\Theta(x, x') = \langle \nabla_\theta f(x), \nabla_\theta f(x') \rangle$.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import numpy as np

import ntklib  # noqa: F401  (sets up JAX)
from ntklib import data, kernels, models

W_STD, B_STD = np.sqrt(2.0), 0.05
X_all = data.load_digits()[0].astype(np.float64)   # (n, 8, 8, 1) in [0, 1]
X = X_all[:6]
arch = models.plain_mlp(width=32, depth=1, W_std=W_STD, b_std=B_STD)
params = arch.init(0, X.shape[1:])                 # [(W, b), (v, c)] with W (64, 32), v (32, 1)
models.mlp(8, depth=1)  # loads neural-tangents (and TensorFlow) now: their start-up messages land here

# %% [markdown] nbgrader={"grade": false, "grade_id": "q1-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 1. The empirical NTK (5 points)
#
# Differentiate $f$ with respect to $v$, $c$, $W$ and $b$ and write $\Theta(x, x')$ as the sum of
# four terms, one per block. Then implement it with NumPy only (no autodiff), for batches
# `x1` (n1, 8, 8, 1) and `x2` (n2, 8, 8, 1), returning the (n1, n2) matrix.

# %% nbgrader={"grade": false, "grade_id": "q1-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ntk_by_hand(params, x1, x2, W_std=W_STD, b_std=B_STD):
    """Empirical NTK of the two-layer network at ``params``: (n1, n2)."""
    ### BEGIN SOLUTION
    (W, b), (v, c) = [(np.asarray(w, np.float64), np.asarray(bb, np.float64)) for w, bb in params]
    d, m = W.shape
    a1, a2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    h1, h2 = W_std / np.sqrt(d) * a1 @ W + b_std * b, W_std / np.sqrt(d) * a2 @ W + b_std * b
    v = v[:, 0]
    term_v = W_std ** 2 / m * np.maximum(h1, 0) @ np.maximum(h2, 0).T
    term_c = b_std ** 2
    s1, s2 = (h1 > 0) * v, (h2 > 0) * v                      # v_j phi'(h_j)
    back = W_std ** 2 / m * s1 @ s2.T
    term_W = back * (W_std ** 2 / d) * (a1 @ a2.T)
    term_b = back * b_std ** 2
    return term_v + term_c + term_W + term_b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q1-tests", "locked": true, "points": 5, "schema_version": 3, "solution": false, "task": false}
K = ntk_by_hand(params, X, X)
assert K.shape == (6, 6), "one entry per pair of images"
assert np.allclose(K, K.T), "an NTK is symmetric"
reference = kernels.empirical_ntk(arch.apply_fn, params, dtype="float64")
assert np.allclose(K, reference(X), rtol=1e-6), "compare each block's term with the autodiff kernel"
### BEGIN HIDDEN TESTS
wide = models.plain_mlp(width=200, depth=1, W_std=W_STD, b_std=B_STD)
p2 = wide.init(7, X.shape[1:])
Y = X_all[100:103]
assert np.allclose(ntk_by_hand(p2, X, Y), kernels.empirical_ntk(wide.apply_fn, p2, dtype="float64")(X, Y),
                   rtol=1e-6)
assert np.all(np.linalg.eigvalsh(ntk_by_hand(p2, X, X)) > -1e-8)
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q2-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 2. The infinite-width limit (5 points)
#
# As $m \to \infty$, each sum over the $m$ hidden units becomes an expectation over
# $(h(x), h(x'))$, a centred Gaussian pair with covariance
# $\Sigma(x, x') = \frac{\sigma_w^2}{d} x^\top x' + \sigma_b^2$. With
# $\theta = \arccos\big(\Sigma(x, x') / \sqrt{\Sigma(x, x)\Sigma(x', x')}\big)$, the ReLU gives
# $\mathbb E[\phi(u)\phi(u')] = \frac{\sqrt{\Sigma(x,x)\Sigma(x',x')}}{2\pi}(\sin\theta + (\pi - \theta)\cos\theta)$ and
# $\mathbb E[\phi'(u)\phi'(u')] = \frac{\pi - \theta}{2\pi}$. Use them to write the limit of each of
# your four terms (what does $v_j^2$ average to?) and implement the infinite-width NTK.

# %% nbgrader={"grade": false, "grade_id": "q2-code", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ntk_infinite(x1, x2, W_std=W_STD, b_std=B_STD):
    """Infinite-width NTK of the two-layer network: (n1, n2)."""
    ### BEGIN SOLUTION
    a1, a2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    d = a1.shape[1]
    S12 = W_std ** 2 / d * a1 @ a2.T + b_std ** 2
    S11 = W_std ** 2 / d * np.sum(a1 * a1, 1) + b_std ** 2
    S22 = W_std ** 2 / d * np.sum(a2 * a2, 1) + b_std ** 2
    norm = np.sqrt(np.outer(S11, S22))
    theta = np.arccos(np.clip(S12 / norm, -1.0, 1.0))
    e_phi = norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    e_dphi = (np.pi - theta) / (2 * np.pi)
    return W_std ** 2 * e_phi + b_std ** 2 + W_std ** 2 * e_dphi * S12
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "q2-tests", "locked": true, "points": 5, "schema_version": 3, "solution": false, "task": false}
K_inf = ntk_infinite(X, X)
assert K_inf.shape == (6, 6) and np.allclose(K_inf, K_inf.T)
exact = kernels.infinite_ntk(models.mlp(width=512, depth=1, W_std=W_STD, b_std=B_STD), dtype="float64")
assert np.allclose(K_inf, exact(X), rtol=1e-6), "each term's limit: compare with neural-tangents"
### BEGIN HIDDEN TESTS
Y = X_all[200:205]
assert np.allclose(ntk_infinite(X, Y), exact(X, Y), rtol=1e-6)
huge = models.plain_mlp(width=20000, depth=1, W_std=W_STD, b_std=B_STD)
emp = ntk_by_hand(huge.init(3, X.shape[1:]), X, X)
assert np.abs(emp - K_inf).max() / np.abs(K_inf).max() < 0.05, "the empirical NTK approaches the limit"
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "q3-text", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 3. What it shows (not graded)
#
# Which of the four terms dominates for these images, and why is the $c$ term the only one that
# does not depend on the inputs? Plot $|\Theta_m - \Theta_\infty| / |\Theta_\infty|$ against the width
# $m$ on a log-log scale for a few seeds: what slope do you expect, and do you see it?
