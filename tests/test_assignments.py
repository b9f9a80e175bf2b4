"""The course assignments (nbgrader): the student versions are generated, the solutions get full
marks and the unanswered student versions zero on the autograded parts, without a crash; grading
never loses a submission, and a notebook that cannot be graded is reported while the rest are graded."""
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "assignments"))
import course  # noqa: E402


def _course(tmp_path, only=None):
    """A copy of the course (its first assignment ``only`` when given: nbgrader then releases one, not four)."""
    work = tmp_path / "course"
    shutil.copytree(ROOT / "assignments", work, ignore=shutil.ignore_patterns("release", "submitted", "autograded",
                                                                                "feedback", "gradebook.db"))
    if only:
        for extra in course.assignments(work)[only:]:
            shutil.rmtree(work / "source" / extra)
    return work


@pytest.mark.slow
def test_solutions_get_full_marks_and_blank_versions_zero(tmp_path):
    work = _course(tmp_path)
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
        g = scores[("solution", a)]
        assert g.error is None and g.max_score > 0 and g.score == g.max_score, f"{a}: the solution scored {g}"
        assert scores[("blank", a)].score == 0, f"{a}: an unanswered notebook scored points"


@pytest.mark.slow
def test_grading_loses_no_submission_and_reports_the_ungradable(tmp_path):
    """Grading the collect folder itself keeps it; a second folder adds to it (an earlier, different copy
    of the same submission is moved aside, not deleted); a damaged notebook is reported by student and
    cause while the others are graded."""
    work = _course(tmp_path, only=1)
    a = course.assignments(work)[0]
    nb = next((work / "source" / a).glob("*.ipynb"))
    collect = work / "submitted"
    (collect / "ann" / a).mkdir(parents=True)
    shutil.copy(nb, collect / "ann" / a / nb.name)
    (collect / "bob" / a).mkdir(parents=True)
    (collect / "bob" / a / nb.name).write_text("{ this is not a notebook")
    before = {p.relative_to(collect): p.read_bytes() for p in collect.rglob("*") if p.is_file()}
    assert "never released" in course.grade(work, collect)[("ann", a)].error
    course.release(work)
    grades = course.grade(work, collect)  # nbgrader's own collect folder, graded where it is
    assert {p.relative_to(collect): p.read_bytes() for p in collect.rglob("*") if p.is_file()} == before
    assert grades[("ann", a)].error is None and grades[("ann", a)].score == grades[("ann", a)].max_score
    assert grades[("bob", a)].score is None and grades[("bob", a)].error
    # a second batch: ann resubmits (a different file; damaged, so that only cid's is executed), cid is new;
    # bob's earlier copy stays
    more = tmp_path / "more"
    (more / "ann" / a).mkdir(parents=True)
    (more / "ann" / a / nb.name).write_text("{ not a notebook either")
    (more / "cid" / a).mkdir(parents=True)
    shutil.copy(nb, more / "cid" / a / nb.name)
    grades = course.grade(work, more)
    assert set(grades) == {("ann", a), ("cid", a)}
    assert (collect / "bob" / a / nb.name).read_text() == "{ this is not a notebook"
    kept = list((work / "submitted.replaced").glob(f"*/ann/{a}/{nb.name}"))
    assert len(kept) == 1 and kept[0].read_bytes() == before[Path("ann") / a / nb.name]


def test_grading_refuses_folders_that_nest_and_empty_ones(tmp_path):
    work = _course(tmp_path)
    (work / "submitted" / "ann").mkdir(parents=True)
    with pytest.raises(ValueError, match="lie inside one another"):
        course.grade(work, work / "submitted" / "ann")
    with pytest.raises(ValueError, match="lie inside one another"):
        course.grade(work, work)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        course.grade(work, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no notebook in nbgrader's layout"):
        course.grade(work, tmp_path / "empty")
    assert course.main(["grade", str(tmp_path / "empty")]) == 2


def test_release_refuses_an_empty_source(tmp_path):
    (tmp_path / "source").mkdir()
    with pytest.raises(ValueError, match="holds no assignment folder; nothing would be released"):
        course.release(tmp_path)
    (tmp_path / "source" / "01_x").mkdir()
    with pytest.raises(ValueError, match=r"the assignments \['01_x'\] hold no notebook"):
        course.release(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        course.release(tmp_path / "nothing")
