"""Depth from elsewhere brought to the poses' units (tracks/depth_align.py, tracks/colmap.py, tracks/dl3dv.py).

COLMAP: the fixture model (tests/colmap_fixture.py, PINHOLE cameras, points on the plane z = 5)
with depth maps ray-cast here for the images_2 size; metric-looking depth is that times 3.
DL3DV (transforms.json, no sparse points): a scene gasp renders (textured, metric poses),
written in DL3DV's layout, checked by multi-view consistency.
"""
import json

import numpy as np
import pytest
from PIL import Image

from colmap_fixture import CAMERA_POSES, PINHOLE, PLANE_Z, make_model
from tracks.colmap import load_colmap_scene
from tracks.depth_align import Samples, check_alignment, fit_scale
from tracks.dl3dv import load_dl3dv_scene
from tracks.io import TrackReader
from tracks.scene_folder import SceneError


def plane_depth(params, factor, R, C, h, w):
    """(h, w) camera z of the plane z = PLANE_Z through each pixel centre of the downscaled image."""
    fx, fy, cx, cy = params[:4]
    v, u = (np.mgrid[0:h, 0:w] + 0.5) * factor                    # COLMAP full-size corner coordinates
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1) @ R      # world direction, camera z = 1
    return ((PLANE_Z - C[2]) / d[..., 2]).astype(np.float32)


def write_depth(root, scale=1.0, per_frame=None, name="npy"):
    d = root / name
    d.mkdir(exist_ok=True)
    for t, (img, (_, R, C)) in enumerate(CAMERA_POSES.items()):
        s = scale * (per_frame[t] if per_frame is not None else 1.0)
        np.save(d / img.replace(".png", ".npy"), plane_depth(PINHOLE, 2, R, C, 30, 40) * s)
    return d


@pytest.fixture
def model(tmp_path):
    make_model(tmp_path, model="PINHOLE", params=PINHOLE)
    return tmp_path


def load(root, depth_dir, **kw):
    return load_colmap_scene(root, sparse="sparse/0/bin", images="images_2", depth_npy=depth_dir, **kw)


def test_depth_in_the_poses_units_passes_the_check(model):
    scene = load(model, write_depth(model))
    al = scene.metadata["depth_alignment"]
    assert al["mode"] == "check" and al["ratio_pose_over_depth"] == pytest.approx(1.0, abs=0.02)
    assert al["median_residual"] < 0.02 and al["reprojection"]["median_px"] < 1e-6
    np.testing.assert_array_equal(scene.depth, np.stack([np.load(p) for p in sorted((model / "npy").glob("*.npy"))]))


def test_metric_depth_is_refused_then_aligned(model):
    wrong = write_depth(model, scale=3.0, name="metric")
    with pytest.raises(SceneError, match=r"metric: depth and poses disagree in units: the sparse points' camera z is "
                                         r"0\.333\d* x the depth .*--align-depth scene"):
        load(model, wrong)
    scene = load(model, wrong, align_depth="scene")
    truth = load(model, write_depth(model)).depth
    np.testing.assert_allclose(scene.depth, truth, rtol=0.02)
    assert scene.metadata["depth_alignment"]["scale"] == pytest.approx(1 / 3, rel=0.02)


def test_per_frame_scales_need_frame_alignment(model):
    per = [1.0, 2.0, 0.5, 1.5]
    wild = write_depth(model, per_frame=per, name="wild")
    with pytest.raises(SceneError, match=r"wild: depth disagrees with the poses in frame \d \(frame_00\d\d.png\): "
                                         r"median relative error \d+\.\d% over \d+ sparse points after 'scene'"):
        load(model, wild, align_depth="scene")
    scene = load(model, wild, align_depth="frame")
    np.testing.assert_allclose(scene.metadata["depth_alignment"]["scale"], 1 / np.array(per), rtol=0.02)
    np.testing.assert_allclose(scene.depth, load(model, write_depth(model)).depth, rtol=0.02)


def test_broken_cameras_fail_the_reprojection_check(model):
    """cameras.bin with another principal point: the points no longer land on their keypoints."""
    import struct

    path = model / "sparse/0/bin/cameras.bin"
    data = bytearray(path.read_bytes())
    struct.pack_into("<d", data, 8 + 24 + 16, PINHOLE[2] + 9.0)          # cx of camera 1
    path.write_bytes(bytes(data))
    with pytest.raises(SceneError, match=r"points3D.bin: the sparse points do not reproject onto their keypoints in "
                                         r"frame \d .*median error [4-5]\.\d\d px"):
        load(model, write_depth(model))


