"""Track format v2 (tracks/format.py, writer.py, io.py): supplied tracks, per-point query frames, three states,
optional depth and cameras; version-1 files written here by hand, from FORMAT.md's v1 layout, read unchanged."""
import h5py
import numpy as np
import pytest

from tracks.geometry import build_track_states, build_tracks
from tracks.io import TrackReader, TrackWriter
from tracks.types import Scene, TrackSequence

T, H, W = 5, 12, 16


def bare_scene(name="v"):
    """A scene as TAP-Vid gives it: frames only, no depth, no cameras."""
    rng = np.random.default_rng(1)
    return Scene(name=name, frames=rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8), depth=None, K=None,
                 cam_from_world=None, frame_index=np.array([0, 4, 8, 12, 17]))


def supplied(F=4, N=3):
    tracks = np.arange(F * N * 2, dtype=np.float32).reshape(F, N, 2) % 11
    visible = np.ones((F, N), bool)
    occluded = np.zeros((F, N), bool)
    visible[2, 0], occluded[2, 0] = False, True           # occluded in frame 2
    visible[3, 1] = False                                 # unknown in frame 3
    tracks[3, 1] = np.nan
    return tracks, visible, occluded, np.array([0, 1, 1])


def test_supplied_tracks_round_trip_with_three_states_and_query_frames(tmp_path):
    path = tmp_path / "v2.h5"
    tracks, visible, occluded, qf = supplied()
    with TrackWriter(path, rgb_encoding="raw") as w:
        w.add_scene(bare_scene())
        w.add_tracks("v", [0, 1, 3, 4], tracks, visible, occluded, qf, metadata={"query_mode": "strided"})
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 2
        g = f["scenes/v"]
        assert "depth" not in g and "K" not in g and "cam_from_world" not in g
    r = TrackReader(path)
    assert r.scene_has("v") == {"depth": False, "cameras": False}
    seq = r[0]
    assert seq.depth is None and seq.K is None and seq.cam_from_world is None and seq.track_depth is None
    np.testing.assert_array_equal(seq.tracks, tracks)
    np.testing.assert_array_equal(seq.visible, visible)
    np.testing.assert_array_equal(seq.occluded, occluded)
    assert seq.known.sum() == visible.size - 1                          # one unknown state
    np.testing.assert_array_equal(seq.query_frames, qf)
    assert seq.query_frame == -1 and seq.metadata == {"source": "supplied", "query_mode": "strided"}
    np.testing.assert_array_equal(seq.frame_index, [0, 4, 12, 17])
    # Δt per point counts from each point's own query frame
    np.testing.assert_array_equal(seq.point_dt[:, 1], np.abs(np.array([0, 4, 12, 17]) - 4))
    with pytest.raises(ValueError, match="different query frames"):
        seq.dt
    groups = seq.query_groups()
    assert [(q, p.tolist()) for q, p in groups] == [(0, [0]), (1, [1, 2])]
    sub = seq.subset(groups[1][1])
    assert sub.query_frame == 1 and sub.num_points == 2 and np.array_equal(sub.occluded, occluded[:, 1:])


BAD = [
    (lambda t, v, o, q: (t, v, v.copy(), q), "both visible and occluded"),
    (lambda t, v, o, q: (t, np.where(np.eye(4, 3, dtype=bool), False, v), o, q), "not visible in its own query frame"),
    (lambda t, v, o, q: (np.where(np.isnan(t), 0, t) * np.where(np.arange(3) == 2, np.nan, 1)[None, :, None], v, o, q),
     "visible in frame 0 but its position is not finite"),
    (lambda t, v, o, q: (t, v, o, np.array([0, 1, 9])), r"query frames \[0, 1, 9\] outside"),
    (lambda t, v, o, q: (t, v.astype(np.uint8), o, q), "visible must be"),
]


@pytest.mark.parametrize("spoil, message", BAD)
def test_writer_refuses_inconsistent_tracks_and_leaves_nothing(tmp_path, spoil, message):
    tracks, visible, occluded, qf = spoil(*supplied())
    with pytest.raises(ValueError, match=message):
        with TrackWriter(tmp_path / "x.h5") as w:
            w.add_scene(bare_scene())
            w.add_tracks("v", [0, 1, 3, 4], tracks, visible, occluded, qf)
    assert list(tmp_path.iterdir()) == []


def test_geometry_needs_depth_and_cameras(tmp_path):
    with pytest.raises(ValueError, match="scene 'v' has no depth and cameras: tracks cannot be built from geometry"):
        with TrackWriter(tmp_path / "x.h5") as w:
            w.add_scene(bare_scene())
            w.add_sequence("v", [0, 1], grid=2)


def posed_scene():
    K = np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]])
    poses = np.tile(np.eye(4), (T, 1, 1))
    poses[:, 0, 3] = -0.2 * np.arange(T)                     # camera moves right: points move left
    depth = np.full((T, H, W), 2.0, np.float32)
    depth[1, :, 8:] = np.nan                                 # frame 1's right half has no depth
    return depth, np.tile(K, (T, 1, 1)), poses


