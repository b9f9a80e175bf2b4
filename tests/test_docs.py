"""The reader's first page: the README stays short, shows the headline figure and the two
commands, and every document and figure it points to exists."""
import re
from pathlib import Path

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
