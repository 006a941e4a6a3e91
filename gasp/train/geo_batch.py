"""Loss targets of one geometric batch: a TrackSequence seen through a model's VisualLayout.

Shape vocabulary: F' token grids (one per input frame for the default frames modes),
N query points, h x w tokens per grid, P = h*w, H x W original frame pixels.

Token convention (`gasp.adapters.VisualLayout`, `probes.metrics`): pixel (x, y) lies in token
column floor((x + 0.5) / tw) and row floor((y + 0.5) / th); in token units
u = (x + 0.5) / tw - 0.5 that is floor(u + 0.5), i.e. rounding with ties up. A point
outside the h x w grid (or with a NaN position) has no token and counts as invalid.

The targets feed `gasp.losses.gasp_losses` (eq. 5-8): anchors are the query-frame points,
their positive in grid f is the token holding the track there, and a pair counts only if
the point is visible, and inside the grid, in both the query frame and frame f. A point
queried in its own frame (supplied tracks) anchors there. Unknown states count as not
visible. A sequence without depth maps has no depth candidates (`tok_depth` all NaN) and one
without `track_depth` no depth targets, so L_depth has no term for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gasp.adapters.base import VisualLayout
from gasp.losses import pool_token_depth
from tracks.types import TrackSequence


class GeoBatchError(ValueError):
    """A sequence that cannot be turned into loss targets for this layout."""


@dataclass
class GeoTargets:
    anchor_tok: torch.Tensor  # (N,) long, token of the query grid containing query point i (0 if none)
    gt_tok: torch.Tensor      # (F', N) long, token of grid f containing point i's track (-1 if outside)
    valid: torch.Tensor       # (F', N) bool, visible & inside in the query grid and in grid f
    gt_depth: torch.Tensor    # (F', N) float32 depth of point i in frame f's camera (NaN if unknown)
    tok_depth: torch.Tensor   # (F', P) float32 depth pooled over each token's pixel box (NaN if none)
    query_frame: int | torch.Tensor  # grid index of the query frame among the F' grids, or (N,) per point

    def to(self, device) -> GeoTargets:
        qf = self.query_frame.to(device) if isinstance(self.query_frame, torch.Tensor) else self.query_frame
        return GeoTargets(self.anchor_tok.to(device), self.gt_tok.to(device), self.valid.to(device),
                          self.gt_depth.to(device), self.tok_depth.to(device), qf)


def token_index(xy: torch.Tensor, layout: VisualLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel (x, y) (..., 2) -> (flat token index r*w + c (..., ) long, -1 outside; inside (...) bool)."""
    h, w = layout.grid
    uv = layout.to_token_units(xy.double())  # (..., 2) col, row
    finite = torch.isfinite(uv).all(dim=-1)
    cr = torch.floor(torch.where(torch.isfinite(uv), uv, torch.zeros_like(uv)) + 0.5).long()
    col, row = cr[..., 0], cr[..., 1]
    inside = finite & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = torch.where(inside, row * w + col, torch.full_like(col, -1))
    return flat, inside


def geo_targets(seq: TrackSequence, layout: VisualLayout) -> GeoTargets:
    """Targets for the losses from `seq` and the layout its frames were prepared with."""
    if tuple(layout.image_size) != tuple(seq.image_size):
        raise GeoBatchError(f"sequence {seq.key}: frames are {seq.image_size} px but the layout was made "
                            f"for {layout.image_size}")
    fids = layout.frame_ids.cpu().numpy()
    grid_of = {int(f): i for i, f in reversed(list(enumerate(fids)))}           # frame -> its first grid
    missing = sorted({int(q) for q in np.unique(seq.query_frames)} - set(grid_of))
    if missing:
        which = (f"query frame {missing[0]} has no token grid of its own" if len(missing) == 1 else
                 f"query frames {missing} have no token grid of their own")
        raise GeoBatchError(f"sequence {seq.key}: {which}; grids stand for frames {fids.tolist()}")
    qg = np.array([grid_of[int(q)] for q in seq.query_frames], dtype=np.int64)    # (N,)
    n = seq.num_points
    tracks = torch.from_numpy(np.asarray(seq.tracks, dtype=np.float64)[fids])  # (F', N, 2)
    visible = torch.from_numpy(np.asarray(seq.visible, dtype=bool)[fids])       # (F', N)
    tok, inside = token_index(tracks, layout)                                    # (F', N)
    seen = visible & inside
    rows, cols = torch.from_numpy(qg), torch.arange(n)
    valid = seen & seen[rows, cols][None, :]
    anchor_tok = torch.where(inside[rows, cols], tok[rows, cols], torch.zeros_like(tok[0]))
    F = len(fids)
    if seq.track_depth is None:
        gt_depth = torch.full((F, n), float("nan"))
    else:
        gt_depth = torch.from_numpy(np.asarray(seq.track_depth, dtype=np.float32)[fids])
    if seq.depth is None:
        tok_depth = torch.full((F, layout.grid[0] * layout.grid[1]), float("nan"))
    else:
        depth = torch.from_numpy(np.asarray(seq.depth, dtype=np.float32)[fids])     # (F', H, W)
        tok_depth = pool_token_depth(depth, layout.grid)                             # (F', P)
    shared = np.unique(qg)
    qf = int(shared[0]) if len(shared) == 1 else torch.from_numpy(qg)
    return GeoTargets(anchor_tok=anchor_tok, gt_tok=tok, valid=valid, gt_depth=gt_depth,
                      tok_depth=tok_depth, query_frame=qf)
