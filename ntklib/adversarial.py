"""Adversarial examples and eigen-features from the NTK, without training
(Tsilivis & Kempe, "What can the neural tangent kernel tell us about adversarial
robustness?", NeurIPS 2022).

The same closed form as NTBA, used the other way round: the *test* input moves, the
training set stays. With a kernel k, training images X (n, ...) and labels y in {-1, +1}:

- the kernel-regression predictor (Sec. 3), ridge lambda >= 0::

      f(x) = K(x, X) alpha,   alpha = (K + lambda I)^-1 y;

- the predictor after training time t of gradient flow with step ``lr`` on the squared
  loss (the linearized network, Sec. 3)::

      f_t(x) = K(x, X) K^-1 (I - exp(-lr K t)) y = K(x, X) V diag((1 - e^{-lr mu t}) / mu) V^T y

  with K = V diag(mu) V^T (f_t -> f as t -> infinity for lambda = 0);

- the eigen-features (Sec. 4): f(x) = sum_i f_i(x), f_i(x) = K(x, X) v_i mu_i^-1 v_i^T y,
  indexed from 0 by decreasing eigenvalue mu_0 >= mu_1 >= ... (the authors' order).

Every predictor is :class:`KernelPredictor` ``f(x) = K(x, X) alpha``; its input gradient is
one vector-Jacobian product through the kernel (:meth:`ntklib.kernels.Kernel.vjp` with the
cotangent c alpha^T), for any kernel: infinite NTK, empirical NTK, user kernels.

Attacks (Sec. 3, FGSM and PGD in L-infinity and L2, inside the eps-ball and the pixel box
[0, 1]) increase the margin loss -y f(x). The authors differentiate a binary cross-entropy
of f(x) against y; its input gradient is the margin loss's times a positive factor per
example (sigmoid(f) - (y + 1) / 2 has the sign of -y), so the sign (L-infinity) and the
direction (L2) of every step, and hence every adversarial image, are the same.
Cost of one attack step on m test images: the kernel block K(x, X) (m n entries) and its VJP.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels as _kernels
from . import models as _models
from . import regression as _reg
from . import train as _train
from . import validation as _val

__all__ = ["KernelPredictor", "kernel_predictor", "EigenFeatures", "eigen_features", "attack", "fgsm", "pgd",
           "accuracy", "random_sign_noise", "feature_attack_shares", "relative_kernel_change", "label_alignment",
           "network_pgd", "robustness_curve", "network_transfer", "feature_table", "kernel_trajectory", "NORMS",
           "reference_mlp", "accuracy_spread", "transfer_study", "curve_at", "feature_gradients", "dynamics_study",
           "REFERENCE_CIFAR2"]

REFERENCE_CIFAR2 = dict(source="Tsilivis & Kempe 2022, authors' notebook (their first 2000 training and 100 test "
                               "images)", clean_accuracy=0.81, fgsm_accuracy=0.02, pgd_accuracy=0.02)
"""The authors' numbers on CIFAR-10 airplane vs automobile at eps 8/255 (L-infinity): the kernel
predictor's clean, FGSM and PGD accuracy (notebook 08 quotes them beside its own)."""

NORMS = ("linf", "l2")


@dataclass
class KernelPredictor:
    """f(x) = K(x, X) alpha: a kernel, its training images X (n, H, W, C) and weights alpha (n,)."""

    kernel: object
    X: np.ndarray
    alpha: np.ndarray
    spec: dict = field(default_factory=dict)

    def __call__(self, x) -> np.ndarray:
        """f(x) (m,) as float64 for test images x (m, H, W, C) of the training images' shape."""
        x = _check_test(x, self.X)
        return np.asarray(self.kernel(x, self.X), dtype=np.float64) @ self.alpha

    def input_grad(self, x, cot) -> np.ndarray:
        """d/dx sum_i cot_i f(x_i), shaped like x: one VJP through K(x, X) with cotangent cot alpha^T."""
        x = _check_test(x, self.X)
        cot = _val.check_array(cot, "cot", shape=(len(x),), dtype=np.float64)
        return self.kernel.vjp(x, self.X, np.outer(cot, self.alpha))


