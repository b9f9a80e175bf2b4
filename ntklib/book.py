"""The executed notebooks as a static website: ``python -m ntklib.book`` (``make book``).

Renders the executed notebooks of the last ``make figures`` (``build/notebooks/NN_*.ipynb``)
to HTML with nbconvert, figures embedded in the pages (no external files), and writes an
index page in the tour's order (the notebooks' numbers), each entry with the notebook's
title and the first sentence of its "What this shows" paragraph, under ``build/book/``.

nbconvert rather than a book tool: it ships with JupyterLab (already pinned here, nothing
new to install), works offline, and keeps each page exactly what the notebook showed.
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from . import validation as _val

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["build", "main"]


def _summary(nb) -> tuple[str, str]:
    """(title, first sentence of "What this shows") of a notebook's first markdown cell."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("#")), "")
    m = re.search(r"\*\*What this shows\.\*\*\s*(.+?\.)(\s|$)", first, re.S)
    return title, " ".join(m.group(1).split()) if m else ""


def build(src=None, out=None) -> Path:
    """Render every executed ``NN_*.ipynb`` in ``src`` (default ``build/notebooks``) into ``out``
    (default ``build/book``): one HTML page each and ``index.html``. Returns the index path."""
    import nbformat
    from nbconvert import HTMLExporter

    src = _val.check_path(src if src is not None else ROOT / "build" / "notebooks", "src")
    out = _val.check_path(out if out is not None else ROOT / "build" / "book", "out", writable=True)
    pages = sorted(p for p in src.glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".source.ipynb"))
    if not pages:
        raise FileNotFoundError(f"no executed notebooks in {src}: run `make figures` (or python -m ntklib.runner) "
                                "first; the book shows their outputs")
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    entries = []
    for p in pages:
        nb = nbformat.read(p, as_version=4)
        if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            raise ValueError(f"{p} has no outputs: the book needs executed notebooks (build/notebooks after "
                             "`make figures`), not the sources in notebooks/")
        body, _ = exporter.from_notebook_node(nb)
        (out / f"{p.stem}.html").write_text(body)
        entries.append((p.stem, *_summary(nb)))
    items = "\n".join(f'<li><a href="{html.escape(stem)}.html"><b>{html.escape(title or stem)}</b></a>'
                      f"<br><span>{html.escape(summary)}</span></li>" for stem, title, summary in entries)
    index = out / "index.html"
    index.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ntk-backdoor: the notebooks, executed</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.4}}li{{margin:0.8em 0}}
span{{color:#444}}</style></head>
<body><h1>ntk-backdoor: the notebooks, executed</h1>
<p>Few-shot backdoor attacks designed with neural tangent kernels (NTBA, Hayase &amp; Oh, ICLR 2023), and the
same kernels applied to neighbouring questions. Each page is a notebook as the last run executed it.</p>
<ol>
{items}
</ol></body></html>
""")
    return index


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=None, help="executed notebooks (default build/notebooks)")
    ap.add_argument("--out", default=None, help="the site (default build/book)")
    args = ap.parse_args(argv)
    try:
        index = build(args.src, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"book written: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
