"""The documentation site: ``python -m ntklib.book`` (``make book``).

A Sphinx site (MyST-NB pages, the book theme) under ``build/book/``, readable without running
anything and without a network:

- the tour (the README, in its order) and the docs pages (``docs/*.md``);
- the nine notebooks as the last ``make figures`` executed them (``build/notebooks/NN_*.ipynb``;
  MyST-NB's execution is off, so nothing runs twice). A notebook that was never run, or whose
  last run was cut off, gets its committed source without outputs and a note saying how to
  produce them; one whose last run failed (``NN_name.failed.ipynb`` from :mod:`ntklib.runner`)
  is shown as it stopped, under a warning;
- an API reference generated from ``ntklib``'s docstrings (autodoc), one page per module, each
  listing the notebooks that call it; the notebooks' "ntklib used" lists link to it;
- math typeset by a copy of MathJax 3 served from the site itself (``sphinx-mathjax-offline``),
  and Sphinx's search, which works from ``file://`` and from ``python -m http.server``.

What a reader sees is the science: the notebooks' stderr streams (progress bars, library
warnings) are left out of the pages.

The site's sources are staged under ``build/book_src/`` (regenerated at every build: nothing
there is to be edited) and built with warnings as errors when ``strict=True`` (CI: broken
references, missing figures, malformed docstrings).

Cost: about a minute on 2 cores (autodoc imports the package once; no notebook runs).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import shutil
import sys
from pathlib import Path

from . import validation as _val

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["build", "stage", "notebook_states", "api_modules", "api_target", "notebook_uses", "literal_equations",
           "main"]

# the docs pages, in the order of the site's navigation
DOC_PAGES = ("setup", "library", "design", "results", "teaching")

FAILED_NOTE = ("```{warning}\n**This notebook did not finish in the last run** (it failed or was interrupted): its "
               "outputs stop at the cell that failed, and its figures may be missing or stale. Run `make figures` "
               "again.\n```")
NOT_RUN_NOTE = ("```{note}\n**Not executed yet**: this page shows the notebook's source without outputs. "
                "`make figures` (or `python -m ntklib.runner {num}`) executes it into `build/notebooks/`, and "
                "`make book` then shows its outputs and figures here.\n```")


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


# ---------------------------------------------------------------------------- what the API pages hold
def api_modules() -> list[str]:
    """The public modules of ``ntklib`` (one API page each), in the package's own order."""
    import ntklib

    first = [m for m in ntklib.__all__ if not m.startswith("_")]
    return first + sorted(p.stem for p in (ROOT / "ntklib").glob("*.py")
                          if not p.stem.startswith("_") and p.stem not in first)


_USED = re.compile(r"\*\*ntklib used:\*\*(.*?)(?:\n\s*\n|$)", re.S)
_NAME = re.compile(r"`([a-z_]+)\.([A-Za-z_][A-Za-z_0-9.]*)`")


def api_target(module: str, name: str) -> str | None:
    """The documented home of ``ntklib.<module>.<name>`` (``attack.greedy_init`` ->
    ``ntklib.greedy.greedy_init``: re-exports point at the defining module), or None."""
    try:
        obj = importlib.import_module(f"ntklib.{module}")
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    home = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if home and qual and home.startswith("ntklib.") and (inspect.isclass(obj) or callable(obj)):
        return f"{home}.{qual}"
    # data: documented where it is assigned, not where it is re-exported (``X = _other.X``)
    last = name.split(".")[-1]
    for mod in [module] + api_modules():
        source = (ROOT / "ntklib" / f"{mod}.py").read_text()
        if re.search(rf"^{last}\s*(:[^=\n]*)?=(?!\s*_\w+\.{last}\b)", source, re.M):
            return f"ntklib.{mod}.{name}"
    return f"ntklib.{module}.{name}"


