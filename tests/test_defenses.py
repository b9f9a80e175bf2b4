"""Defenses: each score against an independent computation, every detector on blatant poisons,
I-BAU's hypergradient against the exact implicit gradient, and I-BAU on a trained victim."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

from ntklib import attack, data, defense_study, defenses, evaluate, models, pipeline, train, unlearning


def blatant(n_clean=120, n_poison=24, dim=20, shift=12.0, seed=0):
    """Target-class representations: Gaussian clean points and poisons far along one direction."""
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((n_clean, dim)) * np.linspace(2.0, 0.5, dim)
    poison = rng.standard_normal((n_poison, dim)) * 0.5
    poison[:, 3] += shift
    R = np.vstack([clean, poison])
    return R, np.r_[np.zeros(n_clean, bool), np.ones(n_poison, bool)]


# ---------------------------------------------------------------------------- spectral signatures
def test_kernel_spectral_score_equals_explicit_feature_svd():
    R, _ = blatant()
    np.testing.assert_allclose(defenses.kernel_spectral_scores(R @ R.T), defenses.spectral_signature_scores(R),
                               rtol=1e-8, atol=1e-10)


def test_spectral_scores_are_centered_and_brute_force():
    R, _ = blatant()
    s = defenses.spectral_signature_scores(R)
    Rc = R - R.mean(0)
    v = np.linalg.eigh(Rc.T @ Rc)[1][:, -1]  # top eigenvector of the covariance: an independent route
    np.testing.assert_allclose(s, (Rc @ v) ** 2, rtol=1e-8)
    # a constant offset of every representation changes nothing (uncentered scores would follow it)
    np.testing.assert_allclose(defenses.spectral_signature_scores(R + 50.0), s, rtol=1e-6)
    np.testing.assert_allclose(defenses.kernel_spectral_scores((R + 50.0) @ (R + 50.0).T), s, rtol=1e-6)


def test_direction_scores_start_with_the_signature_and_find_a_weak_direction():
    R, truth = blatant(shift=8.0)
    R[:, 0] *= 6.0  # a clean direction stronger than the poisons'
    S, share = defenses.spectral_direction_scores(R, 5)
    np.testing.assert_allclose(S[:, 0], defenses.spectral_signature_scores(R), rtol=1e-10)
    assert np.all(np.diff(share) <= 0) and share.sum() <= 1
    aucs = [defenses.detection_metrics(S[:, j], truth)["auc"] for j in range(5)]
    assert aucs[0] < 0.8 and max(aucs[1:]) > 0.95, aucs


@pytest.mark.parametrize("detector", ["spectral", "kernel_spectral", "clustering", "spectre"])
def test_every_detector_finds_blatant_poisons(detector):
    R, truth = blatant()
    n_p = int(truth.sum())
    if detector == "spectral":
        s = defenses.spectral_signature_scores(R)
    elif detector == "kernel_spectral":
        s = defenses.kernel_spectral_scores(R @ R.T)
    elif detector == "clustering":
        c = defenses.activation_clustering(R)
        s = c.scores
        assert c.poisoned and (c.flagged == truth).mean() > 0.95
    else:
        res = defenses.spectre(R, n_p)
        s = res.scores
        assert defenses.detection_metrics(s, truth, res.removed)["recall"] >= 0.9
    assert defenses.detection_metrics(s, truth)["auc"] >= 0.95


def test_scores_on_the_wrong_class_find_nothing():
    """The poisons sit in the target class; the source class's rows hold none of them."""
    R, truth = blatant()
    y = np.r_[np.ones(len(R)), -np.ones(60)]
    R_all = np.vstack([R, np.random.default_rng(1).standard_normal((60, R.shape[1]))])
    rows = defenses.class_rows(y, 1.0)
    assert rows.tolist() == list(range(len(R)))
    s = defenses.spectral_signature_scores(R_all[rows])
    assert defenses.detection_metrics(s, truth)["auc"] >= 0.95
    wrong = defenses.class_rows(y, -1.0)
    with pytest.raises(ValueError, match="label"):
        defenses.class_rows(y, 2.0)
    assert len(wrong) == 60


def test_removal_rule():
    assert defenses.removal_count(10, 100) == 15
    assert defenses.removal_count(1, 100) == 2
    assert defenses.removal_count(10, 12) == 11  # capped at n - 1: one point is always kept
    m = defenses.removal_set(np.array([0.1, 3.0, 2.0, -1.0]), 2)
    assert m.tolist() == [False, True, True, False]


# ---------------------------------------------------------------------------- SPECTRE internals
def test_robust_covariance_drops_the_outliers_of_a_gaussian():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((300, 4))
    Y[:15] = rng.standard_normal((15, 4)) * 0.3 + np.array([0, 0, 7.0, 7.0])
    Y = Y - Y.mean(0)
    kept = defenses.robust_covariance(Y, 15 / 300, limit=30)
    assert (~kept[:15]).sum() >= 13 and (~kept[15:]).sum() <= 17


def test_spectre_dimension_choice_is_recorded():
    R, truth = blatant()
    res = defenses.spectre(R, int(truth.sum()))
    assert res.k in res.objective and res.objective[res.k] == max(res.objective.values())
    assert res.removed.sum() == 36


# ---------------------------------------------------------------------------- datamodels
def _toy_kernel(n=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / 4)
    return K, np.sign(rng.standard_normal(n))


def _refit_margins(K, y, idx, s):
    return y * (K[:, idx] @ np.linalg.solve(K[np.ix_(idx, idx)] + s * np.eye(len(idx)), y[idx]))


def test_hat_datamodel_is_the_exact_leave_one_out_effect():
    K, y = _toy_kernel()
    A = defenses.hat_datamodels(K, y, shift=0.1)
    s = 0.1 * np.mean(np.diag(K))
    full = _refit_margins(K, y, np.arange(len(K)), s)
    for i in (0, 7, 15):
        eff = full - _refit_margins(K, y, np.delete(np.arange(len(K)), i), s)
        eff[i] = 0.0
        np.testing.assert_allclose(A[i], eff, atol=1e-10)


def test_kernel_datamodel_predicts_exact_subset_refits():
    """The linear datamodel fitted on random half subsets predicts the margins of new subsets,
    computed by exact refits, far better than their mean does."""
    K, y = _toy_kernel(n=14)
    A = defenses.kernel_datamodels(K, y, n_subsets=3000, shift=0.1, ridge=1e-4, seed=0)
    s = 0.1 * np.mean(np.diag(K))
    rng = np.random.default_rng(5)
    masks, margins = [], []
    for _ in range(400):
        idx = np.sort(rng.choice(14, 7, replace=False))
        m = np.zeros(14)
        m[idx] = 1
        masks.append(m)
        margins.append(_refit_margins(K, y, idx, s))
    masks, margins = np.array(masks), np.array(margins)
    pred = (masks - 0.5) @ A
    resid = (margins - margins.mean(0)) - pred
    explained = 1 - resid.var() / margins.var(0).mean()
    assert explained > 0.5, explained


def test_strongest_feature_search_finds_a_planted_coalition():
    rng = np.random.default_rng(0)
    n = 60
    A = rng.standard_normal((n, n)) * 0.05
    A[:10, :10] += 1.0  # ten points that support each other strongly
    s = defenses.strongest_feature_scores(A, sizes=[10], restarts=10)
    assert set(np.argsort(-s)[:10]) == set(range(10))


# ---------------------------------------------------------------------------- after-kernel attribution
def test_representer_scores_of_a_linear_model_are_its_exact_decomposition():
    rng = np.random.default_rng(0)
    Phi, Z = rng.standard_normal((20, 5)), rng.standard_normal((4, 5))
    y = np.sign(rng.standard_normal(20))
    ridge = 1e-2
    K = Phi @ Phi.T
    lam = ridge * np.mean(np.diag(K))
    tau = defenses.representer_scores(K, y, Z @ Phi.T, ridge=ridge)
    # primal form: phi(z)^T (Phi^T Phi + lam I)^-1 phi_i y_i, summed over z
    primal = (Z.sum(0) @ np.linalg.solve(Phi.T @ Phi + lam * np.eye(5), Phi.T)) * y
    np.testing.assert_allclose(tau, primal, rtol=1e-8)
    # and it decomposes the ridge model's predictions exactly
    w = np.linalg.solve(Phi.T @ Phi + lam * np.eye(5), Phi.T @ y)
    assert np.isclose(tau.sum(), (Z @ w).sum())


