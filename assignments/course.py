"""The course's assignments with nbgrader: release the student versions, autograde submissions.

    python assignments/course.py release              # nbgrader generate_assignment for every source/*
    python assignments/course.py grade DIR            # autograde the notebooks in DIR/<student>/<assignment>/

nbgrader runs from this folder (``nbgrader_config.py``); the jupytext sources (``*.py``) hold the
solutions and are never released. Used by ``make assignments`` and ``tests/test_assignments.py``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _nbgrader(course: Path, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def assignments(course: Path = HERE) -> list[str]:
    """The assignments of the course: the folders under source/."""
    return sorted(p.name for p in (course / "source").iterdir() if p.is_dir())


def release(course: Path = HERE) -> Path:
    """Student versions of every assignment into ``<course>/release/`` (solutions and hidden tests removed)."""
    for a in assignments(course):
        _nbgrader(course, "generate_assignment", a, "--force")
    return course / "release"


def grade(course: Path, submissions: Path) -> dict:
    """Autograde ``submissions/<student>/<assignment>/*.ipynb``; returns {(student, assignment): (score, max)}."""
    from nbgrader.api import Gradebook

    target = course / "submitted"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(submissions, target)
    done = sorted({p.parent.name for p in target.glob("*/*/*.ipynb")})
    for a in done:
        _nbgrader(course, "autograde", a, "--force")
    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for p in sorted(target.glob("*/*")):
            sub = gb.find_submission(p.name, p.parent.name)
            scores[(p.parent.name, p.name)] = (sub.score, sub.max_score)
    return scores


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["release", "grade"])
    ap.add_argument("submissions", nargs="?", help="grade: a folder <student>/<assignment>/<notebook>.ipynb")
    args = ap.parse_args(argv)
    if args.what == "release":
        print("student versions in", release())
        return 0
    if not args.submissions:
        ap.error("grade needs the folder of submissions")
    for (student, a), (score, top) in grade(HERE, Path(args.submissions).resolve()).items():
        print(f"{student:20s} {a:30s} {score:5.1f} / {top:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
