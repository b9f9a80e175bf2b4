import hashlib

import numpy as np
import pytest

from ntklib import data, triggers


def test_digits_shape_and_range():
    X, y = data.load_digits()
    assert X.shape == (1797, 8, 8, 1) and X.dtype == np.float32
    assert X.min() == 0 and X.max() == 1
    assert set(np.unique(y)) == set(range(10))


def _rows(a):
    return {a[i].tobytes() for i in range(len(a))}


def test_task_split_disjoint_balanced_deterministic():
    task = data.make_task("digits", source=7, target=1, n_eval_per_class=20, seed=3)
    # labels: target +1, source -1; t balanced
    assert set(np.unique(task.y_d)) == {-1.0, 1.0}
    assert np.sum(task.y_t == 1) == np.sum(task.y_t == -1) == 20
    assert len(task.X_a) == 20
    # d, t and test are disjoint image sets
    d, t, te = _rows(task.X_d), _rows(task.X_t), _rows(task.X_test)
    assert not (d & t) and not (d & te) and not (t & te)
    # a = triggered held-out source images of t; candidates = triggered source images of d
    np.testing.assert_array_equal(task.X_a, task.trigger(task.X_t[task.y_t < 0]))
    np.testing.assert_array_equal(task.X_cand, task.trigger(task.X_d[task.cand_index]))
    assert np.all(task.y_d[task.cand_index] == -1) and np.all(task.y_cand == 1)
    np.testing.assert_array_equal(task.X_test_trig, task.trigger(task.X_test[task.y_test < 0]))
    again = data.make_task("digits", source=7, target=1, n_eval_per_class=20, seed=3)
    np.testing.assert_array_equal(task.X_d, again.X_d)
    np.testing.assert_array_equal(task.X_t, again.X_t)
    other = data.make_task("digits", source=7, target=1, n_eval_per_class=20, seed=4)
    assert not np.array_equal(task.X_d, other.X_d)


def test_task_sizes():
    task = data.make_task("digits", 3, 8, n_train_per_class=50, n_eval_per_class=10,
                          n_test_per_class=15, n_pool=12, seed=0)
    assert len(task.X_d) == 100 and len(task.X_t) == 20 and len(task.X_test) == 30
    assert len(task.X_cand) == 12 and len(task.X_test_trig) == 15


def test_task_errors():
    with pytest.raises(ValueError, match=r"dataset='mnist' is invalid: must be one of \['digits', 'cifar10'\]"):
        data.make_task("mnist")
    with pytest.raises(ValueError, match="unknown digits class"):
        data.make_task("digits", source=11)
    with pytest.raises(ValueError, match="must differ"):
        data.make_task("digits", source=3, target=3)
    with pytest.raises(ValueError, match="only .* images are available"):
        data.make_task("digits", n_train_per_class=10_000)
    with pytest.raises(ValueError, match="n_pool"):
        data.make_task("digits", n_pool=10_000)
    with pytest.raises(ValueError, match=r"name='sparkle' is invalid: must be one of \['periodic', 'patch'\]"):
        data.make_task("digits", trigger="sparkle")
    bad = triggers.custom(lambda b: b[:, :, :4])
    with pytest.raises(ValueError, match="keep the image shape"):
        data.make_task("digits", trigger=bad)


def test_missing_cifar_says_where(tmp_path, monkeypatch):
    monkeypatch.delenv("NTKLIB_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*NTKLIB_DATA_DIR"):
        data.load_cifar10(data_dir=tmp_path)


def test_md5_mismatch_names_file(tmp_path):
    folder = tmp_path / data.CIFAR10_FOLDER
    folder.mkdir()
    for name in data.CIFAR10_MD5:
        (folder / name).write_bytes(b"not cifar")
    found = hashlib.md5(b"not cifar").hexdigest()
    with pytest.raises(ValueError, match=f"data_batch_1 is corrupt: md5 {found}, expected "
                                         f"{data.CIFAR10_MD5['data_batch_1']}"):
        data.load_cifar10(data_dir=tmp_path)


def test_unknown_cifar_class():
    with pytest.raises(ValueError, match="unknown CIFAR-10 class"):
        data.make_task("cifar10", source="spaceship", target="deer")


