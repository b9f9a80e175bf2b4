"""The studies of notebooks 06-09 (the experiments layer), value by value: each against an
independent computation of the same numbers, so that a misaligned truth mask, a wrong victim or
a swapped column fails."""
import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ntklib import defense_study, defenses, kernels, pipeline, plotting, reconstruction, train

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def small():
    """A small digits experiment, two poison settings (three sets) and a distinct victim per set
    (a clean victim trained with another seed each), so that reading the wrong victim shows."""
    exp = pipeline.prepare("digits", width=32, depth=1, progress=False, smoke=True)
    cand = exp.task.X_cand
    sets = [dict(attack="sampling", budget=4, seed=0, X_p=cand[4:8]),
            dict(attack="ntba", budget=3, seed=0, X_p=cand[:3]),
            dict(attack="ntba", budget=3, seed=1, X_p=cand[:3])]
    cfg = exp.train_config
    victims = [r.params for r in train.train_many(
        exp.arch, [(exp.task.X_d, exp.task.y_d)] * 3,
        [type(cfg)(**{**cfg.__dict__, "seed": s, "steps": 30}) for s in (5, 6, 7)], progress=False)]
    return exp, sets, victims


def _poisoned(exp, X_p):
    X = np.concatenate([exp.task.X_d, X_p])
    y = np.concatenate([exp.task.y_d, np.ones(len(X_p))])
    return X, y, np.r_[np.zeros(len(exp.task.X_d), bool), np.ones(len(X_p), bool)]


def test_settings_are_labelled_and_ordered_ntba_first_then_by_budget():
    sets = [dict(attack="sampling", budget=10), dict(attack="sampling", budget=3), dict(attack="ntba", budget=3),
            dict(attack="sampling", budget=3)]
    assert defense_study.settings(sets) == ["ntba 3", "sampling 3", "sampling 10"]
    assert defense_study.setting("ntba", np.int64(3)) == "ntba 3"


def test_direction_study_scores_the_first_set_of_each_setting_on_its_own_victim(small):
    exp, sets, victims = small
    table = defense_study.direction_study(exp, sets, victims, n_dir=3)
    assert list(table.setting.unique()) == ["ntba 3", "sampling 4"]
    assert table.direction.tolist() == [1, 2, 3] * 2
    for name, j in (("ntba 3", 1), ("sampling 4", 0)):
        X, y, truth = _poisoned(exp, sets[j]["X_p"])
        rows = np.flatnonzero(y == 1)
        R = np.asarray(exp.arch.features(victims[j], X[rows]), np.float64)
        Rc = R - R.mean(0)
        _, S, Vt = np.linalg.svd(Rc, full_matrices=False)
        got = table[table.setting == name]
        for k in range(3):
            np.testing.assert_allclose(got.auc.iloc[k], roc_auc_score(truth[rows], (Rc @ Vt[k]) ** 2), atol=1e-9)
        np.testing.assert_allclose(got.variance_share, S[:3] ** 2 / (S ** 2).sum(), rtol=1e-5)


def test_stability_study_uses_the_first_ntba_victims_kernel(small):
    exp, sets, victims = small
    table = defense_study.stability_study(exp, sets, victims, n_subsets=40)
    assert table.n_subsets.tolist() == [10, 20, 40]
    X, y, _ = _poisoned(exp, sets[1]["X_p"])
    K = np.asarray(kernels.empirical_ntk(exp.arch.apply_fn, victims[1], dtype="float64")(X))
    want = defenses.datamodel_stability(K, y, n_subsets=20)
    np.testing.assert_allclose(table.set_index("n_subsets").loc[20, ["r", "r_rowsum"]].to_numpy(float),
                               [want["r"], want["r_rowsum"]], rtol=1e-9)
    with pytest.raises(ValueError, match="one poisoned victim"):
        defense_study.stability_study(exp, sets, victims[:2])


