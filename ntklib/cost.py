"""A cost model of the paper's regime: FLOPs, bytes and memory of every stage, and minutes on a device.

Sizing a GPU run by a model instead of by hope (issue 26): the study's stages cost::

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

from . import models as _models
from . import validation as _val

__all__ = ["Device", "DEVICES", "Stage", "forward_flops", "xla_flops", "n_params", "per_image_flops",
           "activation_elements", "training_flops", "gram_flops", "greedy_flops", "optimization_flops", "study_cost",
           "estimate", "from_params"]


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


def _count(jaxpr, what: str = "flops") -> int:
    """FLOPs of a jaxpr (``what="flops"``), or the elements its operations output (``"elements"``:
    what reverse mode keeps for the backward pass, at most)."""
    total = 0
    for eqn in jaxpr.eqns:
        if what == "elements":
            total += sum(math.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in _sub_jaxprs(eqn.params):
                total += _count(sub, what)
            continue
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
    _models.check_architecture(arch)
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


def activation_elements(arch, shape) -> int:
    """Elements output by the forward pass per image (an upper bound on what training keeps for
    the backward pass): the slope in the batch of the jaxpr's output sizes."""
    def count(b):
        params, x = _example(arch, shape, b)
        return _count(jax.make_jaxpr(arch.apply_fn)(params, x).jaxpr, "elements")
    return count(2) - count(1)


def n_params(arch, shape) -> int:
    """The number of parameters of ``arch`` for images of ``shape``."""
    params, _ = _example(arch, shape, 1)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


# ---------------------------------------------------------------------------- the study's stages
@dataclass(frozen=True)
class Stage:
    """One stage of the study: ``flops`` in ``precision`` ("tf32" for training, "fp32" for the
    Gram blocks, "fp64" for the attack's linear algebra), ``bytes`` moved from memory at least
    once, ``memory`` the largest working set in bytes (training: parameters, gradients and Adam's
    two moments, 16 P, and the batch's activations), ``programs`` compiled programs (each
    compiled once)."""

    name: str
    flops: float
    bytes: float
    memory: float
    precision: str
    programs: int
    formula: str


def per_image_flops(arch, shape) -> int:
    """F: the forward FLOPs of one more image (the slope of :func:`forward_flops` in the batch)."""
    return forward_flops(arch, shape, 2) - forward_flops(arch, shape, 1)