def notebook_uses(notebooks_dir=None) -> dict:
    """{notebook stem: [(module, name), ...]}: the names each notebook's "ntklib used" list gives."""
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else ROOT / "notebooks"
    out = {}
    for p in sorted(notebooks_dir.glob("[0-9][0-9]_*.py")):
        m = _USED.search("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                   for line in p.read_text().splitlines()))
        out[p.stem] = _NAME.findall(m.group(1)) if m else []
    return out


# ---------------------------------------------------------------------------- staging the sources
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _rewrite_links(text: str, origin: Path, here: Path, stage_dir: Path, pages: dict) -> str:
    """Markdown links of a repository file (``origin``) rewritten for its staged copy (``here``):
    links to the README, docs pages and notebooks point at their pages; figures and other files
    of ``figures/`` are copied into the site (a missing one is left as a broken link, which Sphinx
    reports); links to other repository files (sources, parameter
    files) become their path in code, since the site does not carry them."""
    def sub(m):
        bang, label, target = m.groups()
        if re.match(r"^[a-z]+:|^#", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        repo = (origin.parent / path).resolve()
        try:
            rel = repo.relative_to(ROOT)
        except ValueError:
            return m.group(0)
        key = rel.with_suffix("") if rel.suffix in (".md", ".ipynb", ".py") else rel
        if str(key) in pages:
            dest = stage_dir / pages[str(key)]
        elif rel.parts and rel.parts[0] == "figures":
            dest = stage_dir / rel  # a missing figure stays a link to nowhere: Sphinx warns (strict: fails)
            if repo.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo, dest)
        else:
            return f"{label} (`{rel}`)" if label and label.strip("`") != str(rel) else f"`{rel}`"
        new = os.path.relpath(dest, here.parent) + (f"#{anchor}" if anchor else "")
        return f"{bang}[{label}]({new})"

    return _LINK.sub(sub, text)


def _noise(output) -> bool:
    """A stderr stream (progress bars, library warnings) or a widget (tqdm's progress bar in a
    kernel with ipywidgets, which would also make the page load widget scripts from a CDN)."""
    return (output.get("output_type") == "stream" and output.get("name") == "stderr") or \
        "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def _clean_outputs(nb) -> None:
    """Drop the noise of every code cell (:func:`_noise`) and the notebook's widget state: the
    page shows results."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _noise(o)]


def _link_used(source: str, module_pages: set) -> str:
    """The "ntklib used" list of a notebook's first cell with each name linked to its API entry."""
    def link(m):
        module, name = m.groups()
        if module not in module_pages:
            return m.group(0)
        target = api_target(module, name)
        return f"{{py:obj}}`{module}.{name} <{target}>`" if target else m.group(0)

    def section(m):
        return m.group(0).replace(m.group(1), _NAME.sub(link, m.group(1)))

    return _USED.sub(section, source)


def stage(src, stage_dir, docs_dir=None, notebooks_dir=None, readme=None) -> dict:
    """Write the site's sources into ``stage_dir`` (emptied first): ``index.md`` (the README),
    ``docs/*.md``, ``notebooks/NN_name.ipynb`` (executed copies from ``src``, or the sources of
    those not run) and ``api/*.rst``. Returns {notebook stem: state} (see :func:`notebook_states`)."""
    import jupytext
    import nbformat

    docs_dir = Path(docs_dir) if docs_dir is not None else ROOT / "docs"
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else ROOT / "notebooks"
    readme = Path(readme) if readme is not None else ROOT / "README.md"
    stage_dir = Path(stage_dir)
    shutil.rmtree(stage_dir, ignore_errors=True)
    (stage_dir / "notebooks").mkdir(parents=True)
    (stage_dir / "docs").mkdir()
    (stage_dir / "api").mkdir()
    states = notebook_states(src)
    modules = api_modules()
    pages = {"README": "index.md"}
    pages.update({f"docs/{p.stem}": f"docs/{p.stem}.md" for p in docs_dir.glob("*.md")})
    pages.update({f"notebooks/{stem}": f"notebooks/{stem}.ipynb" for stem in states})

    # notebooks: executed copies (stderr left out) or the committed sources with a note
    for stem, (state, path) in states.items():
        if state in ("executed", "failed"):
            nb = nbformat.read(path, as_version=4)
        else:
            nb = jupytext.read(notebooks_dir / f"{stem}.py")
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
        _clean_outputs(nb)
        for cell in nb.cells:  # papermill's injected parameters: paths as the repository names them
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.source = cell.source.replace(str(ROOT) + os.sep, "")
        first = next(c for c in nb.cells if c.cell_type == "markdown")
        first.source = _link_used(first.source, set(modules))
        note = {"failed": FAILED_NOTE, "unfinished": NOT_RUN_NOTE, "not run": NOT_RUN_NOTE}.get(state)
        if note:
            nb.cells.insert(1, nbformat.v4.new_markdown_cell(note.replace("{num}", stem[:2])))
        nb.metadata.pop("papermill", None)
        nbformat.write(nb, stage_dir / "notebooks" / f"{stem}.ipynb")

    # the tour and the docs pages, their links made the site's
    text = _rewrite_links(readme.read_text(), readme, stage_dir / "index.md", stage_dir, pages)
    docs = [p for p in DOC_PAGES if (docs_dir / f"{p}.md").exists()] + sorted(
        p.stem for p in docs_dir.glob("*.md") if p.stem not in DOC_PAGES)
    toc = ["", "```{toctree}", ":hidden:", ":caption: Notebooks", ""] + [f"notebooks/{s}" for s in states] + [
        "```", "", "```{toctree}", ":hidden:", ":caption: Documentation", ""] + [f"docs/{d}" for d in docs] + [
        "```", "", "```{toctree}", ":hidden:", ":caption: API reference", "", "api/index", "```", ""]
    (stage_dir / "index.md").write_text(text.rstrip() + "\n" + "\n".join(toc))
    for d in docs:
        here = stage_dir / "docs" / f"{d}.md"
        here.write_text(_rewrite_links((docs_dir / f"{d}.md").read_text(), docs_dir / f"{d}.md", here, stage_dir,
                                       pages))

    # the API reference: one page per module, with the notebooks that call it
    uses = notebook_uses(notebooks_dir)
    homes = {(module, name): (api_target(module, name) or "").split(".")[1:2] for names in uses.values()
             for module, name in names}
    for mod in modules:
        callers = {}  # on the page of the module named and of the one that defines it (attack -> greedy)
        for stem, names in uses.items():
            for module, name in names:
                if mod == module or [mod] == homes[(module, name)]:
                    callers.setdefault(stem, []).append(f"``{module}.{name}``")
        back = "" if not callers else "\nUsed in the notebooks\n---------------------\n\n" + "".join(
            f"- :doc:`../notebooks/{stem}`: {', '.join(names)}\n" for stem, names in callers.items())
        title = f"ntklib.{mod}"
        (stage_dir / "api" / f"{mod}.rst").write_text(
            f"{title}\n{'=' * len(title)}\n\n.. automodule:: ntklib.{mod}\n   :members:\n\n{back}")
    (stage_dir / "api" / "index.rst").write_text(
        "API reference\n=============\n\nGenerated from the docstrings of ``ntklib``: each module states its "
        "equations, shapes, costs and the paper (with the section) it follows. The layers are described in "
        ":doc:`../docs/library`.\n\n.. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   {m}\n" for m in modules))
    (stage_dir / "conf.py").write_text(CONF)
    return {stem: state for stem, (state, _) in states.items()}


