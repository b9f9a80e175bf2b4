"""One kernel interface ``k(x1, x2) -> (n1, n2)`` with three realizations.

- :func:`infinite_ntk` / :func:`infinite_nngp`: the analytic infinite-width
  kernels of a neural-tangents architecture (:mod:`ntklib.models`);
- :func:`empirical_ntk`: the empirical NTK of any network ``apply_fn(params, x)``
  at given parameters, k(x, x') = <grad_theta f(x), grad_theta f(x')>
  (NTBA uses the one of the network trained on clean data, paper App. C.4);
- :func:`user_kernel`: any JAX function ``pair(x1, x2) -> (n1, n2)``.

A :class:`Kernel` evaluates large blocks tile by tile (bounded memory; the tile
shape is a parameter with an automatic default), assembling the result on the
host as a NumPy array in the kernel's dtype (float32 by default, float64 on
request). When several local devices are present, each tile's rows are sharded
across all of them (JAX sharding), except the empirical NTK's, which runs on the
first device (XLA computes per-example convolution gradients of a sharded batch
wrongly; see :func:`empirical_ntk`); one device needs nothing special, so the same
code runs on CPU and GPU.

:meth:`Kernel.vjp` gives the gradient of a scalar function of
K(X_p, X_other) (and, optionally, of K(X_p, X_p)) with respect to X_p as a
vector-Jacobian product: the cotangent dL/dK (n_p, n_other) goes in, an array
shaped like X_p comes out; per-pair input gradients are never materialized.
For an explicit feature map (the empirical NTK), the whole gradient is one
backward pass through the network in the parameter directions
v_i = sum_j cot_ij phi(x_j) (see :func:`empirical_ntk`), a small multiple of the
cost of the features of X_p; the block K_pp enters through both
of its arguments via ``cot_self`` (the identity
d/dX_p sum C_ij k(x_i, x_j) = vjp(C + C^T), since k is symmetric).

This module never imports neural-tangents: the empirical NTK works with a
current JAX alone.
"""
from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import models as _models
from . import profiling as _profiling
from . import validation as _val
from ._precision import precision
from ._xla import check as _check_xla

__all__ = ["Kernel", "infinite_ntk", "infinite_nngp", "empirical_ntk", "user_kernel", "rbf",
           "make_kernel", "check_kernel", "DESIGN_KERNELS"]

DESIGN_KERNELS = {
    "empirical": "the empirical NTK at the clean victim's weights (the network trained on d): the paper's "
                 "choice (App. C.4)",
    "empirical_init": "the empirical NTK at the network's initial weights",
    "infinite": "the architecture's infinite-width NTK (neural-tangents)",
    "empirical_ensemble": "the empirical NTKs of several clean networks (other seeds), the attack's loss "
                          "averaged over them (our extension, not the paper's)",
}
"""The one vocabulary of the kernels that design poisons: :func:`make_kernel`, the notebooks'
``kernel`` parameter and :func:`ntklib.pipeline.prepare` (which trains the clean victim or the
ensemble's networks) all take these names."""

DEFAULT_MEMORY = 1 << 30  # bytes of working memory per tile


def check_kernel(kernel, name: str = "kernel"):
    """A :class:`Kernel` (anything else is named with the way to wrap it)."""
    if not isinstance(kernel, Kernel):
        _val.fail(TypeError, name, kernel, "must be an ntklib.kernels.Kernel",
                  "build one with ntklib.kernels.infinite_ntk / empirical_ntk, or wrap a JAX function "
                  "pair(x1, x2) -> (n1, n2) with ntklib.kernels.user_kernel")
    return kernel


