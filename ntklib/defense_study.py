"""The defender's study of notebook 07: detectors and I-BAU against NTBA and sampling poisons,
judged on trained networks, several seeds, the baseline in the same run.

:func:`detection_study` trains one poisoned victim per (attack, budget, seed), scores its
training set with every detector of :mod:`ntklib.defenses`, removes each detector's flagged
points, retrains from scratch (same seed) and measures the network. :func:`ibau_study` runs
:func:`ntklib.unlearning.ibau` on the same poisoned victims with clean sets of several sizes,
measuring after every round. Both return tidy tables (one row per measurement).

Where the detectors look (``docs/design.md``, section 8): the representation detectors (spectral
signatures, activation clustering, SPECTRE) score the target class, the class the poisons are
labelled with, in the victim's penultimate activations; ``spectral_ntk`` and ``spectral_inf``
score the same class in the victim's empirical NTK and the architecture's infinite NTK;
``datamodel``, ``loo`` and ``representer`` score every training point through the victim's
empirical NTK (the kernel model of the trained network). ``representer`` attributes the
predictions on triggered test images, so it assumes the defender has seen a few attacked
inputs; the others see the training set only. Every detector is told the true number of
poisons (the papers' eps). ROC AUC is computed on the target class, where the poisons are.
"""
from __future__ import annotations

import dataclasses
import inspect
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import attack as _attack
from . import defenses as _def
from . import evaluate as _eval
from . import kernels as _kernels
from . import models as _models
from . import parallel as _parallel
from . import regression as _reg
from . import train as _train
from . import unlearning as _unl
from . import validation as _val

__all__ = ["DETECTORS", "IBAU_VARIANTS", "poison_sets", "setting", "settings", "detect", "detection_study",
           "ibau_study", "direction_study", "stability_study", "runtime", "poison_recovery",
           "check_detectors"]

DETECTORS = _def.DETECTORS  # re-exported: notebook 07 and its parameter docs name it here


def _check_exp(exp, needs=("task", "arch", "train_config")):
    """The experiment of :func:`ntklib.pipeline.prepare` (anything with the attributes a study reads)."""
    missing = [a for a in needs if not hasattr(exp, a)]
    if missing:
        raise TypeError(f"exp={_val.describe(exp)} is invalid: must be the Experiment of pipeline.prepare(...) "
                        f"(it lacks {', '.join(missing)})")
    return exp


def poison_sets(exp, ntba_budget: int = 3, sampling_budgets=(3, 10), seeds=(0, 1, 2), opt_steps: int = 30,
                progress: bool = False) -> list[dict]:
    """The poison sets of the study: NTBA's (designed once on ``exp``'s kernel, greedy + L-BFGS-B)
    and sampling's (one random subset per seed), each with the seed of the victim it poisons:
    dicts with attack, budget, seed and X_p."""
    _check_exp(exp, ("task", "problem"))
    m = len(exp.task.X_cand)
    ntba_budget = _val.check_budget(ntba_budget, "ntba_budget", m)
    sampling_budgets = _val.check_budgets(sampling_budgets, "sampling_budgets", m)
    seeds = _val.check_int_list(seeds, "seeds", min=0)
    X_ntba = _eval.ntba_poisons(exp.problem, exp.task.X_cand, [ntba_budget], opt_steps=opt_steps,
                                progress=progress)[ntba_budget]["X_p"]
    sets = [dict(attack="ntba", budget=ntba_budget, seed=s, X_p=X_ntba) for s in seeds]
    for b in sampling_budgets:
        sets += [dict(attack="sampling", budget=b, seed=s,
                      X_p=exp.task.X_cand[_attack.sampling_baseline(m, b, seed=s)]) for s in seeds]
    return sets


def setting(attack: str, budget: int) -> str:
    """The label of an attack setting in the study's tables and figures: ``"ntba 3"``."""
    return f"{attack} {int(budget)}"


def settings(sets) -> list[str]:
    """The distinct settings of ``sets`` (:func:`setting`), NTBA's first, then by budget."""
    found = {(s["attack"], int(s["budget"])) for s in sets}
    return [setting(a, b) for a, b in sorted(found, key=lambda ab: (ab[0] != "ntba", ab[1], ab[0]))]