def training_flops(F: float, steps: int, batch: int, n: int, eval_every: int = 50) -> float:
    """One network trained ``steps`` minibatch steps of ``batch`` on n images: 3 F per image and
    step (forward, backward), and a forward pass over all n every ``eval_every`` steps."""
    return steps * batch * 3 * F + (steps // eval_every + 1) * n * F


def gram_flops(F: float, P: int, n1: int, n2: int, symmetric: bool = False) -> float:
    """The empirical-NTK block K(X1, X2): per-example gradients (3 F each) and 2 P per entry
    (half the entries of a symmetric block)."""
    entries = n1 * (n1 + 1) / 2 if symmetric else n1 * n2
    return (n1 + (0 if symmetric else n2)) * 3 * F + 2 * entries * P


def greedy_flops(n: int, n_x: int, m: int, budget: int) -> float:
    """Greedy initialization: a Cholesky factor of the n training points, then per round b the
    rank-one scores of the m - b remaining candidates, 2 (n + b) ((n + b) + n_x) each."""
    return n ** 3 / 3 + sum(2 * (m - b) * ((n + b) ** 2 + n_x * (n + b)) for b in range(budget))


def optimization_flops(F: float, P: int, n: int, n_x: int, p: int, steps: int) -> float:
    """``steps`` loss-and-gradient evaluations with p poisons: their gradients and the VJPs back to
    the pixels (9 F per poison), the kernel rows and their adjoint (2 x 2 p (n + n_x + p) P), the
    solve against the clean factor (2 n^2 p)."""
    return steps * (p * 9 * F + 2 * 2 * p * (n + n_x + p) * P + 2 * n ** 2 * p)


def study_cost(arch, shape, *, n_train_per_class: int, n_eval_per_class: int, n_test_per_class: int,
               n_pool: int | None, budgets, sampling_budgets, seeds, clean_steps: int, victim_steps: int,
               batch_size: int, opt_steps: int, kernel_members: int = 1, tile: int = 512) -> list[Stage]:
    """The stages of the paper's protocol (docs/design.md, section 3) for ``arch`` on images of ``shape``,
    with the formulas of the module notes. d holds 2 ``n_train_per_class`` images, t 2
    ``n_eval_per_class`` and a ``n_eval_per_class``; the greedy pool m = ``n_pool`` (default: every
    source image of d); victims: one per seed and budget of each attack, trained ``victim_steps``
    minibatch steps of ``batch_size``; the clean networks (``kernel_members``) ``clean_steps``.
    Returns one :class:`Stage` per stage, in the order they run. Cost: two traces of the network."""
    F = per_image_flops(arch, shape)
    P = n_params(arch, shape)
    A = activation_elements(arch, shape)
    budgets = _val.check_int_list(budgets, "budgets", min=1)
    sampling_budgets = _val.check_int_list(sampling_budgets, "sampling_budgets", min=1)
    seeds = _val.check_int_list(seeds, "seeds", min=0)
    n_d = 2 * _val.check_int(n_train_per_class, "n_train_per_class", min=1)
    n_x = 3 * _val.check_int(n_eval_per_class, "n_eval_per_class", min=1)  # t (both classes) and a
    n_test = 3 * _val.check_int(n_test_per_class, "n_test_per_class", min=1)  # clean test and triggered sources
    m = n_d // 2 if n_pool is None else _val.check_int(n_pool, "n_pool", min=1, max=n_d // 2)
    batch = min(_val.check_int(batch_size, "batch_size", min=1), n_d)
    members = _val.check_int(kernel_members, "kernel_members", min=1)
    img = 4 * math.prod(shape)
    b_max = max(budgets)
    n_victims = len(seeds) * (len(budgets) + len(sampling_budgets))
    stages = []

    def training(name, count, steps, n):
        per = training_flops(F, steps, batch, n)
        stages.append(Stage(name, count * per, count * (steps * batch * img + 3 * 4 * P * steps),
                            4 * (4 * P + batch * A), "tf32", 1,
                            "steps * batch * 3F + evaluations (n F every 50 steps)"))

    training("clean network(s)", members, _val.check_int(clean_steps, "clean_steps", min=1), n_d)
    n_j = n_d + n_x + m
    gram = n_d * n_d / 2 + n_d * n_x + m * (n_d + n_x) + m
    stages.append(Stage("kernel blocks", members * (n_j * 3 * F + 2 * gram * P),  # each image's gradient once
                        members * (n_j * img + 2 * 4 * n_j * P),
                        2 * 4 * tile * P + 4 * (n_d + m) * (n_d + n_x + m), "fp32", 2,
                        "N_J 3F per-example gradients + 2 P per kernel entry"))
    stages.append(Stage("greedy", members * greedy_flops(n_d, n_x, m, b_max), members * 8 * (n_d + m) * (n_d + n_x + m),
                        8 * (n_d + m) * (n_d + n_x + m), "fp64", 1,
                        "per round 2 m (n^2 + n n_x), one Cholesky n_d^3 / 3"))
    steps = _val.check_int(opt_steps, "opt_steps", min=0)
    per_step = sum(optimization_flops(F, P, n_d, n_x, p, 1) for p in budgets)
    stages.append(Stage("optimization", members * steps * per_step, members * steps * sum(4 * p * P for p in budgets),
                        4 * (n_d + n_x) * P, "fp32", len(budgets),
                        "per step and budget p: p 9F (gradients, VJPs) + 4 p (n + n_x) P + 2 n_d^2 p"))
    victim_steps = _val.check_int(victim_steps, "victim_steps", min=1)
    training("victims", n_victims, victim_steps, n_d + b_max)
    training("clean victims", len(seeds), victim_steps, n_d)  # the clean baseline, one per seed
    n_eval_nets = n_victims + len(seeds)
    stages.append(Stage("evaluation", n_eval_nets * n_test * F, n_eval_nets * n_test * img, n_test * img, "tf32", 1,
                        "victims x (clean + triggered test images) F"))
    return stages


def estimate(stages, device: Device, efficiency: float = 0.3, compile_seconds: float = 20.0) -> list[dict]:
    """Predicted seconds per stage on ``device``: the roofline max(FLOPs / (peak in the stage's
    precision * ``efficiency``), bytes / bandwidth), plus ``compile_seconds`` per compiled program.
    ``efficiency``: the fraction of the peak a stage reaches (calibrated on the CPU by
    ``bench/cost.py``; small convolutions reach far less than a GPU's peak). Raises ValueError when a
    stage's working set exceeds the device's memory. Returns one dict per stage."""
    efficiency = _val.check_float(efficiency, "efficiency", min=0, max=1, include_min=False)
    compile_seconds = _val.check_float(compile_seconds, "compile_seconds", min=0)
    rows = []
    for s in stages:
        if s.memory > device.memory:
            raise ValueError(f"stage {s.name!r} needs {s.memory / 1e9:.1f} GB at once, more than the {device.name}'s "
                             f"{device.memory / 1e9:.0f} GB: lower the sizes (tile, pool, training set)")
        peak = getattr(device, s.precision)
        compute, memory = s.flops / (peak * efficiency), s.bytes / device.bandwidth
        rows.append(dict(stage=s.name, gflop=s.flops / 1e9, precision=s.precision, memory_gb=s.memory / 1e9,
                         seconds=max(compute, memory) + s.programs * compile_seconds,
                         bound="compute" if compute >= memory else "memory"))
    return rows


def from_params(params: dict) -> list[Stage]:
    """The stages of notebook 06's study for a parameter file (``params/*.yaml``): its architecture,
    task sizes, budgets, seeds, training steps and kernels (an ensemble counts its members)."""
    from . import data as _data
    from . import pipeline as _pipeline

    p = _pipeline.check_params(**params)
    arch = _pipeline.build_architecture(p.get("architecture", "mlp"), p.get("width", 512), p.get("depth", 2),
                                        p.get("readout"))
    shape = (32, 32, 3) if p.get("dataset") == "cifar10" else _data.load_digits()[0].shape[1:]
    kw = dict(p.get("task_kw") or {})
    kernels = p.get("kernels") or [p.get("kernel", "empirical")]
    members = sum(p.get("ensemble_size", 3) if k == "empirical_ensemble" else 1 for k in kernels)
    steps = p.get("train_steps", 4000)
    return study_cost(arch, shape, n_train_per_class=kw.get("n_train_per_class") or 100,
                      n_eval_per_class=kw.get("n_eval_per_class", 50), n_test_per_class=kw.get("n_test_per_class")
                      or 100, n_pool=kw.get("n_pool"), budgets=p.get("budgets", [1, 2, 3, 5, 10]),
                      sampling_budgets=p.get("sampling_budgets") or p.get("budgets", [1, 2, 3, 5, 10]),
                      seeds=p.get("seeds", [0, 1, 2]), clean_steps=steps, victim_steps=steps,
                      batch_size=p.get("batch_size") or 10 ** 9, opt_steps=p.get("opt_steps", 30),
                      kernel_members=members)


def main(argv=None):
    """``python -m ntklib.cost --params FILE [--device h200] [--efficiency 0.3]``: the predicted minutes
    of each stage of a parameter file's study on a named GPU, before anything runs."""
    import argparse
    import sys

    import yaml

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--params", required=True, help="a parameter file of notebook 06 (params/*.yaml)")
    ap.add_argument("--device", default="h200", choices=sorted(DEVICES))
    ap.add_argument("--efficiency", type=float, default=0.3, help="fraction of the peak reached (default 0.3)")
    ap.add_argument("--compile-seconds", type=float, default=20.0, help="per compiled program (default 20)")
    args = ap.parse_args(argv)
    try:
        params = yaml.safe_load(open(args.params))
        params = {k: v for k, v in params.items() if k not in ("fig_dir",)}
        rows = estimate(from_params(params), DEVICES[args.device], args.efficiency, args.compile_seconds)
    except (OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.params} on one {DEVICES[args.device].name} at {args.efficiency:.0%} of peak, "
          f"{args.compile_seconds:.0f} s per compiled program:")
    for r in rows:
        print(f"  {r['stage']:18s} {r['gflop']:12.0f} GFLOP ({r['precision']}, {r['bound']}-bound, "
              f"{r['memory_gb']:6.2f} GB)  {r['seconds'] / 60:6.1f} min")
    print(f"  {'total':18s} {sum(r['seconds'] for r in rows) / 60:38.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
