"""Finite-network training with squared loss on +/-1 labels, one victim or many at once.

Loss: L(theta) = 1/(2n) sum_i (f(x_i; theta) - y_i)^2, the loss under which
gradient-flow training follows kernel regression with the NTK (docs/design.md,
section 2). Optimizers: optax SGD with momentum (default) or Adam, full batch or
minibatches, stopping when the full training loss falls below ``target_loss``
(and, optionally, every residual below ``target_residual``) or after ``steps``
steps. Parameters save to and load from ``.npz`` (no pickle) with the
architecture spec alongside, so a saved network can be rebuilt.

:func:`train` trains one network and is the reference. :func:`train_many` trains
many networks of one architecture in one compiled program per chunk of victims
(``vmap`` over parameters, optimizer states and data), with per-victim seeds,
training-set sizes (padded rows carry zero weight, so each victim's loss is
exactly its own mean), step budgets and stopping steps; chunks run concurrently
on worker threads, and with several devices the victims of a chunk are sharded
across them. Results are cached by content (:mod:`ntklib.cache`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from . import cache as _cache
from . import models as _models
from . import parallel as _parallel
from . import profiling as _profiling
from . import validation as _val
from ._precision import precision
from ._xla import check as _check_xla

__all__ = ["TrainConfig", "TrainResult", "train", "train_many", "chunk_size", "save_params", "load_params", "predict",
           "residuals", "param_distance", "check_config", "padded_rows"]


def check_config(config, name: str = "config"):
    """A :class:`TrainConfig` (None: the default one)."""
    if config is None:
        return TrainConfig()
    if not isinstance(config, TrainConfig):
        hint = "use TrainConfig(**that_dict)" if isinstance(config, dict) else "build one with ntklib.train.TrainConfig"
        _val.fail(TypeError, name, config, "must be an ntklib.train.TrainConfig", hint)
    return config


@dataclass
class TrainConfig:
    """Training settings (all JSON-able).

    optimizer: "sgd" (with ``momentum``) or "adam"; lr: learning rate;
    batch_size: None for full batch; steps: step budget; target_loss: stop once
    the full-batch loss 1/(2n) sum (f - y)^2 is below it; target_residual: if set,
    also require every training point's residual abs(f(x) - y) to be below it (so a
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
        _val.check_choice(self.optimizer, "TrainConfig.optimizer", ("sgd", "adam"))
        self.lr = _val.check_lr(self.lr, "TrainConfig.lr")
        self.momentum = _val.check_float(self.momentum, "TrainConfig.momentum", min=0, max=1, include_max=False,
                                      hint="0 is plain SGD, 0.9 the usual heavy ball")
        self.batch_size = _val.check_int(self.batch_size, "TrainConfig.batch_size", min=1, allow_none=True,
                                      hint="None trains full batch")
        self.steps = _val.check_steps(self.steps, "TrainConfig.steps")
        self.target_loss = _val.check_float(self.target_loss, "TrainConfig.target_loss", min=0,
                                         hint="training stops once the loss is below it (0: never early)")
        self.target_residual = _val.check_float(self.target_residual, "TrainConfig.target_residual", min=0,
                                             include_min=False, allow_none=True, hint="None switches it off")
        self.eval_every = _val.check_steps(self.eval_every, "TrainConfig.eval_every")
        self.seed = _val.check_seed(self.seed, "TrainConfig.seed")
        _val.check_choice(self.dtype, "TrainConfig.dtype", ("float32", "float64"))


@dataclass
class TrainResult:
    """A trained network: ``params``; ``history`` holds step, loss, acc and
    max_residual at every full-batch evaluation; ``diverged`` marks a victim of
    :func:`train_many` whose loss became NaN or infinite (its params are not usable);
    ``seconds``: its wall time (its share of its chunk's for :func:`train_many`)."""

    params: object
    history: dict = field(default_factory=dict)  # step, loss, acc, max_residual (full batch)
    final_loss: float = float("nan")
    steps: int = 0
    converged: bool = False
    diverged: bool = False
    seconds: float = float("nan")


