"""Convert DL3DV scenes plus user-supplied depth into a tracks file (loader: tracks/dl3dv.py).

    python scripts/convert_dl3dv.py --scene DIR [--scene DIR2 ...] --depth DIR --out FILE.h5
        [--factor 4|auto] [--undistort] [--depth-scale S] [--no-unit-check] [--grid 24]
        [--frames sampled|all] [--sequences N] [--split train|eval] [--seed S] [--rel-tol 0.05]

Depth: give ``--depth`` once per ``--scene`` (same order), or once for all scenes; then
each scene's depth is read from ``DEPTH/<scene folder name>/`` if that folder exists,
else from ``DEPTH/`` itself. Files are ``<frame stem>.npy`` at the ``images_{factor}``
resolution, in the units of DL3DV's poses (COLMAP's, not metres): ``--depth-scale`` multiplies
them, and a multi-view consistency check refuses depth whose units disagree with the poses
(``--no-unit-check`` skips it). With DL3DV's COLMAP cache, ``scripts/convert_colmap.py
--depth-npy ... --align-depth scene`` fits the scale to the sparse points instead.

Scenes are loaded one at a time. Any bad scene aborts the run with exit code 2 and a
one-line message, and no output file is left behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from gasp_cli.build_tracks import (
    INPUT_ERRORS,
    add_sampling_args,
    check_sampling_args,
    guarded_output,
    record_args,
    write_scene,
)
from tracks.dl3dv import load_dl3dv_scene
from tracks.io import TrackWriter
from tracks.sampling import plan_sequences
from tracks.scene_folder import SceneError

log = logging.getLogger("convert_dl3dv")


def depth_dirs(scenes: list[Path], depths: list[Path]) -> list[Path]:
    """One depth folder per scene (see the module docstring)."""
    if len(depths) == len(scenes):
        return depths
    if len(depths) != 1:
        raise ValueError(f"give --depth once, or once per --scene ({len(scenes)}), not {len(depths)} times")
    root = depths[0]
    return [root / s.name if (root / s.name).is_dir() else root for s in scenes]


def parse_factor(text: str) -> int | None:
    if text == "auto":
        return None
    factor = int(text)
    if factor < 1:
        raise argparse.ArgumentTypeError(f"factor must be >= 1 or 'auto', got {text}")
    return factor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", required=True, type=Path, action="append", help="DL3DV scene folder (repeatable)")
    p.add_argument("--depth", required=True, type=Path, action="append", help="depth folder (see docstring)")
    p.add_argument("--factor", type=parse_factor, default=4, help="use images_{factor}; 'auto' = the only one")
    p.add_argument("--undistort", action="store_true", help="undistort OPENCV frames and depth instead of refusing")
    p.add_argument("--depth-scale", type=float, default=1.0, help="multiply every depth map by this factor")
    p.add_argument("--no-unit-check", action="store_true",
                   help="skip the check that depth and poses agree in units")
    add_sampling_args(p, frames_default="sampled")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    if not args.depth_scale > 0:
        p.error(f"argument --depth-scale: must be > 0, got {args.depth_scale}")
    try:
        depths = depth_dirs(args.scene, args.depth)
    except ValueError as e:
        p.error(str(e))
    names = [s.resolve().name for s in args.scene]
    if len(set(names)) != len(names):
        p.error(f"scene folder names must be distinct (they name the scenes in the file): {names}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    total = 0
    with guarded_output(args.out, "convert_dl3dv", INPUT_ERRORS) as status:
        with TrackWriter(args.out, rgb_encoding=args.rgb_encoding) as writer:
            pairs = list(zip(args.scene, depths))
            for scene_dir, depth_dir in pairs:            # every input checked before any progress is shown
                if not any((Path(scene_dir) / sub / "transforms.json").is_file() for sub in (".", "nerfstudio")):
                    raise SceneError(f"{scene_dir}: no transforms.json (looked in the folder and in "
                                            "nerfstudio/); pass a DL3DV scene folder")
                if depth_dir is not None and not Path(depth_dir).is_dir():
                    raise SceneError(f"{depth_dir}: depth folder not found")
            for scene_dir, depth_dir in tqdm(pairs, desc="scenes", disable=len(pairs) < 2):
                scene = load_dl3dv_scene(scene_dir, depth_dir, images_factor=args.factor, undistort=args.undistort,
                                         depth_scale=args.depth_scale, check_units=not args.no_unit_check)
                record_args(scene, "convert_dl3dv.py", args)
                plans = plan_sequences(scene.num_frames, scene.name, args.frames, args.split, args.sequences, args.seed,
                                       first_index=total)
                total += write_scene(writer, scene, plans, args.grid, args.rel_tol)
    if status.failed:
        return 2
    log.info("wrote %d sequence(s) from %d scene(s) to %s", total, len(args.scene), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
