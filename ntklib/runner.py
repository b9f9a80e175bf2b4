"""Run the notebooks headless with papermill: ``python -m ntklib.runner``.

Each ``notebooks/NN_name.py`` (jupytext percent source) is converted to a
notebook under the output folder and executed by papermill with its
default parameters, overridden by ``--params file.yaml`` and ``--smoke``. The
executed copies (with outputs) go to ``build/notebooks/``; the figures go where
each notebook's ``fig_dir`` parameter says (default ``figures/<notebook>/``).
A notebook executes into ``NN_name.running.ipynb`` and takes its final name
``NN_name.ipynb`` only when every cell has run; one that fails or is interrupted
is left as ``NN_name.failed.ipynb`` (and an older ``NN_name.ipynb`` is removed, so
that ``build/notebooks/`` shows what the last run of each notebook did).

    python -m ntklib.runner                       # all notebooks, defaults
    python -m ntklib.runner --smoke 03 05         # a quick run of two of them
    python -m ntklib.runner --params params/cifar10.yaml
    python -m ntklib.runner --jobs 2              # two notebooks at a time (make figures)

Parameters are checked before anything runs, against each notebook's schema
(:mod:`ntklib.params`, the same check the notebook's first cell makes): a name no
selected notebook has is refused with the closest valid names (exit status 2),
and so is a value of the wrong type (the default's), out of range
(:data:`ntklib.pipeline.PARAMETER_RULES`) or at odds with the notebook's other
parameters (:data:`ntklib.params.NOTEBOOK_RULES`), for the run and its smoke sizes. A ``--params`` file may
hold parameters of several notebooks (one YAML for every notebook): each notebook
receives its own, and a name that no notebook has is refused.

With ``--jobs N`` up to N notebooks run at a time, each in its own runner process (its own
kernel, log and profile), started as slots free up; a notebook listed in :data:`AFTER`
waits for those it reuses cached work from (05's clean victim, poisons and victims), so no work
is done twice. With ``--timings`` the last run's times (when its parameters were these) order the
starts, longest chain first (:func:`start_order`); otherwise they start in name order. A
notebook's numbers do not depend on what runs beside it (each run has its own seeds; XLA's
programs are deterministic on CPU); its wall time does. Measured on 2 cores: most
notebooks keep one core busy for much of their run (imports, kernels, plotting, the single-victim
phases), so two at a time fill the idle core.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

__all__ = ["notebook_sources", "ParameterError", "notebook_parameters", "check_parameters", "unsynced_pairs",
           "source_notebook", "run", "run_at_once", "start_order", "last_times", "AFTER", "main"]

# notebook -> the notebooks whose cached work it reuses (ntklib.cache): with --jobs it starts only
# after they finished (when they are among those run), so the cache serves it instead of two
# processes computing the same victims side by side
AFTER = {"06": ("05",), "07": ("05",)}


def notebook_sources(selection=()):
    """The notebook sources, optionally filtered by name prefixes (``03`` or ``03_greedy``)."""
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if selection:
        chosen = [p for p in paths if any(p.stem.startswith(s) for s in selection)]
        missing = [s for s in selection if not any(p.stem.startswith(s) for p in paths)]
        if missing:
            raise ParameterError(f"no notebook matches {missing}; have {[p.stem for p in paths]}")
        return chosen
    return paths


class ParameterError(ValueError):
    """A parameter given to the runner that a notebook does not have, or a bad value."""


def notebook_parameters(path: Path) -> dict:
    """{name: default} of the parameters cell (``# %% tags=["parameters"]``) of a notebook source.

    Defaults are Python literals (``ast.literal_eval``); the cell runs no code."""
    text = Path(path).read_text()
    marker = '# %% tags=["parameters"]'
    if marker not in text:
        raise ParameterError(f"{path}: no parameters cell ({marker})")
    cell = text.split(marker, 1)[1].split("\n# %%", 1)[0]
    out = {}
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out[node.targets[0].id] = None
    return out


def _defaults(path: Path) -> dict:
    """A notebook's parameter defaults: its schema's (:mod:`ntklib.params`), or for a notebook
    without one, its parameters cell's."""
    from . import params as _params

    return _params.defaults(path.stem) if path.stem in _params.SCHEMAS else notebook_parameters(path)


def check_parameters(paths, params: dict, shared: dict | None = None) -> dict:
    """Check parameters for the selected notebooks before anything runs.

    ``params`` (from ``-p`` and ``--smoke``) must each belong to at least one selected
    notebook; ``shared`` (a ``--params`` file) to at least one notebook of the repository.
    Each notebook's values (its defaults with these on top) must pass :func:`ntklib.params.check`,
    and so must its smoke sizes when ``smoke`` is set. Returns {notebook stem: the parameters it gets}.
    Raises :class:`ParameterError` naming the parameter, the notebook and the closest names."""
    from . import params as _params
    from . import pipeline
    from .validation import closest

    shared = dict(shared or {})
    every = {p.stem: _defaults(p) for p in notebook_sources()}
    selected = {p.stem: every[p.stem] for p in paths}
    names_sel = sorted({n for d in selected.values() for n in d})
    names_all = sorted({n for d in every.values() for n in d})

    def renamed(key):
        return f" ({key!r} was renamed: {_params.RENAMED[key]})" if key in _params.RENAMED else ""

    for key in params:
        if key not in names_sel:
            owners = [s for s, d in every.items() if key in d]
            where = (f"it is a parameter of {', '.join(owners)}, which {'is' if len(owners) == 1 else 'are'} not "
                     "selected" if owners else "no notebook has it")
            near = closest(key, names_sel)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise ParameterError(f"unknown parameter {key!r} for {', '.join(selected)}: {where}{renamed(key)}{hint}. "
                                 f"Valid names: {', '.join(names_sel)}")
    for key in shared:
        if key not in names_all:
            near = closest(key, names_all)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise ParameterError(f"unknown parameter {key!r} in the --params file: no notebook has it"
                                 f"{renamed(key)}{hint}")
    plan = {}
    for stem, defaults in selected.items():
        given = {k: v for k, v in {**shared, **params}.items() if k in defaults}
        try:
            if stem in _params.SCHEMAS:  # the values it runs with, and those of its smoke run
                values = _params.check(stem, {**defaults, **given})
                if values["smoke"]:
                    _params.check(stem, _params.smoke_values(stem, values))
            else:
                for k, v in given.items():
                    if not _params.type_ok(v, defaults[k]):
                        raise TypeError(f"parameter {k}={v!r} is invalid: must be {_params.kind(defaults[k])} "
                                        f"(the default is {defaults[k]!r})")
                pipeline.check_params(**{**defaults, **given})
        except (TypeError, ValueError) as e:
            raise ParameterError(f"{stem}: {e}") from None
        plan[stem] = given
    return plan


def _check_outputs(out: Path, timings: str | None):
    """The output folder and the timings file can be written (checked before hours of work)."""
    from .validation import check_path

    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out} is a file; executed notebooks need a folder")
    check_path(out / "x", "--out", writable=True)
    if timings:
        target = check_path(timings.replace("{platform}", "cpu"), "--timings", suffixes=(".json",))
        try:  # made now, so that a path that cannot be written fails before the notebooks run
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ParameterError(f"--timings {timings}: cannot create its folder ({e})") from None


