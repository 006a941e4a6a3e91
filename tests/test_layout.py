"""The package layout shows the architecture: imports only go down a floor, and no import cycles (issue 12).

Floors, lowest first; a module may import its own floor and those below:
    0  tracks/                     point tracks: geometry, storage, the synthetic renderer
    1  gasp core                   model access (adapters/, models/, hooks), the method (heads, losses),
                                   instruction data (data/), run bookkeeping (runinfo, distributed)
    2  probes/, plots/             the probe and its figures (they read gasp's models and hooks)
    3  gasp/train/                 the training machinery (its evaluation runs the probe)
    4  gasp/experiment/            the replication (trains arms, probes them, draws their figures)
    4  gasp/bench/                 measurements at a real model's shape (the GPU check: probe + training step)
scripts/ and tests/ sit above everything.
"""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("tracks", "gasp", "probes", "plots")


def floor(module: str) -> int:
    if module.startswith("tracks"):
        return 0
    if module.startswith(("probes", "plots")):
        return 2
    if module.startswith("gasp.train"):
        return 3
    if module.startswith(("gasp.experiment", "gasp.bench")):
        return 4
    return 1                                   # gasp and every other gasp.* module


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (at any depth: lazy imports count too)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
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
                found.add(t)
    return found


GRAPH = {name: imports(path, name, set(modules())) for name, path in modules().items()}


def test_the_graph_sees_the_imports():
    assert "probes.runner" in GRAPH["gasp.train.recipe"] and "tracks.io" in GRAPH["probes.runner"]
    assert "gasp.train.checkpoint" in GRAPH["gasp.train.recipe"]          # "from gasp.train import checkpoint"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_import_goes_up_a_floor(name):
    # a package's __init__ may re-export its own modules; everything else points down or level
    up = sorted(t for t in GRAPH[name] if floor(t) > floor(name) and not t.startswith(name + "."))
    assert not up, f"{name} (floor {floor(name)}) imports {up} from a higher floor"


def test_no_two_modules_import_each_other():
    def direct(a):                                     # a package importing its own submodules is not a cycle
        return {t for t in GRAPH[a] if not t.startswith(a + ".")}

    pairs = sorted((a, b) for a in GRAPH for b in direct(a) if a < b and a in direct(b))
    assert not pairs, f"modules importing each other: {pairs}"
    # and no longer cycles either (depth-first search over the module graph)
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


def test_entry_point_folders_do_not_reach_into_the_replication():
    for folder in ("probes", "tracks", "plots"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "gasp.experiment" not in path.read_text(), path
