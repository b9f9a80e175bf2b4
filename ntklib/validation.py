"""One way of checking what a public function is given.

Modelled on scikit-learn's ``sklearn/utils/validation.py`` (``check_array``,
``check_scalar``): each validator takes the value and the *name of the
parameter* it was passed as, returns the value in a canonical form (an ndarray,
a Python int or float, a :class:`~pathlib.Path`) and otherwise raises

- ``TypeError`` when the value is of the wrong kind (a string for a number, a
  list of lists of different lengths for an image batch),
- ``ValueError`` when it is of the right kind but outside what is allowed,
- ``FileNotFoundError`` for a file that is not there,
- :class:`DivergenceError` (a ``FloatingPointError``) when an iterative method's loss
  becomes NaN or infinite or explodes: it names the step, the value and the setting to lower,
  instead of returning NaN results,

with a message in one form: ``"<name>=<value received> is invalid: <rule>. <what to do>"``.
Every public entry point of ntklib calls these first, before any expensive
work starts, so a bad argument costs milliseconds and names itself. The checks
are linear in the size of the input (a finiteness and range scan of an image
batch), well under 1% of the work they guard (``bench/validation.py``).
"""
from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import profiling as _profiling

__all__ = [
    "describe", "closest", "check_scalar", "check_int", "check_float", "check_bool", "check_seed", "check_lr",
    "check_steps", "check_fraction", "check_choice", "check_images", "check_array", "check_labels", "check_budget",
    "check_budgets", "check_int_list", "check_path", "fail",
    "check_params_tree", "check_keys", "file_error", "as_array", "check_mask", "check_gram", "check_image_shape",
    "check_loss", "DivergenceError",
]


class DivergenceError(FloatingPointError):
    """An iterative method diverged: its loss became NaN or infinite, or grew by orders of magnitude."""


# ---------------------------------------------------------------------------- messages
def describe(value) -> str:
    """A short description of a value for error messages (arrays by shape and dtype)."""
    if isinstance(value, np.ndarray) or hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(np.shape(value))} and dtype {getattr(value, 'dtype', '?')}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The names among ``candidates`` closest to ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(str(name), list(candidates), n=n, cutoff=0.5)


def fail(exc, name, value, rule, hint=""):
    """Raise ``exc("<name>=<value> is invalid: <rule>[; <hint>]")``: the one message form of every check."""
    msg = f"{name}={describe(value)} is invalid: {rule}"
    if hint:
        msg += f"; {hint}"
    raise exc(msg)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


def _bounds(lo, hi, include_lo, include_hi) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if include_lo else '>'} {lo}")
    if hi is not None:
        parts.append(f"{'<=' if include_hi else '<'} {hi}")
    return " and ".join(parts)


# ---------------------------------------------------------------------------- scalars
def check_scalar(value, name: str, kind: str = "float", *, min=None, max=None, include_min: bool = True,
                 include_max: bool = True, allow_none: bool = False, hint: str = ""):
    """A number of ``kind`` ("int" or "float") inside [min, max] (bounds optional,
    inclusive unless ``include_min``/``include_max`` is False). Booleans are not
    numbers here; floats must be finite. Returns a Python int or float (or None
    when ``allow_none`` and the value is None)."""
    if value is None and allow_none:
        return None
    what = "an integer" if kind == "int" else "a number"
    if kind == "int":
        whole = _is_int(value) or (_is_real(value) and np.isfinite(float(value)) and float(value).is_integer())
        if not whole:
            fail(TypeError, name, value, f"must be {what}{' or None' if allow_none else ''}", hint)
        value_ok = int(value)
    else:
        if not _is_real(value):
            fail(TypeError, name, value, f"must be {what}{' or None' if allow_none else ''}", hint)
        value_ok = float(value)
        if not np.isfinite(value_ok):
            fail(ValueError, name, value, "must be finite", hint)
    too_low = min is not None and (value_ok < min if include_min else value_ok <= min)
    too_high = max is not None and (value_ok > max if include_max else value_ok >= max)
    if too_low or too_high:
        fail(ValueError, name, value, f"must be {_bounds(min, max, include_min, include_max)}", hint)
    return value_ok


def check_int(value, name: str, *, min=None, max=None, allow_none: bool = False, hint: str = "") -> int:
    """An integer (floats that are whole numbers, such as 3.0 from a YAML file, are accepted)."""
    return check_scalar(value, name, "int", min=min, max=max, allow_none=allow_none, hint=hint)


def check_float(value, name: str, *, min=None, max=None, include_min: bool = True, include_max: bool = True,
                allow_none: bool = False, hint: str = "") -> float:
    """A finite real number inside the bounds."""
    return check_scalar(value, name, "float", min=min, max=max, include_min=include_min, include_max=include_max,
                        allow_none=allow_none, hint=hint)