class Kernel:
    """A tiled, differentiable kernel ``k(x1, x2) -> (n1, n2)``.

    Args:
        pair: JAX function ``pair(x1, x2, *args) -> (n1, n2)`` for one tile.
        args: extra arguments passed to ``pair`` (e.g. network parameters), cast to ``dtype``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        tile: ``(rows, cols)`` of one tile, an int for both, or None for automatic.
        bytes_per_pair: estimated working memory per kernel entry, for the automatic tile.
        bytes_per_row: estimated working memory per input row (e.g. a Jacobian row).
        name: a label; ``spec`` describes the kernel for provenance.
        features: optional JAX function ``features(x, *args) -> (n, P)`` with
            k(x1, x2) = features(x1) @ features(x2).T (an explicit feature map, e.g.
            the flattened parameter Jacobian of the empirical NTK). When the
            features of ``x2`` fit in ``memory``, they are computed once
            and kept (a small cache keyed by the array's contents), so repeated
            blocks against a fixed set (the optimization loop's K(X_p, X_other))
            cost only the features of ``x1``. Arrays that are read-only and own their
            memory are assumed not to change (their contents are hashed once).
        feature_dim: P, the number of features (for the memory check).
        feature_dot: optional JAX function ``feature_dot(x, v, *args) -> (n,)`` with
            row i equal to <features(x)_i, v_i>, computed without forming the features
            (for the empirical NTK a forward-mode derivative of the network in the
            parameter direction v_i). :meth:`vjp` differentiates it with respect to x;
            the default, sum(features(x) * v, axis=1), differentiates through the
            feature map itself (second-order reverse mode, much slower for convolutions).
    """

    def __init__(self, pair: Callable, args=(), dtype="float32", tile=None, name="kernel",
                 bytes_per_pair: float = 64, bytes_per_row: float = 0, memory=DEFAULT_MEMORY,
                 spec: dict | None = None, features: Callable | None = None, feature_dim: int = 0,
                 feature_dot: Callable | None = None, shard: bool = True,
                 input_check: Callable | None = None):
        if not callable(pair):
            raise TypeError(f"pair={_val.describe(pair)} is invalid: must be a JAX function pair(x1, x2) -> (n1, n2)")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype={dtype!r} is invalid: must be one of ['float32', 'float64']")
        if tile is not None:
            tile = _val.check_int_list(tile, "tile", min=1, hint="rows (and columns) of one kernel tile")
            if len(tile) not in (1, 2):
                raise ValueError(f"tile={tile} is invalid: give an int or a (rows, cols) pair")
            tile = (tile[0], tile[-1])
        memory = _val.check_int(memory, "memory", min=1, hint="bytes of working memory per tile")
        self.name = name
        # host copies in the kernel dtype; they become device arrays inside precision()
        self.args = jax.tree_util.tree_map(lambda a: np.asarray(a, self.dtype), args)
        self._pair = pair
        self._bytes_per_pair, self._bytes_per_row, self._memory = bytes_per_pair, bytes_per_row, memory
        self.tile = self._auto_tile() if tile is None else tile
        self.spec = dict(spec or {}, name=name, dtype=str(self.dtype))
        self._input_check = input_check  # input_check(x, what): raises on inputs the kernel cannot take
        self._fwd = jax.jit(pair)
        self._bwd = jax.jit(lambda a, b, c, *args: jax.vjp(lambda u: pair(u, b, *args), a)[1](c)[0])
        self._features, self._feature_dim = features, int(feature_dim)
        self._cache: OrderedDict = OrderedDict()
        self._digests: dict = {}
        if features is not None:
            if feature_dot is None:
                def feature_dot(x, v, *args):
                    return jnp.sum(features(x, *args) * v, axis=1)

            def directional_grad(a, blocks, *args):
                # v_i = sum_j c_ij F_j over all (cotangent, features) blocks; d/dx_i <phi(x_i), v_i>
                v = sum(c @ F for c, F in blocks)
                return jax.grad(lambda u: jnp.sum(feature_dot(u, v, *args)))(a)

            self._feat = jax.jit(features)
            self._feat_fwd = jax.jit(lambda a, F, *args: features(a, *args) @ F.T)
            self._feat_bwd = jax.jit(directional_grad)
            self._gram = jax.jit(lambda A, B: A @ B.T)
        # shard=False keeps every tile on the first device (see empirical_ntk: XLA partitions the
        # per-example gradients of a convolution wrongly when their batch is sharded)
        self._devices = jax.local_devices() if shard else jax.local_devices()[:1]
        self._on_cpu = self._devices[0].platform == "cpu"
        self._sharding = None
        if len(self._devices) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            mesh = Mesh(np.array(self._devices), ("rows",))
            self._sharding = NamedSharding(mesh, PartitionSpec("rows"))
            self._replicated = NamedSharding(mesh, PartitionSpec())

    # ------------------------------------------------------------------ tiling
    def _auto_tile(self):
        itemsize = self.dtype.itemsize
        per_pair = self._bytes_per_pair * itemsize / 4
        per_row = self._bytes_per_row * itemsize / 4
        t = int(np.clip(np.sqrt(self._memory / max(per_pair, 1.0)), 8, 512))
        if per_row:  # two tiles of per-row buffers (e.g. Jacobians) must fit
            t = max(1, min(t, int(self._memory / (2 * per_row))))
        return (t, t)

    def _tiles(self, n, size):
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    def _pad(self, x, size):
        """Pad a tile to ``size`` rows (so one compiled shape serves every tile)."""
        n = x.shape[0]
        if n == size:
            return x
        return np.concatenate([x, np.repeat(x[:1], size - n, axis=0)], axis=0)

    def _rows_size(self, n):
        size = min(self.tile[0], n)
        nd = len(self._devices)
        return -(-size // nd) * nd  # multiple of the device count

    def _put(self, x, rows: bool):
        """A tile for the jitted functions. On one CPU device a NumPy array in the kernel
        dtype (jit takes it in ~10 us; an explicit device_put costs ~100 us, which
        dominated small blocks); on accelerators a device array (transferred once and
        reused across tiles); with several devices, sharded by rows or replicated."""
        x = np.asarray(x, self.dtype)
        if self._sharding is not None:
            return jax.device_put(x, self._sharding if rows else self._replicated)
        return x if self._on_cpu else jax.device_put(x, self._devices[0])

    def _check(self, x, what):
        x = _val.check_array(x, what, min_ndim=2)
        if self._input_check is not None:
            self._input_check(x, what)
        return x

    # ------------------------------------------------------------------ API
    @_profiling.profiled("kernel evaluation")
    def __call__(self, x1, x2=None) -> np.ndarray:
        """K(x1, x2) as a host array (n1, n2) in the kernel dtype; x2 defaults to x1."""
        x1 = self._check(x1, "x1")
        x2 = x1 if x2 is None else self._check(x2, "x2")
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"x1 and x2 must have the same image shape: {x1.shape[1:]} vs {x2.shape[1:]}")
        n1, n2 = len(x1), len(x2)
        out = np.empty((n1, n2), dtype=self.dtype)
        r, c = self._rows_size(n1), min(self.tile[1], n2)
        with precision(self.dtype):
            F2 = self._cached_features(x2)
            F1 = None if F2 is None else self._cached_features(x1, compute=False)
            if F2 is None:
                self._fill(x1, x2, out, r, c)
            elif F1 is not None:  # both feature matrices at hand (e.g. K(X_p, X_other) after K(X_p))
                out[:] = np.asarray(self._gram(F1, F2))
            else:
                for i0, i1 in self._tiles(n1, r):
                    a = self._put(self._pad(x1[i0:i1], r), rows=True)
                    out[i0:i1] = np.asarray(self._feat_fwd(a, F2, *self.args))[: i1 - i0]
        return out

    # ------------------------------------------------------------------ feature maps
    def _digest(self, x):
        """Content key of a host array. The hash of an array that is read-only and owns
        its memory (it cannot change) is remembered by identity."""
        frozen = not x.flags.writeable and x.base is None
        if frozen and id(x) in self._digests:
            ref, key = self._digests[id(x)]
            if ref() is x:
                return key
        data = np.ascontiguousarray(x)
        key = (x.shape, str(x.dtype), hashlib.sha1(memoryview(data).cast("B"), usedforsecurity=False).digest())
        if frozen:
            self._digests = {i: v for i, v in self._digests.items() if v[0]() is not None}
            self._digests[id(x)] = (weakref.ref(x), key)
        return key

    def _cached_features(self, x, compute: bool = True):
        """Device array features(x) (n, P) if this kernel has a feature map and they
        fit in the working memory (None otherwise); cached by content. With
        ``compute=False``, only a cache hit is returned."""
        if self._features is None:
            return None
        nbytes = len(x) * self._feature_dim * self.dtype.itemsize
        if nbytes > self._memory:
            return None
        key = self._digest(x)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if not compute:
            return None
        r = self._rows_size(len(x))
        with precision(self.dtype):
            parts = []
            for i0, i1 in self._tiles(len(x), r):
                a = self._put(self._pad(x[i0:i1], r), rows=True)
                parts.append(self._feat(a, *self.args)[: i1 - i0])
            F = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
            if self._sharding is not None:
                F = jax.device_put(F, self._replicated)
        self._cache[key] = F
        while len(self._cache) > 3 or sum(v.nbytes for v in self._cache.values()) > self._memory:
            self._cache.popitem(last=False)
        return F

    def clear_cache(self):
        """Drop cached feature matrices (they are rebuilt on demand)."""
        self._cache.clear()

    def _fill(self, x1, x2, out, r, c):
        n1, n2 = len(x1), len(x2)
        for j0, j1 in self._tiles(n2, c):
            b = self._put(self._pad(x2[j0:j1], c), rows=False)
            for i0, i1 in self._tiles(n1, r):
                a = self._put(self._pad(x1[i0:i1], r), rows=True)
                block = np.asarray(self._fwd(a, b, *self.args))
                if block.shape != (r, c):
                    raise ValueError(f"kernel {self.name}: pair(x1, x2) returned shape {block.shape} for inputs of "
                                     f"{r} and {c} rows; it must return the (n1, n2) matrix of k(x1_i, x2_j)")
                out[i0:i1, j0:j1] = block[: i1 - i0, : j1 - j0]

    @_profiling.profiled("kernel evaluation")
    def vjp(self, x1, x2=None, cot=None, cot_self=None) -> np.ndarray:
        """Gradient w.r.t. ``x1`` of sum_ij cot_ij K(x1, x2)_ij + sum_ij cot_self_ij K(x1, x1)_ij.

        Returns an array shaped like ``x1`` (float64). ``cot`` (n1, n2) is the
        cotangent of the block K(x1, x2), differentiated through its first argument
        (x2 is held fixed). ``cot_self`` (n1, n1) is the cotangent of the block
        K(x1, x1), differentiated through *both* of its arguments, which equals the
        one-sided vjp with cotangent cot_self + cot_self^T because k(a, b) = k(b, a).
        Give either or both; with a feature map both go through one backward pass.
        """
        x1 = self._check(x1, "x1")
        if (x2 is None) != (cot is None):
            raise ValueError("vjp: give x2 and cot together (the block K(x1, x2) and its cotangent)")
        if x2 is None and cot_self is None:
            raise ValueError("vjp: nothing to differentiate; give x2 and cot, or cot_self")
        blocks = []  # (x2, cotangent of the one-sided vjp)
        if x2 is not None:
            x2 = self._check(x2, "x2")
            if x1.shape[1:] != x2.shape[1:]:
                raise ValueError(f"x1 and x2 must have the same image shape: {x1.shape[1:]} vs {x2.shape[1:]}")
            blocks.append((x2, self._check_cot(cot, (len(x1), len(x2)), "cot")))
        if cot_self is not None:
            cs = self._check_cot(cot_self, (len(x1), len(x1)), "cot_self")
            blocks.append((x1, cs + cs.T))
        grad = np.zeros(x1.shape, dtype=np.float64)
        r = self._rows_size(len(x1))
        with precision(self.dtype):
            F = [self._cached_features(x) for x, _ in blocks]
            if any(f is None for f in F):  # tile by tile over all blocks' columns at once
                x = np.concatenate([b[0] for b in blocks]) if len(blocks) > 1 else blocks[0][0]
                ct = np.hstack([b[1] for b in blocks])
                self._accumulate_vjp(x1, x, ct, grad, r, min(self.tile[1], len(x)))
                return grad
            for i0, i1 in self._tiles(len(x1), r):
                a = self._put(self._pad(x1[i0:i1], r), rows=True)
                cts = []
                for (x, ct), f in zip(blocks, F, strict=True):
                    c = np.zeros((r, len(x)), dtype=self.dtype)
                    c[: i1 - i0] = ct[i0:i1]
                    cts.append((self._put(c, rows=True), f))
                g = self._feat_bwd(a, tuple(cts), *self.args)
                grad[i0:i1] += np.asarray(g, dtype=np.float64)[: i1 - i0]
        return grad

    @staticmethod
    def _check_cot(cot, shape, what):
        return _val.check_array(cot, f"{what} (the cotangent of the kernel block)", shape=shape, allow_empty=True,
                                dtype=np.float64)

    def _accumulate_vjp(self, x1, x2, cot, grad, r, c):
        n1, n2 = len(x1), len(x2)
        for j0, j1 in self._tiles(n2, c):
            b = self._put(self._pad(x2[j0:j1], c), rows=False)
            for i0, i1 in self._tiles(n1, r):
                a = self._put(self._pad(x1[i0:i1], r), rows=True)
                ct = np.zeros((r, c), dtype=self.dtype)
                ct[: i1 - i0, : j1 - j0] = cot[i0:i1, j0:j1]
                g = self._bwd(a, b, self._put(ct, rows=True), *self.args)
                grad[i0:i1] += np.asarray(g, dtype=np.float64)[: i1 - i0]

    def __repr__(self):
        return f"Kernel({self.name}, dtype={self.dtype}, tile={self.tile})"


