"""Backdoor triggers: pure functions on image batches (n, H, W, C) in [0, 1].

Every trigger returns a new array of the same shape, clipped to [0, 1]. The
reference triggers of NTBA (Hayase & Oh 2023, Sec. 5) are

- periodic: x + A * sin(linspace(0, 2 pi P, W)) along the width (or height),
  identical in every row and channel; CIFAR-10 reference A = 6/255, P = 8;
- patch: an s x s +/-1 checkerboard added at a random location per image (or a
  fixed one), which after clipping drives its pixels to 1 or 0.

``make_trigger(name, **kw)`` builds a :class:`Trigger` (callable plus a JSON
spec for provenance). ``custom(fn)`` and ``from_pattern(pattern, mask)`` wrap
user triggers. Cost: O(n H W C).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = [
    "Trigger", "periodic", "patch", "from_pattern", "custom", "make_trigger",
    "apply_trigger", "TRIGGERS",
]


def _check_batch(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"triggers act on image batches of shape (n, H, W, C); got shape {x.shape}. "
            "Add a batch axis with x[None] for a single image.")
    return x


def periodic(x, amplitude: float = 6 / 255, periods: float = 8, orientation: str = "horizontal"):
    """Periodic (sinusoidal) trigger.

    x_trig[n, h, w, c] = clip(x[n, h, w, c] + amplitude * sin(2 pi periods * w / (W - 1)), 0, 1)
    for ``orientation="horizontal"`` (varies along the width, constant down each
    column); ``"vertical"`` varies along the height. This is the reference
    x + A sin(linspace(0, 16 pi, W)) with ``periods=8``.
    """
    x = _check_batch(x)
    if orientation not in ("horizontal", "vertical"):
        raise ValueError(f"orientation must be 'horizontal' or 'vertical', got {orientation!r}")
    axis_len = x.shape[2] if orientation == "horizontal" else x.shape[1]
    wave = amplitude * np.sin(np.linspace(0.0, 2 * np.pi * periods, axis_len))
    wave = wave[None, None, :, None] if orientation == "horizontal" else wave[None, :, None, None]
    return np.clip(x + wave, 0.0, 1.0).astype(x.dtype, copy=False)


def checkerboard(size: int) -> np.ndarray:
    """The s x s +/-1 checkerboard, +1 at the top-left corner."""
    i, j = np.indices((size, size))
    return np.where((i + j) % 2 == 0, 1.0, -1.0)


def patch(x, size: int = 3, location="random", seed: int = 0):
    """Patch trigger: add an s x s +/-1 checkerboard, clipped to [0, 1].

    ``location`` is ``"random"`` (an independent position per image drawn from
    ``seed``) or a fixed ``(row, col)`` of the patch's top-left corner. In every
    channel, pixels under +1 become 1 and pixels under -1 become 0.
    """
    x = _check_batch(x)
    n, H, W, _ = x.shape
    if not (1 <= size <= min(H, W)):
        raise ValueError(f"patch size must be in [1, {min(H, W)}] for {H}x{W} images, got {size}")
    board = checkerboard(size)[:, :, None]
    if isinstance(location, str):
        if location != "random":
            raise ValueError(f"location must be 'random' or a (row, col) pair, got {location!r}")
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, H - size + 1, size=n)
        cols = rng.integers(0, W - size + 1, size=n)
    else:
        r, c = (int(v) for v in location)
        if not (0 <= r <= H - size and 0 <= c <= W - size):
            raise ValueError(f"patch at {(r, c)} of size {size} does not fit in {H}x{W} images")
        rows, cols = np.full(n, r), np.full(n, c)
    out = np.array(x, copy=True)
    for k in range(n):
        r, c = rows[k], cols[k]
        out[k, r:r + size, c:c + size, :] += board
    return np.clip(out, 0.0, 1.0).astype(x.dtype, copy=False)


def from_pattern(x, pattern, mask):
    """Blend trigger: x * (1 - mask) + pattern * mask, clipped to [0, 1].

    ``pattern`` and ``mask`` broadcast against one image (H, W, C); ``mask``
    takes values in [0, 1] (1 = trigger pixel).
    """
    x = _check_batch(x)
    pattern, mask = np.asarray(pattern, dtype=float), np.asarray(mask, dtype=float)
    for arr in (pattern, mask):
        try:
            ok = np.broadcast_shapes(arr.shape, x.shape[1:]) == x.shape[1:]
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"pattern {pattern.shape} and mask {mask.shape} must broadcast to "
                             f"one image of shape {x.shape[1:]}")
    if np.any((mask < 0) | (mask > 1)):
        raise ValueError("mask values must lie in [0, 1]")
    return np.clip(x * (1 - mask) + pattern * mask, 0.0, 1.0).astype(x.dtype, copy=False)


@dataclass
class Trigger:
    """A trigger: ``trigger(x)`` applies it; ``spec`` describes it (JSON-able)."""

    fn: Callable
    spec: dict = field(default_factory=dict)

    def __call__(self, x):
        return apply_trigger(self.fn, x)


def apply_trigger(fn: Callable, x) -> np.ndarray:
    """Apply ``fn`` to a batch and check the result: same shape, finite, clipped to [0, 1]."""
    x = _check_batch(x)
    out = np.asarray(fn(x))
    if out.shape != x.shape:
        raise ValueError(
            f"a trigger must keep the image shape: input {x.shape}, output {out.shape}. "
            "Triggers add a pattern to images; they cannot crop, resize or change channels.")
    if not np.all(np.isfinite(out)):
        raise ValueError("the trigger produced NaN or infinite pixels")
    return np.clip(out, 0.0, 1.0).astype(x.dtype, copy=False)


def custom(fn: Callable, name: str = "custom") -> Trigger:
    """Wrap a user function ``fn(x_batch) -> x_batch`` as a :class:`Trigger`."""
    return Trigger(fn, {"name": name})


TRIGGERS = {"periodic": periodic, "patch": patch}


def make_trigger(name: str, **kwargs) -> Trigger:
    """Build a named trigger: ``make_trigger("periodic", amplitude=0.15, periods=2)``.

    Names: ``periodic``, ``patch``, and ``pattern`` (needs ``pattern`` and ``mask``).
    """
    if name == "pattern":
        pattern, mask = kwargs.pop("pattern"), kwargs.pop("mask")
        return Trigger(lambda x: from_pattern(x, pattern, mask), {"name": "pattern"})
    if name not in TRIGGERS:
        raise ValueError(f"unknown trigger {name!r}; choose one of {sorted(TRIGGERS) + ['pattern']} "
                         "or wrap your own function with ntklib.triggers.custom(fn)")
    fn = TRIGGERS[name]
    allowed = set(inspect.signature(fn).parameters) - {"x"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for the {name} trigger; "
                         f"it takes {sorted(allowed)}")
    return Trigger(lambda x: fn(x, **kwargs), {"name": name, **kwargs})
