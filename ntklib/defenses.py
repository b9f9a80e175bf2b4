"""Detecting poisons: a suspicion score per training point, and the rule that turns the
scores into a removal set. Each detector is written from its paper and uses the authors'
defaults (``docs/design.md``, section 8); departures are stated where they are made.

Representations R (n, m) are the points of the *target class* (the class the poisons are
labelled with), one row each: a victim's penultimate activations
(:meth:`ntklib.models.Architecture.features`) or, for the kernel forms, a Gram matrix K (n, n)
of a kernel (infinite NTK, empirical NTK, any :class:`ntklib.kernels.Kernel`).

Detectors
---------
- **Spectral signatures** (Tran, Li, Madry, NeurIPS 2018, Sec. 4): with the centered rows
  R_c = R - mean(R) and v the top right singular vector of R_c, score_i = (R_c[i] . v)^2.
  Kernel form: with H = I - 11^T/n and the top eigenpair (lam, u) of H K H,
  score_i = lam u_i^2 (the same number when K = R R^T: R_c v = sqrt(lam) u). Cost: an SVD
  of (n, m), or a symmetric eigenpair of (n, n).
- **Activation clustering** (Chen et al., 2018, Sec. 3): reduction to 10 dimensions, 2-means,
  the smaller cluster is suspicious; it is flagged when its relative size is below 0.35 (the
  ``size`` rule of the common implementation) or when the silhouette score is above 0.1
  (``silhouette``). Per-point score: distance to the large cluster's centre minus distance to
  the small one's. Departure: the paper reduces with ICA (unit-variance components), our default
  is PCA: ICA gives every component the same variance, so 2-means weighs the poisons' direction
  no more than any other; on a toy with one poisoned direction (tests) ICA split the clean points
  (ROC AUC 0.04) where PCA separated the poisons exactly. ``reduce="ica"`` gives the paper's.
- **SPECTRE** (Hayase, Kong, Somani, Oh, ICML 2021, Sec. 3-4 and the authors' code): PCA to
  k dimensions, robust covariance by the iterative filter of Diakonikolas, Kamath, Kane et al.
  (2017) removing at most 2 eps points, whitening with it, QUantum Entropy scores
  tau_i = x_i^T M x_i with M = exp(alpha (S - I) / (||S||_2 - 1)) / tr(...) (alpha = 4), the
  ceil(1.5 eps) highest removed (the rule of every detector here, so that they are compared at one
  removal count; the authors' code rounds 1.5 eps to the nearest integer); k runs over
  {1, 4, 9, ..., 100} and the k whose whitened covariance
  is largest along M (tr(S M) / tr(M)) wins.
- **Backdoors as the strongest feature** (Khaddaj et al., ICML 2023, Sec. 4): the datamodel
  matrix A[i, j] (the effect of including point i on the margin of point j), here estimated
  in the kernel model (:func:`kernel_datamodels`: closed-form refits on random 50% subsets and
  a least-squares regression of margins on the subset masks), or its closed-form proxy from the
  hat matrix (:func:`hat_datamodels`, the exact leave-one-out effects); then the search for the
  size-k set with the largest mutual support (:func:`strongest_feature_scores`).
- **Representer attribution in the after kernel** (the kernel form of the representer-point
  decomposition; TRAK, Park et al., ICML 2023, Sec. 3, uses the same kernel model): the kernel
  ridge model of the trained network's empirical NTK ("after kernel") predicts
  f(z) = K(z, X) (K + lam I)^-1 y = sum_i w_i(z) y_i, and training point i's share of the
  predictions at the triggered test images z is tau_i = sum_z w_i(z) y_i
  (:func:`representer_scores`). This is not TRAK's score: TRAK weights the per-example
  gradients by the loss gradient, (1 - p_i) for logistic loss and the *residual* y_i - f(x_i)
  for squared loss (near zero for a kernel model that interpolates d), projects them to random
  low dimensions and averages several models. The representer weights w_i(z) y_i are what the
  kernel model's prediction at z is made of, so they read off directly which points carry the
  trigger's effect; the defender must hold a few triggered inputs z.

Evaluation: :func:`detection_metrics` (ROC AUC of the scores against the truth, poisons among
the removed set, precision at the removal size).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as _sla
from scipy.sparse.linalg import LinearOperator, eigsh

from . import validation as _val

__all__ = ["check_reps", "class_rows", "removal_count", "removal_set", "spectral_signature_scores",
           "spectral_direction_scores", "kernel_spectral_scores", "ClusterResult", "activation_clustering",
           "SpectreResult", "spectre",
           "robust_covariance", "kernel_datamodels", "datamodel_stability", "hat_datamodels",
           "strongest_feature_scores", "representer_scores",
           "detection_metrics", "strongest_feature_sizes", "REMOVAL_FACTOR", "DETECTORS"]

DETECTORS = ("spectral", "spectral_ntk", "spectral_inf", "clustering", "spectre", "datamodel", "loo",
             "representer")
"""The detectors compared in notebook 07 (:func:`ntklib.defense_study.detect` runs them): spectral
signatures on the penultimate activations, on the victim's empirical NTK and on the infinite NTK,
activation clustering, SPECTRE, the kernel datamodel with the strongest-feature search, its
leave-one-out proxy, and the representer attribution of triggered test images."""

REMOVAL_FACTOR = 1.5  # the papers remove the 1.5 eps highest scores (eps: the assumed number of poisons)


# ---------------------------------------------------------------------------- inputs and removal
def check_reps(R, name: str = "R", min_rows: int = 2) -> np.ndarray:
    """Representations (n, m): finite, float64, at least ``min_rows`` rows (images are flattened)."""
    R = _val.check_array(R, name, min_ndim=2, dtype=np.float64)
    R = R.reshape(len(R), -1)
    if len(R) < min_rows:
        raise ValueError(f"{name} has {len(R)} row(s): a detector needs at least {min_rows} points of the "
                         "target class")
    return R


def class_rows(y, label: float = 1.0) -> np.ndarray:
    """Indices of the rows labelled ``label`` (the target class +1 by default): the points a
    detector scores. The poisons carry the target label, so scoring another class finds nothing."""
    y = _val.check_labels(y, "y")
    if label not in (-1.0, 1.0):
        raise ValueError(f"label={label!r} is invalid: the task's labels are -1 (source) and +1 (target, the "
                         "poisons' label)")
    rows = np.flatnonzero(y == label)
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} point(s) carry the label {label}: a detector needs the class's points")
    return rows


def _check_gram(K, name="K"):
    """A Gram matrix of at least two points: square, symmetric, positive semi-definite
    (:func:`ntklib.validation.check_gram`)."""
    return _val.check_gram(K, name, min_size=2)


def removal_count(n_poison: int, n: int, factor: float = REMOVAL_FACTOR) -> int:
    """ceil(factor * n_poison), at most n - 1: how many points the papers' rule removes."""
    n_poison = _val.check_int(n_poison, "n_poison", min=0, max=n,
                              hint=f"the assumed number of poisons cannot exceed the class's {n} points")
    factor = _val.check_float(factor, "factor", min=0)
    return int(min(n - 1, math.ceil(factor * n_poison)))


