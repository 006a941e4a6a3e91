"""COLMAP import (tracks/colmap.py, tracks/colmap_io.py, scripts/convert_colmap.py) on known geometry.

The fixture is written here, following COLMAP's documented formats (doc/format.rst,
src/colmap/scene/reconstruction_io_*.cc, src/colmap/mvs/mat.h), in binary and text form.
World: a plane z = 5 and, in front of it, an occluding rectangle z = 2.5, x in [1.8, 3.0],
y in [-0.8, 0.8] that the first camera does not see. Images are 40 x 30 (W x H, not square).

    name          image_id  camera                                         centre
    frame_9.png   7         1 PINHOLE  fx=30 fy=32 cx=20.3 cy=14.6          (0, 0, 0), R = I
    frame_10.png  3         2 SIMPLE_PINHOLE f=31 cx=19.8 cy=15.2            (1.5, 0, 0), R = I
    frame_30.png  12        1                                               (0.6, -0.3, 0.4), R = rot(-8 deg)

COLMAP's principal points put the top-left pixel's centre at (0.5, 0.5); the depth maps
are ray-cast through those centres, so a missing half-pixel shift shows up as tracks
0.5 px off. Name order (frame_10, frame_30, frame_9) differs from frame-number order.
"""
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracks.colmap import load_colmap_scene
from tracks.colmap_io import read_colmap_array, read_model, rotation_from_qvec
from tracks.geometry import project
from tracks.io import TrackReader
from tracks.scene_folder import SceneError

ROOT = Path(__file__).resolve().parents[1]
W, H = 40, 30
PLANE_Z, OCC_Z, OCC_X, OCC_Y = 5.0, 2.5, (1.8, 3.0), (-0.8, 0.8)
CAMERAS = {1: ("PINHOLE", [30.0, 32.0, 20.3, 14.6]), 2: ("SIMPLE_PINHOLE", [31.0, 19.8, 15.2])}
MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "OPENCV": 4}


def rodrigues(axis, deg):
    n = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    nx = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return np.eye(3) * np.cos(a) + np.sin(a) * nx + (1 - np.cos(a)) * np.outer(n, n)


def quaternion(axis, deg):
    """Hamilton (w, x, y, z) of a rotation by deg about axis."""
    n = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg) / 2
    return np.concatenate([[np.cos(a)], np.sin(a) * n])


AXIS30, DEG30 = (0.2, 1.0, 0.1), -8.0
# name -> image_id, camera_id, qvec, rotation, centre
IMAGES = {
    "frame_9.png": (7, 1, np.array([1.0, 0, 0, 0]), np.eye(3), np.zeros(3)),
    "frame_10.png": (3, 2, np.array([1.0, 0, 0, 0]), np.eye(3), np.array([1.5, 0, 0])),
    "frame_30.png": (12, 1, quaternion(AXIS30, DEG30), rodrigues(AXIS30, DEG30), np.array([0.6, -0.3, 0.4])),
}


def focal_principal(cam_id, scale=1.0):
    model, p = CAMERAS[cam_id]
    fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if model == "SIMPLE_PINHOLE" else p
    return fx * scale, fy * scale, cx * scale, cy * scale


def tvec(name):
    _, _, _, R, C = IMAGES[name]
    return -R @ C


def ray_cast_depth(name, scale=1.0):
    """(H, W) camera-z depth through COLMAP pixel centres (j + 0.5, i + 0.5)."""
    _, cam_id, _, R, C = IMAGES[name]
    fx, fy, cx, cy = focal_principal(cam_id, scale)
    h, w = round(H * scale), round(W * scale)
    v, u = np.mgrid[0:h, 0:w] + 0.5
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1) @ R      # R^T d per pixel
    depth = (PLANE_Z - C[2]) / d[..., 2]                                       # = camera z, as d_cam.z = 1
    s = (OCC_Z - C[2]) / d[..., 2]
    hit = C + s[..., None] * d
    on_occ = ((hit[..., 0] >= OCC_X[0]) & (hit[..., 0] <= OCC_X[1])
              & (hit[..., 1] >= OCC_Y[0]) & (hit[..., 1] <= OCC_Y[1]))
    return np.where(on_occ & (s > 0), np.minimum(s, depth), depth).astype(np.float32)


# ----------------------------------------------------------------------------- writers (COLMAP formats)

