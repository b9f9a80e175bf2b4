"""Each notebook's parameters, declared once: name, default, rule, smoke value and a one-line doc.

A notebook's parameters cell (the one papermill overrides) is *rendered* from its schema here
(:func:`cell`; ``python -m ntklib.params --write`` rewrites the cells, ``make lint`` fails when one
differs), and the notebook's first code cell checks its values with one call::

    globals().update(params.resolve("06_what_transfers", globals()))

:func:`resolve` takes the notebook's parameters from its namespace, checks them (:func:`check`) and,
for ``smoke=True``, replaces the sizes by their smoke values (printed, then checked again). The runner
(:mod:`ntklib.runner`) applies the same :func:`check` to every selected notebook before anything runs,
so no parameter file can fail inside a notebook on a check the runner could have made.

Checks, in order: each value has the kind of its default (a None default takes anything; None is left
to the rule); the rule of its name in :data:`ntklib.pipeline.PARAMETER_RULES` (choices, ranges, class
labels of the dataset); the rules that tie one notebook's parameters together (:data:`NOTEBOOK_RULES`).

One name means one thing in every notebook: the learning rates are ``poison_lr`` (04: the poisons'
Adam step), ``victim_lr`` (05-07: the victims' training), ``network_lr`` (08: the finite networks') and
``attack_lr`` (09: the reconstruction attack's Adam step); the kernels of 08 and 09, which are not the
design kernel of 02-07, are ``predictor_kernel`` and ``distill_kernel``. :data:`RENAMED` lists the
names that changed, and the runner says what each became.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from . import pipeline as _pipeline
from . import validation as _val

__all__ = ["Param", "SCHEMAS", "NOTEBOOK_RULES", "RENAMED", "names", "defaults", "check", "smoke_values", "resolve",
           "cell", "type_ok", "kind", "stale_cells", "write_cells"]

_KEEP = object()


@dataclass(frozen=True)
class Param:
    """One notebook parameter. ``smoke``: its value in a smoke run, a constant or a function of
    the value (e.g. ``lambda v: v[:1]``); unset keeps the value. Its rule is the one of its name in
    :data:`ntklib.pipeline.PARAMETER_RULES` (a name without one is checked only for its kind)."""

    name: str
    default: object
    doc: str = ""
    smoke: object = _KEEP

    def smoke_value(self, value):
        if self.smoke is _KEEP:
            return value
        return self.smoke(value) if callable(self.smoke) else self.smoke


def _cap(n):
    return lambda v: min(v, n)


def _first(n):
    return lambda v: v[:n]


# parameters most notebooks share (a notebook may give them another default with _with)
_COMMON = {p.name: p for p in (
    Param("dataset", "digits", "digits | cifar10 (CIFAR-10 from data/ or $NTKLIB_DATA_DIR)"),
    Param("source", 7, "source class (label -1): its triggered images should be classified as target"),
    Param("target", 1, "target class (label +1)"),
    Param("trigger", "periodic", "periodic | patch"),
    Param("architecture", "mlp", "mlp | cnn | wide_resnet, or their plain-JAX twins plain_mlp | plain_cnn | ..."),
    Param("width", 512, "hidden units (mlp), channels (cnn), 16 x the widening factor (wide_resnet)",
          smoke=_cap(128)),
    Param("depth", 2, "hidden layers (mlp), conv layers (cnn), depth (wide_resnet: 10, 16, ...)"),
    Param("kernel", "infinite", "the poisons' kernel: empirical (the clean victim's, the paper's) | empirical_init | "
          "infinite"),
    Param("task_kw", {}, "sizes passed to ntklib.data.make_task (n_train_per_class, n_pool, ...)"),
    Param("seed", 0, "the task's split"),
    Param("smoke", False, "True: tiny sizes (the smoke values of ntklib.params), seconds per notebook"),
    Param("fig_dir", "figures", "outputs go to <fig_dir>/<notebook>/ (relative: to the repository root)"),
    Param("seeds", [0, 1, 2], "one victim initialization (and one sampling subset) per seed", smoke=_first(1)),
    Param("opt_steps", 30, "L-BFGS-B iterations of the poison optimization per budget (0: greedy only)",
          smoke=_cap(3)),
    Param("opt_method", "lbfgsb", "lbfgsb | adam"),
    Param("train_steps", 4000, "the victims' training budget (stops early at target_loss)"),
    Param("victim_lr", 2.0, "the victims' learning rate"),
    Param("optimizer", "sgd", "the victims' optimizer: sgd (momentum 0.9) | adam"),
    Param("batch_size", None, "the victims' minibatch (None: full batch)"),
    Param("target_loss", 1e-3, "victims stop once the training loss is below this"),
    Param("target_residual", 0.1, "... and every point, poisons included, is fitted to within this (None: off)"),
    Param("asr_level", 0.9, "the ASR level of the efficiency ratio"),
)}


def _with(name, default=_KEEP, doc=None, smoke=_KEEP):
    """A shared parameter with this notebook's default, doc or smoke value."""
    p = _COMMON[name]
    return Param(name, p.default if default is _KEEP else default, p.doc if doc is None else doc,
                 p.smoke if smoke is _KEEP else smoke)


