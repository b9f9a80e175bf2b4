r"""The NTBA backdoor loss (Hayase & Oh 2023, Sec. 3) in closed form, and its gradient with
respect to the poisons: the objective that :mod:`ntklib.greedy` and
:mod:`ntklib.poison_optimization` minimize.

Notation (docs/design.md, section 2): clean training set d, poisons p (all labelled
+1), evaluation sets t (clean) and a (triggered source images, desired +1),
D = d u p. With the kernel-regression model f(x) = K(x, X_D) alpha,
alpha = (K_DD + s I)^-1 y_D, the backdoor loss is

.. math::

    L(X_p) = w_t \sum_{t} \big(f(x_t) - y_t\big)^2 + w_a \sum_{a} \min\big(f(x_a) - 1, 0\big)^2 .

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
import json
from dataclasses import dataclass

import numpy as np

from . import kernels as _kernels
from . import regression as _reg
from . import validation as _val

__all__ = ["BackdoorProblem", "EnsembleProblem", "LossResult", "check_images", "check_problem", "members"]


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

    def result(self, f_t, f_a) -> LossResult:
        loss, clean, attack = self.terms(f_t, f_a)
        return LossResult(float(loss), float(clean), float(attack),
                          float(np.mean(np.sign(f_t) == self.y_t)), float(np.mean(f_a > 0)), f_t, f_a)

    def check_poisons(self, X_p):
        return check_images(X_p, "X_p (poisons)", self.shape)

    def check_candidates(self, X_cand):
        if len(_val.as_array(X_cand, "X_cand")) == 0:
            raise ValueError("X_cand (poison candidates) is an empty pool: there is nothing to choose poisons "
                             "from; give triggered source images (BackdoorTask.X_cand)")
        return check_images(X_cand, "X_cand (poison candidates)", self.shape, allow_empty=False)

    def evaluate(self, X_p, grad: bool = False):
        """Loss of poisons X_p (and, with ``grad=True``, dL/dX_p of shape X_p.shape)."""
        X_p = self.check_poisons(X_p)
        with _reg.single_threaded_blas():
            return self._evaluate(X_p, grad)

    def _evaluate(self, X_p, grad):
        n_p, n_d = len(X_p), self.n_d
        if n_p == 0:
            res = self.result(self.clean_reg.predict(self.K_td), self.clean_reg.predict(self.K_ad))
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
        res = self.result(reg.predict(K_tD), reg.predict(K_aD))
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

    def check_poisons(self, X_p):
        return self.members[0].check_poisons(X_p)

    def check_candidates(self, X_cand):
        return self.members[0].check_candidates(X_cand)

    @staticmethod
    def mean(results) -> LossResult:
        def m(key):
            return float(np.mean([getattr(r, key) for r in results]))

        return LossResult(m("loss"), m("clean_loss"), m("attack_loss"), m("clean_acc"), m("asr"),
                          np.mean([r.f_t for r in results], axis=0), np.mean([r.f_a for r in results], axis=0))

    def evaluate(self, X_p, grad: bool = False):
        """Mean loss over the members (and, with ``grad=True``, the mean gradient dL/dX_p)."""
        X_p = self.check_poisons(X_p)
        out = [m.evaluate(X_p, grad) for m in self.members]
        if not grad:
            return self.mean(out)
        return self.mean([o[0] for o in out]), np.mean([o[1] for o in out], axis=0)

    def loss(self, X_p) -> LossResult:
        return self.evaluate(X_p)


def check_problem(problem, ensemble: bool = True):
    """``problem`` itself if it is a :class:`BackdoorProblem` (or, with ``ensemble=True``, an
    :class:`EnsembleProblem`); a TypeError that names the classes otherwise."""
    types = (BackdoorProblem, EnsembleProblem) if ensemble else (BackdoorProblem,)
    if not isinstance(problem, types):
        raise TypeError(f"problem={_val.describe(problem)} is invalid: must be an ntklib.attack.BackdoorProblem "
                        "(BackdoorProblem.from_task(task, kernel))"
                        + (" or an EnsembleProblem of several" if ensemble else ""))
    return problem


def members(problem) -> list:
    """The single-kernel problems of ``problem``: its members for an ensemble, itself otherwise."""
    return problem.members if isinstance(problem, EnsembleProblem) else [problem]
