"""Track file round trips and every bad-input case of the reader."""
import h5py
import numpy as np
import pytest

from tracks.geometry import build_tracks
from tracks.io import FORMAT_VERSION, ShardedTrackWriter, TrackFormatError, TrackReader, TrackWriter
from tracks.types import Scene


def make_scene(name="s0", T=6, H=24, W=32, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]])
    poses = np.stack([np.eye(4)] * T)
    poses[:, 0, 3] = -0.05 * np.arange(T)     # camera moves right
    depth = np.full((T, H, W), 3.0, np.float32)
    depth[:, :4] = np.nan                     # unknown rows stay unknown
    return Scene(name=name, frames=rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8), depth=depth,
                 K=np.stack([K] * T), cam_from_world=poses, frame_index=np.arange(T) * 3 + 10,
                 metadata={"seed": seed, "objects": []})


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_round_trip(tmp_path, encoding):
    scene = make_scene()
    path = tmp_path / "t.h5"
    ids = np.array([2, 0, 5])
    with TrackWriter(path, rgb_encoding=encoding) as w:
        w.add_scene(scene)
        w.add_sequence(scene.name, np.arange(4), grid=4)
        w.add_sequence(scene.name, ids, grid=3, query_frame=1)
    r = TrackReader(path)
    assert len(r) == 2 and r.scene_names == ["s0"]
    seq = r[1]
    assert np.array_equal(seq.frames, scene.frames[ids])          # lossless, unsorted ids respected
    assert np.array_equal(seq.depth, scene.depth[ids], equal_nan=True)
    assert np.array_equal(seq.frame_index, scene.frame_index[ids])
    assert np.allclose(seq.K, scene.K[ids]) and np.allclose(seq.cam_from_world, scene.cam_from_world[ids])
    exp = build_tracks(scene.depth[ids], scene.K[ids], scene.cam_from_world[ids], query_frame=1, grid=3)
    assert np.array_equal(seq.tracks, exp[0], equal_nan=True)
    assert np.array_equal(seq.visible, exp[1])
    assert seq.query_frame == 1 and seq.grid == 3 and seq.scene == "s0"
    assert np.array_equal(seq.dt, np.abs(scene.frame_index[ids] - scene.frame_index[0]))
    assert r.scene_metadata("s0") == {"seed": 0, "objects": []}
    assert np.array_equal(r.scene("s0").frames, scene.frames)
    part = r.scene("s0", frames=[4, 1, 4])                         # only these frames, in this order
    for key in ("frames", "depth", "K", "cam_from_world", "frame_index"):
        assert np.array_equal(getattr(part, key), getattr(scene, key)[[4, 1, 4]], equal_nan=True), key
    with pytest.raises(IndexError, match="has 6 frames"):
        r.scene("s0", frames=[6])
    assert r[-1].key == seq.key


def test_frames_stored_once_per_scene(tmp_path):
    scene = make_scene(T=8)
    with TrackWriter(tmp_path / "t.h5", rgb_encoding="raw") as w:
        w.add_scene(scene)
        for _ in range(5):
            w.add_sequence(scene.name, np.arange(8), grid=4)
    with h5py.File(tmp_path / "t.h5") as f:
        seq_groups = f["sequences"]
        assert all("rgb" not in g and "depth" not in g for g in seq_groups.values())
        assert f["scenes/s0/rgb"].shape[0] == 8


def test_sharded_dataset(tmp_path):
    with ShardedTrackWriter(tmp_path / "ds", sequences_per_shard=2) as w:
        for s in range(3):
            sc = make_scene(f"scene{s}", seed=s)
            w.add_scene(sc)
            for _ in range(2):
                w.add_sequence(sc.name, np.arange(3), grid=2)
    shards = sorted((tmp_path / "ds").glob("*.h5"))
    assert len(shards) == 3
    r = TrackReader(tmp_path / "ds")
    assert len(r) == 6
    assert [r.sequence_scene(i) for i in range(6)] == ["scene0"] * 2 + ["scene1"] * 2 + ["scene2"] * 2
    assert r.indices_for_scenes(["scene1"]) == [2, 3]
    assert np.array_equal(r[4].frames, make_scene("scene2", seed=2).frames[:3])


def test_crash_leaves_no_file(tmp_path):
    path = tmp_path / "t.h5"
    with pytest.raises(RuntimeError):
        with TrackWriter(path) as w:
            w.add_scene(make_scene())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_version(tmp_path):
    path = tmp_path / "t.h5"
    with TrackWriter(path) as w:
        w.add_scene(make_scene())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(TrackFormatError, match=rf"t\.h5.*format_version {FORMAT_VERSION + 1} is not supported"):
        TrackReader(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.h5"
    with TrackWriter(path) as w:
        w.add_scene(make_scene())
        w.add_sequence("s0", np.arange(3), grid=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(TrackFormatError, match=r"t\.h5.*truncated or corrupt"):
        TrackReader(path)[0]


def test_missing_sequence_dataset(tmp_path):
    path = tmp_path / "t.h5"
    with TrackWriter(path) as w:
        w.add_scene(make_scene())
        name = w.add_sequence("s0", np.arange(3), grid=2)
    with h5py.File(path, "a") as f:
        del f[f"sequences/{name}/visible"]
    with pytest.raises(TrackFormatError, match=rf"{name}.*missing dataset.*visible"):
        TrackReader(path)[0]


def test_missing_file_and_not_a_track_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gasp convert synthetic"):
        TrackReader(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(TrackFormatError, match="not a gasp tracks file"):
        TrackReader(tmp_path / "other.h5")


def test_writer_rejects_bad_scenes(tmp_path):
    bad = make_scene()
    bad.depth = bad.depth[:, :10]
    with pytest.raises(ValueError, match="scene 's0': depth shape"):
        with TrackWriter(tmp_path / "t.h5") as w:
            w.add_scene(bad)
    bad = make_scene()
    bad.cam_from_world[3, 1, 1] = np.inf
    with pytest.raises(ValueError, match="scene 's0': frame 3"):
        with TrackWriter(tmp_path / "t.h5") as w:
            w.add_scene(bad)
    assert list(tmp_path.iterdir()) == []


def test_scene_frame_index_is_the_source_video_numbers_without_reading_frames(tmp_path):
    """Frames stored at positions 0..3 that are source frames 10, 25, 40, 55: scene_frame_index gives the source
    numbers (what a teacher folder's file names use), the same as a read scene's, and without_points keeps them."""
    rng = np.random.default_rng(0)
    scene = Scene(name="clip", frames=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
                  depth=rng.uniform(1, 2, (4, 8, 8)).astype(np.float32), K=np.tile(np.eye(3), (4, 1, 1)),
                  cam_from_world=np.tile(np.eye(4), (4, 1, 1)), frame_index=np.array([10, 25, 40, 55]))
    with TrackWriter(tmp_path / "t.h5") as w:
        w.add_scene(scene)
    with TrackReader(tmp_path / "t.h5") as r:
        assert r.scene_frame_index("clip").tolist() == [10, 25, 40, 55]
        seq = r.scene("clip").without_points([1, 3])
    assert seq.frame_index.tolist() == [25, 55] and seq.num_points == 0 and seq.depth.shape == (2, 8, 8)
    np.testing.assert_array_equal(seq.frames, scene.frames[[1, 3]])
