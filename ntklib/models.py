"""Architectures with a scalar output, defined once.

Each builder returns an :class:`Architecture` holding the finite network
(``init``, ``apply_fn``) and, for ``neural_tangents.stax`` definitions, its
infinite-width kernel ``kernel_fn`` from the same definition. All use the NTK
parameterization (stax's default): a dense layer computes
``W_std / sqrt(fan_in) * x @ W + b_std * b`` with W, b ~ N(0, 1).

neural-tangents is imported only inside the stax builders, so the rest of
ntklib and the plain-JAX twins :func:`plain_mlp`, :func:`plain_cnn` and
:func:`plain_wide_resnet` work with a current JAX and no neural-tangents
installed. Each twin computes the same function as its stax original: its
parameters have the same shapes in the same order (``jax.tree_util.tree_leaves``),
so the leaves of one initialize the other (tests/test_models_train.py checks the
outputs agree); only ``kernel_fn`` (the infinite-width kernel) is missing.

Cost notes (2 CPU cores): the infinite-width NTK of a 2-layer CNN with flatten
readout takes about 0.1 s for a 200x200 block of 8x8 inputs; the same CNN with
global average pooling 13-32 s, because pooling couples every pair of pixel
positions (memory and time grow with (H W)^2 per pair). Avoid pooled infinite
kernels (``cnn(readout="pool")``, ``wide_resnet``) on CPU beyond toy sizes; use
their empirical NTK instead.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import validation as _val

__all__ = ["NeuralTangentsMissing", "Architecture", "mlp", "cnn", "wide_resnet", "plain_mlp", "plain_cnn",
           "plain_wide_resnet", "build", "check_architecture",
           "ARCHITECTURES", "PLAIN"]


def check_architecture(arch, name: str = "arch"):
    """An :class:`Architecture`."""
    if not isinstance(arch, Architecture):
        _val.fail(TypeError, name, arch, "must be an ntklib.models.Architecture",
                  "build one with ntklib.models.mlp / cnn / plain_mlp / build(spec)")
    return arch


@dataclass
class Architecture:
    """A scalar-output network and, where defined, its infinite-width kernel.

    Attributes:
        spec: JSON-able description (``build(spec)`` rebuilds the architecture).
        init_fn: stax-style ``init_fn(key, input_shape) -> (output_shape, params)``.
        apply_fn: ``apply_fn(params, x) -> (n, 1)`` for a batch x (n, H, W, C).
        kernel_fn: neural-tangents ``kernel_fn(x1, x2, get)`` or None.
        pooled: True when the readout pools over positions (costly infinite kernel).
        features_fn: ``features_fn(params, x) -> (n, width)``, the representation the
            readout layer sees (penultimate activations), or None where not defined.
        programs: compiled programs for this architecture, kept by the modules that build
            them (:mod:`ntklib.train`'s jitted steps and predictions), so a second victim of
            the same architecture and settings compiles nothing.
    """

    spec: dict
    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable | None = None
    pooled: bool = False
    features_fn: Callable | None = None
    programs: dict = field(default_factory=dict, repr=False, compare=False)

    def init(self, seed, input_shape):
        """Parameters for inputs of shape ``(H, W, C)`` (or with a batch axis).

        The same seed gives the same parameters on every JAX: the random bits are drawn with
        ``jax_threefry_partitionable`` off, the pinned JAX 0.4.25's default (JAX 0.5 turned it
        on, which changed every ``jax.random`` draw), so a victim initialized on a GPU with a
        current JAX is the one the pinned stack initializes."""
        key = seed if isinstance(seed, jax.Array) else jax.random.PRNGKey(_val.check_seed(seed))
        if isinstance(input_shape, (int, np.integer)) or not hasattr(input_shape, "__len__"):
            raise TypeError(f"input_shape={input_shape!r} is invalid: must be a shape tuple such as (8, 8, 1)")
        shape = tuple(input_shape)
        shape = (-1,) + shape[-3:] if len(shape) >= 3 else (-1,) + shape
        with jax.threefry_partitionable(False):
            return self.init_fn(key, shape)[1]

    def predict(self, params, x):
        """Network outputs f(x) of shape (n,)."""
        return self.apply_fn(params, x).reshape(x.shape[0])

    def predict_labels(self, params, x) -> np.ndarray:
        """The network's own labels sign(f(x)) in {-1, +1} (0 counts as +1), float32 (n,): what an
        attacker or defender holding the weights labels images with (I-BAU's inner maximization,
        the reconstructions of notebook 09)."""
        return np.where(np.asarray(self.predict(params, jnp.asarray(x))) >= 0, 1.0, -1.0).astype(np.float32)

    def features(self, params, x) -> np.ndarray:
        """Penultimate activations (n, width): the input of the readout layer (the representation that
        spectral signatures, activation clustering and SPECTRE inspect)."""
        if self.features_fn is None:
            raise ValueError(f"the architecture {self.spec.get('name')!r} has no penultimate layer defined "
                             "(features_fn is None); use mlp, plain_mlp or cnn, or the NTK features of "
                             "ntklib.defenses (kernel_spectral_scores)")
        x = _val.check_images(x, "x")
        return np.asarray(self.features_fn(params, x)).reshape(len(x), -1)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.items())

    def check_fits(self, shape, params=None, who: str = "X", name: str = "params"):
        """The network takes images of ``shape`` (H, W, C), and ``params``, if given, are finite
        parameters of this architecture for them (structure and every leaf's shape): traced with
        shapes only, no computation. Raises ValueError naming both shapes (not JAX's
        ``dot_general`` error from deep inside the network). ``name``: the parameters' name in messages."""
        shape = tuple(int(s) for s in shape)
        if params is not None:
            _val.check_params_tree(params, name)
        try:
            template = jax.eval_shape(lambda: self.init(0, (1,) + shape))
            if params is not None:
                jax.eval_shape(self.apply_fn, params, jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
        except (TypeError, ValueError) as e:
            what = "these parameters" if params is not None else "this architecture"
            if params is not None and self._other_network(params, template):
                self._check_same_tree(params, template, shape, name)  # names the leaf, not JAX's shapes
            raise ValueError(f"{who}: images of shape {shape} do not fit {what} ({self.describe()}): "
                             f"{str(e).splitlines()[0][:200].rstrip('.')}. Check the image shape, or the parameters' "
                             "network") from None
        if params is not None:
            self._check_same_tree(params, template, shape, name)

    @staticmethod
    def _other_network(params, template) -> bool:
        """Do ``params`` differ from the template beyond the input layer (whose shape follows the
        images)? Then they belong to another network, rather than the images to another task."""
        got, want = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template)
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(template):
            return True
        return any(tuple(np.shape(g)) != tuple(w.shape) for g, w in list(zip(got, want, strict=True))[2:])

    def _check_same_tree(self, params, template, shape, name="params"):
        got, want = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(template)
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(template) or len(got) != len(want):
            raise ValueError(f"{name} do not have the structure of {self.describe()} ({len(got)} arrays given, "
                             f"{len(want)} expected); pass parameters of this architecture (arch.init or a trained "
                             "one)")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if tuple(np.shape(g)) != tuple(w.shape):
                raise ValueError(f"{name} (leaf {i}) has shape {tuple(np.shape(g))}, but {self.describe()} on images "
                                 f"of shape {shape} has {tuple(w.shape)} there: these are another network's "
                                 "parameters")


class NeuralTangentsMissing(ImportError):
    """A stax architecture was asked for where neural-tangents does not import (a current JAX)."""


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 sent to /dev/null for the block: TensorFlow's and XLA's C++ start-up lines
    (absl's "All log messages before absl::InitializeLog()", "Could not find cuda drivers"), which
    TF_CPP_MIN_LOG_LEVEL does not reach, stay out of the notebooks. Python errors still raise."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    sys.stderr.flush()
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_NT_TF_PROTOTYPE = "neural_tangents.experimental"


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module found but not executed; the first attribute it lacks
    executes the real module (which then replaces it there and on its parent) and is read from it."""

    def __getattr__(self, attr):
        spec = self.__spec__
        real = sys.modules.get(spec.name)
        if real is self or real is None:
            real = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = real
            try:
                spec.loader.exec_module(real)
            except BaseException:
                sys.modules[spec.name] = self
                raise
            parent, _, child = spec.name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, real)
        return getattr(real, attr)


def _defer_tensorflow_prototype():
    """Put neural-tangents' TensorFlow prototype (``neural_tangents.experimental``, the empirical NTK
    of ``tf.Module`` models) in ``sys.modules`` as a :class:`_DeferredModule` before neural-tangents
    is imported.

    ``import neural_tangents`` 0.6.5 imports that subpackage, and with it ``jax2tf`` and all of
    TensorFlow: about 3.3 of the 5 seconds the import takes on 2 cores, paid again by every notebook
    kernel and worker process, though ntklib never calls it. Deferred, it is executed (TensorFlow
    imported) on its first use, so ``neural_tangents.experimental.empirical_ntk_fn_tf`` still works
    for whoever asks for it. Does nothing when neural-tangents is already imported or not installed.
    (:class:`importlib.util.LazyLoader` does not serve here: the import system reads the module's
    ``__spec__``, which executes a lazy module at once.)"""
    if "neural_tangents" in sys.modules or _NT_TF_PROTOTYPE in sys.modules:
        return
    parent = importlib.util.find_spec("neural_tangents")  # finds, does not execute, a top-level package
    if parent is None or not parent.submodule_search_locations:
        return
    spec = importlib.machinery.PathFinder.find_spec(_NT_TF_PROTOTYPE, parent.submodule_search_locations)
    if spec is None or spec.loader is None:
        return
    module = _DeferredModule(_NT_TF_PROTOTYPE)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations or [])
    module.__package__ = _NT_TF_PROTOTYPE
    sys.modules[_NT_TF_PROTOTYPE] = module


def _stax():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # neural-tangents' TF prototype imports TensorFlow
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        if "neural_tangents" in sys.modules:
            from neural_tangents import stax
        else:
            _defer_tensorflow_prototype()
            with _native_stderr_silenced():
                from neural_tangents import stax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise NeuralTangentsMissing(
            "this architecture is defined with neural_tangents.stax, which does not import here "
            f"({type(e).__name__}: {e}; it needs the pinned stack: pip install neural-tangents==0.6.5 "
            "jax==0.4.25 jaxlib==0.4.25). Without it, use the plain-JAX twins ntklib.models.plain_mlp, "
            "plain_cnn or plain_wide_resnet and the empirical NTK.") from e
    return stax


def _activation(stax, name):
    if name == "relu":
        return stax.Relu()
    if name == "erf":
        return stax.Erf()
    raise ValueError(f"unknown activation {name!r}; choose 'relu' or 'erf'")


_ACTIVATIONS = {"relu": jax.nn.relu, "erf": jax.scipy.special.erf}


def _default_w_std(activation):
    return float(np.sqrt(2.0)) if activation == "relu" else 1.0


def _check_sizes(width, depth, W_std, b_std, activation=None, min_depth=1, width_name="width"):
    """Shared checks of the builders' arguments (raised before any layer is built)."""
    _val.check_int(width, width_name, min=1, hint="hidden units (dense) or channels (conv) per layer"
                   if width_name == "width" else "the widening factor")
    _val.check_int(depth, "depth", min=min_depth)
    if activation is not None:
        _val.check_choice(activation, "activation", ("relu", "erf"))
    _val.check_float(W_std, "W_std", min=0, include_min=False, allow_none=True)
    _val.check_float(b_std, "b_std", min=0)


def mlp(width: int = 512, depth: int = 2, activation: str = "relu", W_std=None, b_std: float = 0.05):
    """Fully connected network: Flatten, ``depth`` x (Dense(width), activation), Dense(1)."""
    _check_sizes(width, depth, W_std, b_std, activation)
    stax = _stax()
    W_std = _default_w_std(activation) if W_std is None else W_std
    layers = [stax.Flatten()]
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_std, b_std=b_std), _activation(stax, activation)]
    layers += [stax.Dense(1, W_std=W_std, b_std=b_std)]
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    spec = dict(name="mlp", width=width, depth=depth, activation=activation, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, kernel_fn, features_fn=_body(stax, layers))