def test_geometry_states_unknown_where_the_depth_map_is_unknown():
    depth, K, poses = posed_scene()
    tracks, vis, occ, z = build_track_states(depth, K, poses, grid=4)
    x1 = tracks[1, :, 0]
    inside = (x1 >= -0.5) & (x1 < W - 0.5)
    # in frame 1: landing on the depthless half is unknown; off the image is occluded; else visible
    np.testing.assert_array_equal(vis[1], inside & (np.floor(x1 + 0.5) < 8))
    np.testing.assert_array_equal(occ[1], ~inside)
    assert ((~vis[1] & ~occ[1]) == (inside & (np.floor(x1 + 0.5) >= 8))).all()
    assert (~vis[1] & ~occ[1]).any() and occ[4].any()
    assert not occ[0].any() and vis[0].all()
    # the v1 triple is the same computation without the states
    for a, b in zip(build_tracks(depth, K, poses, grid=4), (tracks, vis, z)):
        np.testing.assert_array_equal(a, b)


def write_v1(path, depth, K, poses, query_frame=2, grid=3):
    """A format-1 file, written from FORMAT.md's v1 layout with h5py (not with gasp's writer)."""
    tracks, visible, track_depth = build_tracks(depth, K, poses, query_frame=query_frame, grid=grid)
    with h5py.File(path, "w") as f:
        f.attrs["format_version"], f.attrs["kind"] = 1, "gasp-tracks"
        g = f.create_group("scenes/s")
        g.attrs.update(num_frames=T, height=H, width=W, rgb_encoding="raw", metadata="{}")
        g["rgb"] = np.zeros((T, H, W, 3), np.uint8)
        g["depth"], g["K"], g["cam_from_world"], g["frame_index"] = depth, K, poses, np.arange(T)
        s = f.create_group("sequences/s__000000")
        s.attrs.update(scene="s", query_frame=query_frame, grid=grid, rel_tol=0.05)
        s["scene_frames"], s["frame_index"] = np.arange(T), np.arange(T)
        s["tracks"], s["visible"], s["track_depth"] = tracks, visible, track_depth
        f.create_dataset("index/sequences", data=np.array(["s__000000"], dtype=object), dtype=h5py.string_dtype())
    return tracks, visible, track_depth


def test_version_1_files_read_unchanged(tmp_path):
    depth, K, poses = posed_scene()
    depth[2, :3, :4] = np.nan                                 # query point 0 of frame 2 has no depth
    path = tmp_path / "v1.h5"
    tracks, visible, track_depth = write_v1(path, depth, K, poses)
    seq = TrackReader(path)[0]
    np.testing.assert_array_equal(seq.tracks, tracks)
    np.testing.assert_array_equal(seq.visible, visible)
    np.testing.assert_array_equal(seq.track_depth, track_depth)
    assert seq.query_frame == 2 and (seq.query_frames == 2).all() and seq.grid == 3
    assert seq.metadata == {"source": "geometry"} and seq.depth is not None and seq.K is not None
    # v1 has no occlusion flag: a point seen in its query frame is occluded wherever it is not visible,
    # one without query depth (not seen there) has unknown states everywhere
    seen = visible[2]
    assert not seen[0] and seen[1:].all()
    np.testing.assert_array_equal(seq.occluded, ~visible & seen[None, :])
    assert not seq.known[:, 0].any()
    np.testing.assert_array_equal(seq.dt, np.abs(np.arange(T) - 2))


def test_v2_geometry_sequence_stores_the_states(tmp_path):
    depth, K, poses = posed_scene()
    scene = Scene(name="s", frames=np.zeros((T, H, W, 3), np.uint8), depth=depth, K=K, cam_from_world=poses,
                  frame_index=np.arange(T))
    with TrackWriter(tmp_path / "g.h5") as w:
        w.add_scene(scene)
        w.add_sequence("s", np.arange(T), grid=4)
    seq = TrackReader(tmp_path / "g.h5")[0]
    _, vis, occ, z = build_track_states(depth, K, poses, grid=4)
    np.testing.assert_array_equal(seq.visible, vis)
    np.testing.assert_array_equal(seq.occluded, occ)
    assert seq.metadata == {"source": "geometry", "query_mode": "grid"}


def test_track_sequence_defaults_follow_the_v1_rule():
    vis = np.array([[True, False], [False, False]])
    seq = TrackSequence(frames=np.zeros((2, 4, 4, 3), np.uint8), depth=None, K=None, cam_from_world=None,
                        frame_index=np.arange(2), tracks=np.zeros((2, 2, 2), np.float32), visible=vis,
                        track_depth=None)
    np.testing.assert_array_equal(seq.occluded, [[False, False], [True, False]])
    with pytest.raises(ValueError, match="outside its 2 frames"):
        TrackSequence(frames=np.zeros((2, 4, 4, 3), np.uint8), depth=None, K=None, cam_from_world=None,
                      frame_index=np.arange(2), tracks=np.zeros((2, 2, 2), np.float32), visible=vis,
                      track_depth=None, query_frames=np.array([0, 2]))