def literal_equations(app, what, name, obj, options, lines):
    """Sphinx ``autodoc-process-docstring`` hook: the docstrings' display equations, written as an
    indented block under a paragraph (plain text that reads well in ``help()``), are shown as
    preformatted text, line breaks and alignment kept. A block is left alone where reStructuredText
    already gives it a meaning: after ``::`` or a directive (``.. math::``), in a field or under a
    list item's own indentation, or when it is a list, a directive or a doctest itself."""
    def indent(s):
        return len(s) - len(s.lstrip())

    out = []
    for line in lines:
        if line.strip() and out and not out[-1].strip():  # a block's first line, after a blank one
            j = len(out) - 1
            while j >= 0 and not out[j].strip():
                j -= 1
            start = j
            while start > 0 and out[start - 1].strip():
                start -= 1
            if j >= 0:
                head = out[start].lstrip()
                base = indent(out[start]) + (2 if re.match(r"[-*] |\d+[.)] ", head) else 0)
                markup = re.match(r"(\.\. |:|[-*] |>>>|\d+[.)] )", line.lstrip())
                if (indent(line) > base and not out[j].rstrip().endswith("::") and not head.startswith((".. ", ":"))
                        and not markup):
                    out[-1:] = ["", " " * base + "::", ""]
        out.append(line)
    lines[:] = out