def _body(stax, layers):
    """The network without its readout layer: features_fn(params, x) on params[:-1]."""
    body = stax.serial(*layers[:-1])[1]
    return lambda params, x: body(params[:-1], x)


def cnn(width: int = 32, depth: int = 2, readout: str = "flatten", activation: str = "relu",
        kernel_size: int = 3, W_std=None, b_std: float = 0.05):
    """Convolutional network: ``depth`` x (Conv(width, k x k, SAME), activation), readout, Dense(1).

    ``readout="flatten"`` keeps the infinite kernel cheap (O(H W) per pair);
    ``"pool"`` (global average pooling) costs O((H W)^2) per pair: see module notes.
    """
    _check_sizes(width, depth, W_std, b_std, activation)
    _val.check_choice(readout, "readout", ("flatten", "pool"))
    _val.check_int(kernel_size, "kernel_size", min=1)
    stax = _stax()
    W_std = _default_w_std(activation) if W_std is None else W_std
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(width, (kernel_size, kernel_size), padding="SAME", W_std=W_std, b_std=b_std),
                   _activation(stax, activation)]
    layers += [stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool(),
               stax.Dense(1, W_std=W_std, b_std=b_std)]
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    spec = dict(name="cnn", width=width, depth=depth, readout=readout, activation=activation,
                kernel_size=kernel_size, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, kernel_fn, pooled=readout == "pool",
                        features_fn=_body(stax, layers))


