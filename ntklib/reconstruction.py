"""Reconstructing training images from a network's weights (Loo, Hasani, Lechner, Amini, Rus,
"Understanding reconstruction attacks with the neural tangent kernel and dataset distillation",
ICLR 2024).

In the kernel regime, gradient-descent training on squared loss moves the parameters by a
weighted sum of the training points' gradients,

    Delta theta = theta_f - theta_0 = sum_i a_i grad_theta f(x_i; theta_0)   (exact for the
    linearized network; a_i = lr sum_t (y_i - f_t(x_i))),

so the training set is (up to the a_i) what explains Delta theta. The attack (Sec. 3)
searches N_R candidate images X and weights alpha minimizing

    L(X, alpha) = || Delta theta - sum_j alpha_j grad_theta f~(x_j; theta_g) ||^2
                  + lambda_range N_R mean(relu(-X)^2 + relu(X - 1)^2) + lambda_tv TV(X),

with theta_g = theta_f (the trained network, ``grad_at="final"``, our default for standard
networks), theta_0 (``"init"``, the default for a linearized one, whose gradients do not move), or
both (``"both"``, the authors' ``both_kernels``: sum_j alpha_j grad f~(x_j; theta_f) + sum_j
alpha'_j grad f~(x_j; theta_0), a second set of weights alpha'), f~ the network with
its ReLUs smoothed into softplus(beta u) / beta during the search (the authors' device: ReLU
networks have piecewise-constant input gradients), TV the mean squared difference of
neighbouring pixels (the high-frequency penalty). The gradient sum is one vector-Jacobian
product of the batch output with cotangent alpha (:func:`gradient_sum`): per-example gradients
are never formed. Defaults (``docs/design.md``, section 8 and the authors' ``make_reconstruction.py``):
N_R = 2N images, alpha ~ U[-0.5, 0.5], Adam lr 0.02, lambda_range = 0.1; the candidates start
as a *flat* image plus noise, m + 0.2 N(0, 1) per pixel with m the training set's scalar
(per-channel) mean: the authors centre the data by that mean and start from 0.2 N(0, 1) in the
centred coordinates. ``init="grey"`` (m = 0.5) needs no statistic of the private data at all.
Departure: our victims see uncentred [0, 1] images (the authors train on centred ones), so the
mean enters the network through its first layer instead of being removed beforehand.

Quality: reconstructions are matched one-to-one to the training images by the optimal
assignment on L2 distance (:func:`match`), and scored by SSIM (Wang et al. 2004, :func:`ssim`).
Networks are :func:`ntklib.models.plain_mlp` (the parameter layout the smoothing needs).
Cost per step: one forward pass and one VJP on the N_R candidates, differentiated once more
(reverse over reverse), O(N_R P) for P parameters.
"""
from __future__ import annotations

import collections
import inspect
import json
import threading
import time
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from . import adversarial as _adv
from . import cache as _cache
from . import kernels as _kernels
from . import models as _models
from . import parallel as _parallel
from . import train as _train
from . import validation as _val

__all__ = ["mlp_apply", "linearized", "gradient_sum", "param_delta", "match_loss", "ReconstructionResult",
           "reconstruct",
           "match", "ssim", "ssim_matrix", "train_victim", "baseline_images", "quality", "distilled_accuracy",
           "start_level", "run", "study", "distillation_study", "scaling_study", "GRAD_AT", "INIT"]


def _check_mlp(arch):
    _models.check_architecture(arch)
    if arch.spec.get("name") != "plain_mlp":
        raise ValueError(f"architecture {arch.spec.get('name')!r} is invalid here: the reconstruction attack "
                         "needs ntklib.models.plain_mlp (its ReLUs are smoothed during the search)")
    return arch


def mlp_apply(arch, beta: float | None = None):
    """``apply(params, x) -> (n,)`` of a :func:`~ntklib.models.plain_mlp` with its ReLUs replaced by
    softplus(beta u) / beta (``beta=None``: the network itself)."""
    _check_mlp(arch)
    if beta is None:
        return lambda p, x: arch.apply_fn(p, x).reshape(x.shape[0])
    beta = _val.check_float(beta, "beta", min=0, include_min=False)
    if arch.spec["activation"] != "relu":
        raise ValueError("softplus smoothing applies to ReLU networks; pass beta=None for this one")
    W_std, b_std = arch.spec["W_std"], arch.spec["b_std"]

    def apply(params, x):
        h = x.reshape(x.shape[0], -1)
        for i, (W, b) in enumerate(params):
            h = W_std / jnp.sqrt(W.shape[0]) * (h @ W) + b_std * b
            if i < len(params) - 1:
                h = jax.nn.softplus(beta * h) / beta
        return h.reshape(x.shape[0])

    return apply


