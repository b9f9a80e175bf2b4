"""A wrong-results bug of XLA:CPU in the pinned jaxlib 0.4.25, and its workaround (private).

jaxlib 0.4.25's CPU compiler rewrites ``dot -> multiply by a scalar -> add a
broadcast bias (-> ReLU)`` into one oneDNN matmul call (``__onednn$matmul`` with
fused ops LINEAR, BIAS, RELU) and gets the result wrong: a jitted forward pass of
any MLP with two hidden layers in the NTK parameterization (``W_std/sqrt(fan_in)
* h @ W + b_std * b``, stax's and :func:`ntklib.models.plain_mlp`'s alike) differs
from the same network evaluated op by op by 5-10% of its output (0.05-0.1 on
outputs of size ~1), in float32 on the 2-core Xeon this repository is measured on.
Float64, convolutions, one-hidden-layer MLPs and ``vmap``-batched programs were
not rewritten and were correct. Gradients were correct, so networks trained
fine, but every jitted evaluation (training loss and stopping rule, predictions,
ASR, clean accuracy) saw a different function.

The rewrite is an optional optimization pass; :func:`configure` disables it
through ``XLA_FLAGS`` (``--xla_disable_hlo_passes=onednn-matmul-rewriter``),
which XLA reads when JAX creates its CPU backend. ``import ntklib`` calls it, so
it takes effect whenever ntklib is imported before the first JAX computation.
:func:`check` compares a jitted two-hidden-layer MLP with the op-by-op result
and raises if they disagree (e.g. JAX was used before ntklib was imported).
Other XLA versions ignore the unknown pass name.
"""
from __future__ import annotations

import os

PASS = "onednn-matmul-rewriter"
_checked = False


def configure():
    """Add the pass to ``--xla_disable_hlo_passes`` in ``XLA_FLAGS`` (idempotent)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    if any(PASS in f for f in flags):
        return
    for i, f in enumerate(flags):
        if f.startswith("--xla_disable_hlo_passes="):
            flags[i] = f + "," + PASS
            break
    else:
        flags.append(f"--xla_disable_hlo_passes={PASS}")
    os.environ["XLA_FLAGS"] = " ".join(flags)


def check():
    """Raise ``RuntimeError`` if jitted dense networks compute wrong results in this process.

    Cost: one small compilation (~0.1 s), once per process.
    """
    global _checked
    if _checked:
        return
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((215, 8, 8, 1)).astype(np.float32)  # the digits victims' shapes
    ws = [rng.standard_normal(s).astype(np.float32) for s in ((64, 256), (256, 256), (256, 1))]
    bs = [rng.standard_normal(s).astype(np.float32) for s in ((256,), (256,), (1,))]

    def mlp(ws, bs, h):
        h = h.reshape(h.shape[0], -1)
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            h = 1.4 / jnp.sqrt(w.shape[0]) * (h @ w) + 0.05 * b
            h = jax.nn.relu(h) if i < 2 else h
        return h

    with jax.default_device(jax.devices("cpu")[0]):
        op_by_op = np.asarray(mlp(ws, bs, x))
        jitted = np.asarray(jax.jit(mlp)(ws, bs, x))
    err = float(np.max(np.abs(op_by_op - jitted)) / np.max(np.abs(op_by_op)))
    if err > 1e-4:
        raise RuntimeError(
            f"XLA:CPU computes jitted dense layers wrongly in this process (relative error {err:.1e}): "
            f"the oneDNN matmul rewrite of jaxlib 0.4.25. Import ntklib before running any JAX "
            f"computation, or set XLA_FLAGS=--xla_disable_hlo_passes={PASS} before starting Python.")
    _checked = True