def _check_data(plan: dict):
    """CIFAR-10 is at hand when a notebook will need it (else the notebook would fail inside)."""
    if any(p.get("dataset") == "cifar10" for p in plan.values()):
        from . import data

        try:
            data.find_cifar10()
        except FileNotFoundError as e:  # a subset (make cifar-pair) serves the classes it holds
            for stem, p in plan.items():
                if p.get("dataset") == "cifar10":
                    defaults = _defaults(NOTEBOOKS / f"{stem}.py")
                    classes = [p.get(k, defaults.get(k)) for k in ("source", "target")]
                    if data.find_cifar10_subset(classes) is None:
                        raise ParameterError(f"dataset=cifar10: {e}") from None
        except ValueError as e:
            raise ParameterError(f"dataset=cifar10: {e}") from None


def unsynced_pairs(paths=None) -> list[str]:
    """Notebook pairs whose ``.py`` source and ``.ipynb`` disagree in their cells (type, source,
    tags), or whose ``.ipynb`` is missing: one line each (``make notebooks`` syncs them)."""
    import jupytext

    def cells(nb):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]

    out = []
    for src in paths or notebook_sources():
        ipynb = src.with_suffix(".ipynb")
        if not ipynb.exists():
            out.append(f"{ipynb.name} is missing")
        elif cells(jupytext.read(src)) != cells(jupytext.read(ipynb)):
            out.append(f"{src.name} and {ipynb.name} differ")
    return out


