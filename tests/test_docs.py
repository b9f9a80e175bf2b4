"""The reader's first page: the README stays short, shows the headline figure and the two
commands, and every document and figure it points to exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_a_first_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 8 * 1024, f"README.md is {len(text.encode())} bytes; keep it under 8 kB"
    assert "make figures" in text and "make test" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((ROOT / p).is_file() for p in images), images
    assert text.index(images[0]) < text.index("make figures"), "the headline figure comes before the set-up"


def test_every_linked_document_exists():
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for link in re.findall(r"\]\(([^)#]+\.md)\)", doc.read_text()):
            assert (doc.parent / link).is_file(), f"{doc.name} links to {link}, which does not exist"


def test_the_design_notes_cited_by_the_code_exist():
    """Every "docs/design.md, section N" in the library, tests and assignments names a section that exists."""
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text(), re.M))
    cited = []
    for path in [*ROOT.glob("ntklib/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py")]:
        cited += [(path.name, n) for n in re.findall(r"docs/design\.md`{0,2},\s+section\s+(\d+)", path.read_text())]
    assert len(cited) >= 10, cited
    missing = [(f, n) for f, n in cited if n not in sections]
    assert not missing, f"cited sections missing from docs/design.md: {missing}"


# ---------------------------------------------------------------------------- the documentation site's sources
def test_book_stages_the_sources_of_notebooks_not_run_yet(tmp_path):
    """Before any `make figures`: every notebook gets a page from its committed source, without
    outputs, saying how to produce them; a failed run is shown under a warning; the "ntklib used"
    names become links into the API reference, and each module's page lists its notebooks."""
    jupytext = pytest.importorskip("jupytext", reason="the book needs the Jupyter stack (make test has it)")
    import nbformat

    from ntklib import book

    src = tmp_path / "executed"
    src.mkdir()
    failed = jupytext.read(ROOT / "notebooks" / "02_backdoor_loss.py")
    nbformat.write(failed, src / "02_backdoor_loss.failed.ipynb")
    states = book.stage(src, tmp_path / "stage")
    assert states["02_backdoor_loss"] == "failed" and states["03_greedy_initialization"] == "not run"
    nb = nbformat.read(tmp_path / "stage" / "notebooks" / "03_greedy_initialization.ipynb", as_version=4)
    assert "Not executed yet" in nb.cells[1].source and "ntklib.runner 03" in nb.cells[1].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "{py:obj}`attack.greedy_init <ntklib.greedy.greedy_init>`" in nb.cells[0].source  # re-export: its home
    assert "did not finish" in nbformat.read(tmp_path / "stage" / "notebooks" / "02_backdoor_loss.ipynb",
                                             as_version=4).cells[1].source
    greedy = (tmp_path / "stage" / "api" / "greedy.rst").read_text()
    assert ".. automodule:: ntklib.greedy" in greedy
    assert ":doc:`../notebooks/03_greedy_initialization`: ``attack.score_candidates``, ``attack.greedy_init``" \
        in greedy  # the page of the module that defines them, and the facade's
    assert ":doc:`../notebooks/03_greedy_initialization`" in (tmp_path / "stage" / "api" / "attack.rst").read_text()
    index = (tmp_path / "stage" / "index.md").read_text()
    assert "](docs/setup.md)" in index and "docs/results.md#status" not in index.replace("](docs/results.md#", "")
    assert "notebooks/09_reconstruction" in index and "api/index" in index
    # links to repository files the site does not carry are shown as paths, never as broken links
    assert "](ntklib/params.py)" not in index


def test_book_shows_docstring_equations_preformatted():
    """A plain-text equation block under a paragraph becomes a literal block; blocks that
    reStructuredText already reads (after ``::``, a directive, a list item's text) are left alone."""
    from ntklib.book import literal_equations

    def run(text):
        lines = text.split("\n")
        literal_equations(None, "module", "m", None, {}, lines)
        return "\n".join(lines)

    block = "    L = a + b\n    M = c\n\nafter"
    assert run("the loss is\n\n" + block) == "the loss is\n\n::\n\n" + block
    for kept in ("the loss is::\n\n    L = a + b", ".. math::\n\n    L = a", "- an item\n\n  its second paragraph",
                 "Args:\n    x: the input", "text\n\n    - a nested list"):
        assert run(kept) == kept, kept
    assert run("- item::\n\n      f(x) = 1\n\n  with") == "- item::\n\n      f(x) = 1\n\n  with"
    assert run("- item,\n\n      f(x) = 1") == "- item,\n\n  ::\n\n      f(x) = 1"


def test_every_name_a_notebook_says_it_uses_is_public_and_documented():
    """Each name of a notebook's "ntklib used" list exists, is in its defining module's ``__all__``
    (the API reference documents ``__all__``) and has a docstring, so the notebook's link lands on it."""
    import importlib

    from ntklib import book

    uses = book.notebook_uses()
    assert all(uses.values()) and len(uses) == 9, uses
    for stem, names in uses.items():
        for module, name in names:
            target = book.api_target(module, name)
            assert target, f"{stem}: {module}.{name} does not exist"
            home, attr = target.split(".")[1], target.split(".")[2]
            mod = importlib.import_module(f"ntklib.{home}")
            assert attr in mod.__all__, f"{stem}: {module}.{name} is not in ntklib.{home}.__all__"
            src = (ROOT / "ntklib" / f"{home}.py").read_text()
            obj = getattr(mod, attr)
            documented = (callable(obj) and obj.__doc__) or re.search(rf"^{attr}\s*=[^\n]*(\n[ )\]}}].*)*\n\"\"\"",
                                                                         src, re.M)
            assert documented, f"{stem}: {target} has no docstring"


def test_book_reports_a_missing_figure(tmp_path):
    """A docs page that links to a figure nobody made is a broken link Sphinx reports (and the
    strict build refuses), never silently dropped."""
    pytest.importorskip("jupytext", reason="the book needs the Jupyter stack (make test has it)")
    from ntklib import book

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# R\n\n[figure](../figures/05_transfer_to_networks/nowhere.png) and "
                                     "[the headline](../figures/05_transfer_to_networks/headline_asr_vs_budget.png)\n")
    book.stage(tmp_path / "none", tmp_path / "stage", docs_dir=docs)
    page = (tmp_path / "stage" / "docs" / "results.md").read_text()
    assert "](../figures/05_transfer_to_networks/nowhere.png)" in page
    assert not (tmp_path / "stage" / "figures" / "05_transfer_to_networks" / "nowhere.png").exists()
    assert (tmp_path / "stage" / "figures" / "05_transfer_to_networks" / "headline_asr_vs_budget.png").is_file()
