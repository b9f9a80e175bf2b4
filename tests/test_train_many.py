"""Batched victims (train.train_many) against the sequential reference (train.train), the
XLA:CPU workaround, the content cache and the profiler."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

from ntklib import _xla, cache, data, models, profiling, train


@pytest.fixture(scope="module")
def victims():
    """Four victims: d plus 0, 1, 3 and 6 poisons (different n), different seeds and budgets."""
    task = data.make_task("digits", source=7, target=1, trigger=data.default_trigger("digits", "periodic"),
                          n_train_per_class=25, n_eval_per_class=5, n_test_per_class=5)
    sets = []
    for b in (0, 1, 3, 6):
        X_p = task.X_cand[:b]
        sets.append((np.concatenate([task.X_d, X_p]), np.concatenate([task.y_d, np.ones(b)])))
    base = train.TrainConfig(lr=2.0, steps=400, target_loss=2e-3, target_residual=0.2, eval_every=25)
    cfgs = [dataclasses.replace(base, seed=s, steps=st)
            for s, st in zip((0, 1, 2, 3), (400, 400, 60, 400), strict=True)]
    return sets, cfgs


def _assert_twins(arch, sets, cfgs, batched):
    for (X, y), c, b in zip(sets, cfgs, batched, strict=True):
        s = train.train(arch, X, y, c, progress=False)
        assert (b.steps, b.converged, b.diverged) == (s.steps, s.converged, False)
        assert b.history["step"] == s.history["step"]
        np.testing.assert_allclose(b.history["loss"], s.history["loss"], rtol=2e-3)
        # float32 rounding differs between the programs and grows over hundreds of steps: parameters
        # agree to 1e-4 of their norm and 2% of the distance they moved; predictions to 1e-3
        init = arch.init(c.seed, X.shape)
        gap = train.param_distance(b.params, s.params)
        assert gap < 1e-4 * train.param_distance(s.params) and gap < 0.02 * train.param_distance(s.params, init)
        np.testing.assert_allclose(train.residuals(arch, b.params, X, y), train.residuals(arch, s.params, X, y),
                                   atol=1e-3)


@pytest.mark.parametrize("chunk, workers", [(2, 1), (4, 2), (1, 2)])
def test_batched_victims_follow_their_sequential_twins(victims, chunk, workers):
    """Each batched victim (padded rows, refilled slots, threads) = its sequential twin:
    same stopping step and evaluation points, parameters and residuals within float32."""
    sets, cfgs = victims
    arch = models.plain_mlp(64)
    out = train.train_many(arch, sets, cfgs, progress=False, cache=False, chunk=chunk, workers=workers)
    assert len({r.steps for r in out}) > 1  # the victims stop at different steps
    assert any(r.converged for r in out) and not all(r.converged for r in out)
    _assert_twins(arch, sets, cfgs, out)


def test_batched_minibatches_follow_their_twins(victims):
    sets, cfgs = victims
    cfgs = [dataclasses.replace(c, batch_size=16, steps=60, target_loss=0.0) for c in cfgs]
    arch = models.plain_mlp(32)
    _assert_twins(arch, sets[1:], cfgs[1:], train.train_many(arch, sets[1:], cfgs[1:], progress=False,
                                                             cache=False, chunk=3))


def test_padding_leaves_each_loss_its_own(victims):
    """A victim padded to a longer set trains exactly as alone (zero-weight rows)."""
    sets, cfgs = victims
    arch = models.plain_mlp(32)
    cfg = dataclasses.replace(cfgs[0], steps=50, target_loss=0.0)
    alone = train.train_many(arch, sets[:1], cfg, progress=False, cache=False, chunk=1)[0]
    padded = train.train_many(arch, [sets[0], sets[3]], cfg, progress=False, cache=False, chunk=2)[0]
    for a, b in zip(jax.tree_util.tree_leaves(alone.params), jax.tree_util.tree_leaves(padded.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_diverging_victim_is_marked_and_the_others_finish(victims):
    sets, cfgs = victims
    X, y = sets[1]
    bad = (X * 300.0, y)  # same lr, inputs 300x larger: the step is far beyond stability
    cfg = dataclasses.replace(cfgs[0], steps=100)
    with pytest.warns(UserWarning, match="victim 1 .* diverged"):
        out = train.train_many(models.plain_mlp(32), [sets[0], bad, sets[2]], cfg, progress=False, cache=False,
                               chunk=3)
    assert [r.diverged for r in out] == [False, True, False]
    assert all(np.isfinite(r.final_loss) for r in (out[0], out[2]))


def test_bad_batches_are_refused_naming_the_victim(victims):
    sets, cfgs = victims
    arch = models.plain_mlp(8)
    with pytest.raises(ValueError, match="at least one victim"):
        train.train_many(arch, [], progress=False)
    X, y = sets[0]
    with pytest.raises(ValueError, match="victim 1: images of shape"):
        train.train_many(arch, [sets[0], (X[:, :4], y)], progress=False)
    nan = X.copy()
    nan[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"victim 1 \(images\)=.* holds 1 NaN"):
        train.train_many(arch, [sets[0], (nan, y)], progress=False)
    with pytest.raises(ValueError, match=r"victim 0 \(labels\)=.*labels for"):
        train.train_many(arch, [(X, y[:-1])], progress=False)
    with pytest.raises(ValueError, match="2 victims but 3 configs"):
        train.train_many(arch, sets[:2], cfgs[:3], progress=False)
    with pytest.raises(ValueError, match="chunk=0"):
        train.train_many(arch, sets[:1], chunk=0, progress=False)


def test_chunk_rule_is_bounded_by_memory_and_the_cpu_measurement():
    mlp, cnn = models.mlp(256), models.cnn(32)
    assert train.chunk_size(mlp, (8, 8, 1), 220, platform="cpu") == train.CPU_CHUNK["dense"]
    assert train.chunk_size(cnn, (8, 8, 1), 220, platform="cpu") == train.CPU_CHUNK["conv"]
    big = train.chunk_size(mlp, (8, 8, 1), 220, memory=1 << 40, platform="gpu")
    small = train.chunk_size(mlp, (8, 8, 1), 220, memory=20 << 20, platform="gpu")
    assert big > 100 and 1 <= small < 20


def test_cache_returns_the_stored_victim_and_survives_corruption(victims, tmp_path, monkeypatch):
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    sets, cfgs = victims
    arch = models.plain_mlp(16)
    cfg = dataclasses.replace(cfgs[0], steps=50)
    first = train.train_many(arch, sets[:2], cfg, progress=False)
    files = sorted((tmp_path / "victims").glob("*.npz"))
    assert len(files) == 2

    def boom(*a, **k):
        raise AssertionError("a cached victim was trained again")

    monkeypatch.setattr(train, "_run_worker", boom)
    again = train.train_many(arch, sets[:2], cfg, progress=False)
    for a, b in zip(first, again, strict=True):
        assert (a.steps, a.final_loss, a.history) == (b.steps, b.final_loss, b.history)
        for la, lb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True):
            np.testing.assert_array_equal(la, lb)
    # another seed is another key; a corrupted entry is a miss, retrained and rewritten
    assert cache.key("victim", 1) != cache.key("victim", 2)
    files[0].write_bytes(b"not a zip")
    monkeypatch.undo()
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        train.train_many(arch, sets[:2], cfg, progress=False)


def test_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("NTKLIB_CACHE_DIR", "off")
    assert cache.directory() is None and cache.load("victims", "x") is None
    assert cache.save("victims", "x", {"a": np.zeros(1)}) is None


def test_jitted_mlp_equals_op_by_op():
    """The XLA:CPU oneDNN rewrite of jaxlib 0.4.25 made jitted two-hidden-layer MLPs wrong by
    5-10% (ntklib/_xla.py); importing ntklib disables it. Fails if that stops working."""
    x = data.load_digits()[0][:215].astype(np.float32)
    for arch in (models.mlp(256, 2), models.plain_mlp(256, 2)):
        p = arch.init(0, x.shape)
        with jax.disable_jit():
            ref = np.asarray(arch.predict(p, x))
        np.testing.assert_allclose(train.predict(arch, p, x), ref, atol=1e-5)
    _xla.check()


def test_xla_flag_merges_with_the_users(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_disable_hlo_passes=foo")
    _xla.configure()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=2", f"--xla_disable_hlo_passes=foo,{_xla.PASS}"]
    _xla.configure()
    assert os.environ["XLA_FLAGS"].split() == flags


def test_profile_sections_are_exclusive_and_written(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKLIB_PROFILE", str(tmp_path / "p.json"))
    profiling.reset()
    with profiling.section("greedy"):
        with profiling.section("kernel evaluation"):
            sum(range(200000))
        sum(range(100000))
    t = profiling.totals()
    assert t["kernel evaluation"] > 0 and t["greedy"] > 0 and t["victim training"] == 0
    assert json.loads((tmp_path / "p.json").read_text()) == t
    with pytest.raises(ValueError, match="unknown profiling category"):
        with profiling.section("lunch"):
            pass


def test_victims_spread_over_two_devices(tmp_path):
    code = textwrap.dedent(f"""
        import numpy as np, jax
        from ntklib import data, models, train
        assert jax.local_device_count() == 2
        X, y = data.load_digits()
        X, y = X[:40].astype(np.float64), np.where(y[:40] % 2, 1.0, -1.0)
        cfgs = [train.TrainConfig(lr=1.0, steps=40, eval_every=20, seed=s) for s in range(3)]
        out = train.train_many(models.plain_mlp(16), [(X, y)] * 3, cfgs, progress=False, cache=False)
        np.savez("{tmp_path}/out.npz", *[np.asarray(l) for r in out for l in jax.tree_util.tree_leaves(r.params)])
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    X, y = data.load_digits()
    X, y = X[:40].astype(np.float64), np.where(y[:40] % 2, 1.0, -1.0)
    arch = models.plain_mlp(16)
    want = [leaf for s in range(3) for leaf in jax.tree_util.tree_leaves(
        train.train(arch, X, y, train.TrainConfig(lr=1.0, steps=40, eval_every=20, seed=s), progress=False).params)]
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-4, atol=1e-6)
    warnings.simplefilter("default")


