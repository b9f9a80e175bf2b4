"""Independent runs of a study side by side on the CPU's cores: :func:`thread_map`.

XLA releases Python's GIL while a compiled program runs, so JAX programs called from several
threads compute at the same time. Many of ntklib's studies are lists of independent runs (one
reconstruction attack per setting, one distilled set per seed), each too small to keep more
than one core of a CPU busy: XLA:CPU splits a program's operations across its thread pool only
when they are large. Measured on 2 cores (notebook 09's attacks, four per call, 2000 Adam steps):
one run at a time kept one core busy; two threads ran the four attacks 1.5x faster (width 64:
6.4 -> 4.0 s, width 256: 17.0 -> 11.1 s; width 1024 at 300 steps: 34.9 -> 23.7 s), with the same
results (each run has its own seed and data; XLA's programs are deterministic on CPU).

Times measured *inside* a run (a ``seconds`` column) are then wall times shared with the other
runs; a study whose timings are results (notebook 07's detectors) runs one at a time.
On an accelerator the default is one worker (a single device runs one program at a time).
:func:`ntklib.train.train_many` has its own scheduler (victims dealt to worker threads); called
inside a :func:`thread_map` worker it uses one thread, so the threads do not multiply.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from tqdm.auto import tqdm

from . import profiling as _profiling
from . import validation as _val

__all__ = ["thread_map", "default_workers", "inside_worker"]

_local = threading.local()


def inside_worker() -> bool:
    """True in a thread that :func:`thread_map` started (nested maps and train_many then run
    on that thread alone)."""
    return getattr(_local, "worker", False)


def default_workers() -> int:
    """Runs at a time: one per CPU core on a CPU, 1 on an accelerator or inside a worker."""
    if inside_worker():
        return 1
    import jax

    return (os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1


def thread_map(fn, items, workers: int | None = None, desc: str | None = None, progress: bool = True) -> list:
    """``[fn(item) for item in items]``, ``workers`` calls at a time on threads (default
    :func:`default_workers`), results in the order of ``items``. The calls must be independent
    (their own seeds and data, no shared state they change). The first call that raises stops
    the calls not yet started and its exception is raised here. ``desc``: a progress bar over
    the finished calls. Cost: the calls' own; no copies of ``items``."""
    items = list(items)
    workers = default_workers() if workers is None else _val.check_int(
        workers, "workers", min=1, hint="calls running at a time (1: one after the other)")
    bar = tqdm(total=len(items), desc=desc, disable=not progress or desc is None, leave=False)
    try:
        if workers == 1 or len(items) <= 1:
            out = []
            for item in items:
                out.append(fn(item))
                bar.update(1)
            return out

        def call(item):
            _local.worker = True
            try:
                with _profiling.muted():  # overlapping sections: counted as the rest
                    return fn(item)
            finally:
                _local.worker = False

        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            futures = [pool.submit(call, item) for item in items]
            for f in futures:
                f.add_done_callback(lambda _: bar.update(1))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                for f in futures:
                    f.cancel()
                raise failed[0].exception()
            return [f.result() for f in futures]
    finally:
        bar.close()
