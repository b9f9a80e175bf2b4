"""Mutation testing of the numerical modules: which plausible one-line bugs do the tests miss?

For each module, mutmut (``mutmut==3.8.1`` from PyPI) writes every single-token mutant of its
functions (an operator, a constant, a comparison, a string, an argument dropped...), runs the
tests that exercise the mutated function, and records the mutants no test kills ("survivors").
This script runs it module by module in a scratch copy of the working tree (``build/mutation/``,
nothing in the repository changes), and writes one report with every survivor's diff and its
triage to ``bench/results/mutation.json`` and a summary table to ``bench/results/mutation.md``.

Triage (``bench/mutation_triage.json``, committed): each survivor is matched by module, function
and the mutated line; a verdict says either *equivalent* (the mutant computes the same result, e.g.
a sign flip of y in {-1, +1} under division) with the reason, or *gap* with the test added for it
(rerun to confirm that it now dies). Survivors whose diff only changes the wording of a message are
reported as "message text", and mutants of input checks (a ``check_*`` call, a ``raise``, a guard
on shapes or types) as "input check": ``tests/test_bad_inputs.py`` exercises those, but it is not
run under mutation (see MODULES). Anything left is "untriaged": the list to work through.

    python bench/mutation.py                       # every module (hours on 2 cores: regression 8 min,
                                                   # defenses 50 min, adversarial ~60 min, unlearning 43 min with
                                                   # the compile cache (~20 a minute), reconstruction ~2 h,
                                                   # triggers 4 min, evaluate 27 min)
    python bench/mutation.py --modules defenses    # one of them
    python bench/mutation.py --modules backdoor_loss --only "BackdoorProblem*_evaluate"   # one function's mutants
    make mutation                                  # the same, installing mutmut first

Not part of CI (slow); rerun after changing a numerical module or its tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# module -> the test files that exercise it. tests/test_bad_inputs.py is left out: mutmut runs each
# mutant in a fresh fork, where that file's shared fixture (an experiment with trained victims) would
# be rebuilt for every mutant; the mutants of input checks are reported as such instead.
MODULES = {
    "defenses": ["tests/test_defenses.py", "tests/test_properties.py", "tests/test_defaults.py"],
    "unlearning": ["tests/test_defenses.py", "tests/test_defaults.py"],
    "adversarial": ["tests/test_adversarial.py", "tests/test_defaults.py"],
    "reconstruction": ["tests/test_reconstruction.py", "tests/test_defaults.py"],
    "regression": ["tests/test_regression.py", "tests/test_properties.py"],
    # the attack's three modules (ntklib/attack.py only re-exports them)
    "backdoor_loss": ["tests/test_attack.py"],
    "greedy": ["tests/test_attack.py"],
    "poison_optimization": ["tests/test_attack.py"],
    # beyond issue 27's list: the triggers every poison carries and the evaluation behind the headline ratio
    "triggers": ["tests/test_triggers.py", "tests/test_properties.py", "tests/test_data.py", "tests/test_defaults.py"],
    "evaluate": ["tests/test_evaluate_artifacts.py", "tests/test_studies.py", "tests/test_pipeline.py",
                 "tests/test_attack.py", "tests/test_defaults.py"],
}
INPUT_CHECK = re.compile(r"_val\.|\bcheck_\w*\(|_check\w*\(|^raise |"
                         r"^if .*(isinstance|shape|len\(|is None|not callable)")
TRIAGE = ROOT / "bench" / "mutation_triage.json"
STATUS = {0: "survived", 1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 152: "timeout",
          255: "timeout", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious", 37: "caught by type check",
          -11: "segfault", -9: "segfault", None: "not checked"}


def copy_tree(dest: Path) -> Path:
    """A fresh copy of the working tree's tracked files (uncommitted edits included) at ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def _mutmut_config(module: str) -> str:
    tests = ", ".join(f'"{t}"' for t in MODULES[module])
    return (f'\n[tool.mutmut]\nsource_paths = ["ntklib"]\nonly_mutate = ["ntklib/{module}.py"]\n'
            f'pytest_add_cli_args_test_selection = [{tests}]\nalso_copy = ["data", "params"]\n'
            # each mutant forks from a server that has imported pytest and the tests but run nothing: a
            # fork of mutmut's own process, which has run JAX (multithreaded), can deadlock on a lock
            # held by one of its threads (seen on unlearning: children asleep on a futex for minutes)
            'process_isolation = "forkserver"\n')