def _check_test(x, X):
    return _val.check_images(x, "x (test images)", X.shape[1:])


def kernel_predictor(kernel, X, y, ridge: float = 0.0, t: float | None = None, lr: float = 1.0,
                     jitter: float = _reg.DEFAULT_JITTER) -> KernelPredictor:
    """The kernel-regression predictor on (X, y), at infinite time (``t=None``) or after
    training time ``t`` of gradient flow with step ``lr`` (see the module notes).

    Args:
        kernel: an :class:`ntklib.kernels.Kernel`.
        X: training images (n, H, W, C) in [0, 1]; y: labels (n,) in {-1, +1}.
        ridge: lambda >= 0 (t = None only); jitter: relative diagonal shift of the solve.
        t, lr: training time >= 0 and step > 0; f_t uses K's eigendecomposition.
    Cost: the n x n kernel, and O(n^3) for the Cholesky factor (t = None) or eigh (t given).
    """
    _kernels.check_kernel(kernel)
    X = _val.check_images(X, "X (training images)")
    y = _val.check_labels(y, "y", len(X))
    ridge = _val.check_float(ridge, "ridge", min=0)
    t = _val.check_float(t, "t", min=0, allow_none=True, hint="a training time is >= 0 (None: t = infinity)")
    lr = _val.check_lr(lr)
    K = np.asarray(kernel(X), dtype=np.float64)
    K = (K + K.T) / 2
    if t is None:
        alpha = _reg.fit(K, y, ridge=ridge, jitter=jitter).alpha
    else:
        if ridge:
            raise ValueError("ridge applies to t = None only; the finite-time predictor f_t has no ridge")
        mu, V = np.linalg.eigh(K)
        s = abs(_reg.shift_for(K, 0.0, jitter))
        if mu[0] < -s:  # the t = None path's rule: not positive semi-definite even with the jitter
            raise _reg.NotPositiveDefiniteError(
                f"the kernel matrix of X has eigenvalue {mu[0]:.3g} < 0 beyond the jitter ({s:.3g}): it is not a "
                "kernel matrix (check its sign and how it was computed), or compute it in float64")
        mu = np.maximum(mu, 0.0)
        # (1 - exp(-lr mu t)) / mu, with its limit lr t at mu = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(mu > 1e-12 * max(mu.max(), 1e-300), -np.expm1(-lr * mu * t) / mu, lr * t)
        alpha = V @ (g * (V.T @ y))
    return KernelPredictor(kernel, X, alpha, dict(kind="kernel_predictor", ridge=ridge, t=t, lr=lr,
                                                  kernel=kernel.spec))


@dataclass
class EigenFeatures:
    """The predictor split along K's eigenvectors: mu (n,) decreasing, V (n, n) the
    eigenvectors as columns, coef = V^T y / mu, so that f_i(x) = K(x, X) v_i coef_i."""

    kernel: object
    X: np.ndarray
    y: np.ndarray
    mu: np.ndarray
    V: np.ndarray
    coef: np.ndarray

    def predictor(self, idx) -> KernelPredictor:
        """The predictor of one feature (an int) or of the sum of several (a list of indices)."""
        idx = np.atleast_1d(np.asarray(idx))
        if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= len(self.mu):
            raise ValueError(f"idx={idx.tolist()} is invalid: feature indices are integers in [0, {len(self.mu) - 1}]")
        return KernelPredictor(self.kernel, self.X, self.V[:, idx] @ self.coef[idx],
                               dict(kind="eigen_feature", idx=idx.tolist()))

    def values(self, x, k: int | None = None) -> np.ndarray:
        """f_i(x) for the first ``k`` features (all by default): (m, k); row sums give f(x)."""
        x = _check_test(x, self.X)
        k = len(self.mu) if k is None else _val.check_int(k, "k", min=1, max=len(self.mu))
        Kx = np.asarray(self.kernel(x, self.X), dtype=np.float64)
        return (Kx @ self.V[:, :k]) * self.coef[:k]