def linearized(arch, params0) -> _models.Architecture:
    """The first-order Taylor network f(x; p) = f(x; p0) + <grad_p f(x; p0), p - p0> around ``params0``,
    as an :class:`~ntklib.models.Architecture` that :func:`ntklib.train.train` can train (start it at
    ``params0``). Cost: one forward-mode JVP per forward pass."""
    _models.check_architecture(arch)
    p0 = jax.tree_util.tree_map(np.asarray, params0)  # cast to the trained parameters' dtype at each call

    def apply_fn(params, x, **_):
        base = jax.tree_util.tree_map(lambda a, b: jnp.asarray(a, dtype=b.dtype), p0, params)
        tangent = jax.tree_util.tree_map(lambda a, b: a - b, params, base)
        f0, df = jax.jvp(lambda p: arch.apply_fn(p, x), (base,), (tangent,))
        return f0 + df

    spec = dict(arch.spec, linearized=True)
    return _models.Architecture(spec, arch.init_fn, apply_fn, None)


def gradient_sum(apply, params, X, alpha):
    """sum_j alpha_j grad_theta f(x_j; params): one VJP of the batch output (n,) with cotangent alpha."""
    _, vjp = jax.vjp(lambda p: apply(p, X), params)
    return vjp(alpha)[0]


def param_delta(params_final, params_init):
    """theta_f - theta_0 as a pytree (both of one network: same tree, same leaf shapes)."""
    _val.check_params_tree(params_final, "params_final")
    _val.check_params_tree(params_init, "params_init")
    fs, fd = jax.tree_util.tree_flatten(params_final)
    is_, id_ = jax.tree_util.tree_flatten(params_init)
    if fd != id_ or [np.shape(a) for a in fs] != [np.shape(b) for b in is_]:
        raise ValueError("params_init and params_final are not parameters of one network: leaf shapes "
                         f"{[np.shape(b) for b in is_]} and {[np.shape(a) for a in fs]}; pass the initialization and "
                         "the trained parameters of the same architecture")
    # the difference in float64 (a small change of large weights), handed to JAX in float32
    return jax.tree_util.tree_map(lambda a, b: jnp.asarray((np.asarray(a, np.float64) - np.asarray(b, np.float64))
                                                           .astype(np.float32)), params_final, params_init)


def _f32(tree):
    return jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v, np.float32)), tree)


def match_loss(apply, delta, grad_params, X, alpha):
    """||Delta theta - sum_j alpha_j grad_theta f(x_j; grad_params)||^2 / ||Delta theta||^2: the share of
    the weight change the candidates X (n, H, W, C) with weights alpha (n,) leave unexplained (the
    attack's data term, relative). ``grad_params`` may be a tuple of parameter sets (the authors'
    ``both_kernels``: theta_f and theta_0) with alpha (len(grad_params), n), one row each: the sum runs
    over both. A JAX function: differentiable in X and alpha."""
    points = grad_params if isinstance(grad_params, tuple) else (grad_params,)
    alphas = alpha if isinstance(grad_params, tuple) else alpha[None]
    total = delta
    for p, a in zip(points, alphas, strict=True):
        total = jax.tree_util.tree_map(lambda d, g: d - g, total, gradient_sum(apply, p, X, a))
    return _sq_norm(total) / _sq_norm(delta)


GRAD_AT = ("final", "init", "both")
"""Where the attack takes the network's gradients (``grad_at``): at the trained weights, at the
initial ones, or at both (the authors' ``both_kernels``)."""
INIT = ("flat", "grey", "mean_image")
"""The candidates' start (``init``): the authors' flat image plus noise at the training set's scalar
mean (the default), a data-free mid-grey plus noise, or the private per-pixel mean image (a stronger
attacker, for comparison only)."""


def _sq_norm(tree):
    return sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(tree))


def _tv(X):
    return jnp.mean((X[:, 1:] - X[:, :-1]) ** 2) + jnp.mean((X[:, :, 1:] - X[:, :, :-1]) ** 2)


@dataclass
class ReconstructionResult:
    """Candidates ``X`` (N_R, H, W, C) clipped to [0, 1], their weights ``alpha`` (N_R,), and
    ``history`` (step, loss, match loss: the relative residual ||Delta - sum||^2 / ||Delta||^2)."""

    X: np.ndarray
    alpha: np.ndarray
    history: dict = field(default_factory=dict)