def test_poison_recovery_ranks_the_poisons_among_the_training_images(monkeypatch):
    """With the attack's per-image SSIM given (the poisons 2nd and 5th best of 9), the row's
    statistics are those of the poisons' positions, and each run sees d plus that set's poisons."""
    exp = pipeline.prepare("digits", architecture="plain_mlp", width=16, depth=1, progress=False, smoke=True,
                           task_kw=dict(n_train_per_class=3, n_eval_per_class=2))
    n_d = len(exp.task.X_d)
    assert n_d == 6
    sets = [dict(attack="ntba", budget=3, seed=0, X_p=exp.task.X_cand[:3]),
            dict(attack="sampling", budget=3, seed=1, X_p=exp.task.X_cand[:3][::-1])]
    ssim = np.array([0.9, 0.1, 0.2, 0.3, 0.6, 0.4, 0.8, 0.0, 0.5])  # poisons (last 3): 0.8, 0.0, 0.5
    seen = []

    def fake_run(X, y, width, depth, config=None, steps=0, lr=0.0, beta=None, seed=0, init="flat"):
        seen.append((X.copy(), y.copy(), width, depth, seed, config))
        rec = X[::-1] + 1.0  # reconstruction j of image i is rec_index[i]
        res = type("R", (), {"X": rec})()
        return dict(match=dict(ssim=ssim, rec_index=np.arange(len(X))[::-1]), result=res)

    monkeypatch.setattr(reconstruction, "run", fake_run)
    table, examples = defense_study.poison_recovery(exp, sets, steps=5)
    seen.sort(key=lambda call: call[4])  # the sets run on threads, in any order: match each call by its seed
    for (X, y, width, depth, seed, config), s in zip(seen, sets, strict=True):
        np.testing.assert_array_equal(X, np.concatenate([exp.task.X_d, s["X_p"]]))
        assert y.tolist() == exp.task.y_d.tolist() + [1.0] * 3
        assert (width, depth, seed, config) == (16, 1, s["seed"], exp.train_config)
    row = table.iloc[0]
    assert row.n == 9 and row.setting == "ntba 3"
    np.testing.assert_allclose([row.ssim_poisons, row.ssim_clean], [1.3 / 3, 2.5 / 6])
    # ranks by SSIM (1 = best): 0.9 -> 1, 0.8 -> 2, 0.6 -> 3, 0.5 -> 4, ...; the poisons: 2, 9, 4
    assert row.poisons_in_top == 1 and row.mean_rank_poisons == pytest.approx(15 / 3)
    P, R, sp = examples["ntba 3"]
    np.testing.assert_array_equal(P, sets[0]["X_p"])
    X = np.concatenate([exp.task.X_d, sets[0]["X_p"]])
    np.testing.assert_array_equal(R, (X[::-1] + 1.0)[np.arange(9)[::-1][6:]])
    np.testing.assert_allclose(sp, [0.8, 0.0, 0.5])
    assert set(examples) == {"ntba 3", "sampling 3"}
    with pytest.raises(ValueError, match="plain_mlp"):
        defense_study.poison_recovery(pipeline.prepare("digits", width=16, depth=1, progress=False, smoke=True), sets)


def test_grouped_bars_draw_the_mean_and_spread_of_each_pair():
    import matplotlib.pyplot as plt

    t = pd.DataFrame(dict(det=["a", "a", "b", "b", "a"], grp=["x", "x", "x", "y", "y"], v=[1.0, 3.0, 5.0, 7.0, 2.0]))
    fig, ax = plt.subplots()
    mean = plotting.grouped_bars(ax, t, "det", "grp", "v", categories=["b", "a"], baselines={"y": 0.5})
    assert mean.to_dict() == {"x": {"b": 5.0, "a": 2.0}, "y": {"b": 7.0, "a": 2.0}}
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [5.0, 2.0, 7.0, 2.0])  # group x (b, a), then group y (b, a)
    xs = [p.get_x() + p.get_width() / 2 for p in ax.patches]
    np.testing.assert_allclose(xs, [-0.2, 0.8, 0.2, 1.2])
    assert [t_.get_text() for t_ in ax.get_xticklabels()] == ["b", "a"]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]  # the BarContainers, one per group
    np.testing.assert_allclose(bars[0].errorbar.lines[2][0].get_segments()[1][:, 1], [2 - np.sqrt(2), 2 + np.sqrt(2)])
    np.testing.assert_allclose(np.ptp(bars[1].errorbar.lines[2][0].get_segments()[1][:, 1]), 0.0)  # one row: no spread
    assert any(abs(line.get_ydata()[0] - 0.5) < 1e-12 for line in ax.lines)
    plt.close(fig)


def test_save_results_writes_jsonable_numbers(tmp_path):
    import json

    path = plotting.save_results(dict(a=np.float32(0.5), b=np.arange(2), c=float("nan")), "nb", tmp_path)
    assert path == tmp_path / "nb" / "results.json"
    assert json.loads(path.read_text()) == dict(a=0.5, b=[0, 1], c=None)
    with pytest.raises(TypeError, match="must be a dict"):
        plotting.save_results([1], "nb", tmp_path)