# ---------------------------------------------------------------------------- I-BAU
def test_implicit_hypergradient_converges_to_the_exact_one():
    """Strongly convex quadratic inner problem min_d 1/2 d^T A d - theta^T B d: d* = A^-1 B^T theta;
    outer F = 1/2 ||d - c||^2 + 1/2 ||theta||^2, dF/dtheta = theta + B A^-1 (d* - c)."""
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((4, 4))
    A = jnp.asarray(Q @ Q.T + 4 * np.eye(4))
    B = jnp.asarray(rng.standard_normal((3, 4)))
    c, theta = jnp.asarray(rng.standard_normal(4)), jnp.asarray(rng.standard_normal(3))
    d_star = jnp.linalg.solve(A, B.T @ theta)
    exact = theta + B @ jnp.linalg.solve(A, d_star - c)
    eta = 0.9 / float(jnp.linalg.eigvalsh(A).max())

    def inner_map(th, d):
        return d - eta * jax.grad(lambda u: 0.5 * u @ A @ u - th @ B @ u)(d)

    def outer(th, d):
        return 0.5 * jnp.sum((d - c) ** 2) + 0.5 * jnp.sum(th ** 2)

    errs = [float(jnp.linalg.norm(unlearning.implicit_hypergradient(outer, inner_map, theta, d_star, K) - exact))
            for K in (0, 5, 20, 200)]
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-5, errs


@pytest.fixture(scope="module")
def poisoned_victim():
    exp = pipeline.prepare("digits", width=256, depth=2, progress=False,
                           train_config=pipeline.victim_config("digits", steps=2000))
    task = exp.task
    X_p = task.X_cand[attack.sampling_baseline(len(task.X_cand), 8, 0)]
    X, y = np.concatenate([task.X_d, X_p]), np.concatenate([task.y_d, np.ones(len(X_p))])
    r = train.train(exp.arch, X, y, exp.train_config, progress=False)
    return exp, r.params


def test_ibau_removes_a_sampling_backdoor(poisoned_victim):
    exp, params = poisoned_victim
    before = evaluate.network_metrics(exp.arch, params, exp.task)
    assert before["net_asr"] >= 0.8
    u = unlearning.ibau(exp.arch, params, exp.task.X_t, exp.task.y_t, rounds=5, progress=False)
    after = evaluate.network_metrics(exp.arch, u.params, exp.task)
    assert after["net_asr"] <= 0.05 and after["net_ca"] >= before["net_ca"] - 0.02, (before, after)
    assert len(u.deltas) == 5 and max(u.history["delta_norm"]) <= 10 * np.sqrt(64 / 3072) + 1e-5


def test_penultimate_features_feed_the_readout(poisoned_victim):
    exp, params = poisoned_victim
    F = exp.arch.features(params, exp.task.X_t)
    W, b = params[-1]
    s = exp.arch.spec
    out = s["W_std"] / np.sqrt(W.shape[0]) * F @ np.asarray(W)[:, 0] + s["b_std"] * float(np.asarray(b)[0])
    np.testing.assert_allclose(out, exp.arch.predict(params, exp.task.X_t), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_are_refused():
    R, truth = blatant()
    with pytest.raises(ValueError, match="n_poison"):
        defenses.removal_count(500, len(R))
    with pytest.raises(ValueError, match="n_poison"):
        defenses.spectre(R, len(R))
    bad = R.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite|NaN"):
        defenses.spectral_signature_scores(bad)
    with pytest.raises(ValueError, match="scores"):
        defenses.detection_metrics(np.zeros(5), np.zeros(4, bool))
    arch = models.plain_mlp(8, depth=1)
    params = arch.init(0, (8, 8, 1))
    with pytest.raises(ValueError, match="empty"):
        unlearning.ibau(arch, params, np.zeros((0, 8, 8, 1)), np.zeros(0), progress=False)
    no_layer = models.Architecture(dict(name="custom"), arch.init_fn, arch.apply_fn)
    with pytest.raises(ValueError, match="penultimate"):
        no_layer.features(params, data.load_digits()[0][:2])


def test_spare_clean_set_is_disjoint_and_feeds_ibau_study():
    task = data.make_task("digits", n_train_per_class=40, n_eval_per_class=10, n_spare_per_class=20, seed=3)
    assert task.X_spare.shape == (40, 8, 8, 1) and set(np.unique(task.y_spare)) == {-1.0, 1.0}
    flat = lambda X: {x.tobytes() for x in np.asarray(X, np.float32)}  # noqa: E731
    assert not flat(task.X_spare) & (flat(task.X_d) | flat(task.X_t))
    # without it nothing changes: same split, same spec
    plain = data.make_task("digits", n_train_per_class=40, n_eval_per_class=10, seed=3)
    assert np.array_equal(plain.X_d, task.X_d) and "n_spare_per_class" not in plain.spec
    with pytest.raises(ValueError, match="n_spare_per_class"):
        data.make_task("digits", n_spare_per_class=5)
    exp = pipeline.prepare("digits", width=32, depth=1, progress=False, smoke=True,
                           task_kw=dict(n_train_per_class=30, n_eval_per_class=5, n_spare_per_class=15))
    sets = [dict(attack="sampling", budget=2, seed=0, X_p=exp.task.X_cand[:2])]
    with pytest.raises(ValueError, match="spare clean set"):
        defense_study.ibau_study(exp, sets, [exp.clean.params], n_clean=[31], rounds=1, progress=False)
    table = defense_study.ibau_study(exp, sets, [exp.clean.params], n_clean=[30], rounds=1, outer_steps=2,
                                     progress=False)
    assert table["round"].tolist() == [0, 1] and (table.n_clean == 30).all()


# ---------------------------------------------------------------------------- tests that catch wrong formulas
def test_kernel_datamodel_is_the_regression_over_all_half_subsets():
    """With every half subset enumerated, the datamodel is the least-squares fit of each point's margin
    on the centred masks (minimum norm: the masks' sum is constant). The random-subset estimate
    converges to it, row i the effect *of* point i (its transpose is far off: the effects are not
    symmetric)."""
    import itertools
    K, y = _toy_kernel(n=8, seed=2)
    s = 0.1 * np.mean(np.diag(K))
    masks, margins = [], []
    for idx in itertools.combinations(range(8), 4):
        m = np.zeros(8)
        m[list(idx)] = 1
        masks.append(m)
        margins.append(_refit_margins(K, y, np.array(idx), s))
    M, Y = np.array(masks), np.array(margins)
    exact = np.linalg.lstsq(M - M.mean(0), Y - Y.mean(0), rcond=None)[0]  # (8, 8): row i = effect of i
    A = defenses.kernel_datamodels(K, y, n_subsets=20000, shift=0.1, ridge=1e-8, seed=0)
    off = ~np.eye(8, dtype=bool)
    err = np.abs(A - exact)[off].max() / np.abs(exact[off]).max()
    err_t = np.abs(A.T - exact)[off].max() / np.abs(exact[off]).max()
    assert err < 0.05 and err_t > 0.25, (err, err_t)


def test_strongest_feature_search_finds_the_brute_force_optimum():
    """Alg. 1's objective 1_S^T B 1_S with diag(B) = -rowsum(A) k / n, maximized by enumeration:
    the search's restarts all land on that set (a sign error in the diagonal, a column sum for the
    row sum or one total for every row picks another)."""
    import itertools
    rng = np.random.default_rng(7)
    n, k = 12, 3
    A = rng.standard_normal((n, n))
    A[:, :4] += 1.5  # points 0-3 are supported by everyone: large column sums, mixed row sums
    A0 = A.copy()
    np.fill_diagonal(A0, 0)

    def best(diagonal):
        B = A0.copy()
        np.fill_diagonal(B, diagonal * k / n)
        return set(max(itertools.combinations(range(n), k), key=lambda S: B[np.ix_(S, S)].sum()))

    right = best(-A0.sum(1))
    for wrong in (A0.sum(1), -A0.sum(0), -A0.sum() * np.ones(n)):
        assert right != best(wrong)  # the test can tell each wrong diagonal from the right one
    s = defenses.strongest_feature_scores(A, sizes=[k], restarts=30, seed=0)
    members, others = s[list(right)], np.delete(s, list(right))
    assert members.min() > 0.4 / k and others.max() <= members.min(), (s, right)  # ties allowed (sort order)


def subtle(n_clean=200, n_poison=10, dim=30, shift=1.6, seed=0):
    """Poisons a plain covariance hides: clean points with large variance in most directions and a
    small one (0.15) along direction 0, the poisons shifted by ``shift`` along it. Whitening with the
    covariance of all points (poisons included) absorbs the shift (every point then has Mahalanobis
    norm near sqrt(dim)); the robust covariance of the clean points keeps it."""
    rng = np.random.default_rng(seed)
    scale = np.r_[0.15, np.linspace(3.0, 1.0, dim - 1)]
    clean = rng.standard_normal((n_clean, dim)) * scale
    poison = rng.standard_normal((n_poison, dim)) * scale
    poison[:, 0] += shift
    return np.vstack([clean, poison]), np.r_[np.zeros(n_clean, bool), np.ones(n_poison, bool)]


def test_spectre_needs_its_robust_covariance():
    R, truth = subtle()
    res = defenses.spectre(R, int(truth.sum()))
    m = defenses.detection_metrics(res.scores, truth, res.removed)
    assert m["auc"] >= 0.95 and m["caught"] >= 9, m
    # the spectral signature (top direction: a clean one) and the plain Mahalanobis norm miss them
    Rc = R - R.mean(0)
    W = Rc @ np.linalg.inv(np.linalg.cholesky(np.cov(Rc.T, bias=True))).T
    plain = defenses.detection_metrics((W ** 2).sum(1), truth, defenses.removal_set((W ** 2).sum(1), 15))
    assert defenses.detection_metrics(defenses.spectral_signature_scores(R), truth)["auc"] < 0.8
    assert plain["caught"] <= 6, plain


def test_spectre_removes_as_many_points_as_the_other_detectors():
    R, truth = blatant(n_poison=3, shift=12.0)
    assert defenses.spectre(R, 3).removed.sum() == defenses.removal_count(3, len(R)) == 5


def test_datamodel_stability_grows_with_the_subsets():
    K, y = _toy_kernel(n=30, seed=1)
    lo = defenses.datamodel_stability(K, y, n_subsets=60, shift=0.1)
    hi = defenses.datamodel_stability(K, y, n_subsets=3000, shift=0.1)
    assert hi["r"] > 0.9 and hi["r"] > lo["r"] + 0.2, (lo, hi)
    same = defenses.kernel_datamodels(K, y, n_subsets=500, shift=0.1, seed=4)
    assert np.allclose(same, defenses.kernel_datamodels(K, y, n_subsets=500, shift=0.1, seed=4))


def test_neumann_series_sums_exactly_k_terms():
    """With a linear inner map Phi(theta, d) = J d + B^T theta, the K-term hypergradient is
    g_theta + B sum_{k<K} (J^T)^k g_delta exactly (the reference's fixed_point from v = 0)."""
    rng = np.random.default_rng(1)
    J = jnp.asarray(rng.standard_normal((4, 4)) * 0.3)
    B = jnp.asarray(rng.standard_normal((3, 4)))
    c, theta, d = (jnp.asarray(rng.standard_normal(m)) for m in (4, 3, 4))

    def inner_map(th, u):
        return J @ u + B.T @ th

    def outer(th, u):
        return 0.5 * jnp.sum((u - c) ** 2) + jnp.sum(th ** 3)

    g_theta, g_delta = 3 * theta ** 2, d - c
    for K in (0, 1, 2, 5):
        series = sum((np.linalg.matrix_power(np.asarray(J).T, k) @ g_delta for k in range(K)), np.zeros(4))
        expected = g_theta + B @ series
        np.testing.assert_allclose(unlearning.implicit_hypergradient(outer, inner_map, theta, d, K), expected,
                                   rtol=1e-5, atol=1e-6)


def _digits_even_odd(n):
    """The first n digits as float32 images (8, 8, 1), labelled +1 (even) / -1 (odd)."""
    X, labels = data.load_digits()[:2]
    return X[:n].astype(np.float32), np.where(labels[:n] % 2 == 0, 1.0, -1.0)


def test_fixed_point_diagnostics_against_finite_differences():
    arch = models.plain_mlp(16, depth=1, activation="erf")  # smooth: finite differences see no kinks
    params = arch.init(0, (8, 8, 1))
    X, y = _digits_even_odd(20)
    delta = np.random.default_rng(0).standard_normal((8, 8, 1)).astype(np.float32) * 0.3
    d = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.1)

    def phi(v):
        v = jnp.asarray(v.reshape(8, 8, 1), jnp.float32)
        def inner(u):
            return -jnp.mean((arch.predict(params, X + u) - y) ** 2) + 1e-3 * jnp.sum(u ** 2)
        return np.asarray(v - 0.1 * jax.grad(inner)(v), np.float64).ravel()

    x0 = delta.astype(np.float64).ravel()
    np.testing.assert_allclose(d["residual"], np.linalg.norm(phi(x0) - x0) / np.linalg.norm(x0), rtol=1e-4)
    h = 1e-2
    J = np.stack([(phi(x0 + h * e) - phi(x0 - h * e)) / (2 * h) for e in np.eye(64)], 1)
    assert abs(d["spectral_radius"] - np.abs(np.linalg.eigvals(J)).max()) < 2e-3, d
    power = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.1, method="power")
    assert abs(power["spectral_radius"] - d["spectral_radius"]) < 1e-3 and power["residual"] == d["residual"]


