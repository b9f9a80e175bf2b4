"""The NTBA attack (Hayase & Oh 2023): closed-form backdoor loss, greedy
initialization, poison optimization, and the sampling baseline.

Notation (docs/design.md, section 2): clean training set d, poisons p (all labelled
+1), evaluation sets t (clean) and a (triggered source images, desired +1),
D = d u p. With the kernel-regression model f(x) = K(x, X_D) alpha,
alpha = (K_DD + s I)^-1 y_D, the backdoor loss is

    L(X_p) = w_t sum_t (f(x_t) - y_t)^2 + w_a sum_a min(f(x_a) - 1, 0)^2.

**Gradient.** With residuals r_t = 2 w_t (f_t - y_t), r_a = 2 w_a min(f_a - 1, 0),
g = K_tD^T r_t + K_aD^T r_a, beta = (K_DD + s I)^-1 g and G = -beta alpha^T:

    dL/dK(X_p, X_d) = G[p, d] + G[d, p]^T      dL/dK(X_p, X_t) = alpha_p r_t^T
    dL/dK(X_p, X_p) = G[p, p] (both arguments) dL/dK(X_p, X_a) = alpha_p r_a^T

The blocks are two kernel calls, K(X_p, X_p) and K(X_p, X_other) with the fixed
X_other = [X_d; X_t; X_a] (whose features a feature-map kernel such as the
empirical NTK computes once), and the gradient with respect to X_p is one
vector-Jacobian product through each (the K_pp part through both arguments, see
:meth:`ntklib.kernels.Kernel.vjp`): no per-pair gradient is ever formed. Cost per step: the kernel block and its VJP,
O(n_p (n_p + n_d + n_t + n_a)) kernel entries, plus an O((n_d + n_p)^3) solve.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize as _sopt
from tqdm.auto import tqdm

from . import kernels as _kernels
from . import profiling as _profiling
from . import regression as _reg
from . import validation as _val

__all__ = ["BackdoorProblem", "EnsembleProblem", "LossResult", "GreedyResult", "OptimizeResult", "greedy_init",
           "optimize_poisons", "sampling_baseline", "exhaustive_search", "check_images",
           "CheckpointMismatchError", "CheckpointReadError", "score_candidates"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with different parameters."""


class CheckpointReadError(ValueError):
    """A checkpoint file exists but cannot be read (damaged, truncated, or not a checkpoint)."""


def check_images(X, what: str, shape=None, allow_empty: bool = True) -> np.ndarray:
    """An image batch (n, H, W, C), finite, in [0, 1], of image shape ``shape``
    (:func:`ntklib.validation.check_images`; empty batches allowed unless ``allow_empty=False``)."""
    return _val.check_images(X, what, shape, allow_empty=allow_empty)


@dataclass
class LossResult:
    """Loss and kernel-model metrics for one poison set."""

    loss: float
    clean_loss: float
    attack_loss: float
    clean_acc: float   # fraction of t with sign(f) = y
    asr: float         # fraction of a with f > 0
    f_t: np.ndarray
    f_a: np.ndarray

    def as_dict(self):
        return dict(loss=self.loss, clean_loss=self.clean_loss, attack_loss=self.attack_loss,
                    clean_acc=self.clean_acc, asr=self.asr)


