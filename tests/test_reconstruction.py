"""Reconstruction from weights: the gradient sum against explicit per-example gradients, the
kernel-regime identity behind the attack, SSIM against a brute-force loop, matching, and the
attack itself recovering training images better than real images it never saw."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntklib import data, kernels, models, reconstruction, train
from ntklib._precision import precision


@pytest.fixture(scope="module")
def tiny():
    task = data.make_task("digits", n_train_per_class=4, n_eval_per_class=3, seed=0)
    return task.X_d.astype(np.float32), task.y_d, task


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@pytest.fixture
def moved(tiny):
    """A one-hidden-layer plain MLP, its initialization p0 and weights p1 = p0 + 0.01: a weight change to attack."""
    arch = models.plain_mlp(16, depth=1)
    p0 = arch.init(0, tiny[0].shape[1:])
    return arch, p0, jax.tree_util.tree_map(lambda v: v + 0.01, p0)


def _wrap_attack_steps(monkeypatch, wrap):
    """Every attack program reconstruct builds from now on runs wrap(its step); returns the real builder."""
    real = reconstruction._attack_program

    def wrapped(*a):
        tx, step = real(*a)
        return tx, wrap(step)

    monkeypatch.setattr(reconstruction, "_attack_program", wrapped)
    return real


def test_gradient_sum_is_one_vjp_of_the_per_example_gradients(tiny):
    X, _, _ = tiny
    arch = models.plain_mlp(16, depth=2)
    p = arch.init(0, X.shape[1:])
    apply = reconstruction.mlp_apply(arch, beta=5.0)
    alpha = jnp.asarray(np.linspace(-1, 1, len(X)), jnp.float32)
    explicit = sum(a * _flat(jax.grad(lambda q, x=x: apply(q, x[None])[0])(p)) for a, x in zip(alpha, X, strict=True))
    np.testing.assert_allclose(_flat(reconstruction.gradient_sum(apply, p, jnp.asarray(X), alpha)), explicit,
                               rtol=1e-4, atol=1e-5)
    # beta=None is the ReLU network itself; large beta approaches it
    np.testing.assert_allclose(reconstruction.mlp_apply(arch)(p, X), arch.predict(p, X), rtol=1e-6)
    assert reconstruction.mlp_apply(arch)(p, X[:5]).shape == (5,)  # one output per image (here 8 images of 8 x 8)
    np.testing.assert_allclose(reconstruction.mlp_apply(arch, 200.0)(p, X), arch.predict(p, X), atol=0.05)


def test_the_linearized_network_is_the_first_order_taylor_expansion(tiny):
    """linearized(arch, p0)(p) = f(p0) + <grad f(p0), p - p0>: equal to the network at p0, affine in p,
    its slope along v the network's JVP (so p - p0, not p0 - p, and f0 plus, not minus, the term)."""
    X, _, _ = tiny
    arch = models.plain_mlp(16, depth=2)
    p0 = arch.init(0, X.shape[1:])
    leaves, tree = jax.tree_util.tree_flatten(p0)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    v = jax.tree_util.tree_unflatten(tree, [0.1 * jax.random.normal(k, np.shape(a)) for k, a in zip(keys, leaves,
                                                                                                   strict=True)])
    lin = reconstruction.linearized(arch, p0).apply_fn

    def at(t):
        return jax.tree_util.tree_map(lambda a, b: a + t * b, p0, v)

    f0, slope = jax.jvp(lambda p: arch.apply_fn(p, X), (p0,), (v,))
    np.testing.assert_allclose(lin(p0, X), f0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lin(at(1.0), X) - f0, slope, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lin(at(-2.0), X) - f0, -2 * slope, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(slope).max()) > 1e-2  # a slope that a sign error would show


def test_a_linearized_network_moves_in_the_span_of_its_training_gradients(tiny):
    """Gradient descent on the linearized network: theta_f - theta_0 = sum_i a_i grad f(x_i; theta_0)
    exactly, the identity the attack inverts (Loo et al. 2024, Sec. 3)."""
    X, y, _ = tiny
    arch = models.plain_mlp(32, depth=2)
    p0, r, net = reconstruction.train_victim(arch, X, y, train.TrainConfig(lr=0.5, momentum=0.9, steps=300),
                                             linear=True)
    assert r.final_loss < 1e-3
    delta = _flat(reconstruction.param_delta(r.params, p0))
    J = jax.jacrev(lambda q: arch.apply_fn(q, jnp.asarray(X)).reshape(-1))(p0)
    J = np.concatenate([np.asarray(j).reshape(len(X), -1) for j in jax.tree_util.tree_leaves(J)], axis=1)
    a, *_ = np.linalg.lstsq(J.T.astype(np.float64), np.asarray(delta, np.float64), rcond=None)
    resid = np.linalg.norm(J.T @ a - delta) / np.linalg.norm(delta)
    assert resid < 1e-3, resid
    # the standard network trained the same way does not stay in that span exactly
    p0s, rs, _ = reconstruction.train_victim(arch, X, y, train.TrainConfig(lr=0.5, momentum=0.9, steps=300))
    ds = np.asarray(_flat(reconstruction.param_delta(rs.params, p0s)), np.float64)
    a_s, *_ = np.linalg.lstsq(J.T.astype(np.float64), ds, rcond=None)
    assert np.linalg.norm(J.T @ a_s - ds) / np.linalg.norm(ds) > 10 * resid


