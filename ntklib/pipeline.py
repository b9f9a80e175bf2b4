"""The paper's pipeline in one call, and parameter checking for notebooks.

:func:`prepare` builds everything an attack needs from plain parameters:

1. the task (:func:`ntklib.data.make_task`);
2. the victim architecture (:mod:`ntklib.models`);
3. the kernel: ``"empirical"`` (the paper's choice, App. C.4): train the victim
   on the clean set d to (near) zero training loss and take the empirical NTK at
   those weights; ``"empirical_init"``: the empirical NTK at initialization;
   ``"infinite"``: the analytic infinite-width NTK; ``"empirical_ensemble"`` (our
   extension, not the paper's): the empirical NTKs of ``ensemble_size`` clean
   networks of other seeds, the loss averaged over them
   (:class:`ntklib.attack.EnsembleProblem`);
4. the closed-form problem (:class:`ntklib.attack.BackdoorProblem`).

:func:`check_params` validates a notebook's parameters cell and fails with a
message naming the bad value and the valid choices.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field

import jax
import numpy as np

from . import attack as _attack
from . import cache as _cache
from . import data as _data
from . import defenses as _defenses
from . import evaluate as _evaluate
from . import kernels as _kernels
from . import models as _models
from . import train as _train
from . import unlearning as _unlearning
from . import validation as _val

__all__ = ["CHOICES", "PARAMETER_RULES", "check_params",
           "smoke_task_kw", "build_architecture", "prepare", "Experiment", "victim_config",
           "design_poisons", "run", "AttackRun", "KernelComparison", "compare_kernels", "victim_variants"]

CHOICES = dict(
    dataset=_data.DATASETS,
    trigger=("periodic", "patch"),
    architecture=("mlp", "cnn", "wide_resnet", "plain_mlp", "plain_cnn", "plain_wide_resnet"),
    kernel=tuple(_kernels.DESIGN_KERNELS),
    opt_method=("lbfgsb", "adam"),
    optimizer=("sgd", "adam"),
    readout=("flatten", "pool"),
)


def _positive_int(v, k):
    return _val.check_int(v, k, min=1)


def _positive_ints(v, k):
    return _val.check_int_list(v, k, min=1)


def _optional_positive_int(v, k):
    return _val.check_int(v, k, min=1, allow_none=True)


def _choice_list(choices):
    def check(v, k):
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise TypeError(f"{k}={v!r} is invalid: must be a non-empty list of names from {list(choices)}")
        if not v:
            raise ValueError(f"{k}=[] is invalid: give at least one of {list(choices)}")
        for i, x in enumerate(v):
            _val.check_choice(x, f"{k}[{i}]", choices)
        return v
    return check


def _number_list(check):
    """A rule for a non-empty list of numbers (a single number is a list of one), each by ``check(x, name)``."""
    def rule(v, k):
        values = v if isinstance(v, (list, tuple)) else [v]
        if not values:
            raise ValueError(f"{k}=[] is invalid: give at least one value")
        return [check(x, f"{k}[{i}]") for i, x in enumerate(values)]
    return rule


def _task_kw(v, k):
    if not isinstance(v, dict):
        raise TypeError(f"{k}={v!r} is invalid: must be a dict of ntklib.data.make_task sizes")
    _val.check_keys(v, TASK_KW, f"key(s) of {k} (sizes passed to ntklib.data.make_task)")
    for key, n in v.items():
        if key == "n_eval_per_class":
            _val.check_int(n, f"{k}[{key!r}]", min=1)
        elif key == "n_spare_per_class":
            _val.check_int(n, f"{k}[{key!r}]", min=0)
        else:
            _val.check_int(n, f"{k}[{key!r}]", min=1, allow_none=True)
    return v


def _variants(v, k):
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{k}={_val.describe(v)} is invalid: must be a list of dicts, each with a 'label' and "
                        f"changes to the victim ({sorted(VARIANT_KEYS)})")
    for i, var in enumerate(v):
        if not isinstance(var, dict) or "label" not in var:
            raise TypeError(f"{k}[{i}]={_val.describe(var)} is invalid: must be a dict with a 'label'")
        _val.check_keys([x for x in var if x != "label"], VARIANT_KEYS, f"setting(s) in {k}[{i}]")
        check_params(**{x: y for x, y in var.items() if x != "label"})
    return v


TASK_KW = ("n_train_per_class", "n_eval_per_class", "n_test_per_class", "n_pool", "n_spare_per_class")
VARIANT_KEYS = ("train_steps", "target_loss", "target_residual", "width", "victim_lr", "optimizer", "batch_size")

# What each notebook parameter may hold (notebooks and the runner check against this table).
PARAMETER_RULES = dict(
    dataset=lambda v, k: _val.check_choice(v, k, CHOICES["dataset"]),
    trigger=lambda v, k: _val.check_choice(v, k, CHOICES["trigger"]),
    architecture=lambda v, k: _val.check_choice(v, k, CHOICES["architecture"]),
    kernel=lambda v, k: _val.check_choice(v, k, CHOICES["kernel"]),
    kernels=_choice_list(CHOICES["kernel"]),
    readout=lambda v, k: v if v is None else _val.check_choice(v, k, CHOICES["readout"]),
    opt_method=lambda v, k: _val.check_choice(v, k, CHOICES["opt_method"]),
    optimizer=lambda v, k: _val.check_choice(v, k, CHOICES["optimizer"]),
    kernel_dtype=lambda v, k: _val.check_choice(v, k, ("float32", "float64")),
    width=_positive_int, depth=_positive_int, ensemble_size=_positive_int, budget=_positive_int,
    hinge_budget=_positive_int,
    swap_budget=_positive_int, n_points=_positive_int, train_steps=_positive_int, steps=_positive_int,
    checkpoint_every=_positive_int, n_eval_per_class=_positive_int,
    opt_steps=lambda v, k: _val.check_int(v, k, min=0, hint="0 keeps the greedy poisons"),
    budgets=_positive_ints, sampling_budgets=_positive_ints, variant_budgets=_positive_ints,
    variant_sampling_budgets=_positive_ints, widths=_positive_ints, lazy_widths=_positive_ints,
    timing_sizes=_positive_ints,
    seed=lambda v, k: _val.check_seed(v, k),
    seeds=lambda v, k: _val.check_int_list(v, k, min=0),
    n_train_per_class=_optional_positive_int, n_test_per_class=_optional_positive_int,
    batch_size=_optional_positive_int,
    victim_lr=lambda v, k: _val.check_lr(v, k),   # the victims' (05-07), the poisons' Adam step (04),
    poison_lr=lambda v, k: _val.check_lr(v, k),   # the finite networks' (08), the reconstruction attack's (09)
    network_lr=lambda v, k: _val.check_lr(v, k),
    attack_lr=lambda v, k: _val.check_lr(v, k),
    attack_steps=_positive_int,
    target_loss=lambda v, k: _val.check_float(v, k, min=0),
    target_residual=lambda v, k: _val.check_float(v, k, min=0, include_min=False, allow_none=True),
    asr_level=lambda v, k: _val.check_fraction(v, k),
    trigger_amplitude=lambda v, k: _val.check_float(v, k, min=0, max=1, include_min=False, allow_none=True),
    ridge=lambda v, k: _val.check_float(v, k, min=0),
    w_attack=lambda v, k: _val.check_float(v, k, min=0),
    smoke=lambda v, k: _val.check_bool(v, k),
    fig_dir=lambda v, k: _val.check_path(v, k),
    task_kw=_task_kw,
    victim_variants=_variants,
    # notebook 08 (adversarial examples from the kernel)
    eps=lambda v, k: _val.check_float(v, k, min=0, max=1, hint="an L-infinity radius in pixel units"),
    eps_list=_number_list(lambda x, k: _val.check_float(x, k, min=0, max=1)),
    pgd_steps=lambda v, k: _val.check_int(v, k, min=0, hint="0 skips PGD"),
    pgd_step=lambda v, k: _val.check_float(v, k, min=0, include_min=False),
    transfer_lrs=_number_list(_val.check_lr),
    n_features=_positive_int, dynamics_width=_positive_int, dynamics_steps=_positive_int,
    dynamics_every=_positive_int, n_probe=_positive_int,
    # notebook 07 (defenses)
    ntba_budget=_positive_int, n_subsets=_positive_int, n_clean=_positive_ints, ibau_rounds=_positive_int,
    ibau_variants=lambda v, k: _choice_list(tuple(_unlearning.IBAU_VARIANTS))(v, k),
    detectors=lambda v, k: _choice_list(_defenses.DETECTORS)(v, k),
    retrain=lambda v, k: _val.check_bool(v, k),
    # notebook 09 (reconstruction)
    n_train=_positive_int, n_trains=_positive_ints,
    distill_pair=lambda v, k: _val.check_int_list(v, k, min=0),
    distill_seeds=lambda v, k: _val.check_int_list(v, k, min=0),
    variant_seeds=lambda v, k: _val.check_int_list(v, k, min=0),
    init=lambda v, k: _val.check_choice(v, k, ("flat", "grey", "mean_image")),
    predictor_kernel=lambda v, k: _val.check_choice(v, k, ("infinite", "empirical_init")),
    distill_kernel=lambda v, k: _val.check_choice(v, k, ("infinite", "empirical")),
)


def check_params(**params) -> dict:
    """Validate notebook parameters; raise ``ValueError`` / ``TypeError`` naming the bad one.

    Each parameter named in :data:`PARAMETER_RULES` is checked by its rule (choices from
    ``CHOICES``; budgets, widths and step counts positive integers, lists allowed where the
    name is plural; seeds non-negative integers; rates, levels and amplitudes in range);
    class labels are checked for the dataset, and source and target must differ. Names
    without a rule pass unchecked (the runner refuses names a notebook does not have). A
    notebook's complete parameters, with the rules between them, are checked by
    :func:`ntklib.params.check`.
    """
    for key, value in params.items():
        rule = PARAMETER_RULES.get(key)
        if rule is not None:
            try:
                rule(value, key)
            except (TypeError, ValueError) as e:
                msg = str(e)
                raise type(e)(msg if msg.startswith(key) else f"parameter {key}: {msg}") from None
    ds = params.get("dataset", "digits")
    for key in ("source", "target"):
        if key in params:
            try:
                _data.class_index(ds, params[key])
            except ValueError as e:
                raise ValueError(f"parameter {key}: {e}") from None
    if "source" in params and "target" in params and params["source"] == params["target"]:
        raise ValueError(f"parameters source and target must differ (both {params['source']!r})")
    if "distill_pair" in params:  # notebook 09's classes: checked here, not at part 3 of the notebook
        pair = params["distill_pair"]
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"parameter distill_pair={pair!r} is invalid: two different classes, e.g. [3, 8]")
        for c in pair:
            try:
                _data.class_index(ds, c)
            except ValueError as e:
                raise ValueError(f"parameter distill_pair: {e}") from None
    return params


def smoke_task_kw(task_kw=None) -> dict:
    """Task sizes for ``smoke=True`` runs: at most 30 training, 10 held-out and 20
    test images per class, so that any dataset runs in seconds on a CPU."""
    kw = dict(_task_kw(task_kw or {}, "task_kw"))
    for key, cap in (("n_train_per_class", 30), ("n_eval_per_class", 10), ("n_test_per_class", 20)):
        kw[key] = min(kw.get(key) or cap, cap)
    return kw


def build_architecture(name: str = "mlp", width: int = 512, depth: int = 2,
                       readout: str | None = None) -> _models.Architecture:
    """Architectures by notebook name. CNNs use a flatten readout by default (cheap infinite
    kernel) or, with ``readout="pool"``, global average pooling (translation-invariant, as the
    paper's WRN: a trigger at a random location is one feature wherever it lands);
    WideResNets always pool, take the widening factor k = max(1, width // 16) and depth
    max(depth, 10) (so ``width=16, depth=16`` is WRN-16-1); MLPs have no readout choice.
    The ``plain_*`` names are the same networks in plain JAX (no neural-tangents: a current
    JAX, a GPU); they have no infinite kernel."""
    _val.check_choice(name, "architecture", CHOICES["architecture"])
    if readout is not None:
        _val.check_choice(readout, "readout", CHOICES["readout"])
    base = name.removeprefix("plain_")
    allowed = {"cnn": ("flatten", "pool"), "wide_resnet": ("pool",), "mlp": ()}[base]
    if readout is not None and readout not in allowed:
        raise ValueError(f"readout={readout!r} is invalid for architecture={name!r}: "
                         + (f"it takes {' or '.join(map(repr, allowed))}" if allowed else "an MLP has no readout "
                            "choice") + " (leave readout=None for the architecture's default)")
    if base == "wide_resnet":
        kw = dict(depth=depth if depth >= 10 else 10, k=max(1, width // 16))
    else:
        kw = dict(width=width, depth=depth, **({"readout": readout or "flatten"} if base == "cnn" else {}))
    return _models.build(dict(name=name, **kw))


def victim_config(dataset: str = "digits", **overrides) -> _train.TrainConfig:
    """Default victim training: full-batch SGD with momentum to near-zero squared loss."""
    _val.check_choice(dataset, "dataset", CHOICES["dataset"])
    _val.check_keys(overrides, [f.name for f in dataclasses.fields(_train.TrainConfig)], "TrainConfig field(s)")
    base = dict(optimizer="sgd", lr=2.0, momentum=0.9, steps=4000, target_loss=1e-4, eval_every=50)
    if dataset == "cifar10":
        base.update(lr=0.5, batch_size=256, steps=6000)
    base.update(overrides)
    return _train.TrainConfig(**base)


@dataclass
class Experiment:
    """Everything an attack run needs (see :func:`prepare`)."""

    task: _data.BackdoorTask
    arch: _models.Architecture
    kernel: _kernels.Kernel
    problem: _attack.BackdoorProblem | _attack.EnsembleProblem
    train_config: _train.TrainConfig
    clean: _train.TrainResult | None = None
    spec: dict = field(default_factory=dict)
    kernel_key: str = ""  # content hash of the kernel (architecture, kind, dtype, parameters)


# initialization seeds of the clean networks of an "empirical_ensemble" kernel: ENSEMBLE_SEED + i, far from
# the victims' seeds (0, 1, 2, ...), so that no member shares its initialization with a victim
ENSEMBLE_SEED = 1000


def prepare(dataset="digits", source=7, target=1, trigger="periodic", architecture="mlp", width=512,
            depth=2, kernel="empirical", seed=0, train_config=None, kernel_dtype="float32", ridge=0.0,
            w_attack=1.0, task_kw=None, progress=True, smoke=False, trigger_amplitude=None,
            ensemble_size=3, readout=None) -> Experiment:
    """Task, victim architecture, kernel and closed-form problem from parameters.

    With ``kernel="empirical"`` the victim is trained on clean d (``train_config``,
    default :func:`victim_config`) and the kernel is its empirical NTK at the
    trained weights, as in the paper. With ``kernel="empirical_ensemble"``, ``ensemble_size``
    clean networks with initialization seeds ``ENSEMBLE_SEED + i`` (none shared with a victim)
    are trained the same way and ``problem`` is the :class:`~ntklib.attack.EnsembleProblem` of
    their empirical NTKs (``kernel`` and ``clean`` are the first member's). ``readout``: a CNN's
    readout (:func:`build_architecture`; None its default, flatten). ``trigger`` is a name (with an optional
    ``trigger_amplitude`` for the periodic one) or a :class:`~ntklib.triggers.Trigger`.
    ``smoke=True`` shrinks the task
    (:func:`smoke_task_kw`) and, unless ``train_config`` is given, the victim's
    training to 200 steps. The clean victim comes from :func:`ntklib.train.train_many`,
    so a run with the same task, architecture and training settings reuses it from the
    cache (:mod:`ntklib.cache`).
    """
    if smoke:
        task_kw = smoke_task_kw(task_kw)
        train_config = train_config or victim_config(dataset, steps=200)
    check_params(dataset=dataset, source=source, target=target, architecture=architecture, width=width,
                 depth=depth, kernel=kernel, seed=seed, kernel_dtype=kernel_dtype, ridge=ridge, w_attack=w_attack,
                 ensemble_size=ensemble_size, readout=readout,
                 task_kw=dict(task_kw or {}), smoke=smoke, trigger_amplitude=trigger_amplitude,
                 **({"trigger": trigger} if isinstance(trigger, str) else {}))
    if train_config is not None:
        _train.check_config(train_config, "train_config")
    if isinstance(trigger, str):
        trigger = _data.default_trigger(dataset, trigger, amplitude=trigger_amplitude)
    task = _data.make_task(dataset, source, target, trigger, seed=seed, **(task_kw or {}))
    arch = build_architecture(architecture, width, depth, readout)
    cfg = train_config or victim_config(dataset)
    clean = None
    kernel_id = None  # what, beyond the architecture and dtype, defines the kernel (its parameters)
    extra = {}
    if kernel == "infinite":
        ks = [_kernels.make_kernel("infinite", arch, dtype=kernel_dtype, input_shape=task.X_d.shape[1:])]
    else:
        ensemble = kernel == "empirical_ensemble"
        if kernel == "empirical_init":
            params = [arch.init(seed, task.X_d.shape)]
        else:  # the clean victim, or the ensemble's clean networks (seeds far from the victims')
            seeds = [ENSEMBLE_SEED + i for i in range(ensemble_size)] if ensemble else [cfg.seed]
            trained = _train.train_many(arch, [(task.X_d, task.y_d)] * len(seeds),
                                        [dataclasses.replace(cfg, seed=s) for s in seeds], progress=progress,
                                        desc="clean networks (kernel ensemble)" if ensemble else "clean victim")
            clean, params = trained[0], [r.params for r in trained]
            if ensemble:
                extra = dict(ensemble_seeds=seeds, clean_train_loss=max(r.final_loss for r in trained))
        leaves = [jax.tree_util.tree_leaves(p) for p in params]
        kernel_id = leaves if ensemble else leaves[0]
        ks = [_kernels.make_kernel("empirical" if ensemble else kernel, arch, p, dtype=kernel_dtype,
                                   spec=dict(architecture=arch.spec, at="empirical", seed=s) if ensemble
                                   else dict(architecture=arch.spec, at=kernel))
              for p, s in zip(params, extra.get("ensemble_seeds", [None]), strict=True)]
    members = [_attack.BackdoorProblem.from_task(task, k, ridge=ridge, w_attack=w_attack) for k in ks]
    problem = _attack.EnsembleProblem(members) if kernel == "empirical_ensemble" else members[0]
    spec = dict(task=task.spec, architecture=arch.spec, kernel=kernel, kernel_dtype=kernel_dtype,
                ridge=ridge, w_attack=w_attack, train=dataclasses.asdict(cfg),
                clean_train_loss=None if clean is None else clean.final_loss)
    spec.update(extra)
    return Experiment(task, arch, ks[0], problem, cfg, clean, spec,
                      kernel_key=_cache.key("kernel", arch.spec, kernel, kernel_dtype, kernel_id))


def design_poisons(exp: Experiment, budgets, opt_steps: int = 30, opt_method: str = "lbfgsb",
                   progress: bool = True) -> dict:
    """NTBA poisons per budget for a prepared experiment
    (:func:`ntklib.evaluate.ntba_poisons`: greedy, then ``opt_steps`` of ``opt_method``),
    cached by content (:mod:`ntklib.cache`: the problem's data and settings, the kernel's
    parameters, the candidates, budgets and optimizer settings), so notebooks that design
    the same poisons share them. While the cache is on, each budget's optimization also
    checkpoints under the cache (``poisons/<key>.ckpt/``), so a design cut off (a time
    limit) resumes where it stopped when called again; a damaged checkpoint there is set
    aside (``.damaged``) and that budget redone, and a cache that cannot be written only
    means no checkpoints.
    Returns {budget: dict(X_p, indices, greedy_loss, greedy_asr[, history])}.
    """
    if not isinstance(exp, Experiment):
        raise TypeError(f"exp={_val.describe(exp)} is invalid: must be the Experiment of pipeline.prepare(...)")
    budgets = _val.check_budgets(budgets, "budgets", len(exp.task.X_cand))
    opt_steps = _val.check_steps(opt_steps, "opt_steps", min=0)
    _val.check_choice(opt_method, "opt_method", CHOICES["opt_method"])
    key = _cache.key("ntba", exp.problem.fingerprint(), exp.kernel_key, exp.task.X_cand, budgets, int(opt_steps),
                     opt_method)
    shape = exp.task.X_cand.shape[1:]
    expect = {n: s for b in budgets for n, s in ((f"X_p_{b}", (b, *shape)), (f"indices_{b}", (b,)),
                                                 (f"greedy_loss_{b}", ()), (f"greedy_asr_{b}", ()))}
    z = _cache.load("poisons", key, expect=expect)
    if z is not None:
        out = {}
        for b in budgets:
            e = dict(X_p=z[f"X_p_{b}"], indices=z[f"indices_{b}"], greedy_loss=float(z[f"greedy_loss_{b}"]),
                     greedy_asr=float(z[f"greedy_asr_{b}"]))
            hist = {k[len(f"hist_{b}_"):]: z[k] for k in z if k.startswith(f"hist_{b}_")}
            if hist:
                e["history"] = hist
            out[b] = e
        return out
    ckpt = _cache.scratch("poisons", key)  # optimization checkpoints, so that an interrupted design resumes
    out = _evaluate.ntba_poisons(exp.problem, exp.task.X_cand, budgets, opt_steps, opt_method, progress=progress,
                                 checkpoint_dir=ckpt, bad_checkpoint="set_aside")
    arrays = {}
    for b, e in out.items():
        arrays.update({f"X_p_{b}": e["X_p"], f"indices_{b}": e["indices"], f"greedy_loss_{b}": e["greedy_loss"],
                       f"greedy_asr_{b}": e["greedy_asr"]})
        arrays.update({f"hist_{b}_{k}": np.asarray(v) for k, v in e.get("history", {}).items()})
    if _cache.save("poisons", key, arrays) is not None and ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # the finished design is cached: its checkpoints are not needed
    return out


@dataclass
class AttackRun:
    """Result of :func:`run`: the experiment, the NTBA poisons per budget
    ({budget: dict(X_p, indices, ...)}, see :func:`ntklib.evaluate.ntba_poisons`),
    the tidy sweep table and the efficiency ratio on trained networks."""

    experiment: Experiment
    poisons: dict
    table: object
    ratio: dict


def run(dataset="digits", source=7, target=1, trigger="periodic", architecture="mlp", width=256, depth=2,
        kernel="empirical", budgets=(1, 2, 3, 5, 10), sampling_budgets=None, seeds=(0, 1, 2),
        opt_steps=30, opt_method="lbfgsb", train_config=None, asr_level=0.9, methods=("ntba", "sampling"),
        experiment: Experiment | None = None, progress=True, smoke=False, **prepare_kw) -> AttackRun:
    """The paper's pipeline in one call.

    1. :func:`prepare`: task; victim trained on clean d to (near) zero loss; its
       empirical NTK (``kernel="empirical"``, default) or another kernel;
    2. greedy initialization + L-BFGS-B (``opt_steps``) for each NTBA budget;
    3. fresh victims trained from scratch on d + poisons (one per seed, with
       ``train_config``, default :func:`victim_config`), the sampling baseline
       (``sampling_budgets``, default the NTBA budgets) beside them, same seeds;
    4. the poison-efficiency ratio at ``asr_level`` on the trained networks.

    Pass ``experiment`` to reuse a prepared one (its kernel and victim config).
    """
    check_params(budgets=list(budgets) if isinstance(budgets, (list, tuple)) else budgets, seeds=seeds,
                 opt_steps=opt_steps, opt_method=opt_method, asr_level=asr_level,
                 **({} if sampling_budgets is None else {"sampling_budgets": sampling_budgets}))
    for i, meth in enumerate((methods,) if isinstance(methods, str) else methods):
        _val.check_choice(meth, f"methods[{i}]", ("ntba", "sampling"))
    if experiment is not None and not isinstance(experiment, Experiment):
        raise TypeError(f"experiment={_val.describe(experiment)} is invalid: must be the Experiment of "
                        "pipeline.prepare(...) or None")
    exp = experiment or prepare(dataset, source, target, trigger, architecture, width, depth, kernel,
                                train_config=train_config, progress=progress, smoke=smoke, **prepare_kw)
    m = len(exp.task.X_cand)
    budgets = _val.check_budgets(budgets, "budgets", m)  # refused above the pool, before any poison is designed
    if sampling_budgets is not None:
        sampling_budgets = _val.check_budgets(sampling_budgets, "sampling_budgets", m)
    poisons = None
    if "ntba" in methods:
        poisons = design_poisons(exp, budgets, opt_steps, opt_method, progress=progress)
    table = _evaluate.sweep(exp.task, exp.problem, exp.arch, budgets=budgets, seeds=seeds,
                            train_config=exp.train_config, methods=methods, ntba=poisons, progress=progress,
                            sampling_budgets=sampling_budgets)
    return AttackRun(exp, poisons, table, _evaluate.efficiency_ratio(table, "net_asr", asr_level))


@dataclass
class KernelComparison:
    """Result of :func:`compare_kernels`: one :class:`AttackRun` per kernel (NTBA only), the
    sampling baseline's sweep (trained once, on the reference kernel's task), all rows in one
    ``table`` (column ``kernel``; "-" for sampling) and their ``summary``: the mean over seeds per
    (kernel, method, budget) of kernel_asr, net_asr, net_ca, train_loss, max_poison_residual,
    train_steps."""

    runs: dict
    sampling: object
    table: object
    summary: object

    def with_baseline(self, kernel: str):
        """The kernel's NTBA rows and the sampling rows: the table :func:`ntklib.evaluate.efficiency_ratio`
        reads."""
        import pandas as pd

        return pd.concat([self.runs[kernel].table, self.sampling], ignore_index=True)

    def ratios(self, level: float = 0.9) -> dict:
        """{kernel: the efficiency ratio at ``level`` network ASR}."""
        return {k: _evaluate.efficiency_ratio(self.with_baseline(k), "net_asr", level) for k in self.runs}

    def evidence(self):
        """Per kernel, from its NTBA rows of :attr:`summary` (means over seeds, then the extreme over
        budgets): the largest gap between kernel-model and network ASR, the network ASR of the
        smallest budget, the largest poison residual, the lowest clean accuracy and the most training
        steps: the numbers notebook 06's account of transfer reads."""
        import pandas as pd

        ntba = self.summary[self.summary.method == "ntba"].set_index(["kernel", "budget"])
        b0 = int(ntba.index.get_level_values("budget").min())
        return pd.DataFrame({
            "max |kernel ASR - net ASR|": (ntba.kernel_asr - ntba.net_asr).abs().groupby("kernel").max(),
            f"net ASR, {b0} poison(s)": ntba.net_asr.xs(b0, level="budget"),
            "max poison residual": ntba.max_poison_residual.groupby("kernel").max(),
            "min clean acc.": ntba.net_ca.groupby("kernel").min(),
            "max train steps": ntba.train_steps.groupby("kernel").max(),
        }).reindex(list(self.runs))


def compare_kernels(kernels, reference: str, sampling_budgets, budgets=(1, 2, 3, 5, 10), seeds=(0, 1, 2),
                    progress: bool = False, **run_kw) -> KernelComparison:
    """What transfers (notebook 06): the same task, victim architecture, training, budgets and seeds,
    only the kernel that designs NTBA's poisons changes (:func:`run` once per kernel of
    ``kernels``, ``methods=("ntba",)``, ``run_kw`` its other arguments); the sampling baseline
    (``sampling_budgets``) is trained once on the task of ``reference`` (one of ``kernels``; every
    kernel's task is the same split). Cost: one :func:`run` per kernel and one sampling sweep."""
    import pandas as pd

    if isinstance(kernels, str) or not isinstance(kernels, (list, tuple)) or not kernels:
        raise TypeError(f"kernels={_val.describe(kernels)} is invalid: must be a non-empty list of kernel names "
                        f"{list(CHOICES['kernel'])}")
    if reference not in kernels:
        raise ValueError(f"reference={reference!r} is invalid: must be one of kernels {list(kernels)} (the sampling "
                         "baseline trains on its task)")
    if "methods" in run_kw:
        raise TypeError("compare_kernels runs NTBA per kernel and the sampling baseline once: do not pass methods")
    runs = {k: run(kernel=k, budgets=budgets, seeds=seeds, methods=("ntba",), progress=progress, **run_kw)
            for k in kernels}
    ref = runs[reference].experiment
    samp = _evaluate.sweep(ref.task, ref.problem, ref.arch, budgets=sampling_budgets, seeds=seeds,
                           train_config=ref.train_config, methods=("sampling",), progress=progress)
    table = pd.concat([r.table.assign(kernel=k) for k, r in runs.items()] + [samp.assign(kernel="-")],
                      ignore_index=True)
    summary = table.groupby(["kernel", "method", "budget"])[
        ["kernel_asr", "net_asr", "net_ca", "train_loss", "max_poison_residual", "train_steps"]].mean().reset_index()
    return KernelComparison(runs, samp, table, summary)


def victim_variants(comparison: KernelComparison, kernel: str, variants, budgets, sampling_budgets,
                    architecture: str = "mlp", depth: int = 2, readout=None, asr_level: float = 0.9,
                    seeds=None, progress: bool = False):
    """What the victim's training does to transfer (notebook 06): the poisons stay those designed
    with ``kernel`` in ``comparison``; the victims change. ``variants``: dicts with a ``label`` and
    changes of :data:`VARIANT_KEYS` to the default victim (the comparison's: its width, its training
    config); each variant trains NTBA victims at ``budgets`` (among the comparison's) and sampling
    victims at ``sampling_budgets``, with ``seeds`` (None: the comparison's; else some of them); the
    default victim is the comparison itself, read on the same seeds (no new training).
    ``architecture``, ``depth``, ``readout``: the victim's network as :func:`build_architecture`
    names it (rebuilt at each variant's width).

    Returns (per_budget, ratios), pandas DataFrames: per_budget one row per (variant, method, budget)
    with the means over seeds of net_asr, net_ca, train_loss, max_poison_residual; ratios one row
    per variant: variant, the efficiency ratio's fields at ``asr_level`` (ratio, lower_bound,
    ntba_budget, sampling_budget) and the variant's settings. Cost: one sweep per variant."""
    import pandas as pd

    if kernel not in comparison.runs:
        raise ValueError(f"kernel={kernel!r} is invalid: the comparison holds {list(comparison.runs)}")
    check_params(victim_variants=variants)
    r0 = comparison.runs[kernel]
    exp, cfg = r0.experiment, r0.experiment.train_config
    width = exp.arch.spec.get("width")
    if width is None:
        raise ValueError(f"the comparison's architecture {exp.arch.spec.get('name')} has no width: victim variants "
                         "rebuild the victim at a width")
    missing = [b for b in budgets if b not in r0.poisons]
    if missing:
        raise ValueError(f"budgets {missing} are not among the comparison's NTBA budgets {sorted(r0.poisons)}")
    have = sorted(set(int(s) for s in r0.table.seed))
    if seeds is None:
        seeds = have
    else:
        seeds = sorted(set(_val.check_int_list(seeds, "seeds", min=0)))
        if not set(seeds) <= set(have):
            raise ValueError(f"seeds {sorted(set(seeds) - set(have))} are not among the comparison's seeds {have}: "
                             "the default victim is read from the comparison")
    dataset = exp.task.spec["dataset"]
    base = dict(train_steps=cfg.steps, target_loss=cfg.target_loss, target_residual=cfg.target_residual,
                width=width, victim_lr=cfg.lr, optimizer=cfg.optimizer, batch_size=cfg.batch_size)
    per_budget, ratios = [], []
    for v in [dict(base, label="default")] + [dict(base, **v) for v in variants]:
        if v["label"] == "default":
            df = comparison.with_baseline(kernel)
            df = df[df.seed.isin(seeds)]
        else:
            arch = build_architecture(architecture, v["width"], depth, readout)
            cfg_v = victim_config(dataset, optimizer=v["optimizer"], lr=v["victim_lr"], steps=v["train_steps"],
                                  target_loss=v["target_loss"], target_residual=v["target_residual"],
                                  batch_size=v["batch_size"])
            df = _evaluate.sweep(exp.task, exp.problem, arch, budgets=budgets, seeds=seeds, train_config=cfg_v,
                                 ntba=r0.poisons, sampling_budgets=sampling_budgets, progress=progress)
        g = df.groupby(["method", "budget"])[["net_asr", "net_ca", "train_loss", "max_poison_residual"]].mean()
        per_budget.append(g.reset_index().assign(variant=v["label"]))
        r = _evaluate.efficiency_ratio(df, "net_asr", asr_level)
        ratios.append(dict(variant=v["label"], **{k: r[k] for k in ("ratio", "lower_bound", "ntba_budget",
                                                                     "sampling_budget")},
                           settings={k: v[k] for k in v if k != "label"}))
    cols = ["variant", "method", "budget", "net_asr", "net_ca", "train_loss", "max_poison_residual"]
    return pd.concat(per_budget, ignore_index=True)[cols], pd.DataFrame(ratios)