class BackdoorProblem:
    """The closed-form backdoor loss of a task under a kernel.

    The kernel blocks that do not depend on the poisons (K_dd, K_td, K_ad) are
    computed once here. ``ridge``/``jitter`` fix the diagonal shift
    s = ridge + jitter * mean(diag K_dd) used by every solve.
    """

    def __init__(self, kernel, X_d, y_d, X_t, y_t, X_a, ridge: float = 0.0,
                 jitter: float = _reg.DEFAULT_JITTER, w_clean: float = 1.0, w_attack: float = 1.0):
        _kernels.check_kernel(kernel)
        X_d = check_images(X_d, "X_d (clean training set)", allow_empty=False)
        shape = X_d.shape[1:]
        if len(_val.as_array(X_t, "X_t")) == 0:
            raise ValueError("the clean evaluation set t is empty; the clean term of the loss needs it")
        if len(_val.as_array(X_a, "X_a")) == 0:
            raise ValueError("the attack set a is empty; the attack term of the loss needs it")
        X_t = check_images(X_t, "X_t (clean evaluation set)", shape)
        X_a = check_images(X_a, "X_a (attack set)", shape)
        y_d = _val.check_labels(y_d, "y_d", len(X_d))
        y_t = _val.check_labels(y_t, "y_t", len(X_t))
        ridge = _val.check_float(ridge, "ridge", min=0)
        jitter = _val.check_float(jitter, "jitter", min=0)
        w_clean = _val.check_float(w_clean, "w_clean", min=0, hint="the weight of the clean term of the loss")
        w_attack = _val.check_float(w_attack, "w_attack", min=0, hint="the weight of the attack term of the loss")
        if w_clean == 0 and w_attack == 0:
            raise ValueError("w_clean and w_attack are both 0: the loss would be identically zero; "
                             "give at least one a positive weight (the paper uses 1 and 1)")
        self.kernel, self.shape = kernel, shape
        self.X_d, self.y_d, self.X_t, self.y_t, self.X_a = X_d, y_d, X_t, y_t, X_a
        self.w_clean, self.w_attack, self.ridge, self.jitter = float(w_clean), float(w_attack), ridge, jitter
        self.n_d, self.n_t, self.n_a = len(X_d), len(X_t), len(X_a)
        self.X_other = np.concatenate([X_d, X_t, X_a])
        self.X_other.setflags(write=False)  # fixed: kernels may cache what they derive from it
        K = kernel(X_d, self.X_other)  # (n_d, n_d + n_t + n_a) in the kernel's dtype
        n_d, n_t = self.n_d, self.n_t
        self.K_td = np.array(K[:, n_d:n_d + n_t].T, dtype=np.float64)
        self.K_ad = np.array(K[:, n_d + n_t:].T, dtype=np.float64)
        # symmetrized in float64 without n_d^2 temporaries beyond the result (memory bounds |d|)
        self.K_dd = np.array(K[:, :n_d], dtype=np.float64)
        self.K_dd += K[:, :n_d].T
        self.K_dd *= 0.5
        del K
        self.shift = _reg.shift_for(self.K_dd, ridge, jitter)
        self.clean_reg = _reg.KernelRegression(self.K_dd, y_d, self.shift, block="K_dd")

    @classmethod
    def from_task(cls, task, kernel, **kw) -> BackdoorProblem:
        return cls(kernel, task.X_d, task.y_d, task.X_t, task.y_t, task.X_a, **kw)

    def fingerprint(self) -> dict:
        """Hashes of everything that defines the loss (for checkpoints and artifacts)."""
        h = hashlib.sha256()
        for a in (self.X_d, self.y_d, self.X_t, self.y_t, self.X_a):
            h.update(np.ascontiguousarray(a).tobytes())
        return dict(data=h.hexdigest()[:16], kernel=json.dumps(self.kernel.spec, sort_keys=True, default=str),
                    ridge=self.ridge, jitter=self.jitter, w_clean=self.w_clean, w_attack=self.w_attack)

    # ------------------------------------------------------------------ loss
    def terms(self, f_t, f_a):
        """Loss terms from predictions; f_t (n_t, ...) and f_a (n_a, ...) broadcast over columns."""
        y_t = self.y_t.reshape((-1,) + (1,) * (np.ndim(f_t) - 1))
        clean = self.w_clean * np.sum((f_t - y_t) ** 2, axis=0)
        attack = self.w_attack * np.sum(np.minimum(f_a - 1.0, 0.0) ** 2, axis=0)
        return clean + attack, clean, attack

    def _result(self, f_t, f_a) -> LossResult:
        loss, clean, attack = self.terms(f_t, f_a)
        return LossResult(float(loss), float(clean), float(attack),
                          float(np.mean(np.sign(f_t) == self.y_t)), float(np.mean(f_a > 0)), f_t, f_a)

    def _check_poisons(self, X_p):
        return check_images(X_p, "X_p (poisons)", self.shape)

    def _check_candidates(self, X_cand):
        if len(_val.as_array(X_cand, "X_cand")) == 0:
            raise ValueError("X_cand (poison candidates) is an empty pool: there is nothing to choose poisons "
                             "from; give triggered source images (BackdoorTask.X_cand)")
        return check_images(X_cand, "X_cand (poison candidates)", self.shape, allow_empty=False)

    def evaluate(self, X_p, grad: bool = False):
        """Loss of poisons X_p (and, with ``grad=True``, dL/dX_p of shape X_p.shape)."""
        X_p = self._check_poisons(X_p)
        with _reg.single_threaded_blas():
            return self._evaluate(X_p, grad)

    def _evaluate(self, X_p, grad):
        n_p, n_d = len(X_p), self.n_d
        if n_p == 0:
            res = self._result(self.clean_reg.predict(self.K_td), self.clean_reg.predict(self.K_ad))
            return (res, np.zeros_like(X_p, dtype=np.float64)) if grad else res
        K_pp = np.asarray(self.kernel(X_p), dtype=np.float64)
        K_pp = (K_pp + K_pp.T) / 2
        Kp = np.asarray(self.kernel(X_p, self.X_other), dtype=np.float64)  # X_other: fixed (cacheable)
        K_pd = Kp[:, :n_d]
        K_pt = Kp[:, n_d:n_d + self.n_t]
        K_pa = Kp[:, n_d + self.n_t:]
        # the clean factor extended by the poisons' block: O(d^2 p), not a new O((d + p)^3) factorization
        reg = self.clean_reg.append(K_pd.T, K_pp, np.ones(n_p))
        K_tD, K_aD = np.hstack([self.K_td, K_pt.T]), np.hstack([self.K_ad, K_pa.T])
        res = self._result(reg.predict(K_tD), reg.predict(K_aD))
        if not grad:
            return res
        r_t = 2 * self.w_clean * (res.f_t - self.y_t)
        r_a = 2 * self.w_attack * np.minimum(res.f_a - 1.0, 0.0)
        beta = reg.solve(K_tD.T @ r_t + K_aD.T @ r_a)
        # dL/dK_DD = -beta alpha^T; only its poison rows and columns are needed (never the
        # (d + p)^2 matrix): K_pd appears as K_pd and as K_dp
        alpha_d, alpha_p, beta_d, beta_p = reg.alpha[:n_d], reg.alpha[n_d:], beta[:n_d], beta[n_d:]
        C_pp = -np.outer(beta_p, alpha_p)
        cot = np.hstack([-(np.outer(beta_p, alpha_d) + np.outer(alpha_p, beta_d)),
                         np.outer(alpha_p, r_t), np.outer(alpha_p, r_a)])
        return res, self.kernel.vjp(X_p, self.X_other, cot, cot_self=C_pp)  # K_pp through both arguments

    def loss(self, X_p) -> LossResult:
        return self.evaluate(X_p)

    # ------------------------------------------------------------------ candidates
    def candidate_blocks(self, X_cand):
        """Kernel blocks of a candidate pool: (K_cc, K_cd, K_ct, K_ca), one kernel call."""
        X_cand = check_images(X_cand, "X_cand (poison candidates)", self.shape, allow_empty=False)
        m = len(X_cand)
        K = np.asarray(self.kernel(X_cand, np.concatenate([X_cand, self.X_other])), dtype=np.float64)
        K_cc = (K[:, :m] + K[:, :m].T) / 2
        return (K_cc, K[:, m:m + self.n_d], K[:, m + self.n_d:m + self.n_d + self.n_t],
                K[:, m + self.n_d + self.n_t:])