def check_bool(value, name: str) -> bool:
    """True or False (not 0/1, not a string)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(TypeError, name, value, "must be True or False")
    return bool(value)


def check_seed(value, name: str = "seed") -> int:
    """A random seed: an integer >= 0."""
    return check_int(value, name, min=0, hint="seeds are non-negative integers")


def check_lr(value, name: str = "lr") -> float:
    """A learning rate: a finite number > 0."""
    return check_float(value, name, min=0, include_min=False,
                       hint="a learning rate is a positive step size (e.g. 0.01 for Adam, 0.5 for SGD)")


def check_steps(value, name: str = "steps", *, min: int = 1) -> int:
    """A number of steps or iterations (>= ``min``)."""
    return check_int(value, name, min=min)


def check_fraction(value, name: str, *, include_zero: bool = False) -> float:
    """A number in (0, 1] (or [0, 1] with ``include_zero``)."""
    return check_float(value, name, min=0, max=1, include_min=include_zero)


def check_choice(value, name: str, choices: Sequence):
    """One of ``choices``; the message lists them and the closest names."""
    try:
        ok = value in tuple(choices)
    except TypeError:
        ok = False
    if not ok:
        near = closest(str(value), [str(c) for c in choices]) if isinstance(value, str) else []
        hint = f"did you mean {' or '.join(repr(c) for c in near)}?" if near else ""
        fail(ValueError, name, value, f"must be one of {list(choices)}", hint)
    return value


def check_keys(given: Iterable[str], allowed: Iterable[str], what: str):
    """Every key of ``given`` is in ``allowed``; unknown ones are named with the closest valid ones."""
    allowed = list(allowed)
    unknown = [k for k in given if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            near = closest(k, allowed)
            hints.append(f"{k!r}" + (f" (did you mean {' or '.join(repr(c) for c in near)}?)" if near else ""))
        raise ValueError(f"unknown {what}: {', '.join(hints)}; valid ones are {sorted(allowed)}")


# ---------------------------------------------------------------------------- arrays
def as_array(x, name) -> np.ndarray:
    """``x`` as a real numeric ndarray (no other checks); TypeError for None, strings, dicts,
    ragged nested lists, object, complex or non-numeric arrays."""
    if x is None:
        fail(TypeError, name, x, "must be an array, got None")
    if isinstance(x, (str, bytes, dict)):
        fail(TypeError, name, x, "must be a numeric array")
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise TypeError(f"{name} is invalid: cannot be read as an array ({e}); give one numeric array") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        fail(TypeError, name, x, f"must be a numeric array, got dtype {a.dtype}",
              "a list of arrays of different shapes cannot be one batch")
    if np.iscomplexobj(a):
        fail(TypeError, name, x, "must be real-valued")
    return a


def check_array(x, name: str, *, ndim: int | None = None, min_ndim: int | None = None, shape=None,
                finite: bool = True, allow_empty: bool = False, dtype=None) -> np.ndarray:
    """A real array with the given dimensionality / shape (``None`` entries of
    ``shape`` match anything), all entries finite, non-empty unless ``allow_empty``."""
    a = as_array(x, name)
    if ndim is not None and a.ndim != ndim:
        fail(ValueError, name, a, f"must have {ndim} dimensions, got {a.ndim}")
    if min_ndim is not None and a.ndim < min_ndim:
        fail(ValueError, name, a, f"must have at least {min_ndim} dimensions (a batch (n, ...)), got {a.ndim}")
    if shape is not None:
        shape = tuple(shape)
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape, strict=True)):
            want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
            fail(ValueError, name, a, f"must have shape {want}")
    if not allow_empty and a.size == 0:
        fail(ValueError, name, a, "is empty", "give at least one entry")
    if finite and a.size and not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        fail(ValueError, name, a, f"holds {bad} NaN or infinite entries",
              "fix the data (e.g. poisons from a failed optimization) before passing it")
    return a if dtype is None else a.astype(dtype, copy=False)


def check_images(X, name: str, shape=None, *, box: bool = True, allow_empty: bool = False,
                 tol: float = 1e-6) -> np.ndarray:
    """An image batch (n, H, W, C): real, finite, non-empty unless ``allow_empty``,
    of image shape ``shape`` (H, W, C) if given, and with ``box`` pixels in [0, 1]."""
    a = as_array(X, name)
    if a.ndim != 4:
        hint = "add a batch axis with x[None] for a single image" if a.ndim == 3 else \
            "images are NHWC batches: (n, height, width, channels)"
        fail(ValueError, name, a, f"must be an image batch (n, H, W, C), got {a.ndim} dimensions", hint)
    if shape is not None and a.shape[1:] != tuple(shape):
        fail(ValueError, name, a, f"holds images of shape {a.shape[1:]}, expected {tuple(shape)}",
              "all images of one task share the training images' shape")
    if not allow_empty and len(a) == 0:
        fail(ValueError, name, a, "is an empty batch", "give at least one image")
    if a.size:
        if not np.all(np.isfinite(a)):
            fail(ValueError, name, a, f"holds {int(np.sum(~np.isfinite(a)))} NaN or infinite pixels",
                  "fix the images (e.g. poisons from a failed optimization) before using them")
        if box:
            lo, hi = float(a.min()), float(a.max())
            if lo < -tol or hi > 1 + tol:
                fail(ValueError, name, a, f"has pixels outside [0, 1] (min {lo:.3g}, max {hi:.3g})",
                      "images are floats in [0, 1]; divide 8-bit images by 255")
    return a


def check_labels(y, name: str, n: int | None = None, *, values=(-1.0, 1.0)) -> np.ndarray:
    """Labels as float64 (n,), each in ``values`` (default the binary task's -1 / +1; None: any finite)."""
    a = as_array(y, name)
    if a.ndim != 1:
        fail(ValueError, name, a, f"must be a vector of labels (n,), got {a.ndim} dimensions")
    if n is not None and len(a) != n:
        fail(ValueError, name, a, f"holds {len(a)} labels for {n} images", "give one label per image")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        fail(ValueError, name, a, "holds NaN or infinite labels")
    if values is not None and a.size and not np.all(np.isin(a, values)):
        bad = sorted(set(np.unique(a[~np.isin(a, values)]).tolist()))[:5]
        fail(ValueError, name, a, f"holds labels {bad}, but labels must be in {list(values)}",
              "the binary task labels the target class +1 and the source class -1 (map 0/1 labels with "
              "y = 2 * y - 1)")
    return a


def check_budget(budget, name: str, pool: int, *, min: int = 1) -> int:
    """A number of poisons between ``min`` and the candidate pool's size."""
    if pool < min:
        raise ValueError(f"{name}: the candidate pool holds {pool} images, too few for a budget of at least {min}; "
                         "give a larger pool (more source images in d, or a larger n_pool)")
    return check_int(budget, name, min=min, max=pool,
                     hint=f"a budget counts poisons taken from the pool of {pool} candidates")


def check_mask(mask, name: str, n: int | None = None, of: str = "points") -> np.ndarray:
    """A boolean mask (n,), one flag per one of ``n`` ``of``: True/False, or 0/1 integers. Labels
    in {-1, +1} are refused (as a mask, every -1 would count as True)."""
    a = as_array(mask, name)
    if a.ndim != 1:
        fail(ValueError, name, a, f"must be a boolean mask (n,), got {a.ndim} dimensions")
    if n is not None and len(a) != n:
        fail(ValueError, name, a, f"holds {len(a)} flags for {n} {of}", f"give one flag per one of the {of}")
    if a.dtype != np.bool_:
        values = np.unique(a)
        if not np.all(np.isin(values, (0, 1))):
            fail(ValueError, name, a, f"must be a boolean mask, got the values {values[:5].tolist()}",
                  "for labels in {-1, +1} pass labels == 1 (or the comparison you mean)")
    return a.astype(bool)


def check_gram(K, name: str = "K", n: int | None = None, *, tol: float = 1e-4, min_size: int = 1) -> np.ndarray:
    """A kernel (Gram) matrix: square (n, n), finite, symmetric and positive semi-definite up to
    ``tol`` relative to its largest diagonal entry. Returns it as float64, symmetrized.
    Cost: one Cholesky factorization, O(n^3 / 3), the order of the work that uses the matrix."""
    a = check_array(K, name, ndim=2, dtype=np.float64)
    if a.shape[0] != a.shape[1] or len(a) < min_size:
        fail(ValueError, name, a, f"must be a square kernel matrix (n, n) with n >= {min_size}")
    if n is not None and len(a) != n:
        fail(ValueError, name, a, f"must be ({n}, {n}), one row and column per point")
    scale = float(np.max(np.abs(np.diag(a)))) if len(a) else 0.0
    scale = scale if scale > 0 else float(np.max(np.abs(a)) or 1.0)
    asym = float(np.max(np.abs(a - a.T))) if len(a) else 0.0
    if asym > tol * scale:
        fail(ValueError, name, a, f"is not symmetric (largest |K - K^T| = {asym:.3g}, diagonal scale {scale:.3g})",
              "a kernel matrix is K(X, X) of one set of points; pass that, not a cross block K(X1, X2)")
    a = (a + a.T) / 2
    try:
        np.linalg.cholesky(a + tol * scale * np.eye(len(a)))
    except np.linalg.LinAlgError:
        low = float(np.linalg.eigvalsh(a)[0])
        fail(ValueError, name, a, f"is not positive semi-definite (smallest eigenvalue {low:.3g}, diagonal scale "
              f"{scale:.3g})", "a kernel matrix has no negative eigenvalues; check its sign and how it was computed")
    return a


def check_image_shape(shape, name: str = "shape") -> tuple:
    """The shape of one image: (H, W, C), three integers >= 1."""
    if isinstance(shape, (str, bytes, dict)) or not isinstance(shape, Iterable):
        fail(TypeError, name, shape, "must be the shape of one image, (height, width, channels)",
              "e.g. (8, 8, 1) for digits, (32, 32, 3) for CIFAR-10; X.shape[1:] for a batch X")
    values = check_int_list(list(shape), name, min=1)
    if len(values) != 3:
        fail(ValueError, name, shape, f"must be (height, width, channels), got {len(values)} numbers",
              "e.g. (8, 8, 1) for digits, (32, 32, 3) for CIFAR-10; X.shape[1:] for a batch X")
    return tuple(values)


def check_loss(value, what: str, step: int, hint: str, start: float | None = None, growth: float = 1e6) -> float:
    """A loss met at ``step`` of ``what``: finite, and (when the loss at the start is given) at most
    ``growth`` times that start. Otherwise :class:`DivergenceError` naming the step, the value and
    ``hint`` (the setting to change). Returns the value as a float."""
    v = float(value)
    if not np.isfinite(v):
        raise DivergenceError(f"{what} diverged at step {step}: the loss is {v}; {hint}")
    if start is not None and np.isfinite(start) and start > 0 and v > growth * start:
        raise DivergenceError(f"{what} diverged at step {step}: the loss grew from {start:.3g} to {v:.3g}; {hint}")
    return v


def check_int_list(values, name: str, *, min=None, max=None, allow_empty: bool = False, hint: str = "") -> list[int]:
    """A list (or tuple) of integers inside the bounds (a single integer is one-element list)."""
    if _is_int(values):
        values = [values]
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        fail(TypeError, name, values, "must be a list of integers", hint)
    values = list(values)
    if not values and not allow_empty:
        fail(ValueError, name, values, "is empty", hint or "give at least one value")
    return [check_int(v, f"{name}[{i}]", min=min, max=max, hint=hint) for i, v in enumerate(values)]


def check_budgets(budgets, name: str, pool: int) -> list[int]:
    """Budgets as a sorted list of distinct integers in [1, pool]: the one budget policy of ntklib
    (the design steps, the sweeps and the pipeline refuse a budget above the candidate pool, before
    any work, rather than drop it)."""
    if pool < 1:
        raise ValueError(f"{name}: the candidate pool is empty; there is nothing to choose poisons from")
    return sorted(set(check_int_list(budgets, name, min=1, max=pool,
                                     hint=f"budgets count poisons taken from the pool of {pool} candidates; give "
                                          "budgets up to it, or a larger task (task_kw n_train_per_class, "
                                          "n_pool)")))


def check_params_tree(params, name: str = "params"):
    """Network parameters: a non-empty pytree of finite arrays."""
    import jax

    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        fail(ValueError, name, params, "holds no arrays", "pass the parameters of an initialized network")
    for i, leaf in enumerate(leaves):
        a = np.asarray(leaf)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            fail(TypeError, f"{name} (leaf {i})", a, "must be numeric")
        if not np.all(np.isfinite(a)):
            fail(ValueError, f"{name} (leaf {i})", a, "holds NaN or infinite values",
                  "a diverged network cannot be used; retrain it with a lower learning rate")
    return params


# ---------------------------------------------------------------------------- objects
def check_path(path, name: str, *, must_exist: bool = False, suffixes: Sequence[str] | None = None,
               writable: bool = False) -> Path:
    """A filesystem path (str or PathLike): existing if ``must_exist``, with one of
    ``suffixes`` if given, in a folder that can be written if ``writable``."""
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        fail(TypeError, name, path, "must be a file path (str or pathlib.Path)")
    p = Path(path)
    if suffixes is not None and p.suffix not in suffixes:
        fail(ValueError, name, path, f"must end in {' or '.join(suffixes)}")
    if must_exist and not p.exists():
        raise FileNotFoundError(f"{name}={str(p)!r}: no such file; check the path")
    if writable:
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise PermissionError(f"{name}={str(p)!r}: the folder {parent} cannot be written; choose another path")
    return p


def file_error(path, what: str, error: BaseException, remedy: str) -> ValueError:
    """The error for a file that exists but cannot be read as ``what``: names the file,
    the underlying problem and the remedy (raise it ``from`` the original)."""
    return ValueError(f"{path}: cannot read this file as {what} ({type(error).__name__}: {error}). {remedy}")


# Every public validator counts its time under "validation" (ntklib.profiling), so that the
# runner's per-notebook profile shows what the checks cost next to the work they guard.
for _name in [n for n in __all__ if n.startswith("check_")]:
    globals()[_name] = _profiling.profiled("validation")(globals()[_name])
del _name