def reconstruct(arch, params_init, params_final, n_candidates: int, shape, steps: int = 3000, lr: float = 0.02,
                beta: float | None = 10.0, range_weight: float = 0.1, tv_weight: float = 1e-3,
                grad_at: str = "final", init_mean=None, seed: int = 0, log_every: int = 100, snapshots=(),
                progress: bool = True) -> ReconstructionResult:
    """The reconstruction attack (module notes): ``n_candidates`` images of ``shape`` (H, W, C) and
    their weights, fitted by Adam (``lr``, ``steps``) so that their weighted gradient sum explains
    theta_f - theta_0, the gradients taken at ``grad_at``: "final" (theta_f), "init" (theta_0: the
    linearized network's) or "both" (the authors' ``both_kernels``, a second set of weights).
    ``beta``: softplus smoothing of the ReLUs (None: none); ``init_mean``: the level (one value, one
    per channel, or an image) the candidates start around, plus 0.2 N(0, 1) noise (default 0.5,
    mid-grey: no knowledge of the data); ``snapshots``: steps at which the candidates are kept
    (``history["snapshots"]``: {step: X}, step 0 the start). Cost per step: module notes (twice the
    VJPs with "both")."""
    _check_mlp(arch)
    delta = param_delta(params_final, params_init)
    n_candidates = _val.check_int(n_candidates, "n_candidates", min=1, hint="the paper uses 2N for N training images")
    shape = _val.check_image_shape(shape, "shape")
    arch.check_fits(shape, params_final, who=f"shape={shape}")
    _val.check_choice(grad_at, "grad_at", GRAD_AT)
    if init_mean is not None:
        init_mean = _val.check_array(init_mean, "init_mean", dtype=np.float32)
        try:
            fits = np.broadcast_shapes(init_mean.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"init_mean has shape {init_mean.shape}, which does not broadcast to the image shape "
                             f"{shape}: give one value or one image") from None
    steps = _val.check_steps(steps, "steps")
    lr = _val.check_lr(lr)
    range_weight = _val.check_float(range_weight, "range_weight", min=0)
    tv_weight = _val.check_float(tv_weight, "tv_weight", min=0)
    log_every = _val.check_steps(log_every, "log_every")
    # networks trained in float64 are attacked in float32 (ntklib never enables x64 globally)
    points = tuple(_f32(p) for p in ((params_final,) if grad_at == "final" else (params_init,) if grad_at == "init"
                                     else (params_final, params_init)))
    mlp_apply(arch, beta)  # checks beta against the network
    rng = np.random.default_rng(_val.check_seed(seed))
    mean = 0.5 if init_mean is None else np.asarray(init_mean, np.float32)
    X0 = (mean + 0.2 * rng.standard_normal((n_candidates, *shape))).astype(np.float32)
    a0 = rng.uniform(-0.5, 0.5, (len(points), n_candidates)).astype(np.float32)
    norm = float(_sq_norm(delta))
    if norm == 0:
        raise ValueError("params_final equals params_init: the network did not move, there is nothing to "
                         "reconstruct from (train it first)")

    tx, attack_step = _attack_program(arch, beta, lr, range_weight, tv_weight)
    delta32 = _f32(delta)

    def step(z, s):
        return attack_step(z, s, delta32, points)

    z = (jnp.asarray(X0), jnp.asarray(a0))
    state = tx.init(z)
    keep = set(_val.check_int_list(list(snapshots), "snapshots", min=0, max=steps, allow_empty=True))
    hist = {"step": [], "loss": [], "match": [], "snapshots": {0: np.clip(X0, 0, 1)} if 0 in keep else {}}
    start, hint = None, f"lower lr (now {lr:g}; the authors use 0.02)"
    for t in tqdm(range(1, steps + 1), desc="reconstruction", disable=not progress):
        z, state, loss, m = step(z, state)
        if t == 1:  # the loss at the start (step() returns the loss before its update)
            start = _val.check_loss(loss, "the reconstruction", 0, hint)
        if t in keep:
            hist["snapshots"][t] = np.clip(np.asarray(z[0]), 0.0, 1.0)
        if t % log_every == 0 or t == steps:
            hist["step"].append(t)
            hist["loss"].append(_val.check_loss(loss, "the reconstruction", t, hint, start=start))
            hist["match"].append(float(m))
    alpha = np.asarray(z[1])
    return ReconstructionResult(np.clip(np.asarray(z[0]), 0.0, 1.0), alpha[0] if len(alpha) == 1 else alpha, hist)


_PROGRAMS: dict = {}


