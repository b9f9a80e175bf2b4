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


def test_each_trigger_clips_to_the_box_on_both_sides_and_keeps_the_dtype():
    """Near 0 and near 1 the additions overshoot the box: every trigger clips both ways and returns
    the input's dtype (float32 images stay float32)."""
    x = np.stack([np.full((4, 8, 1), 0.02), np.full((4, 8, 1), 0.98)]).astype(np.float32)
    outs = {
        "periodic": triggers.periodic(x, amplitude=0.1, periods=1),
        "vertical": triggers.periodic(x.transpose(0, 2, 1, 3), amplitude=0.1, periods=1, orientation="vertical"),
        "patch": triggers.patch(x, size=3, location=(0, 0)),
        "pattern": triggers.from_pattern(x, np.array([[[1.2]], [[-0.5]], [[1.0]], [[0.0]]]), np.ones((4, 1, 1))),
        "custom": triggers.custom(lambda b: b + np.where(np.arange(8) % 2 == 0, 0.5, -0.5)[None, None, :, None])(x),
    }
    for name, out in outs.items():
        assert out.dtype == np.float32, name
        assert out.min() == 0 and out.max() == 1, name  # both edges reached: clipped, not left outside
    wave = 0.1 * np.sin(np.linspace(0, 2 * np.pi, 8))
    np.testing.assert_allclose(outs["periodic"][1, 0, :, 0], np.clip(0.98 + wave, 0, 1), atol=1e-6)
    np.testing.assert_allclose(outs["periodic"][0, 0, :, 0], np.clip(0.02 + wave, 0, 1), atol=1e-6)
    assert triggers.custom(lambda b: b + 0.1)(np.zeros((0, 4, 8, 1))).shape == (0, 4, 8, 1)  # an empty batch


def test_checkerboard_and_fixed_patch_locations_at_the_edges():
    np.testing.assert_array_equal(triggers.checkerboard(3), [[1, -1, 1], [-1, 1, -1], [1, -1, 1]])
    x = np.full((1, 4, 6, 1), 0.5)
    for r, c in ((0, 0), (2, 4), (0, 4), (2, 0)):  # every corner that fits a 2 x 2 patch in 4 x 6 images
        out = triggers.patch(x, size=2, location=(r, c))[0, :, :, 0]
        assert out[r, c] == 1 and out[r, c + 1] == 0 and out[r + 1, c] == 0 and np.sum(out != 0.5) == 4
    for r, c in ((3, 0), (0, 5), (3, 5)):
        with pytest.raises(ValueError, match="does not fit in 4x6 images"):
            triggers.patch(x, size=2, location=(r, c))


def test_pattern_trigger_blends_its_pattern_by_its_mask():
    x = np.full((2, 2, 2, 1), 0.4)
    pattern = np.array([[1.0, 0.0], [1.0, 0.0]])[:, :, None]
    mask = np.array([[1.0, 1.0], [0.5, 0.0]])[:, :, None]  # 0 and 1 are valid weights
    t = triggers.make_trigger("pattern", pattern=pattern, mask=mask)
    assert t.spec == {"name": "pattern"}
    np.testing.assert_allclose(t(x)[1, :, :, 0], [[1.0, 0.0], [0.7, 0.4]])
    np.testing.assert_allclose(triggers.make_trigger("pattern", pattern=0.5, mask=1.0)(x), 0.5)
    for bad in (np.ones((3, 3, 1)), np.ones((2, 2, 2, 1)), np.ones(3)):
        for kw in (dict(pattern=bad, mask=mask), dict(pattern=pattern, mask=bad)):
            with pytest.raises(ValueError, match=r"must broadcast to one image of shape \(2, 2, 1\)"):
                triggers.from_pattern(x, **kw)
    for bad_mask in (np.full((2, 2, 1), 1.5), np.full((2, 2, 1), -0.1)):
        with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
            triggers.from_pattern(x, pattern, bad_mask)
    for k, v in (("pattern", 1.5), ("mask", -0.1), ("mask", 1.01)):
        with pytest.raises(ValueError, match=rf"{k} has values outside \[0, 1\]"):
            triggers.make_trigger("pattern", **{**dict(pattern=0.5, mask=1.0), k: v})
    assert triggers.custom(lambda b: b, "identity").spec == {"name": "identity"}


@pytest.mark.parametrize("low, high, refused", [(-1.0, 2.0, False), (-1.01, 1.0, True), (0.0, 2.01, True),
                                                (-1.5, 1.0, True), (0.0, 2.5, True)])
def test_a_trigger_may_overshoot_the_box_by_less_than_its_width(low, high, refused):
    """Outputs in [-1, 2] are clipped; beyond on either side, refused (the 8-bit hint only above)."""
    x = np.full((1, 2, 2, 1), 0.5)
    t = triggers.custom(lambda b: np.where(np.arange(2)[None, :, None, None] == 0, low, high) + 0 * b)
    if not refused:
        np.testing.assert_array_equal(t(x)[0, :, 0, 0], [0.0, 1.0])
        return
    with pytest.raises(ValueError, match="a trigger maps images in") as err:
        t(x)
    assert ("8-bit scale?" in str(err.value)) == (high > 2)
