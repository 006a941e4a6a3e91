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