def wide_resnet(depth: int = 34, k: int = 1, W_std: float = 1.0, b_std: float = 0.0):
    """WideResNet-depth-k (Zagoruyko & Komodakis) with a scalar output; the
    reference NTBA kernel is the empirical NTK of WRN-34. Needs (depth - 4) % 6 == 0.
    Pooled readout: its infinite kernel is for GPUs and tiny inputs only.
    """
    _check_sizes(k, depth, W_std, b_std, min_depth=10, width_name="k")
    n = _wrn_depth(depth)
    stax = _stax()

    def block(channels, strides, project):
        main = stax.serial(
            stax.Relu(), stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_std, b_std=b_std),
            stax.Relu(), stax.Conv(channels, (3, 3), padding="SAME", W_std=W_std, b_std=b_std))
        short = (stax.Conv(channels, (3, 3), strides, padding="SAME", W_std=W_std, b_std=b_std)
                 if project else stax.Identity())
        return stax.serial(stax.FanOut(2), stax.parallel(main, short), stax.FanInSum())

    def group(channels, strides):
        return stax.serial(block(channels, strides, True),
                           *[block(channels, (1, 1), False) for _ in range(n - 1)])

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(16, (3, 3), padding="SAME", W_std=W_std, b_std=b_std),
        group(16 * k, (1, 1)), group(32 * k, (2, 2)), group(64 * k, (2, 2)),
        stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=W_std, b_std=b_std))
    spec = dict(name="wide_resnet", depth=depth, k=k, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, kernel_fn, pooled=True)