# ---------------------------------------------------------------------- realizations
def _spatial(input_shape):
    shape = tuple(input_shape)[-3:] if len(input_shape) >= 3 else tuple(input_shape)
    return int(np.prod(shape[:-1])) if len(shape) == 3 else 1


def _infinite(arch, get, dtype, tile, input_shape, memory):
    _models.check_architecture(arch)
    if arch.kernel_fn is None:
        raise ValueError(f"architecture {arch.spec.get('name')} has no infinite-width kernel "
                         "(plain JAX networks); use empirical_ntk")
    if input_shape is not None:
        input_shape = tuple(_val.check_int_list(input_shape, "input_shape", min=1))
    kernel_fn = arch.kernel_fn

    def pair(x1, x2):
        return kernel_fn(x1, x2, get)

    # Working memory per pair: O(HW) for flatten readouts, O((HW)^2) with pooling.
    s = _spatial(input_shape) if input_shape is not None else 64
    per_pair = 4 * 16 * (s * s if arch.pooled else s)
    return Kernel(pair, (), dtype, tile, name=f"infinite_{get}", bytes_per_pair=per_pair, memory=memory,
                  spec=dict(kind=f"infinite_{get}", architecture=arch.spec))


def infinite_ntk(arch, dtype="float32", tile=None, input_shape=None, memory=DEFAULT_MEMORY) -> Kernel:
    """The analytic infinite-width NTK of a stax architecture (``arch.kernel_fn``)."""
    return _infinite(arch, "ntk", dtype, tile, input_shape, memory)


