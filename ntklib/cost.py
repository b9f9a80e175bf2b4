"""A cost model of the paper's regime: FLOPs, bytes and memory of every stage, and minutes on a device.

Sizing a GPU run by a model instead of by hope (issue 26): the study's stages cost

    victim training   steps * batch * 3 F             (forward F, backward about 2 F per image)
    Jacobians         N * 3 F                         (one backward per image, N = the images of the Gram blocks)
    Gram blocks       2 N_1 N_2 P                     (J_1 J_2^T, P parameters; J in memory: 4 N P bytes)
    greedy            B * 2 m (n^2 + n n_x)           (B rounds over m candidates, n training points,
                                                       n_x evaluation points: the rank-one scores)
    optimization      S * (p * 3 F * 2 + 2 * 2 p (n + n_x) P)   (S L-BFGS-B steps with p poisons: their
                                                       Jacobians and VJPs, the kernel rows and their adjoint)

where F, the FLOPs of one image's forward pass, is counted from the network's own program: every
convolution and matrix product of its jaxpr, 2 multiply-adds' worth per valid tap (SAME padding's
border taps are not computed), one FLOP per element of the elementwise operations
(:func:`forward_flops`). XLA counts the same program independently (:func:`xla_flops`, its
``cost_analysis``); tests hold the two together. A stage's time on a device is
max(FLOPs / (peak * efficiency), bytes / bandwidth) (a roofline): :data:`DEVICES` holds the peak
float32, TF32 and bfloat16 rates, the memory bandwidth and size of the named GPUs (vendor data
sheets, dense rates), and :func:`measure_cpu` calibrates the efficiency on the machine at hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import validation as _val

__all__ = ["Device", "DEVICES", "forward_flops", "xla_flops", "n_params"]


@dataclass(frozen=True)
class Device:
    """Peak rates of one accelerator: FLOP/s in float32 (CUDA cores), TF32 and bfloat16 (tensor
    cores, dense), float64; memory bandwidth in bytes/s and memory in bytes."""

    name: str
    fp32: float
    tf32: float
    bf16: float
    fp64: float
    bandwidth: float
    memory: float


# NVIDIA's data sheets (SXM parts, dense tensor-core rates, i.e. without 2:4 sparsity).
DEVICES = {
    "h100": Device("NVIDIA H100 SXM", fp32=67e12, tf32=494.7e12, bf16=989.4e12, fp64=67e12, bandwidth=3.35e12,
                   memory=80e9),
    "h200": Device("NVIDIA H200 SXM", fp32=67e12, tf32=494.7e12, bf16=989.4e12, fp64=67e12, bandwidth=4.8e12,
                   memory=141e9),
}

_ELEMENTWISE = {"add", "sub", "mul", "div", "max", "min", "neg", "exp", "log", "tanh", "logistic", "sqrt",
                "rsqrt", "pow", "integer_pow", "abs", "sign", "select_n", "add_any", "erf", "log1p"}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min"}


def _valid_taps(n_in: int, n_out: int, k: int, stride: int, pad_lo: int, dilation: int) -> int:
    """Pairs (output position, kernel tap) along one axis whose input index lies inside the image."""
    return sum(1 for o in range(n_out) for t in range(k) if 0 <= o * stride - pad_lo + t * dilation < n_in)


def _conv_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    batch, c_in = lhs[lhs_spec[0]], lhs[lhs_spec[1]]
    c_out = rhs[rhs_spec[0]]
    groups = eqn.params.get("feature_group_count", 1)
    taps = 1
    for i, (p_lo, _) in enumerate(eqn.params["padding"]):
        taps *= _valid_taps(lhs[lhs_spec[2 + i]], out[out_spec[2 + i]], rhs[rhs_spec[2 + i]],
                            eqn.params["window_strides"][i], p_lo, eqn.params["rhs_dilation"][i])
    return 2 * batch * c_out * (c_in // groups) * taps


def _dot_flops(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    contract = math.prod(lhs[d] for d in lhs_contract)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * contract


def _count(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "dot_general":
            total += _dot_flops(eqn)
        elif name in _ELEMENTWISE:
            total += math.prod(eqn.outvars[0].aval.shape)
        elif name in _REDUCE:
            total += math.prod(eqn.invars[0].aval.shape)
        for sub in _sub_jaxprs(eqn.params):  # pjit, custom_jvp/vjp, remat: the calls' bodies
            total += _count(sub)
    return total


def _sub_jaxprs(params):
    for v in params.values():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):  # ClosedJaxpr
                yield x.jaxpr
            elif hasattr(x, "eqns"):
                yield x


def _example(arch, shape, batch):
    shape = _val.check_image_shape(shape, "shape")
    _val.check_architecture(arch)
    params = jax.eval_shape(lambda: arch.init(0, (1,) + shape))
    x = jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)
    return params, x


def forward_flops(arch, shape, batch: int = 1) -> int:
    """FLOPs of the forward pass of ``arch`` on ``batch`` images of ``shape`` (H, W, C), counted
    from its jaxpr (module notes): convolutions and matrix products at 2 FLOPs per valid
    multiply-add, elementwise operations and reductions at one per element. Traced with shapes
    only. Cost: one trace."""
    batch = _val.check_int(batch, "batch", min=1)
    params, x = _example(arch, shape, batch)
    return _count(jax.make_jaxpr(arch.apply_fn)(params, x).jaxpr)


def xla_flops(arch, shape, batch: int = 1) -> float:
    """XLA's own FLOP count of the compiled forward pass (``cost_analysis()["flops"]``) on this
    machine's backend: an independent count of the same program. Cost: one compilation."""
    batch = _val.check_int(batch, "batch", min=1)
    params, x = _example(arch, shape, batch)
    c = jax.jit(arch.apply_fn).lower(params, x).compile().cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return float(c["flops"])


def n_params(arch, shape) -> int:
    """The number of parameters of ``arch`` for images of ``shape``."""
    params, _ = _example(arch, shape, 1)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
