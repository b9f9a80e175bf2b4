"""Kernel regression and its rank-one (Schur complement) update.

Prediction with training set D = (X_D, y_D), ridge lambda >= 0 and jitter:

    f(x) = K(x, X_D) (K_DD + s I)^-1 y_D,    s = lambda + jitter * mean(diag K_DD)

computed through a Cholesky factorization (float64, O(n^3) once, O(n^2) per
solve). The shift ``s`` is fixed when a problem is set up so that every system
built from it (full re-solves and rank-one updates alike) uses the same one.

Appending one point c with label y_c (Schur complement; Hayase & Oh 2023,
App. B.2): with v = A^-1 k_Dc and sigma = k_cc + s - k_cD v,

    f'(x) = f(x) + (k_xc - k_xD v) (y_c - f(c)) / sigma,

which :func:`append_predictions` evaluates for many candidates c at once in
O(n^2 m + n_x n m), against O(m n^3) for re-solving per candidate.
"""
from __future__ import annotations

import contextlib

import numpy as np
from scipy import linalg

from . import validation as _val

__all__ = ["KernelRegression", "fit", "shift_for", "append_predictions", "NotPositiveDefiniteError",
           "single_threaded_blas"]

DEFAULT_JITTER = 1e-8
# OpenBLAS's multithreaded dpotrf segfaults from n ~ 23,000 on the reference machine (both
# NumPy's 0.3.23 and SciPy's 0.3.30 builds; fine single-threaded): larger factorizations
# run with BLAS on one thread.
THREADED_CHOLESKY_MAX = 16384
_BLAS = None


def single_threaded_blas():
    """Context in which NumPy/SciPy's BLAS runs on one thread. A loss evaluation's
    float64 algebra is on small matrices (d + p rows, a few right-hand sides), where
    BLAS threads only contend with XLA's for the same cores (digits, 2 cores: one
    infinite-NTK loss + gradient 3.1 -> 2.2 ms, empirical MLP 127 -> 79 ms)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """A kernel matrix is not positive definite even after the jitter."""


def shift_for(K_dd, ridge: float = 0.0, jitter: float = DEFAULT_JITTER) -> float:
    """The diagonal shift s = ridge + jitter * mean(diag K_dd) (absolute value), in float64 whatever
    K_dd's dtype (under NumPy 2 a float32 mean would make the whole sum float32: ridge 0.1 -> 0.10000000149)."""
    ridge = _val.check_float(ridge, "ridge", min=0, hint="the ridge is added to the kernel's diagonal")
    jitter = _val.check_float(jitter, "jitter", min=0, hint="jitter is relative to the mean diagonal (e.g. 1e-8)")
    return ridge + jitter * float(np.mean(np.diag(K_dd), dtype=np.float64))


