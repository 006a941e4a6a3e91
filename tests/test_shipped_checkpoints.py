"""The checkpoints shipped in checkpoints/gasp-small (issue 5): re-probing them reproduces the reported numbers.

This is README command (1)'s probe (`probes/compare.py`) on the full test split of the replication.
"""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "gasp-small"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_shipped_checkpoints_are_small_safetensors_with_a_manifest():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20e6
    assert {p.suffix for p in files} <= {".safetensors", ".json"}
    man = json.loads((SHIPPED / "manifest.json").read_text())
    assert set(man["models"]) == {"A", "C", "D"} and man["source"]["git_sha"] and man["plan"]["preset"] == "full"
    for m in man["models"].values():
        assert (SHIPPED / m["adapter"] / "adapter_model.safetensors").is_file()


def test_reprobing_reproduces_the_reported_peak_pck(tmp_path):
    sys.path.insert(0, str(ROOT / "probes"))
    import compare

    assert compare.main(["--out", str(tmp_path), "--check", "--tolerance", "0.02"]) == 0
    man = json.loads((SHIPPED / "manifest.json").read_text())
    rows = {r["label"]: r for r in json.loads((tmp_path / "compare.json").read_text())["rows"]}
    for m in man["models"].values():
        row = rows[m["label"]]
        assert row["num_sequences"] == m["reported"]["num_sequences"]
        assert row["pck"] == pytest.approx(m["reported"]["pck"], abs=0.02)
    refs = json.loads((tmp_path / "compare.json").read_text())["references"]
    assert 0 < refs["uniform"] < refs["same_position"] <= 1