class EnsembleProblem:
    """The backdoor loss averaged over several kernels of the same task.

        L_ens(X_p) = (1/M) sum_m L_m(X_p),   dL_ens/dX_p = (1/M) sum_m dL_m/dX_p,

    where L_m is the closed-form loss of :class:`BackdoorProblem` under kernel m (e.g. the
    empirical NTKs of clean networks of M seeds, or of M checkpoints of one run). Poisons
    designed against one kernel are designed against one network's features, while the
    victim is a fresh network of another seed; averaging over kernels asks the poisons to
    work for all of them. This is our extension (issue 16), not in the paper, whose
    attack is the single-kernel ``BackdoorProblem``.

    It has the interface :func:`greedy_init`, :func:`optimize_poisons` and
    :func:`ntklib.evaluate.sweep` use: ``evaluate`` / ``loss`` return a :class:`LossResult`
    whose losses are the members' means, ``f_t`` / ``f_a`` the members' mean predictions,
    and ``asr`` / ``clean_acc`` the means of the members' kernel-model ASR and accuracy.
    Greedy rounds score each candidate by the mean of the members' rank-one losses.
    Cost: M times one member's (kernel blocks, solves, VJPs).
    """

    def __init__(self, problems):
        if isinstance(problems, BackdoorProblem) or not isinstance(problems, (list, tuple)):
            raise TypeError(f"problems={_val.describe(problems)} is invalid: must be a list of "
                            "ntklib.attack.BackdoorProblem, one per kernel")
        if not problems:
            raise ValueError("problems=[] is invalid: an ensemble needs at least one BackdoorProblem")
        for i, pr in enumerate(problems):
            if not isinstance(pr, BackdoorProblem):
                raise TypeError(f"problems[{i}]={_val.describe(pr)} is invalid: must be an "
                                "ntklib.attack.BackdoorProblem")
        fp0 = problems[0].fingerprint()
        for i, pr in enumerate(problems[1:], 1):
            fp = pr.fingerprint()
            diff = [k for k in fp0 if k != "kernel" and fp[k] != fp0[k]]
            if diff:
                raise ValueError(f"problems[{i}] differs from problems[0] in {diff}: the members of an ensemble "
                                 "must share the task (d, t, a) and the loss settings; only the kernel may differ")
        self.members = list(problems)
        first = self.members[0]
        for name in ("shape", "X_d", "y_d", "X_t", "y_t", "X_a", "n_d", "n_t", "n_a", "w_clean", "w_attack",
                     "ridge", "jitter"):
            setattr(self, name, getattr(first, name))
        self.kernel = first.kernel

    def __len__(self):
        return len(self.members)

    def fingerprint(self) -> dict:
        fp = self.members[0].fingerprint()
        fp["kernel"] = json.dumps([json.loads(m.fingerprint()["kernel"]) for m in self.members])
        return fp

    def terms(self, f_t, f_a):
        return self.members[0].terms(f_t, f_a)

    def _check_poisons(self, X_p):
        return self.members[0]._check_poisons(X_p)

    def _check_candidates(self, X_cand):
        return self.members[0]._check_candidates(X_cand)

    @staticmethod
    def _mean(results) -> LossResult:
        def m(key):
            return float(np.mean([getattr(r, key) for r in results]))

        return LossResult(m("loss"), m("clean_loss"), m("attack_loss"), m("clean_acc"), m("asr"),
                          np.mean([r.f_t for r in results], axis=0), np.mean([r.f_a for r in results], axis=0))

    def evaluate(self, X_p, grad: bool = False):
        """Mean loss over the members (and, with ``grad=True``, the mean gradient dL/dX_p)."""
        X_p = self._check_poisons(X_p)
        out = [m.evaluate(X_p, grad) for m in self.members]
        if not grad:
            return self._mean(out)
        return self._mean([o[0] for o in out]), np.mean([o[1] for o in out], axis=0)

    def loss(self, X_p) -> LossResult:
        return self.evaluate(X_p)