class KernelRegression:
    """Kernel regression on a fixed training set (float64 Cholesky).

    Args:
        K: (n, n) training kernel matrix; y: (n,) labels; shift: the diagonal
        shift s (see :func:`shift_for`); block: name used in error messages.

    The factor of K + s I is kept as a base factor L (n, n) plus, after
    :meth:`append`, a border of M rows R = [R_1 | T] (M, n + M) with T lower
    triangular: F = [[L, 0], [R_1, T]]. Solves cost O(n^2 + n M) and an append
    allocates only its new rows, never a copy of the n x n factor (what lets one
    loss evaluation with p poisons reuse the clean factor at O(n^2 p), in O(n p)
    new memory).
    """

    def __init__(self, K, y, shift: float, block: str = "K_DD"):
        K = _val.check_array(K, block, ndim=2, finite=False, dtype=np.float64)
        y = _val.check_labels(y, f"labels of {block}", values=None)
        if K.shape[0] != K.shape[1] or K.shape[0] != len(y):
            raise ValueError(f"{block}: expected a square (n, n) matrix and n labels, got "
                             f"{K.shape} and {y.shape}")
        self.y, self.block = y, block
        if not np.all(np.isfinite(K)):
            raise NotPositiveDefiniteError(f"{block} contains NaN or infinite entries")
        if len(K) and np.min(np.diag(K)) < 0:
            raise NotPositiveDefiniteError(
                f"{block} has negative diagonal entries (smallest {np.min(np.diag(K)):.3g}): k(x, x) >= 0 for any "
                "kernel, so this is not a kernel matrix. Increase the ridge only if it is one up to rounding; "
                "otherwise check how it was computed")
        self.shift = _val.check_float(shift, "shift", min=0)
        n = len(K)
        A = np.array(K, dtype=np.float64, order="F")  # the one working copy, factorized in place
        A[np.diag_indices(n)] += self.shift
        try:
            with single_threaded_blas() if n > THREADED_CHOLESKY_MAX else contextlib.nullcontext():
                self.L = linalg.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
        except linalg.LinAlgError as e:
            raise NotPositiveDefiniteError(
                f"{block} ({n}x{n}) is not positive definite even after adding "
                f"{self.shift:.3g} to its diagonal. Increase the ridge (e.g. ridge=1e-6 * "
                f"mean diagonal = {1e-6 * np.mean(np.diag(K)):.3g}), compute the kernel in "
                "float64 (dtype='float64'), or check for duplicate training points.") from e
        self.R = np.zeros((0, n))
        self.alpha = self.solve(y)

    def _bordered(self, R, y) -> KernelRegression:
        new = object.__new__(KernelRegression)
        new.y, new.shift, new.block, new.L, new.R = y, self.shift, self.block, self.L, R
        new.alpha = new.solve(y)
        return new

    def _forward(self, B):
        """F^-1 B (forward substitution through the base factor and the border)."""
        n = len(self.L)
        z1 = linalg.solve_triangular(self.L, B[:n], lower=True, check_finite=False)
        if not len(self.R):
            return z1
        T = self.R[:, n:]
        z2 = linalg.solve_triangular(T, B[n:] - self.R[:, :n] @ z1, lower=True, check_finite=False)
        return np.concatenate([z1, z2])

    def _backward(self, Z):
        """F^-T Z."""
        n = len(self.L)
        if not len(self.R):
            return linalg.solve_triangular(self.L, Z, lower=True, trans="T", check_finite=False)
        x2 = linalg.solve_triangular(self.R[:, n:], Z[n:], lower=True, trans="T", check_finite=False)
        x1 = linalg.solve_triangular(self.L, Z[:n] - self.R[:, :n].T @ x2, lower=True, trans="T",
                                     check_finite=False)
        return np.concatenate([x1, x2])

    def solve(self, B) -> np.ndarray:
        """(K + s I)^-1 B for B of shape (n,) or (n, m)."""
        return self._backward(self._forward(np.asarray(B, dtype=np.float64)))

    def factor(self) -> np.ndarray:
        """The dense lower Cholesky factor of K + s I (for checks; O(n^2) memory)."""
        n, M = len(self.L), len(self.R)
        F = np.zeros((n + M, n + M))
        F[:n, :n] = self.L
        F[n:] = self.R
        return F

    def predict(self, K_x) -> np.ndarray:
        """f(x) = K(x, X_D) alpha for K_x of shape (n_x, n)."""
        K_x = np.asarray(K_x, dtype=np.float64)
        if K_x.shape[-1] != len(self.y):
            raise ValueError(f"prediction block has {K_x.shape[-1]} columns but {self.block} "
                             f"has {len(self.y)} training points")
        return K_x @ self.alpha

    def append(self, k_new, k_self, y_new) -> KernelRegression:
        """A new regression with m more training points, in O(n^2 m + m^3) time and
        O(n m) new memory (this regression is left as it is).

        ``k_new`` (n,) or (n, m): kernel between the current and the new points;
        ``k_self`` (scalar or (m, m)): kernel among the new points; ``y_new``: their
        labels. With F the current factor, the new rows are [Z^T, chol(S)] with
        Z = F^-1 k_new and S = k_self + s I - Z^T Z (the Schur complement).
        """
        k_new = np.asarray(k_new, dtype=np.float64)
        k_new = k_new[:, None] if k_new.ndim == 1 else k_new
        n, m = k_new.shape
        k_self = np.asarray(k_self, dtype=np.float64).reshape(m, m)
        y_new = np.asarray(y_new, dtype=np.float64).reshape(m)
        if n != len(self.y):
            raise ValueError(f"appending to {self.block}: k_new has {n} rows but there are "
                             f"{len(self.y)} training points")
        Z = self._forward(k_new)
        S = k_self + self.shift * np.eye(m) - Z.T @ Z
        S = (S + S.T) / 2
        try:
            T = linalg.cholesky(S, lower=True, check_finite=False)
        except linalg.LinAlgError as e:
            raise NotPositiveDefiniteError(
                f"appending {m} point(s) to {self.block} makes it singular (Schur complement with "
                f"smallest eigenvalue {np.linalg.eigvalsh(S)[0]:.3g}); a point (numerically) "
                "duplicates another. Increase the ridge or jitter.") from e
        M = len(self.R)
        R = np.zeros((M + m, n + m))
        R[:M, :n] = self.R
        R[M:, :n], R[M:, n:] = Z.T, T
        return self._bordered(R, np.concatenate([self.y, y_new]))


def fit(K, y, ridge: float = 0.0, jitter: float = DEFAULT_JITTER, block: str = "K_DD") -> KernelRegression:
    """Kernel regression with shift ``ridge + jitter * mean(diag K)``."""
    return KernelRegression(K, y, shift_for(K, ridge, jitter), block)


def append_predictions(reg: KernelRegression, K_Dc, k_cc, y_c, K_xD, K_xc, f_x=None) -> np.ndarray:
    """Predictions on x after appending each candidate c alone (vectorized).

    Args:
        reg: the regression on D; K_Dc (n, m): kernel between D and the m
        candidates; k_cc (m,): their diagonal k(c, c); y_c (m,): their labels;
        K_xD (n_x, n), K_xc (n_x, m): kernels from the evaluation points;
        f_x (n_x,): current predictions (recomputed if None).

    Returns:
        (n_x, m): column j is f'(x) with candidate j appended to D.
    """
    K_Dc = np.asarray(K_Dc, dtype=np.float64)
    V = reg.solve(K_Dc)                                       # (n, m)
    sigma = np.asarray(k_cc, dtype=np.float64) + reg.shift - np.einsum("nm,nm->m", K_Dc, V)
    if np.any(sigma <= 0):
        j = int(np.argmin(sigma))
        raise NotPositiveDefiniteError(
            f"candidate {j} duplicates the training set numerically (Schur complement "
            f"{sigma[j]:.3g}); increase the ridge or jitter.")
    f_c = K_Dc.T @ reg.alpha
    f_x = reg.predict(K_xD) if f_x is None else f_x
    U = np.asarray(K_xc, dtype=np.float64) - np.asarray(K_xD, dtype=np.float64) @ V
    return f_x[:, None] + U * ((np.asarray(y_c, dtype=np.float64) - f_c) / sigma)[None, :]
