"""A content-addressed cache for deterministic results (trained victims, poisons).

Work that is a pure function of its inputs (a network trained from a seed on
given data with given settings; poisons designed on a given problem) is stored
under the SHA-256 of those inputs, so that notebooks that ask for the same thing
(05 and 06 share their clean victim, kernel, poisons and victims when their
parameters agree) compute it once. The key covers every array byte, every
setting, the JAX version (``jax.random`` draws differ across versions) and
:data:`VERSION`, which is raised whenever a cached computation changes.

Where: ``$NTKLIB_CACHE_DIR`` if set (``off`` disables caching); otherwise
``build/cache/`` of the repository when ntklib runs from a checkout (``make
clean`` removes it); otherwise no caching. Entries are ``.npz`` files written
atomically; an unreadable entry is reported, ignored and overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["VERSION", "directory", "key", "load", "save"]

VERSION = 1  # raise when a cached computation changes its result

_ROOT = Path(__file__).resolve().parent.parent


def directory() -> Path | None:
    """The cache folder, or None when caching is off."""
    env = os.environ.get("NTKLIB_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "false") else Path(env)
    if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "ntklib").is_dir():
        return _ROOT / "build" / "cache"
    return None


def _feed(h, obj):
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(json.dumps(obj).encode())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:  # arrays (NumPy, JAX) and NumPy scalars
        a = np.ascontiguousarray(np.asarray(obj))
        if a.dtype == object:
            raise TypeError(f"cannot hash an object array for the cache key ({type(obj).__name__})")
        h.update(f"array{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))


def key(*parts) -> str:
    """SHA-256 (hex) of ``parts`` (nested dicts, lists, scalars and arrays), plus
    :data:`VERSION` and the JAX version."""
    import jax

    h = hashlib.sha256()
    _feed(h, ["ntklib-cache", VERSION, jax.__version__, list(parts)])
    return h.hexdigest()


def _path(kind: str, k: str) -> Path | None:
    d = directory()
    return None if d is None else d / kind / f"{k}.npz"


def load(kind: str, k: str) -> dict | None:
    """The arrays stored under (``kind``, ``k``), or None (miss, caching off, unreadable)."""
    path = _path(kind, k)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except Exception as e:  # a truncated or corrupted entry is a miss, never an error
        warnings.warn(f"ignoring unreadable cache entry {path} ({type(e).__name__}: {e}); it will be rewritten",
                      stacklevel=2)
        return None


def save(kind: str, k: str, arrays: dict) -> Path | None:
    """Store ``arrays`` (name -> array) under (``kind``, ``k``); atomic; no-op when off."""
    path = _path(kind, k)
    if path is None:
        return None
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **{name: np.asarray(v) for name, v in arrays.items()})
        os.replace(tmp, path)
    except OSError as e:  # the cache only saves time: a folder that cannot be written never costs the result
        warnings.warn(f"ntklib cache: cannot write {path} ({e}); results are not cached. Point NTKLIB_CACHE_DIR at a "
                      "writable folder, or set NTKLIB_CACHE_DIR=off", stacklevel=2)
        return None
    return path
