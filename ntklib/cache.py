"""A content-addressed cache for deterministic results (trained victims, poisons).

Work that is a pure function of its inputs (a network trained from a seed on
given data with given settings; poisons designed on a given problem) is stored
under the SHA-256 of those inputs, so that notebooks that ask for the same thing
(05 and 06 share their clean victim, kernel, poisons and victims when their
parameters agree) compute it once. The key covers every array byte, every
setting, the JAX version (``jax.random`` draws differ across versions) and
:data:`VERSION`, which is raised whenever a cached computation changes.

Where: ``$NTKLIB_CACHE_DIR`` if set (``off``, ``0``, ``none``, ``false`` or empty
disable caching; a value that looks like another switch, such as ``disabled`` or
``on``, is refused rather than taken as a folder name); otherwise ``build/cache/``
of the repository when ntklib runs from a checkout (``make clean`` removes it);
otherwise no caching.

The cache only ever saves time; it never costs a result. Entries are ``.npz``
files written atomically (a failed write, such as a full disk, leaves no
temporary file); a folder that cannot be written (read-only, a file where a
folder should be) means results are not cached, with one warning; an entry that
cannot be read, or that does not hold what the request expects (other array
names or shapes, e.g. a file of another layout or version), is reported,
ignored and rewritten. :func:`scratch` gives work in progress (optimization
checkpoints) a folder under the cache only where one can be written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["VERSION", "OFF", "directory", "key", "load", "save", "scratch"]

VERSION = 1  # raise when a cached computation changes its result

_ROOT = Path(__file__).resolve().parent.parent


OFF = ("", "0", "off", "none", "false")  # values of $NTKLIB_CACHE_DIR that switch caching off
_SWITCHES = {"1", "on", "true", "yes", "y", "no", "n", "disable", "disabled", "enable", "enabled", "default",
             "auto", "null", "nil"}  # look like switches, not folders: refused


def directory() -> Path | None:
    """The cache folder, or None when caching is off.

    Raises ValueError for a value of ``$NTKLIB_CACHE_DIR`` that looks like a switch other than
    the ones in :data:`OFF` (``disabled`` would otherwise create a folder of that name)."""
    env = os.environ.get("NTKLIB_CACHE_DIR")
    if env is not None:
        word = env.strip().lower()
        if word in OFF:
            return None
        if word in _SWITCHES:
            raise ValueError(f"NTKLIB_CACHE_DIR={env!r} is invalid: it looks like a switch, not a folder. Set it "
                             f"to one of {[v for v in OFF if v]} (or empty) to switch caching off, or to a folder "
                             f"path (./{env} for a folder of that name)")
        return Path(env).expanduser()
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
    if not (isinstance(kind, str) and kind.isidentifier() and isinstance(k, str) and k.isalnum()):
        raise ValueError(f"cache entry ({kind!r}, {k!r}) is invalid: kind is a plain name (e.g. 'victims') and the key "
                         "the hex digest of cache.key(...)")
    d = directory()
    return None if d is None else d / kind / f"{k}.npz"


def _mismatch(arrays: dict, expect) -> str | None:
    """What is wrong with ``arrays`` against ``expect`` (None when nothing): a dict name -> shape
    (a tuple whose None entries match any length, or None for any shape), or a function of the
    arrays that returns such a dict, or raises (KeyError, ValueError, ...) for entries it cannot use."""
    try:
        want = expect(arrays) if callable(expect) else expect
    except Exception as e:  # the entry does not have the layout the caller reads
        return f"{type(e).__name__}: {e}"
    missing = sorted(n for n in want if n not in arrays)
    if missing:
        return f"it lacks {missing[:5]}"
    for name, shape in want.items():
        got = np.shape(arrays[name])
        if shape is not None and (len(got) != len(shape) or any(s is not None and s != g
                                                                for s, g in zip(shape, got, strict=True))):
            return f"{name} has shape {got}, expected {tuple(shape)}"
    return None


def load(kind: str, k: str, expect=None) -> dict | None:
    """The arrays stored under (``kind``, ``k``), or None (miss, caching off, unreadable).

    ``expect``: what the caller will read (see :func:`_mismatch`: names and shapes, or a function
    of the arrays); an entry that does not match is a miss, reported and later rewritten."""
    path = _path(kind, k)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as e:  # a truncated or corrupted entry is a miss, never an error
        warnings.warn(f"ignoring unreadable cache entry {path} ({type(e).__name__}: {e}); it will be rewritten",
                      stacklevel=2)
        return None
    problem = None if expect is None else _mismatch(arrays, expect)
    if problem is not None:
        warnings.warn(f"ignoring cache entry {path}: it does not hold what this request expects ({problem}); "
                      "it will be rewritten", stacklevel=2)
        return None
    return arrays


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
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        _warn_unwritable(path, e)
        return None
    return path


_warned: set = set()


def _warn_unwritable(path, error):
    where = str(directory())
    if where not in _warned:  # once per cache folder, not once per entry
        _warned.add(where)
        warnings.warn(f"ntklib cache: cannot write {path} ({type(error).__name__}: {error}); results are not cached "
                      "(they are still computed). Point NTKLIB_CACHE_DIR at a writable folder, or set "
                      "NTKLIB_CACHE_DIR=off", stacklevel=3)


def scratch(kind: str, k: str) -> Path | None:
    """A folder ``<cache>/<kind>/<k>/`` for work in progress (checkpoints), created now, or None when
    caching is off or it cannot be written there (warned once): the work then runs without it."""
    path = _path(kind, k)
    if path is None:
        return None
    folder = path.with_suffix(".ckpt")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        _warn_unwritable(folder, e)
        return None
    return folder
