import jax
import numpy as np
import pytest

from ntklib import data, models, train


def test_architectures_build_and_output_scalar():
    x = data.load_digits()[0][:3]
    for arch in [models.mlp(16), models.mlp(16, activation="erf"), models.cnn(4),
                 models.cnn(4, readout="pool"), models.wide_resnet(depth=10, k=1), models.plain_mlp(8),
                 models.plain_cnn(4), models.plain_cnn(4, readout="pool"), models.plain_wide_resnet(10, 1)]:
        p = arch.init(0, x.shape)
        assert arch.predict(p, x).shape == (3,)
        assert models.build(arch.spec).spec == arch.spec
    with pytest.raises(ValueError, match="6 n \\+ 4"):
        models.wide_resnet(depth=12)
    with pytest.raises(ValueError, match=r"name='transformer' is invalid: must be one of"):
        models.build({"name": "transformer"})
    with pytest.raises(ValueError, match=r"activation='tanh' is invalid: must be one of \['relu', 'erf'\]"):
        models.mlp(activation="tanh")


def _wrn_parameter_count(depth, k, channels):
    """WRN-depth-k's parameters counted by hand: 3x3 convs with biases, stem to 16 channels,
    a strided 3x3 shortcut conv in each group's first block, Dense(64 k -> 1)."""
    n, conv = (depth - 4) // 6, lambda c_in, c_out: 9 * c_in * c_out + c_out
    total, c = conv(channels, 16), 16
    for ch in (16 * k, 32 * k, 64 * k):
        total += conv(c, ch) + conv(ch, ch) + conv(c, ch) + (n - 1) * 2 * conv(ch, ch)
        c = ch
    return total + 64 * k + 1


@pytest.mark.parametrize("depth, k", [(10, 1), (16, 2)])
def test_plain_wide_resnet_shapes(depth, k):
    """Plain-JAX WRN (no neural-tangents): the parameter count of the architecture, 32x32 inputs
    halved twice, pooled features of width 64 k, and an O(1) output at init (NTK parameterization)."""
    arch = models.plain_wide_resnet(depth=depth, k=k)
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    p = arch.init(0, x.shape)
    assert sum(a.size for a in jax.tree_util.tree_leaves(p)) == _wrn_parameter_count(depth, k, 3)
    assert arch.features(p, x).shape == (4, 64 * k)
    f = arch.predict(p, x)
    assert f.shape == (4,) and np.all(np.isfinite(f)) and np.abs(f).max() < 10
    assert models.build(arch.spec).spec == arch.spec
    with pytest.raises(ValueError, match="6 n \\+ 4"):
        models.plain_wide_resnet(depth=12)


def test_same_seed_same_network_on_every_jax():
    """Architecture.init draws with jax_threefry_partitionable off, so a seed gives the parameters the
    pinned JAX 0.4.25 gave (values recorded there) on a current JAX too (make test-current)."""
    p = jax.tree_util.tree_leaves(models.plain_wide_resnet(10, 1).init(7, (8, 8, 3)))
    np.testing.assert_allclose(np.asarray(p[0]).ravel()[:4], [0.28593206, -0.20961097, -0.93122101, 0.65553886],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p[-2]).ravel()[:3], [1.46458089, 0.05133993, 0.09637803], rtol=1e-6)


def test_plain_cnn_trains():
    """The plain-JAX CNN fits a small task with the trainer, as stax's does."""
    task = data.make_task("digits", source=0, target=1, n_train_per_class=15, n_eval_per_class=5)
    arch = models.plain_cnn(8, depth=1)
    r = train.train(arch, task.X_d, task.y_d, train.TrainConfig(lr=1.0, steps=1500, target_loss=1e-3),
                    progress=False)
    assert r.final_loss < 1e-3, r.final_loss


@pytest.fixture(scope="module")
def small():
    task = data.make_task("digits", source=0, target=1, n_train_per_class=20, n_eval_per_class=5)
    return task.X_d, task.y_d


def test_training_reaches_near_zero_loss(small):
    X, y = small
    r = train.train(models.plain_mlp(256), X, y, train.TrainConfig(lr=2.0, steps=3000, target_loss=1e-3),
                    progress=False)
    assert r.converged and r.final_loss < 1e-3, r.final_loss
    assert r.history["acc"][-1] == 1.0
    assert np.max(np.abs(train.residuals(models.plain_mlp(256), r.params, X, y))) < 0.1


@pytest.mark.parametrize("batch_size", [None, 16])
def test_training_is_deterministic(small, batch_size):
    X, y = small
    cfg = train.TrainConfig(lr=1.0, steps=60, eval_every=20, batch_size=batch_size, seed=3)
    a = train.train(models.plain_mlp(32), X, y, cfg, progress=False)
    b = train.train(models.plain_mlp(32), X, y, cfg, progress=False)
    for u, v in zip(*(np.asarray(p) for p in (a.history["loss"], b.history["loss"])), strict=True):
        assert u == v
    np.testing.assert_array_equal(train.predict(models.plain_mlp(32), a.params, X),
                                  train.predict(models.plain_mlp(32), b.params, X))


def test_save_load_roundtrip(small, tmp_path):
    X, y = small
    arch = models.plain_cnn(4)
    r = train.train(arch, X, y, train.TrainConfig(steps=20, eval_every=10), progress=False)
    path = train.save_params(tmp_path / "net.npz", arch, r.params)
    arch2, params2 = train.load_params(path, X.shape[1:])
    assert arch2.spec == arch.spec
    np.testing.assert_array_equal(train.predict(arch2, params2, X), train.predict(arch, r.params, X))
    with pytest.raises(ValueError, match="do not match"):
        train.load_params(path, (16, 16, 1))


def test_train_errors(small):
    X, y = small
    with pytest.raises(ValueError, match="optimizer"):
        train.TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="holds 39 labels for 40 images"):
        train.train(models.plain_mlp(8), X, y[:-1], progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        train.train(models.plain_mlp(64), X, y, train.TrainConfig(lr=1e4, steps=200, eval_every=10), progress=False)


def test_target_residual_keeps_training_until_every_point_fits(small):
    """Mean loss alone can stop with one point unfitted; target_residual cannot."""
    X, y = small
    arch = models.plain_mlp(128)
    y = y.copy()
    y[0] = -y[0]  # one hard point (a stand-in for a poison)
    loose = train.train(arch, X, y, train.TrainConfig(lr=0.5, steps=3000, target_loss=2e-3, eval_every=10),
                        progress=False)
    strict = train.train(arch, X, y, train.TrainConfig(lr=0.5, steps=3000, target_loss=2e-3,
                                                        target_residual=0.05, eval_every=10), progress=False)
    assert strict.steps >= loose.steps
    res = np.abs(train.residuals(arch, strict.params, X, y))
    if strict.converged:
        assert res.max() < 0.05 and strict.history["max_residual"][-1] < 0.05
    assert np.abs(train.residuals(arch, loose.params, X, y)).max() > res.max()
    with pytest.raises(ValueError, match="target_residual"):
        train.TrainConfig(target_residual=0)
