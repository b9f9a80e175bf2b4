"""Where the time goes: exclusive wall time per kind of work.

The long steps of ntklib open a :func:`section` of one of :data:`CATEGORIES`
(victim training, kernel evaluation, greedy, optimization; and validation, the
checks of :mod:`ntklib.validation`). Sections nest and
time is *exclusive*: kernel evaluations inside a greedy round count as kernel
evaluation, the rest of the round as greedy. The totals of this process are in
:func:`totals`; when the environment variable ``NTKLIB_PROFILE`` names a file,
they are also written there (JSON) each time an outermost section ends, so that
a notebook kernel run by :mod:`ntklib.runner` reports them without any code in
the notebook. Cost: two ``perf_counter`` calls per section and one small file
write per outermost coarse section (one kernel block, one greedy run, one
optimization, one batch of victims; validation sections, small and many, are
written with the next coarse one). Work on the threads of :func:`ntklib.parallel.thread_map`
is not counted (its sections overlap in time, so their sum would exceed the wall time): it
shows as the rest of the notebook.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
import warnings
from collections import defaultdict

__all__ = ["CATEGORIES", "section", "profiled", "totals", "reset", "muted"]

CATEGORIES = ("victim training", "kernel evaluation", "greedy", "optimization", "validation")

_totals: dict = defaultdict(float)
_lock = threading.Lock()
_local = threading.local()


def _stack():
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


@contextlib.contextmanager
def section(category: str):
    """Count the wall time of the block under ``category`` (minus nested sections)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown profiling category {category!r}; choose one of {list(CATEGORIES)}")
    if getattr(_local, "muted", False):
        yield
        return
    stack = _stack()
    frame = [category, 0.0]  # category, time spent in nested sections
    stack.append(frame)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        stack.pop()
        with _lock:
            _totals[category] += dt - frame[1]
        if stack:
            stack[-1][1] += dt
        elif category != "validation":
            _flush()


@contextlib.contextmanager
def muted():
    """Sections opened on this thread inside the block are not counted (the worker threads of
    :func:`ntklib.parallel.thread_map`)."""
    before = getattr(_local, "muted", False)
    _local.muted = True
    try:
        yield
    finally:
        _local.muted = before


def profiled(category: str):
    """Decorator form of :func:`section`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with section(category):
                return fn(*args, **kwargs)
        return inner
    return wrap


def totals() -> dict:
    """Seconds per category so far in this process."""
    with _lock:
        return {c: round(_totals.get(c, 0.0), 3) for c in CATEGORIES}


def reset():
    with _lock:
        _totals.clear()


def _flush():
    path = os.environ.get("NTKLIB_PROFILE")
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(totals(), f)
        os.replace(tmp, path)
    except OSError as e:  # a profile is a report: never fail the work it measures
        warnings.warn(f"cannot write the profile to NTKLIB_PROFILE={path} ({e})", stacklevel=2)