def _check_problem(problem, ensemble: bool = True):
    types = (BackdoorProblem, EnsembleProblem) if ensemble else (BackdoorProblem,)
    if not isinstance(problem, types):
        raise TypeError(f"problem={_val.describe(problem)} is invalid: must be an ntklib.attack.BackdoorProblem "
                        "(BackdoorProblem.from_task(task, kernel))"
                        + (" or an EnsembleProblem of several" if ensemble else ""))
    return problem


def _members(problem):
    return problem.members if isinstance(problem, EnsembleProblem) else [problem]


# ---------------------------------------------------------------------- greedy
@dataclass
class GreedyResult:
    """Greedy picks (indices into the candidate pool, in order) and per-round metrics."""

    indices: list
    losses: list = field(default_factory=list)
    asr: list = field(default_factory=list)
    clean_acc: list = field(default_factory=list)
    swaps: int = 0


class _Pool:
    """Precomputed kernel blocks of a candidate pool, for rank-one scoring."""

    def __init__(self, problem, X_cand, blocks=None):
        self.problem = problem
        self.K_cc, self.K_cd, self.K_ct, self.K_ca = blocks or problem.candidate_blocks(X_cand)
        self.K_xc = np.vstack([self.K_ct.T, self.K_ca.T])         # (n_x, m)
        self.m = len(self.K_cc)

    def regression(self, chosen, fresh: bool = False):
        """Regression on d + chosen candidates and its blocks: the clean factor with the
        chosen block appended, or (``fresh=True``, the naive reference) a new factorization
        of the enlarged matrix."""
        p = self.problem
        c = list(chosen)
        if fresh:
            A = np.block([[p.K_dd, self.K_cd[c].T], [self.K_cd[c], self.K_cc[np.ix_(c, c)]]])
            reg = _reg.KernelRegression(A, np.concatenate([p.y_d, np.ones(len(c))]), p.shift, "K_DD")
        else:
            reg = p.clean_reg.append(self.K_cd[c].T, self.K_cc[np.ix_(c, c)], np.ones(len(c))) if c else p.clean_reg
        K_xD = np.hstack([np.vstack([p.K_td, p.K_ad]), self.K_xc[:, c]])
        return reg, K_xD

    def K_Dc(self, chosen, cols):
        return np.vstack([self.K_cd[cols].T, self.K_cc[np.ix_(list(chosen), cols)]])

    def score(self, reg, K_xD, chosen, cols, f_x=None):
        """Loss (and predictions) after appending each candidate in ``cols`` alone."""
        F = _reg.append_predictions(reg, self.K_Dc(chosen, cols), np.diag(self.K_cc)[cols],
                                    np.ones(len(cols)), K_xD, self.K_xc[:, cols], f_x)
        n_t = self.problem.n_t
        return self.problem.terms(F[:n_t], F[n_t:])[0], F