def _shared(*names):
    return tuple(_COMMON[n] for n in names)


_ATTACK_BASE = _shared("dataset", "source", "target", "trigger", "architecture", "width")
_TAIL = _shared("task_kw", "seed", "smoke", "fig_dir")

SCHEMAS: dict[str, tuple[Param, ...]] = {
    "01_ntk_background": (
        *_shared("dataset", "source", "target"),
        _with("architecture", doc="mlp | cnn (flatten readout)"),
        Param("widths", [64, 256, 1024, 2048], "widths of the convergence study", smoke=_first(2)),
        Param("n_points", 16, "images in the convergence study", smoke=8),
        Param("lazy_widths", [32, 1024], "narrow vs wide network of the training comparison", smoke=[16, 64]),
        Param("n_train_per_class", 40, "training images per class of the training comparison", smoke=10),
        Param("n_test_per_class", None, "test images per class of the training comparison (None: all)", smoke=10),
        _with("train_steps", 1500, "SGD steps of the training comparison (stops early at loss 1e-5)", smoke=300),
        *_shared("seed", "smoke", "fig_dir"),
    ),
    "02_backdoor_loss": (
        *_ATTACK_BASE,
        _COMMON["kernel"],
        Param("budgets", [1, 2, 5, 10, 20, 50], "numbers of poisons", smoke=_first(3)),
        _with("seeds", [0, 1, 2, 3, 4], "random subsets of the sampling attack", smoke=_first(2)),
        Param("hinge_budget", 5, "the budget of the prediction-distribution figure"),
        *_TAIL,
    ),
    "03_greedy_initialization": (
        *_ATTACK_BASE,
        _COMMON["kernel"],
        Param("budgets", [1, 2, 3, 5, 10, 20], "greedy runs to the largest; curves at every budget up to it",
              smoke=[1, 2, 3]),
        _with("seeds", [0, 1, 2, 3, 4], "random selections to compare with", smoke=_first(2)),
        Param("timing_sizes", [25, 50, 100], "training images per class of the timing study", smoke=[10, 20]),
        Param("swap_budget", 3, "the budget of the swap-refinement demo"),
        *_TAIL,
    ),
    "04_poison_optimization": (
        *_ATTACK_BASE,
        _COMMON["kernel"],
        Param("budget", 2, "number of poisons to optimize", smoke=_cap(2)),
        _COMMON["opt_method"],
        _with("opt_steps", 100, "iterations of the poison optimization"),
        Param("poison_lr", 0.01, "the poisons' Adam step (unused by L-BFGS-B)"),
        Param("checkpoint_every", 25, "iterations between checkpoints"),
        *_TAIL,
    ),
    "05_transfer_to_networks": (
        *_shared("dataset", "source", "target", "trigger"),
        _with("architecture", doc="the victim, and the network whose NTK designs the poisons"),
        _with("width", 256),
        _with("kernel", "empirical"),
        Param("budgets", [1, 2, 3, 5, 10], "NTBA budgets", smoke=[1, 3]),
        *_shared("seeds", "opt_method", "opt_steps"),
        _with("train_steps", smoke=200),
        *_shared("victim_lr", "target_loss", "target_residual", "batch_size", "asr_level"),
        *_TAIL,
    ),
    "06_what_transfers": (
        *_shared("dataset", "source", "target", "trigger"),
        Param("trigger_amplitude", None, "None: the dataset's default (digits 0.15, CIFAR-10 6/255)"),
        _with("architecture"),
        _with("width", 256),
        _COMMON["depth"],
        Param("readout", None, "cnn: flatten (None, the default) | pool (translation-invariant, as the paper's WRN)"),
        Param("kernels", ["infinite", "empirical_init", "empirical"], "the kernels that design poisons; also "
              "empirical_ensemble (our extension)"),
        Param("ensemble_size", 3, "clean networks (other seeds) whose empirical NTKs empirical_ensemble averages"),
        Param("budgets", [1, 2, 3, 5, 10], "NTBA budgets", smoke=[1, 3]),
        Param("sampling_budgets", [1, 2, 3, 5, 10, 20, 40], "the baseline's budgets (it needs more to reach high "
              "ASR)", smoke=[1, 3, 10]),
        *_shared("seeds", "opt_steps", "optimizer", "batch_size"),
        _with("train_steps", smoke=300),
        *_shared("victim_lr", "target_loss", "target_residual"),
        Param("victim_variants", [
            {"label": "short training (300 steps)", "train_steps": 300, "target_residual": None},
            {"label": "long training (loss < 1e-5, residual < 0.02)", "train_steps": 10000, "target_loss": 1e-5,
             "target_residual": 0.02},
            {"label": "width 512", "width": 512},
            # half the default learning rate (a quarter, 0.5, read the same: NTBA 93% / 98% at 3 / 5 poisons,
            # and needed twice the steps: 45k against 24k, measured on 2 cores)
            {"label": "lr 1.0 (10000 steps)", "victim_lr": 1.0, "train_steps": 10000},
        ], "changes to the victims' training, the poisons fixed (those of kernel)", smoke=_first(1)),
        Param("variant_budgets", [3, 5], "NTBA budgets re-evaluated for each victim variant (among budgets; those "
              "around the asr_level line)", smoke=[1]),
        Param("variant_sampling_budgets", [5, 10], "the baseline's budgets for each victim variant", smoke=[3]),
        # two of the three seeds: the variants are 48 of 06's trainings at three seeds, about 45% of its time
        Param("variant_seeds", [0, 1], "the victim variants' seeds (among seeds; the default victim is read on "
              "the same)", smoke=_first(1)),
        Param("ridge", 0.0, "kernel regression's ridge (the paper's 0; raise it if the kernel is singular in "
              "float32)"),
        _with("kernel", "empirical", "the kernel whose poisons the victim variants are trained on (one of "
              "kernels)"),
        _COMMON["asr_level"],
        *_TAIL,
    ),
    "07_defenses": (
        *_shared("dataset", "source", "target", "trigger"),
        _with("architecture", doc="the victims' network (its empirical NTK is the attack's kernel)"),
        _with("width", 256, smoke=lambda v: v),
        _COMMON["depth"],
        _with("kernel", "empirical"),
        _COMMON["optimizer"],
        _with("train_steps", smoke=200),
        _COMMON["victim_lr"],
        _with("target_loss", 1e-4),
        _with("task_kw", doc="make_task sizes; n_spare_per_class gives I-BAU a clean pool of its own",
              smoke=lambda v: _pipeline.smoke_task_kw({k: x for k, x in v.items() if k != "n_spare_per_class"})),
        Param("ntba_budget", 3, "NTBA poisons (greedy + L-BFGS-B)", smoke=2),
        Param("sampling_budgets", [3, 10], "sampling poisons: the same budget, and one that reaches NTBA's ASR or "
              "more", smoke=[2, 4]),
        _with("opt_steps", smoke=5),
        _COMMON["seeds"],
        Param("detectors", ["spectral", "spectral_ntk", "spectral_inf", "clustering", "spectre", "datamodel", "loo",
                            "representer"], "the detectors compared (ntklib.defense_study.DETECTORS)"),
        Param("n_subsets", 8000, "random half subsets of the kernel datamodel (enough for a stable estimate)",
              smoke=200),
        Param("retrain", True, "retrain without each detector's flagged points"),
        # two sizes (a third, 40, cost a third of the I-BAU study, ~30 s of make figures; bench/ibau.py varies more)
        Param("n_clean", [20, 60], "I-BAU's clean images (spare clean images if task_kw asks for them, else t)",
              smoke=[10, 20]),
        Param("ibau_rounds", 5, "I-BAU rounds (each: the universal perturbation, then 50 outer steps)", smoke=2),
        Param("ibau_variants", ["I-BAU", "no indirect term", "fine-tuning"], "I-BAU and its ablations "
              "(ntklib.defense_study.IBAU_VARIANTS)", smoke=_first(2)),
        *_shared("seed", "smoke", "fig_dir"),
    ),
    "08_adversarial_ntk": (
        _COMMON["dataset"],
        _with("source", 3, "class labelled -1 (CIFAR-10 reference: 0, airplane)"),
        _with("target", 8, "class labelled +1 (CIFAR-10 reference: 1, automobile)"),
        _with("depth", 1, "hidden layers of the kernel's ReLU MLP (W_std sqrt(2), b_std 0.1; the reference: 1)"),
        Param("predictor_kernel", "infinite", "the attacked predictor's kernel: infinite (the paper's) | "
              "empirical_init (the MLP's at initialization)"),
        Param("n_train_per_class", None, "training images per class (None: all; CIFAR-10 reference: 1000)",
              smoke=lambda v: min(v or 30, 30)),
        Param("n_test_per_class", None, "test images per class (None: all; CIFAR-10 reference: 50)",
              smoke=lambda v: min(v or 20, 20)),
        Param("eps", 0.1, "the attack radius (L-infinity) of the main results (CIFAR-10 reference: 8/255)"),
        Param("eps_list", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3], "radii of the accuracy-vs-eps curves",
              smoke=_first(3)),
        Param("pgd_steps", 10, "PGD iterations (the reference: 10 steps of 0.01)", smoke=3),
        Param("pgd_step", 0.01, "PGD's step (or 2.5 eps / pgd_steps where larger)"),
        Param("widths", [64, 256, 1024, 4096], "finite networks the kernel's adversarial images are tried on",
              smoke=_first(2)),
        _with("train_steps", 2000, "their training (full-batch gradient descent, squared loss)", smoke=200),
        Param("network_lr", 1.0, "their learning rate (and that of the kernel-dynamics network)"),
        Param("transfer_lrs", [1.0, 4.0], "learning rates of the transfer study (larger: further from the lazy "
              "regime)"),
        Param("n_features", 40, "eigen-features studied", smoke=8),
        Param("dynamics_width", 512, "the network whose empirical NTK is followed during training"),
        Param("dynamics_steps", 600, "its training steps", smoke=60),
        Param("dynamics_every", 50, "steps between two of its kernels", smoke=20),
        Param("n_probe", 100, "images on which that NTK is computed", smoke=30),
        *_shared("seed", "smoke", "fig_dir"),
    ),
    "09_reconstruction": (
        *_shared("dataset", "source", "target"),
        _with("trigger", doc="the poisons' trigger (part 4): periodic | patch"),
        _with("depth", doc="hidden layers of the victims (plain-JAX ReLU MLPs, whose ReLUs the attack smooths)"),
        _with("width", 256, "the main setting's width", smoke=64),
        Param("n_train", 20, "the main setting's training images (half per class)", smoke=10),
        Param("widths", [64, 256, 512], "the width study (at n_train; 1024: docs/results.md)", smoke=[32, 64]),
        Param("n_trains", [10, 20, 40], "the N study (at width)", smoke=[6, 10]),
        Param("attack_steps", 2000, "Adam steps of the reconstruction attack", smoke=200),
        Param("attack_lr", 0.02, "its Adam step (the authors' 0.02)"),
        Param("init", "flat", "its start: flat (the authors': scalar training mean + noise) | grey | mean_image"),
        Param("distill_kernel", "infinite", "the distilled set's kernel: infinite (the architecture's NTK, no "
              "weights) | empirical (the victim's)"),
        Param("distill_pair", [3, 8], "part 3's classes (7 vs 1 is so easy that any labelled set scores 0.99)"),
        Param("distill_seeds", [0, 1, 2, 3, 4], "part 3: one victim and attack per seed (intervals over them)",
              smoke=_first(2)),
        Param("ntba_budget", 3, "part 4: poisons added to the n_train clean images"),
        _with("seeds", doc="part 4: one poisoned victim per seed (and one random subset per seed)"),
        _with("opt_steps", smoke=5),
        *_shared("seed", "smoke", "fig_dir"),
    ),
}

