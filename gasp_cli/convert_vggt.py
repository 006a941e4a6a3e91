"""Convert VGGT's predictions (depth, cameras) into a tracks file at the source frames' size (library: tracks/vggt.py).

    python scripts/convert_vggt.py --predictions DIR/predictions.npz --images DIR/images --out FILE.h5
        [--mode auto|crop|pad] [--conf-threshold 5] [--grid 24] [--frames sampled|all] [--sequences N]
        [--split train|eval] [--seed S] [--rel-tol 0.05]

``predictions.npz`` is what VGGT's ``demo_gradio.py`` saves (``depth``, ``depth_conf``,
``extrinsic``, ``intrinsic``, ``images``); ``--images`` is the folder of source frames it read.
VGGT's resize and crop (or pad) is undone, so depth, K and tracks are at the source frames'
size; pixels whose ``depth_conf`` is below ``--conf-threshold`` have unknown depth, and points
landing there an unknown state. Tracks come from depth and poses on a ``--grid`` grid. VGGT's
COLMAP export (``demo_colmap.py --use_ba``) converts with ``scripts/convert_colmap.py --tracks
sparse`` instead. Bad input exits with code 2 and one line naming the file and the fix; no
output file is left behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gasp_cli.build_tracks import add_sampling_args, check_sampling_args, convert
from tracks.vggt import DEFAULT_CONF_THRESHOLD, MODES, load_vggt_scene


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predictions", required=True, type=Path, help="VGGT's predictions.npz")
    p.add_argument("--images", required=True, type=Path, help="the folder of source images VGGT read")
    p.add_argument("--mode", choices=("auto",) + MODES, default="auto",
                   help="VGGT's preprocessing (default: the one that fits and reproduces its 'images')")
    p.add_argument("--conf-threshold", type=float, default=DEFAULT_CONF_THRESHOLD,
                   help="depth_conf below this is unknown depth (default %(default)s, demo_colmap.py's)")
    add_sampling_args(p, frames_default="sampled")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return convert(lambda: load_vggt_scene(args.predictions, args.images, mode=args.mode,
                                           conf_threshold=args.conf_threshold), args, "convert_vggt.py")


if __name__ == "__main__":
    sys.exit(main())
