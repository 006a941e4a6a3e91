"""Generic posed RGB-D scene folder: the input contract for ScanNet, ARKit, VGGT or MVS output.

Layout::

    DIR/frames/*.png|jpg        RGB frames, sorted by file name
    DIR/depth/<same stem>.npy   depth in the poses' units, (H, W) float; NaN/0/negative = unknown
    DIR/cameras.json            {"frames": [{"K": 3x3, "cam_from_world": 4x4,
                                             "frame_index": optional int}, ...]}

``cameras.json`` lists one entry per frame, in the sorted frame order, with OpenCV
cameras (x right, y down, z forward; ``cam_from_world`` maps world to camera) and K in
the (0, 0) = centre-of-top-left-pixel convention. ``frame_index`` is the source-video
frame number; it defaults to 0..T-1 and must be given for all frames or for none.
Optional top-level keys ``name`` and ``metadata`` are carried into the Scene.

Every problem raises :class:`SceneError` naming the file or frame and what is wrong.
Unknown depth is never an error.

Shapes: T frames, H x W pixels.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tracks.geometry import CameraError, check_cameras
from tracks.types import Scene

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class SceneError(ValueError):
    """An input scene that cannot be loaded; the message names the file or frame."""


# ----------------------------------------------------------------------------- reading pieces

def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image file; SceneError if it is missing or corrupt."""
    if not path.is_file():
        raise SceneError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise SceneError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def read_depth(path: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 depth (in the poses' units) from a .npy file, checked against its image size."""
    if not path.is_file():
        raise SceneError(f"{path}: depth file not found (every frame needs one)")
    try:
        depth = np.load(path, allow_pickle=False)
    except Exception as e:
        raise SceneError(f"{path}: cannot read depth ({type(e).__name__}: {e})") from e
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.shape != tuple(image_hw):
        raise SceneError(f"{path}: depth has shape {depth.shape} but its image is "
                         f"{image_hw[0]}x{image_hw[1]} (H x W); they must match")
    if not np.issubdtype(depth.dtype, np.floating):
        # Integer depth is almost always millimetres (ScanNet, ARKit PNGs); refuse to guess.
        raise SceneError(f"{path}: depth must be float, in the poses' units, got dtype {depth.dtype} "
                         f"(if it is millimetres, divide by 1000 and save as float32)")
    return depth.astype(np.float32)


def list_frames(frames_dir: Path) -> list[Path]:
    """Image files of a frames folder, sorted by name; SceneError if none."""
    if not frames_dir.is_dir():
        raise SceneError(f"{frames_dir}: frames folder not found")
    paths = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SceneError(f"{frames_dir}: no .png/.jpg frames found")
    return paths


def stack_frames(images: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    """(T, H, W, 3) uint8; SceneError naming the first frame whose size differs from the first."""
    hw = images[0].shape[:2]
    for img, p in zip(images, paths):
        if img.shape[:2] != hw:
            raise SceneError(f"{p}: image is {img.shape[0]}x{img.shape[1]} but {paths[0].name} "
                             f"is {hw[0]}x{hw[1]}; all frames of a scene must share one size")
    return np.stack(images)


# ----------------------------------------------------------------------------- cameras.json

def _matrix(entry: dict, key: str, shape: tuple[int, int], where: str) -> np.ndarray:
    if key not in entry:
        raise SceneError(f"{where}: missing '{key}'")
    try:
        m = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SceneError(f"{where}: '{key}' is not a numeric matrix ({e})") from e
    if m.shape != shape:
        raise SceneError(f"{where}: '{key}' has shape {m.shape}, expected {shape}")
    return m


def read_cameras_json(path: Path) -> dict[str, Any]:
    """Parse cameras.json -> {"K": (T,3,3), "cam_from_world": (T,4,4), "frame_index": (T,) or None, ...}."""
    if not path.is_file():
        raise SceneError(f"{path}: file not found (a scene folder needs cameras.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise SceneError(f"{path}: expected an object with a 'frames' list")
    entries = data["frames"]
    K, T, fidx = [], [], []
    for i, entry in enumerate(entries):
        where = f"{path}: frames[{i}]"
        if not isinstance(entry, dict):
            raise SceneError(f"{where}: expected an object with 'K' and 'cam_from_world'")
        K.append(_matrix(entry, "K", (3, 3), where))
        T.append(_matrix(entry, "cam_from_world", (4, 4), where))
        fidx.append(entry.get("frame_index"))
    given = [f is not None for f in fidx]
    if any(given) and not all(given):
        raise SceneError(f"{path}: 'frame_index' is given for frame {given.index(True)} but missing "
                         f"for frame {given.index(False)}; give it for all frames or none")
    if all(given) and entries and not all(isinstance(f, int) and not isinstance(f, bool) for f in fidx):
        raise SceneError(f"{path}: every 'frame_index' must be an integer")
    return {
        "K": np.stack(K) if K else np.zeros((0, 3, 3)),
        "cam_from_world": np.stack(T) if T else np.zeros((0, 4, 4)),
        "frame_index": np.asarray(fidx, dtype=np.int64) if entries and all(given) else None,
        "name": data.get("name"),
        "metadata": data.get("metadata", {}),
    }


def check_scene_cameras(K: np.ndarray, cam_from_world: np.ndarray, where: Path, names: list[str]) -> None:
    """check_cameras, re-raised as SceneError naming the camera file and the frame's file name."""
    try:
        check_cameras(K, cam_from_world, where=str(where))
    except CameraError as e:
        msg = str(e)
        m = re.search(r"frame (\d+)", msg)
        if m and int(m.group(1)) < len(names):
            msg += f" [frame {m.group(1)} is {names[int(m.group(1))]}]"
        raise SceneError(msg) from e


# ----------------------------------------------------------------------------- public API

def load_scene_folder(directory: str | Path) -> Scene:
    """Load a posed RGB-D scene folder (layout in the module docstring) into a Scene."""
    d = Path(directory)
    if not d.is_dir():
        raise SceneError(f"{d}: scene folder not found")
    paths = list_frames(d / "frames")
    cams_path = d / "cameras.json"
    cams = read_cameras_json(cams_path)
    if len(cams["K"]) != len(paths):
        raise SceneError(f"{cams_path}: lists {len(cams['K'])} frames but {d / 'frames'} holds "
                         f"{len(paths)} images; they must match one to one in sorted order")
    names = [p.name for p in paths]
    check_scene_cameras(cams["K"], cams["cam_from_world"], cams_path, names)

    images = [read_rgb(p) for p in paths]
    frames = stack_frames(images, paths)                                     # (T, H, W, 3)
    depth = np.stack([read_depth(d / "depth" / f"{p.stem}.npy", frames.shape[1:3]) for p in paths])  # (T, H, W)
    T = len(paths)
    frame_index = cams["frame_index"] if cams["frame_index"] is not None else np.arange(T, dtype=np.int64)
    log.info("loaded scene folder %s: %d frames of %dx%d", d, T, frames.shape[1], frames.shape[2])
    return Scene(
        name=cams["name"] or d.resolve().name,
        frames=frames,
        depth=depth,
        K=cams["K"],
        cam_from_world=cams["cam_from_world"],
        frame_index=frame_index,
        metadata=dict(cams["metadata"] or {}),
    )


def save_scene_folder(scene: Scene, directory: str | Path) -> Path:
    """Write a Scene as a scene folder (PNG frames, .npy depth, cameras.json); returns the folder.

    Frames are named ``000000.png``... by position so that sorting by name keeps the order.
    """
    d = Path(directory)
    (d / "frames").mkdir(parents=True, exist_ok=True)
    (d / "depth").mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(scene.num_frames)))
    entries = []
    for t in range(scene.num_frames):
        stem = f"{t:0{width}d}"
        Image.fromarray(np.asarray(scene.frames[t], dtype=np.uint8)).save(d / "frames" / f"{stem}.png")
        np.save(d / "depth" / f"{stem}.npy", np.asarray(scene.depth[t], dtype=np.float32))
        entries.append({
            "K": np.asarray(scene.K[t], dtype=np.float64).tolist(),
            "cam_from_world": np.asarray(scene.cam_from_world[t], dtype=np.float64).tolist(),
            "frame_index": int(scene.frame_index[t]),
        })
    doc = {"name": scene.name, "metadata": scene.metadata, "frames": entries}
    (d / "cameras.json").write_text(json.dumps(doc, indent=1))
    return d