def infinite_nngp(arch, dtype="float32", tile=None, input_shape=None, memory=DEFAULT_MEMORY) -> Kernel:
    """The infinite-width NNGP kernel (the Gaussian-process prior covariance)."""
    return _infinite(arch, "nngp", dtype, tile, input_shape, memory)


def empirical_ntk(apply_fn, params, dtype="float32", tile=None, memory=DEFAULT_MEMORY,
                  spec=None) -> Kernel:
    """Empirical NTK k(x, x') = <grad_theta f(x; theta), grad_theta f(x'; theta)>.

    ``apply_fn(params, x) -> (n, 1) or (n,)`` is any scalar-output network
    (an :class:`~ntklib.models.Architecture`'s ``apply_fn`` or plain JAX). For a
    tile (x1, x2) it forms the per-example parameter gradients J1 (n1, P) and
    J2 (n2, P) by ``vmap(grad)`` and contracts them: O((n1 + n2) P) memory and
    O((n1 + n2) cost(f) + n1 n2 P) time. Parameters are cast to ``dtype``.
    J is the kernel's feature map: J(x2) of a fixed set that fits in
    ``memory`` is computed once and reused (see :class:`Kernel`), which makes the
    optimization loop's blocks K(X_p, X_other) cost only J(X_p). Their gradient
    with respect to x1 needs no second-order reverse mode: with
    v_i = sum_j cot_ij J(x2_j), sum_ij cot_ij k(x1_i, x2_j) = sum_i <J(x1_i), v_i>, and
    <J(x), v> is the forward-mode derivative of f(x; theta) in the parameter
    direction v, differentiated once in reverse mode with respect to x.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn={_val.describe(apply_fn)} is invalid: must be a function apply_fn(params, x); "
                        "for an Architecture pass arch.apply_fn")
    _val.check_params_tree(params)
    _check_xla()

    def f_single(p, x):
        return apply_fn(p, x[None]).reshape(())

    grads = jax.vmap(jax.grad(f_single), in_axes=(None, 0))

    def features(x, p):  # the flattened per-example Jacobian J(x): (n, P)
        leaves = jax.tree_util.tree_leaves(grads(p, x))
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)

    def pair(x1, x2, p):
        return features(x1, p) @ features(x2, p).T

    def feature_dot(x, v, p):  # <J(x_i), v_i> = d/de f(x_i; theta + e v_i): one forward-mode pass
        leaves, tree = jax.tree_util.tree_flatten(p)
        cuts = np.cumsum([int(np.prod(np.shape(leaf))) for leaf in leaves])[:-1]

        def one(xi, vi):
            direction = [d.reshape(np.shape(leaf)) for d, leaf in zip(jnp.split(vi, cuts), leaves, strict=True)]
            return jax.jvp(lambda q: f_single(q, xi), (p,), (jax.tree_util.tree_unflatten(tree, direction),))[1]

        return jax.vmap(one)(x, v)

    n_params = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(params))
    fits = set()

    def input_check(x, what):  # parameters built for another image shape fail deep inside XLA otherwise
        if x.shape[1:] in fits:
            return
        try:
            jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32))
        except Exception as e:  # noqa: BLE001  (shape errors come as TypeError or ValueError, by layer)
            shapes = [tuple(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params)][:2]
            raise ValueError(
                f"{what} holds inputs of shape {x.shape[1:]}, but the network's parameters do not take them (its "
                f"first parameter arrays have shapes {shapes}; {type(e).__name__}: {str(e).splitlines()[0][:160]}). "
                "The parameters were built for another input shape: build them for these inputs "
                "(arch.init(seed, x.shape[1:])) or give inputs of the shape they were built for") from None
        fits.add(x.shape[1:])

    # One device, even when several are present: with the rows of a tile sharded over devices, XLA's
    # partitioning of vmap(grad) computes the per-example gradients of convolution kernels wrongly
    # (measured on 2 host devices, JAX 0.4.25 and 0.10.2: K off by 34% of its largest entry for a
    # CNN, 66% for a WRN; MLPs exact; tests/test_kernels.py holds the kernel to the one-device one).
    return Kernel(pair, (params,), dtype, tile, name="empirical_ntk", bytes_per_pair=4,
                  bytes_per_row=4 * 3 * n_params, memory=memory, features=features, feature_dim=n_params,
                  feature_dot=feature_dot, spec=dict(spec or {}, kind="empirical_ntk", n_params=n_params),
                  shard=False, input_check=input_check)


def user_kernel(pair: Callable, dtype="float32", tile=None, name="user", **kw) -> Kernel:
    """Wrap any JAX function ``pair(x1, x2) -> (n1, n2)`` (must be differentiable in x1)."""
    return Kernel(pair, (), dtype, tile, name=name, spec=dict(kind=name), **kw)


def rbf(lengthscale: float = 1.0, dtype="float32", tile=None) -> Kernel:
    """Gaussian RBF kernel exp(-||x - x'||^2 / (2 l^2)) on flattened inputs (a user kernel)."""
    lengthscale = _val.check_float(lengthscale, "lengthscale", min=0, include_min=False)
    def pair(x1, x2):
        a, b = x1.reshape(x1.shape[0], -1), x2.reshape(x2.shape[0], -1)
        d2 = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2 * a @ b.T
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * lengthscale ** 2))

    k = user_kernel(pair, dtype, tile, name="rbf")
    k.spec["lengthscale"] = lengthscale
    return k


