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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import validation as _val

__all__ = [
    "Trigger", "periodic", "patch", "from_pattern", "custom", "make_trigger",
    "apply_trigger", "checkerboard", "TRIGGERS",
]


def _check_batch(x) -> np.ndarray:
    """Triggers act on image batches (n, H, W, C) in [0, 1] (an empty batch stays empty)."""
    return _val.check_images(x, "x (images to trigger)", allow_empty=True)


def _periodic_params(amplitude, periods, orientation):
    amplitude = _val.check_float(amplitude, "amplitude", min=0, max=1, include_min=False,
                                 hint="the periodic trigger adds amplitude * sin(...) to pixels in [0, 1] "
                                      "(reference: 6/255 on CIFAR-10)")
    periods = _val.check_float(periods, "periods", min=0, include_min=False)
    _val.check_choice(orientation, "orientation", ("horizontal", "vertical"))
    return amplitude, periods


def _patch_params(size, location, seed):
    size = _val.check_int(size, "size", min=1, hint="the patch is size x size pixels")
    seed = _val.check_seed(seed)
    if isinstance(location, str):
        _val.check_choice(location, "location", ("random",))
    else:
        loc = _val.check_int_list(location, "location", min=0, hint="the (row, col) of the patch's top-left corner")
        if len(loc) != 2:
            raise ValueError(f"location={location!r} is invalid: must be 'random' or a (row, col) pair")
    return size, seed


def periodic(x, amplitude: float = 6 / 255, periods: float = 8, orientation: str = "horizontal"):
    """Periodic (sinusoidal) trigger.

    x_trig[n, h, w, c] = clip(x[n, h, w, c] + amplitude * sin(2 pi periods * w / (W - 1)), 0, 1)
    for ``orientation="horizontal"`` (varies along the width, constant down each
    column); ``"vertical"`` varies along the height. This is the reference
    x + A sin(linspace(0, 16 pi, W)) with ``periods=8``.
    """
    amplitude, periods = _periodic_params(amplitude, periods, orientation)
    x = _check_batch(x)
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
    size, seed = _patch_params(size, location, seed)
    x = _check_batch(x)
    n, H, W, _ = x.shape
    if not (1 <= size <= min(H, W)):
        raise ValueError(f"patch size must be in [1, {min(H, W)}] for {H}x{W} images, got {size}")
    board = checkerboard(size)[:, :, None]
    if isinstance(location, str):
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
    pattern = _val.check_array(pattern, "pattern", dtype=float)
    mask = _val.check_array(mask, "mask", dtype=float)
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

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn={_val.describe(self.fn)} is invalid: a trigger wraps a function "
                            "fn(x_batch) -> x_batch")
        if not isinstance(self.spec, dict):
            raise TypeError(f"spec={_val.describe(self.spec)} is invalid: must be a dict describing the trigger")

    def __call__(self, x):
        return apply_trigger(self.fn, x)


def apply_trigger(fn: Callable, x) -> np.ndarray:
    """Apply ``fn`` to a batch and check the result: same shape, finite, clipped to [0, 1].

    An additive trigger may overshoot the box (x + pattern saturates, as the built-in ones do), but by
    less than the box's own width: an output outside [-1, 2] is refused (a 0-255 scale, or a shift
    that would clip whole images to black or white), not clipped silently."""
    x = _check_batch(x)
    out = np.asarray(fn(x))
    if out.shape != x.shape:
        raise ValueError(
            f"a trigger must keep the image shape: input {x.shape}, output {out.shape}. "
            "Triggers add a pattern to images; they cannot crop, resize or change channels.")
    if not np.all(np.isfinite(out)):
        raise ValueError("the trigger produced NaN or infinite pixels")
    lo, hi = float(out.min(initial=0.0)), float(out.max(initial=1.0))
    if lo < -1.0 or hi > 2.0:
        scale = " (8-bit scale? images and triggers here are in [0, 1])" if hi > 2.0 else ""
        raise ValueError(f"the trigger returned pixels in [{lo:.3g}, {hi:.3g}]{scale}: a trigger maps images in "
                         "[0, 1] to images in [0, 1]; values just outside are clipped, but these would clip "
                         f"{float(np.mean((out < 0) | (out > 1))):.0%} of the pixels. Return x + pattern with a "
                         "pattern of amplitude below 1, or a blend of x and a pattern")
    return np.clip(out, 0.0, 1.0).astype(x.dtype, copy=False)


def custom(fn: Callable, name: str = "custom") -> Trigger:
    """Wrap a user function ``fn(x_batch) -> x_batch`` as a :class:`Trigger`."""
    if not isinstance(name, str):
        raise TypeError(f"name={_val.describe(name)} is invalid: must be a string (it labels the trigger)")
    return Trigger(fn, {"name": name})


TRIGGERS = {"periodic": periodic, "patch": patch}


def make_trigger(name: str, **kwargs) -> Trigger:
    """Build a named trigger: ``make_trigger("periodic", amplitude=0.15, periods=2)``.

    Names: ``periodic``, ``patch``, and ``pattern`` (needs ``pattern`` and ``mask``).
    """
    _val.check_choice(name, "name", sorted(TRIGGERS) + ["pattern"])
    if name == "pattern":
        _val.check_keys(kwargs, ("pattern", "mask"), "parameter(s) of the pattern trigger")
        if set(kwargs) != {"pattern", "mask"}:
            raise ValueError("the pattern trigger needs both pattern= and mask= (arrays that broadcast to one image)")
        pattern, mask = (_val.check_array(kwargs[k], k, dtype=float) for k in ("pattern", "mask"))
        for k, a in (("pattern", pattern), ("mask", mask)):
            if np.any((a < 0) | (a > 1)):
                raise ValueError(f"{k} has values outside [0, 1] (min {a.min():.3g}, max {a.max():.3g}); "
                                 "a pattern is an image and a mask a blending weight, both in [0, 1]")
        return Trigger(lambda x: from_pattern(x, pattern, mask), {"name": "pattern"})
    fn = TRIGGERS[name]
    allowed = set(inspect.signature(fn).parameters) - {"x"}
    _val.check_keys(kwargs, allowed, f"parameter(s) of the {name} trigger")
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items() if k != "x"}
    args = {**defaults, **kwargs}
    if name == "periodic":  # checked now, not at the first call
        _periodic_params(args["amplitude"], args["periods"], args["orientation"])
    else:
        _patch_params(args["size"], args["location"], args["seed"])
    return Trigger(lambda x: fn(x, **kwargs), {"name": name, **kwargs})