def eigen_features(kernel, X, y) -> EigenFeatures:
    """Eigen-features of the ridgeless predictor (Tsilivis & Kempe 2022, Sec. 4).
    Cost: the n x n kernel and one O(n^3) symmetric eigendecomposition."""
    _kernels.check_kernel(kernel)
    X = _val.check_images(X, "X (training images)")
    y = _val.check_labels(y, "y", len(X))
    K = np.asarray(kernel(X), dtype=np.float64)
    mu, V = np.linalg.eigh((K + K.T) / 2)
    order = np.argsort(mu)[::-1]
    mu, V = mu[order], V[:, order]
    if mu[-1] <= 0:
        raise _reg.NotPositiveDefiniteError(
            f"the kernel matrix of X has eigenvalue {mu[-1]:.3g} <= 0: the ridgeless features are undefined "
            "(duplicate images, or a kernel computed in float32: use dtype='float64')")
    return EigenFeatures(kernel, X, y, mu, V, (V.T @ y) / mu)


# ---------------------------------------------------------------------------- attacks
def _project(x, x0, eps, norm):
    """Into the eps-ball around x0 (per image) and the box [0, 1]."""
    d = x - x0
    if norm == "linf":
        d = np.clip(d, -eps, eps)
    else:
        n = np.sqrt(np.sum(d.reshape(len(d), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (d.ndim - 1))
        d = d * np.minimum(1.0, eps / np.maximum(n, 1e-12))
    return np.clip(x0 + d, 0.0, 1.0)


def _direction(g, norm):
    if norm == "linf":
        return np.sign(g)
    n = np.sqrt(np.sum(g.reshape(len(g), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (g.ndim - 1))
    return g / np.maximum(n, 1e-12)


def attack(predictor, X, y, eps: float, norm: str = "linf", steps: int = 1, step_size: float | None = None,
           random_start: bool = False, seed: int = 0) -> np.ndarray:
    """Adversarial images against a :class:`KernelPredictor` (or any object with the same
    ``input_grad``): ``steps`` signed (L-infinity) or normalized (L2) gradient steps of size
    ``step_size`` (default ``eps``) on the margin loss -y f(x), each followed by projection
    onto the eps-ball around X and the box [0, 1]. ``steps=1`` with the default step is FGSM;
    more steps are PGD (Madry et al.; with ``random_start`` from a random point of the ball: uniform per
    pixel for L-infinity, on the sphere of radius eps in a uniform direction for L2).

    Args:
        X: images (m, H, W, C) in [0, 1] of the training images' shape; y: their labels (m,) in {-1, +1};
        eps: the radius: L-infinity per pixel, in [0, 1]; L2 per image, at most sqrt(H W C);
        norm: "linf" or "l2".
    Returns the adversarial images (m, H, W, C), float64. Cost: ``steps`` kernel VJPs.
    """
    if not isinstance(predictor, KernelPredictor):
        raise TypeError(f"predictor={_val.describe(predictor)} is invalid: must be a KernelPredictor "
                        "(kernel_predictor(...) or EigenFeatures.predictor(i))")
    _val.check_choice(norm, "norm", NORMS)
    X0 = _check_test(X, predictor.X).astype(np.float64)
    # L-infinity: at most 1 (the box's side); L2: at most the box's diagonal sqrt(H W C)
    top = 1.0 if norm == "linf" else float(np.sqrt(np.prod(X0.shape[1:])))
    eps = _val.check_float(eps, "eps", min=0, max=top,
                           hint="eps is the radius of the perturbation in pixel units ([0, 1] images)")
    steps = _val.check_steps(steps, "steps")
    step_size = eps if step_size is None else _val.check_float(step_size, "step_size", min=0, include_min=False)
    seed = _val.check_seed(seed)
    y = _val.check_labels(y, "y", len(X0))
    if eps == 0:
        return X0.copy()
    x = X0.copy()
    if random_start:
        rng = np.random.default_rng(seed)
        x = _project(x + eps * _direction(rng.standard_normal(x.shape), norm) *
                     (rng.uniform(size=x.shape) if norm == "linf" else 1.0), X0, eps, norm)
    for _ in range(steps):
        g = predictor.input_grad(x, -y)  # d/dx sum_i -y_i f(x_i)
        x = _project(x + step_size * _direction(g, norm), X0, eps, norm)
    return x


def fgsm(predictor, X, y, eps: float, norm: str = "linf") -> np.ndarray:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps."""
    return attack(predictor, X, y, eps, norm, steps=1)


def pgd(predictor, X, y, eps: float, norm: str = "linf", steps: int = 10, step_size: float = 0.01,
        random_start: bool = False, seed: int = 0) -> np.ndarray:
    """Projected gradient descent (Madry et al. 2018); the reference uses 10 steps of 0.01 (L-infinity)."""
    return attack(predictor, X, y, eps, norm, steps=steps, step_size=step_size, random_start=random_start,
                  seed=seed)


def accuracy(f, y) -> float:
    """Fraction of sign(f) == y (predictions f (m,), labels y (m,) in {-1, +1})."""
    f = _val.check_array(f, "f", ndim=1)
    y = _val.check_labels(y, "y", len(f))
    return float(np.mean(np.sign(f) == y))


def random_sign_noise(X, eps: float, seed: int = 0) -> np.ndarray:
    """The baseline of the same budget: X + eps * (random signs), clipped to [0, 1]."""
    X = _val.check_images(X, "X")
    eps = _val.check_float(eps, "eps", min=0, max=1)
    rng = np.random.default_rng(_val.check_seed(seed))
    return np.clip(X + eps * rng.choice([-1.0, 1.0], size=X.shape), 0.0, 1.0)


def feature_attack_shares(features: EigenFeatures, X, y, X_adv, k: int | None = None) -> np.ndarray:
    """Each feature's share of what an attack did to the full predictor: the drop of the margin
    y f(x) from X to X_adv splits exactly over the features (f = sum_i f_i), and feature i's
    share is its part of the total drop, summed over the images: (k,), summing to the share of
    the first k features (1 for all of them)."""
    if not isinstance(features, EigenFeatures):
        raise TypeError(f"features={_val.describe(features)} is invalid: must be the EigenFeatures of "
                        "eigen_features(kernel, X, y)")
    X = _check_test(X, features.X)
    X_adv = _val.check_images(X_adv, "X_adv", X.shape[1:])
    if len(X_adv) != len(X):
        raise ValueError(f"X_adv holds {len(X_adv)} images for the {len(X)} of X: one attacked image per image")
    y = _val.check_labels(y, "y", len(X))
    drop = ((features.values(X) - features.values(X_adv)) * y[:, None]).sum(axis=0)  # (n,)
    total = float(drop.sum())
    if not abs(total) > 1e-12 * max(1.0, float(np.abs(drop).sum())):
        raise ValueError("X_adv did not change the predictor's margins (total drop "
                         f"{total:.3g}): there is no attack to split into shares. Is X_adv the attacked X "
                         "(eps > 0)?")
    shares = drop / total
    return shares if k is None else shares[:_val.check_int(k, "k", min=1, max=len(shares))]


# ---------------------------------------------------------------------------- kernel dynamics
def relative_kernel_change(K_t, K_0) -> float:
    """||K_t - K_0||_F / ||K_0||_F: how far a network's empirical NTK moved from its start."""
    K_t = _val.check_array(K_t, "K_t", ndim=2, dtype=np.float64)
    K_0 = _val.check_array(K_0, "K_0", shape=K_t.shape, dtype=np.float64)
    if not np.any(K_0):
        raise ValueError("K_0 is all zeros: the change relative to it is undefined (is it the kernel at the start?)")
    return float(np.linalg.norm(K_t - K_0) / np.linalg.norm(K_0))


def label_alignment(K, y, k: int) -> float:
    """||V_k^T y||^2 / ||y||^2 for the top-k eigenvectors V_k of K: the share of the labels
    that lies in the kernel's top-k eigenspace (1 when the labels are in it)."""
    K = _val.check_gram(K, "K")
    y = _val.check_labels(y, "y", len(K), values=None)
    k = _val.check_int(k, "k", min=1, max=len(K))
    mu, V = np.linalg.eigh(K)
    Vk = V[:, np.argsort(mu)[::-1][:k]]
    return float(np.sum((Vk.T @ y) ** 2) / np.sum(y ** 2))


def network_pgd(arch, eps: float, steps: int = 3, step_size: float | None = None, norm: str = "linf"):
    """A JAX function ``perturb(params, x, y) -> x_adv``: PGD on a network's margin loss
    -y f(x; params), inside the eps-ball and [0, 1]; pass it as ``perturb`` to
    :func:`ntklib.train.train` for adversarial training (Madry et al. 2018)."""
    _models.check_architecture(arch)
    _val.check_choice(norm, "norm", NORMS)
    eps = _val.check_float(eps, "eps", min=0, max=1)
    steps = _val.check_steps(steps, "steps")
    step_size = 2.5 * eps / steps if step_size is None else _val.check_float(step_size, "step_size", min=0)

    def perturb(params, x, y):
        def margin(u):
            return -jnp.sum(y * arch.predict(params, u))

        def one(u, _):
            g = jax.grad(margin)(u)
            if norm == "linf":
                d = jnp.clip(u + step_size * jnp.sign(g) - x, -eps, eps)
            else:
                gn = jnp.sqrt(jnp.sum(g.reshape(len(g), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (g.ndim - 1))
                d = u + step_size * g / jnp.maximum(gn, 1e-12) - x
                dn = jnp.sqrt(jnp.sum(d.reshape(len(d), -1) ** 2, axis=1)).reshape((-1,) + (1,) * (d.ndim - 1))
                d = d * jnp.minimum(1.0, eps / jnp.maximum(dn, 1e-12))
            return jnp.clip(x + d, 0.0, 1.0), None

        return jax.lax.scan(one, x, None, length=steps)[0]

    return perturb


# ---------------------------------------------------------------------------- studies
def robustness_curve(predictor, X, y, eps_list, norm: str = "linf", pgd_steps: int = 0, pgd_step: float = 0.01,
                     seed: int = 0):
    """Accuracy of ``predictor`` on X under FGSM (and PGD if ``pgd_steps``), and under random
    sign noise of the same eps, for each eps. PGD's step is ``pgd_step`` (the reference: 10
    steps of 0.01 at eps = 8/255), or 2.5 eps / pgd_steps where that is larger (Madry et al.'s
    rule), so that PGD can reach the border of every ball. Returns (rows, adversarial images):
    rows is a list of dicts (eps, clean, fgsm, pgd, noise), images {eps: FGSM images}
    (reused to measure transfer to networks)."""
    if not isinstance(predictor, KernelPredictor):
        raise TypeError(f"predictor={_val.describe(predictor)} is invalid: must be a KernelPredictor "
                        "(kernel_predictor(...) or EigenFeatures.predictor(i))")
    X = _check_test(X, predictor.X)
    y = _val.check_labels(y, "y", len(X))
    _val.check_choice(norm, "norm", NORMS)
    top = 1.0 if norm == "linf" else float(np.sqrt(np.prod(X.shape[1:])))
    eps_list = [_val.check_float(e, f"eps_list[{i}]", min=0, max=top) for i, e in
                enumerate(np.ravel(_val.as_array(eps_list, "eps_list")).tolist())]
    if not eps_list:
        raise ValueError("eps_list is empty: give the radii to attack at, e.g. [0, 2/255, 8/255]")
    pgd_steps = _val.check_int(pgd_steps, "pgd_steps", min=0, hint="0 skips PGD")
    pgd_step = _val.check_float(pgd_step, "pgd_step", min=0, include_min=False)
    seed = _val.check_seed(seed)
    clean = accuracy(predictor(X), y)
    rows, images = [], {}
    for e in eps_list:
        adv = fgsm(predictor, X, y, e, norm)
        images[e] = adv
        row = dict(eps=e, clean=clean, fgsm=accuracy(predictor(adv), y),
                   noise=accuracy(predictor(random_sign_noise(X, min(e, 1.0), seed)), y) if norm == "linf" else None)
        if pgd_steps:
            step = max(pgd_step, 2.5 * e / pgd_steps)
            row["pgd"] = accuracy(predictor(pgd(predictor, X, y, e, norm, steps=pgd_steps, step_size=step)), y)
        rows.append(row)
    return rows, images


def network_transfer(arch, params, y, images: dict, seed: int = 0) -> list[dict]:
    """Accuracy of a trained network on adversarial images made against a *kernel*
    (``images``: {eps: images}, e.g. from :func:`robustness_curve`), beside random sign noise
    of the same eps on the clean images (``images[0.0]`` or the smallest eps's, assumed clean
    at eps 0). Returns one dict per eps: eps, fgsm_from_kernel, noise."""
    _models.check_architecture(arch)
    if not isinstance(images, dict) or not images:
        raise TypeError(f"images={_val.describe(images)} is invalid: must be a dict {{eps: images}} such as "
                        "robustness_curve's second result")
    eps_sorted = sorted(images)
    clean = _val.check_images(images[eps_sorted[0]], f"images[{eps_sorted[0]}]")
    y = _val.check_labels(y, "y", len(clean))
    arch.check_fits(clean.shape[1:], params, who="images")
    for e in eps_sorted:
        _val.check_float(e, "eps (a key of images)", min=0)
        if np.shape(images[e]) != clean.shape:
            raise ValueError(f"images[{e}] has shape {np.shape(images[e])}, the clean images {clean.shape}: "
                             "one attacked image per clean image")
    if eps_sorted[0] != 0:
        raise ValueError("images must hold the clean images under eps = 0.0 (robustness_curve does when 0 is in "
                         "eps_list)")
    rows = []
    for e in eps_sorted:
        f_adv = _train.predict(arch, params, images[e])
        f_noise = _train.predict(arch, params, random_sign_noise(clean, e, seed))
        rows.append(dict(eps=e, fgsm_from_kernel=accuracy(f_adv, y), noise=accuracy(f_noise, y)))
    return rows


def reference_mlp(width: int = 512, depth: int = 1) -> _models.Architecture:
    """The authors' fully connected ReLU network (Tsilivis & Kempe, Sec. 5 and their code): ``depth``
    hidden layers of ``width`` units, NTK parameterization, W_std sqrt(2), b_std 0.1. Its infinite
    NTK is notebook 08's kernel; its finite versions are the networks the attacks transfer to."""
    return _models.mlp(_val.check_int(width, "width", min=1), depth=_val.check_int(depth, "depth", min=1),
                       W_std=np.sqrt(2), b_std=0.1)


def accuracy_spread(predictor, X, y, m: int) -> dict:
    """How far a test set of ``m`` images can fall from a predictor's accuracy: its accuracy on the
    whole split (X, y) and the lowest and highest over the disjoint strided subsets of size m
    (subset i holds images i, i + s, i + 2s, ... with s = len(X) // m; there are s of them). A
    reference quoted on a draw of m images is one such subset. Returns whole_split_accuracy, n_whole,
    subset_size, subset_min, subset_max. Cost: one prediction of the whole split."""
    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    m = _val.check_int(m, "m", min=1, max=len(X), hint=f"a subset of the {len(X)} images of the split")
    right = np.sign(np.asarray(predictor(X))) == y
    stride = len(right) // m
    subsets = [right[i::stride][:m].mean() for i in range(stride)]
    return dict(whole_split_accuracy=float(right.mean()), n_whole=len(right), subset_size=m,
                subset_min=float(min(subsets)), subset_max=float(max(subsets)))


def transfer_study(X, y, images: dict, y_test, widths, lrs, config, depth: int = 1, seed: int = 0,
                   progress: bool = False) -> tuple[list[dict], list[tuple]]:
    """Do the kernel's adversarial images fool trained networks (notebook 08; Tsilivis & Kempe,
    Sec. 5)? For each width, :func:`reference_mlp` networks trained from the same initialization
    (``config.seed``) on (X, y) with ``config`` at each learning rate of ``lrs`` (one
    :func:`ntklib.train.train_many` batch per width), then :func:`network_transfer` on ``images``
    ({eps: test images}, :func:`robustness_curve`'s second result) with labels ``y_test`` (its random
    signs drawn with ``seed``). The
    smaller the learning rate and the wider the network, the closer it stays to its kernel
    (lazy regime): ``relative_param_change`` = ||theta_T - theta_0|| / ||theta_0|| measures it.

    Returns (rows, diverged): one row per (width, lr, eps) with width, lr, train_loss,
    relative_param_change, eps, fgsm_from_kernel, noise; and the (width, lr) pairs whose training
    diverged (left out of the rows). Cost: len(widths) x len(lrs) trainings."""
    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    widths = _val.check_int_list(widths, "widths", min=1)
    if isinstance(lrs, (str, dict)) or not isinstance(lrs, (list, tuple)) or not lrs:
        raise TypeError(f"lrs={_val.describe(lrs)} is invalid: must be a non-empty list of learning rates, "
                        "e.g. [1.0, 4.0]")
    lrs = [_val.check_lr(r, "lrs") for r in lrs]
    config = _train.check_config(config)
    rows, diverged = [], []
    for w in widths:
        net = reference_mlp(w, depth)
        p0 = net.init(config.seed, X.shape[1:])
        runs = _train.train_many(net, [(X, y)] * len(lrs), [replace(config, lr=r) for r in lrs],
                                 progress=progress)
        for r_lr, r in zip(lrs, runs, strict=True):
            if r.diverged:
                diverged.append((w, r_lr))
                continue
            moved = _train.param_distance(r.params, p0) / _train.param_distance(p0)
            rows += [dict(width=w, lr=r_lr, train_loss=r.final_loss, relative_param_change=moved, **t)
                     for t in network_transfer(net, r.params, y_test, images, seed)]
    return rows, diverged


def curve_at(curve, eps: float) -> dict:
    """The accuracies of a :func:`robustness_curve` (its rows) at radius ``eps``: clean_accuracy,
    fgsm_accuracy and pgd_accuracy (None where the curve has no PGD; NaN where eps is not on it)."""
    rows = {float(r["eps"]): r for r in curve}
    at = rows.get(float(eps), {})
    first = next(iter(rows.values()))
    return dict(clean_accuracy=float(first["clean"]), fgsm_accuracy=float(at.get("fgsm", np.nan)),
                pgd_accuracy=float(at.get("pgd", np.nan)) if "pgd" in first else None)


def feature_gradients(features: EigenFeatures, x, n: int) -> np.ndarray:
    """What the top eigen-features look at: the input gradient of f_i at the one image ``x``
    (1, H, W, C) for i < ``n`` (the direction FGSM against feature i moves it), each rescaled to
    [0, 1] for display. Returns (n, H, W, C). Cost: n VJPs through K(x, X)."""
    x = _val.check_images(x, "x", features.X.shape[1:])
    if len(x) != 1:
        raise ValueError(f"x holds {len(x)} images: give one (e.g. X_test[:1])")
    n = _val.check_int(n, "n", min=1, max=len(features.mu), hint=f"the kernel has {len(features.mu)} features")
    g = np.stack([features.predictor(i).input_grad(x, np.ones(1))[0] for i in range(n)])
    lo, span = g.min(axis=(1, 2, 3), keepdims=True), np.ptp(g, axis=(1, 2, 3), keepdims=True)
    return (g - lo) / np.where(span > 0, span, 1.0)


def feature_table(features: EigenFeatures, X, y, eps: float, k: int, norm: str = "linf"):
    """For the first ``k`` eigen-features (Tsilivis & Kempe 2022, Sec. 4): usefulness (clean
    accuracy of sign f_i), robustness (accuracy of f_i under FGSM against f_i alone), the
    accuracy of the partial sum f_0 + ... + f_i, and the feature's share of an FGSM attack on
    the full predictor (:func:`feature_attack_shares`). Returns a list of dicts, one per feature.
    Cost: k FGSM attacks (one kernel VJP each) and the feature values."""
    y = _val.check_labels(y, "y", len(_val.as_array(X, "X")))
    k = _val.check_int(k, "k", min=1, max=len(features.mu))
    full = features.predictor(np.arange(len(features.mu)))
    shares = feature_attack_shares(features, X, y, fgsm(full, X, y, eps, norm), k)
    vals = features.values(X, k)
    partial = np.cumsum(vals, axis=1)
    rows = []
    for i in range(k):
        p = features.predictor(i)
        rows.append(dict(feature=i, eigenvalue=float(features.mu[i]), usefulness=accuracy(vals[:, i], y),
                         robustness=accuracy(p(fgsm(p, X, y, eps, norm)), y),
                         partial_sum_accuracy=accuracy(partial[:, i], y), attack_share=float(shares[i])))
    return rows


def kernel_trajectory(arch, X, y, config, X_probe, y_probe, perturb=None, k: int = 10, progress: bool = False):
    """Train ``arch`` on (X, y) (:func:`ntklib.train.train`, adversarially with ``perturb``) and
    follow its empirical NTK on the probe images at every evaluation point: relative change
    from the start and the alignment of its top-``k`` eigenspace with the probe labels.
    Returns (rows, result): rows of dicts (step, train_loss, kernel_change, alignment)."""
    _models.check_architecture(arch)
    config = _train.check_config(config)
    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    X_probe = _val.check_images(X_probe, "X_probe", X.shape[1:])
    y_probe = _val.check_labels(y_probe, "y_probe", len(X_probe))
    k = _val.check_int(k, "k", min=1, max=len(X_probe), hint=f"the probe holds {len(X_probe)} images")
    params0 = arch.init(config.seed, np.shape(X)[1:])

    def ntk(p):
        return np.asarray(_kernels.empirical_ntk(arch.apply_fn, p, dtype="float64")(X_probe))

    K0 = ntk(params0)
    rows = [dict(step=0, kernel_change=0.0, alignment=label_alignment(K0, y_probe, k))]

    def on_eval(step, p):
        K = ntk(p)
        rows.append(dict(step=step, kernel_change=relative_kernel_change(K, K0),
                         alignment=label_alignment(K, y_probe, k)))

    res = _train.train(arch, X, y, config, params=params0, progress=progress, perturb=perturb, on_eval=on_eval)
    for r, loss in zip(rows[1:], res.history["loss"], strict=True):
        r["train_loss"] = loss
    return rows, res


def dynamics_study(arch, X, y, config, n_probe: int, eps: float, pgd_steps: int = 3, k: int = 10):
    """The empirical NTK during standard and adversarial training (notebook 08; Tsilivis & Kempe,
    Sec. 6): :func:`kernel_trajectory` of ``arch`` trained on (X, y) with ``config``, once plainly and
    once adversarially (:func:`network_pgd` with ``eps`` and ``pgd_steps`` inside each step), on the
    first ``n_probe`` training images. Returns a pandas DataFrame: step, kernel_change, alignment,
    train_loss, training ("standard" | "adversarial")."""
    import pandas as pd

    X = _val.check_images(X, "X")
    n_probe = _val.check_int(n_probe, "n_probe", min=1)
    probe = slice(0, min(n_probe, len(X)))
    rows = []
    for name, perturb in (("standard", None), ("adversarial", network_pgd(arch, eps, steps=pgd_steps))):
        traj, _ = kernel_trajectory(arch, X, y, config, X[probe], np.asarray(y)[probe], perturb=perturb, k=k)
        rows += [dict(r, training=name) for r in traj]
    return pd.DataFrame(rows)