def _pools(problem, X_cand, blocks):
    """One :class:`_Pool` per kernel (one for a BackdoorProblem, M for an EnsembleProblem);
    ``blocks``: a pool's precomputed blocks, or for an ensemble a list with one per member."""
    members = _members(problem)
    if blocks is None:
        blocks = [None] * len(members)
    elif len(members) == 1 and not isinstance(problem, EnsembleProblem):
        blocks = [blocks]
    elif len(blocks) != len(members):
        raise ValueError(f"blocks: give one set of candidate blocks per ensemble member ({len(members)}), "
                         f"got {len(blocks)}")
    return [_Pool(m, X_cand, b) for m, b in zip(members, blocks, strict=True)]


def _score(pools, states, chosen, cols, f_xs=None):
    """Mean loss over the pools after appending each candidate in ``cols`` alone, and each
    pool's predictions (the ensemble's greedy criterion; one pool is the paper's)."""
    out = [pool.score(reg, K_xD, chosen, cols, f_x)
           for pool, (reg, K_xD), f_x in zip(pools, states, f_xs or [None] * len(pools), strict=True)]
    return np.mean([o[0] for o in out], axis=0), [o[1] for o in out]


def _pool_result(problem, f_xs):
    n_t = problem.n_t
    rs = [m._result(f[:n_t], f[n_t:]) for m, f in zip(_members(problem), f_xs, strict=True)]
    return rs[0] if len(rs) == 1 and not isinstance(problem, EnsembleProblem) else EnsembleProblem._mean(rs)


@_profiling.profiled("greedy")
def greedy_init(problem: BackdoorProblem, X_cand, budget: int, swap: bool = False,
                progress: bool = True, blocks=None) -> GreedyResult:
    """Greedy poison selection (Hayase & Oh 2023, App. B.2).

    Round k adds the candidate whose addition gives the lowest loss, each
    candidate scored in closed form by the rank-one update of
    :func:`ntklib.regression.append_predictions` (never a re-solve per
    candidate); the chosen point is appended to the Cholesky factor in O(n^2).
    With ``swap=True`` a refinement pass then replaces a chosen poison by an
    unchosen candidate whenever that lowers the loss, until no swap helps.
    For an :class:`EnsembleProblem` the loss of a candidate is the mean over the
    members' kernels (each scored by its own rank-one update).

    Cost: one kernel block K(X_cand, [X_cand; X_d; X_t; X_a]) plus, per round,
    O(n_D^2 m + n_x n_D m) for m remaining candidates (times M for an ensemble).
    Greedy picks are nested: the first b picks are the greedy result for budget b.
    """
    _check_problem(problem)
    X_cand = problem._check_candidates(X_cand)
    budget = _val.check_budget(budget, "budget", len(X_cand))
    swap = _val.check_bool(swap, "swap")
    pools = _pools(problem, X_cand, blocks)
    m = pools[0].m
    chosen: list[int] = []
    states = [pool.regression(chosen) for pool in pools]
    f_xs = [reg.predict(K_xD) for reg, K_xD in states]
    out = GreedyResult([])
    for _ in tqdm(range(budget), desc="greedy", disable=not progress, leave=False):
        rest = [j for j in range(m) if j not in chosen]
        losses, Fs = _score(pools, states, chosen, rest, f_xs)
        b = int(np.argmin(losses))
        c = rest[b]
        states = [(reg.append(pool.K_Dc(chosen, [c])[:, 0], pool.K_cc[c, c], 1.0),
                   np.hstack([K_xD, pool.K_xc[:, [c]]])) for pool, (reg, K_xD) in zip(pools, states, strict=True)]
        chosen.append(c)
        f_xs = [F[:, b] for F in Fs]
        r = _pool_result(problem, f_xs)
        out.indices.append(c)
        out.losses.append(r.loss)
        out.asr.append(r.asr)
        out.clean_acc.append(r.clean_acc)
    if swap:
        chosen, out.swaps = _swap_pass(pools, chosen, out.losses[-1], progress)
        r = _pool_result(problem, [reg.predict(K_xD) for reg, K_xD in (pool.regression(chosen) for pool in pools)])
        out.indices = chosen
        out.losses.append(r.loss)
        out.asr.append(r.asr)
        out.clean_acc.append(r.clean_acc)
    return out


