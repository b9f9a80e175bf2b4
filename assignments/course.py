"""The course's assignments with nbgrader: release the student versions, autograde submissions.

    python assignments/course.py release              # nbgrader generate_assignment for every source/*
    python assignments/course.py grade DIR            # autograde the notebooks in DIR/<student>/<assignment>/

nbgrader runs from this folder (``nbgrader_config.py``); the jupytext sources (``*.py``) hold the
solutions and are never released. Used by ``make assignments`` and ``tests/test_assignments.py``.

Nothing a student handed in is ever deleted or overwritten: ``grade`` copies DIR into nbgrader's
collect folder ``submitted/`` (DIR may be that folder itself: it is then graded where it is); an
earlier copy of the same student's assignment that differs is moved to ``submitted.replaced/<time>/``
first, and other students already collected stay. A notebook that cannot be graded is reported with
its student and cause, and the others are still graded.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent


class Grade(NamedTuple):
    """One submission's autograded score; ``error`` says why it has none (score and max_score None)."""

    score: float | None
    max_score: float | None
    error: str | None = None


def _env() -> dict:
    """The environment with this Python's scripts first on PATH (nbgrader starts alembic from there)."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@contextlib.contextmanager
def _gradebook(course: Path):
    from nbgrader.api import Gradebook

    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = _env()["PATH"]
    try:
        with Gradebook(f"sqlite:///{Path(course) / 'gradebook.db'}") as gb:
            yield gb
    finally:
        os.environ["PATH"] = saved


# One process runs every nbgrader step of a call through nbgrader's Python API (its start-up, ~7 s, is
# paid once instead of once per notebook); each step still succeeds or fails on its own.
_DRIVER = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
from nbgrader.apps import NbGraderAPI
api = NbGraderAPI(config=PyFileConfigLoader("nbgrader_config.py", path=".").load_config())
out = []
for op, args in json.load(sys.stdin):
    r = getattr(api, op)(*args, force=True)
    out.append(dict(success=bool(r["success"]), error=r.get("error") or "", log=r.get("log") or ""))
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def _nbgrader(course: Path, steps: list[tuple[str, tuple]]) -> list[str | None]:
    """Run nbgrader API steps, ``("generate_assignment", (a,))`` or ``("autograde", (a, student))``,
    in one process from the course folder; returns for each step None (done) or why it failed (the
    last lines of nbgrader's traceback and log)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        r = subprocess.run([sys.executable, "-c", _DRIVER, str(result)], cwd=course, env=_env(),
                           input=json.dumps(steps), capture_output=True, text=True)
        if r.returncode != 0 or not result.exists():
            raise RuntimeError(f"nbgrader could not run (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        out = json.loads(result.read_text())
    errors = []
    for res in out:
        if res["success"]:
            errors.append(None)
            continue
        lines = [ln for ln in (res["log"] + "\n" + res["error"]).splitlines() if ln.strip()]
        errors.append(" | ".join(lines[-3:])[-400:])
    return errors


def assignments(course: Path = HERE) -> list[str]:
    """The assignments of the course: the folders under source/."""
    source = Path(course) / "source"
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder; a course keeps each assignment's notebooks in "
                                "source/<assignment>/ (nbgrader's layout)")
    return sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))


def release(course: Path = HERE) -> Path:
    """Student versions of every assignment into ``<course>/release/`` (solutions and hidden tests removed)."""
    names = assignments(course)
    empty = [a for a in names if not list((Path(course) / "source" / a).glob("*.ipynb"))]
    if not names or empty:
        what = f"the assignments {empty} hold no notebook" if names else "it holds no assignment folder"
        raise ValueError(f"{Path(course) / 'source'}: {what}; nothing would be released. Put each assignment's "
                         "notebooks in source/<assignment>/*.ipynb (`make notebooks` writes them from the .py sources)")
    errors = _nbgrader(course, [("generate_assignment", (a,)) for a in names])
    failed = {a: e for a, e in zip(names, errors, strict=True) if e}
    if failed:
        raise RuntimeError(f"nbgrader generate_assignment failed: {failed}")
    return Path(course) / "release"