def _first_of_each_setting(sets) -> dict[str, int]:
    """{setting: index of its first poison set in ``sets``} in the order of :func:`settings`."""
    first = {}
    for j, s in enumerate(sets):
        first.setdefault(setting(s["attack"], s["budget"]), j)
    return {name: first[name] for name in settings(sets)}


def _gram(kernel, X, X2=None):
    return np.asarray(kernel(X) if X2 is None else kernel(X, X2), dtype=np.float64)


def check_detectors(detectors, has_infinite: bool, has_query: bool = True) -> list[str]:
    """The detectors to run: ``None`` means every one of :data:`DETECTORS` that applies
    (``spectral_inf`` only with an infinite kernel); a list is checked name by name, and a
    detector named there that cannot run is refused (never skipped in silence)."""
    if detectors is None:
        return [d for d in DETECTORS if (d != "spectral_inf" or has_infinite) and (d != "representer" or has_query)]
    if isinstance(detectors, str):
        detectors = [detectors]
    detectors = list(detectors)
    if not detectors:
        raise ValueError(f"detectors=[] is invalid: name at least one of {list(DETECTORS)} (None: all that apply)")
    for i, d in enumerate(detectors):
        _val.check_choice(d, f"detectors[{i}]", DETECTORS)
    if "spectral_inf" in detectors and not has_infinite:
        raise ValueError("detectors names spectral_inf, but there is no infinite-width kernel (infinite=None, or an "
                         "architecture without one such as the plain-JAX networks): pass one, use a stax "
                         "architecture, or leave spectral_inf out")
    if "representer" in detectors and not has_query:
        raise ValueError("the representer detector needs X_query (triggered images whose predictions it "
                         "attributes); pass them or leave representer out of detectors")
    return detectors


def detect(arch, params, X, y, n_poison: int, detectors=None, X_query=None, infinite=None,
           n_subsets: int = 8000, seed: int = 0) -> list[dict]:
    """Every detector on one poisoned training set X (n, H, W, C), y (n,) (poisons labelled +1)
    and the victim ``params`` trained on it. Returns one dict per detector: scores (n,) (-inf
    outside the target class for the class detectors), removed (n,) bool, seconds.
    ``detectors``: names from :data:`DETECTORS` (None: all that apply, see :func:`check_detectors`);
    ``X_query``: triggered images for ``representer``; ``infinite``: the infinite-NTK kernel
    for ``spectral_inf``."""
    _models.check_architecture(arch)
    X = _val.check_images(X, "X")
    y = _val.check_labels(y, "y", len(X))
    arch.check_fits(X.shape[1:], params, who="X")
    if X_query is not None:
        X_query = _val.check_images(X_query, "X_query", X.shape[1:])
    if infinite is not None:
        _kernels.check_kernel(infinite, "infinite")
    detectors = check_detectors(detectors, infinite is not None, X_query is not None)
    n_subsets = _val.check_int(n_subsets, "n_subsets", min=2)
    seed = _val.check_seed(seed)
    rows = _def.class_rows(y, 1.0)
    n_remove = _def.removal_count(n_poison, len(rows))
    empirical = _kernels.empirical_ntk(arch.apply_fn, params)
    cache = {}

    def reps():
        if "R" not in cache:
            cache["R"] = arch.features(params, X[rows])
        return cache["R"]

    def K_all():
        if "K" not in cache:
            cache["K"] = _gram(empirical, X)
        return cache["K"]

    out = []
    # BLAS on one thread: a class's few hundred points make small matrices, where NumPy's threads
    # only contend with each other and with XLA's (measured on 2 cores, three poison sets of notebook
    # 07: SPECTRE 7.4 -> 3.2 s, spectral and clustering 0.4 -> 0.03 s, the datamodel unchanged)
    with _reg.single_threaded_blas():
        for name in detectors:
            t0 = time.perf_counter()
            cls = None  # scores of the target class only
            full = None
            removed = None
            if name == "spectral":
                cls = _def.spectral_signature_scores(reps())
            elif name == "spectral_ntk":
                cls = _def.kernel_spectral_scores(K_all()[np.ix_(rows, rows)])
            elif name == "spectral_inf":
                cls = _def.kernel_spectral_scores(_gram(infinite, X[rows]))
            elif name == "clustering":
                c = _def.activation_clustering(reps(), seed=seed)
                cls = c.scores
                removed = np.zeros(len(X), bool)
                removed[rows[c.flagged]] = True
            elif name == "spectre":
                res = _def.spectre(reps(), n_poison)
                cls = res.scores
                removed = np.zeros(len(X), bool)
                removed[rows[res.removed]] = True
            elif name == "datamodel":
                A = _def.kernel_datamodels(K_all(), y, n_subsets=n_subsets, seed=seed)
                full = _def.strongest_feature_scores(A, seed=seed)
            elif name == "loo":
                full = _def.strongest_feature_scores(_def.hat_datamodels(K_all(), y), seed=seed)
            else:
                full = _def.representer_scores(K_all(), y, _gram(empirical, X_query, X))
            if full is None:
                full = np.full(len(X), -np.inf)
                full[rows] = cls
            if removed is None:
                removed = np.zeros(len(X), bool)
                removed[rows[np.argsort(-full[rows], kind="stable")[:n_remove]]] = True
            out.append(dict(detector=name, scores=full, removed=removed, seconds=time.perf_counter() - t0))
    return out


