"""Scoped float64 for JAX (private helper).

ntklib never enables ``jax_enable_x64`` globally: neural-tangents' stax layers
multiply by NumPy float64 scalars, so under global x64 a float32 network is
silently promoted to float64 (and convolutions fail on mixed dtypes). Work that
asked for float64 runs inside :func:`precision` instead.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp


def _x64_context():
    for owner, name in ((jax, "enable_x64"), (getattr(jax, "experimental", None), "enable_x64")):
        ctx = getattr(owner, name, None)
        if callable(ctx):
            return ctx(True)
    raise RuntimeError("this JAX has no enable_x64 context; set jax_enable_x64 globally")  # pragma: no cover


def precision(dtype):
    """Context in which JAX computes in ``dtype`` (float64 switches x64 on)."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        return _x64_context()
    return contextlib.nullcontext()