def plain_mlp(width: int = 512, depth: int = 2, activation: str = "relu", W_std=None, b_std: float = 0.05):
    """The same network as :func:`mlp`, written in plain JAX (no neural-tangents).

    Same NTK parameterization and parameter layout per dense layer ``(W, b)``;
    no infinite kernel (``kernel_fn`` is None): use the empirical NTK.
    """
    _check_sizes(width, depth, W_std, b_std, activation)
    W_std = _default_w_std(activation) if W_std is None else W_std
    act = _ACTIVATIONS[activation]

    def init_fn(key, input_shape):
        fan_in = int(np.prod(input_shape[1:]))
        params = []
        for out in [width] * depth + [1]:
            key, k1, k2 = jax.random.split(key, 3)
            params.append((jax.random.normal(k1, (fan_in, out)), jax.random.normal(k2, (out,))))
            fan_in = out
        return (input_shape[0], 1), params

    def features_fn(params, x):
        h = x.reshape(x.shape[0], -1)
        for W, b in params[:-1]:
            h = act(_dense(h, W, b, W_std, b_std))
        return h

    def apply_fn(params, x, **_):
        return _dense(features_fn(params, x), *params[-1], W_std, b_std)

    spec = dict(name="plain_mlp", width=width, depth=depth, activation=activation, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, None, features_fn=features_fn)