def _check_sets(exp, sets) -> list:
    """Poison sets as :func:`poison_sets` makes them, checked before any victim is trained."""
    _check_exp(exp)
    if isinstance(sets, dict) or not isinstance(sets, (list, tuple)) or not sets:
        raise TypeError(f"sets={_val.describe(sets)} is invalid: must be the non-empty list of poison_sets(...)")
    for i, s in enumerate(sets):
        if not isinstance(s, dict):
            raise TypeError(f"sets[{i}]={_val.describe(s)} is invalid: each poison set is a dict with attack, "
                            "budget, seed and X_p (poison_sets makes them)")
        missing = [k for k in ("attack", "budget", "seed", "X_p") if k not in s]
        if missing:
            raise ValueError(f"sets[{i}] lacks {missing}: each poison set is a dict with attack, budget, seed and "
                             "X_p (poison_sets makes them)")
        _val.check_images(s["X_p"], f"sets[{i}]['X_p']", exp.task.X_d.shape[1:])
        _val.check_seed(s["seed"], f"sets[{i}]['seed']")
    return list(sets)


def detection_study(exp, sets, detectors=None, retrain: bool = True, n_subsets: int = 8000,
                    progress: bool = True) -> tuple[pd.DataFrame, list]:
    """Detect, remove, retrain: for each poison set of :func:`poison_sets`, the poisoned victim
    (seed = the set's seed, ``exp.train_config``), every detector's scores, and (``retrain``)
    a fresh victim trained on the kept points. Returns (table, victims) where the table has one
    row per (set, detector) (detector "none": the poisoned victim itself) with auc, caught,
    removed, precision, recall, seconds, net_asr, net_ca (and attack, budget, setting, seed);
    ``victims`` holds the poisoned
    victims' params in the order of ``sets`` (for :func:`ibau_study`). The sets run one after the
    other: the detectors' ``seconds`` are results (notebook 07's runtime table), and two sets at a
    time (:func:`ntklib.parallel.thread_map`) gained nothing on 2 cores (measured: 122 s either way;
    the datamodel and SPECTRE detectors, then on NumPy's threads, took 2-3x longer each; not measured
    again since :func:`detect` runs them with BLAS on one thread)."""
    task, arch, cfg = exp.task, exp.arch, exp.train_config
    sets = _check_sets(exp, sets)  # everything checked before the first victim trains
    detectors = check_detectors(detectors, arch.kernel_fn is not None)
    retrain = _val.check_bool(retrain, "retrain")
    n_subsets = _val.check_int(n_subsets, "n_subsets", min=2)
    data = [_eval.victim_data(task, s["X_p"]) for s in sets]
    cfgs = [dataclasses.replace(cfg, seed=int(s["seed"])) for s in sets]
    victims = _train.train_many(arch, data, cfgs, progress=progress, desc=f"poisoned victims ({len(sets)})")
    infinite = None
    if "spectral_inf" in detectors and arch.kernel_fn is not None:
        infinite = _kernels.infinite_ntk(arch, dtype="float64")
    rows, retrain_jobs = [], []
    for s, (X, y), v in zip(tqdm(sets, desc="detectors", disable=not progress), data, victims, strict=True):
        n_d = len(task.X_d)
        truth = np.r_[np.zeros(n_d, bool), np.ones(len(X) - n_d, bool)]
        base = dict(attack=s["attack"], budget=s["budget"], setting=setting(s["attack"], s["budget"]), seed=s["seed"])
        rows.append(dict(base, detector="none", **_eval.network_metrics(arch, v.params, task)))
        target = y > 0
        for d in detect(arch, v.params, X, y, len(X) - n_d, detectors, task.X_test_trig, infinite, n_subsets,
                        seed=int(s["seed"])):
            m = _def.detection_metrics(d["scores"][target], truth[target], d["removed"][target])
            rows.append(dict(base, detector=d["detector"], seconds=d["seconds"], **m))
            retrain_jobs.append((len(rows) - 1, X[~d["removed"]], y[~d["removed"]], int(s["seed"])))
    if retrain and retrain_jobs:
        res = _train.train_many(arch, [(X, y) for _, X, y, _ in retrain_jobs],
                                [dataclasses.replace(cfg, seed=sd) for *_, sd in retrain_jobs], progress=progress,
                                desc=f"retrained victims ({len(retrain_jobs)})")
        for (i, *_), r in zip(retrain_jobs, res, strict=True):
            rows[i].update(_eval.network_metrics(arch, r.params, task))
    return pd.DataFrame(rows), [v.params for v in victims]