# Settings that are compiled into the training program: victims that differ in them train in
# separate programs. Victims may differ freely in seed, steps, target_loss and target_residual.
SHARED_FIELDS = ("optimizer", "lr", "momentum", "batch_size", "eval_every", "dtype")
DEFAULT_MEMORY = 1 << 30  # bytes per chunk of victims (parameters, optimizer state, activations)
# Victims per compiled program on XLA:CPU, measured by bench/train.py (2 cores): for dense victims,
# one victim per program on each of two worker threads ran 10% faster than vmapped chunks of 2-8
# (digits MLP-256: 78 vs 65-72 GFLOP/s; the gain over the one-by-one path comes from the threads
# and from compiling once per shape instead of once per victim); vmapped convolutions lower to
# grouped convolutions, slower again. Several steps per call (lax.scan) gave nothing for dense
# victims and ran convolutions 20x slower, so each call is one step. Accelerators take chunks as
# large as memory allows.
CPU_CHUNK = {"dense": 1, "conv": 1}


def _optimizer(cfg):
    return optax.sgd(cfg.lr, momentum=cfg.momentum or None) if cfg.optimizer == "sgd" else optax.adam(cfg.lr)


def _squared_loss(arch, p, x, y, w=None):
    """1/2 mean (f - y)^2; with weights w: 1/2 sum w (f - y)^2."""
    r2 = (arch.predict(p, x) - y) ** 2
    return 0.5 * (jnp.mean(r2) if w is None else jnp.sum(w * r2))


class _BatchOrder:
    """Minibatch rows of one victim: epochs of a permutation drawn with its seed (host side,
    so that the sequential and the batched path draw the very same batches)."""

    def __init__(self, n, batch_size, seed):
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.bs = n if batch_size is None else min(batch_size, n)
        self.order, self.pos = self.rng.permutation(n), 0

    @property
    def full(self):
        return self.bs == self.n

    def next(self):
        if self.pos + self.bs > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        rows = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return rows


def _check_data(X, y, who="X"):
    """Training data: a non-empty finite batch (n, ...) and n labels in {-1, +1} (the
    accuracy and the stopping rule read sign(f) against them)."""
    X = _val.check_array(X, f"{who} (images)", min_ndim=2)
    return X, _val.check_labels(y, f"{who} (labels)", len(X))


def _check_fits(arch, X, params, who="X"):
    """:meth:`ntklib.models.Architecture.check_fits` for the images of the batch X."""
    arch.check_fits(X.shape[1:], params, who)


def train(arch, X, y, config: TrainConfig | None = None, params=None, progress: bool = True,
          desc: str = "train", perturb=None, on_eval=None) -> TrainResult:
    """Train ``arch`` on (X, y) with squared loss; y in {-1, +1}. The reference implementation.

    Starts from ``params`` or from a fresh initialization drawn with ``config.seed``.
    Evaluates the full-batch loss, accuracy and largest residual every
    ``eval_every`` steps and at the last step, stopping at the first evaluation
    that meets the targets. Deterministic for a seed (on one device and one JAX
    version). Raises ``FloatingPointError`` if the loss diverges.
    Cost per step: one forward and backward pass over the batch.

    ``perturb``: optional JAX function ``perturb(params, x, y) -> x'`` applied to each batch
    inside the step, before the gradient (adversarial training: an inner attack on the current
    network, e.g. :func:`ntklib.adversarial.network_pgd`); the evaluations use the clean data.
    ``on_eval``: optional host function ``on_eval(step, params)`` called at every evaluation
    point (snapshots of the network along training, e.g. for its empirical NTK).
    """
    _models.check_architecture(arch)
    cfg = check_config(config)
    X, y = _check_data(X, y)
    _check_fits(arch, X, params)
    for name, fn in (("perturb", perturb), ("on_eval", on_eval)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name}={_val.describe(fn)} is invalid: must be a function or None")
    _check_xla()
    with precision(cfg.dtype), _profiling.section("victim training"):
        return _train(arch, X, y, cfg, params, progress, desc, perturb, on_eval)


