"""Training-free adversarial examples and eigen-features (ntklib.adversarial)."""
import numpy as np
import pytest

from ntklib import adversarial as A
from ntklib import data, kernels, models, train


@pytest.fixture(scope="module")
def task():
    return data.make_task("digits", source=3, target=8, n_train_per_class=15, n_eval_per_class=2,
                          n_test_per_class=4, seed=0)


@pytest.fixture(scope="module")
def infinite():
    return kernels.infinite_ntk(models.mlp(64, depth=1, W_std=np.sqrt(2), b_std=0.1), dtype="float64")


@pytest.fixture(scope="module")
def empirical():
    arch = models.plain_mlp(16, depth=1)
    return kernels.empirical_ntk(arch.apply_fn, arch.init(0, (8, 8, 1)), dtype="float64")


def _image_norms(a):
    """Per-image L2 norms of a batch (m, H, W, C), shaped (m, 1, 1, 1) to broadcast."""
    return np.sqrt((a.reshape(len(a), -1) ** 2).sum(1)).reshape(-1, 1, 1, 1)


def _fd_check(pred, x, seed=0):
    rng = np.random.default_rng(seed)
    c, v = rng.standard_normal(len(x)), rng.standard_normal(x.shape)
    g = pred.input_grad(x, c)
    h = 1e-5
    fd = (c @ pred(x + h * v) - c @ pred(x - h * v)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("which", ["infinite", "empirical"])
@pytest.mark.parametrize("t", [None, 3.0])
def test_input_gradient_matches_finite_differences(task, infinite, empirical, which, t):
    k = infinite if which == "infinite" else empirical
    pred = A.kernel_predictor(k, task.X_d, task.y_d, t=t, lr=0.5, ridge=0.0)
    x = np.clip(task.X_test[:3].astype(np.float64), 0.05, 0.95)  # away from ReLU kinks at 0
    _fd_check(pred, x)


def test_finite_time_predictor_limits(task, infinite):
    """f_0 = 0 and f_t -> f (ridgeless) as t grows; f_t equals the explicit formula."""
    X, y, x = task.X_d, task.y_d, task.X_test
    f_inf = A.kernel_predictor(infinite, X, y, jitter=0.0)(x)
    assert np.allclose(A.kernel_predictor(infinite, X, y, t=0.0)(x), 0.0)
    np.testing.assert_allclose(A.kernel_predictor(infinite, X, y, t=1e6)(x), f_inf, rtol=1e-6, atol=1e-8)
    K, Kx = infinite(X), infinite(x, X)
    lr, t = 0.3, 2.0
    from scipy.linalg import expm
    explicit = Kx @ np.linalg.solve(K, (np.eye(len(K)) - expm(-lr * K * t)) @ y)
    np.testing.assert_allclose(A.kernel_predictor(infinite, X, y, t=t, lr=lr)(x), explicit, rtol=1e-6, atol=1e-9)


def test_finite_time_predictor_on_a_singular_kernel(task, infinite):
    """Repeated training images make K singular (eigenvalues 0 up to rounding, some slightly negative):
    f_t is still defined (the limit lr t on a zero eigenvalue), finite, without a floating-point
    warning, and equal to the explicit formula on K's eigendecomposition."""
    import warnings

    X = np.concatenate([task.X_d[:6], task.X_d[:6]])
    y = np.concatenate([task.y_d[:6], task.y_d[:6]])
    lr, t = 0.5, 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = A.kernel_predictor(infinite, X, y, t=t, lr=lr)
        f = pred(task.X_test)
    K = np.asarray(infinite(X), np.float64)
    mu, V = np.linalg.eigh((K + K.T) / 2)
    mu = np.maximum(mu, 0)
    g = np.array([lr * t if m <= 1e-12 * mu.max() else (1 - np.exp(-lr * m * t)) / m for m in mu])
    want = np.asarray(infinite(task.X_test, X), np.float64) @ (V @ (g * (V.T @ y)))
    assert np.isfinite(f).all() and np.linalg.eigvalsh(K)[0] < 1e-9
    np.testing.assert_allclose(f, want, rtol=1e-6, atol=1e-9)


def test_eigen_features_sum_to_the_predictor_and_partial_sums_converge(task, infinite):
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    assert np.all(np.diff(F.mu) <= 0)
    vals = F.values(task.X_test)
    f = A.kernel_predictor(infinite, task.X_d, task.y_d, jitter=0.0)(task.X_test)
    np.testing.assert_allclose(vals.sum(axis=1), f, rtol=1e-6, atol=1e-8)
    err = [np.abs(vals[:, :k].sum(axis=1) - f).max() for k in (1, 5, 15, len(F.mu))]
    assert err[-1] < 1e-6 * np.abs(f).max() and err[0] > err[-1]
    np.testing.assert_allclose(F.predictor(2)(task.X_test), vals[:, 2], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(F.predictor([0, 1, 2])(task.X_test), vals[:, :3].sum(axis=1), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_stays_in_the_ball_and_the_box_and_lowers_the_margin(task, infinite, norm, eps):
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    adv = A.pgd(pred, X, y, eps, norm, steps=5, step_size=eps / 2, random_start=True)
    d = (adv - X).reshape(len(X), -1)
    size = np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d ** 2).sum(axis=1))
    assert np.all(size <= eps + 1e-9) and adv.min() >= 0 and adv.max() <= 1
    assert np.mean(y * pred(adv)) < np.mean(y * pred(X))


def test_zero_epsilon_changes_nothing_and_fgsm_beats_random_noise(task, infinite):
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    assert np.array_equal(A.fgsm(pred, X, y, 0.0), X.astype(np.float64))
    eps = 0.1
    adv, noise = A.fgsm(pred, X, y, eps), A.random_sign_noise(X, eps)
    assert np.abs(adv - X).max() <= eps + 1e-7
    assert A.accuracy(pred(adv), y) < A.accuracy(pred(noise), y)


def test_random_sign_noise_moves_every_pixel_by_eps_both_ways_within_the_image_range():
    """Away from the borders each pixel moves by exactly +eps or -eps, both signs about equally
    often; at the borders the clip keeps [0, 1]; the seed fixes the draw."""
    X = np.full((50, 4, 4, 1), 0.5)
    Z = A.random_sign_noise(X, 0.1, seed=3)
    step = Z - X
    np.testing.assert_allclose(np.abs(step), 0.1, atol=1e-12)
    assert 0.4 < (step > 0).mean() < 0.6
    assert np.array_equal(Z, A.random_sign_noise(X, 0.1, seed=3))
    assert not np.array_equal(Z, A.random_sign_noise(X, 0.1, seed=4))
    edge = A.random_sign_noise(np.zeros((20, 2, 2, 1)), 0.1) + A.random_sign_noise(np.ones((20, 2, 2, 1)), 0.1)
    assert edge.min() >= 0.0 and edge.max() <= 2.0 and set(np.unique(edge)) <= {0.9, 1.0, 1.1}


def test_feature_shares_split_the_attack_exactly(task, infinite):
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d, jitter=0.0)
    adv = A.fgsm(pred, task.X_test, task.y_test, 0.05)
    s = A.feature_attack_shares(F, task.X_test, task.y_test, adv)
    # an independent route: f_i(x) = K(x, X) v_i (v_i^T y) / mu_i from the kernel's eigendecomposition
    mu, V = np.linalg.eigh(infinite(task.X_d))
    mu, V = mu[::-1], V[:, ::-1]
    f_i = lambda Z: (infinite(Z, task.X_d) @ V) * ((V.T @ task.y_d) / mu)  # noqa: E731
    drop = ((f_i(task.X_test) - f_i(adv)) * task.y_test[:, None]).sum(0)
    np.testing.assert_allclose(s, drop / drop.sum(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(A.feature_attack_shares(F, task.X_test, task.y_test, adv, k=4), s[:4])


def test_kernel_dynamics_measures():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    K = B @ B.T
    assert A.relative_kernel_change(K, K) == 0 and abs(A.relative_kernel_change(2 * K, K) - 1) < 1e-12
    mu, V = np.linalg.eigh(K)
    y = V[:, -1]  # the top eigenvector: fully aligned with the top-1 eigenspace
    assert abs(A.label_alignment(K, y, 1) - 1) < 1e-12 and A.label_alignment(K, V[:, 0], 5) < 1e-12


def test_adversarial_training_through_the_perturb_hook(task):
    """perturb= runs inside the step (identity: same result as plain training); network_pgd stays
    in the ball; on_eval sees every evaluation point."""
    arch = models.plain_mlp(16, depth=1)
    cfg = train.TrainConfig(lr=0.5, momentum=0.0, steps=20, eval_every=5, target_loss=0.0)
    plain = train.train(arch, task.X_d, task.y_d, cfg, progress=False)
    same = train.train(arch, task.X_d, task.y_d, cfg, progress=False, perturb=lambda p, x, y: x)
    assert train.param_distance(plain.params, same.params) == 0
    seen = []
    perturb = A.network_pgd(arch, 0.1, steps=3)
    adv = train.train(arch, task.X_d, task.y_d, cfg, progress=False, perturb=perturb,
                      on_eval=lambda s, p: seen.append(s))
    assert seen == [5, 10, 15, 20] and train.param_distance(adv.params, plain.params) > 0
    x_adv = np.asarray(perturb(plain.params, task.X_d, task.y_d))
    assert np.abs(x_adv - task.X_d).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("call,exc,phrase", [
    (lambda p, X, y: A.fgsm(p, X, y, -0.1), ValueError, "eps=-0.1 is invalid: must be >= 0"),
    (lambda p, X, y: A.fgsm(p, X, y, 1.5), ValueError, "eps=1.5 is invalid"),
    (lambda p, X, y: A.fgsm(p, X, y, 0.1, norm="l1"), ValueError, "norm='l1' is invalid"),
    (lambda p, X, y: A.fgsm(p, X[:, :4], y, 0.1), ValueError, "expected (8, 8, 1)"),
    (lambda p, X, y: p(X[:, :4]), ValueError, "expected (8, 8, 1)"),
    (lambda p, X, y: A.kernel_predictor(p.kernel, p.X, np.ones(len(p.X)), t=-1.0), ValueError,
     "t=-1.0 is invalid: must be >= 0"),
    (lambda p, X, y: A.fgsm("model", X, y, 0.1), TypeError, "must be a KernelPredictor"),
    (lambda p, X, y: A.pgd(p, X, y, 0.1, steps=0), ValueError, "steps=0 is invalid"),
])
def test_bad_input(task, infinite, call, exc, phrase):
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    with pytest.raises(exc) as info:
        call(pred, task.X_test, task.y_test)
    assert phrase in str(info.value)


def test_study_helpers_agree_with_their_parts(task, infinite):
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    rows, images = A.robustness_curve(pred, task.X_test, task.y_test, [0.0, 0.1], pgd_steps=2)
    assert rows[0]["fgsm"] == rows[0]["clean"] == A.accuracy(pred(task.X_test), task.y_test)
    assert rows[1]["fgsm"] == A.accuracy(pred(images[0.1]), task.y_test)
    adv = A.pgd(pred, task.X_test, task.y_test, 0.1, steps=2, step_size=2.5 * 0.1 / 2)  # Madry et al.'s step
    assert rows[1]["pgd"] == A.accuracy(pred(adv), task.y_test)
    arch = models.plain_mlp(16, depth=1)
    params = train.train(arch, task.X_d, task.y_d, train.TrainConfig(lr=0.5, steps=50), progress=False).params
    t = A.network_transfer(arch, params, task.y_test, images)
    assert t[0]["fgsm_from_kernel"] == t[0]["noise"] == A.accuracy(train.predict(arch, params, task.X_test),
                                                                    task.y_test)
    with pytest.raises(ValueError, match="eps = 0.0"):
        A.network_transfer(arch, params, task.y_test, {0.1: images[0.1]})
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    table = A.feature_table(F, task.X_test, task.y_test, 0.05, 3)
    vals = F.values(task.X_test, 3)
    assert [r["usefulness"] for r in table] == [A.accuracy(vals[:, i], task.y_test) for i in range(3)]


@pytest.mark.parametrize("eps,step,scale", [(1.5, 0.5, 1.0), (0.8, 0.3, 1e-3)])
def test_pgd_follows_the_gradient_at_each_iterate(task, infinite, eps, step, scale):
    """L2 PGD against an independent loop whose gradients are finite differences of the predictor
    at the current iterate (not at the clean image); the second case has gradients and steps of norm
    below 1 (a predictor scaled by 1e-3), where a wrong floor in the normalizations would show."""
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    pred = A.KernelPredictor(pred.kernel, pred.X, scale * pred.alpha)
    X, y = np.clip(task.X_test[:3].astype(np.float64), 0.05, 0.95), task.y_test[:3]
    h = 1e-5
    x = X.copy()
    for _ in range(4):
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape[1:]):
            e = np.zeros(x.shape[1:])
            e[idx] = h
            g[(slice(None),) + idx] = -y * (pred(x + e) - pred(x - e)) / (2 * h)
        n = _image_norms(g)
        d = x + step * g / n - X
        dn = _image_norms(d)
        x = np.clip(X + d * np.minimum(1, eps / dn), h, 1 - h)  # (h from the box: the differences stay in it)
    adv = A.pgd(pred, X, y, eps, "l2", steps=4, step_size=step)
    np.testing.assert_allclose(adv, x, atol=1e-5)
    one_point = A.pgd(pred, X, y, eps, "l2", steps=1, step_size=4 * step)  # four steps along the clean gradient
    assert np.abs(one_point - x).max() > 1e-2


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_network_pgd_ascends_the_loss(task, norm, eps):
    arch = models.plain_mlp(32, depth=1)
    params = train.train(arch, task.X_d, task.y_d, train.TrainConfig(lr=0.5, steps=100), progress=False).params
    X, y = task.X_test, task.y_test
    x_adv = np.asarray(A.network_pgd(arch, eps, steps=5, norm=norm)(params, X, y))
    margin = lambda Z: y * np.asarray(arch.predict(params, Z))  # noqa: E731
    noise = A.random_sign_noise(X, eps / 8 if norm == "l2" else eps)
    assert margin(x_adv).mean() < margin(noise).mean() - 0.1 and np.all(margin(x_adv) <= margin(X) + 1e-6)


@pytest.mark.parametrize("norm, eps, scale", [("linf", 0.1, 1.0), ("l2", 0.8, 1.0), ("l2", 0.8, 0.2)])
def test_network_pgd_equals_a_reference_pgd_on_mid_range_images(task, norm, eps, scale):
    """Each step from the network's input gradient (jax.grad of the margin, image by image), a step of
    the given size along sign(g) or g / ||g|| of that image, projected on the eps-ball around x and
    on [0, 1]; on images away from 0 (digits are mostly 0, where an x mistaken for -x reads the same).
    ``scale`` shrinks the trained weights so that the l2 gradients have norm below 1 (a floor of 1
    on the norm would then show)."""
    import jax

    arch = models.plain_mlp(16, depth=1)
    params = train.train(arch, task.X_d, task.y_d, train.TrainConfig(lr=0.5, steps=50), progress=False).params
    params = jax.tree_util.tree_map(lambda w: w * scale, params)
    X = (0.3 + 0.4 * task.X_test[:4]).astype(np.float32)
    y = task.y_test[:4].astype(np.float32)
    step = 0.04 if norm == "linf" else 0.3
    grad = jax.grad(lambda u, yy: -(yy * arch.predict(params, u[None]))[0])  # the margin loss -y f(u)
    x = X.astype(np.float64)
    for _ in range(3):
        g = np.stack([np.asarray(grad(x[i].astype(np.float32), y[i])) for i in range(len(x))]).astype(np.float64)
        if norm == "linf":
            d = np.clip(x + step * np.sign(g) - X, -eps, eps)
        else:
            gn = np.sqrt((g ** 2).sum(axis=(1, 2, 3), keepdims=True))
            assert (gn < 1).all() if scale < 1 else (gn > 1).any()
            d = x + step * g / gn - X
            dn = np.sqrt((d ** 2).sum(axis=(1, 2, 3), keepdims=True))
            d = d * np.minimum(1.0, eps / dn)
        x = np.clip(X + d, 0.0, 1.0)
    got = np.asarray(A.network_pgd(arch, eps, steps=3, step_size=step, norm=norm)(params, X, y))
    np.testing.assert_allclose(got, x, atol=2e-5)
    assert np.abs(got - X).max() > 0.5 * min(eps, step)  # it moved


def test_label_alignment_equals_its_definition_on_a_generic_case():
    """||V_k^T y||^2 / ||y||^2 with V_k the eigenvectors of the k largest eigenvalues, on labels of norm
    other than 1 that are not an eigenvector (the unit-eigenvector checks above pass a product for the ratio)."""
    rng = np.random.default_rng(1)
    B = rng.standard_normal((7, 7))
    K, y = B @ B.T, rng.choice([-1.0, 1.0], 7)
    mu, V = np.linalg.eigh(K)
    for k in (1, 2, 3, 7):
        top = V[:, np.argsort(mu)[::-1][:k]]
        want = sum((top[:, j] @ y) ** 2 for j in range(k)) / (y @ y)
        np.testing.assert_allclose(A.label_alignment(K, y, k), want, rtol=1e-12)
    assert 0 < A.label_alignment(K, y, 2) < A.label_alignment(K, y, 3) < 1


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_the_random_start_follows_its_definition(task, infinite, norm, eps):
    """With a predictor whose gradient is zero, PGD stays where its random start put it: X plus eps times
    the sign of Gaussian noise times a uniform draw per pixel (L-infinity), or plus eps times the
    normalized noise (L2: on the sphere), projected on the ball and the box, from the seed's generator in
    that order. And the largest L-infinity radius, eps = 1, is an attack like any other."""
    X, y = task.X_test.astype(np.float64), task.y_test
    zero = A.KernelPredictor(infinite, task.X_d, np.zeros(len(task.X_d)))
    rng = np.random.default_rng(7)
    g = rng.standard_normal(X.shape)
    if norm == "linf":
        start = np.clip(X + np.clip(eps * np.sign(g) * rng.uniform(size=X.shape), -eps, eps), 0, 1)
    else:
        d = eps * g / _image_norms(g)
        start = np.clip(X + d, 0, 1)
    got = A.pgd(zero, X, y, eps, norm, steps=2, step_size=eps / 2, random_start=True, seed=7)
    np.testing.assert_allclose(got, start, rtol=0, atol=1e-12)
    assert np.abs(got - X).max() > 0.1 * eps  # it moved
    if norm == "linf":
        full = A.kernel_predictor(infinite, task.X_d, task.y_d)
        assert np.abs(A.fgsm(full, X, y, 1.0) - X).max() > 0.5


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 2.0)])
def test_fgsm_is_one_step_from_the_clean_image(task, infinite, norm, eps):
    """x = clip(X + eps * sign(g)) (L-infinity) or X + eps g / ||g|| projected (L2), g the gradient of the
    margin loss at X: one step (a second one would move back the pixels whose gradient sign flips)."""
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test.astype(np.float64), task.y_test
    g = pred.input_grad(X, -y)
    if norm == "linf":
        want = np.clip(X + eps * np.sign(g), 0, 1)
    else:
        d = eps * g / _image_norms(g)
        want = np.clip(X + d, 0, 1)
    np.testing.assert_allclose(A.fgsm(pred, X, y, eps, norm), want, rtol=0, atol=1e-12)