def write_depth_bin(path: Path, depth: np.ndarray):
    """COLMAP Mat<float>::Write: 'W&H&C&' then element (row, col, ch) at ch*W*H + row*W + col."""
    arr = depth if depth.ndim == 3 else depth[..., None]
    h, w, c = arr.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"{w}&{h}&{c}&".encode() + np.ascontiguousarray(arr.transpose(2, 0, 1)).astype("<f4").tobytes())


def write_model_text(d: Path, cameras=CAMERAS):
    d.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [" ".join([str(i), model, str(W), str(H), *map(repr, params)]) for i, (model, params) in cameras.items()]
    (d / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for k, (name, (image_id, cam_id, q, _, _)) in enumerate(IMAGES.items()):
        lines.append(" ".join([str(image_id), *map(repr, map(float, q)), *map(repr, map(float, tvec(name))),
                               str(cam_id), name]))
        lines.append("" if k == 1 else "12.5 3.25 -1 7.0 8.0 42")     # an image without keypoints: empty line
    (d / "images.txt").write_text("\n".join(lines) + "\n")


def write_model_binary(d: Path, cameras=CAMERAS):
    d.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(cameras))
    for i, (model, params) in cameras.items():
        data += struct.pack("<IiQQ", i, MODEL_IDS[model], W, H) + struct.pack(f"<{len(params)}d", *params)
    (d / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(IMAGES))
    for k, (name, (image_id, cam_id, q, _, _)) in enumerate(IMAGES.items()):
        data += struct.pack("<I7dI", image_id, *q, *tvec(name), cam_id) + name.encode() + b"\0"
        points = [] if k == 1 else [(12.5, 3.25, 2**64 - 1), (7.0, 8.0, 42)]
        data += struct.pack("<Q", len(points)) + b"".join(struct.pack("<ddQ", *p) for p in points)
    (d / "images.bin").write_bytes(data)


def make_workspace(root: Path, form="binary", scale=1.0) -> Path:
    """COLMAP workspace: images/, sparse/ (binary, text or both), stereo/depth_maps/*.geometric.bin, npy/."""
    ws = root / "ws"
    if form in ("binary", "both"):
        write_model_binary(ws / "sparse")
    if form in ("text", "both"):
        write_model_text(ws / "sparse")
    rng = np.random.default_rng(0)
    for name in IMAGES:
        depth = ray_cast_depth(name, scale)
        img_dir = ws / ("images" if scale == 1.0 else "images_2")
        img_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*depth.shape, 3), dtype=np.uint8)).save(img_dir / name)
        write_depth_bin(ws / "stereo" / "depth_maps" / f"{name}.geometric.bin", depth)
        (ws / "npy").mkdir(exist_ok=True)
        np.save(ws / "npy" / f"{Path(name).stem}.npy", depth)
    return ws


# ----------------------------------------------------------------------------- file formats

def test_quaternion_is_hamilton_world_to_camera():
    R = rotation_from_qvec(quaternion(AXIS30, DEG30))
    np.testing.assert_allclose(R, rodrigues(AXIS30, DEG30), atol=1e-12)
    assert not np.allclose(R, R.T, atol=1e-3)                   # the JPL reading (R^T) would differ
    np.testing.assert_allclose(rotation_from_qvec(2.0 * quaternion(AXIS30, DEG30)), R, atol=1e-12)


def test_binary_and_text_models_are_identical(tmp_path):
    write_model_binary(tmp_path / "bin")
    write_model_text(tmp_path / "txt")
    cams_b, imgs_b, kind_b = read_model(tmp_path / "bin")
    cams_t, imgs_t, kind_t = read_model(tmp_path / "txt")
    assert (kind_b, kind_t) == ("binary", "text")
    assert sorted(cams_b) == sorted(cams_t) == [1, 2] and sorted(imgs_b) == sorted(imgs_t) == [3, 7, 12]
    for i in cams_b:
        assert (cams_b[i].model, cams_b[i].width, cams_b[i].height) == (cams_t[i].model, W, H) == (CAMERAS[i][0], W, H)
        np.testing.assert_array_equal(cams_b[i].params, cams_t[i].params)
    for i in imgs_b:
        assert (imgs_b[i].name, imgs_b[i].camera_id) == (imgs_t[i].name, imgs_t[i].camera_id)
        np.testing.assert_array_equal(imgs_b[i].qvec, imgs_t[i].qvec)
        np.testing.assert_array_equal(imgs_b[i].tvec, imgs_t[i].tvec)

    scene_b = load_colmap_scene(make_workspace(tmp_path / "b", "binary"))
    scene_t = load_colmap_scene(make_workspace(tmp_path / "t", "text"))
    np.testing.assert_array_equal(scene_b.K, scene_t.K)
    np.testing.assert_array_equal(scene_b.cam_from_world, scene_t.cam_from_world)
    assert scene_b.metadata["image_names"] == scene_t.metadata["image_names"]
    assert (scene_b.metadata["model_format"], scene_t.metadata["model_format"]) == ("binary", "text")
    assert load_colmap_scene(make_workspace(tmp_path / "both", "both")).metadata["model_format"] == "binary"