def make_kernel(kind: str, arch=None, params=None, **kw) -> Kernel:
    """One kernel of :data:`DESIGN_KERNELS` for ``arch``: ``"infinite"`` its infinite-width NTK;
    ``"empirical"`` and ``"empirical_init"`` its empirical NTK at ``params`` (the clean victim's
    trained weights or the initial ones: the caller holds them; :func:`ntklib.pipeline.prepare`
    trains the victim). ``"empirical_ensemble"`` is a set of kernels, not one:
    :func:`ntklib.pipeline.prepare` builds it. ``kw``: dtype, tile, memory, input_shape (infinite)."""
    _val.check_choice(kind, "kind", tuple(DESIGN_KERNELS))
    if kind == "empirical_ensemble":
        raise ValueError("kind='empirical_ensemble' is several kernels (one per clean network): "
                         "pipeline.prepare(..., kernel='empirical_ensemble') builds them and the averaged problem")
    if kind == "infinite":
        return infinite_ntk(arch, **kw)
    if params is None:
        raise ValueError(f"the empirical NTK ({kind}) needs network parameters (params=...): the clean victim's "
                         "trained weights for 'empirical', arch.init(seed, shape) for 'empirical_init'")
    spec = dict(architecture=_models.check_architecture(arch).spec, at=kind)
    return empirical_ntk(arch.apply_fn, params, spec=kw.pop("spec", spec), **kw)