def test_the_ridge_predictor_equals_its_formula(task, infinite):
    """f(x) = K(x, X) (K + s I)^-1 y with s = ridge + jitter * mean(diag K), for a ridge and a jitter that
    are not the defaults."""
    X, y, x = task.X_d, task.y_d, task.X_test
    K, Kx = infinite(X), infinite(x, X)
    s = 0.5 + 1e-3 * np.mean(np.diag(K))
    want = Kx @ np.linalg.solve(K + s * np.eye(len(K)), y)
    np.testing.assert_allclose(A.kernel_predictor(infinite, X, y, ridge=0.5, jitter=1e-3)(x), want, rtol=1e-9)


# ---------------------------------------------------------------------------- notebook 08's studies, field by field
@pytest.fixture(scope="module")
def wide_task():
    """50 test images: accuracies fine enough (steps of 0.02) that a wrong step rule or seed shows."""
    return data.make_task("digits", source=3, target=8, n_train_per_class=15, n_eval_per_class=2,
                          n_test_per_class=25, seed=0)


@pytest.mark.parametrize("norm,eps_list,pgd_step", [("linf", [0.0, 0.02, 0.2], 0.03), ("l2", [0.0, 0.1, 1.0], 0.3)])
def test_robustness_curve_rows_are_their_definitions(wide_task, infinite, norm, eps_list, pgd_step):
    """Every field of every row re-computed from its definition: FGSM at each eps (the images returned
    too), PGD with step max(pgd_step, 2.5 eps / steps) (pgd_step at the middle radius, Madry et al.'s
    2.5 eps / steps at the largest), sign noise of the same eps at the given seed (L-infinity only: None
    for L2). At the largest radius PGD with pgd_step alone, and (L-infinity) noise of another seed, give
    other accuracies: the comparison can tell the rule and the seed apart."""
    task = wide_task
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    rows, images = A.robustness_curve(pred, X, y, eps_list, norm=norm, pgd_steps=2, pgd_step=pgd_step, seed=5)
    assert [r["eps"] for r in rows] == eps_list and list(images) == eps_list
    clean = A.accuracy(pred(X), y)
    for e, r in zip(eps_list, rows, strict=True):
        adv = A.fgsm(pred, X, y, e, norm)
        np.testing.assert_array_equal(images[e], adv)
        step = max(pgd_step, 2.5 * e / 2)
        ref = dict(eps=e, clean=clean, fgsm=A.accuracy(pred(adv), y),
                   pgd=A.accuracy(pred(A.pgd(pred, X, y, e, norm, steps=2, step_size=step)), y),
                   noise=A.accuracy(pred(A.random_sign_noise(X, e, 5)), y) if norm == "linf" else None)
        assert r == ref
    assert [max(pgd_step, 2.5 * e / 2) == pgd_step for e in eps_list[1:]] == [True, False]
    e = eps_list[-1]
    assert rows[-1]["pgd"] != A.accuracy(pred(A.pgd(pred, X, y, e, norm, steps=2, step_size=pgd_step)), y)
    if norm == "linf":
        assert rows[-1]["noise"] != A.accuracy(pred(A.random_sign_noise(X, e, 0)), y)
    assert "pgd" not in A.robustness_curve(pred, X, y, [0.1], norm=norm)[0][0]  # pgd_steps = 0 skips PGD