# names of earlier versions -> what they became, by notebook
RENAMED = {
    "lr": "victim_lr (05, 06, 07 and victim_variants), poison_lr (04), network_lr (08), attack_lr (09)",
    "steps": "attack_steps (09)",
}


def _schema(notebook: str) -> dict[str, Param]:
    if notebook not in SCHEMAS:
        raise ValueError(f"notebook={notebook!r} has no parameter schema; have {sorted(SCHEMAS)}")
    return {p.name: p for p in SCHEMAS[notebook]}


def names(notebook: str) -> list[str]:
    """The notebook's parameter names, in the order of its parameters cell."""
    return list(_schema(notebook))


def defaults(notebook: str) -> dict:
    """{name: default} of a notebook (fresh copies: lists and dicts can be changed safely)."""
    return {n: json.loads(json.dumps(p.default)) for n, p in _schema(notebook).items()}


def type_ok(value, default) -> bool:
    """Does ``value`` have the kind of the default? A None default accepts anything, and a None
    value is left to the rule (``target_residual=None`` switches the residual target off;
    ``victim_lr=None`` is refused there)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def kind(default) -> str:
    """The kind of a default, in words (for messages)."""
    return {bool: "True or False", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a dict (mapping)"}.get(type(default), type(default).__name__)


BUDGET_PARAMS = ("budget", "budgets", "sampling_budgets", "variant_budgets", "variant_sampling_budgets",
                 "ntba_budget", "hinge_budget", "swap_budget")


def _check_pool(p, task_kw):
    """Every budget parameter fits the candidate pool of the notebook's task (the library refuses a
    budget above it: better here, before anything runs, than inside the notebook)."""
    from . import data as _data

    m = _data.pool_size(p.get("dataset", "digits"), p.get("source", 7), **task_kw)
    for name in BUDGET_PARAMS:
        if name in p:
            too_big = [b for b in (p[name] if isinstance(p[name], (list, tuple)) else [p[name]]) if b > m]
            if too_big:
                raise ValueError(f"parameter {name}={p[name]!r} is invalid: {too_big} exceed(s) the candidate pool of "
                                 f"{m} triggered source images of this task; give budgets up to {m} (or a larger "
                                 "task: task_kw n_train_per_class / n_pool)")


def _check_task_pool(p):
    if "task_kw" in p:
        kw = dict(p["task_kw"] or {})
        _check_pool(p, _pipeline.smoke_task_kw(kw) if p.get("smoke") else kw)


def _check_06(p):
    if p["kernel"] not in p["kernels"]:
        raise ValueError(f"parameter kernel={p['kernel']!r} must be one of kernels={list(p['kernels'])} (the victim "
                         "variants use the poisons designed with it)")
    if p["victim_variants"] and not set(p["variant_budgets"]) <= set(p["budgets"]):
        raise ValueError(f"parameter variant_budgets={p['variant_budgets']} must be a subset of "
                         f"budgets={p['budgets']} (the variants reuse the poisons designed for those budgets)")
    if p["victim_variants"] and not set(p["variant_seeds"]) <= set(p["seeds"]):
        raise ValueError(f"parameter variant_seeds={p['variant_seeds']} must be a subset of seeds={p['seeds']} "
                         "(the default victim's row is read from the comparison's victims)")


def _check_08(p):
    _val.check_choice(p["predictor_kernel"], "predictor_kernel", ("infinite", "empirical_init"))


def _check_09(p):
    _val.check_choice(p["distill_kernel"], "distill_kernel", ("infinite", "empirical"))
    _check_pool(p, dict(n_train_per_class=p["n_train"] // 2, n_eval_per_class=10))  # part 4's task
    if len(p["distill_seeds"]) < 2:
        raise ValueError(f"parameter distill_seeds={p['distill_seeds']!r} is invalid: part 3's intervals need at "
                         "least 2 seeds")


def _check_07(p):
    if "spectral_inf" in p["detectors"] and str(p["architecture"]).startswith("plain_"):
        arch = p["architecture"]
        raise ValueError(f"parameter detectors names spectral_inf, which needs an infinite-width kernel, but "
                         f"architecture={arch!r} (plain JAX) has none: use {arch.removeprefix('plain_')!r} or "
                         "leave spectral_inf out of detectors")


# the rules that tie one notebook's parameters together (applied after each parameter's own rule)
NOTEBOOK_RULES = {"06_what_transfers": _check_06, "07_defenses": _check_07, "08_adversarial_ntk": _check_08,
                  "09_reconstruction": _check_09}


def check(notebook: str, values: dict) -> dict:
    """Check a notebook's complete parameter values; raise ``TypeError``/``ValueError`` naming the
    parameter (and the notebook) on the first bad one. Returns ``values``.

    Every name of the schema must be present, and no other; each value must have its default's kind,
    pass its rule (:data:`ntklib.pipeline.PARAMETER_RULES`, with the dataset's class labels for
    source and target), the notebook's rules between parameters (:data:`NOTEBOOK_RULES`), and every
    budget against the candidate pool of the task it describes (:func:`ntklib.data.pool_size`).
    Cost: milliseconds (no image is loaded)."""
    schema = _schema(notebook)
    if not isinstance(values, dict):
        raise TypeError(f"values={_val.describe(values)} is invalid: must be a dict {{name: value}}")
    missing, extra = [n for n in schema if n not in values], [n for n in values if n not in schema]
    if missing:
        raise ValueError(f"parameter(s) {missing} missing: {notebook}'s parameters are {list(schema)}")
    if extra:
        raise ValueError(f"unknown parameter(s) {extra}: {notebook}'s parameters are {list(schema)}")
    for name, p in schema.items():
        if not type_ok(values[name], p.default):
            raise TypeError(f"parameter {name}={values[name]!r} is invalid: must be {kind(p.default)} (the default "
                            f"is {p.default!r})")
    _pipeline.check_params(**values)
    _check_task_pool(smoke_values(notebook, values) if values.get("smoke") else values)
    if notebook in NOTEBOOK_RULES:
        NOTEBOOK_RULES[notebook](values)
    return values


def smoke_values(notebook: str, values: dict) -> dict:
    """``values`` with each parameter's smoke value where it has one (a new dict)."""
    schema = _schema(notebook)
    return {n: schema[n].smoke_value(v) if n in schema else v for n, v in values.items()}


