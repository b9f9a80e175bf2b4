import numpy as np
import pytest

from ntklib import regression as R


def _rbf(A, B, scale=1.0):
    d2 = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * scale * scale))


@pytest.mark.parametrize("ridge,jitter", [(0.0, 1e-8), (0.1, 1e-6), (0.0, 0.0)])
def test_rank_one_equals_full_resolve(ridge, jitter):
    rng = np.random.default_rng(0)
    X, C, Z = rng.normal(size=(15, 3)), rng.normal(size=(6, 3)), rng.normal(size=(9, 3))
    y, y_c = rng.choice([-1.0, 1.0], 15), rng.choice([-1.0, 1.0], 6)
    K = _rbf(X, X)
    reg = R.fit(K, y, ridge, jitter)
    F = R.append_predictions(reg, _rbf(X, C), np.ones(6), y_c, _rbf(Z, X), _rbf(Z, C))
    for j in range(6):
        Xj = np.vstack([X, C[j:j + 1]])
        full = R.KernelRegression(_rbf(Xj, Xj), np.append(y, y_c[j]), reg.shift)
        np.testing.assert_allclose(F[:, j], full.predict(_rbf(Z, Xj)), rtol=1e-9, atol=1e-10)
        # Cholesky append equals a fresh factorization of the enlarged system
        app = reg.append(_rbf(X, C[j:j + 1])[:, 0], 1.0, y_c[j])
        np.testing.assert_allclose(app.alpha, full.alpha, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(app.factor(), full.factor(), rtol=1e-8, atol=1e-12)


def test_block_append_equals_fresh_factorization():
    """Appending m points at once (block Cholesky, used by the loss of m poisons)
    equals factorizing the enlarged matrix from scratch, and equals m one-point appends."""
    rng = np.random.default_rng(2)
    X, C, Z = rng.normal(size=(20, 3)), rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    y, y_c = rng.choice([-1.0, 1.0], 20), rng.choice([-1.0, 1.0], 5)
    reg = R.fit(_rbf(X, X), y, ridge=0.05)
    XC = np.vstack([X, C])
    full = R.KernelRegression(_rbf(XC, XC), np.append(y, y_c), reg.shift)
    app = reg.append(_rbf(X, C), _rbf(C, C), y_c)
    np.testing.assert_allclose(app.factor(), full.factor(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(app.predict(_rbf(Z, XC)), full.predict(_rbf(Z, XC)), rtol=1e-9, atol=1e-12)
    one = reg
    for j in range(5):
        one = one.append(_rbf(np.vstack([X, C[:j]]), C[j:j + 1])[:, 0], 1.0, y_c[j])
    np.testing.assert_allclose(one.alpha, app.alpha, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="20 training points"):
        reg.append(_rbf(X[:3], C), _rbf(C, C), y_c)
    with pytest.raises(R.NotPositiveDefiniteError, match="duplicates"):
        R.fit(np.eye(2), np.ones(2), jitter=0.0).append(np.array([[1.0, 1.0], [0.0, 0.0]]), np.ones((2, 2)),
                                                          np.ones(2))


def test_predict_interpolates_and_shift():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 2))
    reg = R.fit(_rbf(X, X), np.arange(10.0), ridge=0.0, jitter=1e-12)
    np.testing.assert_allclose(reg.predict(_rbf(X, X)), np.arange(10.0), atol=1e-6)
    assert R.shift_for(np.eye(3) * 2, ridge=0.5, jitter=0.1) == pytest.approx(0.7)
    # a float32 kernel's shift is still computed in float64 (NumPy 2 would keep the sum in float32)
    assert R.shift_for(np.eye(3, dtype=np.float32), ridge=0.1, jitter=1e-8) == 0.1 + 1e-8


def test_not_positive_definite_error_names_block_and_suggests():
    K = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # indefinite, positive diagonal
    with pytest.raises(R.NotPositiveDefiniteError, match="K_test .*ridge.*float64"):
        R.fit(K, np.ones(3), jitter=0.0, block="K_test")
    with pytest.raises(R.NotPositiveDefiniteError, match="K_test has negative diagonal entries"):
        R.fit(-np.eye(3), np.ones(3), jitter=0.0, block="K_test")
    reg = R.fit(np.eye(2), np.ones(2), jitter=0.0)
    with pytest.raises(R.NotPositiveDefiniteError, match="duplicate"):
        reg.append(np.array([1.0, 0.0]), 1.0, 1.0)  # copy of point 0, no shift


def test_shape_errors():
    with pytest.raises(ValueError, match="square"):
        R.fit(np.ones((3, 2)), np.ones(3))
    reg = R.fit(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="3 training points"):
        reg.predict(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"ridge=-1 is invalid: must be >= 0"):
        R.fit(np.eye(3), np.ones(3), ridge=-1)


def test_a_candidate_whose_schur_complement_is_exactly_zero_is_refused():
    """sigma = k_cc + s - k_cD A^-1 k_Dc = 0 exactly (a copy of a training point, no shift) is singular,
    not only sigma < 0; the message names the offending candidate (index 1 here, candidate 0 is fine)."""
    reg = R.KernelRegression(np.eye(2), np.ones(2), shift=0.0)
    K_Dc = np.array([[0.5, 1.0], [0.0, 0.0]])  # candidate 1 equals training point 0 in feature space
    with pytest.raises(R.NotPositiveDefiniteError, match=r"candidate 1 duplicates .*Schur complement 0"):
        R.append_predictions(reg, K_Dc, np.array([1.0, 1.0]), np.ones(2), np.eye(2), K_Dc)


def test_large_factorizations_run_with_single_threaded_blas(monkeypatch):
    """Above THREADED_CHOLESKY_MAX points (and only there) the Cholesky runs inside single_threaded_blas,
    which holds BLAS at one thread."""
    from threadpoolctl import threadpool_info

    with R.single_threaded_blas():
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and set(blas) == {1}
    entered = []

    class Spy:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(R, "single_threaded_blas", Spy)
    monkeypatch.setattr(R, "THREADED_CHOLESKY_MAX", 4)
    R.fit(np.eye(4), np.ones(4))
    assert entered == []
    R.fit(np.eye(5), np.ones(5))
    assert entered == [True]


def test_float32_and_integer_inputs_give_the_float64_results_exactly():
    """The algebra is float64 whatever the inputs' dtype: float32 or integer kernels are promoted exactly
    (every float32 is a float64), so the results are bit-identical to those of the float64 inputs."""
    rng = np.random.default_rng(3)
    X, C, Z = rng.normal(size=(12, 3)), rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    blocks = [_rbf(X, X), _rbf(X, C), _rbf(Z, X), _rbf(Z, C), _rbf(C, C)]
    y, y_c = rng.choice([-1.0, 1.0], 12), np.array([1, -1, 1, 1])
    for cast in (lambda a: a.astype(np.float32), lambda a: np.round(a * 4).astype(np.int64) + 4 * np.eye(*a.shape,
                                                                                                        dtype=int)):
        K, K_Dc, K_xD, K_xc, K_cc = map(cast, blocks)
        K_ref, K_Dc_ref, K_xD_ref, K_xc_ref, K_cc_ref = (b.astype(np.float64) for b in (K, K_Dc, K_xD, K_xc, K_cc))
        reg, ref = R.fit(K, y, ridge=0.1), R.fit(K_ref, y, ridge=0.1)
        assert np.array_equal(reg.alpha, ref.alpha) and np.array_equal(reg.predict(K_xD), ref.predict(K_xD_ref))
        assert np.array_equal(reg.solve(K_Dc), ref.solve(K_Dc_ref))
        got = R.append_predictions(reg, K_Dc, np.diag(K_cc), y_c.astype(np.int32), K_xD, K_xc)
        want = R.append_predictions(ref, K_Dc_ref, np.diag(K_cc_ref), y_c.astype(np.float64), K_xD_ref, K_xc_ref)
        assert got.dtype == np.float64 and np.array_equal(got, want)
        app, app_ref = reg.append(K_Dc, K_cc, y_c), ref.append(K_Dc_ref, K_cc_ref, y_c.astype(np.float64))
        assert np.array_equal(app.alpha, app_ref.alpha)