def test_robustness_curve_pgd_step_is_madrys_rule_when_larger(wide_task, infinite):
    """With many PGD steps the rule's 2.5 eps / steps lies below eps: the row is PGD at that step, and
    PGD at a step of eps (pgd's fallback) gives another accuracy here (L2, eps 1, 6 steps)."""
    task = wide_task
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    rows, _ = A.robustness_curve(pred, X, y, [1.0], norm="l2", pgd_steps=6, pgd_step=0.01)
    acc = lambda s: A.accuracy(pred(A.pgd(pred, X, y, 1.0, "l2", steps=6, step_size=s)), y)  # noqa: E731
    assert rows[0]["pgd"] == acc(2.5 / 6) != acc(1.0)


def test_robustness_curve_attacks_harder_than_noise(task, infinite):
    """The attack's direction: FGSM and PGD lower the accuracy at least as much as random signs of the
    same radius, and PGD at least as much as FGSM (an attack that descended would raise it)."""
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    rows, _ = A.robustness_curve(pred, task.X_test, task.y_test, [0.15], pgd_steps=5)
    r = rows[0]
    assert r["pgd"] <= r["fgsm"] < r["noise"] and r["fgsm"] < r["clean"]


def test_network_transfer_rows_are_their_definitions(wide_task, infinite):
    """Each eps, in increasing order whatever the dict's order: the network's accuracy on the kernel's
    images and on sign noise of the same eps around the clean images (images[0.0]) at the given seed
    (seed 3 gives another accuracy than the default seed 0 at eps 0.2: the comparison sees the seed)."""
    task = wide_task
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    _, images = A.robustness_curve(pred, X, y, [0.0, 0.1, 0.2])
    arch = models.plain_mlp(16, depth=1)
    params = train.train(arch, task.X_d, task.y_d, train.TrainConfig(lr=0.5, steps=50), progress=False).params
    shuffled = {e: images[e] for e in (0.2, 0.0, 0.1)}
    rows = A.network_transfer(arch, params, y, shuffled, seed=3)
    net = lambda Z: train.predict(arch, params, Z)  # noqa: E731
    assert rows == [dict(eps=e, fgsm_from_kernel=A.accuracy(net(images[e]), y),
                         noise=A.accuracy(net(A.random_sign_noise(X, e, 3)), y)) for e in (0.0, 0.1, 0.2)]
    assert rows[2]["noise"] != A.accuracy(net(A.random_sign_noise(X, 0.2, 0)), y)
    assert rows[2]["fgsm_from_kernel"] < rows[2]["noise"]  # the kernel's attack transfers better than noise


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_feature_table_rows_are_their_definitions(task, infinite, norm, eps):
    """Every field against its definition (Tsilivis & Kempe 2022, Sec. 4): feature i's eigenvalue,
    usefulness (clean accuracy of sign f_i), robustness (f_i's accuracy under FGSM against f_i alone),
    the accuracy of f_0 + ... + f_i, and its share of an FGSM attack on the full predictor."""
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    X, y, k = task.X_test, task.y_test, 4
    table = A.feature_table(F, X, y, eps, k, norm=norm)
    vals = F.values(X)
    full = A.kernel_predictor(infinite, task.X_d, task.y_d, jitter=0.0)
    np.testing.assert_allclose(full(X), vals.sum(1), rtol=1e-6, atol=1e-8)  # the full predictor is f
    drop = ((vals - F.values(A.fgsm(F.predictor(np.arange(len(F.mu))), X, y, eps, norm))) * y[:, None]).sum(0)
    assert [r["feature"] for r in table] == list(range(k))
    for i, r in enumerate(table):
        f_i = F.predictor(i)
        assert r["eigenvalue"] == F.mu[i]
        assert r["usefulness"] == A.accuracy(vals[:, i], y)
        assert r["robustness"] == A.accuracy(f_i(A.fgsm(f_i, X, y, eps, norm)), y)
        assert r["partial_sum_accuracy"] == A.accuracy(vals[:, :i + 1].sum(1), y)
        np.testing.assert_allclose(r["attack_share"], drop[i] / drop.sum(), rtol=1e-9, atol=1e-12)
    assert len({r["partial_sum_accuracy"] for r in table}) > 1 or len({r["usefulness"] for r in table}) > 1