def removal_set(scores, n_remove: int) -> np.ndarray:
    """Boolean mask (n,) of the ``n_remove`` highest scores (ties broken by index)."""
    scores = _val.check_array(scores, "scores", ndim=1, dtype=np.float64)
    n_remove = _val.check_int(n_remove, "n_remove", min=0, max=len(scores))
    mask = np.zeros(len(scores), bool)
    mask[np.argsort(-scores, kind="stable")[:n_remove]] = True
    return mask


# ---------------------------------------------------------------------------- spectral signatures
def spectral_signature_scores(R) -> np.ndarray:
    """Tran et al. (2018): squared projections of the centered rows of R (n, m) on their top
    right singular vector. Returns (n,). Cost: one thin SVD, O(n m min(n, m))."""
    R = check_reps(R)
    Rc = R - R.mean(0)
    _, _, Vt = np.linalg.svd(Rc, full_matrices=False)
    return (Rc @ Vt[0]) ** 2


def spectral_direction_scores(R, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Squared projections of the centered rows of R (n, m) on each of its top ``k`` right
    singular vectors: (scores (n, k), explained variance share (k,)). Column 0 is
    :func:`spectral_signature_scores`; the others show where in the spectrum poisons stand out
    when the top direction misses them. Cost: one thin SVD."""
    R = check_reps(R)
    k = _val.check_int(k, "k", min=1)
    Rc = R - R.mean(0)
    _, S, Vt = np.linalg.svd(Rc, full_matrices=False)
    k = min(k, len(S))
    return (Rc @ Vt[:k].T) ** 2, S[:k] ** 2 / np.sum(S ** 2)


def kernel_spectral_scores(K) -> np.ndarray:
    """The spectral signature in the kernel's own terms: lam u_i^2 for the top eigenpair (lam, u)
    of the centered Gram matrix H K H (n, n), so it applies to any kernel, the infinite NTK
    included. Equals :func:`spectral_signature_scores` of R when K = R R^T. Cost: O(n^2) to
    centre, one top eigenpair of (n, n)."""
    K = _check_gram(K)
    Kc = K - K.mean(0)[None, :] - K.mean(1)[:, None] + K.mean()
    n = len(Kc)
    lam, u = _sla.eigh(Kc, subset_by_index=[n - 1, n - 1])
    return float(max(lam[0], 0.0)) * u[:, 0] ** 2


# ---------------------------------------------------------------------------- activation clustering
@dataclass
class ClusterResult:
    """2-means on reduced representations: ``labels`` (n,) in {0, 1} with 1 the smaller cluster,
    ``scores`` (n,) (positive: closer to the small cluster), ``flagged`` (n,) the removal set
    (the small cluster when the rule fires, else empty), ``relative_size`` of the small cluster,
    ``silhouette``."""

    labels: np.ndarray
    scores: np.ndarray
    flagged: np.ndarray
    relative_size: float
    silhouette: float
    poisoned: bool


def activation_clustering(R, n_components: int = 10, reduce: str = "pca", rule: str = "size",
                          size_threshold: float = 0.35, silhouette_threshold: float = 0.1,
                          seed: int = 0) -> ClusterResult:
    """Chen et al. (2018): reduce R (n, m) to ``n_components`` (PCA, or ICA as in the paper),
    2-means (k-means++, 10 starts), and flag the smaller cluster by ``rule`` ("size": relative
    size below ``size_threshold``; "silhouette": silhouette score above ``silhouette_threshold``).
    Cost: the reduction (O(n m c) per ICA iteration) and k-means on (n, c)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    R = check_reps(R, min_rows=3)
    n_components = _val.check_int(n_components, "n_components", min=1)
    _val.check_choice(reduce, "reduce", ("ica", "pca"))
    _val.check_choice(rule, "rule", ("size", "silhouette"))
    size_threshold = _val.check_fraction(size_threshold, "size_threshold")
    silhouette_threshold = _val.check_float(silhouette_threshold, "silhouette_threshold", min=-1, max=1)
    seed = _val.check_seed(seed)
    c = min(n_components, R.shape[1], len(R) - 1)
    Rc = R - R.mean(0)
    # identical points: PCA's explained-variance ratio is 0 / 0 (unused here)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        if reduce == "ica":
            Z = FastICA(c, whiten="unit-variance", random_state=seed, max_iter=1000).fit_transform(Rc)
        else:
            Z = PCA(c, random_state=seed).fit_transform(Rc)
        km = KMeans(2, n_init=10, random_state=seed).fit(Z)  # identical points: one cluster, said by silhouette 0
    labels = km.labels_.astype(int)
    if labels.sum() > len(labels) / 2:  # label 1 = the smaller cluster
        labels = 1 - labels
        centres = km.cluster_centers_[::-1]
    else:
        centres = km.cluster_centers_
    dist = np.linalg.norm(Z[:, None, :] - centres[None], axis=2)
    scores = dist[:, 0] - dist[:, 1]
    rel = float(labels.mean())
    sil = float(silhouette_score(Z, labels)) if 0 < labels.sum() < len(labels) else 0.0
    poisoned = rel < size_threshold if rule == "size" else sil > silhouette_threshold
    flagged = (labels == 1) if poisoned else np.zeros(len(labels), bool)
    return ClusterResult(labels, scores, flagged, rel, sil, bool(poisoned))


# ---------------------------------------------------------------------------- SPECTRE
def _pca(R, k):
    """Centered projection of R (n, m) on its top k principal directions: (n, k)."""
    Rc = R - R.mean(0)
    _, _, Vt = np.linalg.svd(Rc, full_matrices=False)
    return Rc @ Vt[:k].T


def _inv_sqrt(S):
    w, V = np.linalg.eigh((S + S.T) / 2)
    w = np.maximum(w, 1e-12 * max(w.max(), 1e-300))
    return (V / np.sqrt(w)) @ V.T


def _keep_lowest(values, k):
    """Mask of the k lowest values (k may be 0)."""
    mask = np.zeros(len(values), bool)
    if k > 0:
        mask[np.argsort(values, kind="stable")[:k]] = True
    return mask


def _cov_filter_step(Y, eps, tau, limit, C=10.0):
    """One step of the covariance filter on rows Y (n, k) (second moments, already centered):
    None when Y passes as Gaussian (or the filter finds no threshold), else the mask of the rows
    kept. At most ``limit`` rows are dropped."""
    n, k = Y.shape
    W = Y @ _inv_sqrt(Y.T @ Y / n)
    q = np.einsum("ij,ij->i", W, W)
    mask = q >= C * k * math.log(n / tau)
    if mask.any():  # gross outliers first
        return ~mask | _keep_lowest(q, max(0, n - limit))
    # top eigenvector of T = E[vec(yy^T) vec(yy^T)^T] - vec(I) vec(I)^T, matrix-free on (k, k) matrices
    def matvec(v):
        V = v.reshape(k, k)
        w = ((W @ V) * W).sum(1)
        return ((W.T * w) @ W / n - np.trace(V) * np.eye(k)).ravel()

    if k * k <= 400:
        T = np.stack([matvec(e) for e in np.eye(k * k)], 1)
        lams, vecs = np.linalg.eigh((T + T.T) / 2)
        lam, v = lams[-1], vecs[:, -1]
    else:
        lams, vecs = eigsh(LinearOperator((k * k, k * k), matvec=matvec, dtype=np.float64), k=1, which="LA",
                           v0=np.ones(k * k), tol=1e-6)
        lam, v = lams[0], vecs[:, 0]
    if lam <= 1 + C * eps * math.log(1 / eps) ** 2:  # 2 ||P||_F^2 / 2 = 1 for the unit eigenvector
        return None
    V = v.reshape(k, k)
    V = (V + V.T) / 2
    p = (((W @ V) * W).sum(1) - np.trace(V)) / math.sqrt(2)
    diffs = np.abs(p - np.median(p))
    for i, diff in enumerate(np.sort(diffs), start=1):
        T_ = diff - 3.0
        if diff < 3.0 or T_ <= 0:
            continue
        tail = 1.0 if T_ <= 10 * math.log(1 / eps) else 3 * eps / (T_ * math.log(T_)) ** 2
        if i / n >= tail:
            return (diffs <= T_) | _keep_lowest(diffs, max(0, n - limit))
    return None


def robust_covariance(Y, eps: float, limit: int, tau: float = 0.1, max_iter: int = 1000) -> np.ndarray:
    """The iterative filter for robust covariance estimation (Diakonikolas et al. 2017, as used by
    SPECTRE): rows of Y (n, k) are removed, at most ``limit`` in all, until the rest pass a
    fourth-moment test of Gaussianity. ``eps``: the assumed poisoned fraction. Returns the mask
    (n,) of the rows kept. Cost per step: O(n k^2) and a top eigenvector on k^2 dimensions."""
    Y = check_reps(Y, "Y")
    eps = _val.check_fraction(eps, "eps")
    limit = _val.check_int(limit, "limit", min=0, max=len(Y) - 2)
    tau = _val.check_float(tau, "tau", min=0, max=1, include_min=False, include_max=False,
                           hint="the filter's failure probability (SPECTRE uses 0.1)")
    max_iter = _val.check_steps(max_iter, "max_iter")
    idx = np.arange(len(Y))
    for _ in range(max_iter):
        if limit == 0:
            break
        keep = _cov_filter_step(Y[idx], eps, tau, limit)
        if keep is None or keep.all():
            break
        limit -= int((~keep).sum())
        idx = idx[keep]
    mask = np.zeros(len(Y), bool)
    mask[idx] = True
    return mask


def _que_matrix(S, alpha):
    top = np.linalg.eigvalsh(S).max()
    M = _sla.expm(alpha * (S - np.eye(len(S))) / max(top - 1, 1e-12))
    return M / np.trace(M)


@dataclass
class SpectreResult:
    """``scores`` (n,) the QUE scores at the chosen ``k``; ``removed`` (n,) the removal set;
    ``objective`` {k: tr(S M) / tr(M)} for every k tried."""

    scores: np.ndarray
    removed: np.ndarray
    k: int
    objective: dict = field(default_factory=dict)


def _spectre_at(R, n_poison, k, alpha, tau, limit1, limit2):
    n = len(R)
    Y = _pca(R, k)
    if k == 1:  # one direction: the score is the squared projection (QUE's M is the scalar 1)
        scores = Y[:, 0] ** 2
    else:
        sel = robust_covariance(Y, n_poison / n, min(round(limit1 * n_poison), n - 2), tau)
        white = Y @ _inv_sqrt(np.cov(Y[sel].T, bias=True))
        M = _que_matrix(np.cov(white.T), alpha)
        scores = ((white @ M) * white).sum(1)
    # ceil(1.5 eps) like every other detector here (the authors' code rounds to nearest, 4 for eps = 3)
    return scores, removal_set(scores, removal_count(n_poison, n, limit2))


def spectre(R, n_poison: int, alpha: float = 4.0, tau: float = 0.1, max_dim: int = 100,
            limit1: float = 2.0, limit2: float = REMOVAL_FACTOR) -> SpectreResult:
    """SPECTRE (Hayase et al. 2021) on representations R (n, m) of the target class, assuming
    ``n_poison`` poisons among them (the eps of the paper). Dimensions k in {1, 4, ..., 100}
    (capped by ``max_dim``, n - 2 and the rank of R); the k with the largest whitened variance
    along its QUE matrix is kept. Cost: per k, the filter (O(n k^2) per step) and a k x k
    matrix exponential."""
    R = check_reps(R, min_rows=4)
    n = len(R)
    n_poison = _val.check_int(n_poison, "n_poison", min=1, max=n // 2,
                              hint=f"SPECTRE assumes a minority of poisons among the class's {n} points")
    alpha = _val.check_float(alpha, "alpha", min=0, include_min=False)
    tau = _val.check_float(tau, "tau", min=0, max=1, include_min=False, include_max=False,
                           hint="the filter's failure probability (SPECTRE uses 0.1)")
    limit1 = _val.check_float(limit1, "limit1", min=0, include_min=False,
                              hint="the robust filter removes at most limit1 * n_poison points (SPECTRE uses 2)")
    limit2 = _val.check_float(limit2, "limit2", min=0, include_min=False,
                              hint="the final removal is limit2 * n_poison points (the papers use 1.5)")
    rank = int(np.linalg.matrix_rank(R - R.mean(0)))
    top = max(1, min(_val.check_int(max_dim, "max_dim", min=1), n - 2, rank))
    Y100 = _pca(R, top)
    best = None
    objective = {}
    for k in sorted({min(top, int(round(x * x))) for x in np.linspace(1, 10, 10)}):
        scores, removed = _spectre_at(R, n_poison, k, alpha, tau, limit1, limit2)
        S = np.cov((Y100 @ _inv_sqrt(np.cov(Y100[~removed].T))).T) if top > 1 else np.ones((1, 1))
        M = _que_matrix(S, alpha) if top > 1 else np.ones((1, 1))
        objective[k] = float(np.trace(S @ M) / np.trace(M))
        if best is None or objective[k] > best[0]:
            best = (objective[k], k, scores, removed)
    return SpectreResult(best[2], best[3], best[1], objective)


# ---------------------------------------------------------------------------- datamodels
def kernel_datamodels(K, y, n_subsets: int = 8000, frac: float = 0.5, shift: float = 1e-3, ridge: float = 1e-2,
                      seed: int = 0, progress: bool = False) -> np.ndarray:
    """The datamodel matrix of kernel regression (Ilyas et al. 2022; Khaddaj et al. 2023, Sec. 4),
    A (n, n) with A[i, j] the estimated effect of including point i on the margin of point j.

    For each of ``n_subsets`` random subsets S holding a fraction ``frac`` of the points, the
    kernel model is refitted in closed form on S (alpha_S = (K_SS + s I)^-1 y_S, s = ``shift`` mean(diag K)) and the
    margins m_j = y_j K_jS alpha_S of all points recorded; each point's margins are then
    regressed on the (centered) subset masks by ridge-regularised least squares. Departure: the
    authors fit a sparse (LASSO) regression on thousands of network trainings; a closed-form
    refit makes the kernel model's datamodel cheap. Default 8000 subsets: two independent estimates
    on a poisoned digits victim's kernel (n = 213) correlate 0.50, 0.72, 0.85, 0.92, 0.96 with 500,
    1000, 2000, 4000, 8000 subsets (:func:`datamodel_stability`; notebook 07 measures it on its own
    victims). Cost: n_subsets solves of size frac n, and one (n, n) solve."""
    K = _check_gram(K)
    n = len(K)
    y = _val.check_labels(y, "y", n)
    n_subsets = _val.check_int(n_subsets, "n_subsets", min=2)
    frac = _val.check_float(frac, "frac", min=0, max=1, include_min=False, include_max=False,
                            hint="each subset holds this fraction of the points (the papers use 0.5); with all of "
                            "them every subset is the same and no effect can be estimated")
    size = max(1, int(round(frac * n)))
    if size >= n:
        raise ValueError(f"frac={frac} is invalid for {n} points: the subsets would hold all {n} of them (the same "
                         "set every time, so no effect can be estimated); use a smaller fraction such as 0.5")
    shift = _val.check_float(shift, "shift", min=0, include_min=False) * float(np.mean(np.diag(K)))
    ridge = _val.check_float(ridge, "ridge", min=0)
    rng = np.random.default_rng(_val.check_seed(seed))
    masks = np.zeros((n_subsets, n))
    margins = np.zeros((n_subsets, n))
    ridge_diag = shift * np.eye(size)
    for s in range(n_subsets):
        S = np.sort(rng.choice(n, size, replace=False))
        factor = _sla.cho_factor(K[np.ix_(S, S)] + ridge_diag, overwrite_a=True, check_finite=False)
        alpha = np.zeros(n)
        alpha[S] = _sla.cho_solve(factor, y[S], check_finite=False)
        margins[s] = y * (K @ alpha)  # K_{:, S} alpha_S without copying the block
        masks[s, S] = 1.0
    Mc = masks - masks.mean(0)
    G = Mc.T @ Mc + ridge * n_subsets * np.eye(n)
    return np.linalg.solve(G, Mc.T @ (margins - margins.mean(0)))


def datamodel_stability(K, y, n_subsets: int = 8000, seed: int = 0, **kw) -> dict:
    """How well :func:`kernel_datamodels` with ``n_subsets`` subsets agrees with itself: two
    independent estimates (``n_subsets`` subsets each, seeds ``seed`` and ``seed + 1``), the Pearson
    correlation of their off-diagonal entries (``r``: 1 means the estimate no longer depends on
    which subsets were drawn) and of the rows' sums (``r_rowsum``: each point's total effect, what
    the strongest-feature search weighs most). ``kw``: the other settings of
    :func:`kernel_datamodels`. Cost: two datamodel estimates."""
    K = _check_gram(K)
    seed = _val.check_seed(seed)
    A1 = kernel_datamodels(K, y, n_subsets=n_subsets, seed=seed, **kw)
    A2 = kernel_datamodels(K, y, n_subsets=n_subsets, seed=seed + 1, **kw)
    off = ~np.eye(len(K), dtype=bool)
    return dict(n_subsets=int(n_subsets), r=float(np.corrcoef(A1[off], A2[off])[0, 1]),
                r_rowsum=float(np.corrcoef((A1 * off).sum(1), (A2 * off).sum(1))[0, 1]))


def hat_datamodels(K, y, shift: float = 1e-3) -> np.ndarray:
    """The closed-form proxy of the datamodel matrix, from the hat matrix H = K (K + s I)^-1:
    A[i, j] = y_j H[j, i] alpha_i / G[i, i] (G = (K + s I)^-1, alpha = G y), the exact change of
    point j's margin y_j f(x_j) when point i is added to all the others (leave-one-out; alpha_i /
    G[i, i] = y_i - f^(-i)(x_i) is point i's leave-one-out residual). The datamodel averages such
    effects over random half-size subsets instead. ``shift`` s is relative to mean(diag K).
    Cost: one (n, n) inverse."""
    K = _check_gram(K)
    y = _val.check_labels(y, "y", len(K))
    shift = _val.check_float(shift, "shift", min=0, include_min=False) * float(np.mean(np.diag(K)))
    G = np.linalg.inv(K + shift * np.eye(len(K)))
    G = (G + G.T) / 2
    H = K @ G
    alpha = G @ y
    A = (H * (alpha / np.diag(G))[None, :]).T * y[None, :]   # A[i, j] = H[j, i] r_i y_j
    np.fill_diagonal(A, 0.0)
    return A


def strongest_feature_sizes(n: int) -> list[int]:
    """The default set sizes of :func:`strongest_feature_scores` for n points: 10, 20, 40, ... (up
    to 10 * 2^11) strictly below n / 2, or [max(1, n // 4)] when n <= 20 leaves none."""
    n = _val.check_int(n, "n", min=1)
    return [k for k in (10 * 2 ** j for j in range(12)) if k < n / 2] or [max(1, n // 4)]


def strongest_feature_scores(A, sizes=None, restarts: int = 20, seed: int = 0) -> np.ndarray:
    """Khaddaj et al. (2023, Alg. 1): for each set size k (default 10, 20, 40, ... below n / 2),
    with the diagonal of A replaced by -rowsum(A) k / n, search (random restarts, greedy swaps)
    for the size-k set S maximizing 1_S^T A 1_S; a point's score is the sum over k of the
    fraction of restarts whose set holds it, divided by k. Returns (n,). Cost per restart:
    O(n k) to start, O(n) per swap."""
    A = _val.check_array(A, "A", ndim=2, dtype=np.float64)
    n = len(A)
    if A.shape != (n, n) or n < 4:
        raise ValueError(f"A has shape {A.shape}: a datamodel matrix is square (n, n) with n >= 4")
    if sizes is None:
        sizes = strongest_feature_sizes(n)
    sizes = _val.check_int_list(sizes, "sizes", min=1, max=n - 1)
    restarts = _val.check_int(restarts, "restarts", min=1)
    rng = np.random.default_rng(_val.check_seed(seed))
    A0 = A.copy()
    np.fill_diagonal(A0, 0.0)
    rowsum = A0.sum(1)
    scores = np.zeros(n)
    for k in sizes:
        B = A0.copy()
        np.fill_diagonal(B, -rowsum * k / n)
        Bs = B + B.T
        counts = np.zeros(n)
        for _ in range(restarts):
            inside = np.zeros(n, bool)
            inside[rng.choice(n, k, replace=False)] = True
            gain = Bs[:, inside].sum(1)  # each point's support with the set, updated per swap in O(n)
            for _ in range(50 * k):
                g_in = np.where(inside, gain - np.diag(B), np.inf)   # what each member adds to the objective
                g_out = np.where(inside, -np.inf, gain + np.diag(B))
                i_out, i_in = int(np.argmin(g_in)), int(np.argmax(g_out))
                if g_out[i_in] - g_in[i_out] - Bs[i_in, i_out] <= 1e-12:
                    break
                inside[i_out], inside[i_in] = False, True
                gain += Bs[:, i_in] - Bs[:, i_out]
            counts += inside
        scores += counts / restarts / k
    return scores


# ---------------------------------------------------------------------------- representer attribution
def representer_scores(K_train, y, K_query, ridge: float = 1e-3) -> np.ndarray:
    """Representer attribution in a kernel's ridge model (module notes): with the decomposition
    f(z) = sum_i w_i(z) y_i, w(z) = (K + lam I)^-1 K(X, z), tau[i] = sum_z w_i(z) y_i summed over the
    query points z (rows of ``K_query`` (q, n)): training point i's share of the predictions at the
    queries. ``K_train`` (n, n) may be a list of matrices (one per
    victim) with the matching list of ``K_query``: scores are averaged. ``ridge`` lam is relative to
    mean(diag K). Cost per victim: one (n, n) Cholesky factorization and a (q, n) solve."""
    Ks = K_train if isinstance(K_train, (list, tuple)) else [K_train]
    Qs = K_query if isinstance(K_query, (list, tuple)) else [K_query]
    if len(Ks) != len(Qs):
        raise ValueError(f"{len(Ks)} training kernels but {len(Qs)} query blocks: give one of each per victim")
    ridge = _val.check_float(ridge, "ridge", min=0, include_min=False)
    out = None
    for K, Q in zip(Ks, Qs, strict=True):
        K = _check_gram(K, "K_train")
        y = _val.check_labels(y, "y", len(K))
        Q = _val.check_array(Q, "K_query", ndim=2, dtype=np.float64)
        if Q.shape[1] != len(K):
            raise ValueError(f"K_query has {Q.shape[1]} columns but K_train is {len(K)} x {len(K)}: the query "
                             "block is K(z, X) over the same training points")
        lam = ridge * float(np.mean(np.diag(K)))
        W = _sla.cho_solve(_sla.cho_factor(K + lam * np.eye(len(K))), Q.sum(0))  # (K + lam I)^-1 K(X, z) 1
        s = W * y
        out = s if out is None else out + s
    return out / len(Ks)


# ---------------------------------------------------------------------------- metrics
def detection_metrics(scores, is_poison, removed=None) -> dict:
    """ROC AUC of ``scores`` against the truth ``is_poison`` (n,) bool; with a removal set
    ``removed`` (n,) bool: the number of poisons caught, the removal size and the precision."""
    from sklearn.metrics import roc_auc_score

    scores = _val.check_array(scores, "scores", ndim=1, dtype=np.float64)
    truth = _val.check_mask(is_poison, "is_poison", len(scores), "scores")
    if truth.all() or not truth.any():
        raise ValueError(f"is_poison marks {'all' if truth.any() else 'none'} of the {len(truth)} scored points as "
                         "poisons: detection is measured on a set that holds both poisons and clean points")
    out = dict(auc=float(roc_auc_score(truth, scores)), n_poison=int(truth.sum()))  # both classes present
    if removed is not None:
        removed = _val.check_mask(removed, "removed", len(scores), "scores")
        caught = int((removed & truth).sum())
        out.update(caught=caught, removed=int(removed.sum()),
                   precision=caught / int(removed.sum()) if removed.any() else float("nan"),
                   recall=caught / int(truth.sum()))
    return out
