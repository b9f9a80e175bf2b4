"""The course assignments (nbgrader): the student versions are generated, the solutions get full
marks and the unanswered student versions zero on the autograded parts, without a crash."""
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "assignments"))
import course  # noqa: E402


@pytest.mark.slow
def test_solutions_get_full_marks_and_blank_versions_zero(tmp_path):
    work = tmp_path / "course"
    shutil.copytree(ROOT / "assignments", work, ignore=shutil.ignore_patterns("release", "submitted", "autograded",
                                                                                "feedback", "gradebook.db"))
    names = course.assignments(work)
    assert len(names) >= 1
    release = course.release(work)
    subs = tmp_path / "subs"
    for a in names:
        for nb in (work / "source" / a).glob("*.ipynb"):
            released = release / a / nb.name
            assert released.exists()
            text = released.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
            (subs / "solution" / a).mkdir(parents=True, exist_ok=True)
            (subs / "blank" / a).mkdir(parents=True, exist_ok=True)
            shutil.copy(nb, subs / "solution" / a / nb.name)
            shutil.copy(released, subs / "blank" / a / nb.name)
    scores = course.grade(work, subs)
    for a in names:
        score, top = scores[("solution", a)]
        assert top > 0 and score == top, f"{a}: the solution scored {score} of {top}"
        assert scores[("blank", a)][0] == 0, f"{a}: an unanswered notebook scored points"
