"""geo_targets: TrackSequence + VisualLayout -> loss targets, checked against hand computation."""
import numpy as np
import pytest
import torch

from gasp.adapters.base import VisualLayout
from gasp.train.geo_batch import GeoBatchError, geo_targets, token_index
from gasp.losses import pool_token_depth
from tracks.types import TrackSequence

H, W = 40, 60          # 2 x 3 tokens of 20 px


def _layout(frame_ids=(0, 1, 2)):
    nf = len(frame_ids)
    return VisualLayout(positions=torch.arange(nf * 6).reshape(nf, 2, 3) + 5,
                        frame_ids=torch.tensor(frame_ids), grid=(2, 3), image_size=(H, W), token_size=(20.0, 20.0))


def _seq(tracks, visible, query_frame=0):
    nf, n = visible.shape
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 3, (nf, H, W)).astype(np.float32)
    depth[1, :20, :20] = np.nan                                   # token (0, 0) of frame 1 has no depth
    return TrackSequence(frames=np.zeros((nf, H, W, 3), np.uint8), depth=depth, K=np.tile(np.eye(3), (nf, 1, 1)),
                         cam_from_world=np.tile(np.eye(4), (nf, 1, 1)), frame_index=np.arange(nf) * 3,
                         tracks=np.asarray(tracks, np.float32), visible=np.asarray(visible, bool),
                         track_depth=np.arange(nf * n, dtype=np.float32).reshape(nf, n) + 1, query_frame=query_frame)


def test_token_index_convention():
    lay = _layout()
    # token c covers x in [20c - 0.5, 20(c+1) - 0.5): 19.4 -> col 0, 19.5 -> col 1; -0.5 is still inside
    xy = torch.tensor([[19.4, 0.0], [19.5, 0.0], [-0.5, -0.5], [59.4, 39.4], [59.5, 0.0], [float("nan"), 3.0]])
    flat, inside = token_index(xy, lay)
    assert flat.tolist() == [0, 1, 0, 5, -1, -1]
    assert inside.tolist() == [True, True, True, True, False, False]


def test_targets_match_hand_computation():
    # 3 frames, 3 points. Point 0 moves right one token per frame; point 1 leaves the image in
    # frame 2; point 2 is hidden in the query frame.
    tracks = [[[5, 5], [30, 30], [50, 10]],
              [[25, 5], [50, 30], [50, 10]],
              [[45, 5], [70, 30], [50, 10]]]
    visible = [[1, 1, 0],
               [1, 1, 1],
               [0, 1, 1]]
    seq = _seq(tracks, np.array(visible))
    t = geo_targets(seq, _layout())
    assert t.query_frame == 0
    assert t.anchor_tok.tolist() == [0, 4, 2]               # (r0,c0), (r1,c1), (r0,c2)
    assert t.gt_tok.tolist() == [[0, 4, 2], [1, 5, 2], [2, -1, 2]]
    assert t.valid.tolist() == [[True, True, False],
                                [True, True, False],        # point 2 is hidden in the query frame
                                [False, False, False]]      # point 0 hidden, point 1 outside
    assert torch.equal(t.gt_depth, torch.from_numpy(seq.track_depth))
    ref = pool_token_depth(torch.from_numpy(seq.depth), (2, 3))
    assert torch.allclose(t.tok_depth, ref, equal_nan=True)
    assert torch.isnan(t.tok_depth[1, 0]) and torch.isfinite(t.tok_depth[0]).all()
    assert abs(float(t.tok_depth[0, 4]) - float(seq.depth[0, 20:40, 20:40].mean())) < 1e-5


def test_query_frame_and_frame_ids():
    tracks = np.zeros((4, 1, 2), np.float32)
    tracks[:, 0] = [[5, 5], [25, 25], [45, 5], [5, 25]]
    seq = _seq(tracks, np.ones((4, 1), bool), query_frame=2)
    t = geo_targets(seq, _layout(frame_ids=(0, 2, 3)))       # grids stand for frames 0, 2, 3
    assert t.query_frame == 1
    assert t.anchor_tok.tolist() == [2]
    assert t.gt_tok[:, 0].tolist() == [0, 2, 3]
    assert t.tok_depth.shape == (3, 6)
    with pytest.raises(GeoBatchError, match="query frame 2 has no token grid"):
        geo_targets(seq, _layout(frame_ids=(0, 1, 3)))


def test_size_mismatch_is_an_error():
    seq = _seq(np.zeros((3, 1, 2)), np.ones((3, 1), bool))
    lay = VisualLayout(positions=torch.arange(18).reshape(3, 2, 3), frame_ids=torch.arange(3), grid=(2, 3),
                       image_size=(56, 84), token_size=(28.0, 28.0))
    with pytest.raises(GeoBatchError, match="layout was made for"):
        geo_targets(seq, lay)


def test_points_with_their_own_query_frames_and_no_depth():
    """Supplied tracks: each point anchors in its own query frame; no depth maps or track depth: no depth targets."""
    tracks = np.zeros((3, 2, 2), np.float32)
    tracks[:, 0] = [[5, 5], [25, 5], [45, 5]]
    tracks[:, 1] = [[5, 25], [25, 25], [45, 25]]
    visible = np.ones((3, 2), bool)
    visible[0, 1] = False                                          # point 1 unknown in frame 0
    seq = TrackSequence(frames=np.zeros((3, H, W, 3), np.uint8), depth=None, K=None, cam_from_world=None,
                        frame_index=np.arange(3), tracks=tracks, visible=visible, track_depth=None,
                        occluded=np.zeros((3, 2), bool), query_frames=np.array([0, 2]))
    t = geo_targets(seq, _layout())
    assert torch.equal(t.query_frame, torch.tensor([0, 2]))
    assert t.anchor_tok.tolist() == [0, 5]                         # point 1 anchors at (row 1, col 2) of frame 2
    assert t.valid.tolist() == [[True, False], [True, True], [True, True]]
    assert torch.isnan(t.tok_depth).all() and torch.isnan(t.gt_depth).all()
