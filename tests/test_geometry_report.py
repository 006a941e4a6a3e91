"""RESULTS.md's geometry section (issue 18) is generated from the committed JSON, and its reading follows
the pre-registered rule (docs/results/v3/GEOMETRY_PLAN.md)."""
import copy
import json

import pytest

from experiments.replication import geometry_report as g
from tests.conftest import ROOT

PUBLISHED = ROOT / "docs" / "results" / "v3" / "geometry.json"


def test_results_md_section_is_the_report_of_the_committed_json():
    if not PUBLISHED.exists():
        pytest.skip(f"{PUBLISHED} not published yet")
    text = (ROOT / "RESULTS.md").read_text()
    assert g.BEGIN in text and g.END in text
    section = text.split(g.BEGIN, 1)[1].split(g.END, 1)[0]
    assert section.strip() == g.report(json.loads(PUBLISHED.read_text())).strip()


def _summary(base, a, c, d):
    """A geometry.json with the given aligned δ<1.25 curves (layers -1..1)."""
    def probe(vals):
        block = {k: {"abs_rel": [0.3] * 3, "rmse_log": [0.4] * 3, "delta_1.25": list(vals)}
                 for k in ("metric", "scale_shift")}
        return {"layers": [0, 1], "pck_mean": [0.05, 0.06],
                "depth": {"layers": [-1, 0, 1], **block, "folds": 5, "num_train_images": 10, "num_eval_images": 8,
                          "references": {r: {"scale_shift": {"delta_1.25": 0.2, "abs_rel": 0.5}} for r in
                                         ("pixels", "constant")},
                          "split": {"train": {"num_sequences": 4}, "held_out": {"num_sequences": 2}, "seed": 0}}}
    return {"models": {"base": probe(base), "A: LM only": probe(a), "C: x": probe(c), "D: y": probe(d)},
            "margin": 0.03, "git_sha": "0123456789", "wall_s": 600}


def test_reading_follows_the_margin():
    s = _summary([0.3] * 3, [0.3, 0.30, 0.30], [0.3, 0.34, 0.34], [0.3, 0.40, 0.40])
    text = g.report(s)
    assert "C − A = +0.040" in text and "puts depth into the hidden states" in text
    assert "D − A = +0.100" in text and "the probe sees" in text
    s2 = copy.deepcopy(s)
    s2["models"]["C: x"]["depth"]["scale_shift"]["delta_1.25"] = [0.9, 0.32, 0.32]   # layer -1 does not count
    s2["models"]["D: y"]["depth"]["scale_shift"]["delta_1.25"] = [0.3, 0.31, 0.31]
    text = g.report(s2)
    assert "C − A = +0.020" in text and "leaves the hidden states' depth where it was" in text
    assert "the probe does not see" in text and "cannot be told from a probe that is blind" in text
