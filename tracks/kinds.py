"""What a path given as tracks holds when it is not a tracks file, and the converter that turns it into one.

A researcher hands the probe or the trainer what they downloaded: a TAP-Vid pickle, a COLMAP
model, VGGT's predictions, a DL3DV scene. The reader then answers with the command that converts
it, not with an HDF5 error. Recognised by content (magic bytes, the files a folder holds), not
only by suffix.
"""
from __future__ import annotations

from pathlib import Path

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _head(path: Path, n: int = 8) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def conversion_hint(path: str | Path) -> str | None:
    """One sentence naming what ``path`` is and the command that converts it, or None if it looks like HDF5
    (a tracks file, or an HDF5 file that the reader's own checks describe) or is not recognised."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*.h5")):
            return None
        if any((p / sub / "cameras.bin").is_file() or (p / sub / "cameras.txt").is_file()
               for sub in ("sparse/0", "sparse", "colmap/sparse/0", ".")):
            return f"{p} is a COLMAP reconstruction: convert it with `gasp convert colmap --colmap {p} --tracks " \
                   f"sparse --out {p.name}.h5` (scripts/convert_colmap.py; README: recipes per source)"
        if (p / "transforms.json").is_file() or (p / "nerfstudio" / "transforms.json").is_file():
            return f"{p} is a DL3DV / NeRFStudio scene: convert it with `gasp convert dl3dv --scene {p} --depth " \
                   f"DEPTHS --out {p.name}.h5`, or its COLMAP cache with `gasp convert colmap`"
        if (p / "cameras.json").is_file() and (p / "frames").is_dir():
            return f"{p} is a posed RGB-D folder: convert it with `gasp convert rgbd --scene {p} --out {p.name}.h5`"
        if any(p.glob("*.pkl")):
            return f"{p} holds pickles (TAP-Vid Kinetics shards?): convert them with `gasp convert tapvid --pickle " \
                   f"{p} --out {p.name}.h5 --max-frames 24`"
        if (p / "predictions.npz").is_file():
            return f"{p} holds VGGT's predictions.npz: convert it with `gasp convert vggt --predictions " \
                   f"{p / 'predictions.npz'} --images {p / 'images'} --out {p.name}.h5`"
        return None
    head = _head(p)
    if head.startswith(HDF5_MAGIC) or not head:
        return None
    stem = p.with_suffix("").name
    if head[:1] == b"\x80" or p.suffix in (".pkl", ".pickle"):
        return f"{p} is a pickle (TAP-Vid's format), not a tracks file: convert it with `gasp convert tapvid " \
               f"--pickle {p} --out {stem}.h5 --max-frames 24` (scripts/convert_tapvid.py)"
    if head.startswith(b"PK") and p.suffix == ".npz":
        return f"{p} is a numpy archive (VGGT's predictions.npz?), not a tracks file: convert it with `gasp " \
               f"convert vggt --predictions {p} --images IMAGES --out {stem}.h5` (scripts/convert_vggt.py)"
    if p.suffix in (".json", ".jsonl"):
        return f"{p} is JSON, not a tracks file: instruction data goes in data.instruct (training); tracks come " \
               f"from `gasp convert ...` or `gasp convert synthetic`"
    if p.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv", ".webm"):
        return f"{p} is a video without tracks: gasp needs ground-truth tracks (TAP-Vid annotations, a COLMAP " \
               f"model, depth and poses); see the README's recipes per source"
    return f"{p} is not an HDF5 file (it starts {head[:4]!r}), so not a gasp tracks file: make one with `gasp " \
           f"convert ...` (README: Point tracks)"