def test_fixed_point_diagnostics_keeps_one_program_per_step_size():
    """The compiled JVP programs are kept per architecture *and* eta: a second step size on the same
    architecture gets its own (a cache keyed on the architecture alone would reuse the first eta's Phi)."""
    arch = models.plain_mlp(16, depth=1, activation="erf")
    params = arch.init(0, (8, 8, 1))
    X, y = _digits_even_odd(20)
    delta = np.random.default_rng(0).standard_normal((8, 8, 1)).astype(np.float32) * 0.3
    first = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.1)
    second = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.5)
    fresh = unlearning.fixed_point_diagnostics(models.plain_mlp(16, depth=1, activation="erf"), params, X, y, delta,
                                               fixed_point_lr=0.5)
    assert second["spectral_radius"] == pytest.approx(fresh["spectral_radius"], rel=1e-5)
    assert abs(second["spectral_radius"] - first["spectral_radius"]) > 1e-3, (first, second)


def test_ibau_perturbs_round_portion_times_batch_images_and_shows_its_bar(monkeypatch, capsys):
    """Each outer step adds delta to max(1, round(portion * bs)) images of its minibatch of
    bs = min(batch_size, n) (the reference's 1% of 100: one image); the rounds' bar shows unless
    progress=False."""
    arch = models.plain_mlp(8, depth=1)
    params = arch.init(0, (8, 8, 1))
    X, y = _digits_even_odd(100)
    programs, seen = unlearning._ibau_programs, []

    def spy(*args, **kwargs):
        tx, step, outer_loss = programs(*args, **kwargs)

        def recording(theta, opt_state, delta, xb, yb, mb, *rest):
            rows = len(np.unique(np.asarray(xb).reshape(len(xb), -1), axis=0))  # drawn without replacement
            seen.append((len(xb), rows, float(np.sum(mb)), sorted(set(np.asarray(mb).tolist()))))
            return step(theta, opt_state, delta, xb, yb, mb, *rest)
        return tx, recording, outer_loss

    monkeypatch.setattr(unlearning, "_ibau_programs", spy)
    for portion, batch_size, size, patched in [(0.01, 100, 100, 1), (0.001, 100, 100, 1), (0.05, 100, 100, 5),
                                               (0.5, 10, 10, 5), (0.05, 500, 100, 5)]:
        seen.clear()
        unlearning.ibau(arch, params, X, y, rounds=1, inner_steps=1, outer_steps=2, portion=portion,
                        batch_size=batch_size, progress=False)
        assert seen == [(size, size, patched, [0.0, 1.0])] * 2, (portion, batch_size, seen)
    assert "I-BAU rounds" not in capsys.readouterr().err
    unlearning.ibau(arch, params, X, y, rounds=1, inner_steps=1, outer_steps=1)
    assert "I-BAU rounds" in capsys.readouterr().err


@pytest.mark.parametrize("fixed_point_batch", ["first", "current"])
def test_ibau_history_and_diagnostics_at_each_round(fixed_point_batch):
    """history: the round, the inner loss, ||delta|| of each round's delta and, with diagnostics=True,
    :func:`fixed_point_diagnostics` at the round's start (its parameters, its delta, Phi on the batch
    the hypergradient uses: the first minibatch or the whole clean set, eta = fixed_point_lr); plain
    fine-tuning (portion=0) has no inner loss (NaN) and delta = 0."""
    arch = models.plain_mlp(8, depth=1)
    params = arch.init(0, (8, 8, 1))
    X, y = _digits_even_odd(40)
    starts = [params]
    u = unlearning.ibau(arch, params, X, y, rounds=2, inner_steps=3, outer_steps=2, batch_size=16, portion=0.1,
                        fixed_point_lr=0.3, fixed_point_batch=fixed_point_batch, diagnostics=True, progress=False,
                        on_round=lambda r, p: starts.append(p))
    xf, yf = (X[:16], y[:16]) if fixed_point_batch == "first" else (X, y)
    assert u.history["round"] == [0, 1]
    for r in range(2):
        assert u.history["delta_norm"][r] == pytest.approx(np.linalg.norm(u.deltas[r]), rel=1e-5)
        expected = unlearning.fixed_point_diagnostics(arch, starts[r], xf, yf, u.deltas[r], fixed_point_lr=0.3)
        for key, value in expected.items():
            assert u.history[key][r] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, r)
    assert all(np.isfinite(u.history["inner_loss"])) and u.history["delta_norm"][0] > 0
    ft = unlearning.ibau(arch, params, X, y, rounds=2, inner_steps=3, outer_steps=2, portion=0.0, progress=False)
    assert np.isnan(ft.history["inner_loss"]).all() and ft.history["delta_norm"] == [0.0, 0.0]
    assert ft.history["round"] == [0, 1] and ft.deltas[0].dtype == np.float32


