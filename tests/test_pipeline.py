"""pipeline: poisons designed once per content (cache), the clean victim reused, parameter checks."""
import numpy as np
import pytest

from ntklib import attack, evaluate, pipeline


def test_design_poisons_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    exp = pipeline.prepare("digits", 7, 1, "periodic", "mlp", 64, kernel="infinite", smoke=True, progress=False)
    first = pipeline.design_poisons(exp, [1, 2], opt_steps=2, progress=False)
    assert len(list((tmp_path / "poisons").glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("cached poisons were designed again")

    monkeypatch.setattr(evaluate, "ntba_poisons", boom)
    again = pipeline.design_poisons(exp, [2, 1], opt_steps=2, progress=False)
    for b in (1, 2):
        np.testing.assert_array_equal(first[b]["X_p"], again[b]["X_p"])
        np.testing.assert_array_equal(first[b]["indices"], again[b]["indices"])
        assert first[b]["greedy_loss"] == again[b]["greedy_loss"]
        np.testing.assert_array_equal(first[b]["history"]["loss"], again[b]["history"]["loss"])
    with pytest.raises(AssertionError, match="designed again"):  # other settings: another key
        pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)


def test_interrupted_design_resumes_from_its_checkpoints(tmp_path, monkeypatch):
    """design_poisons checkpoints each budget's optimization under the cache: a design cut off after
    the first budget resumes there (that budget is not optimized again) and gives the poisons of an
    uninterrupted design; the checkpoints are removed once the design is cached."""
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    exp = pipeline.prepare("digits", 7, 1, "periodic", "plain_mlp", 32, kernel="empirical_init", smoke=True,
                           progress=False)
    full = evaluate.ntba_poisons(exp.problem, exp.task.X_cand, [1, 2], opt_steps=3, progress=False)
    real, calls = attack.optimize_poisons, []

    def cut_off(problem, X_p, **kw):
        calls.append(len(X_p))
        if len(X_p) == 2 and len(calls) == 2:
            raise KeyboardInterrupt  # the time limit strikes during budget 2
        return real(problem, X_p, **kw)

    monkeypatch.setattr(attack, "optimize_poisons", cut_off)
    with pytest.raises(KeyboardInterrupt):
        pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    ckpt = list((tmp_path / "poisons").glob("*.ckpt/budget_1.npz"))
    assert len(ckpt) == 1
    real_eval, grads = exp.problem.evaluate, []

    def counting(X_p, grad=False):
        grads.extend([len(X_p)] if grad else [])
        return real_eval(X_p, grad)

    monkeypatch.setattr(exp.problem, "evaluate", counting)
    again = pipeline.design_poisons(exp, [1, 2], opt_steps=3, progress=False)
    assert 1 not in grads and 2 in grads  # budget 1 came back from its checkpoint, budget 2 was optimized
    for b in (1, 2):
        np.testing.assert_array_equal(again[b]["X_p"], full[b]["X_p"])
    assert not list((tmp_path / "poisons").glob("*.ckpt"))


def test_clean_victim_is_trained_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    a = pipeline.prepare("digits", 7, 1, "periodic", "mlp", 32, kernel="empirical", smoke=True, progress=False)
    b = pipeline.prepare("digits", 7, 1, "periodic", "mlp", 32, kernel="empirical", smoke=True, progress=False)
    assert a.kernel_key == b.kernel_key and b.clean.seconds == 0.0  # served from the cache
    np.testing.assert_array_equal(a.kernel(a.task.X_t[:3], a.task.X_d[:4]), b.kernel(b.task.X_t[:3], b.task.X_d[:4]))
    c = pipeline.prepare("digits", 7, 1, "periodic", "mlp", 32, kernel="empirical_init", smoke=True, progress=False)
    assert c.kernel_key != a.kernel_key


def test_empirical_ensemble_kernel(tmp_path, monkeypatch):
    """kernel="empirical_ensemble": clean plain-JAX CNNs of seeds ENSEMBLE_SEED + i (none a victim's
    seed), one empirical NTK each; the member whose seed the paper's kernel would use equals that kernel
    when trained the same way; the pipeline designs poisons against the mean loss."""
    monkeypatch.setenv("NTKLIB_CACHE_DIR", str(tmp_path))
    kw = dict(smoke=True, progress=False)
    ens = pipeline.prepare("digits", 7, 1, "periodic", "plain_cnn", 4, depth=1, kernel="empirical_ensemble",
                           ensemble_size=2, **kw)
    assert len(ens.problem) == 2 and ens.spec["ensemble_seeds"] == [pipeline.ENSEMBLE_SEED, pipeline.ENSEMBLE_SEED + 1]
    x = ens.task.X_t[:4]
    k0, k1 = (m.kernel(x) for m in ens.problem.members)
    assert not np.allclose(k0, k1, rtol=1e-2)  # different networks, different kernels
    single = pipeline.prepare("digits", 7, 1, "periodic", "plain_cnn", 4, depth=1, kernel="empirical",
                              train_config=pipeline.victim_config("digits", steps=200, seed=pipeline.ENSEMBLE_SEED),
                              **kw)
    np.testing.assert_allclose(single.kernel(x), k0, rtol=1e-5)
    r = pipeline.run(experiment=ens, budgets=[1, 2], seeds=[0], opt_steps=2, **kw)
    assert set(r.table.method) == {"ntba", "sampling"} and r.poisons[2]["X_p"].shape[0] == 2
    with pytest.raises(ValueError, match="ensemble_size=0 is invalid"):
        pipeline.prepare(kernel="empirical_ensemble", ensemble_size=0, **kw)


def test_check_params_names_the_bad_value():
    with pytest.raises(ValueError, match="kernel='magic' is invalid"):
        pipeline.check_params(kernel="magic")
    with pytest.raises(ValueError, match=r"budgets\[1\]=0 is invalid: must be >= 1"):
        pipeline.check_params(budgets=[1, 0])


def test_readout_option_builds_the_asked_network():
    """readout: CNNs flatten by default or pool on request (a translation-invariant victim, as the
    paper's WRN), with a spec that tells them apart (cache keys); WRNs only pool; MLPs refuse it."""
    flat = pipeline.build_architecture("plain_cnn", 4, 1)
    pool = pipeline.build_architecture("plain_cnn", 4, 1, "pool")
    assert flat.spec["readout"] == "flatten" and not flat.pooled
    assert pool.spec["readout"] == "pool" and pool.pooled and pool.spec != flat.spec
    x = np.random.default_rng(0).uniform(size=(3, 6, 6, 1)).astype(np.float32)
    p = pool.init(0, x.shape)
    # a pooled readout sees the mean over positions: its last dense layer has `width` inputs, not H W width
    assert p[-1][0].shape == (4, 1) and flat.init(0, x.shape)[-1][0].shape == (6 * 6 * 4, 1)
    assert pool.apply_fn(p, x).shape == (3, 1)
    assert pipeline.build_architecture("plain_wide_resnet", 16, 10, "pool").spec == \
        pipeline.build_architecture("plain_wide_resnet", 16, 10).spec
    with pytest.raises(ValueError, match="readout='flatten' is invalid for architecture='plain_wide_resnet'"):
        pipeline.build_architecture("plain_wide_resnet", 16, 10, "flatten")
    with pytest.raises(ValueError, match="an MLP has no readout choice"):
        pipeline.build_architecture("mlp", 8, 1, "pool")
    with pytest.raises(ValueError, match="readout='max' is invalid"):
        pipeline.check_params(readout="max")
    pipeline.check_params(readout=None)



def test_run_refuses_a_budget_above_the_pool_before_designing_poisons(monkeypatch):
    """One budget policy (validation.check_budgets): run refuses, as the design steps do; it used to
    drop such budgets silently."""
    exp = pipeline.prepare("digits", width=16, depth=1, kernel="infinite", progress=False, smoke=True)
    m = len(exp.task.X_cand)
    monkeypatch.setattr(pipeline, "design_poisons", lambda *a, **k: pytest.fail("designed poisons"))
    for kw in (dict(budgets=[1, m + 1]), dict(budgets=[1], sampling_budgets=[m + 5])):
        with pytest.raises(ValueError, match=f"pool of {m} candidates"):
            pipeline.run(experiment=exp, progress=False, **kw)
