"""The package's layering (issue 28): no import cycle between ntklib's modules, counting the imports
made inside functions, and no module that reaches into another's private names."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ntklib"
MODULES = {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py")}


def _imports(tree) -> set[str]:
    """The ntklib modules a module imports, anywhere in it (``from . import x``, ``from .x import y``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                out |= {a.name for a in node.names if a.name in MODULES}
            elif node.module.split(".")[0] in MODULES:
                out.add(node.module.split(".")[0])
    return out


def _cycle(graph: dict) -> list[str] | None:
    """One cycle of the directed graph, or None (depth-first search with colours)."""
    state, path = {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[n] = "done"
        path.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    graph = {m: _imports(t) - {m} for m, t in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    # the ground floor imports nothing that stands on it
    assert graph["validation"] <= {"profiling"}, graph["validation"]


# the layers (docs/design.md, section 5): the paper's methods and the tools they use below; the
# experiments (the pipeline, sweeps, the notebooks' studies, parameters) and the tools that run them above
METHODS = {"_precision", "_xla", "validation", "profiling", "parallel", "cache", "plotting", "artifacts", "data",
           "triggers", "models", "train", "kernels", "regression", "backdoor_loss", "greedy", "poison_optimization",
           "attack", "defenses", "unlearning", "adversarial",
           "reconstruction"}
EXPERIMENTS = {"evaluate", "pipeline", "defense_study", "params", "cost", "paper_regime", "runner", "book"}


def test_every_module_has_a_layer_and_no_method_imports_an_experiment():
    assert set(MODULES) - {"__init__"} == METHODS | EXPERIMENTS and not METHODS & EXPERIMENTS
    for m in METHODS:
        up = _imports(MODULES[m]) & EXPERIMENTS
        assert not up, f"{m} (a method) imports {sorted(up)} (the experiments layer above it)"


def test_no_module_reads_another_modules_private_names():
    """``_x`` names are a module's own: ``other._name`` (a function or a constant of another ntklib
    module) and ``obj._attr`` on an object of another module's class are refused; what another
    module needs is public."""
    found = []
    for m, tree in MODULES.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is None:
                    aliases.update({a.asname or a.name: a.name for a in node.names if a.name in MODULES})
                elif node.module in MODULES:
                    found += [f"{m}: from .{node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
        own_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in aliases and aliases[base.id] != m:
                found.append(f"{m}:{node.lineno}: {aliases[base.id]}.{node.attr}")
            elif isinstance(base, ast.Name) and base.id not in aliases and base.id not in ("self", "cls") \
                    and base.id not in own_classes and not _defined_here(tree, node.attr):
                found.append(f"{m}:{node.lineno}: {base.id}.{node.attr}")
    assert not found, found


def _defined_here(tree, attr: str) -> bool:
    """Is ``attr`` a method or field of a class of this module (``problem._check_candidates`` on
    the module's own class is its own business)?"""
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == attr:
                return True
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == attr:
                return True
    return False


# ---------------------------------------------------------------------------- notebooks that narrate
NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.py"))


def _cells(path):
    """(kind, lines) of each jupytext percent cell after the header: kind "markdown" or "code"."""
    import re

    cells = re.split(r"^# %%", path.read_text(), flags=re.M)[1:]
    return [("markdown" if c.startswith(" [markdown]") else "code", c.splitlines()[1:]) for c in cells]


def test_the_notebooks_are_found():
    assert len(NOTEBOOKS) == 9


def test_notebooks_narrate_with_few_code_lines():
    """Studies live in the library (issue 28): each notebook's code cells stay under 120 lines
    (blank lines and comments not counted)."""
    for nb in NOTEBOOKS:
        n = sum(1 for kind, lines in _cells(nb) if kind == "code"
                for line in lines if line.strip() and not line.strip().startswith("#"))
        assert n < 120, f"{nb.name}: {n} lines of code; move its study loops into ntklib"


def test_notebooks_write_results_through_the_library():
    """results.json goes through plotting.save_results, never a hand-written json.dumps."""
    for nb in NOTEBOOKS:
        code = "\n".join(line for kind, lines in _cells(nb) if kind == "code" for line in lines)
        assert "json.dump" not in code and "write_text" not in code, nb.name


def test_notebook_prose_quotes_no_dated_measurement():
    """Numbers measured on a date drift when the figures are regenerated: the dated record is
    docs/results.md; a notebook's prose points there or at the tables it just printed."""
    import re

    for nb in NOTEBOOKS:
        prose = "\n".join(line for kind, lines in _cells(nb) if kind == "markdown" for line in lines)
        assert not re.search(r"[Mm]easured on|\b20\d\d-\d\d-\d\d\b", prose), nb.name
