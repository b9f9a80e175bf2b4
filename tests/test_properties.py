"""Property-based tests (hypothesis): invariants that hold on *any* valid input, and the
validators' contract on any input at all. Shrinking reports the smallest failing case."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ntklib import artifacts, attack, kernels, triggers
from ntklib import validation as V

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = st.tuples(st.integers(1, 4), st.integers(2, 9), st.integers(2, 9), st.sampled_from([1, 3]))


def images(shape, lo=0.0, hi=1.0):
    return hnp.arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


# ---------------------------------------------------------------------------- validators
@FAST
@given(v=st.integers(-10**6, 10**6), lo=st.integers(-100, 100), span=st.integers(0, 200))
def test_check_int_accepts_exactly_the_range(v, lo, span):
    hi = lo + span
    if lo <= v <= hi:
        assert V.check_int(v, "n", min=lo, max=hi) == v
    else:
        with pytest.raises(ValueError, match=rf"n={v} is invalid: must be >= {lo} and <= {hi}"):
            V.check_int(v, "n", min=lo, max=hi)


@FAST
@given(v=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.booleans(),
                   st.none(), st.lists(st.integers(), max_size=2)))
def test_check_float_refuses_everything_but_finite_numbers(v):
    ok = isinstance(v, float) and np.isfinite(v)
    if ok:
        assert V.check_float(v, "x") == v
    else:
        with pytest.raises((TypeError, ValueError), match="x=.* is invalid"):
            V.check_float(v, "x")


@FAST
@given(v=st.text(max_size=12), choices=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5))
def test_check_choice_accepts_exactly_the_choices(v, choices):
    if v in choices:
        assert V.check_choice(v, "kind", choices) == v
    else:
        with pytest.raises(ValueError, match="must be one of"):
            V.check_choice(v, "kind", choices)


@FAST
@given(shape=shapes, data=st.data())
def test_check_images_accepts_the_box_and_refuses_anything_outside(shape, data):
    X = data.draw(images(shape, -0.5, 1.5))
    inside = bool(np.all((X >= -1e-6) & (X <= 1 + 1e-6)))
    if inside:
        assert V.check_images(X, "X").shape == shape
    else:
        with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
            V.check_images(X, "X")
    X[(0,) * 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        V.check_images(X, "X")


@FAST
@given(budgets=st.lists(st.integers(-5, 30), min_size=1, max_size=6), pool=st.integers(1, 20))
def test_check_budgets_is_sorted_distinct_and_inside_the_pool(budgets, pool):
    if all(1 <= b <= pool for b in budgets):
        out = V.check_budgets(budgets, "budgets", pool)
        assert out == sorted(set(budgets))
    else:
        with pytest.raises(ValueError, match=r"budgets\[\d+\]="):
            V.check_budgets(budgets, "budgets", pool)


@FAST
@given(n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 10**6), scale=st.floats(1e-3, 1e3))
def test_check_gram_accepts_every_gram_matrix_and_refuses_its_negative(n, m, seed, scale):
    """Any R R^T (also singular: m < n) is a kernel matrix; -R R^T is not, and neither is a matrix
    made asymmetric by more than rounding."""
    R = np.random.default_rng(seed).standard_normal((n, m)) * scale
    K = R @ R.T
    np.testing.assert_allclose(V.check_gram(K, "K"), K)
    assume(np.linalg.eigvalsh(K)[-1] > 1e-3 * np.max(np.diag(K)))
    with pytest.raises(ValueError, match="is not positive semi-definite"):
        V.check_gram(-K, "K")
    if n > 1:
        A = K.copy()
        A[0, -1] += 0.01 * np.max(np.diag(K))
        with pytest.raises(ValueError, match="is not symmetric"):
            V.check_gram(A, "K")


@FAST
@given(values=hnp.arrays(np.int64, st.integers(1, 12), elements=st.integers(-2, 2)))
def test_check_mask_takes_booleans_and_0_1_and_refuses_other_labels(values):
    if np.all(np.isin(values, (0, 1))):
        np.testing.assert_array_equal(V.check_mask(values, "m"), values == 1)
        np.testing.assert_array_equal(V.check_mask(values == 1, "m"), values == 1)
    else:
        with pytest.raises(ValueError, match="must be a boolean mask"):
            V.check_mask(values, "m")


# ---------------------------------------------------------------------------- triggers
@FAST
@given(shape=shapes, amplitude=st.floats(1e-3, 1.0), periods=st.floats(0.1, 8), vertical=st.booleans(),
       data=st.data())
def test_periodic_trigger_keeps_shape_and_box(shape, amplitude, periods, vertical, data):
    X = data.draw(images(shape))
    t = triggers.make_trigger("periodic", amplitude=amplitude, periods=periods,
                              orientation="vertical" if vertical else "horizontal")
    out = t(X)
    assert out.shape == X.shape and out.dtype == X.dtype
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1


@FAST
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), data=st.data())
def test_patch_trigger_keeps_shape_and_box_and_sets_the_patch(shape, seed, data):
    X = data.draw(images(shape))
    size = data.draw(st.integers(1, min(shape[1], shape[2])))
    out = triggers.make_trigger("patch", size=size, seed=seed)(X)
    assert out.shape == X.shape and out.min() >= 0 and out.max() <= 1
    # every image gets one size x size checkerboard of exact 0s and 1s somewhere
    changed = np.isin(out, (0.0, 1.0))
    assert all(changed[i].sum() >= size * size * shape[3] for i in range(shape[0]))


# ---------------------------------------------------------------------------- the loss
@SLOW
@given(seed=st.integers(0, 10_000), n_d=st.integers(3, 8), n_p=st.integers(1, 3))
def test_backdoor_loss_is_finite_and_its_gradient_matches_finite_differences(seed, n_d, n_p):
    """On random small problems (RBF kernel, float64): dL/dX_p against central differences
    along a random direction, at a random point inside the box."""
    rng = np.random.default_rng(seed)
    shape = (3, 3, 1)

    def imgs(n):
        return rng.uniform(0.1, 0.9, (n,) + shape)

    y_d = np.where(np.arange(n_d) % 2 == 0, 1.0, -1.0)
    P = attack.BackdoorProblem(kernels.rbf(1.0, dtype="float64"), imgs(n_d), y_d, imgs(4),
                               np.array([1.0, -1, 1, -1]), imgs(3), ridge=1e-3)
    X_p = imgs(n_p)
    res, g = P.evaluate(X_p, grad=True)
    assert np.isfinite(res.loss) and np.all(np.isfinite(g)) and g.shape == X_p.shape
    v = rng.standard_normal(X_p.shape)
    h = 1e-5
    fd = (P.loss(X_p + h * v).loss - P.loss(X_p - h * v).loss) / (2 * h)
    assume(abs(fd) > 1e-8)
    np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------------------- artifacts
@FAST
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), data=st.data(),
       params=st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6),
                              st.one_of(st.integers(-100, 100), st.text(max_size=5), st.booleans()), max_size=4))
def test_saved_then_loaded_poisons_are_identical(tmp_path, shape, dtype, data, params):
    X = data.draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=32)))
    idx = data.draw(st.lists(st.integers(0, 1000), min_size=shape[0], max_size=shape[0]))
    stem = artifacts.save_poisons(tmp_path / "p", X, params, indices=idx, grid=False)
    X2, meta = artifacts.load_poisons(stem)
    assert X2.dtype == X.dtype and np.array_equal(X2, X)
    assert meta["params"] == params and meta["indices"] == idx