def test_runtime_table_averages_each_defense_and_whole_ibau_runs():
    det = pd.DataFrame(dict(detector=["none", "b", "a", "a"], seconds=[np.nan, 4.0, 1.0, 3.0]))
    ib = pd.DataFrame(dict(variant=["I-BAU"] * 6 + ["fine-tuning"] * 2, setting=["s"] * 8,
                           seed=[0, 0, 0, 1, 1, 1, 0, 0],
                           n_clean=[5] * 8, round=[0, 1, 2, 0, 1, 2, 0, 1],
                           seconds=[np.nan, 10.0, 10.0, np.nan, 30.0, 30.0, np.nan, 99.0]))
    t = defense_study.runtime(det, ib, detectors=["a", "b", "c"])
    assert t.defense.tolist() == ["a", "b", "I-BAU (all rounds)"]
    np.testing.assert_allclose(t[["mean", "max"]].to_numpy(), [[2.0, 3.0], [4.0, 4.0], [20.0, 30.0]])


def test_mean_sd_lines_plot_one_line_per_group_in_order():
    import matplotlib.pyplot as plt

    t = pd.DataFrame(dict(x=[2, 1, 1, 2, 1], g=["u", "u", "u", "v", "v"], v=[5.0, 1.0, 3.0, 7.0, 4.0]))
    fig, ax = plt.subplots()
    out = plotting.mean_sd_lines(ax, t, "x", "v", "g", groups=["v", "u"])
    assert list(out) == ["v", "u"] and out["u"].to_dict() == {1: 2.0, 2: 5.0}
    lines = [c.lines[0] for c in ax.containers]
    np.testing.assert_allclose(np.asarray(lines[1].get_ydata(), float), [2.0, 5.0])
    np.testing.assert_allclose(np.asarray(lines[0].get_xdata(), float), [1, 2])
    assert ax.get_legend_handles_labels()[1] == ["v", "u"]
    plt.close(fig)


# ---------------------------------------------------------------------------- notebook 06
@pytest.fixture(scope="module")
def comparison():
    cfg = pipeline.victim_config("digits", steps=60)
    return pipeline.compare_kernels(["empirical_init", "infinite"], "infinite", [1, 2, 4], budgets=[1, 2], seeds=[0, 1],
                                    width=32, depth=1, opt_steps=0, train_config=cfg, smoke=True)


def test_compare_kernels_tables_are_their_runs_and_one_sampling_sweep(comparison):
    from ntklib import evaluate

    c = comparison
    assert list(c.runs) == ["empirical_init", "infinite"]
    for k, r in c.runs.items():
        assert set(r.table.method) == {"ntba"} and r.experiment.spec["kernel"] == k
        pd.testing.assert_frame_equal(c.table[c.table.kernel == k].drop(columns="kernel").reset_index(drop=True),
                                      r.table.reset_index(drop=True))
    assert set(c.sampling.method) == {"sampling"} and sorted(set(c.sampling.budget)) == [1, 2, 4]
    ref = c.runs["infinite"].experiment  # the baseline's kernel metrics are the reference kernel's
    again = evaluate.sweep(ref.task, ref.problem, ref.arch, budgets=[2], seeds=[1], methods=("sampling",),
                           network=False, progress=False)
    row = c.sampling[(c.sampling.budget == 2) & (c.sampling.seed == 1)].iloc[0]
    assert row.kernel_asr == again.kernel_asr.iloc[0] and row.kernel_loss == pytest.approx(again.kernel_loss.iloc[0])
    want = c.table.groupby(["kernel", "method", "budget"]).net_asr.mean()
    got = c.summary.set_index(["kernel", "method", "budget"]).net_asr
    pd.testing.assert_series_equal(got, want)
    base = c.with_baseline("empirical_init")
    assert len(base) == len(c.runs["empirical_init"].table) + len(c.sampling)
    assert c.ratios(0.5)["infinite"] == evaluate.efficiency_ratio(c.with_baseline("infinite"), "net_asr", 0.5)
    ev = c.evidence()
    ntba = c.summary[(c.summary.kernel == "infinite") & (c.summary.method == "ntba")]
    assert ev.loc["infinite", "max |kernel ASR - net ASR|"] == pytest.approx(
        (ntba.kernel_asr - ntba.net_asr).abs().max())
    assert ev.loc["infinite", "net ASR, 1 poison(s)"] == ntba[ntba.budget == 1].net_asr.iloc[0]
    with pytest.raises(ValueError, match="reference"):
        pipeline.compare_kernels(["infinite"], "empirical", [1])