def _swap_pass(pools, chosen, loss, progress, max_sweeps: int = 20):
    chosen, swaps, m = list(chosen), 0, pools[0].m
    for _ in tqdm(range(max_sweeps), desc="swap", disable=not progress, leave=False):
        improved = False
        for i in range(len(chosen)):
            keep = chosen[:i] + chosen[i + 1:]
            rest = [j for j in range(m) if j not in chosen]
            if not rest:
                return chosen, swaps
            losses, _ = _score(pools, [pool.regression(keep) for pool in pools], keep, rest)
            b = int(np.argmin(losses))
            if losses[b] < loss * (1 - 1e-12):
                chosen = keep[:i] + [rest[b]] + keep[i:]
                loss, improved, swaps = float(losses[b]), True, swaps + 1
        if not improved:
            break
    return chosen, swaps


def exhaustive_search(problem: BackdoorProblem, X_cand, budget: int):
    """Best subset of size ``budget`` by brute force (full re-solve per subset).

    Exponential: for toy pools only (tests, teaching). Returns (indices, loss).
    """
    _check_problem(problem)
    X_cand = problem._check_candidates(X_cand)
    m = len(X_cand)
    if m > 16:
        raise ValueError(f"exhaustive search over a pool of {m} is too large; use at most 16")
    budget = _val.check_budget(budget, "budget", m)
    best = min(itertools.combinations(range(m), budget),
               key=lambda s: problem.loss(X_cand[list(s)]).loss)
    return list(best), problem.loss(X_cand[list(best)]).loss


def sampling_baseline(n_candidates: int, budget: int, seed: int = 0) -> np.ndarray:
    """The sampling attack: ``budget`` random candidates (triggered source images, label +1)."""
    n_candidates = _val.check_int(n_candidates, "n_candidates", min=0)
    budget = _val.check_int(budget, "budget", min=0, max=n_candidates,
                            hint=f"a budget counts poisons taken from the pool of {n_candidates} candidates")
    seed = _val.check_seed(seed)
    return np.sort(np.random.default_rng(seed).choice(n_candidates, size=budget, replace=False))


# ---------------------------------------------------------------------- optimization
@dataclass
class OptimizeResult:
    X_p: np.ndarray
    history: dict                 # step, loss, asr, clean_acc (per iteration, step 0 = start)
    start: LossResult
    final: LossResult
    steps: int
    converged: bool = False
    message: str = ""             # why L-BFGS-B stopped early when it failed (empty otherwise)


def _fingerprint(problem, X_p0, settings) -> dict:
    fp = problem.fingerprint()
    fp["X_p0"] = hashlib.sha256(np.ascontiguousarray(X_p0, dtype=np.float64).tobytes()).hexdigest()[:16]
    fp.update({k: settings[k] for k in sorted(settings)})
    return {k: str(v) for k, v in fp.items()}


def _save_checkpoint(path: Path, fp, state: dict):
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, __fingerprint__=np.array(json.dumps(fp)),
                 **{k: np.asarray(v) for k, v in state.items()})
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written checkpoint behind
        raise


_CHECKPOINT_KEYS = ("x", "step", "converged", "adam_m", "adam_v", "hist_step", "hist_loss", "hist_asr",
                    "hist_clean_acc")


def _load_checkpoint(path: Path, fp, size: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = json.loads(str(z["__fingerprint__"]))
            state = {k: z[k] for k in z.files if k != "__fingerprint__"}
        missing = [k for k in _CHECKPOINT_KEYS if k not in state]
        if missing:
            raise KeyError(f"missing {missing}")
        if state["x"].shape != (size,) or not np.all(np.isfinite(state["x"])):
            raise ValueError(f"its poisons have {state['x'].shape[0] if state['x'].ndim else 0} values "
                             f"(expected {size}) or are not finite")
    except Exception as e:
        raise CheckpointReadError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); it is damaged or was not written by "
            "optimize_poisons. It was left as it is: pass resume=False to start afresh (the file is overwritten "
            "at the first checkpoint), or choose another checkpoint path.") from e
    diff = sorted(k for k in set(saved) | set(fp) if saved.get(k) != fp.get(k))
    if diff:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with different parameters ({', '.join(diff)} "
            "differ). Delete it, choose another checkpoint path, or pass resume=False.")
    return state