def test_universal_perturbation_takes_normalized_projected_ascent_steps():
    """delta_{s+1} = P(delta_s + lr * radius * g_s / ||g_s||), g_s the gradient of the mean squared loss at
    delta_s, P the projection onto the L2 ball: against a hand-written loop, with gradients of norm
    below 1 (a floor of 1 instead of 1e-12 in the normalization would change the steps) and a
    projection that binds."""
    arch = models.plain_mlp(8, depth=1)
    (W1, b1), (W2, b2) = arch.init(0, (8, 8, 1))
    params = [(W1, b1), (W2 * 0.05, b2)]  # a small last layer: input gradients of norm below 1
    X, y = _digits_even_odd(30)
    y = y.astype(np.float32)

    def loss(d):
        return jnp.mean((arch.predict(params, X + d) - y) ** 2)

    lr, radius, delta, norms = 0.6, 0.5, np.zeros((8, 8, 1)), []
    for _ in range(3):
        g = np.asarray(jax.grad(loss)(jnp.asarray(delta, jnp.float32)), np.float64)
        norms.append(np.linalg.norm(g))
        delta = delta + lr * radius * g / np.linalg.norm(g)
        delta = delta * min(1.0, radius / np.linalg.norm(delta))
        got = unlearning.universal_perturbation(arch, params, X, y, radius=radius, steps=len(norms), lr=lr)
        np.testing.assert_allclose(got, delta, rtol=1e-4, atol=1e-5)
    assert max(norms) < 1, norms  # the normalization's floor must not bind
    assert np.linalg.norm(delta) == pytest.approx(radius, rel=1e-5)  # the projection bound


def test_ibau_ablations_do_what_they_say(poisoned_victim):
    """K = 0 drops the indirect term only; portion = 0 is fine-tuning with no perturbation; the
    reference's defaults (predicted labels, first batch) differ from the alternatives."""
    exp, params = poisoned_victim
    X, y = exp.task.X_t[:30], exp.task.y_t[:30]
    kw = dict(rounds=1, inner_steps=5, outer_steps=3, batch_size=10, progress=False)
    runs = {name: unlearning.ibau(exp.arch, params, X, y, **kw, **extra) for name, extra in
            {"ibau": {}, "K0": {"K": 0}, "ft": {"portion": 0.0}, "cur": {"fixed_point_batch": "current"},
             "true": {"inner_labels": "true"}}.items()}
    moved = {k: train.param_distance(v.params, runs["ibau"].params) for k, v in runs.items()}
    assert moved["ibau"] == 0 and min(moved["K0"], moved["ft"], moved["cur"]) > 0, moved
    assert runs["ft"].history["delta_norm"] == [0.0] and runs["K0"].history["delta_norm"][0] > 0
    # K = 0 equals plain Adam on the patched outer loss: its gradient has no indirect part
    assert np.array_equal(runs["K0"].deltas[0], runs["ibau"].deltas[0])
    labels = exp.arch.predict_labels(params, X)
    assert set(np.unique(labels)) <= {-1.0, 1.0} and (labels != y).any() == (runs["true"].deltas[0] !=
                                                                               runs["ibau"].deltas[0]).any()


def test_detection_study_aligns_its_truth_with_the_poisons(monkeypatch):
    """A detector that scores exactly the appended poisons must reach AUC 1, catch every poison,
    and its retrained victim must be trained on d alone."""
    exp = pipeline.prepare("digits", width=32, depth=1, progress=False, smoke=True)
    n_d = len(exp.task.X_d)
    sets = [dict(attack="sampling", budget=3, seed=0, X_p=exp.task.X_cand[:3])]

    def oracle(arch, params, X, y, n_poison, *a, **k):
        scores = np.where(np.arange(len(X)) >= n_d, 1.0, 0.0)
        return [dict(detector="spectral", scores=scores, removed=scores > 0, seconds=0.0)]

    trained = []
    real = train.train_many

    def spy(arch, data_, cfgs, **kw):
        trained.append([len(X) for X, _ in data_])
        return real(arch, data_, cfgs, **kw)

    monkeypatch.setattr(defense_study, "detect", oracle)
    monkeypatch.setattr(defense_study._train, "train_many", spy)
    table, _ = defense_study.detection_study(exp, sets, ["spectral"], progress=False)
    row = table[table.detector == "spectral"].iloc[0]
    assert row.auc == 1.0 and row.caught == 3 and row.removed == 3 and row.precision == 1.0
    assert trained == [[n_d + 3], [n_d]]


# ---------------------------------------------------------------------------- gaps found by mutation testing
def test_direction_variance_shares_are_the_covariance_spectrum():
    R, _ = blatant()
    S, share = defenses.spectral_direction_scores(R, 4)
    assert S.shape == (len(R), 4) and share.shape == (4,)
    ev = np.sort(np.linalg.eigvalsh(np.cov(R.T)))[::-1]
    np.testing.assert_allclose(share, ev[:4] / ev.sum(), rtol=1e-8)


def test_kernel_spectral_scores_scale_with_the_kernel():
    """lam u^2 is linear in K, also below 1 (a floor at 1 instead of 0 would break it)."""
    R, _ = blatant()
    K = R @ R.T
    np.testing.assert_allclose(defenses.kernel_spectral_scores(1e-6 * K), 1e-6 * defenses.kernel_spectral_scores(K),
                               rtol=1e-6)


def test_strongest_feature_scores_sum_over_sizes_and_ignore_scale():
    """Each size contributes counts / restarts / k (a size-k set per restart: the scores of one size sum
    to 1); the search is invariant to the scale of A (its stopping rule included)."""
    rng = np.random.default_rng(0)
    n = 60
    A = rng.standard_normal((n, n)) * 0.05
    A[:10, :10] += 1.0
    s10 = defenses.strongest_feature_scores(A, sizes=[10], restarts=10)
    assert np.isclose(s10.sum(), 1.0) and set(np.argsort(-s10)[:10]) == set(range(10))
    both = defenses.strongest_feature_scores(A, sizes=[10, 20], restarts=10)
    s20 = defenses.strongest_feature_scores(A, sizes=[20], restarts=10, seed=0)
    assert np.isclose(both.sum(), 2.0) and np.isclose(s20.sum(), 1.0)
    np.testing.assert_allclose(defenses.strongest_feature_scores(1e-4 * A, sizes=[10], restarts=10), s10)
    # default sizes: 10, 20, 40, ... below n / 2 (one per size: the scores sum to their number)
    assert np.isclose(defenses.strongest_feature_scores(rng.standard_normal((100, 100)), restarts=2).sum(), 3.0)
    assert np.isclose(defenses.strongest_feature_scores(rng.standard_normal((12, 12)), restarts=2).sum(), 1.0)


def test_representer_scores_average_over_victims():
    K1, y = _toy_kernel(n=10, seed=0)
    K2, _ = _toy_kernel(n=10, seed=1)
    Q1, Q2 = K1[:3], K2[:3]
    one, two = defenses.representer_scores(K1, y, Q1), defenses.representer_scores(K2, y, Q2)
    np.testing.assert_allclose(defenses.representer_scores([K1, K2], y, [Q1, Q2]), (one + two) / 2, rtol=1e-12)
    np.testing.assert_allclose(defenses.representer_scores([K1, K1, K1], y, [Q1, Q1, Q1]), one, rtol=1e-12)