def resolve(notebook: str, namespace: dict) -> dict:
    """A notebook's parameters from its namespace (its ``globals()``), checked; for ``smoke=True``,
    with the smoke values (printed, and checked again). Returns {name: value} for
    ``globals().update(...)``."""
    missing = [n for n in names(notebook) if n not in namespace]
    if missing:
        raise NameError(f"{notebook}: parameter(s) {missing} are not defined: run the parameters cell first")
    values = check(notebook, {n: namespace[n] for n in names(notebook)})
    if values["smoke"]:
        small = smoke_values(notebook, values)
        changed = {n: v for n, v in small.items() if v != values[n]}
        if changed:
            print("smoke run:", ", ".join(f"{n}={v!r}" for n, v in changed.items()))
        values = check(notebook, small)
    return values


def _literal(v) -> str:
    """A Python literal for a JSON-like value, strings in double quotes (the notebooks' style)."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _wrapped(items, first: str, indent: str, last: str, width: int = 120) -> list[str]:
    """``first`` + items joined by ", " + ``last``, broken into lines of at most ``width``."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else last)
        if len(line) + len(piece.rstrip()) > width and line.strip() not in ("", first.strip()):
            lines.append(line.rstrip())
            line = indent
        line += piece
    return lines + [line.rstrip()]