def _scratch(module: str, resume: bool = False) -> Path:
    """A copy of the working tree's tracked files (uncommitted edits included) under build/mutation/
    (``resume``: the copy of an earlier, interrupted run, whose finished mutants mutmut skips; its
    sources and test files are refreshed from the working tree, and mutmut collects the coverage of new tests
    before it goes on. A changed test *selection* (MODULES) makes mutmut discard every result, so
    new tests of a module go into the files it already selects)."""
    dest = ROOT / "build" / "mutation" / module
    if resume and (dest / "mutants").is_dir():
        for where in (dest / "tests", dest / "mutants" / "tests"):
            shutil.copytree(ROOT / "tests", where, dirs_exist_ok=True)
        # the sources too: mutmut re-mutates the functions whose code changed (their earlier verdicts
        # are dropped) and keeps the verdicts of the others
        shutil.copytree(ROOT / "ntklib", dest / "ntklib", dirs_exist_ok=True)
        for toml in (dest / "pyproject.toml", dest / "mutants" / "pyproject.toml"):  # runs from before forkserver
            if toml.exists() and "process_isolation" not in toml.read_text():
                with open(toml, "a") as f:
                    f.write('process_isolation = "forkserver"\n')
        return dest
    copy_tree(dest)
    with open(dest / "pyproject.toml", "a") as f:
        f.write(_mutmut_config(module))
    return dest


def _mutated_line(diff: str) -> tuple[str, str]:
    """(function, the mutated line) of a mutmut diff: the '+' line that is not the header."""
    minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return (minus[0] if minus else ""), (plus[0] if plus else "")


def _only_strings_changed(old: str, new: str) -> bool:
    """True when the two lines differ only inside string literals (a message's wording)."""
    strip = lambda s: re.sub(r"(?:[rbfu]{0,2})(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')", '""', s)  # noqa: E731
    return old != new and strip(old) == strip(new)


def _codes(work: Path, module: str) -> dict:
    return json.loads((work / "mutants" / "ntklib" / f"{module}.py.meta").read_text())["exit_code_by_key"]


def run_module(module: str, max_children: int, timeout: int, resume: bool = False,
               survivors_only: bool = False, collect: bool = False, only=()) -> list[dict]:
    work = _scratch(module, resume or survivors_only or collect or bool(only))
    names = []
    if survivors_only:  # the current tests against the earlier run's survivors only
        names = [k for k, v in _codes(work, module).items() if STATUS.get(v) == "survived"]
    if only:  # the mutants of the named functions (fnmatch patterns on mutmut's names), checked or not
        names = [f"ntklib.{module}.x*{pattern}__mutmut_*" for pattern in only]
    # one thread per forked mutant: OpenMP (scikit-learn) and XLA thread pools do not survive fork()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NTKLIB_CACHE_DIR="off", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
               # compiled XLA programs persist across the mutants' processes (bench/mutation_plugins):
               # the unmutated ones are compiled once per module, 1.5-2.3x faster tests
               PYTHONPATH=f".{os.pathsep}{ROOT / 'bench' / 'mutation_plugins'}",
               PYTEST_ADDOPTS="-p jax_cpu_cache", JAX_COMPILATION_CACHE_DIR=str(work / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names],
                          cwd=work, env=env, capture_output=True, text=True, timeout=timeout) if not collect else None
    seconds = time.perf_counter() - t0
    if proc is not None and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"mutmut failed on {module} (exit {proc.returncode}):\n{tail}")
    codes = _codes(work, module)
    survivors = [k for k, v in codes.items() if STATUS.get(v, str(v)) in ("survived", "no tests")]
    diffs = {}
    if survivors:  # the diffs, from mutmut itself (one process for all of them)
        script = ("import json, sys\nfrom mutmut.__main__ import get_diff_for_mutant\n"
                  "from pathlib import Path\nnames = json.load(sys.stdin)\n"
                  f"print(json.dumps({{n: get_diff_for_mutant(n, path=Path('ntklib/{module}.py')) for n in names}}))")
        out = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, input=json.dumps(survivors),
                             capture_output=True, text=True, check=True)
        diffs = json.loads(out.stdout.strip().splitlines()[-1])
    counts = {}
    for v in codes.values():
        counts[STATUS.get(v, str(v))] = counts.get(STATUS.get(v, str(v)), 0) + 1
    rows = []
    for name in survivors:
        old, new = _mutated_line(diffs.get(name, ""))
        function = re.sub(r"__mutmut_\d+$", "", name.split(".")[-1]).removeprefix("x_").replace("ǁ", ".")
        rows.append(dict(module=module, mutant=name, function=function, status=STATUS.get(codes[name]),
                         old=old, new=new, diff=diffs.get(name, "")))
    print(f"{module}: {len(codes)} mutants in {seconds / 60:.1f} min: {counts}", flush=True)
    return [dict(module=module, counts=counts, seconds=seconds)] + rows