def test_batched_victims_are_deterministic(victims):
    """Victims are dealt to workers in a fixed order, so two runs give bit-identical victims."""
    sets, cfgs = victims
    cfgs = [dataclasses.replace(c, steps=min(c.steps, 100)) for c in cfgs]
    arch = models.plain_mlp(32)
    a, b = (train.train_many(arch, sets, cfgs, progress=False, cache=False, chunk=2, workers=2) for _ in range(2))
    for ra, rb in zip(a, b, strict=True):
        assert ra.history == rb.history
        for la, lb in zip(jax.tree_util.tree_leaves(ra.params), jax.tree_util.tree_leaves(rb.params), strict=True):
            np.testing.assert_array_equal(la, lb)


def test_a_victim_does_not_depend_on_which_others_train_beside_it(victims):
    """A victim trained alone equals, bit for bit, the same victim trained beside larger ones (as
    happens when the cache already holds some of a notebook's victims): its padded set size is its
    own, never the largest of the victims that happen to train with it."""
    sets, cfgs = victims
    cfgs = [dataclasses.replace(c, steps=min(c.steps, 100)) for c in cfgs]
    arch = models.plain_mlp(32)
    together = train.train_many(arch, sets, cfgs, progress=False, cache=False)
    for i in (0, 2):
        alone = train.train_many(arch, [sets[i]], [cfgs[i]], progress=False, cache=False)[0]
        assert alone.history == together[i].history
        for la, lb in zip(jax.tree_util.tree_leaves(alone.params), jax.tree_util.tree_leaves(together[i].params),
                          strict=True):
            np.testing.assert_array_equal(la, lb)
