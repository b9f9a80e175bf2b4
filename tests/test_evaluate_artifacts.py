import dataclasses

import numpy as np
import pandas as pd
import pytest

from ntklib import artifacts, attack, data, evaluate, kernels, models, train


@pytest.fixture(scope="module")
def setup():
    task = data.make_task("digits", 7, 1, n_train_per_class=25, n_eval_per_class=8, n_test_per_class=20)
    arch = models.mlp(64)
    P = attack.BackdoorProblem.from_task(task, kernels.infinite_ntk(arch))
    return task, arch, P


def test_efficiency_ratio_logic():
    rows = []
    for b, n_asr, s_asr in [(1, 0.2, 0.0), (2, 0.95, 0.1), (5, 1.0, 0.5), (20, 1.0, 0.92)]:
        rows += [dict(method="ntba", budget=b, seed=0, net_asr=n_asr),
                 dict(method="sampling", budget=b, seed=0, net_asr=s_asr)]
    df = pd.DataFrame(rows)
    r = evaluate.efficiency_ratio(df)
    assert (r["ntba_budget"], r["sampling_budget"], r["ratio"], r["lower_bound"]) == (2, 20, 10.0, False)
    r = evaluate.efficiency_ratio(df[df.budget < 20])
    assert r["ratio"] == 2.5 and r["lower_bound"]  # sampling never reached 90%: ratio >= 5 / 2
    r = evaluate.efficiency_ratio(df[df.method == "sampling"].assign(method="ntba"), level=0.95)
    assert r["ratio"] is None and r["ntba_budget"] is None  # NTBA never reaches the level
    with pytest.raises(ValueError, match=r"level=1.01 is invalid: must be > 0 and <= 1"):
        evaluate.efficiency_ratio(df, level=1.01)


def test_sweep_table_and_transfer_residuals(setup, tmp_path):
    task, arch, P = setup
    cfg = train.TrainConfig(lr=1.0, steps=200, eval_every=50)
    df = evaluate.sweep(task, P, arch, budgets=[1, 3], seeds=[0, 1], train_config=cfg,
                        opt_steps=2, progress=False, csv_path=tmp_path / "s.csv")
    assert len(df) == 2 * 2 * 2
    for col in ["kernel_asr", "kernel_ca", "net_asr", "net_ca", "train_loss", "max_poison_residual"]:
        assert df[col].notna().all(), col
    assert pd.read_csv(tmp_path / "s.csv").shape == df.shape
    s = evaluate.summarize(df)
    assert {"net_asr_mean", "net_asr_std"} <= set(s.columns) and len(s) == 4
    # the largest poison residual is the one the trained network reports
    ntba = df[(df.method == "ntba") & (df.budget == 3)].iloc[0]
    assert 0 <= ntba.max_poison_residual < 5
    # one budget policy (ntklib.validation.check_budgets): a budget above the pool is refused, not dropped,
    # before anything trains
    m = len(task.X_cand)
    for kw in (dict(budgets=[1, 10_000]), dict(budgets=[1], sampling_budgets=[2, m + 1])):
        with pytest.raises(ValueError, match=f"pool of {m} candidates"):
            evaluate.sweep(task, P, arch, network=False, progress=False, **kw)


def test_artifacts_roundtrip_reproduces_evaluation(setup, tmp_path):
    task, arch, P = setup
    g = attack.greedy_init(P, task.X_cand, 3, progress=False)
    X_p = task.X_cand[g.indices]
    params = dict(dataset="digits", pair=[7, 1], kernel=P.kernel.spec, budget=3, seed=0)
    stem = artifacts.save_poisons(tmp_path / "poisons" / "ntba_b3", X_p, params, indices=g.indices)
    for ext in (".npz", ".json", ".png"):
        assert stem.with_suffix(ext).stat().st_size > 0
    X2, meta = artifacts.load_poisons(stem)
    np.testing.assert_array_equal(X2, X_p)
    assert meta["params"]["budget"] == 3 and meta["indices"] == g.indices
    assert meta["versions"]["jax"] == "0.4.25"
    assert evaluate.kernel_metrics(P, X2) == evaluate.kernel_metrics(P, X_p)
    with pytest.raises(FileNotFoundError):
        artifacts.load_poisons(tmp_path / "missing")