def test_victim_variants_train_each_variant_with_its_own_settings(comparison, monkeypatch):
    """Each variant's sweep gets the reference kernel's poisons, the comparison's seeds, a victim of
    its width and a config with its changes (batch_size included) on top of the comparison's."""
    calls = []

    def fake_sweep(task, problem, arch, budgets, seeds, train_config, ntba, sampling_budgets, progress):
        calls.append(dict(width=arch.spec["width"], cfg=train_config, seeds=seeds, budgets=budgets, ntba=ntba,
                          sampling_budgets=sampling_budgets))
        rows = [dict(method=m, budget=b, seed=s, net_asr=1.0 if m == "ntba" else b / 4, net_ca=1.0, train_loss=0.0,
                     max_poison_residual=0.0) for m, bs in (("ntba", budgets), ("sampling", sampling_budgets))
                for b in bs for s in seeds]
        return pd.DataFrame(rows)

    monkeypatch.setattr(pipeline._evaluate, "sweep", fake_sweep)
    variants = [dict(label="wide, small batches", width=64, batch_size=8), dict(label="slow", victim_lr=0.1,
                                                                                  train_steps=7)]
    per_budget, ratios = pipeline.victim_variants(comparison, "infinite", variants, [1], [2, 4], "mlp", 1,
                                                  asr_level=0.9)
    base = comparison.runs["infinite"].experiment.train_config
    assert [c["width"] for c in calls] == [64, 32]
    assert (calls[0]["cfg"].batch_size, calls[0]["cfg"].lr, calls[0]["cfg"].steps) == (8, base.lr, base.steps)
    assert (calls[1]["cfg"].batch_size, calls[1]["cfg"].lr, calls[1]["cfg"].steps) == (None, 0.1, 7)
    assert all(c["seeds"] == [0, 1] and c["ntba"] is comparison.runs["infinite"].poisons for c in calls)
    assert ratios.variant.tolist() == ["default", "wide, small batches", "slow"]
    assert ratios.ratio.tolist()[1:] == [4.0, 4.0]  # NTBA 1 poison, sampling 4 reaches 0.9
    want = comparison.with_baseline("infinite").groupby(["method", "budget"]).net_asr.mean()
    got = per_budget[per_budget.variant == "default"].set_index(["method", "budget"]).net_asr
    pd.testing.assert_series_equal(got, want, check_names=False)
    with pytest.raises(ValueError, match="not among the comparison"):
        pipeline.victim_variants(comparison, "infinite", variants, [5], [2])
    # some of the seeds: each variant is trained on them, the default row read on the same rows
    calls.clear()
    per_budget, _ = pipeline.victim_variants(comparison, "infinite", variants[:1], [1], [2, 4], "mlp", 1,
                                             asr_level=0.9, seeds=[1])
    assert [c["seeds"] for c in calls] == [[1]]
    table = comparison.with_baseline("infinite")
    want = table[table.seed == 1].groupby(["method", "budget"]).net_asr.mean()
    got = per_budget[per_budget.variant == "default"].set_index(["method", "budget"]).net_asr
    pd.testing.assert_series_equal(got, want, check_names=False)
    assert not want.equals(table.groupby(["method", "budget"]).net_asr.mean())  # seed 1 alone reads otherwise
    with pytest.raises(ValueError, match=r"seeds \[7\] are not among the comparison's seeds \[0, 1\]"):
        pipeline.victim_variants(comparison, "infinite", variants, [1], [2], seeds=[1, 7])


def test_ratio_curve_reads_the_ratio_at_each_level():
    from ntklib import evaluate

    t = pd.DataFrame(dict(method=["ntba"] * 2 + ["sampling"] * 3, budget=[1, 2, 1, 5, 10],
                          net_asr=[0.5, 0.95, 0.1, 0.6, 0.92]))
    rows = evaluate.ratio_curve(t, [0.4, 0.9, 0.95])
    assert [(r["level"], r["ratio"], r["lower_bound"]) for r in rows] == [(0.4, 5.0, False), (0.9, 5.0, False),
                                                                         (0.95, 5.0, True)]


def test_ratio_curves_mark_lower_bounds_open_and_leave_out_missing_levels():
    import matplotlib.pyplot as plt

    curves = {"empirical": [dict(level=0.5, ratio=2.0, lower_bound=False), dict(level=0.9, ratio=4.0, lower_bound=True),
                            dict(level=0.95, ratio=None, lower_bound=False)]}
    fig, ax = plt.subplots()
    plotting.ratio_curves(ax, curves, level=0.9)
    pts = ax.collections[0]
    np.testing.assert_allclose(pts.get_offsets(), [[0.5, 2.0], [0.9, 4.0]])
    faces = pts.get_facecolors()
    assert tuple(faces[1][:3]) == (1.0, 1.0, 1.0) and tuple(faces[0][:3]) != (1.0, 1.0, 1.0)
    plt.close(fig)