def cell(notebook: str) -> str:
    """The source of the notebook's parameters cell: one ``name = default  # doc`` per parameter
    (the doc on the line above where both do not fit in 120 characters; a long list one item per
    line), in the schema's order."""
    lines = []
    for p in SCHEMAS[notebook]:
        head = f"{p.name} = {_literal(p.default)}"
        if max(len(head), 26) + len(p.doc) + 4 <= 120 or not p.doc:
            lines.append(f"{head.ljust(26)}  # {p.doc}" if p.doc else head)
        elif len(head) <= 120 or not isinstance(p.default, list):
            lines += textwrap.wrap(f"{p.name}: {p.doc}", 118, initial_indent="# ", subsequent_indent="#   ")
            lines.append(head)
        else:
            lines.append(f"{p.name} = [  # {p.doc}")
            for x in p.default:
                if isinstance(x, dict):
                    lines += _wrapped([f"{_literal(k)}: {_literal(v)}" for k, v in x.items()], "    {", "     ", "},")
                else:
                    lines.append(f"    {_literal(x)},")
            lines.append("]")
    return "\n".join(lines)


PARAMETERS_MARKER = '# %% tags=["parameters"]'


def _cell_span(text: str) -> tuple[int, int]:
    start = text.index(PARAMETERS_MARKER) + len(PARAMETERS_MARKER) + 1
    end = text.index("\n# %%", start)
    return start, end