def test_match_loss_fails_on_a_wrong_sign_scale_or_point_of_the_gradients(tiny):
    """On a linearized network the training images with their exact weights explain Delta theta;
    the same candidates score badly if Delta theta has the wrong sign or scale, or if the
    gradients are taken at theta_f instead of theta_0."""
    X, y, _ = tiny
    arch = models.plain_mlp(32, depth=2)
    p0, r, _ = reconstruction.train_victim(arch, X, y, train.TrainConfig(lr=0.5, momentum=0.9, steps=300),
                                           linear=True)
    apply = reconstruction.mlp_apply(arch)
    delta = reconstruction.param_delta(r.params, p0)
    J = jax.jacrev(lambda q: arch.apply_fn(q, jnp.asarray(X)).reshape(-1))(p0)
    J = np.concatenate([np.asarray(j).reshape(len(X), -1) for j in jax.tree_util.tree_leaves(J)], axis=1)
    a = jnp.asarray(np.linalg.lstsq(J.T, np.asarray(_flat(delta)), rcond=None)[0], jnp.float32)
    Xj = jnp.asarray(X)
    good = float(reconstruction.match_loss(apply, delta, p0, Xj, a))
    assert good < 1e-3, good
    neg = jax.tree_util.tree_map(lambda d: -d, delta)
    assert float(reconstruction.match_loss(apply, neg, p0, Xj, a)) > 3.5           # sign: ||2 Delta||^2 / ||Delta||^2
    half = jax.tree_util.tree_map(lambda d: 0.5 * d, delta)
    assert float(reconstruction.match_loss(apply, half, p0, Xj, a)) > 0.9          # scale
    assert float(reconstruction.match_loss(apply, delta, r.params, Xj, a)) > 100 * good  # wrong parameters


def test_match_loss_gradient_against_finite_differences(tiny):
    X, _, _ = tiny
    arch = models.plain_mlp(6, depth=2)
    with precision("float64"):
        p0 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), arch.init(0, X.shape[1:]))
        p1 = jax.tree_util.tree_map(lambda v: v + 0.1, p0)
        apply = reconstruction.mlp_apply(arch, beta=5.0)
        delta = reconstruction.param_delta(p1, p0)
        Xc = jnp.asarray(X[:3], jnp.float64)
        a = jnp.asarray([0.3, -0.2, 0.5])
        f = lambda Z, b: reconstruction.match_loss(apply, delta, p1, Z, b)  # noqa: E731
        gX, ga = jax.grad(f, argnums=(0, 1))(Xc, a)
        rng = np.random.default_rng(0)
        V, u, h = jnp.asarray(rng.standard_normal(Xc.shape)), jnp.asarray(rng.standard_normal(3)), 1e-6
        fd = (f(Xc + h * V, a + h * u) - f(Xc - h * V, a - h * u)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(gX * V) + jnp.sum(ga * u)), float(fd), rtol=1e-6)