IBAU_VARIANTS = _unl.IBAU_VARIANTS  # re-exported: notebook 07 reads it here


def ibau_study(exp, sets, victims, n_clean=(20, 40, 60), rounds: int = 5, variants=None, progress: bool = True,
               workers: int | None = None, **ibau_kw) -> pd.DataFrame:
    """I-BAU on each poisoned victim with the first ``n_clean`` images of a shuffled clean pool
    (the task's spare clean images ``X_spare`` when it has them, else its held-out set t; the
    same subset for every victim of a size), measured after every round (round 0: before).
    ``variants``: {name: settings of :func:`ntklib.unlearning.ibau`} run side by side on the same
    victims, clean images and seed (default {"I-BAU": {}}; :data:`IBAU_VARIANTS` adds the two
    ablations); ``ibau_kw``: settings shared by all. Columns: variant, attack, budget, setting, seed,
    n_clean, round, net_asr, net_ca, seconds (the whole run's wall time) and, with
    ``diagnostics=True``, the fixed-point residual and spectral radius of d_delta Phi at each
    round's delta*. The runs are independent: ``workers`` at a time on threads (default one per CPU
    core, :func:`ntklib.parallel.thread_map`; notebook 07: 95 -> 57 s on 2 cores, the same rows), so
    ``seconds`` is a run's wall time while sharing the cores with the others (an upper bound for a
    run alone)."""
    task, arch = exp.task, exp.arch
    sets = _check_sets(exp, sets)
    allowed = [n for n in inspect.signature(_unl.ibau).parameters
               if n not in ("arch", "params", "X_clean", "y_clean", "rounds", "seed", "progress", "on_round")]
    _val.check_keys(ibau_kw, allowed, "setting(s) of unlearning.ibau")
    variants = {"I-BAU": {}} if variants is None else variants
    if not isinstance(variants, dict) or not variants:
        raise TypeError(f"variants={_val.describe(variants)} is invalid: must be a non-empty dict {{name: settings "
                        "of unlearning.ibau}} such as defense_study.IBAU_VARIANTS")
    for name, kw in variants.items():
        if not isinstance(kw, dict):
            raise TypeError(f"variants[{name!r}]={_val.describe(kw)} is invalid: must be a dict of settings of "
                            "unlearning.ibau")
        _val.check_keys(kw, allowed, f"setting(s) of unlearning.ibau in variants[{name!r}]")
    spare = len(task.X_spare) > 0
    X_pool, y_pool = (task.X_spare, task.y_spare) if spare else (task.X_t, task.y_t)
    pool = len(X_pool)
    where = ("the task's spare clean set" if spare else
             "the task's held-out set t; make_task's n_spare_per_class adds a larger one")
    n_clean = _val.check_int_list(n_clean, "n_clean", min=1, max=pool,
                                  hint=f"the clean pool ({where}) holds {pool} images")
    rounds = _val.check_steps(rounds, "rounds")
    if len(victims) != len(sets):
        raise ValueError(f"{len(sets)} poison sets but {len(victims)} victims: pass detection_study's victims")
    order = np.random.default_rng(0).permutation(pool)
    jobs = [(v, s, p, n) for v in variants for s, p in zip(sets, victims, strict=True) for n in n_clean]

    def one(job):
        v, s, params, n = job
        base = dict(variant=v, attack=s["attack"], budget=s["budget"], setting=setting(s["attack"], s["budget"]),
                    seed=s["seed"], n_clean=n)
        rows = [dict(base, round=0, **_eval.network_metrics(arch, params, task))]
        idx = order[:n]
        t0 = time.perf_counter()

        def on_round(r, p):
            rows.append(dict(base, round=r, **_eval.network_metrics(arch, p, task)))

        res = _unl.ibau(arch, params, X_pool[idx], y_pool[idx], rounds=rounds, seed=int(s["seed"]), progress=False,
                        on_round=on_round, **{**ibau_kw, **variants[v]})
        for k, row in enumerate(rows[1:]):
            row["seconds"] = time.perf_counter() - t0
            for key in ("residual", "spectral_radius"):
                if key in res.history:
                    row[key] = res.history[key][k]
        return rows

    done = _parallel.thread_map(one, jobs, workers=workers, desc="I-BAU", progress=progress)
    return pd.DataFrame([row for rows in done for row in rows])


