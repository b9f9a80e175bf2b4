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

import numpy as np
from scipy import linalg

__all__ = ["KernelRegression", "fit", "shift_for", "append_predictions", "NotPositiveDefiniteError"]

DEFAULT_JITTER = 1e-8


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """A kernel matrix is not positive definite even after the jitter."""


def shift_for(K_dd, ridge: float = 0.0, jitter: float = DEFAULT_JITTER) -> float:
    """The diagonal shift s = ridge + jitter * mean(diag K_dd) (absolute value)."""
    if ridge < 0 or jitter < 0:
        raise ValueError(f"ridge and jitter must be >= 0 (got ridge={ridge}, jitter={jitter})")
    return float(ridge + jitter * np.mean(np.diag(K_dd)))


class KernelRegression:
    """Kernel regression on a fixed training set (float64 Cholesky).

    Args:
        K: (n, n) training kernel matrix; y: (n,) labels; shift: the diagonal
        shift s (see :func:`shift_for`); block: name used in error messages.
    """

    def __init__(self, K, y, shift: float, block: str = "K_DD", _chol=None):
        K = np.asarray(K, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] != len(y):
            raise ValueError(f"{block}: expected a square (n, n) matrix and n labels, got "
                             f"{K.shape} and {y.shape}")
        self.K, self.y, self.shift, self.block = K, y, float(shift), block
        if _chol is None:
            if not np.all(np.isfinite(K)):
                raise NotPositiveDefiniteError(f"{block} contains NaN or infinite entries")
            try:
                _chol = linalg.cholesky(K + self.shift * np.eye(len(K)), lower=True)
            except linalg.LinAlgError as e:
                raise NotPositiveDefiniteError(
                    f"{block} ({len(K)}x{len(K)}) is not positive definite even after adding "
                    f"{self.shift:.3g} to its diagonal. Increase the ridge (e.g. ridge=1e-6 * "
                    f"mean diagonal = {1e-6 * np.mean(np.diag(K)):.3g}), compute the kernel in "
                    "float64 (dtype='float64'), or check for duplicate training points.") from e
        self.L = _chol
        self.alpha = self.solve(y)

    def solve(self, B) -> np.ndarray:
        """(K + s I)^-1 B for B of shape (n,) or (n, m)."""
        return linalg.cho_solve((self.L, True), np.asarray(B, dtype=np.float64), check_finite=False)

    def predict(self, K_x) -> np.ndarray:
        """f(x) = K(x, X_D) alpha for K_x of shape (n_x, n)."""
        K_x = np.asarray(K_x, dtype=np.float64)
        if K_x.shape[-1] != len(self.y):
            raise ValueError(f"prediction block has {K_x.shape[-1]} columns but {self.block} "
                             f"has {len(self.y)} training points")
        return K_x @ self.alpha

    def append(self, k_new, k_self: float, y_new: float) -> "KernelRegression":
        """A new regression with one more training point, in O(n^2) (Cholesky row append)."""
        k_new = np.asarray(k_new, dtype=np.float64)
        l = linalg.solve_triangular(self.L, k_new, lower=True, check_finite=False)
        sigma = k_self + self.shift - l @ l
        if not sigma > 0:
            raise NotPositiveDefiniteError(
                f"appending a point to {self.block} makes it singular (Schur complement "
                f"{sigma:.3g}); the point is (numerically) a duplicate. Increase the ridge or jitter.")
        n = len(self.y)
        L = np.zeros((n + 1, n + 1))
        L[:n, :n], L[n, :n], L[n, n] = self.L, l, np.sqrt(sigma)
        K = np.block([[self.K, k_new[:, None]], [k_new[None, :], np.array([[k_self]])]])
        return KernelRegression(K, np.append(self.y, y_new), self.shift, self.block, _chol=L)


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