def _conv(h, W, b, W_std, b_std, strides=(1, 1)):
    """stax.Conv in the NTK parameterization: W_std / sqrt(kh kw C_in) * conv(h, W) + b_std * b,
    SAME padding, NHWC images and HWIO filters (stax's layout: W (kh, kw, C_in, C_out), b (1, 1, 1, C_out))."""
    fan_in = W.shape[0] * W.shape[1] * W.shape[2]
    y = jax.lax.conv_general_dilated(h, W, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return W_std / jnp.sqrt(fan_in) * y + b_std * b


def _dense(h, W, b, W_std, b_std):
    return W_std / jnp.sqrt(W.shape[0]) * (h @ W) + b_std * b


def _normal_layer(key, w_shape, b_shape):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, w_shape), jax.random.normal(k2, b_shape)


def plain_cnn(width: int = 32, depth: int = 2, readout: str = "flatten", activation: str = "relu",
              kernel_size: int = 3, W_std=None, b_std: float = 0.05):
    """The same network as :func:`cnn`, written in plain JAX (no neural-tangents).

    ``depth`` x (Conv(width, k x k, SAME), activation), flatten or global average pooling,
    Dense(1), NTK parameterization. Parameters: ``[(W, b)] * depth + [(W_out, b_out)]`` with
    stax's shapes. Cost per image: O(depth H W k^2 width^2) multiply-adds forward. The
    empirical NTK and the trainer work with it as with any architecture; ``kernel_fn`` is None.
    """
    _check_sizes(width, depth, W_std, b_std, activation)
    _val.check_choice(readout, "readout", ("flatten", "pool"))
    _val.check_int(kernel_size, "kernel_size", min=1)
    W_std = _default_w_std(activation) if W_std is None else W_std
    act = _ACTIVATIONS[activation]

    def init_fn(key, input_shape):
        h, w, c = input_shape[-3:]
        params = []
        for _ in range(depth):
            key, sub = jax.random.split(key)
            params.append(_normal_layer(sub, (kernel_size, kernel_size, c, width), (1, 1, 1, width)))
            c = width
        fan_in = h * w * width if readout == "flatten" else width
        params.append(_normal_layer(key, (fan_in, 1), (1, 1)))
        return (input_shape[0], 1), params

    def features_fn(params, x):
        h = x
        for W, b in params[:-1]:
            h = act(_conv(h, W, b, W_std, b_std))
        return h.reshape(h.shape[0], -1) if readout == "flatten" else h.mean(axis=(1, 2))

    def apply_fn(params, x, **_):
        return _dense(features_fn(params, x), *params[-1], W_std, b_std)

    spec = dict(name="plain_cnn", width=width, depth=depth, readout=readout, activation=activation,
                kernel_size=kernel_size, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, None, pooled=readout == "pool", features_fn=features_fn)


def _wrn_depth(depth):
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6 n + 4 with n >= 1 (10, 16, ..., 34), got {depth}")
    return (depth - 4) // 6


