"""Sparse tracks from COLMAP models (tracks/colmap_points.py, colmap_sparse.py, convert_colmap.py --tracks sparse)
on a fixture written from COLMAP's documented format (tests/colmap_fixture.py), and on a model real COLMAP
(pycolmap) reconstructs from frames gasp renders, checked against the renderer's own geometry."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colmap_fixture import PINHOLE, make_model
from tracks.colmap_io import read_model
from tracks.colmap_points import read_points3d
from tracks.colmap_sparse import load_colmap_sparse, select_queries
from tracks.io import TrackReader
from tracks.scene_folder import SceneError

ROOT = Path(__file__).resolve().parents[1]


def run(*argv):
    from gasp_cli.convert_colmap import main

    return main([str(a) for a in argv])


def test_binary_and_text_points_and_keypoints_are_identical(tmp_path):
    fx = make_model(tmp_path)
    cams_b, imgs_b, _ = read_model(tmp_path / "sparse/0/bin")
    cams_t, imgs_t, _ = read_model(tmp_path / "sparse/0/txt")
    assert cams_b[1].model == cams_t[1].model == "OPENCV"
    np.testing.assert_array_equal(cams_b[1].params, cams_t[1].params)
    for i in imgs_b:
        np.testing.assert_array_equal(imgs_b[i].xy, imgs_t[i].xy)
        np.testing.assert_array_equal(imgs_b[i].point3d_ids, imgs_t[i].point3d_ids)
        assert (imgs_b[i].point3d_ids == -1).sum() == 5                              # unmatched keypoints
    pb, _ = read_points3d(tmp_path / "sparse/0/bin", "binary")
    pt, _ = read_points3d(tmp_path / "sparse/0/txt", "text")
    for k in ("ids", "xyz", "error", "offsets", "image_ids", "point2d_idx"):
        np.testing.assert_array_equal(getattr(pb, k), getattr(pt, k), err_msg=k)
    np.testing.assert_array_equal(pb.xyz, fx.xyz)
    np.testing.assert_array_equal(pb.track_lengths, fx.observed.sum(0))


@pytest.mark.parametrize("form", ["bin", "txt"])
def test_sparse_tracks_are_the_keypoints_with_unknown_elsewhere(tmp_path, form):
    fx = make_model(tmp_path)
    out = tmp_path / "s.h5"
    assert run("--colmap", tmp_path, "--tracks", "sparse", "--sparse", f"sparse/0/{form}", "--images", "images_2",
               "--out", out, "--frames", "all", "--grid", 4) == 0
    reader = TrackReader(out)
    seq = reader[0]
    meta = reader.scene_metadata(reader.scene_names[0])
    assert "cameras_omitted" in meta and seq.K is None and seq.depth is None      # OPENCV: frames kept as they are
    ids = np.array(seq.metadata["point3d_ids"]) - 100                             # fixture point index
    # gasp pixel at the images_2 size: COLMAP keypoint / 2 - 0.5
    expect = fx.keypoints[:, ids] / 2 - 0.5                                       # (T, N, 2) in name = frame order
    np.testing.assert_array_equal(seq.visible, fx.observed[:, ids])
    np.testing.assert_allclose(seq.tracks[seq.visible], expect[seq.visible], atol=1e-5)
    assert np.isnan(seq.tracks[~seq.visible]).all()
    assert not seq.occluded.any()                                                 # unlisted = unknown
    np.testing.assert_allclose(seq.track_depth[seq.visible], fx.camera_z()[:, ids][seq.visible], rtol=1e-6)
    # sensitivity: without the half-pixel shift, or scaled in the wrong order, tracks would be >= 0.25 px off
    assert np.abs((fx.keypoints[:, ids] - 0.5) / 2 - expect)[seq.visible].min() >= 0.25 - 1e-9
    # the queries: one per cell of a 4 x 4 grid over frame 0, the longest-tracked keypoint in it
    q = fx.observed[0] & (fx.observed.sum(0) >= 2)
    xy0 = fx.keypoints[0] / 2 - 0.5
    cell = (np.floor((xy0[:, 1] + 0.5) * 4 / 30) * 4 + np.floor((xy0[:, 0] + 0.5) * 4 / 40))
    best = {}
    for p in np.flatnonzero(q):
        key = (-fx.observed[:, p].sum(), 0.1 + 0.01 * p, p)
        if cell[p] not in best or key < best[cell[p]][0]:
            best[cell[p]] = (key, p)
    assert sorted(ids.tolist()) == sorted(p for _, p in best.values())
    assert seq.visible[0].all() and (seq.visible.sum(0) >= 2).all()


def test_undistort_resamples_and_keypoints_become_pinhole_projections(tmp_path):
    fx = make_model(tmp_path)
    out = tmp_path / "u.h5"
    assert run("--colmap", tmp_path, "--tracks", "sparse", "--sparse", "sparse/0/bin", "--images", "images_2",
               "--undistort", "--out", out, "--frames", "all", "--grid", 6) == 0
    seq = TrackReader(out)[0]
    ids = np.array(seq.metadata["point3d_ids"]) - 100
    expect = fx.pinhole_pixels()[:, ids]
    np.testing.assert_allclose(seq.tracks[seq.visible], expect[seq.visible], atol=1e-4)
    assert np.abs(fx.keypoints[:, ids] / 2 - 0.5 - expect)[seq.visible].max() > 0.2    # the distortion was real
    assert seq.K is not None
    np.testing.assert_allclose(seq.K[0], [[30, 0, 40.3 / 2 - 0.5], [0, 31, 29.6 / 2 - 0.5], [0, 0, 1]], atol=1e-12)


def test_dl3dv_colmap_cache_layout_as_downloaded(tmp_path):
    """DL3DV's cache: SCENE/colmap/sparse/0/{cameras,images,points3D}.bin and SCENE/colmap/images_4."""
    src = tmp_path / "src"
    fx = make_model(src, factor=4)
    colmap = tmp_path / "1K" / "0a1b2c" / "colmap"
    (colmap / "sparse").mkdir(parents=True)
    shutil.copytree(src / "sparse/0/bin", colmap / "sparse" / "0")
    shutil.copytree(src / "images_4", colmap / "images_4")
    out = tmp_path / "d.h5"
    assert run("--colmap", colmap, "--tracks", "sparse", "--images", "images_4", "--out", out, "--frames", "all",
               "--grid", 8) == 0
    seq = TrackReader(out)[0]
    ids = np.array(seq.metadata["point3d_ids"]) - 100
    np.testing.assert_allclose(seq.tracks[seq.visible], (fx.keypoints[:, ids] / 4 - 0.5)[seq.visible], atol=1e-5)
    np.testing.assert_array_equal(seq.frame_index, [3, 7, 12, 20])


