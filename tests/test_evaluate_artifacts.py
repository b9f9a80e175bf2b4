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