def _train(arch, X, y, cfg, params, progress, desc, perturb=None, on_eval=None):
    t_start = time.perf_counter()
    dtype = jnp.dtype(cfg.dtype)
    if params is None:
        params = arch.init(cfg.seed, X.shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    tx = _optimizer(cfg)
    opt_state = tx.init(params)
    Xj, yj = jnp.asarray(X, dtype), jnp.asarray(y, dtype)
    order = _BatchOrder(len(X), cfg.batch_size, cfg.seed)

    @jax.jit
    def step(p, s, X, y, ib):
        # One call per step: on XLA:CPU, convolutions inside lax.scan run ~30x slower.
        xb, yb = (X, y) if ib is None else (X[ib], y[ib])
        if perturb is not None:
            xb = jax.lax.stop_gradient(perturb(p, xb, yb))
        g = jax.grad(lambda p: _squared_loss(arch, p, xb, yb))(p)
        upd, s = tx.update(g, s, p)
        return optax.apply_updates(p, upd), s

    @jax.jit
    def full_eval(p, X, y):
        f = arch.predict(p, X)
        return 0.5 * jnp.mean((f - y) ** 2), jnp.mean(jnp.sign(f) == y), jnp.max(jnp.abs(f - y))

    hist = {"step": [], "loss": [], "acc": [], "max_residual": []}
    bar = tqdm(total=cfg.steps, desc=desc, disable=not progress, leave=False)
    converged, t = False, 0
    while t < cfg.steps:
        k = min(cfg.eval_every, cfg.steps - t)
        for _ in range(k):
            params, opt_state = step(params, opt_state, Xj, yj, None if order.full else order.next())
        t += k
        loss, acc, max_res = (float(v) for v in full_eval(params, Xj, yj))
        for name, v in zip(("step", "loss", "acc", "max_residual"), (t, loss, acc, max_res), strict=True):
            hist[name].append(v)
        bar.update(k)
        bar.set_postfix(loss=f"{loss:.2e}", acc=f"{acc:.3f}")
        if on_eval is not None:
            on_eval(t, params)
        if not np.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"training diverged at step {t} (loss {loss}); lower lr "
                                     f"(now {cfg.lr})")
        if _met(cfg, loss, max_res):
            converged = True
            break
    bar.close()
    return TrainResult(params, hist, hist["loss"][-1], t, converged, seconds=time.perf_counter() - t_start)


def _met(cfg, loss, max_res) -> bool:
    return loss < cfg.target_loss and (cfg.target_residual is None or max_res < cfg.target_residual)


# ---------------------------------------------------------------------------- many victims
@dataclass
class _Job:
    index: int
    X: np.ndarray
    y: np.ndarray
    cfg: TrainConfig
    params: object = None
    key: str | None = None