def _attack_program(arch, beta, lr, range_weight, tv_weight):
    """(optimizer, jitted Adam step of :func:`reconstruct`) for a plain MLP of ``arch.spec`` and these
    settings, built once per process: the weight change and the gradient points are arguments, not
    constants of the program, so every run on networks of one shape (the seeds, starts and
    gradient points of notebook 09) reuses one compiled program instead of compiling its own
    (~1 s each on 2 cores)."""
    key = (json.dumps(arch.spec, sort_keys=True, default=str), beta, float(lr), float(range_weight), float(tv_weight))
    if key not in _PROGRAMS:
        apply = mlp_apply(arch, beta)
        tx = optax.adam(lr)

        def losses(z, delta, points):
            X, a = z
            match_ = match_loss(apply, delta, points, X, a)
            rng_pen = range_weight * X.shape[0] * jnp.mean(jax.nn.relu(-X) ** 2 + jax.nn.relu(X - 1) ** 2)
            return match_ + rng_pen + tv_weight * _tv(X), match_

        @jax.jit
        def step(z, s, delta, points):
            (loss, m), g = jax.value_and_grad(losses, has_aux=True)(z, delta, points)
            u, s = tx.update(g, s, z)
            return optax.apply_updates(z, u), s, loss, m

        _PROGRAMS[key] = (tx, step)
    return _PROGRAMS[key]


# ---------------------------------------------------------------------------- quality
def _gauss_window(size, sigma=1.5):
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g)
    return w / w.sum()


def _filter(img, w):
    """'valid' correlation of (n, H, W) with a (k, k) window."""
    k = len(w)
    H, W = img.shape[1] - k + 1, img.shape[2] - k + 1
    out = np.zeros((img.shape[0], H, W))
    for i in range(k):
        for j in range(k):
            out += w[i, j] * img[:, i:i + H, j:j + W]
    return out


def ssim(a, b, win: int | None = None, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) of image pairs a[i], b[i]
    ((n, H, W, C) each), Gaussian window (sigma 1.5, ``win`` x ``win``), K1 = 0.01, K2 = 0.03,
    averaged over positions and channels: (n,). Default window: 7 (the usual) for images of side
    16 or more, 3 for smaller ones (on 8 x 8 digits a 7 x 7 window has 4 positions and scores
    unrelated digits of the same classes 0.8 on average against 0.6 with 3 x 3, measured)."""
    a = _val.check_images(a, "a", box=False).astype(np.float64)
    b = _val.check_images(b, "b", a.shape[1:], box=False).astype(np.float64)
    if len(a) != len(b):
        raise ValueError(f"a holds {len(a)} images and b {len(b)}: SSIM compares pairs")
    side = min(a.shape[1], a.shape[2])
    win = (7 if side >= 16 else 3) if win is None else _val.check_int(win, "win", min=1, max=side)
    data_range = _val.check_float(data_range, "data_range", min=0, include_min=False,
                                  hint="the images' value range (1 for [0, 1] images)")
    w = _gauss_window(win)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(a.shape[3]):
        x, y = a[..., c], b[..., c]
        mx, my = _filter(x, w), _filter(y, w)
        sxx = _filter(x * x, w) - mx ** 2
        syy = _filter(y * y, w) - my ** 2
        sxy = _filter(x * y, w) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        vals.append(s.reshape(len(a), -1).mean(1))
    return np.mean(vals, axis=0)


def ssim_matrix(A, B, **kw) -> np.ndarray:
    """SSIM of every pair (A[i], B[j]): (len(A), len(B))."""
    A, B = np.asarray(A), np.asarray(B)
    i, j = np.meshgrid(np.arange(len(A)), np.arange(len(B)), indexing="ij")
    return ssim(A[i.ravel()], B[j.ravel()], **kw).reshape(len(A), len(B))


def match(X_train, X_rec) -> dict:
    """One-to-one matching of training images (N) to reconstructions (N_R >= N) minimizing the
    total L2 distance (optimal assignment); returns rec_index (N,) (the reconstruction matched to
    each training image), l2 (N,) and ssim (N,) of each pair. Cost: O(N N_R) distances and the
    assignment, O(N_R^3)."""
    X_train = _val.check_images(X_train, "X_train", box=False)
    X_rec = _val.check_images(X_rec, "X_rec", X_train.shape[1:], box=False)
    if len(X_rec) < len(X_train):
        raise ValueError(f"{len(X_rec)} reconstructions for {len(X_train)} training images: one-to-one matching "
                         "needs at least as many reconstructions (the paper uses 2N)")
    a = X_train.reshape(len(X_train), -1).astype(np.float64)
    b = X_rec.reshape(len(X_rec), -1).astype(np.float64)
    D = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0))
    rows, cols = linear_sum_assignment(D)
    rec = np.empty(len(a), int)
    rec[rows] = cols
    return dict(rec_index=rec, l2=D[np.arange(len(a)), rec], ssim=ssim(X_train, X_rec[rec]))


# ---------------------------------------------------------------------------- studies (notebook 09)
def train_victim(arch, X, y, config, seed: int = 0, linear: bool = False):
    """(params_init, params_final) of ``arch`` (or its linearization around its initialization,
    ``linear=True``) trained on (X, y) with ``config`` (:class:`ntklib.train.TrainConfig`) from the
    initialization of ``seed``; the final training loss is in the returned result's ``final_loss``.
    Returns (params_init, TrainResult, the architecture trained)."""
    _check_mlp(arch)
    p0 = arch.init(_val.check_seed(seed), X.shape[1:])
    net = linearized(arch, p0) if linear else arch
    r = _train.train(net, X, y, config, params=p0, progress=False)
    return p0, r, net


def baseline_images(X_other, X_train, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images the attacker could have guessed without the weights: random real images of the
    same classes that were *not* trained on (``X_other``), the bar a reconstruction must clear."""
    X_other = _val.check_images(X_other, "X_other")
    n = _val.check_int(n, "n", min=1, max=len(X_other), hint=f"X_other holds {len(X_other)} images")
    return X_other[np.random.default_rng(_val.check_seed(seed)).choice(len(X_other), n, replace=False)]


