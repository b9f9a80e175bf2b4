"""The executed notebooks as a static website: ``python -m ntklib.book`` (``make book``).

Renders the executed notebooks of the last ``make figures`` (``build/notebooks/NN_*.ipynb``)
to HTML with nbconvert, figures embedded in the pages (no external files), and writes an
index page in the tour's order (the notebooks' numbers), each entry with the notebook's
title and the first sentence of its "What this shows" paragraph, under ``build/book/``.

Only what finished is published as a result: a notebook whose last run failed or was
interrupted (``NN_name.failed.ipynb`` from :mod:`ntklib.runner`) gets a page that opens with
a warning and is marked in the index; one that never finished (``NN_name.running.ipynb``
left by a killed run) or was never run is listed as not executed, without a page. The build
prints which.

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


FAILED_BANNER = ('<div style="border:2px solid #b00;background:#fee;padding:0.8em;margin:1em 0">'
                 "<b>This notebook did not finish in the last run</b> (it failed or was interrupted): its outputs "
                 "stop at the cell that failed, and its figures may be missing or stale. Run "
                 "<code>make figures</code> again.</div>")


def notebook_states(src) -> dict:
    """{notebook stem: (state, path)} of the executed copies in ``src``: ``"executed"``
    (``NN_name.ipynb``), ``"failed"`` (``NN_name.failed.ipynb``), ``"unfinished"``
    (``NN_name.running.ipynb``, a run killed before it could clean up); notebooks of the
    repository with none of these are ``"not run"`` (path None)."""
    from .runner import notebook_sources

    states = {p.stem: ("not run", None) for p in notebook_sources()}
    for state, pattern in (("unfinished", "*.running.ipynb"), ("failed", "*.failed.ipynb"), ("executed", "*.ipynb")):
        for p in Path(src).glob(f"[0-9][0-9]_{pattern}"):
            stem = p.name.split(".", 1)[0]
            if state == "executed" and p.name != f"{stem}.ipynb":  # .source/.failed/.running copies
                continue
            if state == "executed" or states.get(stem, ("not run",))[0] == "not run":
                states[stem] = (state, p)
    return dict(sorted(states.items()))


def build(src=None, out=None) -> Path:
    """Render every executed ``NN_*.ipynb`` in ``src`` (default ``build/notebooks``) into ``out``
    (default ``build/book``): one HTML page each and ``index.html``; failed runs get a page marked
    as such, unfinished and missing ones an index entry only. Returns the index path."""
    import nbformat
    from nbconvert import HTMLExporter

    src = _val.check_path(src if src is not None else ROOT / "build" / "notebooks", "src")
    out = _val.check_path(out if out is not None else ROOT / "build" / "book", "out", writable=True)
    if not src.is_dir():
        raise FileNotFoundError(f"src={str(src)!r} is not a folder of executed notebooks: run `make figures` (or "
                                "python -m ntklib.runner) first, or pass the folder they were written to")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; the book is a folder of pages: choose another path")
    states = notebook_states(src)
    if not any(state in ("executed", "failed") for state, _ in states.values()):
        raise FileNotFoundError(f"no executed notebooks in {src}: run `make figures` (or python -m ntklib.runner) "
                                "first; the book shows their outputs")
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    entries = []
    for stem, (state, p) in states.items():
        (out / f"{stem}.html").unlink(missing_ok=True)  # no page left over from an earlier build
        if state not in ("executed", "failed"):
            entries.append((stem, state, stem, ""))
            continue
        nb = nbformat.read(p, as_version=4)
        if state == "executed" and not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            raise ValueError(f"{p} has no outputs: the book needs executed notebooks (build/notebooks after "
                             "`make figures`), not the sources in notebooks/")
        body, _ = exporter.from_notebook_node(nb)
        if state == "failed":
            body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + FAILED_BANNER, body, count=1)
        (out / f"{stem}.html").write_text(body)
        entries.append((stem, state, *_summary(nb)))
    marks = {"failed": " <b style='color:#b00'>[failed in the last run]</b>",
             "unfinished": " <b style='color:#b00'>[not executed: the last run was cut off]</b>",
             "not run": " <i>[not executed yet: run <code>make figures</code>]</i>"}
    items = "\n".join(
        (f'<li><a href="{html.escape(stem)}.html"><b>{html.escape(title or stem)}</b></a>'
         if state in ("executed", "failed") else f"<li><b>{html.escape(stem)}</b>")
        + marks.get(state, "") + f"<br><span>{html.escape(summary)}</span></li>"
        for stem, state, title, summary in entries)
    left = {state: [stem for stem, (st, _) in states.items() if st == state] for state in marks}
    for state, stems in left.items():
        if stems:
            print(f"book: {state}: {', '.join(stems)}" + (" (page marked)" if state == "failed" else " (no page)"))
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
