"""Constants and checks shared by the track writer and reader (layout: ``tracks/FORMAT.md``).

Version 2 (written now) adds what real data needs: scenes without depth or cameras,
sequences of tracks supplied by their source (TAP-Vid, COLMAP sparse points), a query
frame per point, and a third point state, *unknown*, beside visible and occluded.
Version 1 files read unchanged (``tracks/io.py`` fills in what they lack).
"""
from __future__ import annotations

import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FORMAT_KIND = "gasp-tracks"
RGB_ENCODINGS = ("png", "jpeg", "raw")
# a sequence's datasets in each version; track_depth is optional from version 2 on
SEQUENCE_DATASETS = {1: ("scene_frames", "frame_index", "tracks", "visible", "track_depth"),
                     2: ("scene_frames", "frame_index", "tracks", "visible", "occluded", "query_frames")}
SOURCES = ("geometry", "supplied")     # a sequence's tracks: built from depth and poses, or given by the source


class TrackFormatError(ValueError):
    """A track file that cannot be read: wrong version, truncated, or missing data."""


def check_states(where: str, tracks: np.ndarray, visible: np.ndarray, occluded: np.ndarray,
                 query_frames: np.ndarray, track_depth: np.ndarray | None, query_visible: bool = True) -> None:
    """Raise ValueError naming ``where`` unless the arrays form a valid set of point tracks.

    tracks (F, N, 2), visible / occluded (F, N) bool and never both, query_frames (N,) in
    [0, F), tracks finite wherever a point is visible, track_depth (F, N) or None. With
    ``query_visible`` every point must be visible in its own query frame (supplied tracks;
    a geometry grid keeps points without query depth, whose states are all unknown).
    """
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"{where}: tracks must be (F, N, 2), got {tracks.shape}")
    f, n = tracks.shape[:2]
    for name, arr in (("visible", visible), ("occluded", occluded)):
        if arr.shape != (f, n) or arr.dtype != bool:
            raise ValueError(f"{where}: {name} must be ({f}, {n}) bool, got {arr.shape} {arr.dtype}")
    if track_depth is not None and track_depth.shape != (f, n):
        raise ValueError(f"{where}: track_depth must be ({f}, {n}), got {track_depth.shape}")
    if query_frames.shape != (n,):
        raise ValueError(f"{where}: query_frames must be ({n},), got {query_frames.shape}")
    if n and (query_frames.min() < 0 or query_frames.max() >= f):
        raise ValueError(f"{where}: query frames {sorted(set(query_frames.tolist()))} outside [0, {f})")
    both = visible & occluded
    if both.any():
        fi, pi = np.argwhere(both)[0]
        raise ValueError(f"{where}: point {pi} is both visible and occluded in frame {fi}")
    unseen = ~visible[query_frames, np.arange(n)]
    if query_visible and unseen.any():
        pi = int(np.flatnonzero(unseen)[0])
        raise ValueError(f"{where}: point {pi} is not visible in its own query frame {int(query_frames[pi])}")
    bad = visible & ~np.isfinite(tracks).all(-1)
    if bad.any():
        fi, pi = np.argwhere(bad)[0]
        raise ValueError(f"{where}: point {pi} is visible in frame {fi} but its position is not finite")
