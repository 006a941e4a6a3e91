"""Sparse COLMAP tracks through the user's commands: convert, probe (PCK beside TAP-Vid's δ), and 10 training
steps without depth, where L_depth has no term and the trainer says so once."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from colmap_fixture import make_model
from tracks.io import TrackReader

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sparse_tracks(tmp_path_factory):
    root = tmp_path_factory.mktemp("colmap")
    make_model(root, factor=1, num_points=120, keep=0.9)                     # 80 x 60 frames, OPENCV
    out = root / "sparse.h5"
    from gasp_cli.convert_colmap import main

    assert main(["--colmap", str(root), "--tracks", "sparse", "--sparse", "sparse/0/bin", "--images", "images",
                 "--out", str(out), "--frames", "all", "--grid", "6"]) == 0
    return out


def test_probe_on_sparse_tracks_reports_pck_and_tapvid(sparse_tracks, tmp_path, capsys):
    out = tmp_path / "probe"
    from gasp_cli.probe import main

    assert main(["--tracks", str(sparse_tracks), "--out", str(out), "--size", "112", "140"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["num_sequences"] == len(TrackReader(sparse_tracks)) and len(res["pck_mean"]) == 4
    tv = res["tapvid"]
    assert tv["num_videos"] == res["num_sequences"] and len(tv["delta_avg"]) == 4
    assert all(0 <= v <= 1 for v in tv["delta_16"]) and tv["refine"] == "softargmax"
    d = np.array([tv[f"delta_{x}"] for x in (1, 2, 4, 8, 16)])
    assert (np.diff(d, axis=0) >= -1e-12).all()                               # a larger threshold never scores lower
    assert "TAP-Vid delta_avg" in capsys.readouterr().out


def test_depth_probe_on_tracks_without_depth_says_which_converters_give_depth(sparse_tracks, tmp_path, capsys):
    from gasp_cli.probe import main

    out = tmp_path / "probe"
    assert main(["--tracks", str(sparse_tracks), "--out", str(out), "--depth", "--depth-folds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no depth maps" in err and "convert_vggt.py" in err
    assert not out.exists()


def test_ten_training_steps_on_sparse_tracks_without_depth(sparse_tracks, tmp_path, caplog):
    out = tmp_path / "run"
    from gasp_cli.train import main

    # another in-process entry point (scripts/reproduce_small.py) may have quietened "gasp" to WARNING
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="gasp"):
        assert main([f"data.tracks={sparse_tracks}", "loss.lm=false", "optim.max_steps=10", f"run.out={out}",
                     "run.eval_sequences=0", "run.save_every=0", "data.num_workers=0", "model.size=[112,140]"]) == 0
    log = caplog.text
    assert log.count("L_depth: ") == 1 and "L_depth: 1 of 1 stored sequences" in log and "adds 0" in log
    assert "loss.depth=false" in log
    assert "training on its 1 stored sequence(s) as supplied" in log
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    geo = [r for r in rows if r.get("l_corr") is not None]
    assert len(rows) == 10 and len(geo) == 10
    assert all(r["l_depth"] == 0.0 for r in geo) and all(r["l_corr"] > 0 for r in geo)