def stale_cells(folder: Path) -> list[str]:
    """Notebook sources in ``folder`` whose parameters cell is not their schema's :func:`cell`."""
    out = []
    for nb in SCHEMAS:
        path = Path(folder) / f"{nb}.py"
        if path.exists():
            text = path.read_text()
            s, e = _cell_span(text)
            if text[s:e].strip("\n") != cell(nb):
                out.append(nb)
    return out


def write_cells(folder: Path) -> list[str]:
    """Rewrite the parameters cell of each notebook source in ``folder`` from its schema; returns
    the notebooks changed (sync the .ipynb twins with ``make notebooks`` afterwards)."""
    changed = []
    for nb in stale_cells(folder):
        path = Path(folder) / f"{nb}.py"
        text = path.read_text()
        s, e = _cell_span(text)
        path.write_text(text[:s] + cell(nb) + "\n" + text[e:])
        changed.append(nb)
    return changed


def main(argv=None) -> int:
    """``python -m ntklib.params [--write] [NOTEBOOK]``: print a notebook's parameters (name, default,
    smoke value, doc), or rewrite the notebooks' parameters cells from the schemas."""
    ap = argparse.ArgumentParser(prog="python -m ntklib.params", description=main.__doc__)
    ap.add_argument("notebook", nargs="?", help="a notebook's name or prefix (e.g. 06)")
    ap.add_argument("--write", action="store_true", help="rewrite the parameters cells of notebooks/*.py")
    args = ap.parse_args(argv)
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    if args.write:
        changed = write_cells(folder)
        print("rewrote the parameters cell of", ", ".join(changed) if changed else "nothing (all in sync)")
        return 0
    chosen = [nb for nb in SCHEMAS if not args.notebook or nb.startswith(args.notebook)]
    if not chosen:
        print(f"no notebook matches {args.notebook!r}; have {list(SCHEMAS)}", file=sys.stderr)
        return 2
    for nb in chosen:
        print(nb)
        for p in SCHEMAS[nb]:
            smoke = "" if p.smoke is _KEEP else f"  [smoke: {p.smoke_value(p.default)!r}]"
            print(f"  {p.name} = {p.default!r}{smoke}\n      {p.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
