"""ntklib.parallel.thread_map: the order of the results, real concurrency, errors, nesting, and
that a study's rows do not depend on how many of its runs share the cores."""
import threading
import time

import numpy as np
import pytest

from ntklib import data, parallel, profiling, reconstruction, train


def test_results_in_the_order_of_the_items_and_the_calls_run_at_once():
    barrier = threading.Barrier(2, timeout=10)  # one after the other, the first call would wait forever

    def fn(i):
        if i < 2:
            barrier.wait()
        return i * i

    assert parallel.thread_map(fn, range(6), workers=2) == [0, 1, 4, 9, 16, 25]
    assert parallel.thread_map(lambda i: i + 1, [3, 1, 2], workers=1) == [4, 2, 3]
    assert parallel.thread_map(lambda i: i, [], workers=2) == []


def test_the_first_failure_is_raised_and_the_calls_not_started_are_cancelled():
    started = []

    def fn(i):
        started.append(i)
        if i == 1:
            raise ValueError("bad item 1")
        return i

    with pytest.raises(ValueError, match="bad item 1"):
        parallel.thread_map(fn, range(50), workers=2)
    assert len(started) < 50
    with pytest.raises(ValueError, match="workers=0 is invalid"):
        parallel.thread_map(fn, range(3), workers=0)


def test_a_worker_runs_its_own_work_on_one_thread(monkeypatch):
    seen = parallel.thread_map(lambda _: (parallel.inside_worker(), parallel.default_workers()), range(2), workers=2)
    assert seen == [(True, 1), (True, 1)] and not parallel.inside_worker()
    # train_many inside a worker: one thread (a spy on the thread pool train_many would open)
    pools = []
    real = train.ThreadPoolExecutor

    def spy(*a, **kw):
        pools.append(kw.get("max_workers"))
        return real(*a, **kw)

    monkeypatch.setattr(train, "ThreadPoolExecutor", spy)
    task = data.make_task("digits", n_train_per_class=4, n_eval_per_class=2, seed=0)
    from ntklib import models
    arch = models.plain_mlp(8, depth=1)
    cfg = train.TrainConfig(steps=3, eval_every=3)
    jobs = [(task.X_d, task.y_d)] * 4
    parallel.thread_map(lambda _: train.train_many(arch, jobs, [cfg] * 4, progress=False, cache=False), [0],
                        workers=2)
    assert len(pools) == 1 and pools[0] >= 2  # one item: run on this thread, train_many uses its own threads
    pools.clear()
    parallel.thread_map(lambda _: train.train_many(arch, jobs, [cfg] * 4, progress=False, cache=False), [0, 1],
                        workers=2)
    assert pools == []  # inside workers: train_many trains on the worker's thread
    train.train_many(arch, jobs, [cfg] * 4, progress=False, cache=False, workers=2)
    assert pools == [2]


def test_sections_inside_workers_are_not_counted():
    profiling.reset()

    def fn(_):
        with profiling.section("greedy"):
            time.sleep(0.01)
            return 1

    parallel.thread_map(fn, range(4), workers=2)
    assert profiling.totals()["greedy"] == 0
    fn(0)
    assert profiling.totals()["greedy"] > 0
    profiling.reset()


def test_a_study_is_the_same_on_one_thread_and_on_two(monkeypatch):
    monkeypatch.setattr(reconstruction, "MEMO_SIZE", 0)  # both studies compute every run
    monkeypatch.setattr(reconstruction, "_MEMO", type(reconstruction._MEMO)())
    task = data.make_task("digits", n_train_per_class=3, n_eval_per_class=3, seed=0)
    settings = [dict(width=16), dict(width=16, grad_at="init"), dict(width=24, linear=True), dict(width=16, seed=1)]
    kw = dict(depth=1, steps=30, X_unseen=task.X_test)
    one = reconstruction.study(task.X_d, task.y_d, settings, workers=1, **kw).drop(columns="seconds")
    two = reconstruction.study(task.X_d, task.y_d, settings, workers=2, **kw).drop(columns="seconds")
    assert one.equals(two), (one, two)
    assert len(set(np.round(one.ssim, 12))) == 4  # four different runs, not one repeated
