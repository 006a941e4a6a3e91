"""VGGT import (tracks/vggt.py, scripts/convert_vggt.py) on predictions.npz files written here from known geometry.

A scene gasp renders at the source size is rendered a second time through the camera VGGT would see:
the frame resized to 518 px wide (height rounded to a multiple of 14) and centre-cropped to 518
("crop", portrait 160 x 200 source) or fitted into 518 x 518 and padded ("pad", landscape 200 x 120).
That camera is derived here from load_fn.py's documented steps: scale x by w'/W and y by h'/H in
the corner convention, then shift by the crop (or pad) offset. The predictions hold VGGT's depth at
518 px, its corner-convention intrinsics, OpenCV camera-from-world extrinsics, the preprocessed
images (PIL bicubic, as load_fn does) and a depth_conf with one low-confidence block.
"""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracks.camera_path import look_at, sample_camera_path
from tracks.geometry import build_track_states
from tracks.io import TrackReader
from tracks.synthetic import SyntheticSceneConfig, intrinsics, render_views, sample_layout
from tracks.vggt import VGGTError, load_vggt_scene

ROOT = Path(__file__).resolve().parents[1]
S = 4


def vggt_view(W, H, mode):
    """(w', h'), offset (ox, oy) subtracted from resized corner coordinates, and VGGT's map size (w, h)."""
    if mode == "crop":
        w2, h2 = 518, round(H * (518 / W) / 14) * 14
        return (w2, h2), (0, (h2 - 518) // 2 if h2 > 518 else 0), (518, min(h2, 518))
    w2, h2 = (518, round(H * (518 / W) / 14) * 14) if W >= H else (round(W * (518 / H) / 14) * 14, 518)
    return (w2, h2), (-((518 - w2) // 2), -((518 - h2) // 2)), (518, 518)


def make_predictions(root: Path, W: int, H: int, mode: str, seed=4, batch=False):
    cfg = SyntheticSceneConfig(height=H, width=W, num_frames=S)
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, cfg)
    pos, tgt, _ = sample_camera_path(rng, cfg)
    poses = look_at(pos, tgt)
    K = intrinsics(cfg)                                                  # gasp convention, source size
    rgb, depth, _ = render_views(layout, K, poses, H, W)
    (w2, h2), (ox, oy), (w, h) = vggt_view(W, H, mode)
    sx, sy = w2 / W, h2 / H
    Kv = np.array([[K[0, 0] * sx, 0, (K[0, 2] + 0.5) * sx - ox],            # corner convention, as VGGT's
                   [0, K[1, 1] * sy, (K[1, 2] + 0.5) * sy - oy], [0, 0, 1]])
    Kv_ours = Kv - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    _, depth_v, _ = render_views(layout, Kv_ours, poses, h, w)
    images = []
    for f in rgb:
        img = np.asarray(Image.fromarray(f).resize((w2, h2), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        canvas = np.ones((h, w, 3), np.float32)
        ys, xs = np.arange(h) + oy, np.arange(w) + ox
        r, c = (ys >= 0) & (ys < h2), (xs >= 0) & (xs < w2)
        canvas[np.ix_(r, c)] = img[np.ix_(ys[r], xs[c])]
        images.append(canvas.transpose(2, 0, 1))
    conf = np.full((S, h, w), 10.0, np.float32)
    conf[1, 100:220, 150:300] = 2.0                                      # a low-confidence block in frame 1
    pred = {"depth": depth_v[..., None], "depth_conf": conf, "extrinsic": poses[:, :3, :4].astype(np.float32),
            "intrinsic": np.tile(Kv, (S, 1, 1)).astype(np.float32), "images": np.stack(images),
            "world_points": np.zeros((S, h, w, 3), np.float32)}
    if batch:
        pred = {k: v[None] for k, v in pred.items()}
    (root / "images").mkdir(parents=True)
    for t, f in enumerate(rgb):
        Image.fromarray(f).save(root / "images" / f"{t:06d}.png")
    np.savez(root / "predictions.npz", **pred)
    return dict(K=K, poses=poses, depth=depth, rgb=rgb, pred=pred)


@pytest.mark.parametrize("W, H, mode", [(160, 200, "crop"), (200, 120, "pad")])
def test_predictions_map_back_to_the_source_frames(tmp_path, W, H, mode):
    truth = make_predictions(tmp_path, W, H, mode)
    scene = load_vggt_scene(tmp_path / "predictions.npz", tmp_path / "images")
    assert scene.metadata["preprocess"]["mode"] == mode and scene.image_size == (H, W)
    np.testing.assert_allclose(scene.K, np.tile(truth["K"], (S, 1, 1)), atol=2e-4)       # float32 intrinsics
    np.testing.assert_allclose(scene.cam_from_world, truth["poses"], atol=1e-6)
    np.testing.assert_array_equal(scene.frames, truth["rgb"])
    known = np.isfinite(scene.depth)
    rel = np.abs(scene.depth - truth["depth"])[known] / truth["depth"][known]
    assert np.median(rel) < 0.005 and np.quantile(rel, 0.9) < 0.02
    # unknown: the rows crop mode cut off (every frame) and the low-confidence block (frame 1); pad keeps all
    (w2, h2), (ox, oy), (w, h) = vggt_view(W, H, mode)
    v = (np.arange(H) + 0.5) * h2 / H - oy
    cut = (v < 0) | (v >= h)
    assert cut.any() == (mode == "crop")
    for t in (0, 2, 3):
        np.testing.assert_array_equal(~known[t], np.repeat(cut[:, None], W, 1))
    assert (~known[1]).sum() > (~known[0]).sum()
    # sensitivity: without the crop / pad offset, or the half pixel, K would be off by far more than 2e-4
    Kv = truth["pred"]["intrinsic"][0].astype(np.float64)
    assert abs(Kv[1, 2] / (h2 / H) - 0.5 - truth["K"][1, 2]) > 1 or mode == "crop" and oy == 0
    assert abs((Kv[0, 2] + ox) / (w2 / W) - truth["K"][0, 2]) == pytest.approx(0.5, abs=1e-3)
    # the in-memory predictions dict of a VGGT forward reads the same
    same = load_vggt_scene(truth["pred"], tmp_path / "images")
    np.testing.assert_array_equal(same.K, scene.K)
    np.testing.assert_array_equal(same.depth, scene.depth)


@pytest.mark.slow
def test_converted_tracks_follow_the_true_geometry_and_low_confidence_is_unknown(tmp_path):
    truth = make_predictions(tmp_path, 160, 200, "crop", batch=True)             # with VGGT's batch axis
    out = tmp_path / "v.h5"
    from gasp_cli.convert_vggt import main

    assert main(["--predictions", str(tmp_path / "predictions.npz"), "--images", str(tmp_path / "images"),
                 "--out", str(out), "--frames", "all", "--grid", "12"]) == 0
    seq = TrackReader(out)[0]
    K = np.tile(truth["K"], (S, 1, 1))
    tracks, vis, occ, _ = build_track_states(truth["depth"], K, truth["poses"], grid=12)
    both = vis & seq.visible
    assert both.sum() > 0.9 * vis.sum() - (~seq.known).sum()
    err = np.hypot(*(seq.tracks[both] - tracks[both]).T)
    # depth is read at the nearest of VGGT's 3.2x finer pixels, so it differs a little on slanted surfaces and a lot
    # across depth edges; a missed crop offset or half pixel would move every track
    assert np.median(err) < 0.1 and (err < 0.5).mean() > 0.85, (np.median(err), (err < 0.5).mean())
    # points landing on the low-confidence block of frame 1 are unknown there, not occluded
    x, y = np.floor(np.nan_to_num(seq.tracks[1], nan=-1.0) + 0.5).T
    conf_lo = seq.depth[1][y.clip(0, 199).astype(int), x.clip(0, 159).astype(int)]
    on_block = np.isnan(conf_lo) & np.isfinite(seq.tracks[1]).all(-1) & (x >= 0) & (x < 160) & (y >= 0) & (y < 200)
    assert on_block.any() and not seq.known[1][on_block].any()
    # and the probe reads it: PCK beside TAP-Vid's δ
    import json

    from gasp_cli.probe import main as probe

    assert probe(["--tracks", str(out), "--out", str(tmp_path / "probe"), "--layers", "0"]) == 0
    res = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert res["num_predictions"] > 0 and len(res["tapvid"]["delta_avg"]) == 1


def spoil_shapes(root):
    d = dict(np.load(root / "predictions.npz"))
    d["depth_conf"] = d["depth_conf"][:, :-1]
    np.savez(root / "predictions.npz", **d)


def spoil_order(root):
    names = sorted((root / "images").iterdir())
    for p in names:
        p.rename(p.with_name("x" + p.name))
    for i, p in enumerate(sorted((root / "images").iterdir())[::-1]):
        p.rename(root / "images" / f"{i:06d}.png")


def spoil_count(root):
    sorted((root / "images").iterdir())[0].unlink()


def spoil_truncated(root):
    p = root / "predictions.npz"
    p.write_bytes(p.read_bytes()[:1000])


@pytest.mark.parametrize("spoil, message", [
    (spoil_shapes, r"predictions.npz: 'depth_conf' has shape \(4, 517, 518\) but depth \(4, 518, 518\) needs "
                   r"\(4, 518, 518\)"),
    (spoil_order, r"the source images do not match VGGT's preprocessed 'images' \(crop mode: mean difference .* in "
                  r"frame \d, 00000\d.png\)"),
    (spoil_count, r"VGGT's arrays hold 4 frames but .*images has 3 images"),
    (spoil_truncated, r"predictions.npz: not a readable .npz"),
], ids=["shapes", "order", "count", "truncated"])
def test_bad_predictions_give_one_line_and_no_output(tmp_path, capsys, spoil, message):
    make_predictions(tmp_path, 160, 200, "crop")
    spoil(tmp_path)
    with pytest.raises(VGGTError, match=message):
        load_vggt_scene(tmp_path / "predictions.npz", tmp_path / "images")
    from gasp_cli.convert_vggt import main

    out = tmp_path / "o" / "v.h5"
    assert main(["--predictions", str(tmp_path / "predictions.npz"), "--images", str(tmp_path / "images"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("convert_vggt: error: ") and not (tmp_path / "o").exists()