def test_sampled_sequences_and_query_selection_unit(tmp_path):
    make_model(tmp_path, model="PINHOLE", params=PINHOLE)
    sp = load_colmap_sparse(tmp_path, sparse="sparse/0/bin", images="images_2")
    assert sp.scene.K is not None                                      # a pinhole model keeps its cameras
    t = select_queries(sp, np.array([2, 0, 3]), grid=3)                # query frame = scene frame 2
    assert t.tracks.shape[0] == 3 and 0 < t.tracks.shape[1] <= 9
    assert t.visible[0].all() and (t.visible[1:].sum(0) >= 1).all()


def _missing_points(root):
    (root / "sparse/0/bin/points3D.bin").unlink()


def _truncated_points(root):
    p = root / "sparse/0/bin/points3D.bin"
    p.write_bytes(p.read_bytes()[:-7])


def _foreign_points(root):
    """points3D of another model: its tracks name keypoints that belong to other points."""
    other = root / "other"
    make_model(other, seed=5)
    shutil.copy(other / "sparse/0/bin/points3D.bin", root / "sparse/0/bin/points3D.bin")


@pytest.mark.parametrize("spoil, message", [
    (_missing_points, r"sparse/0/bin/points3D.bin: file not found; sparse tracks .* need the model's 3D points"),
    (_truncated_points, r"points3D.bin: file is truncated"),
    (_foreign_points, r"points3D.bin: .*come from different models"),
], ids=["missing", "truncated", "foreign"])
def test_bad_models_give_one_line_and_no_output(tmp_path, capsys, spoil, message):
    make_model(tmp_path)
    spoil(tmp_path)
    with pytest.raises(SceneError, match=message):
        load_colmap_sparse(tmp_path, sparse="sparse/0/bin", images="images_2")
    out = tmp_path / "new" / "s.h5"
    assert run("--colmap", tmp_path, "--tracks", "sparse", "--sparse", "sparse/0/bin", "--images", "images_2",
               "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("convert_colmap: error: ") and not (tmp_path / "new").exists()


def test_a_model_without_any_point_seen_twice_says_what_to_do(tmp_path):
    make_model(tmp_path, single_observation=True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_colmap.py"), "--colmap", str(tmp_path),
                           "--tracks", "sparse", "--sparse", "sparse/0/bin", "--images", "images_2", "--out",
                           str(tmp_path / "s.h5")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "no 3D point is observed in two frames" in line and "--use_ba" in line and "convert_vggt.py" in line
    assert not (tmp_path / "s.h5").exists()


def test_sparse_tracks_refuse_depth_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("--colmap", tmp_path, "--tracks", "sparse", "--depth-npy", tmp_path, "--out", tmp_path / "x.h5")
    assert "reads no depth" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real COLMAP

def test_real_colmap_sfm_on_rendered_frames_matches_the_geometry(tmp_path):
    """pycolmap runs SIFT, matching and incremental mapping on three frames gasp renders, and writes its model.

    Our reading of that model must equal pycolmap's own, and its tracks must follow the renderer's
    true geometry: each query keypoint, unprojected with the true depth and moved by the true cameras,
    lands where COLMAP matched it. That comparison is blind to a shift common to all keypoints, so the
    conventions are pinned absolutely: COLMAP keeps the principal point at the image centre, so our K
    must equal the renderer's, and COLMAP's own points, projected with our K, must land on our tracks
    (a half-pixel slip of the keypoints shows as a 0.5 px mean offset).
    """
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (the test extra) runs real COLMAP SfM")
    from PIL import Image

    from tracks.geometry import project, sample_nearest, unproject
    from tracks.synthetic import SyntheticSceneConfig, render_scene

    scene = render_scene(3, SyntheticSceneConfig(height=240, width=320, num_frames=12, texture_max_freq=16))
    ws = tmp_path / "ws"
    (ws / "images").mkdir(parents=True)
    ids = [0, 3, 6]
    for i in ids:
        Image.fromarray(scene.frames[i]).save(ws / "images" / f"frame_{i:03d}.png")
    db = ws / "database.db"
    pycolmap.set_random_seed(0)                                  # one thread and a fixed seed: a repeatable model
    extraction, matching = pycolmap.FeatureExtractionOptions(), pycolmap.FeatureMatchingOptions()
    extraction.num_threads = matching.num_threads = 1
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads, mapping.random_seed = 1, 0
    pycolmap.extract_features(db, ws / "images", camera_mode=pycolmap.CameraMode.SINGLE,   # SIMPLE_RADIAL
                              extraction_options=extraction)
    pycolmap.match_exhaustive(db, matching_options=matching)
    maps = pycolmap.incremental_mapping(db, ws / "images", ws / "sparse", options=mapping)
    assert maps, "COLMAP reconstructed nothing"
    model_dir = ws / "sparse" / "0"
    rec = pycolmap.Reconstruction(str(model_dir))
    (ws / "txt").mkdir()
    rec.write_text(str(ws / "txt"))

    # 1. our parse of COLMAP's binary and text files equals pycolmap's
    for sub, form in ((model_dir, "binary"), (ws / "txt", "text")):
        cams, imgs, _ = read_model(sub)
        points, _ = read_points3d(sub, form)
        for cid, cam in rec.cameras.items():
            np.testing.assert_allclose(cams[cid].params, cam.params, rtol=1e-12)
        for iid, im in rec.images.items():
            np.testing.assert_allclose(imgs[iid].xy, np.array([p.xy for p in im.points2D]), rtol=1e-12)
        assert sorted(points.ids.tolist()) == sorted(rec.points3D.keys())
        pid = int(points.ids[0])
        els = sorted((e.image_id, e.point2D_idx) for e in rec.points3D[pid].track.elements)
        sl = slice(points.offsets[0], points.offsets[1])
        assert sorted(zip(points.image_ids[sl].tolist(), points.point2d_idx[sl].tolist())) == els

    # 2. the tracks follow the true geometry of the rendered scene
    out = tmp_path / "s.h5"
    assert run("--colmap", ws, "--tracks", "sparse", "--out", out, "--frames", "all", "--grid", 16) == 0
    seq = TrackReader(out)[0]
    assert seq.num_points >= 30
    true = dict(depth=scene.depth[ids], K=scene.K[ids], T=scene.cam_from_world[ids])
    q = seq.tracks[0].astype(np.float64)                                             # (N, 2) query keypoints
    d, _ = sample_nearest(true["depth"][:1], q[None])
    cam = unproject(q, d[0], true["K"][0])
    world = cam @ np.linalg.inv(true["T"][0])[:3, :3].T + np.linalg.inv(true["T"][0])[:3, 3]
    xy, _ = project(world, true["K"], true["T"])                                     # (3, N, 2) true positions
    err = (seq.tracks - xy)[1:][seq.visible[1:]]                                     # (M, 2)
    dist = np.hypot(*err.T)
    good = dist < 2.0                                   # drop the few matches on depth edges
    assert good.mean() > 0.8, f"only {good.mean():.0%} of COLMAP's tracks follow the geometry"
    assert np.abs(err[good].mean(0)).max() < 0.15, f"systematic offset {err[good].mean(0)} px"

    # 3. absolute conventions: K as the renderer's; COLMAP's points reproject onto our tracks without offset
    from tracks.colmap import read_colmap_model

    model = read_colmap_model(ws)
    np.testing.assert_allclose(model.K[:, :2, 2], scene.K[ids, :2, 2], atol=1e-9)     # (W - 1) / 2, (H - 1) / 2
    cam = rec.cameras[1]
    f, k = cam.params[0], cam.params[3]                                               # SIMPLE_RADIAL f, cx, cy, k
    res = []
    for n, pid in enumerate(seq.metadata["point3d_ids"]):
        X = rec.points3D[pid].xyz
        for t in np.flatnonzero(seq.visible[:, n]):
            pc = model.cam_from_world[t, :3, :3] @ X + model.cam_from_world[t, :3, 3]
            xn = pc[:2] / pc[2]
            xd = xn * (1 + k * (xn ** 2).sum())
            res.append(f * xd + model.K[t, :2, 2] - seq.tracks[t, n])
    res = np.array(res)
    # COLMAP's own reprojection error sets the spread; a convention slip would shift the mean by 0.5 px
    assert np.median(np.hypot(*res.T)) < 1.5 and np.abs(res.mean(0)).max() < 0.1, (np.median(np.hypot(*res.T)),
                                                                                 res.mean(0))
