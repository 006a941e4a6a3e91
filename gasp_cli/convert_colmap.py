"""Convert a COLMAP reconstruction into a tracks file: sparse tracks from its 3D points, or grid tracks from depth.

    python scripts/convert_colmap.py --colmap DIR --tracks sparse [--sparse sparse/0] [--images images_4]
        [--undistort] --out FILE.h5 [--grid 24] [--frames sampled|all] [--sequences N] [--split train|eval]
    python scripts/convert_colmap.py --colmap DIR [--sparse sparse/0] [--images images]
        [--depth stereo/depth_maps | --depth-npy DEPTH_DIR] [--align-depth check|scene|frame|none]
        [--undistort] --out FILE.h5 [--grid 24] [--frames sampled|all] [--sequences N] [--split train|eval]

``--tracks sparse`` (libraries: tracks/colmap_sparse.py) needs no depth: each sequence's queries
are keypoints of its first frame, one per cell of a ``--grid`` x ``--grid`` grid, tracked through
the frames their 3D points are observed in (unknown elsewhere). It reads DL3DV's COLMAP cache as
downloaded (``--colmap SCENE/colmap --sparse sparse/0 --images images_4``) and VGGT's
``demo_colmap.py --use_ba`` export (``--colmap SCENE``, which has ``sparse/`` and ``images/``).

``--tracks grid`` (the default; tracks/colmap.py) builds tracks on a grid from depth: COLMAP's MVS
maps (``<image name>.geometric.bin``, else ``.photometric.bin``, pinhole cameras only) or, with
``--depth-npy``, one ``<image stem>.npy`` per image from anywhere (VGGT, a monocular model). Depth
must be in the poses' units: with the model's points3D, ``--align-depth check`` (default)
refuses depth in other units, ``scene`` / ``frame`` rescale it to the poses (one scale, or one
per frame), and ``none`` skips the check. ``--undistort`` resamples distorted (OPENCV, RADIAL)
cameras' frames and depth onto a pinhole camera.

``--sparse``, ``--images`` and ``--depth`` are relative to DIR; without ``--sparse`` the model is
read from DIR/sparse, else DIR/sparse/0. Bad input exits with code 2 and a one-line message,
and no output file is left behind.
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
    convert,
    guarded_output,
    record_args,
)
from tracks.colmap import DEFAULT_DEPTH_DIR, load_colmap_scene
from tracks.depth_align import ALIGN_MODES, DEFAULT_TOL
from tracks.sampling import plan_sequences
from tracks.scene_folder import SceneError
from tracks.writer import TrackWriter

log = logging.getLogger("convert_colmap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--colmap", required=True, type=Path, help="COLMAP folder (workspace, scene, DL3DV's colmap/)")
    p.add_argument("--tracks", choices=["grid", "sparse"], default="grid",
                   help="grid: from depth (default); sparse: the model's own 3D points' keypoints, no depth needed")
    p.add_argument("--sparse", type=Path, default=None, help="model folder in DIR (default: sparse, else sparse/0)")
    p.add_argument("--images", type=Path, default=Path("images"), help="image folder in DIR (e.g. images_4)")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--depth", type=Path, default=None, help=f"MVS depth map folder in DIR (default "
                                                                f"{DEFAULT_DEPTH_DIR})")
    depth.add_argument("--depth-npy", type=Path, default=None, help="folder of <image stem>.npy depth instead")
    p.add_argument("--align-depth", choices=ALIGN_MODES, default="check",
                   help="depth against the sparse points: check units (default), rescale per scene or per frame, "
                        "or none")
    p.add_argument("--depth-tol", type=float, default=DEFAULT_TOL,
                   help="relative disagreement of depth and poses that is refused (default %(default)s)")
    p.add_argument("--undistort", action="store_true", help="resample distorted cameras' frames onto a pinhole camera")
    add_sampling_args(p, frames_default="sampled")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    if args.tracks == "sparse" and (args.depth or args.depth_npy or args.align_depth != "check"):
        p.error("--tracks sparse takes its tracks from the model's 3D points and reads no depth; drop --depth, "
                "--depth-npy and --align-depth")
    if not args.depth_tol > 0:
        p.error(f"argument --depth-tol: must be > 0, got {args.depth_tol}")
    return args


def convert_sparse(args: argparse.Namespace) -> int:
    """Sparse tracks: one sequence per plan, queries selected by ``tracks.colmap_sparse.select_queries``."""
    from tracks.colmap_sparse import load_colmap_sparse, select_queries

    written = 0
    with guarded_output(args.out, "convert_colmap", INPUT_ERRORS) as status:
        sp = load_colmap_sparse(args.colmap, sparse=args.sparse, images=args.images, undistort=args.undistort)
        scene = sp.scene
        record_args(scene, "convert_colmap.py", args)
        plans = plan_sequences(scene.num_frames, scene.name, args.frames, args.split, args.sequences, args.seed)
        with TrackWriter(args.out, rgb_encoding=args.rgb_encoding) as writer:
            writer.add_scene(scene)
            for ids in tqdm(plans, desc=f"sequences of {scene.name}", leave=False, disable=len(plans) < 2):
                t = select_queries(sp, ids, args.grid)
                if t.tracks.shape[1] == 0:
                    log.warning("no keypoint of frame %s is tracked into the sequence's other frames; sequence skipped",
                                scene.metadata["image_names"][ids[0]])
                    continue
                writer.add_tracks(scene.name, ids, t.tracks, t.visible, t.occluded, 0, t.track_depth,
                                  metadata={"query_mode": "keypoints", "grid_cells": args.grid,
                                            "point3d_ids": t.point_ids.tolist()})
                written += 1
            if written == 0:
                raise SceneError(f"{args.colmap}: no sequence has a keypoint of its first frame observed in another "
                                 f"of its frames; try --frames all or more --sequences")
    if status.failed:
        return 2
    log.info("wrote %d sparse sequence(s) of %s to %s", written, scene.name, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.tracks == "sparse":
        return convert_sparse(args)
    return convert(lambda: load_colmap_scene(args.colmap, sparse=args.sparse, images=args.images,
                                             depth=args.depth or Path(DEFAULT_DEPTH_DIR), depth_npy=args.depth_npy,
                                             undistort=args.undistort, align_depth=args.align_depth,
                                             depth_tol=args.depth_tol), args, "convert_colmap.py")


if __name__ == "__main__":
    sys.exit(main())