def _ssim_loop(a, b, win, data_range=1.0):
    """SSIM by explicit windows (Wang et al. 2004), one image pair, one channel."""
    g = np.exp(-(np.arange(win) - (win - 1) / 2) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            x, y = a[i:i + win, j:j + win], b[i:i + win, j:j + win]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cxy = (w * (x - mx) * (y - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return np.mean(vals)


def test_ssim_against_explicit_windows(tiny):
    X, _, task = tiny
    a, b = X[:3], task.X_test[:3]
    for win in (3, 7):
        got = reconstruction.ssim(a, b, win=win)
        want = [_ssim_loop(a[i, ..., 0].astype(np.float64), b[i, ..., 0].astype(np.float64), win) for i in range(3)]
        np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(reconstruction.ssim(a, a), 1.0)
    np.testing.assert_allclose(reconstruction.ssim(a, b), reconstruction.ssim(b, a))
    M = reconstruction.ssim_matrix(a, b)
    assert M.shape == (3, 3) and np.allclose(np.diag(M), reconstruction.ssim(a, b))
    # every pair (A[i], B[j]) of unequal sets, its keyword arguments passed on
    M = reconstruction.ssim_matrix(a[:2], b, win=5)
    want = [[reconstruction.ssim(a[i:i + 1], b[j:j + 1], win=5)[0] for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(M, want, rtol=1e-12)


def test_ssim_on_wide_images_and_other_ranges_and_the_tv_penalty():
    """Images wider than tall (the window's positions in each direction), a data range of 255, and
    the total-variation penalty mean((x[i+1, j] - x[i, j])^2) + mean((x[i, j+1] - x[i, j])^2)."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(2, 2, 6, 11, 1)) * 255
    got = reconstruction.ssim(a, b, data_range=255.0)
    want = [_ssim_loop(a[i, ..., 0], b[i, ..., 0], 3, data_range=255.0) for i in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    c, d = rng.uniform(size=(2, 2, 10, 20, 1))  # the shorter side (10 < 16) sets the default window: 3
    np.testing.assert_array_equal(reconstruction.ssim(c, d), reconstruction.ssim(c, d, win=3))
    x = rng.uniform(size=(3, 5, 7, 2))
    tv = np.mean((x[:, 1:] - x[:, :-1]) ** 2) + np.mean((x[:, :, 1:] - x[:, :, :-1]) ** 2)
    np.testing.assert_allclose(float(reconstruction._tv(jnp.asarray(x))), tv, rtol=1e-5)


def test_ssim_default_window_follows_the_image_side():
    """7 x 7 from side 16 up (the usual), 3 x 3 below (8 x 8 digits)."""
    rng = np.random.default_rng(0)
    for side, win in ((16, 7), (15, 3), (32, 7)):
        a, b = rng.uniform(size=(2, 2, side, side, 1))
        np.testing.assert_array_equal(reconstruction.ssim(a, b), reconstruction.ssim(a, b, win=win))
        assert not np.allclose(reconstruction.ssim(a, b), reconstruction.ssim(a, b, win=10 - win))


def test_quality_beats_unseen_against_brute_force(tiny):
    """beats_unseen: the share of training images whose matched reconstruction is nearer (L2) than
    every unseen image; nearest_unseen_l2 the distance to the nearest unseen image, by a loop."""
    X, _, task = tiny
    unseen = task.X_test[:10]
    rng = np.random.default_rng(0)
    good = np.clip(np.concatenate([X, X]) + 0.01 * rng.standard_normal((2 * len(X), *X.shape[1:])), 0, 1)
    q = reconstruction.quality(X, good, X_unseen=unseen)
    nearest = [min(np.linalg.norm((x - u).ravel()) for u in unseen) for x in X.astype(np.float64)]
    np.testing.assert_allclose(q["per_image"]["nearest_unseen_l2"], nearest, rtol=1e-6)
    assert q["beats_unseen"] == 1.0
    # reconstructions that are unseen images themselves, half of the training images' own nearest
    bad = np.concatenate([unseen, unseen])[:2 * len(X)]
    q = reconstruction.quality(X, bad, X_unseen=unseen)
    assert q["beats_unseen"] == 0.0
    want = np.mean([d < n for d, n in zip(q["per_image"]["l2"], nearest, strict=True)])
    assert q["beats_unseen"] == want


def test_reconstruct_takes_its_gradients_where_grad_at_says(tiny, moved, monkeypatch):
    """grad_at: "final" the trained weights, "init" the initial ones, "both" the two in that order
    (the parameters the attack's step receives, with the weight change p1 - p0); the history's
    match column is the data term alone."""
    X, y, _ = tiny
    arch, p0, p1 = moved
    seen = []

    def spy(step):
        def spy_step(z, s, delta, points):
            seen.append((delta, points))
            return step(z, s, delta, points)

        return spy_step

    real = _wrap_attack_steps(monkeypatch, spy)
    for grad_at, want in (("final", (p1,)), ("init", (p0,)), ("both", (p1, p0))):
        seen.clear()
        reconstruction.reconstruct(arch, p0, p1, 4, X.shape[1:], steps=1, grad_at=grad_at, progress=False)
        delta, got = seen[0]
        assert len(got) == len(want), grad_at
        for g, w in zip(got, want, strict=True):
            for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(w), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float32))
        for d, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (delta, p1, p0)), strict=True):
            np.testing.assert_allclose(np.asarray(d), np.asarray(a) - np.asarray(b), atol=1e-7)
    monkeypatch.setattr(reconstruction, "_attack_program", real)
    kw = dict(steps=5, log_every=1, progress=False)
    plain = reconstruction.reconstruct(arch, p0, p1, 4, X.shape[1:], range_weight=0, tv_weight=0, **kw).history
    np.testing.assert_allclose(plain["match"], plain["loss"], rtol=1e-6)
    pen = reconstruction.reconstruct(arch, p0, p1, 4, X.shape[1:], range_weight=0.1, tv_weight=0.1, **kw).history
    assert all(m < total for m, total in zip(pen["match"], pen["loss"], strict=True)), pen


def test_reconstruct_keeps_its_snapshots_history_and_weights_as_documented(tiny, moved, capsys):
    """snapshots: exactly the steps asked for, step 0 the start (level + 0.2 N(0, 1) from ``seed``),
    each clipped to [0, 1] and equal to what a run stopped at that step returns; the history logged
    every ``log_every`` steps and at the last; alpha (N_R,) for one gradient point; the bar's
    description shown only with progress=True."""
    X, y, _ = tiny
    arch, p0, p1 = moved
    shape = X.shape[1:]
    # a level near both edges of the box, so that the noisy start and the first steps leave it
    level = np.where(np.arange(np.prod(shape)).reshape(shape) % 2 == 0, 0.95, 0.05).astype(np.float32)
    kw = dict(init_mean=level, seed=3, progress=False)
    res = reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=5, log_every=2, snapshots=(0, 2, 5), **kw)
    snaps = res.history["snapshots"]
    assert sorted(snaps) == [0, 2, 5] and res.history["step"] == [2, 4, 5]
    assert len(res.history["loss"]) == len(res.history["match"]) == 3
    start = level + 0.2 * np.random.default_rng(3).standard_normal((6, *shape))
    np.testing.assert_allclose(snaps[0], np.clip(start, 0, 1), atol=1e-6)
    for t in (0, 2, 5):
        assert snaps[t].dtype == np.float32 and snaps[t].min() == 0 and snaps[t].max() == 1, t
    np.testing.assert_array_equal(snaps[5], res.X)
    np.testing.assert_array_equal(snaps[2], reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=2, **kw).X)
    assert res.alpha.shape == (6,)
    assert reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=2, **kw).history["snapshots"] == {}
    only = reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=2, snapshots=(1,), **kw).history
    assert sorted(only["snapshots"]) == [1] and only["step"] == [2]  # log_every=100: the last step alone
    grey = reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=1, seed=3, snapshots=(0,), progress=False)
    np.testing.assert_allclose(grey.history["snapshots"][0],
                               np.clip(0.5 + 0.2 * np.random.default_rng(3).standard_normal((6, *shape)), 0, 1),
                               atol=1e-6)  # no init_mean: mid-grey
    capsys.readouterr()
    reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=2, **kw)
    assert "reconstruction" not in capsys.readouterr().err
    reconstruction.reconstruct(arch, p0, p1, 6, shape, steps=2, **dict(kw, progress=True))
    assert "reconstruction" in capsys.readouterr().err


@pytest.mark.parametrize("losses, log_every, message", [
    ((float("nan"), 1.0, 1.0), 3, "at step 0: the loss is nan"),  # the start is checked even if not logged
    ((1.0, 1e5, 5e6), 1, "at step 3: the loss grew from 1 to 5e"),  # against the loss at the start, not the last
])
def test_reconstruct_checks_each_logged_loss_against_the_start(tiny, moved, monkeypatch, losses, log_every, message):
    X, y, _ = tiny
    arch, p0, p1 = moved
    script = iter(losses)

    def scripted(step):
        def scripted_step(z, s, delta, points):
            z, s, _, m = step(z, s, delta, points)
            return z, s, jnp.float32(next(script)), m

        return scripted_step

    _wrap_attack_steps(monkeypatch, scripted)
    with pytest.raises(FloatingPointError, match=message):
        reconstruction.reconstruct(arch, p0, p1, 4, X.shape[1:], steps=3, log_every=log_every, progress=False)


def test_train_victim_trains_the_seeds_initialization_with_the_config_quietly(tiny, capsys):
    X, y, _ = tiny
    arch = models.plain_mlp(16, depth=1)
    cfg = train.TrainConfig(lr=0.3, steps=4, eval_every=2)
    for linear in (False, True):
        capsys.readouterr()
        p0, r, net = reconstruction.train_victim(arch, X, y, cfg, seed=2, linear=linear)
        assert capsys.readouterr().err == ""  # no bar of its own: the study shows one
        want0 = arch.init(2, X.shape[1:])
        want_net = reconstruction.linearized(arch, want0) if linear else arch
        want = train.train(want_net, X, y, cfg, params=want0, progress=False)
        assert net.spec == want_net.spec and r.final_loss == want.final_loss and r.steps == 4
        for a, b in zip(jax.tree_util.tree_leaves((p0, r.params)), jax.tree_util.tree_leaves((want0, want.params)),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_distilled_accuracy_ridge_is_relative_to_the_kernel_scale(tiny, monkeypatch):
    """``ridge`` is relative to mean(diag K): a kernel scaled by c gets c times the ridge, so the
    accuracy does not depend on the kernel's units."""
    from ntklib import adversarial

    X, y, task = tiny
    seen, real = [], adversarial.kernel_predictor

    def spy(kernel, X_, y_, ridge=0.0, **kw):
        seen.append(ridge)
        return real(kernel, X_, y_, ridge=ridge, **kw)

    monkeypatch.setattr(adversarial, "kernel_predictor", spy)

    def scaled(c):
        def pair(a, b):
            a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
            return c * jnp.exp(-jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None] - 2 * a @ b.T, 0) / 8)

        return kernels.user_kernel(pair, dtype="float64")

    accs = [reconstruction.distilled_accuracy(scaled(c), X, y, task.X_test, task.y_test, ridge=0.1) for c in (1, 1e3)]
    np.testing.assert_allclose(seen, [0.1, 100.0], rtol=1e-9)  # diag of this kernel is c
    assert accs[0] == accs[1]
    # a kernel whose diagonal varies: the scale is the mean of diag K over the first 8 images
    linear = kernels.user_kernel(lambda a, b: a.reshape(len(a), -1) @ b.reshape(len(b), -1).T, dtype="float64")
    seen.clear()
    Xr, yr = np.concatenate([X, task.X_test[:4]]), np.concatenate([y, task.y_test[:4]])
    reconstruction.distilled_accuracy(linear, Xr, yr, task.X_test, task.y_test, ridge=0.1)
    norms = np.sum(Xr.reshape(len(Xr), -1).astype(np.float64) ** 2, 1)
    assert not np.isclose(norms[:8].mean(), norms[:9].mean()) and not np.isclose(norms[:8].mean(), norms[:7].mean())
    np.testing.assert_allclose(seen, [0.1 * norms[:8].mean()], rtol=1e-6)


def test_matching_recovers_a_permutation(tiny):
    X, _, task = tiny
    perm = np.random.default_rng(0).permutation(len(X))
    rec = np.concatenate([X[perm], task.X_test[:len(X)]])
    m = reconstruction.match(X, rec)
    assert np.array_equal(perm[m["rec_index"]], np.arange(len(X)))
    assert np.allclose(m["l2"], 0, atol=1e-5) and np.allclose(m["ssim"], 1.0)
    with pytest.raises(ValueError, match="at least as many"):
        reconstruction.match(X, X[:3])


def test_attack_recovers_training_images_better_than_unseen_ones(tiny):
    X, y, task = tiny
    arch = models.plain_mlp(128, depth=2)
    p0, r, _ = reconstruction.train_victim(arch, X, y, train.TrainConfig(lr=0.5, momentum=0.9, steps=500))
    res = reconstruction.reconstruct(arch, p0, r.params, 2 * len(X), X.shape[1:], steps=800, progress=False,
                                     init_mean=reconstruction.start_level(X, "flat"))
    assert res.X.shape == (16, 8, 8, 1) and res.X.min() >= 0 and res.X.max() <= 1
    assert res.history["match"][-1] < 0.7 * res.history["match"][0]
    q = reconstruction.quality(X, res.X)
    base = reconstruction.quality(X, reconstruction.baseline_images(task.X_test, X, 2 * len(X)))
    assert q["l2"] < base["l2"] and q["ssim"] > base["ssim"], (q, base)
    labels = np.where(arch.predict(r.params, res.X) >= 0, 1.0, -1.0)  # the victim labels its reconstructions
    acc = reconstruction.distilled_accuracy(kernels.rbf(2.0, dtype="float64"), res.X, labels, task.X_test,
                                            task.y_test)
    assert acc > 0.8, acc


def test_both_kernels_sums_the_gradients_at_both_points(tiny):
    """match_loss with (theta_f, theta_0) and two rows of weights against explicit per-example
    Jacobians: ||Delta - J_f^T a_f - J_0^T a_0||^2 / ||Delta||^2."""
    X, y, _ = tiny
    arch = models.plain_mlp(16, depth=1)
    p0, r, _ = reconstruction.train_victim(arch, X, y, train.TrainConfig(lr=0.5, momentum=0.9, steps=50))
    apply = reconstruction.mlp_apply(arch, beta=5.0)
    delta = reconstruction.param_delta(r.params, p0)

    def jac(p):
        J = jax.jacrev(lambda q: apply(q, jnp.asarray(X)))(p)
        return np.concatenate([np.asarray(j, np.float64).reshape(len(X), -1) for j in jax.tree_util.tree_leaves(J)], 1)

    rng = np.random.default_rng(0)
    a = rng.uniform(-0.5, 0.5, (2, len(X))).astype(np.float32)
    d = np.asarray(_flat(delta), np.float64)
    expected = np.sum((d - jac(r.params).T @ a[0] - jac(p0).T @ a[1]) ** 2) / np.sum(d ** 2)
    got = float(reconstruction.match_loss(apply, delta, (r.params, p0), jnp.asarray(X), jnp.asarray(a)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    single = float(reconstruction.match_loss(apply, delta, r.params, jnp.asarray(X), jnp.asarray(a[0])))
    np.testing.assert_allclose(single, np.sum((d - jac(r.params).T @ a[0]) ** 2) / np.sum(d ** 2), rtol=1e-4)
    with pytest.raises(ValueError, match="zip"):  # two gradient points need two rows of weights, not one
        reconstruction.match_loss(apply, delta, (r.params, p0), jnp.asarray(X), jnp.asarray(a[:1]))


def test_the_attack_starts_from_a_flat_image_not_the_private_mean(tiny, moved):
    X, y, _ = tiny
    assert np.allclose(reconstruction.start_level(X, "flat"), X.mean()) and reconstruction.start_level(X, "grey") == 0.5
    assert reconstruction.start_level(X, "mean_image").shape == X.shape[1:]
    arch, p0, p1 = moved
    res = reconstruction.reconstruct(arch, p0, p1, 64, X.shape[1:], steps=1, init_mean=0.3, snapshots=(0,),
                                     grad_at="both", progress=False)
    start = res.history["snapshots"][0]
    # a flat level plus N(0, 0.2^2) per pixel, clipped to the box: no structure of the training images
    assert abs(np.median(start) - 0.3) < 0.02 and abs(np.std(start.mean(0)) - 0.2 / 8) < 0.01
    assert res.alpha.shape == (2, 64)
    out = reconstruction.run(X, y, 16, depth=1, steps=5, config=train.TrainConfig(lr=0.5, steps=20))
    row = out["row"]
    assert row["init"] == "flat" and row["grad_at"] == "final"
    assert out["result"].X.shape == (2 * len(X), *X.shape[1:]) and row["n_over_w"] == len(X) / 16  # 2N, N / W
    # start_ssim: the matched SSIM of the starting images (step 0), ssim that of the final ones
    start = reconstruction.quality(X, out["result"].history["snapshots"][0])["ssim"]
    assert row["start_ssim"] == pytest.approx(start) and row["ssim"] == pytest.approx(
        reconstruction.quality(X, out["result"].X)["ssim"]) and row["ssim"] != pytest.approx(start)


def test_run_trains_the_documented_victim_and_starts_at_its_init_level(tiny, monkeypatch):
    """run()'s default victim: full-batch SGD, momentum 0.9, lr 0.5, 3000 steps or loss 1e-5; the
    attack starts at start_level(X, init) with run's beta; a bad beta is refused before any training."""
    X, y, _ = tiny
    monkeypatch.setattr(reconstruction, "_MEMO", type(reconstruction._MEMO)())
    configs, attacks, linear = [], [], False
    real_victim = reconstruction.train_victim

    class Stop(Exception):
        pass

    def victim_spy(arch, X_, y_, config, **kw):
        configs.append(config)
        assert kw == dict(seed=2, linear=linear), kw
        return real_victim(arch, X_, y_, train.TrainConfig(lr=0.5, steps=5), **kw)

    def attack_spy(arch, p0, p1, n, shape, **kw):
        assert (n, shape) == (2 * len(X), X.shape[1:])
        attacks.append(kw)
        raise Stop

    monkeypatch.setattr(reconstruction, "train_victim", victim_spy)
    monkeypatch.setattr(reconstruction, "reconstruct", attack_spy)
    for init, linear, grad_at in [("flat", False, "final"), ("grey", True, "init"), ("mean_image", True, "both")]:
        with pytest.raises(Stop):
            reconstruction.run(X, y, 16, depth=1, steps=5, lr=0.03, init=init, beta=4.0, seed=2, linear=linear,
                               grad_at=None if grad_at != "both" else "both")
        np.testing.assert_array_equal(attacks[-1].pop("init_mean"), reconstruction.start_level(X, init))
        assert attacks[-1] == dict(steps=5, lr=0.03, beta=4.0, grad_at=grad_at, seed=2, progress=False,
                                   snapshots=(0,)), attacks[-1]
    linear = False
    assert configs[0] == train.TrainConfig(optimizer="sgd", lr=0.5, momentum=0.9, steps=3000, target_loss=1e-5)
    n = len(configs)
    with pytest.raises(ValueError, match="beta"):
        reconstruction.run(X, y, 16, depth=1, steps=5, beta=-1.0, seed=2)
    assert len(configs) == n  # refused before the victim trained


@pytest.mark.parametrize("linear", [False, True])
def test_run_row_holds_every_documented_field(tiny, monkeypatch, linear):
    """Each field of run()'s row recomputed from what it returns: the victim's training loss, the
    attack's last match loss, quality() of the reconstructions and of the starting images, the
    baseline of 2N unseen images drawn by baseline_images, the attack's own wall time."""
    import time

    X, y, task = tiny
    monkeypatch.setattr(reconstruction, "_MEMO", type(reconstruction._MEMO)())
    victims, real_victim = [], reconstruction.train_victim
    monkeypatch.setattr(reconstruction, "train_victim", lambda *a, **k: victims.append(real_victim(*a, **k))
                        or victims[-1])
    cfg = train.TrainConfig(lr=0.5, steps=20)
    t0 = time.perf_counter()
    out = reconstruction.run(X, y, 16, depth=1, steps=6, config=cfg, X_unseen=task.X_test, threshold=0.3,
                             linear=linear, seed=1)
    wall = time.perf_counter() - t0
    row, res = out["row"], out["result"]
    assert set(row) == {"width", "n", "n_over_w", "linear", "init", "grad_at", "attack", "train_loss", "match", "l2",
                        "ssim", "start_ssim", "recovered", "seconds", "beats_unseen", "baseline_l2", "baseline_ssim",
                        "baseline_recovered"}
    grad_at = "init" if linear else "final"
    assert (row["width"], row["n"], row["n_over_w"], row["linear"], row["init"], row["grad_at"], row["attack"]) == (
        16, len(X), len(X) / 16, linear, "flat", grad_at, f"{'linearized' if linear else 'standard'} @ {grad_at}")
    assert row["train_loss"] == victims[0][1].final_loss and row["match"] == res.history["match"][-1]
    assert out["arch"] is victims[0][2] and out["arch"].spec.get("linearized", False) == linear
    # the linearization keeps the network's description (width, depth, ...) and says it is linearized
    assert out["arch"].spec == {**models.plain_mlp(16, depth=1).spec, **({"linearized": True} if linear else {})}
    assert out["params_init"] is victims[0][0] and out["params_final"] is victims[0][1].params
    q = reconstruction.quality(X, res.X, 0.3, task.X_test)
    assert (row["l2"], row["ssim"], row["recovered"], row["beats_unseen"]) == (
        q["l2"], q["ssim"], q["recovered"], q["beats_unseen"])
    assert set(out["match"]) == set(q["per_image"]) and all(np.array_equal(out["match"][k], v)
                                                            for k, v in q["per_image"].items())
    assert row["start_ssim"] == reconstruction.quality(X, res.history["snapshots"][0], 0.3)["ssim"]
    b = reconstruction.quality(X, reconstruction.baseline_images(task.X_test, X, 2 * len(X), 1), 0.3)
    assert (row["baseline_l2"], row["baseline_ssim"], row["baseline_recovered"]) == (b["l2"], b["ssim"],
                                                                                      b["recovered"])
    assert 0 < row["seconds"] < wall


def test_start_levels_and_quality_at_their_edges(tiny):
    """start_level: "flat" one mean per channel, "mean_image" the per-pixel mean over the images;
    quality: "recovered" counts SSIM strictly above the threshold (identical images score exactly
    1), and an unseen image nearer than 1 in L2 still bounds beats_unseen."""
    X, _, _ = tiny
    rng = np.random.default_rng(0)
    colour = rng.uniform(size=(5, 6, 6, 3)) * np.array([0.2, 0.5, 1.0])
    np.testing.assert_allclose(reconstruction.start_level(colour, "flat"), colour.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(reconstruction.start_level(X, "mean_image"), X.mean(0), rtol=1e-6)
    same = reconstruction.quality(X, np.concatenate([X, X]), threshold=1.0)
    assert same["ssim"] == 1.0 and same["recovered"] == 0.0
    assert reconstruction.quality(X, np.concatenate([X, X]), threshold=0.99)["recovered"] == 1.0
    near = X + 0.05 * rng.standard_normal(X.shape).astype(np.float32)  # L2 ~ 0.4 from each training image
    q = reconstruction.quality(X, np.concatenate([near, near]), X_unseen=X + 0.005)  # unseen at L2 0.04
    assert q["l2"] < 1 and q["beats_unseen"] == 0.0


def test_the_attack_loss_is_match_plus_range_and_tv_penalties(tiny, moved):
    """The loss the attack minimizes at its start: the relative match loss + range_weight N_R
    mean(relu(-x)^2 + relu(x - 1)^2) + tv_weight TV(x), from the documented start (level + 0.2
    N(0, 1) noise, weights U(-0.5, 0.5), in that order from the seed's generator)."""
    X, _, _ = tiny
    arch, p0, p1 = moved
    level = np.where(np.arange(8)[None, :, None] < 4, -0.2, 1.2).repeat(8, 0).astype(np.float32)  # both sides out
    res = reconstruction.reconstruct(arch, p0, p1, 6, X.shape[1:], steps=1, log_every=1, init_mean=level, seed=4,
                                     range_weight=0.3, tv_weight=0.5, progress=False)
    rng = np.random.default_rng(4)
    X0 = (level + 0.2 * rng.standard_normal((6, *X.shape[1:]))).astype(np.float32)
    a0 = rng.uniform(-0.5, 0.5, (1, 6)).astype(np.float32)
    delta = reconstruction.param_delta(p1, p0)
    match = float(reconstruction.match_loss(reconstruction.mlp_apply(arch, 10.0), delta, p1, jnp.asarray(X0),
                                            jnp.asarray(a0[0])))
    outside = np.maximum(-X0, 0) ** 2 + np.maximum(X0 - 1, 0) ** 2
    tv = np.mean((X0[:, 1:] - X0[:, :-1]) ** 2) + np.mean((X0[:, :, 1:] - X0[:, :, :-1]) ** 2)
    assert np.maximum(-X0, 0).mean() > 0.1 and np.maximum(X0 - 1, 0).mean() > 0.1  # both of its sides matter
    np.testing.assert_allclose(res.history["loss"][0], match + 0.3 * 6 * outside.mean() + 0.5 * tv, rtol=1e-4)


def test_distillation_study_reports_paired_intervals(tiny, monkeypatch):
    X, y, task = tiny
    runs, scored = [], []
    real_run, real_acc = reconstruction.run, reconstruction.distilled_accuracy

    rbf = kernels.rbf(2.0, dtype="float64")

    def run_spy(*a, **kw):
        assert np.array_equal(a[0], X) and np.array_equal(a[1], y) and a[2:] == (16, 1), a[2:]
        assert kw == dict(steps=20, lr=0.03, seed=len(runs), init="grey"), kw
        runs.append(real_run(*a, **kw))
        return runs[-1]

    def acc_spy(kernel, Xs, ys, *a, **kw):
        assert kernel is rbf and a[2:] == (0.05,), a
        scored.append(np.asarray(Xs))
        return real_acc(kernel, Xs, ys, *a, **kw)

    monkeypatch.setattr(reconstruction, "run", run_spy)
    monkeypatch.setattr(reconstruction, "distilled_accuracy", acc_spy)
    rows, summary = reconstruction.distillation_study(X, y, task.X_test, task.y_test, rbf, 16, depth=1,
                                                      seeds=[0, 1, 2], steps=20, lr=0.03, init="grey", ridge=0.05,
                                                      workers=1)
    # per seed, in order: the training images, that seed's reconstructions, its starting images
    assert len(scored) == 9
    for i, r in enumerate(runs):
        np.testing.assert_array_equal(scored[3 * i], X)
        np.testing.assert_array_equal(scored[3 * i + 1], r["result"].X)
        np.testing.assert_array_equal(scored[3 * i + 2], r["result"].history["snapshots"][0])
    assert len(rows) == 12 and {s["set"] for s in summary} == {"victim network itself", "training images (N)",
                                                               "reconstructions (2N)", "starting images (2N)"}
    real = next(s for s in summary if s["set"] == "training images (N)")
    assert real["diff_vs_real"] == 0 and real["low"] <= real["mean"] <= real["high"]
    from scipy import stats
    ref = np.array([r["accuracy"] for r in rows if r["set"] == "training images (N)"])
    for s in summary:
        accs = np.array([r["accuracy"] for r in rows if r["set"] == s["set"]])
        half = stats.t.ppf(0.975, 2) * np.std(accs - ref, ddof=1) / np.sqrt(3)
        assert np.isclose(s["mean"], accs.mean()) and np.isclose(s["diff_high"], (accs - ref).mean() + half)
        assert np.isclose(s["diff_low"], (accs - ref).mean() - half)
        assert (s["n_test"], s["seeds"]) == (len(task.y_test), 3)
        spread = stats.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)  # the interval of the mean itself
        assert np.isclose(s["low"], accs.mean() - spread) and np.isclose(s["high"], accs.mean() + spread)
    assert any(np.std([r["accuracy"] for r in rows if r["set"] == s["set"]]) > 0 for s in summary)


def test_distillation_study_uses_each_seeds_empirical_ntk(tiny, monkeypatch):
    """kernel="empirical": each seed's kernel models use the empirical NTK (float64) of that seed's
    own trained victim, which the attacker holds."""
    X, y, task = tiny
    runs, kernels_seen = [], []
    real_run, real_acc = reconstruction.run, reconstruction.distilled_accuracy

    def run_spy(*a, **kw):
        runs.append(real_run(*a, **kw))
        return runs[-1]

    def acc_spy(kernel, Xs, ys, *a, **kw):
        kernels_seen.append(kernel)
        return real_acc(kernel, Xs, ys, *a, **kw)

    monkeypatch.setattr(reconstruction, "run", run_spy)
    monkeypatch.setattr(reconstruction, "distilled_accuracy", acc_spy)
    reconstruction.distillation_study(X, y, task.X_test, task.y_test, "empirical", 16, depth=1, seeds=[0, 1], steps=5,
                                      workers=1)
    assert len(kernels_seen) == 6
    for i, r in enumerate(runs):
        want = kernels.empirical_ntk(r["arch"].apply_fn, r["params_final"], dtype="float64")(X[:3])
        for k in kernels_seen[3 * i:3 * i + 3]:
            got = k(X[:3])
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(kernels_seen[0](X[:3]), kernels_seen[3](X[:3]))  # two seeds, two victims


def test_bad_inputs(tiny):
    X, y, _ = tiny
    arch = models.plain_mlp(8, depth=1)
    p = arch.init(0, X.shape[1:])
    other = models.plain_mlp(16, depth=1).init(0, X.shape[1:])
    with pytest.raises(ValueError, match="not parameters of one network"):
        reconstruction.reconstruct(arch, other, p, 4, X.shape[1:], steps=1, progress=False)
    moved = jax.tree_util.tree_map(lambda v: v + 1.0, p)
    with pytest.raises(ValueError, match="n_candidates"):
        reconstruction.reconstruct(arch, p, moved, 0, X.shape[1:], steps=1, progress=False)
    with pytest.raises(ValueError, match="do not fit"):
        reconstruction.reconstruct(arch, p, moved, 4, (4, 4, 1), steps=1, progress=False)
    with pytest.raises(ValueError, match="did not move"):
        reconstruction.reconstruct(arch, p, p, 4, X.shape[1:], steps=1, progress=False)
    for bad in (np.zeros((3, 3, 1)), np.zeros(5), np.zeros((2, *X.shape[1:]))):
        with pytest.raises(ValueError, match="does not broadcast to the image shape"):
            reconstruction.reconstruct(arch, p, moved, 4, X.shape[1:], steps=1, init_mean=bad, progress=False)
    try:
        stax_mlp = models.mlp(8, depth=1)
    except models.NeuralTangentsMissing:  # the current-JAX environment has no stax networks to refuse
        return
    with pytest.raises(ValueError, match="plain_mlp"):
        reconstruction.reconstruct(stax_mlp, p, p, 4, X.shape[1:], steps=1, progress=False)


@pytest.fixture
def pools(monkeypatch):
    """The ``workers`` of every ntklib.parallel.thread_map call the reconstruction module makes."""
    from ntklib import parallel

    seen, real_map = [], parallel.thread_map

    def map_spy(fn, items, workers=None, **kw):
        seen.append(workers)
        return real_map(fn, items, workers=workers, **kw)

    monkeypatch.setattr(reconstruction._parallel, "thread_map", map_spy)
    return seen


def test_scaling_study_runs_each_point_once_and_reports_it_in_both_sweeps(monkeypatch, pools):
    """The width sweep (every variant, N = n_train) and the N sweep (no both_kernels, at width) as
    run() would give them one by one; the shared point (n_train, width) is attacked once."""
    calls = []

    def fake_run(X, y, X_unseen=None, **kw):
        calls.append((len(X), kw["width"], kw["grad_at"], kw["linear"]))
        assert X_unseen is samples[len(X)][2] and {k: kw[k] for k in ("steps", "seed")} == dict(steps=3, seed=1)
        return dict(row=dict(n=len(X), width=kw["width"], attack=f"{kw['linear']} @ {kw['grad_at']}",
                             ssim=len(X) / kw["width"]))

    samples = {n: (np.zeros((n, 8, 8, 1)), np.ones(n), np.zeros((2 * n, 8, 8, 1))) for n in (4, 6, 8)}
    variants = [dict(linear=False, grad_at="final"), dict(linear=False, grad_at="both"),
                dict(linear=True, grad_at="init")]
    monkeypatch.setattr(reconstruction, "run", fake_run)
    t = reconstruction.scaling_study(samples, 6, 32, [16, 32], [4, 6, 8], variants, steps=3, seed=1, workers=3)
    assert pools == [3]  # every point's run in one pool of the given size
    assert t.study.tolist() == ["width"] * 6 + ["n"] * 6
    assert list(zip(t.n, t.width, strict=True)) == ([(6, 16)] * 3 + [(6, 32)] * 3 + [(4, 32)] * 2 + [(6, 32)] * 2
                                                    + [(8, 32)] * 2)
    assert "False @ both" not in set(t[t.study == "n"].attack)
    assert len(calls) == len(set(calls)) == 6 + 4  # (6, 32) final and linear: once each
    np.testing.assert_allclose(t.ssim, t.n / t.width)
    with pytest.raises(ValueError, match=r"lacks \[10\]"):
        reconstruction.scaling_study(samples, 6, 32, [16], [4, 10], variants)


def test_study_names_what_each_setting_changed(monkeypatch, pools):
    """The setting column holds the entry's own arguments, not the shared ones merged under it; each
    run gets the images, labels and baseline images; a width may come from the shared arguments;
    ``workers`` reaches the thread pool."""
    X, y, X_unseen = np.zeros((4, 8, 8, 1)), np.array([1.0, -1.0, 1.0, -1.0]), np.ones((8, 8, 8, 1))

    def fake_run(X_, y_, X_unseen=None, **kw):
        assert X_ is X and y_ is y and X_unseen is unseen
        return dict(row=dict(width=kw["width"], depth=kw["depth"]))

    monkeypatch.setattr(reconstruction, "run", fake_run)
    unseen = None
    t = reconstruction.study(X, y, [dict(width=16), dict(width=32, linear=True)], depth=1, steps=3, workers=1)
    assert t.setting.tolist() == ["width=16", "width=32, linear=True"] and t.width.tolist() == [16, 32]
    unseen = X_unseen
    t = reconstruction.study(X, y, [dict(), dict(width=32)], X_unseen=X_unseen, width=16, depth=2, workers=2)
    assert t.width.tolist() == [16, 32] and t.depth.tolist() == [2, 2] and pools == [1, 2]
    with pytest.raises(ValueError, match="every run needs a width"):
        reconstruction.study(X, y, [dict(width=16), dict(depth=2)])


def test_a_run_asked_for_again_is_served_from_memory(tiny, monkeypatch):
    """run() with the same inputs returns the stored measurement (no second attack); any change of
    input or setting is a new run; the row handed out is a copy; only the last MEMO_SIZE are kept."""
    X, y, task = tiny
    monkeypatch.setattr(reconstruction, "_MEMO", type(reconstruction._MEMO)())
    attacks = []
    real = reconstruction.reconstruct

    def spy(*a, **kw):
        attacks.append(kw["seed"])
        return real(*a, **kw)

    monkeypatch.setattr(reconstruction, "reconstruct", spy)
    kw = dict(depth=1, steps=3, config=train.TrainConfig(lr=0.5, steps=10))
    a = reconstruction.run(X, y, 16, **kw)
    a["row"]["ssim"] = -5.0  # the caller's copy
    b = reconstruction.run(X, y, 16, **kw)
    assert len(attacks) == 1 and b["result"] is a["result"] and b["row"]["ssim"] != -5.0
    b["row"]["ssim"] = -6.0  # a served row is a copy too
    assert reconstruction.run(X, y, 16, **kw)["row"]["ssim"] not in (-5.0, -6.0) and len(attacks) == 1
    for change in (dict(seed=1), dict(init="grey"), dict(steps=4), dict(grad_at="both"),
                   dict(config=train.TrainConfig(lr=0.4, steps=10)), dict(depth=2), dict(lr=0.01), dict(beta=5.0),
                   dict(threshold=0.5), dict(linear=True), dict(linear=True, grad_at="final")):
        reconstruction.run(X, y, 16, **{**kw, **change})
    reconstruction.run(X[::-1], y[::-1], 16, **kw)  # the same images in another order: another victim
    reconstruction.run(X, y, 16, X_unseen=task.X_test, **kw)
    reconstruction.run(X, -y, 16, **kw)  # the same images, other labels
    reconstruction.run(X, y, 24, **kw)  # another width
    assert len(attacks) == 16
    monkeypatch.setattr(reconstruction, "MEMO_SIZE", 2)
    reconstruction.run(X, y, 16, **{**kw, "seed": 5})  # keeps only this and the one before
    reconstruction.run(X, y, 16, **kw)
    assert len(attacks) == 18 and len(reconstruction._MEMO) == 2


def test_runs_on_networks_of_one_shape_share_one_attack_program(tiny, monkeypatch):
    """The compiled step takes the weight change and the gradient points as arguments: a second
    network of the same shape reuses it and gets what a fresh program gives it (nothing of the
    first network is baked in); other settings build their own."""
    X, y, _ = tiny
    monkeypatch.setattr(reconstruction, "_PROGRAMS", {})
    arch_a, arch_b = models.plain_mlp(16, depth=1), models.plain_mlp(16, depth=1)
    pa, pb = arch_a.init(0, X.shape[1:]), arch_b.init(1, X.shape[1:])
    moved_a = jax.tree_util.tree_map(lambda v: v + 0.01, pa)
    moved_b = jax.tree_util.tree_map(lambda v: v * 1.1, pb)
    kw = dict(steps=20, progress=False, seed=3)
    reconstruction.reconstruct(arch_a, pa, moved_a, 4, X.shape[1:], **kw)
    shared = reconstruction.reconstruct(arch_b, pb, moved_b, 4, X.shape[1:], **kw)
    assert len(reconstruction._PROGRAMS) == 1
    monkeypatch.setattr(reconstruction, "_PROGRAMS", {})
    fresh = reconstruction.reconstruct(arch_b, pb, moved_b, 4, X.shape[1:], **kw)
    np.testing.assert_array_equal(shared.X, fresh.X)
    np.testing.assert_array_equal(shared.history["match"], fresh.history["match"])
    reconstruction.reconstruct(arch_b, pb, moved_b, 4, X.shape[1:], lr=0.01, **kw)
    assert len(reconstruction._PROGRAMS) == 2
    # a network of the same shape but another weight scale is another program (its scale is baked in)
    arch_c = models.plain_mlp(16, depth=1, W_std=2.0)
    other = reconstruction.reconstruct(arch_c, pb, moved_b, 4, X.shape[1:], **kw)
    monkeypatch.setattr(reconstruction, "_PROGRAMS", {})
    np.testing.assert_array_equal(other.X, reconstruction.reconstruct(arch_c, pb, moved_b, 4, X.shape[1:], **kw).X)
