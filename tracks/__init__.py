"""Point-track data layer: ground truth from posed RGB-D, storage, sampling (see FORMAT.md)."""
from tracks.geometry import build_tracks, grid_points
from tracks.io import ShardedTrackWriter, TrackFormatError, TrackReader, TrackWriter
from tracks.types import Scene, TrackSequence

__all__ = ["Scene", "TrackSequence", "build_tracks", "grid_points", "TrackReader", "TrackWriter",
           "ShardedTrackWriter", "TrackFormatError"]
