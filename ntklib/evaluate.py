"""Evaluation: kernel model, trained networks, and budget sweeps.

(a) :func:`kernel_metrics`: clean accuracy on t and ASR on a under the kernel
    model (from :class:`ntklib.attack.BackdoorProblem`).
(b) :func:`transfer`: train the finite network from scratch on d plus the
    poisons (squared loss, :mod:`ntklib.train`), then report clean accuracy on
    the test split and ASR = fraction of triggered source-class test images
    predicted as target, with the training loss and the largest residual
    abs(f(x_p) - 1) on the poisons (an unfitted poison is visible, never silent).
(c) :func:`sweep`: NTBA and the sampling baseline over budgets and seeds in one
    run, as a tidy DataFrame; :func:`efficiency_ratio` summarizes it as
    (smallest sampling budget reaching a given ASR) / (smallest NTBA budget).
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd

from . import attack as _attack
from . import models as _models
from . import train as _train
from . import validation as _val

__all__ = ["kernel_metrics", "network_metrics", "transfer", "sweep", "summarize", "efficiency_ratio",
           "ntba_poisons", "victim_data", "ratio_curve"]


def kernel_metrics(problem, X_p) -> dict:
    """Kernel-model loss, clean accuracy (on t) and ASR (on a) of poisons X_p.

    Remembered per problem by the content of X_p: sweeps that re-evaluate the same
    poisons (notebook 06's victim variants) compute each once."""
    key = hashlib.sha1(np.ascontiguousarray(X_p, dtype=np.float64).tobytes(), usedforsecurity=False).hexdigest()
    memo = problem.__dict__.setdefault("_kernel_metrics", {})
    if key not in memo:
        r = problem.loss(X_p)
        memo[key] = dict(kernel_loss=r.loss, kernel_ca=r.clean_acc, kernel_asr=r.asr)
    return dict(memo[key])


def network_metrics(arch, params, task) -> dict:
    """Clean test accuracy and ASR (triggered source test images predicted +1)."""
    f_test = _train.predict(arch, params, task.X_test)
    f_trig = _train.predict(arch, params, task.X_test_trig)
    return dict(net_ca=float(np.mean(np.sign(f_test) == task.y_test)), net_asr=float(np.mean(f_trig > 0)))


def _check_task(task):
    from .data import BackdoorTask

    if not isinstance(task, BackdoorTask):
        raise TypeError(f"task={_val.describe(task)} is invalid: must be an ntklib.data.BackdoorTask (make_task(...))")
    return task


def _check_table(df):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df={_val.describe(df)} is invalid: must be the DataFrame of sweep()")
    missing = [c for c in ("method", "budget") if c not in df.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}: pass the DataFrame of sweep() (columns method, "
                         f"budget, seed and metrics); got columns {list(df.columns)}")
    return df


def _check_seeds(seeds) -> list[int]:
    return _val.check_int_list(seeds, "seeds", min=0, hint="one victim is trained per seed")


def victim_data(task, X_p):
    """A victim's training set: d and the poisons X_p (b, H, W, C), labelled +1, as one
    (X (n_d + b, H, W, C), y (n_d + b,)); X_p in d's dtype."""
    X_p = _val.check_images(X_p, "X_p (poisons)", task.X_d.shape[1:], allow_empty=True).astype(task.X_d.dtype)
    return np.concatenate([task.X_d, X_p]), np.concatenate([task.y_d, np.ones(len(X_p))])


def _victim_row(task, arch, X, y, r) -> dict:
    """Metrics of one trained victim; a diverged one gets NaN metrics (and diverged=True)."""
    n_d = len(task.X_d)
    row = dict(train_loss=r.final_loss, converged=r.converged, diverged=r.diverged, train_steps=r.steps)
    if r.diverged:
        return dict(row, max_poison_residual=np.nan, max_clean_residual=np.nan, net_ca=np.nan, net_asr=np.nan)
    res = np.abs(_train.residuals(arch, r.params, X, y))
    return dict(row, max_poison_residual=float(res[n_d:].max()) if len(X) > n_d else 0.0,
                max_clean_residual=float(res[:n_d].max()), **network_metrics(arch, r.params, task))


def transfer(task, arch, X_p, config: _train.TrainConfig | None = None, seeds=(0,),
             progress: bool = False) -> list[dict]:
    """Train fresh networks on d + poisons (one per seed, batched) and measure them."""
    _check_task(task)
    _models.check_architecture(arch)
    cfg = _train.check_config(config)
    seeds = _check_seeds(seeds)
    X, y = victim_data(task, X_p)
    results = _train.train_many(arch, [(X, y)] * len(seeds),
                                [dataclasses.replace(cfg, seed=int(s)) for s in seeds], progress=progress)
    return [dict(seed=int(s), **_victim_row(task, arch, X, y, r)) for s, r in zip(seeds, results, strict=True)]


def ntba_poisons(problem, X_cand, budgets, opt_steps: int = 0, opt_method: str = "lbfgsb",
                 progress: bool = True, blocks=None, checkpoint_dir=None, **opt_kw) -> dict:
    """NTBA poisons for each budget: greedy (nested picks, computed once for the
    largest budget) then, if ``opt_steps`` > 0, optimization from the greedy start.
    With ``checkpoint_dir``, each budget's optimization checkpoints to
    ``checkpoint_dir/budget_<b>.npz`` and an interrupted call resumes there
    (:func:`ntklib.attack.optimize_poisons`; its ``resume`` and ``bad_checkpoint``
    pass through ``opt_kw``).
    Returns {budget: dict(X_p, indices, greedy_asr, ...)}."""
    budgets = _val.check_budgets(budgets, "budgets", len(X_cand))
    if checkpoint_dir is not None:
        checkpoint_dir = _val.check_path(checkpoint_dir, "checkpoint_dir")
    opt_steps = _val.check_steps(opt_steps, "opt_steps", min=0)
    _val.check_choice(opt_method, "opt_method", ("lbfgsb", "adam"))
    g = _attack.greedy_init(problem, X_cand, budgets[-1], progress=progress, blocks=blocks)
    out = {}
    for b in budgets:
        X_p = np.asarray(X_cand)[g.indices[:b]]
        entry = dict(indices=g.indices[:b], greedy_loss=g.losses[b - 1], greedy_asr=g.asr[b - 1])
        if opt_steps > 0:
            ck = None if checkpoint_dir is None else checkpoint_dir / f"budget_{b}.npz"
            o = _attack.optimize_poisons(problem, X_p, method=opt_method, steps=opt_steps,
                                         progress=progress, checkpoint=ck, **opt_kw)
            X_p = o.X_p
            entry["history"] = o.history
        entry["X_p"] = X_p.astype(np.asarray(X_cand).dtype)
        out[b] = entry
    return out


def sweep(task, problem, arch, budgets=(1, 2, 5, 10, 20, 50, 100), seeds=(0, 1, 2),
          train_config: _train.TrainConfig | None = None, methods=("ntba", "sampling"),
          opt_steps: int = 0, opt_method: str = "lbfgsb", network: bool = True,
          ntba=None, progress: bool = True, csv_path=None, sampling_budgets=None) -> pd.DataFrame:
    """NTBA vs sampling over budgets and seeds, in one run, as a tidy table.

    ``budgets`` are NTBA's; ``sampling_budgets`` (default: the same) the
    baseline's, which usually needs larger ones to reach high ASR.
    A budget above the candidate pool is refused (as everywhere in ntklib:
    :func:`ntklib.validation.check_budgets`), before anything trains. NTBA poisons are designed
    once per budget (deterministic given the problem; pass ``ntba`` from
    :func:`ntba_poisons` to reuse them); seeds vary the victim's initialization
    (and, for sampling, the random subset). With ``network=False`` only the
    kernel model is evaluated. Columns: method, budget, seed, kernel_loss,
    kernel_ca, kernel_asr, and (with networks) net_ca, net_asr, train_loss,
    converged, diverged, train_steps, max_poison_residual, max_clean_residual,
    seconds (the victim's share of its training time). All victims of the sweep
    train together (:func:`ntklib.train.train_many`: batched, cached by content),
    with one progress bar; a diverged victim gets NaN network metrics and a warning.
    """
    _check_task(task)
    m = len(task.X_cand)
    if network:
        _models.check_architecture(arch)
    seeds = _check_seeds(seeds)
    if isinstance(methods, str):
        methods = (methods,)
    for i, meth in enumerate(methods):
        _val.check_choice(meth, f"methods[{i}]", ("ntba", "sampling"))
    opt_steps = _val.check_steps(opt_steps, "opt_steps", min=0)
    _val.check_choice(opt_method, "opt_method", ("lbfgsb", "adam"))
    train_config = _train.check_config(train_config) if network else train_config
    if csv_path is not None:  # checked now: the table is written after all the training
        csv_path = _val.check_path(csv_path, "csv_path", suffixes=(".csv",), writable=True)
        csv_path.parent.mkdir(parents=True, exist_ok=True)

    budgets = _val.check_budgets(budgets, "budgets", m)  # one policy: a budget above the pool is refused
    sampling_budgets = budgets if sampling_budgets is None else _val.check_budgets(sampling_budgets,
                                                                                    "sampling_budgets", m)
    if ntba is not None and "ntba" in methods:
        missing = [b for b in budgets if b not in ntba]
        if missing:
            raise ValueError(f"ntba holds no poisons for budgets {missing}; design them with "
                             "ntba_poisons(problem, X_cand, budgets) for the same budgets")
    if "ntba" in methods and ntba is None:
        ntba = ntba_poisons(problem, task.X_cand, budgets, opt_steps, opt_method, progress)
    jobs = [(meth, b, s) for meth in methods for b in (budgets if meth == "ntba" else sampling_budgets)
            for s in seeds]
    rows, sets = [], []
    for meth, b, s in jobs:
        X_p = ntba[b]["X_p"] if meth == "ntba" else task.X_cand[_attack.sampling_baseline(m, b, seed=int(s))]
        rows.append(dict(method=meth, budget=b, seed=int(s), **kernel_metrics(problem, X_p)))
        sets.append(victim_data(task, X_p))
    if network:
        cfg = train_config or _train.TrainConfig()
        results = _train.train_many(arch, sets, [dataclasses.replace(cfg, seed=int(s)) for _, _, s in jobs],
                                    progress=progress, desc=f"victims ({len(jobs)})")
        for row, (X, y), r in zip(rows, sets, results, strict=True):
            row.update(_victim_row(task, arch, X, y, r), seconds=r.seconds)
    df = pd.DataFrame(rows)
    if csv_path is not None:
        df.to_csv(csv_path, index=False)
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation per method and budget of every metric column."""
    _check_table(df)
    metrics = [c for c in df.columns if c not in ("method", "budget", "seed") and
               pd.api.types.is_numeric_dtype(df[c])]
    g = df.groupby(["method", "budget"])[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std"))
    return out.reset_index()


def efficiency_ratio(df: pd.DataFrame, metric: str = "net_asr", level: float = 0.9) -> dict:
    """(smallest sampling budget whose mean ``metric`` reaches ``level``) /
    (smallest NTBA budget doing so).

    If sampling never reaches the level within the swept budgets, the ratio is a
    lower bound computed with the largest budget swept (``lower_bound=True``); if
    NTBA never does, the ratio is None.
    """
    _check_table(df)
    level = _val.check_fraction(level, "level")
    missing = [c for c in ("method", "budget", metric) if c not in df.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}; metric must be one of its columns "
                         f"{[c for c in df.columns if c not in ('method', 'budget', 'seed')]}")
    mean = df.groupby(["method", "budget"])[metric].mean()

    def first(method):
        if method not in mean.index.get_level_values(0):
            return None
        s = mean.loc[method]
        hit = s[s >= level]
        return int(hit.index.min()) if len(hit) else None

    nb, sb = first("ntba"), first("sampling")
    samp = df.loc[df["method"] == "sampling", "budget"]
    max_b = int(samp.max()) if len(samp) else int(df["budget"].max())
    out = dict(metric=metric, level=level, ntba_budget=nb, sampling_budget=sb, lower_bound=False, ratio=None)
    if nb is not None:
        if sb is not None:
            out["ratio"] = sb / nb
        else:
            out["ratio"], out["lower_bound"] = max_b / nb, True
    return out


def ratio_curve(df: pd.DataFrame, levels, metric: str = "net_asr") -> list[dict]:
    """:func:`efficiency_ratio` at every level of ``levels`` (fractions in [0, 1]): how the ratio
    depends on the ASR level it is read at (a single level can flatter or hide an attack). One dict
    per level, as :func:`efficiency_ratio` returns it."""
    levels = [_val.check_fraction(lv, f"levels[{i}]") for i, lv in enumerate(levels)]
    return [efficiency_ratio(df, metric, lv) for lv in levels]