def test_activation_clustering_against_an_independent_reduction():
    """Label 1 is the smaller cluster, the reported sizes and silhouette are those of 2-means on the
    first 10 principal components (computed here with scikit-learn directly), and the two rules
    flag exactly when their thresholds say so."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    R, truth = blatant()
    c = defenses.activation_clustering(R)
    Z = PCA(10, random_state=0).fit_transform(R - R.mean(0))
    km = KMeans(2, n_init=10, random_state=0).fit(Z)
    small = km.labels_ == np.argmin(np.bincount(km.labels_))
    assert np.array_equal(c.labels == 1, small) and c.relative_size == small.mean() < 0.5
    assert np.isclose(c.silhouette, silhouette_score(Z, small.astype(int)))
    assert np.all(c.scores[small] > 0) and np.all(c.scores[~small] < 0)   # closer to the small cluster's centre
    assert c.poisoned and np.array_equal(c.flagged, small)
    never = defenses.activation_clustering(R, size_threshold=0.01)
    assert not never.poisoned and not never.flagged.any()
    sil = defenses.activation_clustering(R, rule="silhouette", silhouette_threshold=c.silhouette - 0.01)
    assert sil.poisoned and not defenses.activation_clustering(R, rule="silhouette",
                                                              silhouette_threshold=c.silhouette + 0.01).poisoned
    ica = defenses.activation_clustering(R, reduce="ica")
    assert ica.labels.shape == (len(R),) and 0 < ica.relative_size <= 0.5


def _clusters_by_hand(R, c, reduce="pca", seed=0):
    """2-means on c components (scikit-learn directly): smaller-cluster mask, score, silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA
    from sklearn.metrics import silhouette_score

    Rc = R - R.mean(0)
    Z = (FastICA(c, whiten="unit-variance", random_state=seed, max_iter=1000) if reduce == "ica"
         else PCA(c, random_state=seed)).fit_transform(Rc)
    km = KMeans(2, n_init=10, random_state=seed).fit(Z)
    small_label = int(np.argmin(np.bincount(km.labels_, minlength=2)))
    small = km.labels_ == small_label
    score = (np.linalg.norm(Z - km.cluster_centers_[1 - small_label], axis=1)
             - np.linalg.norm(Z - km.cluster_centers_[small_label], axis=1))
    return small, score, silhouette_score(Z, small.astype(int))


@pytest.mark.parametrize("reduce, shape, n_components, c, seed", [
    ("ica", (144, 20), 10, 10, 0),   # the paper's reduction
    ("ica", (144, 20), 10, 10, 3),   # its seed reaches ICA and k-means
    ("pca", (144, 6), 10, 6, 1),     # fewer features than components: all of them
    ("pca", (9, 20), 10, 8, 0),      # fewer points than components: n - 1
])
def test_activation_clustering_reduction_sizes_and_seeds(reduce, shape, n_components, c, seed):
    R, _ = blatant(n_clean=shape[0] - 24 if shape[0] > 24 else shape[0] - 3,
                   n_poison=24 if shape[0] > 24 else 3, dim=shape[1], seed=seed)
    got = defenses.activation_clustering(R, n_components=n_components, reduce=reduce, seed=seed)
    small, score, sil = _clusters_by_hand(R, c, reduce, seed)
    assert got.labels.dtype.kind == "i" and np.array_equal(got.labels == 1, small)
    np.testing.assert_allclose(got.scores, score, rtol=1e-6, atol=1e-9)
    assert np.isclose(got.silhouette, sil) and got.relative_size == small.mean()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # identical points: no 0 / 0 warning from the PCA
def test_activation_clustering_thresholds_are_strict_and_degenerate_data_is_not_flagged():
    R, _ = blatant()
    c = defenses.activation_clustering(R)
    # at equality neither rule flags: size < threshold, silhouette > threshold
    at_size = defenses.activation_clustering(R, size_threshold=c.relative_size)
    at_sil = defenses.activation_clustering(R, rule="silhouette", silhouette_threshold=c.silhouette)
    for r in (at_size, at_sil):
        assert not r.poisoned and r.flagged.dtype == bool and r.flagged.shape == (len(R),) and not r.flagged.any()
    # one outlier is a cluster of one: it has a silhouette (not the 0 of a single cluster)
    one = np.random.default_rng(0).standard_normal((40, 5))
    one[0] += 40.0
    single = defenses.activation_clustering(one, n_components=5)
    assert single.relative_size == 1 / 40 and single.silhouette > 0.5
    # identical points: one cluster, silhouette 0 (undefined for one cluster; no error), nothing flagged
    same = defenses.activation_clustering(np.ones((10, 4)), n_components=2)
    assert same.silhouette == 0.0 and same.labels.sum() == 0 and not same.flagged.any()


@pytest.mark.parametrize("n, sizes", [(4, [1]), (7, [1]), (8, [2]), (18, [4]), (20, [5]), (21, [10]), (40, [10]),
                                      (41, [10, 20]), (100, [10, 20, 40]), (81921, [10 * 2 ** j for j in range(12)]),
                                      (10 ** 6, [10 * 2 ** j for j in range(12)])])
def test_strongest_feature_default_sizes(n, sizes):
    got = defenses.strongest_feature_sizes(n)
    assert got == sizes and all(type(k) is int for k in got)


def test_datamodel_stability_reports_both_correlations():
    K, y = _toy_kernel(n=30, seed=1)
    lo = defenses.datamodel_stability(K, y, n_subsets=60, shift=0.1)
    assert set(lo) == {"n_subsets", "r", "r_rowsum"} and lo["n_subsets"] == 60
    assert -1 < lo["r_rowsum"] < 0.99 and np.isfinite(lo["r"])
    hi = defenses.datamodel_stability(K, y, n_subsets=3000, shift=0.1)
    assert hi["r_rowsum"] > lo["r_rowsum"] and hi["r_rowsum"] > 0.9, (lo, hi)


def test_ibau_inner_maximization_attacks_the_networks_own_labels(poisoned_victim):
    """inner_labels="predicted" ignores the labels given (the reference attacks argmax f(x)); "true" uses
    them: with half the given labels flipped, the first delta* is unchanged in the one case only."""
    exp, params = poisoned_victim
    X, y = exp.task.X_t[:30], exp.task.y_t[:30]
    wrong = np.where(np.arange(len(y)) % 2 == 0, -y, y)
    kw = dict(rounds=1, inner_steps=5, outer_steps=1, batch_size=10, progress=False)
    own = [unlearning.ibau(exp.arch, params, X, labels, **kw).deltas[0] for labels in (y, wrong)]
    true = [unlearning.ibau(exp.arch, params, X, labels, inner_labels="true", **kw).deltas[0] for labels in (y, wrong)]
    assert np.array_equal(own[0], own[1]) and not np.allclose(true[0], true[1])


# ---------------------------------------------------------------------------- SPECTRE against a re-computation
# SPECTRE's robust covariance filter and QUE scores against an independent re-computation.
#
# The reference below is written from the algorithm's description (Diakonikolas et al. 2017, the
# covariance filter; Hayase et al. 2021, Algorithm 2, and the choices of its code, SewoongLab/spectre-defense) in the
# most literal form: the fourth-moment matrix T = (1/n) sum_i vec(w_i w_i^T) vec(w_i w_i^T)^T -
# vec(I) vec(I)^T is built explicitly from Kronecker products (the library multiplies by it
# matrix-free), the whitening is an explicit eigendecomposition, the QUE matrix a closed form in
# the eigenbasis of S. Each scenario is chosen so that one branch of the filter decides it (gross
# outliers, the fourth-moment test, the threshold search, the removal cap), and the boundary cases
# put a threshold just above and just below the data's own statistic, so that a changed constant or
# comparison gives a different answer.


C = 10.0  # the filter's constant (Diakonikolas et al.; SPECTRE's code uses 10)


# ---------------------------------------------------------------------------- the reference
def ref_whiten(Y):
    """W = Y Sigma^-1/2 with Sigma = Y^T Y / n (second moments), via an explicit eigendecomposition."""
    n = len(Y)
    lam, U = np.linalg.eigh(Y.T @ Y / n)
    return Y @ U @ np.diag(lam ** -0.5) @ U.T


def ref_fourth_moment(W):
    """T (k^2, k^2) built from the Kronecker products of each row."""
    n, k = W.shape
    Z = np.stack([np.kron(w, w) for w in W])  # (n, k^2)
    eye = np.eye(k).ravel()
    return Z.T @ Z / n - np.outer(eye, eye)


def ref_lowest(values, k):
    keep = np.zeros(len(values), bool)
    for i in sorted(range(len(values)), key=lambda i: (values[i], i))[:k]:
        keep[i] = True
    return keep