def _check_victims(sets, victims) -> list:
    if isinstance(victims, dict) or not isinstance(victims, (list, tuple)) or len(victims) != len(sets):
        raise ValueError(f"victims={_val.describe(victims)} is invalid: one poisoned victim's params per poison "
                         f"set ({len(sets)}); pass the victims detection_study returns")
    return list(victims)


def _poisoned_data(exp, s):
    """The poisoned training set of poison set ``s`` (d, then the poisons labelled +1) and its truth
    mask (True on the poisons)."""
    X, y = _eval.victim_data(exp.task, s["X_p"])
    return X, y, np.arange(len(X)) >= len(exp.task.X_d)


def direction_study(exp, sets, victims, n_dir: int = 10) -> pd.DataFrame:
    """Where the poisons stand in the spectrum of the victim's representation (notebook 07).
    Spectral signatures (Tran et al., NeurIPS 2018, Sec. 3) score the target class's centred
    penultimate activations by their squared projection on the *top* singular direction only; here,
    for the first poison set of each setting (:func:`settings`) and its poisoned victim, the ROC AUC
    on the target class of the squared projection on each of the first ``n_dir`` directions
    (:func:`ntklib.defenses.spectral_direction_scores`), beside each direction's share of the
    variance. Columns: setting, direction (1-based), auc, variance_share. Cost: one forward pass and
    one thin SVD per setting."""
    sets = _check_sets(exp, sets)
    victims = _check_victims(sets, victims)
    n_dir = _val.check_int(n_dir, "n_dir", min=1)
    if exp.arch.features_fn is None:
        raise ValueError(f"{exp.arch.spec.get('name')} has no penultimate layer (features_fn): the directions "
                         "are those of the victim's representation; use mlp, cnn or their plain twins")
    rows = []
    for name, j in _first_of_each_setting(sets).items():
        X, y, truth = _poisoned_data(exp, sets[j])
        target = _def.class_rows(y)
        S, share = _def.spectral_direction_scores(exp.arch.features(victims[j], X[target]), n_dir)
        for k in range(S.shape[1]):
            rows.append(dict(setting=name, direction=k + 1,
                             auc=_def.detection_metrics(S[:, k], truth[target])["auc"], variance_share=float(share[k])))
    return pd.DataFrame(rows)