def _inside(a: Path, b: Path) -> bool:
    """Is ``a`` the folder ``b`` or inside it?"""
    return a == b or b in a.parents


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _collect(course: Path, submissions: Path) -> list[tuple[str, str]]:
    """Copy ``submissions/<student>/<assignment>/`` into ``<course>/submitted/`` without losing anything;
    returns the (student, assignment) pairs given. Refused (before anything is copied) when the folders
    nest, when ``submissions`` is missing or holds no notebook in nbgrader's layout."""
    submissions = Path(submissions).resolve()
    target = (Path(course) / "submitted").resolve()
    if not submissions.is_dir():
        what = "is a file, not a folder" if submissions.exists() else "no such folder"
        raise FileNotFoundError(f"submissions={str(submissions)!r}: {what}; give the folder that holds "
                                "<student>/<assignment>/<notebook>.ipynb")
    if submissions != target and (_inside(submissions, target) or _inside(target, submissions)):
        raise ValueError(f"submissions={str(submissions)!r} and the collect folder {target} lie inside one another: "
                         "copying one into the other could overwrite what it copies. Give the collect folder "
                         f"itself ({target}, graded where it is) or a folder outside it")
    pairs = sorted({(p.parent.parent.name, p.parent.name) for p in submissions.glob("*/*/*.ipynb")})
    if not pairs:
        raise ValueError(f"submissions={str(submissions)!r} holds no notebook in nbgrader's layout "
                         "<student>/<assignment>/<notebook>.ipynb; nothing to grade")
    if submissions == target:
        return pairs
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for student, a in pairs:
        src, dst = submissions / student / a, target / student / a
        if dst.exists():
            if _same_tree(src, dst):
                continue
            keep = Path(course).resolve() / "submitted.replaced" / stamp / student / a
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(dst), str(keep))
            print(f"note: the earlier copy of {student}/{a} in {target} differs; it was moved to {keep}",
                  file=sys.stderr)
        tmp = dst.with_name(f".{a}.incoming-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)  # only a half copy of this very process can be there
        shutil.copytree(src, tmp)
        os.replace(tmp, dst)
    return pairs


def grade(course: Path, submissions: Path) -> dict:
    """Autograde ``submissions/<student>/<assignment>/*.ipynb``; returns {(student, assignment): Grade}.

    A submission of an assignment the course does not have, or one nbgrader cannot grade (a notebook
    that is not valid JSON, a kernel that dies), gets ``Grade(None, None, cause)``; the rest are graded."""
    from nbgrader.api import MissingEntry

    course = Path(course)
    known = set(assignments(course))
    pairs = _collect(course, submissions)
    with _gradebook(course) as gb:
        released = {x.name for x in gb.assignments}
    out: dict = {}
    for student, a in pairs:
        if a not in known:
            out[(student, a)] = Grade(None, None, f"the course has no assignment {a!r} (it has {sorted(known)})")
        elif a not in released:
            out[(student, a)] = Grade(None, None, f"{a!r} was never released, so nbgrader has no answer key: run "
                                                  "`python assignments/course.py release` first")
    todo = [(student, a) for student, a in pairs if (student, a) not in out]
    steps = [("autograde", (a, student)) for student, a in todo]
    for (student, a), error in zip(todo, _nbgrader(course, steps) if steps else [], strict=True):
        if error:
            out[(student, a)] = Grade(None, None, error)
    with _gradebook(course) as gb:
        for student, a in pairs:
            if (student, a) in out:
                continue
            try:
                sub = gb.find_submission(a, student)
                out[(student, a)] = Grade(sub.score, sub.max_score)
            except MissingEntry:
                out[(student, a)] = Grade(None, None, "nbgrader graded nothing: is the notebook named as in "
                                                      "the release?")
    return dict(sorted(out.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["release", "grade"])
    ap.add_argument("submissions", nargs="?", help="grade: a folder <student>/<assignment>/<notebook>.ipynb")
    args = ap.parse_args(argv)
    try:
        if args.what == "release":
            print("student versions in", release())
            return 0
        if not args.submissions:
            ap.error("grade needs the folder of submissions")
        grades = grade(HERE, Path(args.submissions))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (student, a), g in grades.items():
        if g.error is None:
            print(f"{student:20s} {a:30s} {g.score:5.1f} / {g.max_score:.0f}")
        else:
            print(f"{student:20s} {a:30s} not graded: {g.error}")
    return 1 if any(g.error for g in grades.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