@pytest.mark.cifar
def test_cifar10_loads_and_task():
    Xtr, ytr, Xte, yte = data.load_cifar10(classes=["truck", "deer"])
    assert Xtr.shape == (10000, 32, 32, 3) and Xte.shape == (2000, 32, 32, 3)
    assert Xtr.dtype == np.float32 and 0 <= Xtr.min() and Xtr.max() <= 1
    assert set(np.unique(ytr)) == {4, 9}
    task = data.make_task("cifar10", source=9, target=4, n_train_per_class=300,
                          n_eval_per_class=50, n_test_per_class=100, seed=0)
    assert task.X_d.shape == (600, 32, 32, 3) and len(task.X_a) == 50
    assert len(task.X_cand) == 300 and len(task.X_test_trig) == 100
    assert not (_rows(task.X_d) & _rows(task.X_t))
    # reference periodic trigger: 6/255, 8 periods along the width
    diff = task.X_a - task.X_t[task.y_t < 0]
    assert np.abs(diff).max() <= 6 / 255 + 1e-6


def test_default_trigger_amplitude_override():
    x = np.full((1, 8, 8, 1), 0.5)
    weak = data.default_trigger("digits", "periodic", amplitude=0.05)
    assert weak.spec["amplitude"] == 0.05
    default = data.default_trigger("digits", "periodic")
    np.testing.assert_allclose(weak(x) - x, (default(x) - x) * 0.05 / 0.15, atol=1e-7)
    with pytest.raises(ValueError, match="only the periodic trigger"):
        data.default_trigger("digits", "patch", amplitude=0.1)


@pytest.mark.cifar
def test_cifar10_subset_serves_the_same_images_as_the_archive(tmp_path, monkeypatch):
    """make cifar-pair: truck and deer in one compact file (< 40 MB) that, without the archive,
    gives load_cifar10 and make_task exactly what the archive gives; checked by its sha256."""
    import json

    out = data.export_cifar10_subset((9, 4), tmp_path / "carry" / data.CIFAR10_SUBSET)
    assert out.stat().st_size < 40e6
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"] == [4, 9] and meta["counts"] == {"y_train": 10000, "y_test": 2000}
    assert meta["batch_md5"] == data.CIFAR10_MD5
    want = data.load_cifar10(classes=["truck", "deer"])
    task_kw = dict(source=9, target=4, n_train_per_class=50, n_eval_per_class=10, n_test_per_class=20, seed=1)
    task = data.make_task("cifar10", **task_kw)
    monkeypatch.setattr(data, "project_data_dir", lambda: tmp_path / "empty")  # no archive here, only the subset
    monkeypatch.setenv("NTKLIB_DATA_DIR", str(out.parent))
    got = data.load_cifar10(classes=[9, 4])
    for a, b in zip(want, got, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(data.make_task("cifar10", **task_kw).X_d, task.X_d)
    with pytest.raises(FileNotFoundError, match="holding classes \\[0\\] serves too"):
        data.load_cifar10(classes=[0])


def test_a_damaged_cifar10_subset_is_refused(tmp_path, monkeypatch):
    """A subset whose arrays do not match the sha256 of its provenance is named, not used."""
    import hashlib
    import json

    arrays = dict(X_train=np.zeros((2, 32, 32, 3), np.uint8), y_train=np.array([4, 9], np.uint8),
                  X_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.array([4, 9], np.uint8))
    meta = dict(classes=[4, 9], sha256={k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()})
    np.savez_compressed(tmp_path / data.CIFAR10_SUBSET, **arrays)
    (tmp_path / data.CIFAR10_SUBSET).with_suffix(".json").write_text(json.dumps(meta))
    Xtr, ytr, _, _ = data.load_cifar10(classes=[4], data_dir=tmp_path)
    assert Xtr.shape == (1, 32, 32, 3) and Xtr.dtype == np.float32 and ytr.tolist() == [4]
    np.savez_compressed(tmp_path / data.CIFAR10_SUBSET, **dict(arrays, X_test=np.ones((2, 32, 32, 3), np.uint8)))
    with pytest.raises(ValueError, match="X_test does not match the sha256"):
        data.load_cifar10(classes=[4], data_dir=tmp_path)