def _footprint(arch, input_shape, dtype):
    """(parameter bytes, activation bytes per example, has convolutions) of one network."""
    p = jax.eval_shape(lambda: arch.init(0, input_shape))
    itemsize = jnp.dtype(dtype).itemsize
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(p))
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.dtype(dtype))
    jaxpr = jax.make_jaxpr(arch.apply_fn)(p, x)
    act = conv = 0
    for eqn in jaxpr.jaxpr.eqns:
        conv |= "conv" in eqn.primitive.name
        act += sum(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
    return n_params * itemsize, act * itemsize, bool(conv)


def chunk_size(arch, input_shape, n_rows: int, dtype="float32", memory: int = DEFAULT_MEMORY,
               platform: str | None = None) -> int:
    """Victims per compiled program (the chunking rule of :func:`train_many`).

    Memory per victim: 5 copies of the parameters (parameters, gradient, update and
    the optimizer's one or two moments) plus 3 copies of the activations of a batch of
    ``n_rows`` (forward values kept for the backward pass, and their cotangents).
    A chunk holds as many victims as fit in ``memory`` bytes; on XLA:CPU at most
    :data:`CPU_CHUNK` (1 victim per program on each worker thread, as measured).
    """
    param_b, act_b, conv = _footprint(arch, tuple(input_shape), dtype)
    per_victim = 5 * param_b + 3 * n_rows * act_b
    fit = max(1, int(memory // max(per_victim, 1)))
    platform = platform or jax.local_devices()[0].platform
    if platform == "cpu":
        return min(fit, CPU_CHUNK["conv" if conv else "dense"])
    return fit


PAD_ROWS = 64


def padded_rows(n: int) -> int:
    """The rows a victim's training set is padded to in :func:`train_many`: ``n`` rounded up to a
    multiple of :data:`PAD_ROWS`. A function of the victim's own set alone, so the float32 rounding
    of its sums over rows, and with it the trained victim, does not depend on which other victims
    train beside it (which the cache decides); victims whose sets round to the same size share a
    compiled program."""
    return -(-int(n) // PAD_ROWS) * PAD_ROWS


def _victim_programs(arch, cfg, minibatch: bool, batched: bool = True):
    """The jitted step and evaluation of a chunk of victims, vmapped over a leading victim
    axis (``batched``) or for one victim alone (cached on the architecture). One victim per
    program skips the vmap: a vmapped convolution lowers to a grouped one, 2x slower on CPU."""
    ck = ("train_many", cfg.optimizer, float(cfg.lr), float(cfg.momentum or 0.0), minibatch, batched)
    if ck in arch.programs:
        return arch.programs[ck]
    tx = _optimizer(cfg)

    def step_one(p, s, X, y, w, active, idx):
        if minibatch:
            X, y = X[idx], y[idx]
        g = jax.grad(lambda p: _squared_loss(arch, p, X, y, w))(p)
        upd, s_new = tx.update(g, s, p)
        p_new = optax.apply_updates(p, upd)

        def keep(new, old):  # a stopped victim stays exactly where it stopped
            return jnp.where(active, new, old)

        return jax.tree_util.tree_map(keep, p_new, p), jax.tree_util.tree_map(keep, s_new, s)

    def eval_one(p, X, y, mask, n):
        f = arch.predict(p, X)
        r = (f - y) * mask
        return 0.5 * jnp.sum(r ** 2) / n, jnp.sum(mask * (jnp.sign(f) == y)) / n, jnp.max(jnp.abs(r))

    if batched:
        step, evaluate = jax.jit(jax.vmap(step_one)), jax.jit(jax.vmap(eval_one))
    else:  # same signature, leading axis of length 1 squeezed inside
        def sq(t):
            return jax.tree_util.tree_map(lambda a: a[0], t)

        def ex(t):
            return jax.tree_util.tree_map(lambda a: a[None], t)

        step = jax.jit(lambda p, s, X, y, w, act, idx: ex(step_one(sq(p), sq(s), X[0], y[0], w[0], act[0],
                                                                    None if idx is None else idx[0])))
        evaluate = jax.jit(lambda p, X, y, mask, n: ex(eval_one(sq(p), X[0], y[0], mask[0], n[0])))
    progs = (tx, step, evaluate)
    arch.programs[ck] = progs
    return progs


def _stack(trees):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _run_worker(arch, queue, slots, devices, nmax, report):
    """Train victims taken from ``queue`` (one group of compatible settings), ``slots`` at a
    time in one vmapped program: a victim that stops frees its slot at that evaluation
    point and the next victim from the queue takes it. Each victim counts its own steps
    from 0; the program runs to the nearest evaluation point of any live victim, and a
    victim is evaluated (and may stop) only at its own points (every ``eval_every`` of its
    steps, and its last), so it stops where its sequential twin does.
    Returns {job index: TrainResult}."""
    nd = len(devices)
    put = (lambda a: a) if nd == 1 else _sharder(devices)
    out = {}
    live = []  # per slot: dict(job, order, start, hist, seconds)
    ps_host = []  # (params, optimizer state) of the live victims, while membership changes
    t = 0  # this worker's clock, in steps
    tx = vstep = veval = None
    while True:
        joined = []
        while len(live) + len(joined) < slots and queue:
            joined.append(queue.pop(0))
        if not live and not joined:
            return out
        t_join = time.perf_counter()
        if joined:
            cfg0 = joined[0].cfg
            if tx is None:
                tx, vstep, veval = _victim_programs(
                    arch, cfg0, not _BatchOrder(len(joined[0].X), cfg0.batch_size, 0).full, batched=slots * nd > 1)
            for j in joined:
                q = jax.tree_util.tree_map(lambda a, dt=cfg0.dtype: np.asarray(a, dt),
                                           j.params if j.params is not None else arch.init(j.cfg.seed, j.X.shape))
                ps_host.append((q, tx.init(q)))
                live.append(dict(job=j, order=_BatchOrder(len(j.X), j.cfg.batch_size, j.cfg.seed), start=t,
                                 hist={"step": [], "loss": [], "acc": [], "max_residual": []}, seconds=0.0))
        V = len(live)
        pad = -V % nd  # inactive copies of the last victim fill the devices
        if ps_host:  # membership changed: (re)build the padded data and the stacked state
            dtype = jnp.dtype(live[0]["job"].cfg.dtype)
            rows = live + [live[-1]] * pad
            Xs = np.zeros((V + pad, nmax) + live[0]["job"].X.shape[1:], dtype)
            ys = np.zeros((V + pad, nmax), dtype)
            mask = np.zeros((V + pad, nmax), dtype)
            n = np.array([len(r["job"].X) for r in rows])
            for i, r in enumerate(rows):
                Xs[i, :n[i]], ys[i, :n[i]], mask[i, :n[i]] = r["job"].X, r["job"].y, 1
            minibatch, bs = not live[0]["order"].full, live[0]["order"].bs
            w = np.full((V + pad, bs), 1.0 / bs, dtype) if minibatch else mask / n[:, None].astype(dtype)
            ps_host += ps_host[-1:] * pad
            p, s = _stack([q for q, _ in ps_host]), _stack([st for _, st in ps_host])
            p, s, Xs, ys, mask, w, n_d = (put(a) for a in (p, s, Xs, ys, mask, w, n.astype(dtype)))
            active = put(np.arange(V + pad) < V)
            ps_host = []
        ee = live[0]["job"].cfg.eval_every
        own = [t - r["start"] for r in live]  # steps taken by each victim
        t_next = min(min((o // ee + 1) * ee, r["job"].cfg.steps) - o for o, r in zip(own, live, strict=True))
        for _ in range(t_next):
            idx = put(np.stack([r["order"].next() for r in live] + [np.zeros(bs, int)] * pad)) if minibatch else None
            p, s = vstep(p, s, Xs, ys, w, active, idx)
        t += t_next
        loss, acc, max_res = (np.asarray(v, np.float64) for v in veval(p, Xs, ys, mask, n_d))
        stopped = {}
        spent = (time.perf_counter() - t_join) / V
        for i, r in enumerate(live):
            r["seconds"] += spent
            steps_i, cfg = t - r["start"], r["job"].cfg
            if steps_i % ee and steps_i != cfg.steps:
                continue  # not one of this victim's evaluation points
            h = r["hist"]
            vals = (steps_i, loss[i], acc[i], max_res[i])
            for name, v in zip(("step", "loss", "acc", "max_residual"), vals, strict=True):
                h[name].append(int(v) if name == "step" else float(v))
            diverged = not np.isfinite(loss[i])
            converged = not diverged and _met(cfg, loss[i], max_res[i])
            if diverged or converged or steps_i >= cfg.steps:
                stopped[i] = (int(steps_i), bool(converged), bool(diverged))
        if stopped:  # bring the state home once, hand out the stopped victims, keep the rest
            p_host, s_host = _unstack(p, V), _unstack(s, V)
            for i, (steps_i, converged, diverged) in stopped.items():
                r = live[i]
                out[r["job"].index] = TrainResult(p_host[i], r["hist"], r["hist"]["loss"][-1], steps_i, converged,
                                                  diverged, r["seconds"])
                report(r["job"])
            keep = [i for i in range(V) if i not in stopped]
            live = [live[i] for i in keep]
            ps_host = [(p_host[i], s_host[i]) for i in keep]


def _unstack(tree, V):
    host = jax.tree_util.tree_map(np.asarray, tree)
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], host) for i in range(V)]


def _sharder(devices):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.array(devices), ("victims",)), PartitionSpec("victims"))
    return lambda tree: jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)


def _cache_key(arch, job):
    # the padding enters the key: a victim trained under another padding rule differs in its float32
    # rounding, and a cache must never serve it as this one
    return _cache.key("victim", arch.spec, job.X, job.y, dataclasses.asdict(job.cfg),
                      None if job.params is None else jax.tree_util.tree_leaves(job.params),
                      ("padded_rows", padded_rows(len(job.X))))


def _cached_layout(template):
    """What a cached victim of this architecture holds (:func:`ntklib.cache.load`'s ``expect``):
    its metadata, one array per parameter leaf of the template's shapes, the training history."""
    shapes = [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(template)]

    def expect(z):
        meta = json.loads(str(z["meta"]))
        if meta["n_leaves"] != len(shapes):
            raise ValueError(f"it holds {meta['n_leaves']} parameter arrays, the network has {len(shapes)}")
        for k in ("final_loss", "steps", "converged"):
            meta[k]  # noqa: B018  (a KeyError here: another layout)
        return dict(meta=(), **{f"leaf_{i}": s for i, s in enumerate(shapes)},
                    **{f"hist_{k}": (None,) for k in ("step", "loss", "acc", "max_residual")})
    return expect


def _from_cache(job, template):
    z = _cache.load("victims", job.key, expect=_cached_layout(template))
    if z is None:
        return None
    treedef = jax.tree_util.tree_structure(template)
    meta = json.loads(str(z["meta"]))
    leaves = [jnp.asarray(z[f"leaf_{i}"]) for i in range(meta["n_leaves"])]
    hist = {k: [float(v) for v in z[f"hist_{k}"]] for k in ("step", "loss", "acc", "max_residual")}
    hist["step"] = [int(v) for v in hist["step"]]
    return TrainResult(jax.tree_util.tree_unflatten(treedef, leaves), hist, meta["final_loss"], meta["steps"],
                       meta["converged"], False, 0.0)


def _to_cache(job, r):
    leaves = jax.tree_util.tree_leaves(r.params)
    meta = dict(n_leaves=len(leaves), final_loss=r.final_loss, steps=r.steps, converged=r.converged)
    _cache.save("victims", job.key, dict(meta=np.array(json.dumps(meta)),
                                         **{f"leaf_{i}": leaf for i, leaf in enumerate(leaves)},
                                         **{f"hist_{k}": np.asarray(v) for k, v in r.history.items()}))


def train_many(arch, data, configs=None, params=None, progress: bool = True, desc: str = "victims",
               chunk: int | None = None, workers: int | None = None, memory: int = DEFAULT_MEMORY,
               cache: bool = True) -> list[TrainResult]:
    """Train many networks of one architecture, as :func:`train` would one by one, faster.

    Args:
        arch: the architecture (:mod:`ntklib.models`) every victim shares.
        data: a sequence of ``(X, y)`` pairs, one per victim: X (n_i, H, W, C),
            y (n_i,) in {-1, +1}. Victims may have different n_i (e.g. different
            numbers of poisons): each set is padded with rows of zero weight to
            :func:`padded_rows` of its own size, so no victim depends on the others.
        configs: one :class:`TrainConfig` for all, or one per victim. Victims may
            differ in ``seed``, ``steps``, ``target_loss`` and ``target_residual``;
            victims that differ in :data:`SHARED_FIELDS` train in separate programs.
        params: None (fresh initialization from each victim's seed) or one initial
            parameter tree per victim (None entries allowed).
        chunk: victims per compiled program (default :func:`chunk_size`: bounded by
            ``memory`` bytes, and on CPU by the measured :data:`CPU_CHUNK`).
        workers: chunks trained concurrently on threads (default on CPU: two per
            core, measured 20-25% faster than one per core on 2 cores; 1 on
            accelerators and with several devices, where each chunk's victims are
            sharded across the devices instead, and inside a worker thread of
            :func:`ntklib.parallel.thread_map`).
        cache: look each victim up in (and store it to) :mod:`ntklib.cache`.

    Returns one :class:`TrainResult` per victim, in order. Each victim follows its
    sequential twin (:func:`train` with the same data and config) step for step:
    the same initialization, minibatches, evaluation points and stopping step, and
    parameters equal up to float32 rounding. A victim whose loss diverges is
    marked ``diverged`` (with a warning naming it) while the others finish.
    Cost: the sum of the victims' steps, each one forward and backward pass.
    """
    _models.check_architecture(arch)
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        raise TypeError("train_many: data must be a list of (X, y) pairs, one per victim; got one (X, y) pair "
                        "(wrap it as [(X, y)])")
    data = list(data)
    if not data:
        raise ValueError("train_many needs at least one victim; data is empty")
    _val.check_int(chunk, "chunk", min=1, allow_none=True, hint="victims per compiled program")
    _val.check_int(workers, "workers", min=1, allow_none=True, hint="concurrent worker threads")
    _val.check_int(memory, "memory", min=1, hint="bytes per chunk of victims")
    V = len(data)
    cfgs = list(configs) if isinstance(configs, (list, tuple)) else [configs or TrainConfig()] * V
    inits = list(params) if params is not None else [None] * V
    if len(cfgs) != V or len(inits) != V:
        raise ValueError(f"{V} victims but {len(cfgs)} configs and {len(inits)} initial parameters; "
                         "give one per victim (or one config for all)")
    jobs = []
    for i, (pair, c, p) in enumerate(zip(data, cfgs, inits, strict=True)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"train_many: victim {i}'s data must be an (X, y) pair, got {_val.describe(pair)}")
        check_config(c, f"configs[{i}]")
        X, y = _check_data(*pair, f"victim {i}")
        if X.shape[1:] != np.shape(data[0][0])[1:]:
            raise ValueError(f"victim {i}: images of shape {X.shape[1:]}, but victim 0 has "
                             f"{np.shape(data[0][0])[1:]}; all victims of one architecture need one image shape")
        jobs.append(_Job(i, X, y, c, p))
    shape = jobs[0].X.shape[1:]
    for j in jobs:  # shapes only: a network that does not take these images fails here, not mid-training
        if j.index == 0 or j.params is not None:
            _check_fits(arch, j.X, j.params, f"victim {j.index}")
    _check_xla()
    results: list = [None] * V
    if cache and _cache.directory() is not None:
        template = jax.eval_shape(lambda: arch.init(0, (1,) + shape))
        for j in jobs:
            j.key = _cache_key(arch, j)
            results[j.index] = _from_cache(j, template)
    todo = [j for j in jobs if results[j.index] is None]
    devices = jax.local_devices()
    groups: dict = {}
    for j in todo:
        bs = _BatchOrder(len(j.X), j.cfg.batch_size, 0).bs
        gk = tuple(getattr(j.cfg, f) for f in SHARED_FIELDS if f != "batch_size") + (
            bs if bs < len(j.X) else None, padded_rows(len(j.X)))
        groups.setdefault(gk, []).append(j)
    if workers is None:  # two threads per core: XLA:CPU leaves a core idle between small ops
        workers = 2 * (os.cpu_count() or 1) if devices[0].platform == "cpu" and len(devices) == 1 else 1
        if _parallel.inside_worker():  # already one of parallel.thread_map's threads
            workers = 1
    bar = tqdm(total=V, initial=V - len(todo), desc=desc, disable=not progress, leave=False, unit="victim")
    lock = threading.Lock()

    def report(job):
        with lock:
            bar.update(1)

    finished = {}
    with _profiling.section("victim training"):
        for gjobs in groups.values():
            nmax = padded_rows(len(gjobs[0].X))  # the same for the whole group (part of its key)
            c = chunk or chunk_size(arch, shape, nmax, gjobs[0].cfg.dtype, memory, devices[0].platform)
            n_workers = max(1, min(workers, -(-len(gjobs) // c)))
            slots = min(c, -(-len(gjobs) // n_workers))
            # Victims are dealt to the workers round-robin, not taken from a shared queue: which
            # victims share a program (and so the float32 rounding of each) is then the same in
            # every run, and results are deterministic for the seeds.
            queues = [gjobs[k::n_workers] for k in range(n_workers)]

            def work(queue, dtype=gjobs[0].cfg.dtype, slots=slots, nmax=nmax):
                with precision(dtype):
                    return _run_worker(arch, queue, slots, devices, nmax, report)

            if n_workers == 1:
                finished.update(work(queues[0]))
            else:
                with ThreadPoolExecutor(max_workers=n_workers) as pool:
                    for part in pool.map(work, queues):
                        finished.update(part)
    bar.close()
    for j in todo:
        r = results[j.index] = finished[j.index]
        if r.diverged:
            warnings.warn(f"victim {j.index} (seed {j.cfg.seed}) diverged at step {r.steps} "
                          f"(loss {r.final_loss}); its parameters are not usable. Lower lr (now {j.cfg.lr}).",
                          stacklevel=2)
        elif j.key is not None:
            _to_cache(j, r)
    return results


def predict(arch, params, x, batch: int = 1024) -> np.ndarray:
    """Network outputs f(x) (n,) as float64, evaluated in batches."""
    _models.check_architecture(arch)
    x = _val.check_array(x, "x", min_ndim=2)
    batch = _val.check_int(batch, "batch", min=1)
    _check_fits(arch, x, params, "x")
    _check_xla()
    fn = arch.programs.setdefault("predict", jax.jit(arch.predict))
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    with precision(dtype):
        outs = [np.asarray(fn(params, jnp.asarray(x[i:i + batch], dtype))) for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def param_distance(a, b=None) -> float:
    """Euclidean norm ||a - b|| over all parameters (||a|| when b is None)."""
    la = jax.tree_util.tree_leaves(a)
    lb = [None] * len(la) if b is None else jax.tree_util.tree_leaves(b)
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - (0 if y is None else np.asarray(y, np.float64))) ** 2)
                             for x, y in zip(la, lb, strict=True))))


def residuals(arch, params, x, y) -> np.ndarray:
    """f(x) - y for each training point (how well each point, e.g. each poison, is fitted)."""
    return predict(arch, params, x) - np.asarray(y, dtype=np.float64)


def save_params(path, arch, params, extra: dict | None = None) -> Path:
    """Save parameters as ``.npz`` (leaves ``leaf_0..``) with the architecture spec as JSON."""
    path = _val.check_path(path, "path", suffixes=(".npz",), writable=True)
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a folder; give a file name ending in .npz")
    _models.check_architecture(arch)
    _val.check_params_tree(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(params)
    meta = json.dumps({"architecture": arch.spec, "n_leaves": len(leaves), **(extra or {})})
    np.savez(path, __meta__=np.array(meta), **{f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    return path


def load_params(path, input_shape):
    """Load (architecture, params) saved by :func:`save_params`.

    ``input_shape`` (H, W, C) rebuilds the parameter tree structure.
    """
    path = _val.check_path(path, "path", must_exist=True)
    input_shape = tuple(_val.check_int_list(input_shape, "input_shape", min=1))
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            leaves = [z[f"leaf_{i}"] for i in range(meta["n_leaves"])]
        arch = _models.build(meta["architecture"])
    except Exception as e:
        raise _val.file_error(path, "network parameters saved by ntklib.train.save_params", e,
                              "The file is damaged or was not written by save_params; save the network again") from e
    template = arch.init(0, input_shape)
    treedef = jax.tree_util.tree_structure(template)
    shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(template)]
    if shapes != [leaf.shape for leaf in leaves]:
        raise ValueError(f"{path}: saved parameter shapes do not match {arch.describe()} on "
                         f"inputs {tuple(input_shape)}")
    return arch, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves])
