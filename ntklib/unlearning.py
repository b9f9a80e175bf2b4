"""Removing a backdoor from a trained network: I-BAU (Zeng, Chen, Park, Mao, Jin, Jia,
"Adversarial unlearning of backdoors via implicit hypergradient", ICLR 2022).

The defender holds the poisoned network and a small clean set (x_i, y_i). I-BAU solves

    min_theta  L(theta, delta*(theta)),   delta*(theta) = argmax_{||delta||_2 <= r} L(theta, delta),
    L(theta, delta) = 1/n sum_i (f(x_i + delta; theta) - y_i)^2

(one universal perturbation delta shared by all images: the trigger is the universal
perturbation the backdoor responds to; squared loss, as our victims are trained with it). As in
the reference implementation, the inner problem carries a penalty 0.001 ||delta||^2, and the
outer loss adds delta* to a random ``portion`` (1%, at least one image) of each minibatch, the
rest staying clean, which keeps the clean accuracy.

**Hypergradient** (Sec. 3.2). delta* is the fixed point of the inner step
Phi(theta, delta) = delta + eta grad_delta L (eta = 0.1 in the reference), so by the implicit
function theorem d delta*/d theta = (I - d_delta Phi)^-1 d_theta Phi, and

    dL/dtheta = d_theta L + d_theta Phi^T (I - d_delta Phi^T)^-1 d_delta L
             ~ d_theta L + d_theta Phi^T sum_{k=0}^{K-1} (d_delta Phi^T)^k d_delta L,

the Neumann series truncated to its first K terms (:func:`implicit_hypergradient`; K = 5 as the
reference's ``hypergrad.fixed_point``, whose loop v <- J^T v + g from v = 0 sums K terms; K = 0
leaves the indirect term out: adversarial fine-tuning with delta*, the ablation of notebook 07).
Each term is one vector-Jacobian product through Phi (``jax.vjp``), never a Jacobian. The series
converges when the spectral radius of d_delta Phi = I - eta Hess_delta(-L + 0.001 ||delta||^2)
is below 1, and the identity holds where delta* is a fixed point of Phi;
:func:`fixed_point_diagnostics` measures both (the paper's theory assumes them). On the digits
victims of notebook 07 neither holds: the radius is 1.1-2.8 at every round's delta* (the series
diverges; its K terms are a truncation), and delta* lies on the L2 ball's boundary, not at a
stationary point of Phi; the indirect term can be left out with no loss there (notebook 07).

Reference settings (``docs/design.md``, section 8, and the authors' ``defense.py``): the inner
maximization against the model's *own predictions* on the clean images (``inner_labels =
"predicted"``), the fixed-point map Phi on the clean set's *first* minibatch with its true labels
(``fixed_point_batch = "first"``), K = 5, eta = 0.1, outer Adam lr 1e-3 on minibatches of 100, a
``portion`` of 1% of each minibatch carrying delta* (at least one image). Departures: the
reference runs one SGD step of lr 10 per minibatch on delta (a whole pass over the clean set) and,
in its released code, no projection (the L2 bound 10 is commented out); ours are ``inner_steps``
normalized ascent steps of length ``inner_lr`` times the radius, projected on the L2 ball of
``radius`` (default 10 sqrt(H W C / 3072), the paper's bound scaled with the image's size),
because with squared loss and small images the raw step of lr 10 depends on the image size; that
ascent leaves out the 0.001 ||delta||^2 penalty, which Phi keeps. ``outer_steps`` minibatches per
round (50: the reference's 5000 images / 100). ``portion = 0`` gives plain fine-tuning on the
clean minibatches (no delta at all), the second baseline of notebook 07.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import models as _models
from . import validation as _val

__all__ = ["implicit_hypergradient", "fixed_point_diagnostics", "IBAUResult", "ibau", "universal_perturbation",
           "IBAU_VARIANTS"]

IBAU_VARIANTS = {"I-BAU": {}, "no indirect term": {"K": 0}, "fine-tuning": {"portion": 0.0}}
"""I-BAU and its two ablations, as settings of :func:`ibau`: the hypergradient's indirect term left
out (K = 0: adversarial fine-tuning with the same delta*), and plain fine-tuning on the clean images
(no delta). Notebook 07 and ``bench/ibau.py`` run them side by side."""


def _tree_add(a, b, scale=1.0):
    return jax.tree_util.tree_map(lambda x, y: x + scale * y, a, b)


def implicit_hypergradient(outer, inner_map, theta, delta, K: int = 5):
    """d outer(theta, delta*(theta)) / d theta at a fixed point delta = inner_map(theta, delta), by the
    first K terms of the Neumann series (module notes; K = 0: the direct gradient d_theta outer alone).
    ``outer`` and ``inner_map`` are JAX functions of pytrees; returns a pytree like ``theta``. Cost:
    K - 1 VJPs through ``inner_map`` in delta, one in theta (none when K = 0), and one gradient of
    ``outer``."""
    K = _val.check_int(K, "K", min=0, hint="the number of Neumann terms (the reference uses 5; 0 leaves the "
                       "indirect term out)")
    for name, fn in (("outer", outer), ("inner_map", inner_map)):
        if not callable(fn):
            raise TypeError(f"{name}={_val.describe(fn)} is invalid: must be a JAX function of (theta, delta)")
    g_theta, g_delta = jax.grad(outer, argnums=(0, 1))(theta, delta)
    if K == 0:
        return g_theta
    _, vjp_delta = jax.vjp(lambda d: inner_map(theta, d), delta)
    v, total = g_delta, g_delta
    for _ in range(K - 1):
        (v,) = vjp_delta(v)
        total = _tree_add(total, v)
    _, vjp_theta = jax.vjp(lambda th: inner_map(th, delta), theta)
    (indirect,) = vjp_theta(total)
    return _tree_add(g_theta, indirect)


def _loss(arch, params, x, y, delta, mask=None):
    """Mean squared loss on x + delta (or on x + mask_i delta with a (n,) 0/1 mask)."""
    shift = delta if mask is None else mask.reshape((-1,) + (1,) * delta.ndim) * delta
    return jnp.mean((arch.predict(params, x + shift) - y) ** 2)


INNER_PENALTY = 1e-3  # the reference's 0.001 ||delta||^2 in the inner loss


def _project(delta, radius):
    n = jnp.sqrt(jnp.sum(delta ** 2))
    return delta * jnp.minimum(1.0, radius / jnp.maximum(n, 1e-12))


def _check_inputs(arch, params, X, y, who: str):
    _models.check_architecture(arch)
    X = _val.check_images(X, f"{who} (the defender's clean images)", allow_empty=True).astype(np.float32)
    if len(X) == 0:
        raise ValueError(f"{who} is empty: I-BAU needs clean images to unlearn with (the paper uses 100 to 5000)")
    y = _val.check_labels(y, f"{who.replace('X', 'y', 1)} (labels)", len(X))
    arch.check_fits(X.shape[1:], params, who=who)
    return X, y


def _check_radius(radius, shape) -> float:
    """The L2 bound of delta: > 0 and at most the diagonal sqrt(H W C) of the image box (a larger
    perturbation leaves every image's range; the reference uses 10 on CIFAR-10, diagonal 55)."""
    top = float(np.sqrt(np.prod(shape)))
    return _val.check_float(radius, "radius", min=0, max=top, include_min=False,
                            hint=f"the L2 bound of the universal perturbation, at most the image box's diagonal "
                            f"{top:.3g} (the reference uses 10 on CIFAR-10)")


def universal_perturbation(arch, params, X, y, radius: float, steps: int = 50, lr: float = 0.1):
    """The inner maximization: argmax over ||delta||_2 <= radius of the mean squared loss of the
    network on X + delta, by ``steps`` normalized ascent steps of length lr * radius. Returns
    delta (H, W, C)."""
    X, y = _check_inputs(arch, params, X, y, "X")
    radius = _check_radius(radius, X.shape[1:])
    return _ascent(arch, params, X, y, radius, _val.check_steps(steps, "steps"), _val.check_lr(lr, "lr"))


def _ascent(arch, params, X, y, radius, steps, lr):
    """:func:`universal_perturbation` on inputs already checked (I-BAU calls it every round)."""
    X = jnp.asarray(X)
    y = jnp.asarray(y, X.dtype)
    key = ("ibau_ascent",)  # compiled once per architecture: the parameters and images are arguments
    if key not in arch.programs:
        arch.programs[key] = jax.jit(jax.grad(lambda d, p, x, yy: _loss(arch, p, x, yy, d)))
    grad = arch.programs[key]
    delta = jnp.zeros(X.shape[1:], X.dtype)
    for _ in range(steps):
        g = grad(delta, params, X, y)
        delta = _project(delta + lr * radius * g / jnp.maximum(jnp.sqrt(jnp.sum(g ** 2)), 1e-12), radius)
    return delta


def _inner_map(arch, fixed_point_lr):
    """Phi(theta, delta; x, y) = delta - eta grad_delta (-L(theta, delta) + 0.001 ||delta||^2)."""
    def inner_map(theta, delta, xb, yb):
        def inner(d):
            return -_loss(arch, theta, xb, yb, d) + INNER_PENALTY * jnp.sum(d ** 2)
        return delta - fixed_point_lr * jax.grad(inner)(delta)
    return inner_map


def _diagnostic_programs(arch, eta: float):
    """The compiled programs of :func:`fixed_point_diagnostics` for ``arch`` and ``eta``: (64 JVPs of
    Phi in delta at once, one JVP), compiled once and kept in ``arch.programs`` (I-BAU measures every
    round of every victim: a program per call used to be compiled again each time). delta, the
    parameters and the images are arguments, not constants (XLA would fold them for long)."""
    key = ("fixed_point_diagnostics", float(eta))
    if key not in arch.programs:
        phi = _inner_map(arch, eta)

        def jvp(e, d, p, x, yy):
            return jax.jvp(lambda v: phi(p, v.reshape(d.shape), x, yy).reshape(-1), (d.reshape(-1),), (e,))[1]

        arch.programs[key] = (jax.jit(jax.vmap(jvp, in_axes=(0, None, None, None, None))), jax.jit(jvp))
    return arch.programs[key]


def _ibau_programs(arch, K: int, eta: float, fixed_point_batch: str, outer_lr: float):
    """The optimizer and the compiled programs of :func:`ibau` (one outer step; the outer loss), built
    once per architecture and setting and kept in ``arch.programs``: notebook 07 runs I-BAU on every
    victim, clean-set size and variant, and each call used to compile its own step. The fixed-point
    batch (the reference's first minibatch) is an argument of the step, not a constant."""
    key = ("ibau", int(K), float(eta), fixed_point_batch, float(outer_lr))
    if key not in arch.programs:
        inner_map = _inner_map(arch, eta)
        tx = optax.adam(outer_lr)

        @jax.jit
        def step(theta, opt_state, delta, xb, yb, mb, x_first, y_first):
            xf, yf = (x_first, y_first) if fixed_point_batch == "first" else (xb, yb)
            g = implicit_hypergradient(lambda th, d: _loss(arch, th, xb, yb, d, mb),
                                       lambda th, d: inner_map(th, d, xf, yf), theta, delta, K)
            updates, opt_state = tx.update(g, opt_state, theta)
            return optax.apply_updates(theta, updates), opt_state

        # the outer loss after each round, to stop on divergence (a separate program: the step's is unchanged)
        outer_loss = jax.jit(lambda theta, delta, xb, yb, mb: _loss(arch, theta, xb, yb, delta, mb))
        arch.programs[key] = (tx, step, outer_loss)
    return arch.programs[key]


def fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr: float = 0.1, method: str = "auto",
                            iters: int = 50) -> dict:
    """What the hypergradient's derivation assumes, measured at ``delta`` (H, W, C) on (X, y) (the
    batch Phi is evaluated on): ``residual`` = ||Phi(delta) - delta|| / ||delta|| (0 at a fixed
    point of Phi), and ``spectral_radius`` = max abs(eig(d_delta Phi)) with d_delta Phi = I - eta
    Hess_delta(-L + 0.001 ||delta||^2) (symmetric; the Neumann series converges iff it is < 1).
    ``method``: "exact" forms the Jacobian (H W C Hessian-vector products: digits 64, CIFAR-10 3072)
    and adds the eigenvalues' range (eig_min, eig_max); "power" runs ``iters`` steps of power
    iteration (one product each; the radius to the iteration's accuracy); "auto": exact up to 1024
    pixels. Cost: as said, each product one forward-over-reverse pass over X."""
    X, y = _check_inputs(arch, params, X, y, "X")
    delta = _val.check_array(delta, "delta", dtype=np.float32)
    if delta.shape != X.shape[1:]:
        raise ValueError(f"delta has shape {delta.shape}, the images {X.shape[1:]}: the universal perturbation is "
                         "one image")
    eta = _val.check_lr(fixed_point_lr, "fixed_point_lr")
    _val.check_choice(method, "method", ("auto", "exact", "power"))
    iters = _val.check_steps(iters, "iters")
    Xj, yj = jnp.asarray(X), jnp.asarray(y, X.dtype)
    phi = _inner_map(arch, eta)
    d = jnp.asarray(delta)
    step = np.asarray(phi(params, d, Xj, yj) - d, np.float64)
    norm = float(np.linalg.norm(np.asarray(delta, np.float64)))
    out = dict(residual=float(np.linalg.norm(step)) / max(norm, 1e-12))
    cols, jvp_jit = _diagnostic_programs(arch, eta)

    if method == "exact" or (method == "auto" and d.size <= 1024):
        # the Jacobian column by column (forward mode), 64 columns per program
        eye = np.eye(d.size, dtype=np.float32)
        J = np.concatenate([np.asarray(cols(jnp.asarray(eye[i:i + 64]), d, params, Xj, yj), np.float64)
                            for i in range(0, d.size, 64)]).T
        eig = np.linalg.eigvalsh((J + J.T) / 2)
        out.update(spectral_radius=float(np.abs(eig).max()), eig_min=float(eig.min()), eig_max=float(eig.max()))
    else:
        v = np.random.default_rng(0).standard_normal(d.size).astype(np.float32)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(iters):
            w = np.asarray(jvp_jit(jnp.asarray(v), d, params, Xj, yj), np.float64)
            lam = float(np.linalg.norm(w))
            v = (w / max(lam, 1e-30)).astype(np.float32)
        out.update(spectral_radius=lam)
    return out