def test_model_found_in_sparse_0_and_truncated_file_refused(tmp_path):
    ws = make_workspace(tmp_path)
    (ws / "sparse").rename(tmp_path / "model")
    (ws / "sparse").mkdir()
    (tmp_path / "model").rename(ws / "sparse" / "0")                  # the mapper's layout
    assert load_colmap_scene(ws).metadata["model"] == "sparse/0"
    images_bin = ws / "sparse" / "0" / "images.bin"
    images_bin.write_bytes(images_bin.read_bytes()[:-30])
    with pytest.raises(SceneError, match=r"sparse/0/images.bin: file is truncated"):
        load_colmap_scene(ws)


@pytest.mark.parametrize("shape", [(6, 17), (17, 6), (4, 5, 3)])
def test_depth_bin_layout(tmp_path, shape):
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * 0.5 + 1.0
    path = tmp_path / "x.geometric.bin"
    write_depth_bin(path, arr)
    h, w = shape[:2]
    raw = path.read_bytes()
    header = f"{w}&{h}&{shape[2] if len(shape) == 3 else 1}&".encode()
    assert raw.startswith(header)
    # element (row 2, col 3) of channel c sits at c * W * H + 2 * W + 3 floats after the header
    for c in range(arr.shape[2] if arr.ndim == 3 else 1):
        value = arr[2, 3, c] if arr.ndim == 3 else arr[2, 3]
        assert struct.unpack_from("<f", raw, len(header) + 4 * (c * w * h + 2 * w + 3))[0] == value
    out = read_colmap_array(path)
    assert out.shape == arr.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, arr)


def test_depth_bin_bad_files(tmp_path):
    bad = tmp_path / "bad.geometric.bin"
    bad.write_bytes(b"not a depth map")
    with pytest.raises(SceneError, match=r"bad.geometric.bin: not a COLMAP depth map"):
        read_colmap_array(bad)
    bad.write_bytes(b"4&3&1&" + np.zeros(11, "<f4").tobytes())
    with pytest.raises(SceneError, match=r"bad.geometric.bin: header says 4x3x1 .* = 48 bytes .* holds 44"):
        read_colmap_array(bad)


# ----------------------------------------------------------------------------- scene

def test_known_points_project_to_known_pixels(tmp_path):
    scene = load_colmap_scene(make_workspace(tmp_path))
    np.testing.assert_array_equal(scene.frame_index, [9, 10, 30])        # number order, not name order
    assert scene.metadata["image_names"] == ["frame_9.png", "frame_10.png", "frame_30.png"]
    np.testing.assert_allclose(scene.K[0], [[30, 0, 19.8], [0, 32, 14.1], [0, 0, 1]], atol=1e-12)   # cx - 0.5
    np.testing.assert_allclose(scene.K[1], [[31, 0, 19.3], [0, 31, 14.7], [0, 0, 1]], atol=1e-12)
    P = np.array([[1.0, -0.5, 5.0]])
    xy, z = project(P, scene.K, scene.cam_from_world)
    # frame 9 (identity): COLMAP pixel (30 * 0.2 + 20.3, 32 * -0.1 + 14.6) = (26.3, 11.4) -> ours (25.8, 10.9)
    np.testing.assert_allclose(xy[0, 0], [25.8, 10.9], atol=1e-9)
    # frame 10 (centre x = 1.5): camera point (-0.5, -0.5, 5) -> (31 * -0.1 + 19.8, 31 * -0.1 + 15.2) - 0.5
    np.testing.assert_allclose(xy[1, 0], [16.2, 11.6], atol=1e-9)
    # frame 30: R (P - C) by Rodrigues, then the COLMAP pinhole formula, then - 0.5
    pc = rodrigues(AXIS30, DEG30) @ (P[0] - IMAGES["frame_30.png"][4])
    fx, fy, cx, cy = focal_principal(1)
    np.testing.assert_allclose(xy[2, 0], [fx * pc[0] / pc[2] + cx - 0.5, fy * pc[1] / pc[2] + cy - 0.5], atol=1e-9)
    np.testing.assert_allclose(z[:, 0], [5.0, 5.0, pc[2]], atol=1e-9)


