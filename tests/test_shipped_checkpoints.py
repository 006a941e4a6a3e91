"""The checkpoints shipped in checkpoints/gasp-v3 (issue 9): re-probing them reproduces the reported numbers.

This is README command (1)'s probe (`scripts/demo.py`) on the full test split of the v3 replication.
"""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "gasp-v3"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_shipped_checkpoints_are_small_safetensors_with_a_manifest():
    files = [p for p in SHIPPED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25e6
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".jinja"}
    man = json.loads((SHIPPED / "manifest.json").read_text())
    assert {"A", "C", "D"} <= set(man["models"]) and len(set(man["models"]) & {"E", "F"}) == 1
    assert man["source"]["git_sha"] and man["plan"]["preset"] == "full" and man["plan"]["version"] == 3
    reported = json.loads((ROOT / man["results"]).read_text())
    for arm, m in man["models"].items():
        assert (SHIPPED / m["adapter"] / "adapter_model.safetensors").is_file()
        run = next(r for r in reported["runs"][arm] if r["seed"] == m["seed"])
        assert m["reported"]["pck_per_layer"] == run["probe"]["pck_mean"]    # the manifest quotes the JSON


def test_reprobing_reproduces_the_reported_peak_pck(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import demo

    assert demo.main(["--out", str(tmp_path), "--check", "--tolerance", "0.02"]) == 0
    man = json.loads((SHIPPED / "manifest.json").read_text())
    rows = {r["label"]: r for r in json.loads((tmp_path / "compare.json").read_text())["rows"]}
    for m in man["models"].values():
        row = rows[m["label"]]
        assert row["num_sequences"] == m["reported"]["num_sequences"]
        assert row["pck"] == pytest.approx(m["reported"]["pck"], abs=0.02)
    refs = json.loads((tmp_path / "compare.json").read_text())["references"]
    reported = json.loads((ROOT / man["results"]).read_text())["references"]
    for k in ("uniform", "same_position", "appearance"):                       # the benchmark is re-made exactly
        assert refs[k] == pytest.approx(reported[k]["2"]["mean"], abs=1e-9)