CONF = '''# generated by ntklib.book: edits are overwritten at the next build
project = "ntk-backdoor"
author = "the ntk-backdoor authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx-mathjax-offline"]
nb_execution_mode = "off"          # the pages show the outputs of the last `make figures`
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "sphinx_book_theme"
html_title = "ntk-backdoor"
highlight_language = "none"        # literal blocks are docstring equations, not code (code fences name theirs)
html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
html_show_sourcelink = False
html_copy_source = False
autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]
napoleon_use_ivar = True           # Attributes: as fields (autodoc documents the dataclass fields too)


def setup(app):
    from ntklib.book import literal_equations

    app.connect("autodoc-process-docstring", literal_equations)
'''


def build(src=None, out=None, strict: bool = False, quiet: bool = True) -> Path:
    """Stage the site's sources (:func:`stage`) next to ``out`` and build them with Sphinx into
    ``out`` (default ``build/book``); ``src``: the executed notebooks (default ``build/notebooks``).
    ``strict=True`` turns Sphinx's warnings into errors (CI). Returns the index page's path."""
    from sphinx.cmd.build import build_main

    src = _val.check_path(src if src is not None else ROOT / "build" / "notebooks", "src")
    out = _val.check_path(out if out is not None else ROOT / "build" / "book", "out", writable=True)
    strict = _val.check_bool(strict, "strict")
    if src.exists() and not src.is_dir():
        raise ValueError(f"src={str(src)!r} is a file; give the folder of executed notebooks (build/notebooks after "
                         "`make figures`)")
    if not src.is_dir():
        print(f"book: {src} does not exist: no notebook has been executed yet; `make figures` runs them (the pages "
              "show their sources until then)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; the book is a folder of pages: choose another path")
    states = stage(src, out.parent / f"{out.name}_src")
    for state in ("failed", "unfinished", "not run"):
        stems = [s for s, st in states.items() if st == state]
        if stems:
            print(f"book: {state}: {', '.join(stems)} (page shows " + ("where it stopped)" if state == "failed"
                                                                       else "the source without outputs)"))
    args = ["-b", "html", "-d", str(out.parent / f"{out.name}_doctrees"), "-j", "1"]
    args += ["-W", "--keep-going"] if strict else []
    args += ["-q"] if quiet else []
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = build_main(args + [str(out.parent / f"{out.name}_src"), str(out)])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if code:
        raise RuntimeError(f"sphinx-build failed (exit {code})" + (": warnings are errors in strict mode; "
                           "they are listed above" if strict else "; see the messages above"))
    return out / "index.html"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=None, help="executed notebooks (default build/notebooks)")
    ap.add_argument("--out", default=None, help="the site (default build/book)")
    ap.add_argument("--strict", action="store_true", help="warnings are errors (CI)")
    args = ap.parse_args(argv)
    try:
        index = build(args.src, args.out, strict=args.strict)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"book written: {index} (open it in a browser, or: python -m http.server -d {index.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