def quality(X_train, X_rec, threshold: float = 0.6, X_unseen=None) -> dict:
    """Matched quality of reconstructions: mean L2 and SSIM over the training images, the fraction
    with matched SSIM above ``threshold``, and (with ``X_unseen``, real images of the same classes
    never trained on) ``beats_unseen``: the fraction of training images whose matched
    reconstruction is closer (L2) than every unseen image, i.e. that the weights told the attacker
    more about than the data distribution does. With the per-image arrays under "per_image"."""
    threshold = _val.check_float(threshold, "threshold", min=-1, max=1, hint="an SSIM level (SSIM is in [-1, 1])")
    m = match(X_train, X_rec)
    out = dict(l2=float(m["l2"].mean()), ssim=float(m["ssim"].mean()),
               recovered=float(np.mean(m["ssim"] > threshold)), per_image=m)
    if X_unseen is not None:
        X_unseen = _val.check_images(X_unseen, "X_unseen", np.shape(X_train)[1:], box=False)
        a = np.asarray(X_train, np.float64).reshape(len(X_train), -1)
        b = X_unseen.reshape(len(X_unseen), -1).astype(np.float64)
        nearest = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)).min(1)
        m["nearest_unseen_l2"] = nearest
        out["beats_unseen"] = float(np.mean(m["l2"] < nearest))
    return out


def distilled_accuracy(kernel, X_rec, labels, X_test, y_test, ridge: float = 1e-3) -> float:
    """Reconstructions as a distilled training set (Loo et al., Sec. 5): kernel regression on
    X_rec with ``labels`` (+/-1; the attacker, who holds the weights, labels each reconstruction
    with the victim's own prediction), its accuracy on (X_test, y_test). ``ridge`` is relative to
    the kernel's scale, mean(diag K) over the first 8 images of X_rec (an 8 x 8 block: K's units,
    not its exact mean). Cost: the kernel on X_rec and one solve."""
    X_rec = _val.check_images(X_rec, "X_rec")
    labels = _val.check_labels(labels, "labels", len(X_rec))
    K_scale = float(np.mean(np.diag(np.asarray(kernel(X_rec[:8]), np.float64))))
    pred = _adv.kernel_predictor(kernel, X_rec, labels, ridge=_val.check_float(ridge, "ridge", min=0) * K_scale)
    return _adv.accuracy(pred(X_test), y_test)


def start_level(X, init: str = "flat"):
    """The level the candidates start around (module notes): ``"flat"`` the training set's scalar mean
    per channel (C,) (the authors' centring), ``"grey"`` 0.5 (data-free), ``"mean_image"`` the
    per-pixel mean image (H, W, C) of the private training set: an outline of the answer no attacker
    holding only the weights has, kept to measure how much it flatters the attack."""
    X = _val.check_images(X, "X")
    _val.check_choice(init, "init", INIT)
    if init == "flat":
        return X.mean(axis=(0, 1, 2)).astype(np.float32)
    return np.float32(0.5) if init == "grey" else X.mean(0).astype(np.float32)