def _ntk_by_jacobian(arch, params, X):
    """J J^T in float64 from the full Jacobian (jax.jacrev of the flattened parameters): an
    independent computation of the empirical NTK."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from ntklib._precision import precision

    with precision("float64"):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        flat, unravel = ravel_pytree(params)
        J = jax.jacrev(lambda w: arch.apply_fn(unravel(w), jnp.asarray(X, jnp.float64)).reshape(-1))(flat)
        return np.asarray(J @ J.T)


@pytest.mark.parametrize("adversarial", [False, True])
def test_kernel_trajectory_follows_the_trained_network(task, adversarial):
    """Each row against an independent re-computation: the network trained for that row's number of
    steps (full batch, no early stop: the first s steps of a longer run), its NTK from the full Jacobian,
    the change ||K_s - K_0||_F / ||K_0||_F, the top-k alignment, and the training loss 1/(2n) sum (f - y)^2
    at those weights (adversarially: the loss recorded on the clean images, as train does)."""
    arch = models.plain_mlp(16, depth=1)
    X, y = task.X_d[:16], task.y_d[:16]
    Xp, yp = task.X_test[:6], task.y_test[:6]
    cfg = train.TrainConfig(lr=0.5, steps=30, eval_every=10, target_loss=0.0, seed=2)
    perturb = A.network_pgd(arch, 0.1, steps=2) if adversarial else None
    rows, res = A.kernel_trajectory(arch, X, y, cfg, Xp, yp, perturb=perturb, k=2)
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    K0 = _ntk_by_jacobian(arch, arch.init(cfg.seed, X.shape[1:]), Xp)
    assert rows[0]["kernel_change"] == 0.0 and "train_loss" not in rows[0]
    np.testing.assert_allclose(rows[0]["alignment"], _alignment(K0, yp, 2), rtol=1e-6)
    changes = []
    for r in rows[1:]:
        p = train.train(arch, X, y, train.TrainConfig(lr=0.5, steps=r["step"], eval_every=10, target_loss=0.0,
                                                      seed=2), progress=False, perturb=perturb).params
        K = _ntk_by_jacobian(arch, p, Xp)
        changes.append(np.linalg.norm(K - K0) / np.linalg.norm(K0))
        np.testing.assert_allclose(r["kernel_change"], changes[-1], rtol=1e-4)
        np.testing.assert_allclose(r["alignment"], _alignment(K, yp, 2), rtol=1e-4)
        f = np.asarray(arch.apply_fn(p, X)).reshape(-1)
        np.testing.assert_allclose(r["train_loss"], np.mean((f - y) ** 2) / 2, rtol=1e-4)
    assert min(changes) > 0.1 and len(set(changes)) == 3  # a width-16 network's kernel moves far
    np.testing.assert_array_equal(jax_leaves(res.params), jax_leaves(p))


def _alignment(K, y, k):
    mu, V = np.linalg.eigh(K)
    Vk = V[:, np.argsort(mu)[::-1][:k]]
    return float(np.sum((Vk.T @ y) ** 2) / np.sum(y ** 2))


def jax_leaves(tree):
    import jax

    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])


def test_predictors_say_what_they_are_and_pgd_passes_its_start_on(task, infinite):
    """The provenance a predictor carries (kind, indices or settings), the labels the features keep, and
    pgd as attack() with its random start and seed passed on (another seed, another start)."""
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    np.testing.assert_array_equal(F.y, task.y_d)
    assert F.predictor(2).spec == {"kind": "eigen_feature", "idx": [2]}
    assert F.predictor([0, 3]).spec == {"kind": "eigen_feature", "idx": [0, 3]}
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d, t=2.0, lr=0.5)
    assert pred.spec == {"kind": "kernel_predictor", "ridge": 0.0, "t": 2.0, "lr": 0.5, "kernel": infinite.spec}
    X, y = task.X_test, task.y_test
    adv = A.pgd(pred, X, y, 0.1, steps=2, step_size=0.02, random_start=True, seed=3)
    np.testing.assert_array_equal(adv, A.attack(pred, X, y, 0.1, steps=2, step_size=0.02, random_start=True, seed=3))
    assert not np.array_equal(adv, A.attack(pred, X, y, 0.1, steps=2, step_size=0.02, random_start=True, seed=0))
    assert not np.array_equal(adv, A.attack(pred, X, y, 0.1, steps=2, step_size=0.02))


# ---------------------------------------------------------------------------- notebook 08's studies
def test_reference_mlp_is_the_authors_network():
    spec = A.reference_mlp(32, 2).spec
    assert (spec["width"], spec["depth"], spec["W_std"], spec["b_std"]) == (32, 2, np.sqrt(2), 0.1)


def test_accuracy_spread_is_over_disjoint_strided_subsets():
    """10 images, subsets of 3 (stride 3): {0, 3, 6}, {1, 4, 7}, {2, 5, 8}; image 9 only in the whole."""
    right = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 0], bool)
    X = np.broadcast_to(np.where(right, 0.9, 0.1)[:, None, None, None], (10, 2, 2, 1)).copy()
    y = np.ones(10)
    pred = lambda Z: np.asarray(Z)[:, 0, 0, 0] - 0.5  # noqa: E731  (reads its images: right where they say)
    out = A.accuracy_spread(pred, X, y, 3)
    assert out == dict(whole_split_accuracy=0.6, n_whole=10, subset_size=3, subset_min=pytest.approx(1 / 3),
                       subset_max=1.0)
    with pytest.raises(ValueError, match="subset of the 10 images"):
        A.accuracy_spread(pred, X, y, 11)
    # 9 images, subsets of 3: exactly {0, 3, 6}, {1, 4, 7}, {2, 5, 8} (a stride of 4 would give a subset at 0)
    right9 = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1], bool)
    X9 = np.broadcast_to(np.where(right9, 0.9, 0.1)[:, None, None, None], (9, 2, 2, 1)).copy()
    out9 = A.accuracy_spread(pred, X9, y[:9], 3)
    assert (out9["subset_min"], out9["subset_max"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_transfer_study_rows_are_trained_networks_on_the_kernels_images(task, infinite):
    """Each (width, lr) row against the network trained directly (same initialization, config.seed)
    and network_transfer on it; relative_param_change from that initialization."""
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    _, images = A.robustness_curve(pred, task.X_test, task.y_test, [0.0, 0.1])
    cfg = train.TrainConfig(lr=0.5, steps=20, target_loss=0.0, seed=4)
    rows, diverged = A.transfer_study(task.X_d, task.y_d, images, task.y_test, [8, 16], [0.5, 2.0], cfg, seed=1)
    assert diverged == [] and [(r["width"], r["lr"], r["eps"]) for r in rows] == [
        (w, lr, e) for w in (8, 16) for lr in (0.5, 2.0) for e in (0.0, 0.1)]
    net = A.reference_mlp(16, 1)
    r = train.train(net, task.X_d, task.y_d, train.TrainConfig(lr=2.0, steps=20, target_loss=0.0, seed=4),
                    progress=False)
    p0 = net.init(4, task.X_d.shape[1:])
    want = A.network_transfer(net, r.params, task.y_test, images, seed=1)
    got = [x for x in rows if x["width"] == 16 and x["lr"] == 2.0]
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in w} == pytest.approx(w)
        np.testing.assert_allclose(g["relative_param_change"],
                                   train.param_distance(r.params, p0) / train.param_distance(p0), rtol=1e-5)
        np.testing.assert_allclose(g["train_loss"], r.final_loss, rtol=1e-5)
    # a learning rate far too large diverges: reported, left out, and the next one still studied
    with pytest.warns(UserWarning, match="diverged"):
        rows, diverged = A.transfer_study(task.X_d, task.y_d, images, task.y_test, [8], [1e4, 0.5], cfg)
    assert diverged == [(8, 1e4)] and [(r["width"], r["lr"]) for r in rows] == [(8, 0.5), (8, 0.5)]


def test_transfer_study_builds_the_reference_network_at_each_width_and_depth(task, infinite, monkeypatch):
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    _, images = A.robustness_curve(pred, task.X_test, task.y_test, [0.0, 0.1])
    built, real = [], A.reference_mlp
    monkeypatch.setattr(A, "reference_mlp", lambda w, depth: built.append((w, depth)) or real(w, depth))
    cfg = train.TrainConfig(lr=0.5, steps=5, target_loss=0.0, seed=0)
    rows, _ = A.transfer_study(task.X_d, task.y_d, images, task.y_test, [8, 4], [0.5], cfg, depth=2)
    assert built == [(8, 2), (4, 2)] and [r["width"] for r in rows] == [8, 8, 4, 4]  # eps 0 and 0.1


def test_curve_at_reads_the_rows_at_eps():
    curve = [dict(eps=0.0, clean=0.9, fgsm=0.9, pgd=0.9, noise=0.9), dict(eps=0.1, clean=0.9, fgsm=0.3, pgd=0.2)]
    assert A.curve_at(curve, 0.1) == dict(clean_accuracy=0.9, fgsm_accuracy=0.3, pgd_accuracy=0.2)
    out = A.curve_at([dict(eps=0.0, clean=0.8, fgsm=0.8)], 0.1)
    assert out["pgd_accuracy"] is None and np.isnan(out["fgsm_accuracy"])
    out = A.curve_at(curve, 0.2)  # a curve with PGD, at a radius it does not hold: NaN, not an error
    assert out["clean_accuracy"] == 0.9 and np.isnan(out["fgsm_accuracy"]) and np.isnan(out["pgd_accuracy"])


def test_feature_gradients_are_each_features_input_gradient_rescaled(task, infinite):
    F = A.eigen_features(infinite, task.X_d, task.y_d)
    x = task.X_test[1:2]
    G = A.feature_gradients(F, x, 3)
    for i in range(3):
        g = F.predictor(i).input_grad(x, np.ones(1))[0]
        np.testing.assert_allclose(G[i], (g - g.min()) / (g.max() - g.min()), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="one"):
        A.feature_gradients(F, task.X_test[:2], 3)



def test_feature_gradients_of_a_flat_gradient_are_zeros_not_nan():
    """A feature whose input gradient is the same at every pixel has no range to rescale: zeros."""
    class Flat:
        def input_grad(self, x, cot):
            return np.full(x.shape, 0.3)

    class Features:
        X, mu = np.zeros((4, 2, 2, 1)), np.ones(2)

        def predictor(self, i):
            return Flat()

    G = A.feature_gradients(Features(), np.zeros((1, 2, 2, 1)), 2)
    assert G.shape == (2, 2, 2, 1) and np.array_equal(G, np.zeros_like(G))


def test_dynamics_study_is_the_two_trajectories(task):
    arch = models.plain_mlp(16, depth=1)
    cfg = train.TrainConfig(lr=0.5, steps=10, eval_every=5, target_loss=0.0, seed=2)
    X, y = task.X_d[:12], task.y_d[:12]
    dyn = A.dynamics_study(arch, X, y, cfg, n_probe=5, eps=0.1, pgd_steps=2, k=2)
    assert dyn.training.tolist() == ["standard"] * 3 + ["adversarial"] * 3
    for name, perturb in (("standard", None), ("adversarial", A.network_pgd(arch, 0.1, steps=2))):
        rows, _ = A.kernel_trajectory(arch, X, y, cfg, X[:5], y[:5], perturb=perturb, k=2)
        got = dyn[dyn.training == name]
        np.testing.assert_allclose(got.kernel_change, [r["kernel_change"] for r in rows], rtol=1e-6)
        np.testing.assert_allclose(got.alignment, [r["alignment"] for r in rows], rtol=1e-6)
    assert not np.allclose(dyn.kernel_change[:3], dyn.kernel_change[3:])


def test_robustness_curve_hands_pgd_its_steps_and_madrys_step(task, infinite, monkeypatch):
    """The plumbing the accuracies cannot show (PGD at 2.5 or 3.5 eps / steps, or at pgd's default
    step count, often lands on the same accuracy of a nearly linear kernel predictor): each eps's
    PGD gets pgd_steps steps of max(pgd_step, 2.5 eps / pgd_steps), and its row is that PGD's accuracy."""
    pred = A.kernel_predictor(infinite, task.X_d, task.y_d)
    X, y = task.X_test, task.y_test
    calls, real = [], A.pgd

    def spy(predictor, X_, y_, eps, norm="linf", **kw):
        calls.append((eps, norm, kw))
        return real(predictor, X_, y_, eps, norm, **kw)

    monkeypatch.setattr(A, "pgd", spy)
    rows, _ = A.robustness_curve(pred, X, y, [0.0, 0.002, 0.3], norm="l2", pgd_steps=6, pgd_step=0.01)
    assert [(e, n) for e, n, _ in calls] == [(0.0, "l2"), (0.002, "l2"), (0.3, "l2")]
    for (e, _, kw), row in zip(calls, rows, strict=True):
        assert kw == dict(steps=6, step_size=max(0.01, 2.5 * e / 6))
        assert row["pgd"] == A.accuracy(pred(real(pred, X, y, e, "l2", **kw)), y)
    assert calls[1][2]["step_size"] == 0.01 and calls[2][2]["step_size"] == 2.5 * 0.3 / 6  # both sides of the max