@dataclass
class IBAUResult:
    """The unlearned network ``params``; ``history``: per round the inner loss at delta*, the norm
    of delta* and (``diagnostics=True``) :func:`fixed_point_diagnostics` at delta*; ``deltas``: the
    universal perturbation of each round (H, W, C)."""

    params: object
    history: dict = field(default_factory=dict)
    deltas: list = field(default_factory=list)


def ibau(arch, params, X_clean, y_clean, rounds: int = 5, radius: float | None = None, inner_steps: int = 50,
         inner_lr: float = 0.1, fixed_point_lr: float = 0.1, K: int = 5, outer_lr: float = 1e-3,
         outer_steps: int = 50, batch_size: int = 100, portion: float = 0.01, inner_labels: str = "predicted",
         fixed_point_batch: str = "first", diagnostics: bool = False, seed: int = 0, progress: bool = True,
         on_round=None) -> IBAUResult:
    """Unlearn a backdoor from ``params`` with clean images ``X_clean`` (n, H, W, C) and labels
    ``y_clean`` (n,) in {-1, +1} (module notes: the problem, the hypergradient, the settings).

    Each of ``rounds`` rounds: delta* by :func:`universal_perturbation` against the network's own
    predictions (``inner_labels="predicted"``, the reference's) or the true labels (``"true"``),
    then ``outer_steps`` Adam steps (lr ``outer_lr``) on minibatches of ``batch_size`` with the
    implicit hypergradient (K Neumann terms through Phi(theta, delta) = delta - ``fixed_point_lr``
    grad_delta (-L + 0.001 ||delta||^2) on the first minibatch of the clean set,
    ``fixed_point_batch="first"`` as the reference, or on the current one, ``"current"``), the
    outer loss with delta* added to a ``portion`` of each minibatch (at least one image).
    Ablations: ``K=0`` (no indirect term: adversarial fine-tuning with delta*), ``portion=0``
    (plain fine-tuning: no delta, no inner problem). ``on_round(r, params)``, if given, is called
    after each round (r = 1, 2, ...), e.g. to measure the network as the rounds go.
    Cost per outer step: K + 2 forward-backward passes on a minibatch (1 when K = 0).
    """
    X, y = _check_inputs(arch, params, X_clean, y_clean, "X_clean")
    if on_round is not None and not callable(on_round):
        raise TypeError(f"on_round={_val.describe(on_round)} is invalid: must be a function on_round(r, params) "
                        "or None")
    rounds = _val.check_steps(rounds, "rounds")
    size = int(np.prod(X.shape[1:]))
    radius = 10.0 * float(np.sqrt(size / 3072)) if radius is None else _check_radius(radius, X.shape[1:])
    inner_steps = _val.check_steps(inner_steps, "inner_steps")
    inner_lr = _val.check_lr(inner_lr, "inner_lr")
    fixed_point_lr = _val.check_lr(fixed_point_lr, "fixed_point_lr")
    K = _val.check_int(K, "K", min=0, hint="the number of Neumann terms (the reference uses 5; 0 leaves the "
                       "indirect term out)")
    outer_lr = _val.check_lr(outer_lr, "outer_lr")
    outer_steps = _val.check_steps(outer_steps, "outer_steps")
    batch_size = _val.check_int(batch_size, "batch_size", min=1)
    portion = _val.check_fraction(portion, "portion", include_zero=True)
    _val.check_choice(inner_labels, "inner_labels", ("predicted", "true"))
    _val.check_choice(fixed_point_batch, "fixed_point_batch", ("first", "current"))
    diagnostics = _val.check_bool(diagnostics, "diagnostics")
    rng = np.random.default_rng(_val.check_seed(seed))
    bs = min(batch_size, len(X))
    x_first, y_first = jnp.asarray(X[:bs]), jnp.asarray(y[:bs], X.dtype)  # the reference's images_list[0]
    tx, step, outer_loss = _ibau_programs(arch, K, fixed_point_lr, fixed_point_batch, outer_lr)
    opt_state = tx.init(params)
    hist = {"round": [], "inner_loss": [], "delta_norm": []}
    deltas = []
    n_patched = 0 if portion == 0 else max(1, int(round(portion * bs)))
    for r in tqdm(range(rounds), desc="I-BAU rounds", disable=not progress):
        if n_patched:
            y_inner = arch.predict_labels(params, X) if inner_labels == "predicted" else y
            delta = _ascent(arch, params, X, y_inner, radius, inner_steps, inner_lr)
            hist["inner_loss"].append(_val.check_loss(
                _loss(arch, params, jnp.asarray(X), jnp.asarray(y_inner, X.dtype), delta), f"I-BAU's inner "
                f"maximization (round {r + 1})", r * outer_steps, f"lower inner_lr (now {inner_lr:g}) or radius "
                f"(now {radius:g})"))
            if diagnostics:
                xf, yf = (X[:bs], y[:bs]) if fixed_point_batch == "first" else (X, y)
                for k, v in fixed_point_diagnostics(arch, params, xf, yf, np.asarray(delta), fixed_point_lr).items():
                    hist.setdefault(k, []).append(v)
        else:  # plain fine-tuning: no perturbation
            delta = jnp.zeros(X.shape[1:], X.dtype)
            hist["inner_loss"].append(float("nan"))
        deltas.append(np.asarray(delta))
        hist["round"].append(r)
        hist["delta_norm"].append(float(jnp.sqrt(jnp.sum(delta ** 2))))
        for _ in range(outer_steps):
            idx = rng.choice(len(X), bs, replace=False)
            mb = np.zeros(bs, np.float32)
            mb[rng.choice(bs, n_patched, replace=False)] = 1.0
            xb, yb, mb = jnp.asarray(X[idx]), jnp.asarray(y[idx], X.dtype), jnp.asarray(mb)
            params, opt_state = step(params, opt_state, delta, xb, yb, mb, x_first, y_first)
        # once per round (a check per step cost a host sync and a forward pass per step, ~40% of the
        # run): a diverged step leaves non-finite parameters, so the round's last loss shows it
        _val.check_loss(outer_loss(params, delta, xb, yb, mb), f"I-BAU (round {r + 1}, after its {outer_steps} outer "
                        "steps)", (r + 1) * outer_steps, f"lower outer_lr (now {outer_lr:g}); the reference uses Adam "
                        "at 1e-3")
        if on_round is not None:
            on_round(r + 1, params)
    return IBAUResult(params, hist, deltas)
