"""PCK in pixels (DiffTrack's 8 px at 480 x 720) and the --preset difftrack flag (gasp_cli/probe.py)."""
import json

import numpy as np
import pytest

from tracks.io import TrackReader
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file


def test_the_difftrack_preset_sets_its_conventions():
    from gasp_cli.probe import parse_args

    cfg = parse_args(["--preset", "difftrack"])
    assert (cfg.match, cfg.bidirectional, cfg.pck_px, cfg.pck_px_size, cfg.size) == \
        ("softmax-mean", True, 8.0, (480, 720), (476, 728))
    assert parse_args(["--preset", "difftrack", "size=null"]).size is None           # a fixed-size family
    with pytest.raises(SystemExit):
        parse_args(["--preset", "difftrack", "--config", "x.yaml"])


def test_pixel_pck_is_the_fraction_within_x_px_at_the_eval_size(tmp_path):
    """From the probe's own stored predictions (token centres, --refine none): strict < 8 px after scaling
    positions to 480 x 720, over the valid predictions, per sequence, then the mean over sequences."""
    from gasp_cli.probe import main
    from probes.store import read_finished

    path = tmp_path / "s.h5"
    make_synthetic_file(path, 2, seed=6, config=SyntheticSceneConfig(height=112, width=112, num_frames=26), split="eval")
    out = tmp_path / "p"
    assert main(["--tracks", str(path), "--out", str(out), "--layers", "0,3", "--refine", "none", "pck_px=8"]) == 0
    res = json.loads((out / "results.json").read_text())
    done, reader = read_finished(out), TrackReader(path)
    per_seq = []
    for key in res["sequences"]:
        a = done[key]["arrays"]
        seq = reader[reader.sequence_keys.index(key)]
        fids, qg = a["frame_ids"], int(a["query_grid"])
        (_, w), (th, tw) = a["grid"], a["token_size"]
        pred = np.stack([(a["pred"] % w + 0.5) * tw - 0.5, (a["pred"] // w + 0.5) * th - 0.5], -1)   # (L, F', N, 2)
        gt = seq.tracks[fids][[f for f in range(len(fids)) if f != qg]]                               # (F', N, 2)
        H, W = seq.image_size
        scale = np.array([720 / W, 480 / H])
        d2 = (((pred - gt[None]) * scale) ** 2).sum(-1)
        hit = (d2 < 64) & a["valid"][None]
        per_seq.append(hit.sum((1, 2)) / a["valid"].sum())
    assert res["pck_px"]["pck_mean"] == pytest.approx(np.mean(per_seq, 0).tolist(), abs=1e-12)
    assert res["pck_px"]["threshold_px"] == 8.0 and res["pck_px"]["eval_size_hw"] == [480, 720]