def test_sweep_with_separate_sampling_budgets_and_ratio_bound(setup):
    task, arch, P = setup
    cfg = train.TrainConfig(lr=1.0, steps=100, eval_every=50)
    df = evaluate.sweep(task, P, arch, budgets=[1], sampling_budgets=[1, 4], seeds=[0], train_config=cfg,
                        progress=False)
    assert sorted(map(tuple, df[["method", "budget"]].values.tolist())) == [
        ("ntba", 1), ("sampling", 1), ("sampling", 4)]
    # a lower bound uses the largest *sampling* budget swept
    fake = pd.DataFrame([dict(method="ntba", budget=2, net_asr=1.0), dict(method="ntba", budget=5, net_asr=1.0),
                         dict(method="sampling", budget=40, net_asr=0.5)])
    r = evaluate.efficiency_ratio(fake)
    assert r["ratio"] == 20 and r["lower_bound"]
    # ... even when NTBA swept larger budgets than sampling did
    fake = pd.concat([fake, pd.DataFrame([dict(method="ntba", budget=100, net_asr=1.0)])])
    r = evaluate.efficiency_ratio(fake, "net_asr", 0.9)
    assert r == dict(metric="net_asr", level=0.9, ntba_budget=2, sampling_budget=None, lower_bound=True, ratio=20.0)


@pytest.fixture(scope="module")
def plain():
    """A small digits task and a kernel problem from a plain MLP's empirical NTK (no neural-tangents)."""
    task = data.make_task("digits", 7, 1, n_train_per_class=10, n_eval_per_class=4, n_test_per_class=12)
    arch = models.plain_mlp(24, depth=1)
    clean = train.train(arch, task.X_d, task.y_d, train.TrainConfig(steps=30), progress=False)
    return task, arch, attack.BackdoorProblem.from_task(task, kernels.empirical_ntk(arch.apply_fn, clean.params))


def _victim_alone(task, arch, X_p, cfg, seed):
    """What evaluate should report for poisons X_p: a victim trained alone from ``seed`` on d + X_p,
    its loss, steps, residuals on the poisons and on d, clean accuracy and ASR."""
    X, y = evaluate.victim_data(task, X_p)
    r = train.train(arch, X, y, dataclasses.replace(cfg, seed=seed), progress=False)
    res = np.abs(train.residuals(arch, r.params, X, y))
    n_d = len(task.X_d)
    return dict(train_loss=r.final_loss, converged=r.converged, diverged=r.diverged, train_steps=r.steps,
                max_poison_residual=res[n_d:].max(), max_clean_residual=res[:n_d].max(),
                net_ca=np.mean(np.sign(train.predict(arch, r.params, task.X_test)) == task.y_test),
                net_asr=np.mean(train.predict(arch, r.params, task.X_test_trig) > 0))


