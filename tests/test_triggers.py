import numpy as np
import pytest

from ntklib import triggers


def test_periodic_hand_computed():
    x = np.full((2, 3, 4, 1), 0.5)
    out = triggers.periodic(x, amplitude=0.1, periods=1)
    # linspace(0, 2 pi, 4) = 0, 2pi/3, 4pi/3, 2pi -> sin = 0, .866, -.866, 0
    wave = 0.1 * np.array([0.0, np.sqrt(3) / 2, -np.sqrt(3) / 2, 0.0])
    np.testing.assert_allclose(out, np.broadcast_to(0.5 + wave[None, None, :, None], x.shape), atol=1e-12)
    vert = triggers.periodic(x[:, :, :3], amplitude=0.1, periods=1, orientation="vertical")
    np.testing.assert_allclose(vert[0, :, 0, 0], 0.5 + 0.1 * np.array([0, 0, 0]), atol=1e-12)


def test_periodic_reference_and_clipping():
    x = np.zeros((1, 2, 32, 3))
    out = triggers.periodic(x, amplitude=6 / 255, periods=8)
    ref = np.clip(6 / 255 * np.sin(np.linspace(0, 16 * np.pi, 32)), 0, 1)
    np.testing.assert_allclose(out[0, 1, :, 2], ref, atol=1e-12)
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(out[0, 0] == out[0, 1])  # same in every row


def test_patch_fixed_location_hand_computed():
    x = np.full((1, 4, 4, 1), 0.5)
    out = triggers.patch(x, size=2, location=(1, 2))
    expect = np.full((4, 4), 0.5)
    expect[1, 2], expect[1, 3], expect[2, 2], expect[2, 3] = 1, 0, 0, 1
    np.testing.assert_array_equal(out[0, :, :, 0], expect)


def test_patch_random_is_per_image_and_seeded():
    x = np.full((20, 8, 8, 3), 0.5)
    a = triggers.patch(x, size=3, seed=1)
    b = triggers.patch(x, size=3, seed=1)
    np.testing.assert_array_equal(a, b)
    changed = [tuple(np.argwhere(a[k, :, :, 0] != 0.5).min(0)) for k in range(20)]
    assert len(set(changed)) > 1  # different locations
    assert all(np.sum(a[k] != 0.5) == 27 for k in range(20))


def test_pattern_and_custom():
    x = np.full((1, 2, 2, 1), 0.2)
    mask = np.array([[1, 0], [0, 0.5]])[:, :, None]
    out = triggers.from_pattern(x, np.ones((2, 2, 1)), mask)
    np.testing.assert_allclose(out[0, :, :, 0], [[1.0, 0.2], [0.2, 0.6]])
    t = triggers.custom(lambda b: b + 0.9)
    np.testing.assert_allclose(t(x), 1.0)  # clipped


def test_make_trigger():
    t = triggers.make_trigger("periodic", amplitude=0.2, periods=2)
    assert t.spec == {"name": "periodic", "amplitude": 0.2, "periods": 2}
    assert t(np.zeros((3, 8, 8, 1))).shape == (3, 8, 8, 1)


def test_errors():
    with pytest.raises(ValueError, match="keep the image shape"):
        triggers.custom(lambda b: b[:, :4])(np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"name='sparkle' is invalid: must be one of \['patch', 'periodic'"):
        triggers.make_trigger("sparkle")
    with pytest.raises(ValueError, match="unknown parameter"):
        triggers.make_trigger("periodic", amplitud=0.1)
    with pytest.raises(ValueError, match="does not fit"):
        triggers.patch(np.zeros((1, 4, 4, 1)), size=2, location=(3, 3))
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        triggers.periodic(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        triggers.custom(lambda b: b * np.nan)(np.zeros((1, 2, 2, 1)))
