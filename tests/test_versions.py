"""The installed transformers lies in the range setup.cfg states as tested (issue 10 sec. 7)."""
import configparser

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.conftest import ROOT


def test_installed_transformers_is_in_the_stated_range():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = [ln.strip() for ln in cfg["options"]["install_requires"].splitlines()]
    (spec,) = [r[len("transformers"):] for r in reqs if r.startswith("transformers")]
    assert Version(transformers.__version__) in SpecifierSet(spec), (transformers.__version__, spec)