# modules whose code came, unchanged, from another one: a verdict given under the old name still holds
FORMERLY = {"backdoor_loss": "attack", "greedy": "attack", "poison_optimization": "attack"}


def triage(rows: list[dict]) -> list[dict]:
    verdicts = json.loads(TRIAGE.read_text()) if TRIAGE.exists() else []
    for r in rows:
        r["category"], r["verdict"] = "untriaged", ""
        names = (r["module"], FORMERLY.get(r["module"]))
        exact = [v for v in verdicts if v["module"] in names and v.get("function", r["function"]) == r["function"]
                 and v["new"].strip() == r["new"]]
        whole = [v for v in verdicts if v["module"] in names and v.get("function") == r["function"]
                 and v["new"] == "*"]  # a verdict on every remaining survivor of one function
        if exact:
            r["category"], r["verdict"] = exact[0]["category"], exact[0]["verdict"]
        else:
            if _only_strings_changed(r["old"], r["new"]):
                r["category"], r["verdict"] = "message text", "only the wording of a message or a label"
            elif r["old"].startswith("def ") or (r["old"].endswith(") -> np.ndarray:") and "=" in r["old"]):
                r["category"], r["verdict"] = "default value", (
                    "a default argument; tests/test_defaults.py pins the documented ones through the signature, "
                    "which mutmut cannot attribute to the function (it maps tests to functions by calls)")
            elif INPUT_CHECK.search(r["old"]) or r["new"].startswith("raise"):
                r["category"], r["verdict"] = "input check", ("an input check or its message (tests/test_bad_inputs.py "
                                                              "checks these, but is not run under mutation)")
            elif whole:
                r["category"], r["verdict"] = whole[0]["category"], whole[0]["verdict"]
    return rows