def run(X, y, width: int, depth: int = 2, linear: bool = False, config=None, steps: int = 2000, lr: float = 0.02,
        beta: float | None = 10.0, X_unseen=None, seed: int = 0, threshold: float = 0.6, init: str = "flat",
        grad_at: str | None = None) -> dict:
    """One measurement of notebook 09: a :func:`~ntklib.models.plain_mlp` of ``width`` (or its
    linearization) trained on (X, y) with ``config`` (default: full-batch SGD, momentum 0.9, lr 0.5,
    to loss 1e-5 within 3000 steps), attacked with 2N candidates started at ``init``
    (:func:`start_level`; default the authors' flat start), gradients at ``grad_at`` (default
    "final" for a standard network, "init" for a linearized one; "both": the authors'
    ``both_kernels``), matched to X; with ``X_unseen``, the same quality for 2N unseen real images
    beside it. Returns a row (width, n, n_over_w, linear, init, grad_at, attack (e.g. "standard @
    final"), train_loss, match, l2, ssim,
    start_ssim, recovered, beats_unseen, baseline_l2, baseline_ssim, seconds) and, under "result",
    the reconstruction and the victim ("params_init", "params_final", "arch"). A run with the same
    inputs as one of the last :data:`MEMO_SIZE` in this process is served from memory (the same
    arrays and row, ``seconds`` included), not repeated."""
    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    arch = _models.plain_mlp(_val.check_int(width, "width", min=1), _val.check_int(depth, "depth", min=1))
    # everything the attack and the measurement need, checked before the victim trains
    _val.check_bool(linear, "linear")
    config = None if config is None else _train.check_config(config)
    steps, lr, seed = _val.check_steps(steps, "steps"), _val.check_lr(lr), _val.check_seed(seed)
    mlp_apply(arch, beta)
    level = start_level(X, init)
    grad_at = ("init" if linear else "final") if grad_at is None else _val.check_choice(grad_at, "grad_at", GRAD_AT)
    threshold = _val.check_float(threshold, "threshold", min=-1, max=1, hint="an SSIM level (SSIM is in [-1, 1])")
    if X_unseen is not None:
        X_unseen = _val.check_images(X_unseen, "X_unseen", X.shape[1:])
        if len(X_unseen) < 2 * len(X):
            raise ValueError(f"X_unseen holds {len(X_unseen)} images: the baseline draws 2N = {2 * len(X)} unseen "
                             f"images for the N = {len(X)} training images; give at least that many (or None)")
    cfg = config or _train.TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, steps=3000, target_loss=1e-5)
    memo = _cache.key("reconstruction.run", X, y, X_unseen, asdict(cfg),
                      dict(width=width, depth=depth, linear=linear, steps=steps, lr=lr, beta=beta, seed=seed,
                           threshold=threshold, init=init, grad_at=grad_at))  # init and X fix the start level
    with _MEMO_LOCK:
        if memo in _MEMO:
            _MEMO.move_to_end(memo)
            out = _MEMO[memo]
            return dict(out, row=dict(out["row"]))
    p0, r, net = train_victim(arch, X, y, cfg, seed=seed, linear=linear)
    t0 = time.perf_counter()
    res = reconstruct(arch, p0, r.params, 2 * len(X), X.shape[1:], steps=steps, lr=lr, beta=beta, grad_at=grad_at,
                      init_mean=level, seed=seed, progress=False, snapshots=(0,))
    seconds = time.perf_counter() - t0
    q = quality(X, res.X, threshold, X_unseen)
    row = dict(width=width, n=len(X), n_over_w=len(X) / width, linear=linear, init=init, grad_at=grad_at,
               attack=f"{'linearized' if linear else 'standard'} @ {grad_at}",
               train_loss=r.final_loss, match=res.history["match"][-1], l2=q["l2"], ssim=q["ssim"],
               start_ssim=quality(X, res.history["snapshots"][0], threshold)["ssim"], recovered=q["recovered"],
               seconds=seconds)
    if X_unseen is not None:
        row["beats_unseen"] = q["beats_unseen"]
        b = quality(X, baseline_images(X_unseen, X, 2 * len(X), seed), threshold)
        row.update(baseline_l2=b["l2"], baseline_ssim=b["ssim"], baseline_recovered=b["recovered"])
    out = dict(row=row, result=res, match=q["per_image"], params_init=p0, params_final=r.params, arch=net)
    with _MEMO_LOCK:
        _MEMO[memo] = out
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    return dict(out, row=dict(row))