def ref_filter_step(Y, eps, tau, limit, info=None):
    """One step: ('gross' | 'threshold', mask of rows kept) or ('gaussian' | 'no threshold', None).
    ``info`` (a dict) receives the threshold T and whether the tail bound (not 1) decided it."""
    n, k = Y.shape
    W = ref_whiten(Y)
    q = np.array([w @ w for w in W])
    gross = q >= C * k * np.log(n / tau)
    if gross.any():
        return "gross", ~gross | ref_lowest(q, max(0, n - limit))
    lam, vec = np.linalg.eigh(ref_fourth_moment(W))
    if lam[-1] <= 1 + C * eps * np.log(1 / eps) ** 2:
        return "gaussian", None
    P = vec[:, -1].reshape(k, k)
    P = (P + P.T) / 2
    p = np.array([(w @ P @ w - np.trace(P)) / np.sqrt(2) for w in W])
    diffs = np.abs(p - np.median(p))
    for i, d in enumerate(sorted(diffs)):  # i + 1 of the n sorted deviations are <= d
        T = d - 3.0
        if T <= 0:
            continue
        tail = 1.0 if T <= 10 * np.log(1 / eps) else 3 * eps / (T * np.log(T)) ** 2
        if (i + 1) / n >= tail:
            if info is not None:
                info.update(T=T, tail_bound=tail < 1)
            return "threshold", (diffs <= T) | ref_lowest(diffs, max(0, n - limit))
    return "no threshold", None


def ref_robust_covariance(Y, eps, limit, tau=0.1):
    idx = np.arange(len(Y))
    while limit > 0:
        _, keep = ref_filter_step(Y[idx], eps, tau, limit)
        if keep is None or keep.all():
            break
        limit -= int((~keep).sum())
        idx = idx[keep]
    return np.isin(np.arange(len(Y)), idx)


def ref_que(S, alpha):
    """M = exp(alpha (S - I) / (||S||_2 - 1)) / tr(...), in the eigenbasis of S."""
    lam, U = np.linalg.eigh(S)
    e = np.exp(alpha * (lam - 1) / (lam.max() - 1))
    return (U * e) @ U.T / e.sum()


def ref_pca(R, k):
    Rc = R - R.mean(0)
    lam, U = np.linalg.eigh(Rc.T @ Rc)
    return Rc @ U[:, ::-1][:, :k]


def ref_spectre_at(R, n_poison, k, alpha=4.0, tau=0.1, limit1=2.0, limit2=1.5):
    """QUE scores at dimension k and the ceil(limit2 * n_poison) highest as the removal."""
    n = len(R)
    Y = ref_pca(R, k)
    if k == 1:
        white, M = Y, np.ones((1, 1))
    else:
        sel = ref_robust_covariance(Y, n_poison / n, min(round(limit1 * n_poison), n - 2), tau)
        Ys = Y[sel] - Y[sel].mean(0)
        lam, U = np.linalg.eigh(Ys.T @ Ys / len(Ys))
        white = Y @ (U / np.sqrt(lam)) @ U.T
        wc = white - white.mean(0)
        M = ref_que(wc.T @ wc / (n - 1), alpha)
    scores = np.array([w @ M @ w for w in white])
    n_remove = math.ceil(limit2 * n_poison - 1e-9)
    return scores, ref_lowest(-scores, n_remove)


# ---------------------------------------------------------------------------- scenarios
def gaussian(n=300, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k)) * np.linspace(1.5, 0.7, k)


def with_gross_outliers(seed=0):
    """Three points 60 standard deviations out: |w|^2 can exceed C k log(n / tau) only when n is large
    against k (the |w_i|^2 sum to n k)."""
    Y = gaussian(n=2000, k=2, seed=seed)
    Y[:3] *= 0.2
    Y[:3, 0] += 60.0
    return Y


def with_variance_outliers(n=400, k=3, n_out=30, scale=4.0, seed=1):
    """A cluster with a wider spread along one direction: no point is gross, the fourth moment flags it."""
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n, k))
    Y[:n_out, 1] *= scale
    return Y


def test_the_whitening_is_the_inverse_square_root():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    S = A @ A.T + 0.1 * np.eye(6)
    R = defenses._inv_sqrt(S)
    np.testing.assert_allclose(R @ S @ R, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(R, R.T, atol=1e-12)
    # an asymmetric rounding error is symmetrized, not amplified
    np.testing.assert_allclose(defenses._inv_sqrt(S + 1e-9 * np.triu(A)), R, atol=1e-6)
    # a singular matrix: eigenvalues floored at 1e-12 of the largest, finite
    u = rng.standard_normal(6)
    Z = defenses._inv_sqrt(np.outer(u, u))
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(np.linalg.eigvalsh(Z).max(), (1e-12 * (u @ u)) ** -0.5, rtol=1e-6)
    np.testing.assert_allclose(u @ Z @ u, np.sqrt(u @ u), rtol=1e-6)
    # a tiny matrix keeps its scale (the floor is relative)
    np.testing.assert_allclose(defenses._inv_sqrt(1e-8 * S), 1e4 * R, rtol=1e-8)
    # ... and so does a singular one: the floor is 1e-12 of its largest eigenvalue, not of 1
    small = 1e-4 * np.outer(u, u) / (u @ u)
    np.testing.assert_allclose(np.linalg.eigvalsh(defenses._inv_sqrt(small)).max(), (1e-12 * 1e-4) ** -0.5, rtol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_keep_lowest(k):
    v = np.array([3.0, -1.0, 2.0, -1.0, 7.0])
    np.testing.assert_array_equal(defenses._keep_lowest(v, k), ref_lowest(v, k))
    assert defenses._keep_lowest(v, k).dtype == bool


def with_spaced_outliers(n=400, k=3, n_out=12, seed=0):
    """Outliers at 3 ... 6 along one axis, either side: their deviations are spaced ~1.3 apart, so
    the threshold T = max deviation - 3 falls between two of them (a shift of 3 changes the set)."""
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n, k))
    Y[:n_out, 0] = np.linspace(3.0, 6.0, n_out) * rng.choice([-1, 1], n_out)
    return Y


CASES = {  # name: (Y, eps, tau, limit, the reference's branch)
    "spaced": (with_spaced_outliers(), 0.05, 0.1, 60, "threshold"),
    "gross": (with_gross_outliers(), 0.02, 0.1, 50, "gross"),
    "gross, capped": (with_gross_outliers(), 0.02, 0.1, 2, "gross"),
    "fourth moment": (with_variance_outliers(), 30 / 400, 0.1, 60, "threshold"),
    "fourth moment, capped": (with_variance_outliers(), 30 / 400, 0.1, 0, "threshold"),
    "gaussian": (gaussian(), 0.05, 0.1, 30, "gaussian"),
}


@pytest.mark.parametrize("case", CASES)
def test_one_filter_step_equals_the_reference(case):
    Y, eps, tau, limit, branch = CASES[case]
    got_branch, want = ref_filter_step(Y, eps, tau, limit)
    assert got_branch == branch, "the scenario no longer exercises its branch"
    got = defenses._cov_filter_step(Y, eps, tau, limit)
    if want is None:
        assert got is None
    else:
        np.testing.assert_array_equal(got, want)
        assert (~got).sum() <= limit and ((~got).sum() >= 1 or limit == 0)


def test_the_matrix_free_eigenvector_branch_equals_the_explicit_one():
    """k = 21: k^2 = 441 > 400 switches to the Lanczos solver on the matrix-free product."""
    Y = with_variance_outliers(n=600, k=21, n_out=60, scale=4.0, seed=3)
    branch, want = ref_filter_step(Y, 0.1, 0.1, 100)
    assert branch == "threshold"
    np.testing.assert_array_equal(defenses._cov_filter_step(Y, 0.1, 0.1, 100), want)


def _statistic(Y):
    """The data's own values of the two tested statistics: max_i |w_i|^2 and the top eigenvalue of T."""
    W = ref_whiten(Y)
    return (W ** 2).sum(1).max(), np.linalg.eigvalsh(ref_fourth_moment(W))[-1]


@pytest.mark.parametrize("side", [-1, 1])
def test_the_gross_outlier_threshold_at_its_boundary(side):
    """tau puts C k log(n / tau) 1% below (the largest |w|^2 is gross) or above it."""
    Y = with_gross_outliers()
    n, k = Y.shape
    qmax, _ = _statistic(Y)
    tau = n / math.exp(qmax * (1 + side * 0.01) / (C * k))
    branch, want = ref_filter_step(Y, 0.02, tau, 50)
    assert branch == ("threshold" if side > 0 else "gross")
    np.testing.assert_array_equal(defenses._cov_filter_step(Y, 0.02, tau, 50), want)


@pytest.mark.parametrize("side", [-1, 1])
def test_the_fourth_moment_threshold_at_its_boundary(side):
    """eps puts 1 + C eps log(1/eps)^2 1% below (the filter acts) or above (Gaussian) the top eigenvalue."""
    Y = with_variance_outliers(scale=3.0)  # top eigenvalue 5.0, within reach of the threshold (at most 6.4)
    _, lam = _statistic(Y)
    from scipy.optimize import brentq
    eps = brentq(lambda e: 1 + C * e * math.log(1 / e) ** 2 - lam * (1 + side * 0.01), 1e-6, 0.1)
    branch, want = ref_filter_step(Y, eps, 0.1, 60)
    assert branch == ("gaussian" if side > 0 else "threshold")
    got = defenses._cov_filter_step(Y, eps, 0.1, 60)
    assert (got is None) == (want is None)
    if want is not None:
        np.testing.assert_array_equal(got, want)


