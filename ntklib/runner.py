"""Run the notebooks headless with papermill: ``python -m ntklib.runner``.

Each ``notebooks/NN_name.py`` (jupytext percent source) is converted to a
notebook under the output folder and executed by papermill with its
default parameters, overridden by ``--params file.yaml`` and ``--smoke``. The
executed copies (with outputs) go to ``build/notebooks/``; the figures go where
each notebook's ``fig_dir`` parameter says (default ``figures/<notebook>/``).

    python -m ntklib.runner                       # all notebooks, defaults
    python -m ntklib.runner --smoke 03 05         # a quick run of two of them
    python -m ntklib.runner --params params/cifar10.yaml
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def notebook_sources(selection=()):
    """The notebook sources, optionally filtered by name prefixes (``03`` or ``03_greedy``)."""
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if selection:
        chosen = [p for p in paths if any(p.stem.startswith(s) for s in selection)]
        missing = [s for s in selection if not any(p.stem.startswith(s) for p in paths)]
        if missing:
            raise SystemExit(f"no notebook matches {missing}; have {[p.stem for p in paths]}")
        return chosen
    return paths


def source_notebook(path: Path, out_dir: Path) -> Path:
    """The .py source as an unexecuted .ipynb under ``out_dir`` (papermill's input).

    The tracked pair in notebooks/ is left alone (``make notebooks`` syncs it), so
    running notebooks never changes the working tree outside build/ and figures/.
    """
    import jupytext

    src = out_dir / f"{path.stem}.source.ipynb"
    jupytext.write(jupytext.read(path), src, fmt="ipynb")
    return src


def run(path: Path, parameters: dict, out_dir: Path, timeout: int | None = None) -> tuple[Path, dict]:
    """Execute one notebook; return the executed copy and its profile (seconds per kind of
    work, :mod:`ntklib.profiling`, written by the notebook's kernel to ``$NTKLIB_PROFILE``)."""
    import json

    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    ipynb = source_notebook(path, out_dir)
    out = out_dir / f"{path.stem}.ipynb"
    prof = out_dir / f"{path.stem}.profile.json"
    prof.unlink(missing_ok=True)
    os.environ["NTKLIB_PROFILE"] = str(prof)  # inherited by the kernel process
    try:
        pm.execute_notebook(str(ipynb), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
                            kernel_name="python3", progress_bar=sys.stderr.isatty(), log_output=False,
                            execution_timeout=timeout)
    finally:
        os.environ.pop("NTKLIB_PROFILE", None)
    return out, (json.loads(prof.read_text()) if prof.exists() else {})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="name prefixes (default: all)")
    ap.add_argument("--params", help="YAML file of parameters for every notebook")
    ap.add_argument("--smoke", action="store_true", help="smoke=True: seconds per notebook")
    ap.add_argument("--out", default=str(ROOT / "build" / "notebooks"), help="executed notebooks go here")
    ap.add_argument("--timings", metavar="PATH",
                    help="write per-notebook wall times (JSON) here; '{platform}' is replaced by cpu/gpu")
    ap.add_argument("-p", action="append", default=[], metavar="KEY=VALUE",
                    help="override one parameter (YAML value), e.g. -p seed=1")
    args = ap.parse_args(argv)
    import yaml

    params = {}
    if args.params:
        params.update(yaml.safe_load(Path(args.params).read_text()) or {})
    for kv in args.p:
        k, _, v = kv.partition("=")
        params[k] = yaml.safe_load(v)
    if args.smoke:
        params["smoke"] = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    paths = notebook_sources(args.notebooks)
    if not paths:
        print("no notebooks to run")
        return 0
    total = time.time()
    seconds, profile = {}, {}
    for i, path in enumerate(paths, 1):
        t0 = time.time()
        print(f"[{i}/{len(paths)}] {path.stem} ...", flush=True)
        out, prof = run(path, params, Path(args.out))
        seconds[path.stem] = round(time.time() - t0, 1)
        profile[path.stem] = dict(prof, rest=round(seconds[path.stem] - sum(prof.values()), 1))
        split = ", ".join(f"{k} {v:.0f} s" for k, v in profile[path.stem].items() if v >= 0.5)
        print(f"[{i}/{len(paths)}] {path.stem} done in {seconds[path.stem]:.0f} s ({split}) -> {out}", flush=True)
    wall = time.time() - total
    where = params.get("fig_dir", "figures/")
    print(f"all {len(paths)} notebooks in {wall:.0f} s; figures under {where}")
    if args.timings:
        _write_timings(args.timings, seconds, wall, params, profile)
    return 0


def _write_timings(path: str, seconds: dict, wall: float, params: dict, profile: dict):
    import json
    import platform

    import jax

    dev = jax.devices()[0]
    target = Path(path.replace("{platform}", dev.platform))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(dict(
        machine=dict(platform=dev.platform, device=getattr(dev, "device_kind", str(dev)),
                     cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count()),
        parameters=params, notebook_seconds=seconds, total_seconds=round(wall, 1),
        notebook_profile=profile), indent=2))
    print("timings written to", target)


if __name__ == "__main__":
    sys.exit(main())