@_profiling.profiled("optimization")
def optimize_poisons(problem: BackdoorProblem, X_p0, method: str = "lbfgsb", steps: int = 100,
                     lr: float = 0.01, memory: int = 100, checkpoint=None, checkpoint_every: int = 25,
                     resume: bool = True, progress: bool = True, bad_checkpoint: str = "raise") -> OptimizeResult:
    """Minimize L(X_p) over the pixel box [0, 1] starting from ``X_p0``.

    ``method="lbfgsb"``: scipy's L-BFGS-B with box bounds and ``memory``
    correction pairs (the reference uses 100). It is restarted every
    ``checkpoint_every`` iterations (its curvature memory starts afresh), so that
    a run resumed from a checkpoint takes exactly the path of an uninterrupted
    one. ``method="adam"``: projected Adam (step ``lr``, then clip to [0, 1]);
    its full state is checkpointed.

    ``checkpoint``: path of an ``.npz`` written every ``checkpoint_every``
    steps; with ``resume=True`` an existing checkpoint from the same problem and
    settings is continued (``CheckpointMismatchError`` otherwise). ``steps`` is
    the total iteration budget, so rerunning with a larger one continues.
    ``bad_checkpoint``: what to do with a checkpoint that cannot be read or belongs to
    other settings: ``"raise"`` (the default: the file is the caller's, left as it is) or
    ``"set_aside"`` (renamed to ``<name>.damaged``, with a warning, and the optimization
    starts afresh; for checkpoints whose path the caller did not choose, e.g. the cache's).
    """
    _check_problem(problem)
    _val.check_choice(method, "method", ("lbfgsb", "adam"))
    steps = _val.check_steps(steps, "steps", min=0)
    checkpoint_every = _val.check_steps(checkpoint_every, "checkpoint_every")
    if method == "adam":
        lr = _val.check_lr(lr)
    else:
        memory = _val.check_int(memory, "memory", min=1, hint="L-BFGS-B's number of correction pairs (the "
                                "reference uses 100)")
    resume = _val.check_bool(resume, "resume")
    _val.check_choice(bad_checkpoint, "bad_checkpoint", ("raise", "set_aside"))
    if checkpoint is not None:
        checkpoint = _val.check_path(checkpoint, "checkpoint", suffixes=(".npz",), writable=True)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)  # now, not after the first segment's work
    X_p0 = problem._check_poisons(X_p0).astype(np.float64)
    if len(X_p0) == 0:
        raise ValueError("no poisons to optimize (X_p0 is empty)")
    shape = X_p0.shape
    settings = dict(method=method, lr=lr if method == "adam" else None,
                    memory=memory if method == "lbfgsb" else None, checkpoint_every=checkpoint_every)
    fp = _fingerprint(problem, X_p0, settings)
    ckpt = Path(checkpoint) if checkpoint is not None else None

    start = problem.loss(X_p0)
    x, step, converged, message = X_p0.ravel().copy(), 0, False, ""
    hist = {"step": [0], "loss": [start.loss], "asr": [start.asr], "clean_acc": [start.clean_acc]}
    adam = {"m": np.zeros_like(x), "v": np.zeros_like(x)}
    st = None
    if ckpt is not None and resume and ckpt.exists():
        try:
            st = _load_checkpoint(ckpt, fp, x.size)
            if int(st["step"]) > steps:
                raise CheckpointMismatchError(
                    f"checkpoint {ckpt} is at step {int(st['step'])}, past the steps={steps} asked for (a checkpoint "
                    "holds only its last iterate, so the run cannot be stopped earlier). Pass "
                    f"steps>={int(st['step'])} to go on from it, resume=False to start afresh, or another checkpoint "
                    "path")
        except (CheckpointReadError, CheckpointMismatchError) as e:
            if bad_checkpoint == "raise":
                raise
            aside = ckpt.with_name(ckpt.name + ".damaged")
            os.replace(ckpt, aside)
            warnings.warn(f"{str(e).split('; ')[0].split(' (')[0]} could not be resumed ({type(e).__name__}); it was "
                          f"moved to {aside} and the optimization starts afresh", stacklevel=2)
    if st is not None:
        x, step, converged = st["x"].astype(np.float64), int(st["step"]), bool(st["converged"])
        message = str(st["message"]) if "message" in st else ""
        hist = {k: list(st[f"hist_{k}"]) for k in hist}
        adam = {"m": st["adam_m"], "v": st["adam_v"]}

    cache = {}

    def fun(z):
        res, g = problem.evaluate(z.reshape(shape), grad=True)
        cache["x"], cache["res"] = z.copy(), res
        return res.loss, g.ravel()

    def record(z):
        res = cache["res"] if "x" in cache and np.array_equal(cache["x"], z) else problem.loss(z.reshape(shape))
        hist["step"].append(step)
        hist["loss"].append(res.loss)
        hist["asr"].append(res.asr)
        hist["clean_acc"].append(res.clean_acc)

    def save():
        if ckpt is not None:
            _save_checkpoint(ckpt, fp, dict(x=x, step=step, converged=converged, message=message, adam_m=adam["m"],
                                            adam_v=adam["v"], **{f"hist_{k}": v for k, v in hist.items()}))

    bar = tqdm(total=steps, initial=min(step, steps), desc=f"optimize ({method})", disable=not progress,
               leave=False)
    bounds = _sopt.Bounds(np.zeros_like(x), np.ones_like(x))
    count = [0]  # L-BFGS-B iterations in the current segment
    while step < steps and not converged and not message:
        seg = min(checkpoint_every - step % checkpoint_every, steps - step)
        if method == "lbfgsb":
            count[0] = 0

            def callback(intermediate_result):  # scipy passes the iterate by this parameter's name
                nonlocal step
                step += 1
                count[0] += 1
                record(intermediate_result.x)
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4g}", asr=f"{hist['asr'][-1]:.2f}")

            r = _sopt.minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                               options=dict(maxcor=memory, maxiter=seg, maxfun=20 * seg + 20))
            x = np.clip(r.x, 0.0, 1.0)
            # scipy's status: 0 converged, 1 iteration or evaluation limit (the segment's end),
            # 2 stopped for another reason (e.g. the line search failed): say why, never "converged"
            converged = r.status == 0 and count[0] < seg
            if r.status not in (0, 1):
                message = f"L-BFGS-B stopped at step {step}: {r.message}"
                warnings.warn(message + " (the poisons of its last iterate are returned)", stacklevel=2)
        else:
            b1, b2, eps = 0.9, 0.999, 1e-8
            for _ in range(seg):
                _, g = fun(x)
                step += 1
                adam["m"] = b1 * adam["m"] + (1 - b1) * g
                adam["v"] = b2 * adam["v"] + (1 - b2) * g * g
                mh, vh = adam["m"] / (1 - b1 ** step), adam["v"] / (1 - b2 ** step)
                x = np.clip(x - lr * mh / (np.sqrt(vh) + eps), 0.0, 1.0)
                record(x)
                bar.update(1)
                bar.set_postfix(loss=f"{hist['loss'][-1]:.4g}", asr=f"{hist['asr'][-1]:.2f}")
        save()
    bar.close()
    X_p = x.reshape(shape)
    final = problem.loss(X_p)
    return OptimizeResult(X_p, {k: np.asarray(v) for k, v in hist.items()}, start, final, step, converged,
                          message)


