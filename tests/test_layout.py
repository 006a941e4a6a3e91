"""The package layout shows the architecture: packages import only downwards, and modules form no cycle.

Floors, lowest first; a package may import its own floor and those below:
    0  tracks        point tracks: geometry, storage, readers, the synthetic renderer
    1  gasp          the library: adapters, models, capture, heads, losses, data, the trainer
    2  probes        the probe, its metrics and results (reads gasp's models and hooks)
    3  plots         figures from probe results
    4  gasp_cli, experiments, bench, scripts
                     entry points: the `gasp` command and the README's scripts, the replication and
                     past experiments, benchmarks and the GPU check
An import inside ``if __name__ == "__main__":`` is a file's use as a script (``python probes/pck.py``
kept at its README path): it may only reach an entry point.
"""
import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

FLOORS = {"tracks": 0, "gasp": 1, "probes": 2, "plots": 3, "gasp_cli": 4, "experiments": 4, "bench": 4,
          "scripts": 4}
ENTRY = ("gasp_cli", "experiments")                  # what a script block may import from below its floor


def floor(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def modules() -> dict[str, Path]:
    out = {}
    for pkg in FLOORS:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports(source: str, name: str, known: set[str], is_pkg: bool = False) -> tuple[set[str], set[str]]:
    """(project modules imported anywhere but a ``__main__`` block, those imported in one); lazy imports count."""
    tree = ast.parse(source)
    script_nodes = {id(n) for top in tree.body if _is_main_block(top) for n in ast.walk(top)}
    found: tuple[set[str], set[str]] = (set(), set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                   # relative import
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:                      # "pkg.mod.func" -> "pkg.mod"
                t = t.rpartition(".")[0]
            if t and t != name:
                found[id(node) in script_nodes].add(t)
    return found


MODULES = modules()
GRAPH, SCRIPT_USE = {}, {}
for _name, _path in MODULES.items():
    GRAPH[_name], SCRIPT_USE[_name] = imports(_path.read_text(), _name, set(MODULES), _path.name == "__init__.py")


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a package imports one on a higher floor."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a))


def test_the_graph_sees_the_imports():
    assert "probes.runner" in GRAPH["probes.train_eval"] and "tracks.io" in GRAPH["probes.runner"]
    assert "gasp.train.checkpoint" in GRAPH["gasp.train.recipe"]          # "from gasp.train import checkpoint"
    assert "gasp_cli.probe" in SCRIPT_USE["probes.pck"] and "gasp_cli.probe" not in GRAPH["probes.pck"]


def test_an_upward_import_is_caught():
    """The check itself: a library module that imports the probe, or a probe module that draws, is flagged."""
    known = set(MODULES)
    lib, _ = imports("def f():\n    from probes.runner import Probe\n", "gasp.train.recipe", known)
    probe, _ = imports("import plots.figure3\n", "probes.summary", known)
    assert upward({"gasp.train.recipe": lib}) == [("gasp.train.recipe", "probes.runner")]
    assert upward({"probes.summary": probe}) == [("probes.summary", "plots.figure3")]
    _, script = imports("if __name__ == '__main__':\n    from gasp_cli.probe import main\n", "probes.pck", known)
    assert upward({"probes.pck": set()}) == [] and script == {"gasp_cli.probe"}


def test_no_package_imports_a_higher_floor():
    up = upward(GRAPH)
    assert not up, f"imports that go up a floor: {up}"


def test_script_blocks_reach_only_entry_points():
    bad = sorted((a, b) for a, targets in SCRIPT_USE.items() for b in targets
                 if floor(b) > floor(a) and not b.startswith(ENTRY))
    assert not bad, bad


def test_no_two_modules_import_each_other():
    def direct(a):                                     # a package importing its own submodules is not a cycle
        return {t for t in GRAPH[a] if not t.startswith(a + ".")}

    pairs = sorted((a, b) for a in GRAPH for b in direct(a) if a < b and a in direct(b))
    assert not pairs, f"modules importing each other: {pairs}"
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for t in direct(n):
            if state.get(t) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(t):] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n, [n])


def test_the_library_has_no_command_line_and_nothing_edits_sys_path():
    for path in (ROOT / "gasp").rglob("*.py"):
        text = path.read_text()
        assert "import argparse" not in text and "__main__" not in text, f"{path}: a CLI inside the library"
    for path in (ROOT / "probes").rglob("*.py"):        # no figure is drawn by the probe: entry points draw them
        assert "savefig" not in path.read_text() and "draw_figure3(" not in path.read_text(), path
    edits = [p for p in ROOT.rglob("*.py") if p.parts[len(ROOT.parts)] not in ("tests", ".venv")
             and re.search(r"sys\.path\.(insert|append)|sys\.path\s*=", p.read_text())]
    assert not edits, f"sys.path edited outside tests/: {edits}"


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_thin_shims_over_installed_modules(script):
    """The README's `python scripts/X.py` paths keep working; the code lives in an importable module."""
    tree = ast.parse(script.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert len(body) == 1 and _is_main_block(body[0]), f"{script.name}: more than a __main__ block"
    (target,) = SCRIPT_USE[f"scripts.{script.stem}"]
    assert hasattr(__import__(target, fromlist=["main"]), "main")