def test_depth_bin_and_npy_give_the_same_scene(tmp_path):
    ws = make_workspace(tmp_path)
    a, b = load_colmap_scene(ws), load_colmap_scene(ws, depth_npy=ws / "npy")
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.depth[1], ray_cast_depth("frame_10.png"))
    assert a.metadata["depth"] == {"geometric": 3} and b.metadata["depth"] == {"npy": 3}
    (ws / "stereo/depth_maps/frame_30.png.geometric.bin").rename(ws / "stereo/depth_maps/frame_30.png.photometric.bin")
    c = load_colmap_scene(ws)
    assert c.metadata["depth"] == {"geometric": 2, "photometric": 1}
    np.testing.assert_array_equal(c.depth, a.depth)


def test_downscaled_images_scale_k_in_the_corner_convention(tmp_path):
    ws = make_workspace(tmp_path, scale=0.5)
    scene = load_colmap_scene(ws, images="images_2", depth_npy=ws / "npy")
    assert scene.image_size == (15, 20)
    np.testing.assert_allclose(scene.K[0], [[15, 0, 20.3 / 2 - 0.5], [0, 16, 14.6 / 2 - 0.5], [0, 0, 1]], atol=1e-12)


def expected_tracks(query_xy):
    """Independent ground truth for frame-9 queries: pixels (F, N, 2), visible (F, N), ambiguous (F, N)."""
    fx, fy, cx, cy = focal_principal(1)
    u_c, v_c = query_xy[:, 0] + 0.5, query_xy[:, 1] + 0.5              # ours -> COLMAP
    X = np.stack([(u_c - cx) / fx * PLANE_Z, (v_c - cy) / fy * PLANE_Z, np.full(len(u_c), PLANE_Z)], -1)
    pix, vis, amb = [], [], []
    for name, (_, cam_id, _, R, C) in IMAGES.items():
        fx, fy, cx, cy = focal_principal(cam_id)
        pc = (X - C) @ R.T
        xy = np.stack([fx * pc[:, 0] / pc[:, 2] + cx - 0.5, fy * pc[:, 1] / pc[:, 2] + cy - 0.5], -1)
        border = np.minimum.reduce([xy[:, 0] + 0.5, W - 0.5 - xy[:, 0], xy[:, 1] + 0.5, H - 0.5 - xy[:, 1]])
        s = (OCC_Z - C[2]) / (X[:, 2] - C[2])                           # where the segment C -> X meets z = 2.5
        hit = C + s[:, None] * (X - C)
        edge = np.minimum.reduce([hit[:, 0] - OCC_X[0], OCC_X[1] - hit[:, 0],
                                  hit[:, 1] - OCC_Y[0], OCC_Y[1] - hit[:, 1]])    # > 0: inside the rectangle
        pix.append(xy)
        vis.append((border > 0) & ~(edge > 0))
        amb.append((np.abs(border) < 1.0) | (np.abs(edge) < 0.15))
    return np.stack(pix), np.stack(vis), np.stack(amb)


def run_main(*argv):
    from gasp_cli.convert_colmap import main
    return main([str(a) for a in argv])