def stability_study(exp, sets, victims, n_subsets: int = 8000) -> pd.DataFrame:
    """How many random subsets the kernel datamodel needs (notebook 07): on the first NTBA poison
    set's victim (the first set's when there is none), its empirical NTK of the poisoned training set
    in float64, :func:`ntklib.defenses.datamodel_stability` at n_subsets / 4, n_subsets / 2 and
    n_subsets (at least 2). Columns: n_subsets, r, r_rowsum. Cost: six datamodel estimates."""
    sets = _check_sets(exp, sets)
    victims = _check_victims(sets, victims)
    n_subsets = _val.check_int(n_subsets, "n_subsets", min=2)
    j = next((k for k, s in enumerate(sets) if s["attack"] == "ntba"), 0)
    X, y, _ = _poisoned_data(exp, sets[j])
    K = np.asarray(_kernels.empirical_ntk(exp.arch.apply_fn, victims[j], dtype="float64")(X))
    sizes = sorted({max(2, n_subsets // 4), max(2, n_subsets // 2), n_subsets})
    return pd.DataFrame([_def.datamodel_stability(K, y, n_subsets=n) for n in sizes])


def runtime(detections: pd.DataFrame, ibau: pd.DataFrame | None = None, detectors=None) -> pd.DataFrame:
    """Wall time of each defense in the study's tables: per detector (rows of
    :func:`detection_study`'s table other than "none", in the order of ``detectors``) the mean and
    the max of its seconds; with ``ibau`` (:func:`ibau_study`'s table), a row "I-BAU (all rounds)":
    the mean over its runs (one per setting, seed and clean-set size) of a whole run's seconds, and
    the max. Columns: defense, mean, max."""
    det = detections[detections.detector != "none"]
    order = list(dict.fromkeys(det.detector)) if detectors is None else [d for d in detectors
                                                                         if d in set(det.detector)]
    table = det.groupby("detector")["seconds"].agg(["mean", "max"]).reindex(order)
    if ibau is not None:
        i_bau = ibau[(ibau.variant == "I-BAU") & (ibau["round"] > 0)]
        table.loc["I-BAU (all rounds)"] = [float(i_bau.groupby(["setting", "seed", "n_clean"]).seconds.first().mean()),
                                           float(i_bau.seconds.max())]
    return table.rename_axis("defense").reset_index()


def poison_recovery(exp, sets, steps: int = 2000, lr: float = 0.02, init: str = "flat",
                    beta: float | None = 10.0, workers: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Poisons in the weights (notebook 09): a defender holds a poisoned victim's weights and
    reconstructs its training set (Loo et al., ICLR 2024; :func:`ntklib.reconstruction.run`, 2N
    candidates, gradients at the trained weights). Per poison set: the victim of its seed trained
    with ``exp.train_config`` on d plus the poisons (``exp.arch`` must be a plain_mlp, the network
    the attack smooths), the reconstructions matched one to one to the training images; do the
    poisons come back better than the clean images?

    Returns (table, examples). The table has one row per set: attack, budget, setting, seed, n,
    ssim_poisons and ssim_clean (mean matched SSIM), poisons_in_top (poisons among the n_p
    best-recovered training images; chance n_p^2 / n for n_p poisons), mean_rank_poisons (by SSIM, 1 = best;
    chance (n + 1) / 2). ``examples``: {setting: (poisons, their matched reconstructions, their
    SSIMs)} for the first set of each setting. Cost: one victim and one attack of ``steps`` Adam
    steps per set; the sets run ``workers`` at a time (:func:`ntklib.parallel.thread_map`)."""
    from . import reconstruction as _rec

    sets = _check_sets(exp, sets)
    spec = exp.arch.spec
    if spec.get("name") != "plain_mlp" or _models.plain_mlp(spec["width"], spec["depth"]).spec != spec:
        raise ValueError(f"exp.arch is {spec}: the reconstruction attack needs the plain-JAX ReLU MLP whose ReLUs it "
                         "smooths, at its default initialization; prepare the experiment with "
                         "architecture='plain_mlp'")
    first = set(_first_of_each_setting(sets).values())

    def one(s):
        X, y, is_p = _poisoned_data(exp, s)
        r = _rec.run(X, y, spec["width"], spec["depth"], config=exp.train_config, steps=steps, lr=lr, beta=beta,
                     seed=int(s["seed"]), init=init)
        return X, is_p, np.asarray(r["match"]["ssim"]), r["result"].X[r["match"]["rec_index"][is_p]]

    rows, examples = [], {}
    for j, (s, (X, is_p, ssim, R_p)) in enumerate(zip(sets, _parallel.thread_map(one, sets, workers=workers),
                                                       strict=True)):
        order = np.argsort(-ssim, kind="stable")
        ranks = np.empty(len(X), int)
        ranks[order] = np.arange(1, len(X) + 1)
        name = setting(s["attack"], s["budget"])
        rows.append(dict(attack=s["attack"], budget=s["budget"], setting=name, seed=s["seed"], n=len(X),
                         ssim_poisons=float(ssim[is_p].mean()), ssim_clean=float(ssim[~is_p].mean()),
                         poisons_in_top=int(is_p[order[:is_p.sum()]].sum()),
                         mean_rank_poisons=float(ranks[is_p].mean())))
        if j in first:
            examples[name] = (X[is_p], R_p, ssim[is_p])
    return pd.DataFrame(rows), examples