def test_distorted_cameras_with_depth_need_undistort(tmp_path):
    make_model(tmp_path)                                                  # OPENCV
    d = write_depth(tmp_path)
    with pytest.raises(SceneError, match=r"cameras.bin: the cameras' distortion moves pixels by up to .*--undistort"):
        load(tmp_path, d, align_depth="none")
    scene = load(tmp_path, d, align_depth="none", undistort=True)
    raw = np.stack([np.load(d / n.replace(".png", ".npy")) for n in CAMERA_POSES])
    assert scene.metadata["undistorted"] and not np.allclose(scene.depth, raw, equal_nan=True)   # resampled


def test_fit_scale_by_hand():
    s = Samples(frame=np.repeat([0, 1], 12), depth=np.r_[np.full(12, 2.0), np.full(12, 4.0)],
                z=np.r_[np.full(11, 4.0), 40.0, np.full(12, 8.0)])       # one outlier in frame 0
    al = fit_scale(s, 2, "scene")
    assert al.ratio == 2.0 and (al.scale == 2.0).all()                   # the median ignores the outlier
    assert al.residual.tolist() == [0.0, 0.0] and al.counts.tolist() == [12, 12]
    check_alignment(fit_scale(s, 2, "frame"), "x", ["a", "b"])
    with pytest.raises(ValueError, match="disagree in units.*2 x the depth"):
        check_alignment(fit_scale(s, 2, "check"), "x", ["a", "b"])


# ----------------------------------------------------------------------------- DL3DV without sparse points

def write_dl3dv(root, scene, depth_scale):
    """DL3DV's layout for a rendered scene: transforms.json (OpenGL camera-to-world, corner-convention K) and
    images_4/ frames with depth .npy beside them."""
    from tracks.dl3dv import OPENGL_TO_OPENCV

    (root / "images_4").mkdir(parents=True)
    (root / "depth").mkdir()
    H, W = scene.image_size
    K = scene.K[0]
    frames = []
    for t in range(scene.num_frames):
        stem = f"frame_{t + 1:05d}"
        Image.fromarray(scene.frames[t]).save(root / "images_4" / f"{stem}.png")
        np.save(root / "depth" / f"{stem}.npy", scene.depth[t] * depth_scale)
        c2w = np.linalg.inv(scene.cam_from_world[t]) @ OPENGL_TO_OPENCV
        frames.append({"file_path": f"images/{stem}.png", "transform_matrix": c2w.tolist()})
    meta = {"camera_model": "OPENCV", "w": 4 * W, "h": 4 * H, "fl_x": 4 * K[0, 0], "fl_y": 4 * K[1, 1],
            "cx": 4 * (K[0, 2] + 0.5), "cy": 4 * (K[1, 2] + 0.5), "k1": 0, "k2": 0, "p1": 0, "p2": 0, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root, root / "depth"


@pytest.fixture(scope="module")
def rendered():
    from tracks.synthetic import SyntheticSceneConfig, render_scene

    return render_scene(5, SyntheticSceneConfig(height=96, width=128, num_frames=10))


@pytest.mark.slow
def test_dl3dv_metric_depth_is_refused_by_the_multiview_check(tmp_path, rendered, capsys):
    ok = load_dl3dv_scene(*write_dl3dv(tmp_path / "ok", rendered, 1.0))
    c = ok.metadata["depth_alignment"]
    assert c["decided"] and c["best_scale"] == pytest.approx(1.0, rel=0.1)
    scene_dir, depth_dir = write_dl3dv(tmp_path / "metric", rendered, 3.0)
    with pytest.raises(SceneError, match=r"depth and poses disagree in units: frames agree best when the depth is "
                                         r"scaled by 0\.3\d.*--depth-scale"):
        load_dl3dv_scene(scene_dir, depth_dir)
    fixed = load_dl3dv_scene(scene_dir, depth_dir, depth_scale=1 / 3)
    np.testing.assert_allclose(fixed.depth, ok.depth, rtol=1e-5)
    from gasp_cli.convert_dl3dv import main

    out = tmp_path / "new" / "d.h5"
    assert main(["--scene", str(scene_dir), "--depth", str(depth_dir), "--out", str(out), "--frames", "all"]) == 2
    assert "convert_dl3dv: error:" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["--scene", str(scene_dir), "--depth", str(depth_dir), "--out", str(out), "--frames", "all",
                 "--depth-scale", str(1 / 3), "--grid", "4"]) == 0
    assert TrackReader(out)[0].visible.any()
