"""Synthetic renderer (tracks/synthetic.py): determinism, hand-computed geometry, and
photometric + depth consistency of tracks built from its scenes by tracks.geometry."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracks.geometry import build_tracks, project
from tracks.io import TrackReader
from tracks.synthetic import (SceneLayout, SceneObject, SyntheticSceneConfig, look_at, make_synthetic_file,
                              render_scene, render_views, sample_camera_path, sample_layout)
from tracks.textures import random_texture

ROOT = Path(__file__).resolve().parents[1]
SMALL = SyntheticSceneConfig(height=88, width=88, num_frames=16)   # 88 / 8 = 11: grid-8 queries on pixel centres


def render_with_ids(seed, config):
    """Re-run render_scene's steps to also get the visible-surface id map (T, H, W)."""
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, config)
    cam_from_world = look_at(*sample_camera_path(rng, config)[:2])
    scene = render_scene(seed, config)
    rgb, depth, ids = render_views(layout, scene.K[0], cam_from_world, config.height, config.width)
    assert np.array_equal(rgb, scene.frames) and np.array_equal(depth, scene.depth)
    return scene, layout, ids


def bilinear(img, xy):
    """Independent bilinear sampling of (H, W[, C]) at (P, 2) pixel x, y (pixel centres at integers)."""
    H, W = img.shape[:2]
    x = np.clip(xy[:, 0], 0, W - 1.0001)
    y = np.clip(xy[:, 1], 0, H - 1.0001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ax, ay = x - x0, y - y0
    if img.ndim == 3:
        ax, ay = ax[:, None], ay[:, None]
    top = img[y0, x0] * (1 - ax) + img[y0, x0 + 1] * ax
    bottom = img[y0 + 1, x0] * (1 - ax) + img[y0 + 1, x0 + 1] * ax
    return top * (1 - ay) + bottom * ay


def track_consistency(frames, depth, tracks, visible, track_depth, query_frame=0):
    """Per visible (frame, point) pair outside the query frame: colour error vs the query
    pixel, a shuffled-pair control, and relative depth error against the rendered map."""
    frames = frames.astype(np.float64)
    q = np.rint(tracks[query_frame]).astype(int)                 # (N, 2) queries sit on pixel centres
    q_col = frames[query_frame, q[:, 1], q[:, 0]]                # (N, 3)
    col_err, ctrl_err, depth_err = [], [], []
    rng = np.random.default_rng(0)
    for f in range(len(frames)):
        vis = visible[f].copy()
        if f == query_frame or not vis.any():
            continue
        xy = tracks[f, vis].astype(np.float64)
        px = np.floor(xy + 0.5).astype(int)
        col = frames[f, px[:, 1], px[:, 0]]                      # nearest pixel
        col_err.append(np.abs(col - q_col[vis]).mean(-1))
        ctrl_err.append(np.abs(col[rng.permutation(len(col))] - q_col[vis]).mean(-1))
        d = bilinear(depth[f], xy)
        depth_err.append(np.abs(d - track_depth[f, vis]) / track_depth[f, vis])
    return np.concatenate(col_err), np.concatenate(ctrl_err), np.concatenate(depth_err)


def assert_consistent(frames, depth, tracks, visible, track_depth, query_frame=0):
    col, ctrl, rel = track_consistency(frames, depth, tracks, visible, track_depth, query_frame)
    assert len(col) > 50, "too few visible track points to judge"
    assert np.median(col) < 12 and np.median(col) < 0.3 * np.median(ctrl), (np.median(col), np.median(ctrl))
    assert np.median(rel) < 0.005 and np.quantile(rel, 0.9) < 0.05, (np.median(rel), np.quantile(rel, 0.9))


def test_render_is_deterministic_and_seed_dependent():
    cfg = SyntheticSceneConfig(height=40, width=56, num_frames=4)
    a, b, c = render_scene(11, cfg), render_scene(11, cfg), render_scene(12, cfg)
    assert a.frames.shape == (4, 40, 56, 3) and a.frames.dtype == np.uint8
    assert a.depth.shape == (4, 40, 56) and a.depth.dtype == np.float32
    for field in ("frames", "depth", "K", "cam_from_world", "frame_index"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.metadata == b.metadata
    assert not np.array_equal(a.frames, c.frames) and not np.allclose(a.cam_from_world, c.cam_from_world)
    assert np.array_equal(a.frame_index, np.arange(4))
    assert np.isfinite(a.depth).all() and (a.depth > 0).all()     # the closed room is hit by every ray


def test_known_plane_depth_and_projection():
    """A fronto-parallel panel whose front face is at z = 3 m, seen by hand-built cameras."""
    H, W, f = 61, 81, 100.0
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])   # cx = 40, cy = 30
    rng = np.random.default_rng(0)
    textures = [random_texture(i, rng, c) for i, c in enumerate(["gray", "red"])]
    room = SceneObject("room", "room", np.array([0.0, 0.0, -15.0]), np.array([100.0, 100.0, 70.0]),
                       textures=(0,) * 6)                                   # back wall at z = 20
    panel = SceneObject("panel", "plane", np.array([0.3, -0.2, 3.25]), np.array([2.0, 1.5, 0.5]),
                        textures=(1,) * 6)                                  # front face at z = 3
    layout = SceneLayout(room, [panel], textures)

    # Camera 1 at the origin; camera 2 translated by (0.3, 0, 1); camera 3 at distance 2 from
    # P = (0.6, -0.3, 3) on the panel, yawed by 20 degrees and looking straight at P.
    P, th = np.array([0.6, -0.3, 3.0]), np.deg2rad(20.0)
    C3 = P + 2 * np.array([np.sin(th), 0.0, -np.cos(th)])
    R3 = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])  # rows: right, down, fwd
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, :3, 3] = [-0.3, 0.0, -1.0]
    poses[2, :3, :3], poses[2, :3, 3] = R3, -R3 @ C3
    np.testing.assert_allclose(look_at(C3[None], P[None])[0], poses[2], atol=1e-12)
    rgb, depth, ids = render_views(layout, K, poses, H, W)

    # Camera 1: depth is exactly 3 inside the panel's hand-computed footprint, exactly 20 elsewhere.
    ys, xs = np.mgrid[0:H, 0:W]
    X, Y = (xs - 40) / f * 3.0, (ys - 30) / f * 3.0
    inside = (np.abs(X - 0.3) < 1.0) & (np.abs(Y + 0.2) < 0.75)
    assert np.array_equal(depth[0], np.where(inside, 3.0, 20.0).astype(np.float32))
    assert np.array_equal(ids[0], inside.astype(np.int16))

    # P projects to hand-computed pixels: (f X/Z + cx, f Y/Z + cy) in each camera.
    expected = np.array([[100 * 0.6 / 3 + 40, 100 * -0.3 / 3 + 30], [100 * 0.3 / 2 + 40, 100 * -0.3 / 2 + 30],
                         [40.0, 30.0]])                                     # (60, 20), (55, 15), centre
    xy, z = project(P[None], np.repeat(K[None], 3, axis=0), poses)
    np.testing.assert_allclose(xy[:, 0], expected, atol=1e-9)
    np.testing.assert_allclose(z[:, 0], [3.0, 2.0, 2.0], atol=1e-12)
    px = expected.astype(int)
    np.testing.assert_allclose(depth[[0, 1, 2], px[:, 1], px[:, 0]], [3.0, 2.0, 2.0], rtol=1e-6)
    # The same surface point has the same colour in all three views (texture rigidly attached).
    cols = rgb[[0, 1, 2], px[:, 1], px[:, 0]].astype(int)
    assert np.abs(cols - cols[0]).max() <= 1, cols


