"""The docs a clone ships: every relative link in them resolves inside the repository (issue 12)."""
import re

import pytest

from tests.conftest import ROOT

DOCS = ["README.md", "RESULTS.md", "BENCHMARKS.md", "docs/METHOD.md", "tracks/FORMAT.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    path = ROOT / doc
    text = path.read_text()
    links = [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", m) and not m.startswith("#")]
    missing = [m for m in links if not (path.parent / m.split("#")[0]).resolve().exists()]
    assert not missing, f"{doc} links to files a clone does not have: {missing}"
    outside = [m for m in links if not (path.parent / m).resolve().is_relative_to(ROOT.resolve())]
    assert not outside, f"{doc} links outside the repository: {outside}"
    # the team's notes beside the repository (../shared) are not in a clone, linked or quoted
    assert "../shared" not in text


def test_the_readme_and_ci_install_through_the_lock():
    """README commands (1) and (2) and .ci/run install the tested versions (constraints.txt), torch's CPU build first."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    commands = [ln for ln in readme.splitlines() if ln.startswith("python3 -m venv .venv")][:2]
    assert len(commands) == 2
    for cmd in commands:
        installs = [part.strip() for part in cmd.split("&&") if part.strip().startswith("pip install")]
        assert installs[0].startswith("pip install torch==2.13.0")
        assert all("-c constraints.txt" in part for part in installs), cmd
    assert "-c constraints.txt" in ci and "torch==2.13.0" in ci
    pins = dict(ln.split("==") for ln in (ROOT / "constraints.txt").read_text().splitlines()
                if ln and not ln.startswith("#"))
    assert pins["torch"] == "2.13.0"          # no local "+cpu" tag: a CUDA build of the same release satisfies it
    manifest = __import__("json").loads((ROOT / "checkpoints/gasp-v3/manifest.json").read_text())
    assert pins["transformers"] == manifest["source"]["transformers"]     # what the shipped results were made with
