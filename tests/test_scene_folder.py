"""Scene folder contract (tracks/scene_folder.py): round trip and every bad-input error."""
import json

import numpy as np
import pytest

from tracks.scene_folder import SceneError, load_scene_folder, save_scene_folder
from tracks.types import Scene


def random_scene(T=3, H=12, W=16, seed=0, name="room") -> Scene:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1, 5, (T, H, W)).astype(np.float32)
    depth[0, 0, 0], depth[0, 0, 1], depth[0, 0, 2] = np.nan, 0.0, -1.0      # unknown depth is legal
    K = np.tile(np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]]), (T, 1, 1))
    poses = []
    for t in range(T):
        a = 0.1 * t + rng.uniform(-0.05, 0.05)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        P = np.eye(4)
        P[:3, :3], P[:3, 3] = R, rng.normal(size=3)
        poses.append(P)
    return Scene(name=name, frames=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8), depth=depth,
                 K=K, cam_from_world=np.stack(poses), frame_index=np.array([3, 7, 11][:T]),
                 metadata={"sensor": "test"})


@pytest.fixture
def folder(tmp_path):
    return save_scene_folder(random_scene(), tmp_path / "room")


def edit_cameras(folder, fn):
    path = folder / "cameras.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_round_trip_is_exact(tmp_path):
    scene = random_scene()
    back = load_scene_folder(save_scene_folder(scene, tmp_path / "room"))
    assert back.name == scene.name and back.metadata == scene.metadata
    np.testing.assert_array_equal(back.frames, scene.frames)
    np.testing.assert_array_equal(back.depth, scene.depth)            # NaN == NaN here
    assert back.depth.dtype == np.float32 and back.frames.dtype == np.uint8
    np.testing.assert_array_equal(back.K, scene.K)
    np.testing.assert_array_equal(back.cam_from_world, scene.cam_from_world)
    np.testing.assert_array_equal(back.frame_index, scene.frame_index)


def test_frame_index_defaults_to_order_and_jpg_frames_load(folder):
    edit_cameras(folder, lambda d: [f.pop("frame_index") for f in d["frames"]])
    (folder / "frames" / "000001.png").rename(folder / "frames" / "000001.jpg")
    scene = load_scene_folder(folder)
    np.testing.assert_array_equal(scene.frame_index, [0, 1, 2])


def test_missing_folder(tmp_path):
    with pytest.raises(SceneError, match="nope: scene folder not found"):
        load_scene_folder(tmp_path / "nope")


def test_missing_frames_folder(folder):
    for p in (folder / "frames").iterdir():
        p.unlink()
    with pytest.raises(SceneError, match=r"frames: no \.png/\.jpg frames"):
        load_scene_folder(folder)


def test_missing_cameras_json(folder):
    (folder / "cameras.json").unlink()
    with pytest.raises(SceneError, match="cameras.json: file not found"):
        load_scene_folder(folder)


def test_malformed_json(folder):
    (folder / "cameras.json").write_text('{"frames": [ {"K": ')
    with pytest.raises(SceneError, match="cameras.json: malformed JSON"):
        load_scene_folder(folder)


def test_camera_entry_with_wrong_shape(folder):
    edit_cameras(folder, lambda d: d["frames"][2].update(K=[[1, 0], [0, 1]]))
    with pytest.raises(SceneError, match=r"cameras.json: frames\[2\]: 'K' has shape \(2, 2\)"):
        load_scene_folder(folder)


def test_corrupt_image(folder):
    (folder / "frames" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SceneError, match=r"000001.png: cannot read image"):
        load_scene_folder(folder)


def test_images_of_different_sizes(folder):
    from PIL import Image
    Image.new("RGB", (5, 4)).save(folder / "frames" / "000002.png")
    with pytest.raises(SceneError, match=r"000002.png: image is 4x5 but 000000.png is 12x16"):
        load_scene_folder(folder)


def test_missing_depth(folder):
    (folder / "depth" / "000001.npy").unlink()
    with pytest.raises(SceneError, match=r"depth/000001.npy: depth file not found"):
        load_scene_folder(folder)


def test_depth_of_wrong_shape(folder):
    np.save(folder / "depth" / "000002.npy", np.ones((16, 12), np.float32))
    with pytest.raises(SceneError, match=r"000002.npy: depth has shape \(16, 12\) but its image is 12x16"):
        load_scene_folder(folder)


def test_integer_depth_is_refused(folder):
    np.save(folder / "depth" / "000000.npy", np.ones((12, 16), np.uint16))
    with pytest.raises(SceneError, match=r"000000.npy: depth must be float, in the poses. units, got dtype uint16"):
        load_scene_folder(folder)


def test_corrupt_depth_file(folder):
    (folder / "depth" / "000000.npy").write_bytes(b"not numpy")
    with pytest.raises(SceneError, match=r"000000.npy: cannot read depth"):
        load_scene_folder(folder)


def test_frame_count_mismatch(folder):
    edit_cameras(folder, lambda d: d["frames"].pop())
    with pytest.raises(SceneError, match=r"cameras.json: lists 2 frames but .*frames holds 3 images"):
        load_scene_folder(folder)


def test_non_finite_camera(folder):
    edit_cameras(folder, lambda d: d["frames"][1]["cam_from_world"][0].__setitem__(3, float("nan")))
    with pytest.raises(SceneError, match=r"cameras.json: frame 1 has a non-finite .* \[frame 1 is 000001.png\]"):
        load_scene_folder(folder)


def test_singular_intrinsics(folder):
    edit_cameras(folder, lambda d: d["frames"][2].update(K=[[0, 0, 1], [0, 0, 1], [0, 0, 1]]))
    with pytest.raises(SceneError, match=r"cameras.json: frame 2 has a singular intrinsic matrix"):
        load_scene_folder(folder)


def test_singular_pose(folder):
    edit_cameras(folder, lambda d: d["frames"][0].update(cam_from_world=np.diag([1, 1, 0, 1.0]).tolist()))
    with pytest.raises(SceneError, match=r"cameras.json: frame 0 .*not a proper rotation"):
        load_scene_folder(folder)


def test_frame_index_given_for_some_frames_only(folder):
    edit_cameras(folder, lambda d: d["frames"][1].pop("frame_index"))
    with pytest.raises(SceneError, match=r"'frame_index' is given for frame 0 but missing for frame 1"):
        load_scene_folder(folder)
