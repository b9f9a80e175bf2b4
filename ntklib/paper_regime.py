"""The paper's headline study in one command: ``python -m ntklib.paper_regime --config FILE --out DIR``.

NTBA against the sampling baseline on trained networks (Hayase & Oh 2023, Sec. 5; docs/design.md,
section 3): a clean network trained to fit d, its empirical NTK, greedy initialization over a pool
of triggered source images, L-BFGS-B in the pixel box, then fresh victims trained from scratch on d
plus each poison set (and on d alone: the clean baseline), one per seed, until every point fits;
the attacker's t and a are held-out *training* images (the reference's ``use-train2`` mode). Plain
Python on ntklib's neural-tangents-free path (plain-JAX networks, the empirical NTK): it runs where
a current JAX runs, GPUs included, without the Jupyter stack.

Stages, each timed and predicted (:mod:`ntklib.cost`): ``data`` (the archive, or the compact subset
of ``make cifar-pair``), ``clean network``, ``poisons`` (kernel blocks, greedy, optimization),
``victims``, ``clean victims``. Every stage's work is cached by content (:mod:`ntklib.cache`: the
clean network, each budget's optimization checkpointed as it goes, every victim), so a run cut off
by a time limit resumes where it stopped when the same command runs again. ``--estimate`` prints
the predicted minutes per stage on a named GPU and exits (refusing a configuration that would not
fit in its memory). Results: ``results.json`` (the configuration, the device and versions, the
matmul precision, stage times predicted and measured, per seed and budget the network ASR, clean
accuracy, training loss, largest poison residual and kernel-model ASR, the clean victims, the
poison-efficiency ratios) and ``headline.png`` (ASR and clean accuracy against poisons, both
attacks, the 90% line).

The configuration file (YAML) holds notebook 06's names: dataset, source, target, trigger,
trigger_amplitude, architecture, width, depth, readout, kernel (``empirical`` or
``empirical_ensemble``), ensemble_size, ridge, budgets, sampling_budgets, seeds, opt_steps,
optimizer, victim_lr, batch_size, train_steps, target_loss, target_residual, task_kw, asr_level, and the
estimate's device, efficiency and compile_seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import cost as _cost
from . import validation as _val

__all__ = ["DEFAULTS", "load_config", "run", "main"]

DEFAULTS = dict(dataset="cifar10", source=9, target=4, trigger="periodic", trigger_amplitude=None,
                architecture="plain_wide_resnet", width=32, depth=16, readout=None, kernel="empirical",
                ensemble_size=3, ridge=0.0, budgets=[1, 2, 5, 10, 20, 50], sampling_budgets=[5, 10, 20, 50, 100, 200],
                seeds=[0, 1], opt_steps=30, optimizer="adam", victim_lr=1e-3, batch_size=256, train_steps=4000,
                target_loss=1e-3, target_residual=0.1, task_kw={}, asr_level=0.9, device="h200", efficiency=0.3,
                compile_seconds=20.0)
STAGES = ("data", "clean network", "poisons", "victims", "clean victims")


def load_config(path=None, overrides=None) -> dict:
    """The configuration: :data:`DEFAULTS`, then the YAML file, then ``overrides``; unknown names
    are refused with the closest valid ones, values by :func:`ntklib.pipeline.check_params`."""
    import yaml

    from . import pipeline as _pipeline

    cfg = dict(DEFAULTS)
    given = {}
    if path is not None:
        path = _val.check_path(path, "--config", must_exist=True, suffixes=(".yaml", ".yml"))
        try:
            given = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"--config {path} is not valid YAML: {e}") from None
        if not isinstance(given, dict):
            raise ValueError(f"--config {path} must hold a mapping of names to values, got {type(given).__name__}")
    given.update(overrides or {})
    _val.check_keys(given, DEFAULTS, "setting(s) of the paper-regime configuration")
    cfg.update(given)
    _val.check_choice(cfg["kernel"], "kernel", ("empirical", "empirical_ensemble"))
    if not str(cfg["architecture"]).startswith("plain_"):
        raise ValueError(f"architecture={cfg['architecture']!r} is invalid here: the paper regime runs on the "
                         "plain-JAX networks (plain_mlp, plain_cnn, plain_wide_resnet), which need no neural-tangents")
    _val.check_choice(cfg["device"], "device", sorted(_cost.DEVICES))
    _val.check_float(cfg["efficiency"], "efficiency", min=0, max=1, include_min=False)
    _val.check_float(cfg["compile_seconds"], "compile_seconds", min=0)
    _pipeline.check_params(**{k: v for k, v in cfg.items() if k not in ("device", "efficiency", "compile_seconds")})
    return cfg


def _notebook_params(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("device", "efficiency", "compile_seconds")} | \
        {"kernels": [cfg["kernel"]]}


def estimate(cfg: dict) -> list[dict]:
    """Predicted seconds per stage on ``cfg["device"]`` (:func:`ntklib.cost.estimate`)."""
    stages = _cost.from_params(_notebook_params(cfg))
    return _cost.estimate(stages, _cost.DEVICES[cfg["device"]], cfg["efficiency"], cfg["compile_seconds"])


def _predicted(rows) -> dict:
    """The model's stages grouped as this command's stages."""
    by = {r["stage"]: r["seconds"] for r in rows}
    return {"data": 0.0, "clean network": by["clean network(s)"],
            "poisons": by["kernel blocks"] + by["greedy"] + by["optimization"],
            "victims": by["victims"] + by["evaluation"], "clean victims": by["clean victims"]}


def _machine() -> dict:
    import jax

    dev = jax.devices()[0]
    info = dict(platform=dev.platform, device=getattr(dev, "device_kind", str(dev)), n_devices=jax.device_count(),
                jax=jax.__version__, numpy=np.__version__, python=platform.python_version(),
                matmul_precision=str(jax.config.jax_default_matmul_precision or "default (TF32 on NVIDIA tensor "
                                     "cores for float32 training; the Gram blocks run at 'float32', full precision)"))
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
        backend = jax.extend.backend.get_backend() if hasattr(jax, "extend") else None
        info["platform_version"] = getattr(backend, "platform_version", None)
    except Exception:  # noqa: BLE001 - versions are information, never a failure
        pass
    return info


def _figure(table, clean, level, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for meth, style in (("ntba", "o-"), ("sampling", "s--")):
        g = table[table.method == meth].groupby("budget")
        m, s = g.net_asr.mean(), g.net_asr.std(ddof=0).fillna(0)
        ax1.errorbar(m.index, m.values, yerr=s.values, fmt=style, capsize=3, label=meth.upper() if meth == "ntba"
                     else "sampling")
        ca = g.net_ca.mean()
        ax2.plot(ca.index, ca.values, style, label=meth)
    ax1.axhline(level, color="grey", lw=1, ls=":", label=f"{level:.0%}")
    ax2.axhline(float(np.mean([c["net_ca"] for c in clean])), color="black", lw=1, ls=":", label="clean victims")
    for ax, what in ((ax1, "attack success (trained networks)"), (ax2, "clean accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("poisons")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def run(cfg: dict, out, progress: bool = True) -> dict:
    """Run the study of ``cfg`` (:func:`load_config`) and write ``results.json`` and
    ``headline.png`` under ``out``. Returns the results (the JSON's content)."""
    import dataclasses

    import jax

    from . import data as _data
    from . import evaluate as _evaluate
    from . import pipeline as _pipeline
    from . import train as _train

    out = _val.check_path(out, "--out", writable=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = estimate(cfg)  # refuses what would not fit, before anything runs
    predicted = _predicted(rows)
    measured: dict = {}
    t0 = time.perf_counter()

    def done(stage):
        nonlocal t0
        measured[stage] = round(time.perf_counter() - t0, 2)
        if progress:
            print(f"[{len(measured)}/{len(STAGES)}] {stage}: {measured[stage]:.1f} s", flush=True)
        t0 = time.perf_counter()

    task_kw = dict(cfg["task_kw"] or {})
    trigger = _data.default_trigger(cfg["dataset"], cfg["trigger"], amplitude=cfg["trigger_amplitude"])
    _data.load_dataset(cfg["dataset"], classes=[cfg["source"], cfg["target"]])  # the archive, or the subset
    done("data")
    train_cfg = _pipeline.victim_config(cfg["dataset"], optimizer=cfg["optimizer"], lr=cfg["victim_lr"],
                                        steps=cfg["train_steps"], batch_size=cfg["batch_size"],
                                        target_loss=cfg["target_loss"], target_residual=cfg["target_residual"])
    exp = _pipeline.prepare(cfg["dataset"], cfg["source"], cfg["target"], trigger, cfg["architecture"], cfg["width"],
                            cfg["depth"], cfg["kernel"], train_config=train_cfg, ridge=cfg["ridge"],
                            task_kw=task_kw, progress=progress, ensemble_size=cfg["ensemble_size"],
                            readout=cfg["readout"])
    done("clean network")
    m = len(exp.task.X_cand)
    budgets = [b for b in cfg["budgets"] if b <= m]
    with jax.default_matmul_precision("float32"):  # the Gram blocks and their gradients in full float32
        poisons = _pipeline.design_poisons(exp, budgets, cfg["opt_steps"], progress=progress)
    done("poisons")
    table = _evaluate.sweep(exp.task, exp.problem, exp.arch, budgets=budgets, seeds=cfg["seeds"],
                            train_config=exp.train_config, ntba=poisons, progress=progress,
                            sampling_budgets=[b for b in cfg["sampling_budgets"] if b <= m])
    done("victims")
    cleans = _train.train_many(exp.arch, [(exp.task.X_d, exp.task.y_d)] * len(cfg["seeds"]),
                               [dataclasses.replace(exp.train_config, seed=int(s)) for s in cfg["seeds"]],
                               progress=progress, desc="clean victims")
    clean = [dict(seed=int(s), train_loss=r.final_loss, converged=r.converged,
                  **_evaluate.network_metrics(exp.arch, r.params, exp.task)) for s, r in zip(cfg["seeds"], cleans,
                                                                                           strict=True)]
    done("clean victims")
    levels = sorted({0.5, 0.8, 0.9, 0.95, float(cfg["asr_level"])})
    ratios = {f"{lv:g}": _evaluate.efficiency_ratio(table, "net_asr", lv) for lv in levels}
    clean_ca = float(np.mean([c["net_ca"] for c in clean]))
    fitted = table[table.method.isin(["ntba", "sampling"])]
    results = dict(
        config=cfg, machine=_machine(), stages=[dict(stage=s, predicted_s=predicted.get(s), measured_s=measured[s])
                                                for s in STAGES],
        estimate=rows, total_s=dict(predicted=sum(r["seconds"] for r in rows), measured=sum(measured.values())),
        clean_train_loss=exp.spec.get("clean_train_loss"), rows=table.to_dict("records"), clean_victims=clean,
        clean_accuracy=clean_ca, ratios=ratios, headline=ratios[f"{float(cfg['asr_level']):g}"],
        every_victim_fitted=bool((fitted.train_loss <= cfg["target_loss"]).all() and
                                 (cfg["target_residual"] is None or
                                  (fitted.max_poison_residual < cfg["target_residual"]).all())),
        worst_clean_accuracy_drop=float(clean_ca - table.groupby(["method", "budget"]).net_ca.mean().min()))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    _figure(table, clean, float(cfg["asr_level"]), out / "headline.png")
    return results


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML of settings (see the module notes); defaults: the GPU study")
    ap.add_argument("--out", default="build/paper_regime", help="results.json and headline.png go here")
    ap.add_argument("--estimate", action="store_true", help="print the predicted minutes per stage and exit")
    ap.add_argument("--device", help=f"the GPU of the estimate: {', '.join(sorted(_cost.DEVICES))}")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, {"device": args.device} if args.device else None)
        if args.estimate:
            rows = estimate(cfg)
            name = _cost.DEVICES[cfg["device"]].name
            print(f"predicted on one {name} at {cfg['efficiency']:.0%} of peak, {cfg['compile_seconds']:g} s per "
                  "compiled program:")
            for r in rows:
                print(f"  {r['stage']:18s} {r['gflop']:12.0f} GFLOP ({r['precision']}, {r['memory_gb']:6.2f} GB)  "
                      f"{r['seconds'] / 60:6.1f} min")
            print(f"  {'total':18s} {sum(r['seconds'] for r in rows) / 60:37.1f} min")
            return 0
        res = run(cfg, args.out, progress=not args.quiet)
    except (OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h = res["headline"]
    print(f"ratio at {h['level']:.0%} network ASR: {h['ratio']} (NTBA {h['ntba_budget']}, sampling "
          f"{h['sampling_budget']}{', a lower bound' if h['lower_bound'] else ''}); clean accuracy "
          f"{res['clean_accuracy']:.3f}; every victim fitted: {res['every_victim_fitted']}; "
          f"{res['total_s']['measured'] / 60:.1f} min (predicted {res['total_s']['predicted'] / 60:.1f}); "
          f"results in {args.out}/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