def plain_wide_resnet(depth: int = 16, k: int = 1, W_std: float = 1.0, b_std: float = 0.0):
    """The same network as :func:`wide_resnet`, written in plain JAX (no neural-tangents).

    WRN-depth-k (Zagoruyko & Komodakis 2016) without batch normalization, as in
    neural-tangents' WideResNet and the NTBA reference's kernel network (paper App. C.4:
    the empirical NTK of a WRN-34): a 3x3 stem conv to 16 channels; three groups of
    n = (depth - 4) / 6 residual blocks with 16k, 32k, 64k channels (strides 1, 2, 2), each
    block ``relu -> conv3x3 -> relu -> conv3x3`` plus a shortcut (a strided 3x3 conv in the
    first block of a group, the identity after); relu, global average pooling, Dense(1).
    NTK parameterization throughout. Parameters: ``[stem, [block, ...] x 3, readout]`` with
    ``block = ((W1, b1), (W2, b2), shortcut or None)``, leaves in stax's order and shapes.
    Cost per 32x32 image, forward: every 3x3 conv after the stem costs about 2.4 k^2 million
    multiply-adds (channels double as the side halves), so about 2.4 k^2 (depth - 1) million in all
    (WRN-16-1: 36 M; WRN-34-1: 79 M). ``features_fn`` gives the pooled 64k features.
    """
    _check_sizes(k, depth, W_std, b_std, min_depth=10, width_name="k")
    n = _wrn_depth(depth)
    widths = (16 * k, 32 * k, 64 * k)
    strides = ((1, 1), (2, 2), (2, 2))

    def init_fn(key, input_shape):
        c = input_shape[-1]
        key, sub = jax.random.split(key)
        stem = _normal_layer(sub, (3, 3, c, 16), (1, 1, 1, 16))
        c, groups = 16, []
        for ch in widths:
            blocks = []
            for i in range(n):
                key, k1, k2, k3 = jax.random.split(key, 4)
                blocks.append((_normal_layer(k1, (3, 3, c, ch), (1, 1, 1, ch)),
                               _normal_layer(k2, (3, 3, ch, ch), (1, 1, 1, ch)),
                               _normal_layer(k3, (3, 3, c, ch), (1, 1, 1, ch)) if i == 0 else None))
                c = ch
            groups.append(blocks)
        return (input_shape[0], 1), [stem, groups, _normal_layer(key, (c, 1), (1, 1))]

    def features_fn(params, x):
        stem, groups, _ = params
        h = _conv(x, *stem, W_std, b_std)
        for blocks, s in zip(groups, strides, strict=True):
            for i, (c1, c2, short) in enumerate(blocks):
                st = s if i == 0 else (1, 1)
                main = _conv(jax.nn.relu(h), *c1, W_std, b_std, st)
                main = _conv(jax.nn.relu(main), *c2, W_std, b_std)
                h = main + (_conv(h, *short, W_std, b_std, st) if short is not None else h)
        return jax.nn.relu(h).mean(axis=(1, 2))

    def apply_fn(params, x, **_):
        return _dense(features_fn(params, x), *params[-1], W_std, b_std)

    spec = dict(name="plain_wide_resnet", depth=depth, k=k, W_std=W_std, b_std=b_std)
    return Architecture(spec, init_fn, apply_fn, None, pooled=True, features_fn=features_fn)


ARCHITECTURES = {"mlp": mlp, "cnn": cnn, "wide_resnet": wide_resnet, "plain_mlp": plain_mlp,
                 "plain_cnn": plain_cnn, "plain_wide_resnet": plain_wide_resnet}
# each stax architecture and its plain-JAX twin (same function, same parameter leaves)
PLAIN = {"mlp": "plain_mlp", "cnn": "plain_cnn", "wide_resnet": "plain_wide_resnet"}


def build(spec) -> Architecture:
    """Rebuild an architecture from its ``spec`` dict (or a name with defaults)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise TypeError(f"spec={_val.describe(spec)} is invalid: must be an architecture name or a dict "
                        "such as {'name': 'mlp', 'width': 512}")
    spec = dict(spec)
    name = spec.pop("name", None)
    _val.check_choice(name, "name", sorted(ARCHITECTURES))
    _val.check_keys(spec, inspect.signature(ARCHITECTURES[name]).parameters, f"parameter(s) of {name}")
    return ARCHITECTURES[name](**spec)