def test_the_threshold_search_uses_the_tail_bound():
    """Small eps: the tail 3 eps / (T log T)^2 is what stops the search (T > 10 log(1/eps))."""
    Y = with_variance_outliers(n=400, k=2, n_out=4, scale=20.0, seed=5)
    eps = 2e-4
    info = {}
    branch, want = ref_filter_step(Y, eps, 1e-6, 100, info)
    assert branch == "threshold" and info["tail_bound"] and 0 < (~want).sum() < 4
    np.testing.assert_array_equal(defenses._cov_filter_step(Y, eps, 1e-6, 100), want)


TAIL_CASES = {  # name: (Y, eps, limit); what each one decides, beyond the cases above
    # eps = 0.9: 10 log(1/eps) = 1.05, so the tail 3 eps / (T log T)^2 (not 1) is compared with the count i/n
    # for thresholds T of 1 to 5 and rejects the first ones: its constants and powers choose T
    "tail bound, large eps": (with_variance_outliers(k=2, n_out=150, scale=4.0, seed=1), 0.9, 398),
    # eps = 0.3: 3 + 10 log(1/eps) = 15.0 and 3 + 11 log(1/eps) = 16.2 bracket a deviation (15.6)
    "tail bound's onset": (with_variance_outliers(), 0.3, 60),
    # Gaussian rows and a tiny eps: the largest deviation, 3.5, is the only one above 3 (T = 0.5 < 1)
    "deviation just above 3": (gaussian(n=40, k=2, seed=4), 1e-4, 10),
}


@pytest.mark.parametrize("case", TAIL_CASES)
def test_the_threshold_search_equals_the_reference_where_its_constants_decide(case):
    Y, eps, limit = TAIL_CASES[case]
    info = {}
    branch, want = ref_filter_step(Y, eps, 0.1, limit, info)
    assert branch == "threshold"
    assert info["tail_bound"] == (case != "deviation just above 3")
    np.testing.assert_array_equal(defenses._cov_filter_step(Y, eps, 0.1, limit), want)


@pytest.mark.parametrize("case", ["gross", "gross, capped", "fourth moment", "fourth moment, capped", "gaussian",
                                  "spaced"])
def test_the_iterated_filter_equals_the_reference(case):
    Y, eps, tau, limit, _ = CASES[case]
    want = ref_robust_covariance(Y, eps, limit, tau)
    got = defenses.robust_covariance(Y, eps, limit, tau)
    np.testing.assert_array_equal(got, want)
    assert (~got).sum() <= limit


def test_the_iterated_filter_stops_at_its_limit():
    Y = with_variance_outliers()
    assert defenses.robust_covariance(Y, 30 / 400, limit=0).all()
    assert (~defenses.robust_covariance(Y, 30 / 400, limit=1)).sum() == 1
    # one step at most: the first step's mask
    np.testing.assert_array_equal(defenses.robust_covariance(Y, 30 / 400, limit=60, max_iter=1),
                                  ref_filter_step(Y, 30 / 400, 0.1, 60)[1])


@pytest.mark.parametrize("alpha", [0.5, 4.0, 12.0])
def test_the_que_matrix_is_the_closed_form(alpha):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((5, 40))
    S = np.cov(A)
    M = defenses._que_matrix(S, alpha)
    np.testing.assert_allclose(M, ref_que(S, alpha), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(M, sla.expm(alpha * (S - np.eye(5)) / (np.linalg.norm(S, 2) - 1))
                               / np.trace(sla.expm(alpha * (S - np.eye(5)) / (np.linalg.norm(S, 2) - 1))),
                               rtol=1e-9, atol=1e-12)


def subtle_reps(n_clean=240, n_poison=10, dim=12, shift=2.2, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.r_[0.15, np.linspace(3.0, 1.0, dim - 1)]
    clean = rng.standard_normal((n_clean, dim)) * scale
    poison = rng.standard_normal((n_poison, dim)) * scale
    poison[:, 0] += shift
    return np.vstack([clean, poison])


@pytest.mark.parametrize("k", [1, 2, 4, 9])
def test_spectre_at_one_dimension_equals_the_reference(k):
    R = subtle_reps()
    scores, removed = defenses._spectre_at(R, 10, k, 4.0, 0.1, 2.0, 1.5)
    want_scores, want_removed = ref_spectre_at(R, 10, k)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(removed, want_removed)


@pytest.mark.parametrize("limit1, limit2, alpha", [(1.0, 2.0, 2.0), (3.0, 1.0, 8.0)])
def test_spectre_at_passes_its_settings_on(limit1, limit2, alpha):
    R = subtle_reps(seed=1)
    scores, removed = defenses._spectre_at(R, 10, 9, alpha, 0.2, limit1, limit2)
    want_scores, want_removed = ref_spectre_at(R, 10, 9, alpha, 0.2, limit1, limit2)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(removed, want_removed)


@pytest.mark.parametrize("n_poison, limit1, tau, limit", [(19, 2.0, 0.1, 36), (19, 1.3, 0.3, 25), (5, 1.5, 0.05, 8)])
def test_spectre_hands_the_filter_its_fraction_limit_and_tau(monkeypatch, n_poison, limit1, tau, limit):
    """SPECTRE's robust filter gets eps = n_poison / n, the limit round(limit1 n_poison) capped at n - 2
    (n = 38: 2 x 19 = 38 is capped at 36; 1.3 x 19 = 24.7 rounds to 25; 1.5 x 5 = 7.5 rounds to 8) and
    tau as given. The cap binds for real: on these representations the filter removes 36 of 38 points
    when allowed to (the limit n - 2), so it is not a guard that never acts."""
    rng = np.random.default_rng(399)
    n, k = int(rng.integers(6, 40)), int(rng.integers(2, 4))  # a search over seeds found this scenario
    assert (n, k) == (38, 3)
    R = rng.standard_cauchy((n, k)) * rng.uniform(0.1, 3, k)
    if rng.random() < 0.5:
        R[:19] *= rng.uniform(5, 50)
    calls = []
    real = defenses.robust_covariance

    def spy(Y, eps, lim, tau_=0.1, *args, **kw):
        calls.append((len(Y), eps, lim, tau_))
        return real(Y, eps, lim, tau_, *args, **kw)

    monkeypatch.setattr(defenses, "robust_covariance", spy)
    defenses._spectre_at(R, n_poison, 3, 4.0, tau, limit1, 1.5)
    assert calls == [(38, pytest.approx(n_poison / 38), limit, tau)]
    if limit == 36:
        Y = defenses._pca(R, 3)
        assert (~real(Y, 0.5, 36)).sum() == 36 and (~real(Y, 0.5, 35)).sum() == 35


@pytest.mark.parametrize("max_dim, ks", [(100, [1, 4, 9, 12]), (6, [1, 4, 6])])
def test_spectre_picks_the_dimension_of_largest_que_variance(max_dim, ks):
    """The objective tr(S M) / tr(M) of each k, recomputed: S the whitened covariance at max_dim
    dimensions (capped by n - 2 and the rank; 6 of the 12 here) after removing that k's points."""
    R = subtle_reps()
    res = defenses.spectre(R, 10, max_dim=max_dim)
    top = min(max_dim, len(R) - 2, np.linalg.matrix_rank(R - R.mean(0)))
    Y = ref_pca(R, top)
    for k in ks:
        assert k in res.objective
        _, removed = ref_spectre_at(R, 10, k)
        Ys = Y[~removed] - Y[~removed].mean(0)
        lam, U = np.linalg.eigh(Ys.T @ Ys / (len(Ys) - 1))
        white = Y @ (U / np.sqrt(lam)) @ U.T
        S = np.cov(white.T)
        M = ref_que(S, 4.0)
        np.testing.assert_allclose(res.objective[k], np.trace(S @ M), rtol=1e-6)
    assert sorted(res.objective) == ks
    best = max(res.objective, key=res.objective.get)
    assert res.k == best
    want_scores, want_removed = ref_spectre_at(R, 10, best)
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(res.removed, want_removed)


def test_fixed_point_diagnostics_exact_and_power_on_images_of_more_than_64_pixels():
    """A 10 x 10 image (100 pixels: the exact Jacobian takes two chunks of 64 columns) against an
    independent Jacobian from jax.jacfwd of the inner map, every eigenvalue statistic; "auto" picks the
    exact route up to 1024 pixels (it reports the range) and power iteration above (it does not)."""
    arch = models.plain_mlp(8, depth=1, activation="erf")
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (12, 10, 10, 1)).astype(np.float32)
    y = np.where(np.arange(12) % 2 == 0, 1.0, -1.0)
    params = arch.init(0, X.shape[1:])
    delta = (0.3 * rng.standard_normal((10, 10, 1))).astype(np.float32)

    def phi(v):
        def inner(u):
            return -jnp.mean((arch.predict(params, X + u.reshape(10, 10, 1)) - y) ** 2) + 1e-3 * jnp.sum(u ** 2)
        return v - 0.5 * jax.grad(inner)(v)

    J = np.asarray(jax.jacfwd(phi)(jnp.asarray(delta.ravel())), np.float64)
    eig = np.linalg.eigvalsh((J + J.T) / 2)
    d = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.5, method="auto")
    np.testing.assert_allclose([d["spectral_radius"], d["eig_min"], d["eig_max"]],
                               [np.abs(eig).max(), eig.min(), eig.max()], rtol=1e-4, atol=1e-5)
    assert eig.min() < 0.999 < 1.001 < eig.max()  # a range the statistics can get wrong
    power = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.5, method="power",
                                               iters=200)
    assert "eig_min" not in power and abs(power["spectral_radius"] - np.abs(eig).max()) < 1e-3
    # one step of power iteration from the documented start (rng(0), normalized) is ||J v0||
    v0 = np.random.default_rng(0).standard_normal(100)
    v0 /= np.linalg.norm(v0)
    one = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=0.5, method="power", iters=1)
    np.testing.assert_allclose(one["spectral_radius"], np.linalg.norm(J @ v0), rtol=1e-4)
    # the residual of a perturbation of norm below 1 (relative to that norm)
    small = 0.05 * delta
    x0 = jnp.asarray(small.ravel())
    want = np.linalg.norm(np.asarray(phi(x0) - x0, np.float64)) / np.linalg.norm(small.astype(np.float64))
    got = unlearning.fixed_point_diagnostics(arch, params, X, y, small, fixed_point_lr=0.5)["residual"]
    assert np.linalg.norm(small) < 1 and abs(got - want) < 1e-3 * want
    big = rng.uniform(0, 1, (4, 33, 33, 1)).astype(np.float32)  # 1089 pixels: auto runs power iteration
    p_big = arch.init(0, big.shape[1:])
    auto = unlearning.fixed_point_diagnostics(arch, p_big, big, y[:4], np.zeros((33, 33, 1), np.float32) + 0.1,
                                              iters=5)
    assert "eig_min" not in auto and auto["spectral_radius"] > 0
    for shape, exact in (((32, 32, 1), True), ((5, 205, 1), False)):  # 1024 pixels: still exact; 1025: power
        Z = rng.uniform(0, 1, (2, *shape)).astype(np.float32)
        out = unlearning.fixed_point_diagnostics(arch, arch.init(0, shape), Z, y[:2], np.full(shape, 0.1, np.float32),
                                                 iters=2)
        assert ("eig_min" in out) == exact, shape