# run()'s measurements of this process, by the content of their inputs (the last MEMO_SIZE): a
# run asked for again (notebook 09's main setting is also a row of its start and scaling studies)
# is served, not repeated. Every run is deterministic for its inputs (seed included).
MEMO_SIZE = 32
_MEMO: collections.OrderedDict = collections.OrderedDict()
_MEMO_LOCK = threading.Lock()

_RUN_SETTINGS = [k for k in inspect.signature(run).parameters if k not in ("X", "y", "X_unseen")]


def _check_settings(settings, common) -> list:
    """The settings of :func:`study` (a non-empty list of dicts of :func:`run`'s arguments), each
    merged over ``common``, checked before anything runs."""
    if isinstance(settings, dict) or not isinstance(settings, (list, tuple)) or not settings:
        raise TypeError(f"settings={_val.describe(settings)} is invalid: must be a non-empty list of dicts of "
                        "run(...)'s arguments, e.g. [dict(width=64), dict(width=256, linear=True)]")
    _val.check_keys(common, _RUN_SETTINGS, "setting(s) of reconstruction.run")
    for i, kw in enumerate(settings):
        if not isinstance(kw, dict):
            raise TypeError(f"settings[{i}]={_val.describe(kw)} is invalid: must be a dict of run(...)'s arguments")
        _val.check_keys(kw, _RUN_SETTINGS, f"setting(s) of reconstruction.run in settings[{i}]")
    if "width" not in common and any("width" not in kw for kw in settings):
        raise ValueError("every run needs a width: give width= or put one in each setting")
    return [{**common, **kw} for kw in settings]


def _rows(jobs, workers):
    """:func:`run`'s rows for ``jobs`` [(X, y, X_unseen, setting, arguments)], ``workers`` at a time
    (:func:`ntklib.parallel.thread_map`), each with a ``setting`` column naming what it changed."""
    def one(job):
        X, y, X_unseen, kw, args = job
        return dict(run(X, y, X_unseen=X_unseen, **args)["row"], setting=", ".join(f"{k}={v}" for k, v in kw.items()))

    return _parallel.thread_map(one, jobs, workers=workers)


def study(X, y, settings, X_unseen=None, workers: int | None = None, **common):
    """:func:`run` once per entry of ``settings`` (dicts of its arguments: width, linear, init,
    grad_at, ...), each merged over ``common``: a table (pandas DataFrame) of the rows, in order, with
    a ``setting`` column naming what each entry changed. ``X_unseen`` feeds every run's baseline.
    The runs are independent: ``workers`` of them at a time on threads (default: one per CPU core,
    :func:`ntklib.parallel.thread_map`; the rows are those of a run one after the other, and each
    row's ``seconds`` is its wall time while sharing the cores)."""
    import pandas as pd

    args = _check_settings(settings, common)
    return pd.DataFrame(_rows([(X, y, X_unseen, kw, a) for kw, a in zip(settings, args, strict=True)], workers))


def scaling_study(samples: dict, n_train: int, width: int, widths, n_trains, variants, workers: int | None = None,
                  **common):
    """How leakage depends on width and on the number of training images (notebook 09, part 2; Loo
    et al., Sec. 4: N / W). ``samples``: {N: (X, y, X_unseen)} for ``n_train`` and every N of
    ``n_trains``; ``variants``: :func:`run` settings compared at every point (linear, grad_at, ...).
    The width sweep runs every variant at each width of ``widths`` on the ``n_train`` images; the N
    sweep runs the variants other than ``grad_at="both"`` (the authors' ``both_kernels``, twice the
    cost: the width sweep shows it) at ``width`` on the sample of each N. A point both sweeps hold (N =
    n_train at ``width``) is attacked once and reported in both. Returns :func:`study`'s table with
    a column ``study`` ("width" or "n"). ``common``: the other arguments of :func:`run`. All the
    points' runs go to one :func:`ntklib.parallel.thread_map` (``workers`` at a time)."""
    import pandas as pd

    widths = _val.check_int_list(widths, "widths", min=1)
    n_trains = _val.check_int_list(n_trains, "n_trains", min=1)
    missing = [n for n in [n_train, *n_trains] if not isinstance(samples, dict) or n not in samples]
    if missing:
        raise ValueError(f"samples must be a dict {{N: (X, y, X_unseen)}} holding n_train={n_train} and every N of "
                         f"n_trains={n_trains}; it lacks {sorted(set(missing))}")
    width_points = [(n_train, dict(v, width=w)) for w in widths for v in variants]
    n_points = [(n, dict(v, width=width)) for n in n_trains for v in variants if v.get("grad_at") != "both"]
    unique = {}
    for n, kw in width_points + n_points:
        unique.setdefault((n, tuple(sorted(kw.items()))), (n, kw))
    args = _check_settings([kw for _, kw in unique.values()], common)
    jobs = [(*samples[n][:3], kw, a) for (n, kw), a in zip(unique.values(), args, strict=True)]
    # the costliest first (a step costs ~ N width^2, twice with both points), so no thread waits at the end
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]) * jobs[i][4]["width"] ** 2
                   * (2 if jobs[i][4].get("grad_at") == "both" else 1))
    done = dict(zip(order, _rows([jobs[i] for i in order], workers), strict=True))
    rows = {key: done[i] for i, key in enumerate(unique)}

    def row(n, kw, name):
        return dict(rows[(n, tuple(sorted(kw.items())))], study=name)

    rows_out = [row(n, kw, "width") for n, kw in width_points] + [row(n, kw, "n") for n, kw in n_points]
    return pd.DataFrame(rows_out)