def score_candidates(problem: BackdoorProblem, X_cand, chosen=(), method: str = "rank_one", blocks=None):
    """Loss after adding each unchosen candidate to d + ``chosen`` (one greedy round).

    ``method="rank_one"``: the closed-form Schur-complement update (what
    :func:`greedy_init` uses); ``"naive"``: a fresh Cholesky factorization of the
    enlarged system per candidate, O(m n^3), the reference it is checked and
    timed against. Kernel blocks are computed once either way (or passed in).
    Returns (candidate indices, losses).
    """
    _check_problem(problem, ensemble=False)
    _val.check_choice(method, "method", ("rank_one", "naive"))
    X_cand = problem._check_candidates(X_cand)
    chosen = _val.check_int_list(chosen, "chosen", min=0, max=len(X_cand) - 1, allow_empty=True,
                                 hint="indices into the candidate pool")
    pool = _Pool(problem, X_cand, blocks)
    rest = [j for j in range(pool.m) if j not in chosen]
    if method == "rank_one":
        reg, K_xD = pool.regression(chosen)
        return rest, pool.score(reg, K_xD, chosen, rest)[0]
    losses = []
    n_t = problem.n_t
    for j in rest:
        reg, K_xD = pool.regression(chosen + [j], fresh=True)
        f = reg.predict(K_xD)
        losses.append(problem.terms(f[:n_t], f[n_t:])[0])
    return rest, np.asarray(losses)