def test_transfer_trains_one_victim_per_seed_on_d_plus_the_poisons(plain, capsys):
    """Each row: the victim trained from its seed on d + X_p (poisons labelled +1), its final loss and
    steps, the largest residual on the poisons and on d, clean accuracy on the test split and the ASR
    on the triggered source test images, all recomputed here from a victim trained alone."""
    task, arch, _ = plain
    X_p = task.X_cand[:3]
    X, y = evaluate.victim_data(task, X_p)
    np.testing.assert_array_equal(X, np.concatenate([task.X_d, X_p]))
    np.testing.assert_array_equal(y, np.r_[task.y_d, np.ones(3)])
    assert X.dtype == task.X_d.dtype and len(evaluate.victim_data(task, X_p[:0])[0]) == len(task.X_d)
    cfg = train.TrainConfig(lr=0.5, steps=40, eval_every=20, target_loss=0.0)
    rows = evaluate.transfer(task, arch, X_p.astype(np.float64), cfg, seeds=(3, 1))
    assert capsys.readouterr().err == ""  # progress=False: no bar
    assert [r["seed"] for r in rows] == [3, 1]
    for row in rows:
        want = dict(_victim_alone(task, arch, X_p, cfg, row["seed"]), converged=False, diverged=False, train_steps=40)
        assert set(row) == {"seed", *want}
        for k, v in want.items():
            assert row[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (row["seed"], k)
    assert rows[0]["net_ca"] != rows[1]["net_ca"] or rows[0]["train_loss"] != rows[1]["train_loss"]
    clean = evaluate.transfer(task, arch, X_p[:0], cfg, seeds=(3,), progress=True)[0]  # no poisons: no residual
    assert "victims" in capsys.readouterr().err
    assert clean["max_poison_residual"] == 0.0 and np.isfinite(clean["max_clean_residual"])
    with pytest.warns(UserWarning, match="diverged"):
        bad = evaluate.transfer(task, arch, X_p, train.TrainConfig(lr=1e4, steps=20, eval_every=10), seeds=(0,))[0]
    assert set(bad) == set(rows[0]) and bad["diverged"] and not bad["converged"] and bad["train_steps"] == 20
    assert all(np.isnan(bad[k]) for k in ("max_poison_residual", "max_clean_residual", "net_ca", "net_asr"))


def test_sweep_rows_are_the_victims_of_the_poisons_they_name(plain, tmp_path):
    """Every row of a sweep recomputed from what it names: NTBA's poisons of that budget (optimized
    opt_steps steps) or the sampling subset of that seed, the kernel model's metrics of those poisons,
    and a victim trained alone from that seed with the sweep's config; the CSV is the table."""
    task, arch, P = plain
    m = len(task.X_cand)
    cfg = train.TrainConfig(lr=0.5, steps=30, eval_every=10, target_loss=0.0)
    csv = tmp_path / "new" / "dir" / "sweep.csv"
    df = evaluate.sweep(task, P, arch, budgets=[1, 2], sampling_budgets=[3], seeds=[0, 2], train_config=cfg,
                        opt_steps=1, progress=False, csv_path=csv)
    pd.testing.assert_frame_equal(pd.read_csv(csv), df, check_dtype=False)
    assert list(zip(df.method, df.budget, df.seed, strict=True)) == [
        ("ntba", 1, 0), ("ntba", 1, 2), ("ntba", 2, 0), ("ntba", 2, 2), ("sampling", 3, 0), ("sampling", 3, 2)]
    ntba = evaluate.ntba_poisons(P, task.X_cand, [1, 2], opt_steps=1, progress=False)
    assert not np.array_equal(attack.sampling_baseline(m, 3, seed=0), attack.sampling_baseline(m, 3, seed=2))
    for row in df.to_dict("records"):
        X_p = (ntba[row["budget"]]["X_p"] if row["method"] == "ntba"
               else task.X_cand[attack.sampling_baseline(m, row["budget"], seed=row["seed"])])
        k = P.loss(X_p)
        victim = _victim_alone(task, arch, X_p, cfg, row["seed"])
        want = dict(kernel_loss=k.loss, kernel_ca=k.clean_acc, kernel_asr=k.asr, train_steps=30, diverged=False,
                    **{key: victim[key] for key in ("train_loss", "max_poison_residual", "max_clean_residual",
                                                    "net_asr")})
        for key, v in want.items():
            assert row[key] == pytest.approx(v, rel=1e-4, abs=1e-6), (row["method"], row["budget"], row["seed"], key)
        assert 0 < row["seconds"] < 600
    only = evaluate.sweep(task, P, arch, budgets=[1], seeds=[0], methods="sampling", network=False, progress=False)
    assert list(only.method) == ["sampling"] and "net_asr" not in only


def test_sweep_shows_its_bars_and_reuses_given_poisons_only_for_their_budgets(plain, capsys):
    task, arch, P = plain
    cfg = train.TrainConfig(lr=0.5, steps=10, eval_every=10)
    evaluate.sweep(task, P, arch, budgets=[1], seeds=[0], train_config=cfg, progress=False)
    assert capsys.readouterr().err == ""
    evaluate.sweep(task, P, arch, budgets=[1], seeds=[0], train_config=cfg, progress=True)
    bars = capsys.readouterr().err
    assert "greedy" in bars and "victims (2)" in bars  # NTBA's design, then one bar for the two victims
    given = evaluate.ntba_poisons(P, task.X_cand, [1], progress=False)
    with pytest.raises(ValueError, match=r"ntba holds no poisons for budgets \[2\]"):
        evaluate.sweep(task, P, arch, budgets=[1, 2], seeds=[0], ntba=given, network=False, progress=False)
    df = evaluate.sweep(task, P, arch, budgets=[1], seeds=[0], ntba=given, methods="ntba", network=False,
                        progress=False)
    assert capsys.readouterr().err == "" and df.kernel_loss[0] == P.loss(given[1]["X_p"]).loss


def test_ntba_poisons_are_the_greedy_picks_then_optimized_as_asked(plain, capsys, monkeypatch):
    task, arch, P = plain
    g = attack.greedy_init(P, task.X_cand, 3, progress=False)
    g.asr, g.losses = [0.25, 0.5, 0.75], [3.0, 2.0, 1.0]  # distinct per round: each budget reads its own
    seen = []
    monkeypatch.setattr(evaluate._attack, "greedy_init", lambda *a, **k: seen.append(k) or g)
    out = evaluate.ntba_poisons(P, task.X_cand, [1, 3], progress=False)
    assert capsys.readouterr().err == ""
    for b in (1, 3):
        e = out[b]
        assert list(e["indices"]) == list(g.indices[:b]) and "history" not in e
        assert e["greedy_loss"] == g.losses[b - 1] and e["greedy_asr"] == g.asr[b - 1]
        np.testing.assert_array_equal(e["X_p"], task.X_cand[g.indices[:b]])
    X32 = task.X_cand.astype(np.float32)
    evaluate.ntba_poisons(P, X32, [2], opt_steps=1, progress=False)
    assert capsys.readouterr().err == ""
    opt = evaluate.ntba_poisons(P, X32, [2], opt_steps=1, opt_method="adam", lr=0.05, progress=True)[2]
    assert "optimize (adam)" in capsys.readouterr().err
    assert [k["progress"] for k in seen] == [False, False, True]  # the greedy search's bar too
    want = attack.optimize_poisons(P, X32[g.indices[:2]], method="adam", steps=1, lr=0.05, progress=False)
    assert opt["X_p"].dtype == np.float32
    np.testing.assert_array_equal(opt["history"]["loss"], want.history["loss"])
    np.testing.assert_allclose(opt["X_p"], want.X_p, atol=1e-6)
    assert not np.allclose(opt["X_p"], X32[g.indices[:2]])  # one step moved them


def test_kernel_metrics_are_remembered_by_the_poisons_content(plain, monkeypatch):
    task, arch, P = plain
    P.__dict__.pop("_kernel_metrics", None)
    calls, real = [], P.loss
    monkeypatch.setattr(P, "loss", lambda X_p: calls.append(1) or real(X_p))
    a, b = task.X_cand[:2], task.X_cand[2:4]
    for X_p in (a, b):
        k = real(X_p)
        assert evaluate.kernel_metrics(P, X_p) == dict(kernel_loss=k.loss, kernel_ca=k.clean_acc, kernel_asr=k.asr)
    got = evaluate.kernel_metrics(P, a.astype(np.float32).astype(np.float64))  # the same content
    assert len(calls) == 2 and got == evaluate.kernel_metrics(P, a)
    got["kernel_loss"] = -1.0  # a copy: the memo keeps its own
    assert evaluate.kernel_metrics(P, a)["kernel_loss"] != -1.0


def test_summarize_is_the_mean_and_population_std_of_numeric_metrics():
    df = pd.DataFrame(dict(method=["ntba"] * 3 + ["sampling"] * 2, budget=[1, 1, 1, 4, 4], seed=[0, 1, 2, 0, 1],
                           net_asr=[0.2, 0.5, 1.1, 0.0, 1.0], note=list("abcde"), converged=[1, 0, 1, 1, 1]))
    s = evaluate.summarize(df)
    assert list(s.columns) == ["method", "budget", "net_asr_mean", "converged_mean", "net_asr_std", "converged_std"]
    assert s.loc[0, "net_asr_mean"] == pytest.approx(0.6) and s.loc[0, "net_asr_std"] == pytest.approx(
        np.std([0.2, 0.5, 1.1]))
    assert s.loc[1, "net_asr_std"] == pytest.approx(0.5)  # ddof=0: the seeds' spread, not an estimate