def distillation_study(X, y, X_test, y_test, kernel, width: int, depth: int = 2, seeds=(0, 1, 2, 3, 4),
                       steps: int = 2000, lr: float = 0.02, init: str = "flat", ridge: float = 1e-3,
                       confidence: float = 0.95, workers: int | None = None) -> tuple:
    """Reconstructions as a distilled training set (Loo et al., Sec. 5), over ``seeds`` (a fresh
    victim and attack per seed): per seed the test accuracy of a kernel model (``kernel``, or
    ``"empirical"``: the empirical NTK of that seed's victim, which the attacker holds) trained on
    the N real training images, on the 2N reconstructions and on the 2N starting images (both
    labelled by the victim, as the attacker would), and the victim's own accuracy. Returns (rows,
    summary): rows one per (seed, set); summary per set the mean, the t-interval at ``confidence``
    over seeds, and the paired interval of the mean difference from the real images (a difference
    is established only where that interval excludes 0). Cost: one victim, one attack and three
    kernel solves per seed; the seeds run ``workers`` at a time (:func:`ntklib.parallel.thread_map`)."""
    from scipy import stats

    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    X_test = _val.check_images(X_test, "X_test", X.shape[1:])
    y_test = _val.check_labels(y_test, "y_test", len(X_test))
    if not (isinstance(kernel, str) and kernel == "empirical"):
        _kernels.check_kernel(kernel, "kernel")
    seeds = _val.check_int_list(seeds, "seeds", min=0)
    if len(seeds) < 2:
        raise ValueError(f"seeds={seeds} is invalid: an interval over seeds needs at least 2 of them")
    confidence = _val.check_float(confidence, "confidence", min=0, max=1, include_min=False, include_max=False)
    def one_seed(s):
        r = run(X, y, width, depth, steps=steps, lr=lr, seed=s, init=init)
        net, pf, R = r["arch"], r["params_final"], r["result"].X
        start = r["result"].history["snapshots"][0]
        k = _kernels.empirical_ntk(net.apply_fn, pf, dtype="float64") if isinstance(kernel, str) else kernel
        out = [dict(seed=s, set="victim network itself", accuracy=_adv.accuracy(net.predict(pf, X_test), y_test))]
        for name, Xs, ys in (("training images (N)", X, y), ("reconstructions (2N)", R, net.predict_labels(pf, R)),
                             ("starting images (2N)", start, net.predict_labels(pf, start))):
            out.append(dict(seed=s, set=name, accuracy=distilled_accuracy(k, Xs, ys, X_test, y_test, ridge)))
        return out

    rows = [row for part in _parallel.thread_map(one_seed, seeds, workers=workers) for row in part]
    table = {}
    for row in rows:
        table.setdefault(row["set"], {})[row["seed"]] = row["accuracy"]
    ref = np.array([table["training images (N)"][s] for s in seeds])
    q = stats.t.ppf(0.5 + confidence / 2, len(seeds) - 1)
    summary = []
    for name, acc in table.items():
        a = np.array([acc[s] for s in seeds])
        d = a - ref
        half, half_d = q * a.std(ddof=1) / np.sqrt(len(a)), q * d.std(ddof=1) / np.sqrt(len(d))
        summary.append(dict(set=name, mean=float(a.mean()), low=float(a.mean() - half), high=float(a.mean() + half),
                            diff_vs_real=float(d.mean()), diff_low=float(d.mean() - half_d),
                            diff_high=float(d.mean() + half_d), n_test=len(y_test), seeds=len(seeds)))
    return rows, summary
