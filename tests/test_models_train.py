import numpy as np
import pytest

from ntklib import data, models, train


def test_architectures_build_and_output_scalar():
    x = data.load_digits()[0][:3]
    for arch in [models.mlp(16), models.mlp(16, activation="erf"), models.cnn(4),
                 models.cnn(4, readout="pool"), models.wide_resnet(depth=10, k=1), models.plain_mlp(8)]:
        p = arch.init(0, x.shape)
        assert arch.predict(p, x).shape == (3,)
        assert models.build(arch.spec).spec == arch.spec
    with pytest.raises(ValueError, match="6 n \\+ 4"):
        models.wide_resnet(depth=12)
    with pytest.raises(ValueError, match=r"name='transformer' is invalid: must be one of"):
        models.build({"name": "transformer"})
    with pytest.raises(ValueError, match=r"activation='tanh' is invalid: must be one of \['relu', 'erf'\]"):
        models.mlp(activation="tanh")


@pytest.fixture(scope="module")
def small():
    task = data.make_task("digits", source=0, target=1, n_train_per_class=20, n_eval_per_class=5)
    return task.X_d, task.y_d


def test_training_reaches_near_zero_loss(small):
    X, y = small
    r = train.train(models.mlp(256), X, y, train.TrainConfig(lr=2.0, steps=3000, target_loss=1e-3),
                    progress=False)
    assert r.converged and r.final_loss < 1e-3, r.final_loss
    assert r.history["acc"][-1] == 1.0
    assert np.max(np.abs(train.residuals(models.mlp(256), r.params, X, y))) < 0.1


@pytest.mark.parametrize("batch_size", [None, 16])
def test_training_is_deterministic(small, batch_size):
    X, y = small
    cfg = train.TrainConfig(lr=1.0, steps=60, eval_every=20, batch_size=batch_size, seed=3)
    a = train.train(models.mlp(32), X, y, cfg, progress=False)
    b = train.train(models.mlp(32), X, y, cfg, progress=False)
    for u, v in zip(*(np.asarray(p) for p in (a.history["loss"], b.history["loss"])), strict=True):
        assert u == v
    np.testing.assert_array_equal(train.predict(models.mlp(32), a.params, X),
                                  train.predict(models.mlp(32), b.params, X))


def test_save_load_roundtrip(small, tmp_path):
    X, y = small
    arch = models.cnn(4)
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
        train.train(models.mlp(8), X, y[:-1], progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        train.train(models.mlp(64), X, y, train.TrainConfig(lr=1e4, steps=200, eval_every=10), progress=False)


def test_target_residual_keeps_training_until_every_point_fits(small):
    """Mean loss alone can stop with one point unfitted; target_residual cannot."""
    X, y = small
    arch = models.mlp(128)
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
