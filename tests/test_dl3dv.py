"""DL3DV conversion (tracks/dl3dv.py) on a fixture built here with known cameras.

Full resolution 960x540, images_4 at 240x135. Intrinsics fl_x=800, fl_y=810,
cx=481, cy=268 (corner convention) scale to fx=200, fy=202.5 and, in our
centre-of-top-left-pixel convention, cx = 481/4 - 0.5 = 119.75, cy = 268/4 - 0.5 = 66.5.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracks.dl3dv import distort_normalized, distort_points, load_dl3dv_scene, remap_nearest, undistort_points
from tracks.geometry import project
from tracks.io import TrackReader
from tracks.scene_folder import SceneError

ROOT = Path(__file__).resolve().parents[1]
W4, H4 = 240, 135
FX, FY, CX, CY = 200.0, 202.5, 119.75, 66.5
PLANE_Z = -4.0                      # world plane z = -4, in front of the OpenGL camera at the origin


def rot_y(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def c2w_gl(R, t):
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, t
    return M


# Frame numbers 5, 9, 17, listed out of order in transforms.json on purpose.
POSES = {
    17: c2w_gl(rot_y(8.0), [0.3, 0.1, 0.2]),
    5: c2w_gl(np.eye(3), [0.0, 0.0, 0.0]),
    9: c2w_gl(np.eye(3), [0.4, -0.2, 0.5]),
}


def plane_depth(c2w: np.ndarray) -> np.ndarray:
    """(H4, W4) OpenCV z-depth of the plane world z = PLANE_Z, by ray casting in OpenGL axes."""
    v, u = np.mgrid[0:H4, 0:W4].astype(np.float64)
    # OpenCV ray (x, y, 1) is OpenGL (x, -y, -1); rotate it to the world and intersect.
    d_gl = np.stack([(u - CX) / FX, -(v - CY) / FY, -np.ones_like(u)], axis=-1)
    d_world = d_gl @ c2w[:3, :3].T
    s = (PLANE_Z - c2w[2, 3]) / d_world[..., 2]                 # ray parameter = OpenCV z depth
    return s.astype(np.float32)


def make_fixture(root: Path, k1=0.0, k2=0.0, p1=0.0, p2=0.0, rgb=None) -> tuple[Path, Path]:
    scene, depth = root / "scene", root / "depth"
    (scene / "images_4").mkdir(parents=True)
    depth.mkdir()
    frames = []
    rng = np.random.default_rng(0)
    for n, c2w in POSES.items():
        stem = f"frame_{n:05d}"
        img = rng.integers(0, 256, (H4, W4, 3), dtype=np.uint8) if rgb is None else rgb
        Image.fromarray(img).save(scene / "images_4" / f"{stem}.png")
        np.save(depth / f"{stem}.npy", plane_depth(c2w))
        frames.append({"file_path": f"images/{stem}.png", "transform_matrix": c2w.tolist()})
    meta = {"camera_model": "OPENCV", "w": 960, "h": 540, "fl_x": 800.0, "fl_y": 810.0, "cx": 481.0,
            "cy": 268.0, "k1": k1, "k2": k2, "p1": p1, "p2": p2, "frames": frames}
    (scene / "transforms.json").write_text(json.dumps(meta))
    return scene, depth


def test_intrinsics_scaled_to_images_4(tmp_path):
    scene = load_dl3dv_scene(*make_fixture(tmp_path))
    assert scene.image_size == (H4, W4)
    K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
    np.testing.assert_allclose(scene.K, np.tile(K, (3, 1, 1)), atol=1e-12)


def test_frames_sorted_by_name_with_source_numbers(tmp_path):
    scene = load_dl3dv_scene(*make_fixture(tmp_path), images_factor=None)   # auto-detects images_4
    np.testing.assert_array_equal(scene.frame_index, [5, 9, 17])


def test_opengl_poses_become_opencv_cam_from_world(tmp_path):
    scene = load_dl3dv_scene(*make_fixture(tmp_path))
    # Identity OpenGL camera: OpenCV y and z point the other way.
    np.testing.assert_allclose(scene.cam_from_world[0], np.diag([1.0, -1, -1, 1]), atol=1e-12)
    # Pure translation t = (0.4, -0.2, 0.5): x_cv = x - tx, y_cv = -(y - ty), z_cv = -(z - tz).
    expected = np.array([[1, 0, 0, -0.4], [0, -1, 0, -0.2], [0, 0, -1, 0.5], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(scene.cam_from_world[1], expected, atol=1e-12)


def test_known_world_point_projects_to_hand_computed_pixel(tmp_path):
    scene = load_dl3dv_scene(*make_fixture(tmp_path))
    P = np.array([[1.0, 0.5, -4.0]])
    # Frame 5 (OpenGL camera at the origin): OpenCV camera point (1, -0.5, 4).
    # u = 200 * 1/4 + 119.75 = 169.75, v = 202.5 * -0.5/4 + 66.5 = 41.1875.
    xy, z = project(P, scene.K, scene.cam_from_world)
    np.testing.assert_allclose(xy[0, 0], [169.75, 41.1875], atol=1e-9)
    assert z[0, 0] == pytest.approx(4.0)
    # Frame 17, rotated 8 deg about y: OpenGL camera point R^T (P - t), then negate y and z.
    R, t = rot_y(8.0), np.array([0.3, 0.1, 0.2])
    p_gl = R.T @ (P[0] - t)
    x, y, zz = p_gl[0], -p_gl[1], -p_gl[2]
    np.testing.assert_allclose(xy[2, 0], [FX * x / zz + CX, FY * y / zz + CY], atol=1e-9)


def test_depth_agrees_with_cameras(tmp_path):
    """Grid tracks from frame 5 land where the plane depth says they should, and are visible."""
    from tracks.geometry import build_tracks
    scene = load_dl3dv_scene(*make_fixture(tmp_path))
    tracks, visible, track_depth = build_tracks(scene.depth, scene.K, scene.cam_from_world, grid=8)
    assert visible[1].mean() > 0.5 and visible[2].mean() > 0.5
    # A visible track's depth equals the plane depth map at its (nearest) pixel.
    f = 2
    xy = np.rint(tracks[f][visible[f]]).astype(int)
    np.testing.assert_allclose(track_depth[f][visible[f]], scene.depth[f][xy[:, 1], xy[:, 0]], rtol=0.02)


def test_distortion_is_refused_by_default(tmp_path):
    scene_dir, depth_dir = make_fixture(tmp_path, k1=-0.1, p1=0.001)
    with pytest.raises(SceneError, match=r"transforms.json: OPENCV distortion .* pass --undistort"):
        load_dl3dv_scene(scene_dir, depth_dir)


def test_negligible_distortion_is_accepted(tmp_path):
    scene = load_dl3dv_scene(*make_fixture(tmp_path, k1=1e-6))
    assert not scene.metadata["undistorted"]


COEFFS = np.array([-0.1, 0.02, 0.001, -0.0005, 0.0])       # k1, k2, p1, p2, k3
K4 = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])


def test_forward_model_matches_opencv_formula():
    # x = 0.3, y = -0.2: r2 = 0.13, radial = 1 - 0.1 * 0.13 + 0.02 * 0.13^2 = 0.987338
    # x_d = 0.3 * radial + 2 p1 x y + p2 (r2 + 2 x^2) = 0.2962014 - 0.00012 - 0.000155
    # y_d = -0.2 * radial + p1 (r2 + 2 y^2) + 2 p2 x y = -0.1974676 + 0.00021 + 0.00006
    np.testing.assert_allclose(distort_normalized(np.array([0.3, -0.2]), COEFFS),
                               [0.2959264, -0.1971976], atol=1e-10)


def test_point_distortion_round_trip():
    xy = np.stack(np.meshgrid(np.linspace(0, W4 - 1, 9), np.linspace(0, H4 - 1, 7)), -1).reshape(-1, 2)
    xy_d = distort_points(xy, K4, COEFFS)
    assert np.abs(xy_d - xy).max() > 5                          # the model really moves the corners
    np.testing.assert_allclose(undistort_points(xy_d, K4, COEFFS), xy, atol=0.01)


def test_undistorted_frames_sample_the_right_source_pixels(tmp_path):
    """Each distorted pixel encodes its undistorted x, y; after undistortion pixel (u, v) reads (u, v)."""
    v, u = np.mgrid[0:H4, 0:W4].astype(np.float64)
    und = undistort_points(np.stack([u, v], -1).reshape(-1, 2), K4, COEFFS).reshape(H4, W4, 2)
    rgb = np.zeros((H4, W4, 3), np.uint8)
    rgb[..., 0] = np.clip(np.rint(und[..., 0]), 0, 255)
    rgb[..., 1] = np.clip(np.rint(und[..., 1]), 0, 255)
    scene_dir, depth_dir = make_fixture(tmp_path, *COEFFS[:4], rgb=rgb)
    scene = load_dl3dv_scene(scene_dir, depth_dir, undistort=True)
    assert scene.metadata["undistorted"] and scene.metadata["max_distortion_px"] > 5
    out = scene.frames[0].astype(float)
    inner = (u > 2) & (u < W4 - 3) & (v > 2) & (v < H4 - 3)
    assert np.abs(out[..., 0] - u)[inner].max() < 1.0
    assert np.abs(out[..., 1] - v)[inner].max() < 1.0
    # Depth is resampled, not rescaled: a fronto-parallel plane stays at 4 m.
    np.testing.assert_allclose(scene.depth[0], 4.0, atol=1e-5)


def test_remap_nearest_marks_outside_unknown():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    src = np.array([[[0.4, 0.4], [3.4, 2.4], [-0.6, 0.0], [0.0, 2.6]]])       # (1, 4, 2)
    out = remap_nearest(depth, src)
    np.testing.assert_array_equal(out[0, :2], [0.0, 11.0])
    assert np.isnan(out[0, 2:]).all()


def test_depth_of_wrong_resolution(tmp_path):
    scene_dir, depth_dir = make_fixture(tmp_path)
    np.save(depth_dir / "frame_00009.npy", np.ones((540, 960), np.float32))
    with pytest.raises(SceneError, match=r"frame_00009.npy: depth has shape \(540, 960\) but its image is 135x240"):
        load_dl3dv_scene(scene_dir, depth_dir)


def test_missing_depth_and_missing_factor(tmp_path):
    scene_dir, depth_dir = make_fixture(tmp_path)
    with pytest.raises(SceneError, match=r"images_8: image folder for --factor 8 not found"):
        load_dl3dv_scene(scene_dir, depth_dir, images_factor=8)
    (depth_dir / "frame_00017.npy").unlink()
    with pytest.raises(SceneError, match=r"frame_00017.npy: depth file not found"):
        load_dl3dv_scene(scene_dir, depth_dir)


def test_non_finite_pose_names_the_frame(tmp_path):
    scene_dir, depth_dir = make_fixture(tmp_path)
    meta = json.loads((scene_dir / "transforms.json").read_text())
    meta["frames"][2]["transform_matrix"][0][3] = float("inf")       # frame_00009 (second when sorted)
    (scene_dir / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match=r"transforms.json: frame 1 has a non-finite .*frame_00009.png"):
        load_dl3dv_scene(scene_dir, depth_dir)


def run_convert(*argv):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_dl3dv.py"), *map(str, argv)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_convert_cli_refuses_then_undistorts(tmp_path):
    scene_dir, depth_dir = make_fixture(tmp_path, *COEFFS[:4])
    out = tmp_path / "out.h5"
    proc = run_convert("--scene", scene_dir, "--depth", depth_dir, "--out", out, "--frames", "all", "--grid", 8)
    assert proc.returncode == 2 and "pass --undistort" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = run_convert("--scene", scene_dir, "--depth", depth_dir, "--out", out, "--frames", "all",
                       "--grid", 8, "--undistort")
    assert proc.returncode == 0, proc.stderr
    with TrackReader(out) as reader:
        seq = reader[0]
    assert seq.num_points == 64 and seq.query_frame == 0
    np.testing.assert_array_equal(seq.frame_index, [5, 9, 17])
    assert seq.visible[1:].mean() > 0.5


def test_convert_cli_two_scenes_with_depth_per_scene(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    scene_a, depth_a = make_fixture(tmp_path / "a")
    scene_b, depth_b = make_fixture(tmp_path / "b")
    scene_b = scene_b.rename(tmp_path / "b" / "scene_b")
    out = tmp_path / "out.h5"
    proc = run_convert("--scene", scene_a, "--scene", scene_a, "--depth", depth_a, "--out", out, "--frames", "all")
    assert proc.returncode == 2 and "must be distinct" in proc.stderr and not out.exists()
    proc = run_convert("--scene", scene_a, "--scene", scene_b, "--depth", depth_a, "--depth", depth_b,
                       "--out", out, "--frames", "all", "--grid", 4)
    assert proc.returncode == 0, proc.stderr
    with TrackReader(out) as reader:
        assert len(reader) == 2 and sorted(reader.scene_names) == ["scene", "scene_b"]
