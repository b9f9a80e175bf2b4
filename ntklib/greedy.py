r"""Greedy initialization of the poisons (Hayase & Oh 2023, App. B.2), the exhaustive search
it is checked against, and the sampling baseline.

Each greedy round adds the candidate whose addition gives the lowest backdoor loss
(:mod:`ntklib.backdoor_loss`, docs/design.md, section 2). A candidate c is scored without a
re-solve: appending it to the regression on D = d u chosen changes the prediction at a test
point x by the Schur complement

.. math::

    f'(x) = f(x) + \big(k_{xc} - k_{xD} A^{-1} k_{Dc}\big)\,
            \frac{1 - k_{cD} A^{-1} y_D}{k_{cc} + s - k_{cD} A^{-1} k_{Dc}},

with A = K_DD + s I (:func:`ntklib.regression.append_predictions`): O(n_D^2 m + n_x n_D m) for
m candidates per round, after one kernel block K(X_cand, [X_cand; X_d; X_t; X_a]).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import backdoor_loss as _loss
from . import profiling as _profiling
from . import regression as _reg
from . import validation as _val

__all__ = ["GreedyResult", "greedy_init", "score_candidates", "exhaustive_search", "sampling_baseline"]


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
    members = _loss.members(problem)
    if blocks is None:
        blocks = [None] * len(members)
    elif len(members) == 1 and not isinstance(problem, _loss.EnsembleProblem):
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
    rs = [m.result(f[:n_t], f[n_t:]) for m, f in zip(_loss.members(problem), f_xs, strict=True)]
    return rs[0] if len(rs) == 1 and not isinstance(problem, _loss.EnsembleProblem) else _loss.EnsembleProblem.mean(rs)


@_profiling.profiled("greedy")
def greedy_init(problem: _loss.BackdoorProblem, X_cand, budget: int, swap: bool = False,
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
    _loss.check_problem(problem)
    X_cand = problem.check_candidates(X_cand)
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


def exhaustive_search(problem: _loss.BackdoorProblem, X_cand, budget: int):
    """Best subset of size ``budget`` by brute force (full re-solve per subset).

    Exponential: for toy pools only (tests, teaching). Returns (indices, loss).
    """
    _loss.check_problem(problem)
    X_cand = problem.check_candidates(X_cand)
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




def score_candidates(problem: _loss.BackdoorProblem, X_cand, chosen=(), method: str = "rank_one", blocks=None):
    """Loss after adding each unchosen candidate to d + ``chosen`` (one greedy round).

    ``method="rank_one"``: the closed-form Schur-complement update (what
    :func:`greedy_init` uses); ``"naive"``: a fresh Cholesky factorization of the
    enlarged system per candidate, O(m n^3), the reference it is checked and
    timed against. Kernel blocks are computed once either way (or passed in).
    Returns (candidate indices, losses).
    """
    _loss.check_problem(problem, ensemble=False)
    _val.check_choice(method, "method", ("rank_one", "naive"))
    X_cand = problem.check_candidates(X_cand)
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
