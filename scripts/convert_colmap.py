"""Convert an undistorted COLMAP reconstruction plus depth into a tracks file (loader: tracks/colmap.py).

    python scripts/convert_colmap.py --colmap DIR [--sparse sparse/0] [--images images]
        [--depth stereo/depth_maps | --depth-npy DEPTH_DIR] --out FILE.h5 [--grid 24]
        [--frames sampled|all] [--sequences N] [--split train|eval] [--seed S] [--rel-tol 0.05]

DIR is a COLMAP workspace as ``colmap image_undistorter`` writes it. ``--sparse``,
``--images`` and ``--depth`` are relative to DIR; without ``--sparse`` the model is read
from DIR/sparse, else DIR/sparse/0. Depth is COLMAP's MVS maps
(``<image name>.geometric.bin``, else ``.photometric.bin``) or, with ``--depth-npy``,
one ``<image stem>.npy`` per image in the model's units. Cameras must be PINHOLE or
SIMPLE_PINHOLE. Bad input exits with code 2 and a one-line message, and no output
file is left behind.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import logging  # noqa: E402

from scripts.build_tracks import add_sampling_args, check_sampling_args, convert  # noqa: E402
from tracks.colmap import DEFAULT_DEPTH_DIR, load_colmap_scene  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--colmap", required=True, type=Path, help="COLMAP workspace folder")
    p.add_argument("--sparse", type=Path, default=None, help="model folder in DIR (default: sparse, else sparse/0)")
    p.add_argument("--images", type=Path, default=Path("images"), help="image folder in DIR")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--depth", type=Path, default=Path(DEFAULT_DEPTH_DIR), help="MVS depth map folder in DIR")
    depth.add_argument("--depth-npy", type=Path, default=None, help="folder of <image stem>.npy depth instead")
    add_sampling_args(p, frames_default="sampled")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return convert(lambda: load_colmap_scene(args.colmap, sparse=args.sparse, images=args.images, depth=args.depth,
                                             depth_npy=args.depth_npy), args, "convert_colmap.py")


if __name__ == "__main__":
    sys.exit(main())