def test_tracks_photometric_and_depth_consistent():
    scene, layout, ids = render_with_ids(5, SMALL)
    frame_ids = np.array([0, 2, 5, 9, 15])
    tracks, visible, track_depth = build_tracks(scene.depth[frame_ids], scene.K[frame_ids],
                                                scene.cam_from_world[frame_ids], grid=8)
    assert_consistent(scene.frames[frame_ids], scene.depth[frame_ids], tracks, visible, track_depth)

    # Visible points land on the same surface (room or box id) as their query pixel.
    q = np.rint(tracks[0]).astype(int)
    q_id = ids[0, q[:, 1], q[:, 0]]
    f_idx, n_idx = np.nonzero(visible[1:])
    px = np.floor(tracks[1:][f_idx, n_idx] + 0.5).astype(int)
    same = ids[frame_ids[1:][f_idx], px[:, 1], px[:, 0]] == q_id[n_idx]
    assert same.mean() > 0.95, same.mean()

    # The camera moves: tracks are not all static, and parallax differs between points.
    motion = np.linalg.norm(tracks[-1] - tracks[0], axis=-1)[visible[-1]]
    assert motion.max() > 3 and motion.std() > 0.5


def test_same_texture_at_two_depths():
    cfg = SyntheticSceneConfig(height=128, width=128, num_frames=2, min_boxes=0, max_boxes=0,
                               same_texture_two_depths=True)
    scene, layout, ids = render_with_ids(3, cfg)
    meta = scene.metadata
    assert meta["same_texture_two_depths"] is True
    panel_m = [o.name for o in layout.objects].index("panel")
    panel = layout.objects[panel_m]
    pair = meta["same_texture_pair"]
    assert pair["foreground"] == "panel" and pair["background"] == "back_wall"
    assert panel.textures[4] == layout.room.textures[5] == pair["texture"] == meta["room"]["textures"]["back_wall"]
    assert meta["objects"][panel_m]["texture"] == pair["texture"]

    # Every panel pixel's twin is the back-wall point uv_shift metres beside it: same colour, other depth.
    K, pose = scene.K[0], scene.cam_from_world[0]
    ys, xs = np.nonzero(ids[0] == panel_m + 1)
    d = scene.depth[0, ys, xs]
    cam = np.stack([(xs - K[0, 2]) / K[0, 0] * d, (ys - K[1, 2]) / K[1, 1] * d, d], axis=1)
    world = (cam - pose[:3, 3]) @ pose[:3, :3]                              # (P, 3), R^T (x - t)
    twin = world + np.array([pair["uv_shift_m"][0], 0.0, 0.0])
    twin[:, 2] = meta["room"]["z"][1]
    xy, z = project(twin, K[None], pose[None])
    px = np.floor(xy[0] + 0.5).astype(int)
    ok = (px[:, 0] >= 0) & (px[:, 0] < 128) & (px[:, 1] >= 0) & (px[:, 1] < 128)
    ok[ok] &= ids[0, px[ok, 1], px[ok, 0]] == 0
    assert ok.sum() > 200, ok.sum()
    panel_col = scene.frames[0, ys[ok], xs[ok]].astype(float)
    twin_col = bilinear(scene.frames[0].astype(float), xy[0][ok])
    err = np.abs(panel_col - twin_col).mean(-1)
    ctrl = np.abs(panel_col - np.roll(twin_col, len(twin_col) // 2, axis=0)).mean(-1)
    assert np.median(err) < 0.4 * np.median(ctrl), (np.median(err), np.median(ctrl))
    twin_depth = scene.depth[0, px[ok, 1], px[ok, 0]]
    assert np.median(twin_depth) > 1.3 * np.median(d[ok])


def test_metadata_describes_scene():
    for motion in ("orbit", "dolly", "truck"):
        cfg = SyntheticSceneConfig(height=32, width=32, num_frames=6, motion=motion)
        scene = render_scene(21, cfg)
        meta = json.loads(json.dumps(scene.metadata))                       # JSON-serialisable
        assert meta["generator"] == "gasp.synthetic" and meta["seed"] == 21
        assert meta["motion"]["pattern"] == motion and meta["config"]["motion"] == motion
        assert 2 <= meta["num_objects"] == len(meta["objects"]) <= 5
        for obj in meta["objects"]:
            assert obj["kind"] == "box" and len(obj["center"]) == 3 and len(obj["size"]) == 3
            assert len(obj["visible_pixels"]) == 6 and obj["color"] in obj["name"]
        path = meta["camera_path"]
        assert [p["frame_index"] for p in path] == list(range(6))
        for p, pose in zip(path, scene.cam_from_world):
            np.testing.assert_allclose(pose[:3, :3] @ p["position"] + pose[:3, 3], 0, atol=1e-3)
            np.testing.assert_allclose(pose[2, :3], p["forward"], atol=1e-3)
        disp = meta["motion"]["displacement_cam0"]
        lateral = abs(disp[0]) >= abs(disp[2])
        expected = ("right" if disp[0] > 0 else "left") if lateral else ("forward" if disp[2] > 0 else "backward")
        assert meta["motion"]["direction"] == expected
        assert (motion == "dolly") == (expected in ("forward", "backward"))
        assert abs(meta["motion"]["yaw_change_deg"]) > 0.5                # translation and rotation


@pytest.mark.parametrize("motion", ["orbit", "dolly", "truck"])
def test_camera_stays_inside_room_and_clear_of_boxes(motion):
    cfg = SyntheticSceneConfig(height=24, width=24, num_frames=5, motion=motion)
    for seed in range(12):
        scene = render_scene(seed, cfg)
        room = scene.metadata["room"]
        for p in scene.metadata["camera_path"]:
            for axis, (lo, hi) in zip(p["position"], (room["x"], room["y"], room["z"])):
                assert lo + 0.5 < axis < hi - 0.5
        assert scene.depth.min() > 0.5, (seed, scene.depth.min())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_boxes"):
        SyntheticSceneConfig(min_boxes=4, max_boxes=2)
    with pytest.raises(ValueError, match="motion"):
        SyntheticSceneConfig(motion="spin")
    with pytest.raises(ValueError, match="pan_deg"):
        SyntheticSceneConfig(pan_deg=120)


def test_pan_turns_the_camera_by_the_sweep_and_changes_nothing_else():
    from dataclasses import replace

    config = replace(SMALL, motion="dolly")
    plain, panned = render_scene(3, config), render_scene(3, replace(config, pan_deg=30.0))
    np.testing.assert_allclose(panned.cam_from_world[0], plain.cam_from_world[0], atol=1e-12)  # the sweep starts at 0
    centres = lambda poses: -np.einsum("tji,tj->ti", poses[:, :3, :3], poses[:, :3, 3])  # noqa: E731
    np.testing.assert_allclose(centres(panned.cam_from_world), centres(plain.cam_from_world), atol=1e-9)
    fwd_plain, fwd_pan = plain.cam_from_world[-1, 2, :3], panned.cam_from_world[-1, 2, :3]      # optical axes
    yaw = lambda v: np.degrees(np.arctan2(v[0], v[2]))  # noqa: E731   about the world vertical
    assert abs(yaw(fwd_pan) - yaw(fwd_plain)) == pytest.approx(30.0, abs=1e-6)
    assert abs(fwd_pan[1] - fwd_plain[1]) < 1e-9                        # no tilt added
    boxes = lambda scene: [{k: v for k, v in o.items() if k != "visible_pixels"}  # noqa: E731
                           for o in scene.metadata["objects"]]
    assert boxes(plain) == boxes(panned)                                # same room and boxes


def check_file(path, num_scenes, split):
    with TrackReader(path) as reader:
        assert len(reader) == num_scenes and len(reader.scene_names) == num_scenes
        flags = [reader.scene_metadata(n)["same_texture_two_depths"] for n in reader.scene_names]
        assert sum(flags) == (num_scenes + 1) // 2                          # scenes 0, 2, ...
        for i in range(len(reader)):
            seq = reader[i]
            assert seq.query_frame == 0 and seq.num_points == 64
            if split == "eval":
                assert seq.num_frames == 8 and seq.dt.max() == 24 and 1 in seq.dt
            assert_consistent(seq.frames, seq.depth, seq.tracks, seq.visible, seq.track_depth)


@pytest.mark.slow
def test_make_synthetic_file_end_to_end(tmp_path):
    cfg = SyntheticSceneConfig(height=88, width=88, num_frames=28)
    keys = make_synthetic_file(tmp_path / "s.h5", 4, seed=1, config=cfg, grid=8)
    assert len(keys) == 4
    check_file(tmp_path / "s.h5", 4, "train")
    with TrackReader(tmp_path / "s.h5") as reader:                      # metadata reproduces the scene
        stored = reader.scene(reader.scene_names[1])
    meta = stored.metadata
    again = render_scene(meta["seed"], SyntheticSceneConfig(**meta["config"]))
    assert np.array_equal(again.frames, stored.frames) and np.array_equal(again.depth, stored.depth)
    np.testing.assert_array_equal(again.cam_from_world, stored.cam_from_world)
    make_synthetic_file(tmp_path / "e.h5", 3, seed=2, config=cfg, grid=8, split="eval")
    check_file(tmp_path / "e.h5", 3, "eval")
    with pytest.raises(ValueError, match="split"):
        make_synthetic_file(tmp_path / "x.h5", 1, seed=0, config=cfg, split="test")
    assert not (tmp_path / "x.h5").exists()


def test_make_synthetic_script(tmp_path):
    out = tmp_path / "s.h5"
    cmd = [sys.executable, str(ROOT / "scripts" / "make_synthetic.py"), "--out", str(out), "--scenes", "4",
           "--seed", "3", "--size", "88", "--frames", "26", "--grid", "8"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    check_file(out, 4, "train")
    with TrackReader(out) as reader:
        meta = reader.scene_metadata(reader.scene_names[0])
    assert meta["made_by"]["scenes"] == 4 and meta["made_by"]["seed"] == 3
    assert meta["config"]["height"] == 88 and meta["config"]["num_frames"] == 26
    bad = subprocess.run([*cmd[:3], str(tmp_path / "bad.h5"), "--scenes", "1", "--pan", "120"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "pan_deg must be in [0, 90]" in bad.stderr and not (tmp_path / "bad.h5").exists()