def source_notebook(path: Path, out_dir: Path) -> Path:
    """The .py source as an unexecuted .ipynb under ``out_dir`` (papermill's input).

    The tracked pair in notebooks/ is left alone (``make notebooks`` syncs it), so
    running notebooks never changes the working tree outside build/ and figures/.
    """
    import jupytext

    src = out_dir / f"{path.stem}.source.ipynb"
    jupytext.write(jupytext.read(path), src, fmt="ipynb")
    return src


@contextlib.contextmanager
def _stderr_to(log: Path):
    """Send this process's stderr, and so the notebook kernel's (a child process inherits file
    descriptor 2), to ``log``: TensorFlow's "Could not find cuda drivers", absl's start-up
    lines and the kernel's "running over TCP" warning land there instead of the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run(path: Path, parameters: dict, out_dir: Path, timeout: int | None = None,
        quiet: bool = True) -> tuple[Path, dict]:
    """Execute one notebook; return the executed copy and its profile (seconds per kind of
    work, :mod:`ntklib.profiling`, written by the notebook's kernel to ``$NTKLIB_PROFILE``).
    The copy is ``<out_dir>/<notebook>.ipynb`` once it finished (see the module notes; a
    failure or an interruption leaves ``<notebook>.failed.ipynb``).

    With ``quiet`` the kernel's stderr (third-party start-up noise) goes to
    ``<out_dir>/<notebook>.log``; when the notebook fails, the end of that log is printed with
    the error, so nothing real is hidden."""
    import json

    import papermill as pm

    out_dir = Path(out_dir).resolve()  # the kernel runs in notebooks/: a relative $NTKLIB_PROFILE would miss
    out_dir.mkdir(parents=True, exist_ok=True)
    ipynb = source_notebook(path, out_dir)
    out = out_dir / f"{path.stem}.ipynb"
    running, failed = (out_dir / f"{path.stem}.{state}.ipynb" for state in ("running", "failed"))
    prof = out_dir / f"{path.stem}.profile.json"
    log = out_dir / f"{path.stem}.log"
    prof.unlink(missing_ok=True)
    os.environ["NTKLIB_PROFILE"] = str(prof)  # inherited by the kernel process
    try:
        with _stderr_to(log) if quiet else contextlib.nullcontext():
            pm.execute_notebook(str(ipynb), str(running), parameters=parameters, cwd=str(NOTEBOOKS),
                                kernel_name="python3", progress_bar=False if quiet else sys.stderr.isatty(),
                                log_output=False, execution_timeout=timeout)
        os.replace(running, out)
        failed.unlink(missing_ok=True)
    except BaseException as e:  # a failure or Ctrl-C: never under the final name
        out.unlink(missing_ok=True)
        if running.exists():
            os.replace(running, failed)
        if not isinstance(e, Exception):
            raise
        if quiet and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-25:]
            print(f"{path.stem} failed; the end of its log ({log}):", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        os.environ.pop("NTKLIB_PROFILE", None)
    return out, (json.loads(prof.read_text()) if prof.exists() else {})


def _needs(stem, stems):
    """The notebooks among ``stems`` that ``stem`` waits for (:data:`AFTER`)."""
    return [s for s in stems if any(s.startswith(a) for a in AFTER.get(stem[:2], ()))]


def start_order(stems, cost=None) -> list:
    """The order in which :func:`run_at_once` prefers to start notebooks: by the length of the
    longest chain each one begins, its own ``cost`` (expected seconds) plus the longest chain of
    the notebooks that wait for it (:data:`AFTER`), longest first (list scheduling by critical
    path: the notebook others wait for starts at once, the long ones do not end up last). Ties
    and ``cost=None`` keep the given order; a notebook missing from ``cost`` counts as the mean
    of the others. With the recorded times of ``make figures`` on 2 cores (05 105 s, then 06 356 s
    and 07 320 s that wait for it, 09 179 s, the rest under a minute) 05 and 09 start first and the
    short 01-04 fill the end."""
    stems = list(stems)
    if not cost:
        return stems
    known = [float(cost[s]) for s in stems if s in cost]
    mean = sum(known) / len(known) if known else 0.0
    chain = {}

    def length(s):
        if s not in chain:
            after = [t for t in stems if s in _needs(t, stems)]
            chain[s] = float(cost.get(s, mean)) + max((length(t) for t in after), default=0.0)
        return chain[s]

    return sorted(stems, key=lambda s: -length(s))  # sorted is stable: ties keep the given order


def run_at_once(paths, jobs: int, command, poll: float = 0.2, report=print, cost=None) -> tuple[dict, dict, list]:
    """Run the notebooks ``paths`` in child processes, ``jobs`` at a time: ``command(path,
    timings)`` is the child's argv, which writes its timings JSON (``--timings``) to the path
    ``timings``. Each notebook starts as soon as a slot is free and the notebooks :data:`AFTER`
    names for it (among ``paths``) have finished; among those ready, the first in
    :func:`start_order` (``cost``: expected seconds per stem, e.g. the last run's; None: the
    order given). ``report(line)`` gets one line per finished notebook (the child's own line,
    numbered here). After a failure no new notebook starts; those running finish. Returns
    (seconds, profile, failed stems)."""
    import json
    import subprocess
    import tempfile

    jobs = max(1, int(jobs))
    stems = [p.stem for p in paths]
    rank = {s: i for i, s in enumerate(start_order(stems, cost))}
    waiting, running, done, failed = sorted(paths, key=lambda p: rank[p.stem]), {}, set(), []
    seconds, profile = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="ntklib-runner-"))

    def ready(p):
        return all(s in done for s in _needs(p.stem, stems))

    try:
        while waiting or running:
            while waiting and len(running) < jobs and not failed:
                nxt = next((p for p in waiting if ready(p)), None)
                if nxt is None:
                    break
                waiting.remove(nxt)
                timings, log = tmp / f"{nxt.stem}.json", tmp / f"{nxt.stem}.out"
                with open(log, "w") as out:
                    proc = subprocess.Popen(command(nxt, str(timings)), stdout=out, stderr=subprocess.STDOUT)
                running[nxt.stem] = (proc, timings, log, time.time())
            if failed and not running:
                break
            time.sleep(poll)
            for stem, (proc, timings, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[stem]
                text = log.read_text(errors="replace")
                if proc.returncode != 0:
                    failed.append(stem)
                    report(f"[{len(done) + len(failed)}/{len(paths)}] {stem} failed:\n{text.rstrip()}")
                    continue
                done.add(stem)
                seconds[stem] = round(time.time() - t0, 1)
                if timings.exists():
                    profile[stem] = json.loads(timings.read_text()).get("notebook_profile", {}).get(stem, {})
                line = next((ln for ln in text.splitlines() if f"] {stem} ..." in ln), f"] {stem} ... done")
                report(f"[{len(done) + len(failed)}/{len(paths)}] {line.split('] ', 1)[1]}")
    except BaseException:
        for proc, *_ in running.values():
            proc.terminate()
        raise
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return seconds, profile, failed + [p.stem for p in waiting]


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
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="notebooks run at a time, each in its own process (default 1; make figures: 2)")
    ap.add_argument("--verbose", action="store_true",
                    help="show the notebook kernels' own output (by default it goes to <out>/<notebook>.log)")
    ap.add_argument("--check-pairs", action="store_true",
                    help="only check that every .py source and its .ipynb agree (exit 1 if not)")
    args = ap.parse_args(argv)
    if args.check_pairs:  # the notebooks and the course assignments' sources; the parameters cells
        from . import params as _params

        bad = unsynced_pairs(notebook_sources() + sorted((ROOT / "assignments" / "source").glob("*/*.py")))
        for line in bad:
            print(f"unsynced: {line}; run `make notebooks` (jupytext --sync)", file=sys.stderr)
        stale = _params.stale_cells(NOTEBOOKS)
        for nb in stale:
            print(f"stale: the parameters cell of notebooks/{nb}.py is not its schema's (ntklib.params); run "
                  "`python -m ntklib.params --write` and `make notebooks`", file=sys.stderr)
        return 1 if bad or stale else 0
    import yaml

    params, shared = {}, {}
    if args.params:
        path = Path(args.params)
        if not path.is_file():
            print(f"error: --params {path}: no such file", file=sys.stderr)
            return 2
        try:
            shared = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            print(f"error: --params {path} is not valid YAML: {e}", file=sys.stderr)
            return 2
        if not isinstance(shared, dict):
            print(f"error: --params {path} must hold a mapping of parameter names to values, "
                  f"got {type(shared).__name__}", file=sys.stderr)
            return 2
    for kv in args.p:
        k, eq, v = kv.partition("=")
        if not eq or not k.strip():
            print(f"error: -p {kv!r}: write -p NAME=VALUE (a YAML value), e.g. -p seed=1", file=sys.stderr)
            return 2
        try:
            params[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            print(f"error: -p {kv!r}: the value is not valid YAML ({e})", file=sys.stderr)
            return 2
    if args.smoke:
        params["smoke"] = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        paths = notebook_sources(args.notebooks)
        if not paths:
            print("no notebooks to run")
            return 0
        plan = check_parameters(paths, params, shared)
        _check_outputs(Path(args.out), args.timings)
        _check_data(plan)
    except (ParameterError, OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs {args.jobs}: give at least 1 (notebooks run at a time)", file=sys.stderr)
        return 2
    total = time.time()
    seconds, profile = {}, {}
    if args.jobs > 1 and len(paths) > 1:
        def command(path, timings):
            return ([sys.executable, "-m", "ntklib.runner", path.stem, "--out", args.out, "--timings", timings]
                    + (["--params", args.params] if args.params else []) + [a for kv in args.p for a in ("-p", kv)]
                    + (["--smoke"] if args.smoke else []) + (["--verbose"] if args.verbose else []))

        cost = last_times(args.timings, {**shared, **params}) if args.timings else None
        print(f"{len(paths)} notebooks, {args.jobs} at a time"
              + (", the longest chains first (by the times in the last timings file)" if cost else ""), flush=True)
        seconds, profile, failed = run_at_once(paths, args.jobs, command, report=lambda s: print(s, flush=True),
                                               cost=cost)
        seconds, profile = ({p.stem: d[p.stem] for p in paths if p.stem in d} for d in (seconds, profile))  # in order
        if failed:
            print(f"failed or not run: {failed}", file=sys.stderr)
            return 1
        paths = []  # all ran
    for i, path in enumerate(paths, 1):
        t0 = time.time()
        print(f"[{i}/{len(paths)}] {path.stem} ...", end="", flush=True)
        try:
            _, prof = run(path, plan[path.stem], Path(args.out), quiet=not args.verbose)
        except Exception:
            print(" failed", flush=True)
            raise
        seconds[path.stem] = round(time.time() - t0, 1)
        profile[path.stem] = dict(prof, rest=round(seconds[path.stem] - sum(prof.values()), 1))
        split = ", ".join(f"{k} {v:.0f} s" for k, v in profile[path.stem].items() if v >= 0.5)
        figs = Path(plan[path.stem].get("fig_dir", notebook_parameters(path).get("fig_dir", "figures"))) / path.stem
        print(f" done in {seconds[path.stem]:.0f} s ({split}); figures in {figs}/", flush=True)
    wall = time.time() - total
    where = {**shared, **params}.get("fig_dir", "figures/")
    print(f"all {len(seconds)} notebooks in {wall:.0f} s; figures under {where}")
    if args.timings:
        try:
            _write_timings(args.timings, seconds, wall, {**shared, **params}, profile, args.jobs)
        except OSError as e:  # the notebooks' results are written; only the timings are lost
            print(f"error: could not write the timings to {args.timings}: {e}", file=sys.stderr)
            return 1
    return 0


def _timings_path(path: str) -> Path:
    import jax

    return Path(path.replace("{platform}", jax.devices()[0].platform))


def last_times(path: str, params: dict):
    """The notebook seconds of the timings file ``path`` (``--timings``; ``{platform}`` replaced)
    when it exists and was written by a run with these ``params``, else None: the expected costs
    by which ``--jobs`` orders the notebooks (:func:`start_order`). A file that cannot be read
    is ignored (the run is only ordered differently)."""
    import json

    try:
        d = json.loads(_timings_path(path).read_text())
        if d.get("parameters", {}) == params and isinstance(d.get("notebook_seconds"), dict):
            return {str(k): float(v) for k, v in d["notebook_seconds"].items()}
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return None


def _write_timings(path: str, seconds: dict, wall: float, params: dict, profile: dict, jobs: int = 1):
    import json
    import platform

    import jax

    dev = jax.devices()[0]
    target = _timings_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(dict(
        machine=dict(platform=dev.platform, device=getattr(dev, "device_kind", str(dev)),
                     cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count()),
        parameters=params, jobs=jobs, notebook_seconds=seconds, total_seconds=round(wall, 1),
        notebook_profile=profile), indent=2))
    print("timings written to", target)


if __name__ == "__main__":
    sys.exit(main())
