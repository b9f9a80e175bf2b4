"""Finite-network training with squared loss on +/-1 labels.

Loss: L(theta) = 1/(2n) sum_i (f(x_i; theta) - y_i)^2, the loss under which
gradient-flow training follows kernel regression with the NTK (DESIGN.md
section 2). Optimizers: optax SGD with momentum (default) or Adam, full batch or
minibatches, stopping when the full training loss falls below ``target_loss`` or
after ``steps`` steps. Parameters save to and load from ``.npz`` (no pickle)
with the architecture spec alongside, so a saved network can be rebuilt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import models as _models
from ._precision import precision

__all__ = ["TrainConfig", "TrainResult", "train", "save_params", "load_params", "predict", "residuals", "param_distance"]


@dataclass
class TrainConfig:
    """Training settings (all JSON-able).

    optimizer: "sgd" (with ``momentum``) or "adam"; lr: learning rate;
    batch_size: None for full batch; steps: step budget; target_loss: stop once
    the full-batch loss 1/(2n) sum (f - y)^2 is below it; target_residual: if set,
    also require every training point's residual |f(x) - y| to be below it (so a
    single unfitted point, e.g. a poison, keeps training going); eval_every: how often
    the full-batch loss is checked and recorded; seed: initialization and
    minibatch order; dtype: parameter dtype (float32 is 24-55x faster for
    convolutions on CPU).
    """

    optimizer: str = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    batch_size: int | None = None
    steps: int = 3000
    target_loss: float = 1e-4
    target_residual: float | None = None
    eval_every: int = 50
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.lr <= 0 or self.steps < 1:
            raise ValueError("lr must be positive and steps at least 1")
        if self.target_residual is not None and self.target_residual <= 0:
            raise ValueError(f"target_residual must be positive or None, got {self.target_residual}")


@dataclass
class TrainResult:
    params: object
    history: dict = field(default_factory=dict)  # step, loss, acc, max_residual (full batch)
    final_loss: float = float("nan")
    steps: int = 0
    converged: bool = False


def predict(arch, params, x, batch: int = 1024) -> np.ndarray:
    """Network outputs f(x) (n,) as float64, evaluated in batches."""
    fn = arch._cache.setdefault("predict", jax.jit(arch.predict))
    x = np.asarray(x)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    with precision(dtype):
        outs = [np.asarray(fn(params, jnp.asarray(x[i:i + batch], dtype))) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def param_distance(a, b=None) -> float:
    """Euclidean norm ||a - b|| over all parameters (||a|| when b is None)."""
    la = jax.tree_util.tree_leaves(a)
    lb = [None] * len(la) if b is None else jax.tree_util.tree_leaves(b)
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - (0 if y is None else np.asarray(y, np.float64))) ** 2)
                             for x, y in zip(la, lb))))


def residuals(arch, params, x, y) -> np.ndarray:
    """f(x) - y for each training point (how well each point, e.g. each poison, is fitted)."""
    return predict(arch, params, x) - np.asarray(y, dtype=np.float64)


def train(arch, X, y, config: TrainConfig | None = None, params=None, progress: bool = True,
          desc: str = "train") -> TrainResult:
    """Train ``arch`` on (X, y) with squared loss; y in {-1, +1}.

    Starts from ``params`` or from a fresh initialization drawn with ``config.seed``.
    Deterministic for a seed (on one device and one JAX version).
    """
    cfg = config or TrainConfig()
    with precision(cfg.dtype):
        return _train(arch, X, y, cfg, params, progress, desc)


def _train(arch, X, y, cfg, params, progress, desc):
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.float64)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    dtype = jnp.dtype(cfg.dtype)
    if params is None:
        params = arch.init(cfg.seed, X.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    tx = (optax.sgd(cfg.lr, momentum=cfg.momentum or None) if cfg.optimizer == "sgd"
          else optax.adam(cfg.lr))
    opt_state = tx.init(params)
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y, dtype)

    def loss_fn(p, xb, yb):
        return 0.5 * jnp.mean((arch.predict(p, xb) - yb) ** 2)

    @jax.jit
    def step(p, s, ib):
        # One call per step: on XLA:CPU, convolutions inside lax.scan run ~30x slower.
        g = jax.grad(loss_fn)(p, Xj[ib], yj[ib])
        upd, s = tx.update(g, s, p)
        return optax.apply_updates(p, upd), s

    @jax.jit
    def full_eval(p):
        f = arch.predict(p, Xj)
        return 0.5 * jnp.mean((f - yj) ** 2), jnp.mean(jnp.sign(f) == yj), jnp.max(jnp.abs(f - yj))

    rng = np.random.default_rng(cfg.seed)
    n = len(X)
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    order, pos = rng.permutation(n), 0
    full = jnp.arange(n)

    def batch_indices(k):
        nonlocal order, pos
        if bs == n:
            return [full] * k
        rows = []
        for _ in range(k):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            rows.append(order[pos:pos + bs])
            pos += bs
        return np.stack(rows)

    hist = {"step": [], "loss": [], "acc": [], "max_residual": []}
    bar = tqdm(total=cfg.steps, desc=desc, disable=not progress, leave=False)
    converged, t = False, 0
    while t < cfg.steps:
        k = min(cfg.eval_every, cfg.steps - t)
        for ib in batch_indices(k):
            params, opt_state = step(params, opt_state, ib)
        t += k
        loss, acc, max_res = (float(v) for v in full_eval(params))
        hist["step"].append(t)
        hist["loss"].append(loss)
        hist["acc"].append(acc)
        hist["max_residual"].append(max_res)
        bar.update(k)
        bar.set_postfix(loss=f"{loss:.2e}", acc=f"{acc:.3f}")
        if not np.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"training diverged at step {t} (loss {loss}); lower lr "
                                     f"(now {cfg.lr})")
        if loss < cfg.target_loss and (cfg.target_residual is None or max_res < cfg.target_residual):
            converged = True
            break
    bar.close()
    return TrainResult(params, hist, hist["loss"][-1], t, converged)


def save_params(path, arch, params, extra: dict | None = None) -> Path:
    """Save parameters as ``.npz`` (leaves ``leaf_0..``) with the architecture spec as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(params)
    meta = json.dumps({"architecture": arch.spec, "n_leaves": len(leaves), **(extra or {})})
    np.savez(path, __meta__=np.array(meta), **{f"leaf_{i}": np.asarray(l) for i, l in enumerate(leaves)})
    return path


def load_params(path, input_shape):
    """Load (architecture, params) saved by :func:`save_params`.

    ``input_shape`` (H, W, C) rebuilds the parameter tree structure.
    """
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        leaves = [z[f"leaf_{i}"] for i in range(meta["n_leaves"])]
    arch = _models.build(meta["architecture"])
    template = arch.init(0, input_shape)
    treedef = jax.tree_util.tree_structure(template)
    shapes = [np.shape(l) for l in jax.tree_util.tree_leaves(template)]
    if shapes != [l.shape for l in leaves]:
        raise ValueError(f"{path}: saved parameter shapes do not match {arch.describe()} on "
                         f"inputs {tuple(input_shape)}")
    return arch, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(l) for l in leaves])