def write_report(report: dict, out: Path) -> list[str]:
    for old in set(FORMERLY.values()) & set(report["modules"]):  # an old name's row goes once its modules'
        became = [n for n, o in FORMERLY.items() if o == old]    # rows have checked every mutant
        if all(n in report["modules"] and report["modules"][n]["counts"].get("not checked", 0) == 0 for n in became):
            del report["modules"][old]
            report["survivors"] = [r for r in report["survivors"] if r["module"] != old]
    report["survivors"] = triage(report["survivors"])
    report["tool"] = "mutmut==3.8.1"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    lines = ["# Mutation testing (bench/mutation.py)", "",
             "| module | mutants | not checked | killed | timeout | survived | message text | input check | "
             "default value | equivalent | gap (test added) | open gap (no test yet) | untriaged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for module, m in report["modules"].items():
        cats = [r["category"] for r in report["survivors"] if r["module"] == module]
        cat = cats.count
        c = m["counts"]
        lines.append(f"| {module} | {sum(c.values())} | {c.get('not checked', 0)} | {c.get('killed', 0)} | "
                     f"{c.get('timeout', 0)} | "
                     f"{len(cats)} | {cat('message text')} | {cat('input check')} | {cat('default value')} | "
                     f"{cat('equivalent')} | {cat('gap')} | {cat('open gap')} | {cat('untriaged')} |")
    split = sorted({old for new, old in FORMERLY.items() if old in report["modules"] and new in report["modules"]})
    if split:  # a row kept under a module's old name, beside the rows of the modules it became
        lines += ["", *(f"The `{old}` row is the last run under that name, before the module was split into "
                        + ", ".join(f"`{n}`" for n, o in FORMERLY.items() if o == old) + " (their rows)."
                        for old in split)]
    lines += ["", "## Survivors other than message text, input checks and defaults", ""]
    for r in report["survivors"]:
        if r["category"] not in ("message text", "input check", "default value"):
            lines.append(f"- `{r['module']}.{r['function']}` ({r['category']}): `{r['old']}` -> `{r['new']}`"
                         + (f": {r['verdict']}" if r["verdict"] else ""))
    lines += hand_written_section()
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return lines


HAND = {  # the hand-run mutants beside mutmut's: file under bench/results -> what they are
    "listed_mutants.json": "the one-line bugs issue 27 lists (`python bench/listed_mutants.py`)",
    "mutation_open_gaps_by_hand.json": "the survivors the triage had left open, applied by hand (`python "
                                       "bench/listed_mutants.py --set open_gaps`)",
    "mutation_reconstruction_by_hand.json": "reconstruction, written by hand (`python bench/listed_mutants.py --set "
                                            "reconstruction`); survivors of the first pass and the tests that now kill "
                                            "them are in bench/mutation_triage.json",
    "mutation_unlearning_by_hand.json": "unlearning's hypergradient, inner map and loss: mutmut's mutants run by hand "
                                        "against their fast tests",
}


def hand_written_section() -> list[str]:
    """The hand-run mutant sets, as a table (killed / checked, survivors named)."""
    lines = ["", "## Mutants run by hand", "", "| set | checked | killed | survived |", "|---|---|---|---|"]
    survivors = []
    for name, what in HAND.items():
        path = ROOT / "bench" / "results" / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        rows = data["mutants"] if isinstance(data, dict) else data
        killed = [r for r in rows if r.get("killed") or r.get("verdict") == "killed"]
        checked = [r for r in rows if "killed" in r or r.get("verdict") in ("killed", "survived")]
        left = [r for r in checked if r not in killed]
        lines.append(f"| {what} | {len(checked)} | {len(killed)} | {len(left)} |")
        survivors += [f"- {name}: `{r.get('mutant')}`" + (f" (`{r['new']}`)" if "new" in r else "") for r in left]
    return lines + (["", "Survivors of the hand-run sets (input checks, messages and defaults; see the triage):", "",
                     *survivors] if survivors else [])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", nargs="*", default=list(MODULES), choices=list(MODULES),
                    help="modules to run (none: only re-triage the existing report after editing the triage file)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per module")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mutation.json"))
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of these modules")
    ap.add_argument("--collect", action="store_true",
                    help="no run: report what a stopped run of these modules had checked (unchecked mutants counted)")
    ap.add_argument("--survivors", action="store_true",
                    help="rerun only the last run's survivors, against the tests as they are now")
    ap.add_argument("--only", nargs="+", default=(), metavar="FUNCTION",
                    help="only the mutants of these functions (patterns: 'greedy_init', 'BackdoorProblem*_evaluate'); "
                         "for modules whose every mutant runs slow tests (attack: ~5 mutants a minute once the fast "
                         "ones are done)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"modules": {}, "survivors": []}
    for module in args.modules:  # the report is rewritten after each module (a long run can be stopped)
        summary, *rows = run_module(module, args.max_children, args.timeout, args.resume, args.survivors,
                                    args.collect, args.only)
        # re-read: another run (of another module) may have written the report since this one started
        report = json.loads(out.read_text()) if out.exists() else report
        report["modules"][module] = dict(counts=summary["counts"], tests=MODULES[module],
                                         **({} if args.collect else dict(minutes=round(summary["seconds"] / 60, 1))))
        report["survivors"] = [r for r in report["survivors"] if r["module"] != module] + rows
        lines = write_report(report, out)
    if not args.modules:
        lines = write_report(report, out)
    print("\n".join(lines[:4 + len(report["modules"])]))
    print(f"report: {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