def test_the_projection_onto_the_l2_ball_and_its_radius_bound():
    d = jnp.asarray([0.3, 0.4])  # norm 0.5
    np.testing.assert_allclose(unlearning._project(d, 1.0), d)  # inside: unchanged (never scaled up)
    np.testing.assert_allclose(unlearning._project(d, 0.25), [0.15, 0.2], rtol=1e-6)  # norm < 1, outside
    np.testing.assert_allclose(unlearning._project(10 * d, 2.0), [1.2, 1.6], rtol=1e-6)
    np.testing.assert_allclose(unlearning._project(jnp.zeros(2), 1.0), [0.0, 0.0])
    arch = models.plain_mlp(4, depth=1)
    X = np.zeros((2, 3, 3, 1), np.float32)  # the box's diagonal: 3
    p = arch.init(0, X.shape[1:])
    assert unlearning.universal_perturbation(arch, p, X, np.ones(2), radius=3.0, steps=1).shape == (3, 3, 1)
    with pytest.raises(ValueError, match=r"radius=3.01 is invalid: must be > 0 and <= 3.0; .*diagonal 3 "):
        unlearning.universal_perturbation(arch, p, X, np.ones(2), radius=3.01, steps=1)


def test_the_outer_loss_perturbs_exactly_the_masked_images():
    """I-BAU's loss on x + mask_i delta: the images with mask 1 carry delta, the others none (the
    reference's 'portion' of each minibatch), against a loop over the images."""
    arch = models.plain_mlp(8, depth=1)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (5, 4, 4, 1)).astype(np.float32)
    y = np.array([1.0, -1.0, 1.0, -1.0, 1.0], np.float32)
    p = arch.init(0, X.shape[1:])
    delta = (0.5 * rng.standard_normal((4, 4, 1))).astype(np.float32)
    mask = np.array([0, 1, 0, 0, 1], np.float32)
    want = np.mean([(float(arch.predict(p, (X[i] + mask[i] * delta)[None])[0]) - y[i]) ** 2 for i in range(5)])
    np.testing.assert_allclose(unlearning._loss(arch, p, X, y, delta, jnp.asarray(mask)), want, rtol=1e-5)
    every = np.mean([(float(arch.predict(p, (X[i] + delta)[None])[0]) - y[i]) ** 2 for i in range(5)])
    np.testing.assert_allclose(unlearning._loss(arch, p, X, y, delta), every, rtol=1e-5)
    assert abs(want - every) > 1e-3


def test_power_iteration_is_normalized_where_the_radius_is_below_one():
    """d_delta Phi = (1 - 0.002 eta) I + eta Hess_delta L: at eta = 500 the identity cancels, and a
    network with a small output (its last layer scaled by 0.01) leaves every eigenvalue below 1 in
    modulus. Power iteration must normalize its iterate there too (an unnormalized one shrinks to 0)
    and agree with the exact radius."""
    arch = models.plain_mlp(8, depth=1, activation="erf")
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (12, 4, 4, 1)).astype(np.float32)
    y = np.where(np.arange(12) % 2 == 0, 1.0, -1.0)
    params = arch.init(0, X.shape[1:])
    params = [*params[:-1], (params[-1][0] * 0.01, params[-1][1] * 0.01)]
    delta = (0.3 * rng.standard_normal((4, 4, 1))).astype(np.float32)
    exact = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=500.0, method="exact")
    power = unlearning.fixed_point_diagnostics(arch, params, X, y, delta, fixed_point_lr=500.0, method="power",
                                               iters=300)
    assert 0.05 < exact["spectral_radius"] < 0.9
    np.testing.assert_allclose(power["spectral_radius"], exact["spectral_radius"], rtol=1e-4)


def test_detection_metrics_are_the_counts_they_name():
    """AUC, poisons, caught, removed, precision and recall by hand on eight points (one poison
    ranked first, the other below two clean points); a single poison still has an AUC; an empty
    removal set has no precision."""
    from sklearn.metrics import roc_auc_score

    truth = np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.05, 0.4, 0.0])
    removed = np.array([1, 0, 1, 0, 0, 0, 0, 0], bool)
    m = defenses.detection_metrics(scores, truth, removed)
    assert m == dict(auc=pytest.approx(roc_auc_score(truth, scores)), n_poison=2, caught=1, removed=2,
                     precision=0.5, recall=0.5)
    assert m["auc"] == pytest.approx((6 + 3) / 12)  # pairs (poison, clean) ranked right: 6 and 3 of 6 each
    one = np.zeros(8, bool)
    one[0] = True
    assert defenses.detection_metrics(scores, one)["auc"] == 1.0
    none = defenses.detection_metrics(scores, truth, np.zeros(8, bool))
    assert none["caught"] == 0 and none["removed"] == 0 and np.isnan(none["precision"]) and none["recall"] == 0


def test_spectre_on_representations_of_rank_one_and_two():
    """SPECTRE where the class's representations span one or two directions (plus an offset off
    their span): rank 1 tries only k = 1, whose QUE matrix is the scalar 1 (objective exactly 1);
    rank 2 tries k = 1 and 2, scored by the whitened variance tr(S M) along the QUE matrix of the
    2-d representation, far above 1 with three outliers. Both remove the three."""
    rng = np.random.default_rng(0)
    offset = rng.standard_normal(12)
    for rank in (1, 2):
        B = rng.standard_normal((rank, 12))
        Z = rng.standard_normal((40, rank))
        Z[:3] += 6.0
        res = defenses.spectre(Z @ B + offset, 3)
        assert res.removed[:3].all(), rank
        if rank == 1:
            assert res.objective == {1: 1.0}
        else:
            assert set(res.objective) == {1, 2} and min(res.objective.values()) > 2, res.objective