@pytest.mark.parametrize("depth", ["bin", "npy"])
def test_converter_tracks_follow_the_geometry(tmp_path, depth):
    ws = make_workspace(tmp_path)
    out = tmp_path / "c.h5"
    extra = ["--depth-npy", ws / "npy"] if depth == "npy" else []
    assert run_main("--colmap", ws, "--out", out, "--frames", "all", "--grid", 10, *extra) == 0
    with TrackReader(out) as reader:
        assert len(reader) == 1
        seq = reader[0]
    np.testing.assert_array_equal(seq.frame_index, [9, 10, 30])
    pix, vis, amb = expected_tracks(seq.tracks[0].astype(np.float64))
    np.testing.assert_allclose(seq.tracks, pix, atol=1e-3)
    assert seq.visible[0].all()
    sure = ~amb
    np.testing.assert_array_equal(seq.visible[sure], vis[sure])
    # frame 10 has all three kinds: seen in both frames, hidden by the occluder, outside the image
    f = 1
    inside = (pix[f, :, 0] > -0.5) & (pix[f, :, 0] < W - 0.5)
    assert (sure[f] & vis[f]).sum() >= 10
    assert (sure[f] & inside & ~vis[f]).sum() >= 3 and not seq.visible[f][sure[f] & inside & ~vis[f]].any()
    assert (sure[f] & ~inside).sum() >= 3 and not seq.visible[f][sure[f] & ~inside].any()
    with TrackReader(out) as reader:
        meta = reader.scene_metadata(reader.scene_names[0])
    assert meta["source"] == "colmap" and meta["built_by"]["script"] == "convert_colmap.py"


# ----------------------------------------------------------------------------- bad input

def _no_cameras(ws):
    (ws / "sparse" / "cameras.bin").unlink()


def _distorted(ws):
    write_model_binary(ws / "sparse", cameras={**CAMERAS, 2: ("OPENCV", [31.0, 31.0, 19.8, 15.2, 0.1, 0, 0, 0])})


def _distorted_text(ws):
    for p in (ws / "sparse").glob("*.bin"):
        p.unlink()
    write_model_text(ws / "sparse", cameras={**CAMERAS, 1: ("SIMPLE_RADIAL", [30.0, 20.3, 14.6, -0.02])})


def _unknown_model(ws):
    for p in (ws / "sparse").glob("*.bin"):
        p.unlink()
    write_model_text(ws / "sparse", cameras={**CAMERAS, 1: ("FANCY", [30.0, 20.3, 14.6])})


def _transposed_depth(ws):
    write_depth_bin(ws / "stereo/depth_maps/frame_10.png.geometric.bin", ray_cast_depth("frame_10.png").T.copy())


def _small_npy(ws):
    np.save(ws / "npy" / "frame_30.npy", np.ones((15, 20), np.float32))


def _missing_image(ws):
    (ws / "images" / "frame_10.png").unlink()


BAD = [
    (_no_cameras, [], r"sparse/cameras.bin: file not found"),
    (_distorted, [], r"cameras.bin: camera 2 uses the OPENCV model, which is not an undistorted pinhole"
                     r".*colmap image_undistorter"),
    (_distorted_text, [], r"cameras.txt: camera 1 uses the SIMPLE_RADIAL model, which is not.*colmap image_undistorter"),
    (_unknown_model, [], r"cameras.txt: camera 1 has unknown camera model 'FANCY'"),
    (_transposed_depth, [], r"frame_10.png.geometric.bin: depth map is 40x30 but its image is 30x40"),
    (_small_npy, ["--depth-npy", "npy"], r"frame_30.npy: depth has shape \(15, 20\) but its image is 30x40"),
    (_missing_image, [], r"images/frame_10.png: image file not found \(images.bin lists 'frame_10.png'"),
]


@pytest.mark.parametrize("spoil, extra, message", BAD, ids=[b[0].__name__.strip("_") for b in BAD])
def test_bad_input_names_the_file_and_writes_nothing(tmp_path, capsys, spoil, extra, message):
    ws = make_workspace(tmp_path)
    spoil(ws)
    extra = [ws / e if e == "npy" else e for e in extra]
    with pytest.raises(SceneError, match=message):
        load_colmap_scene(ws, depth_npy=extra[1] if extra else None)
    out_dir = tmp_path / "out"
    assert run_main("--colmap", ws, "--out", out_dir / "c.h5", "--frames", "all", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_colmap: error: ") and "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_cli_subprocess_exits_2_without_traceback(tmp_path):
    ws = make_workspace(tmp_path)
    _distorted(ws)
    out = tmp_path / "c.h5"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_colmap.py"), "--colmap", str(ws),
                           "--out", str(out), "--frames", "all"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "convert_colmap: error:" in proc.stderr and "image_undistorter" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]
