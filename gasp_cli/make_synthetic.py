"""Render procedural synthetic scenes into a tracks file (library: tracks/synthetic.py).

    python scripts/make_synthetic.py --out FILE.h5 --scenes N --seed S [--size 448] [--frames 32]
        [--grid 8] [--sequences-per-scene K] [--split train|eval] [--same-texture-every 2]

Every ``--same-texture-every``-th scene (0, k, 2k, ...) has a panel with the back
wall's texture in front of the wall. The arguments are recorded in each scene's
metadata (key ``made_by``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

log = logging.getLogger("make_synthetic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output tracks file (.h5)")
    p.add_argument("--scenes", type=int, required=True, help="number of scenes to render")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs="+", default=[448], metavar="PX",
                   help="image size: one value for square images, or H W")
    p.add_argument("--frames", type=int, default=32, help="frames per scene")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees")
    p.add_argument("--pan", type=float, default=0.0, metavar="DEG",
                   help="extra yaw sweep over each camera path (more image motion; default 0)")
    p.add_argument("--grid", type=int, default=8, help="g of the g x g query grid")
    p.add_argument("--sequences-per-scene", type=int, default=1)
    p.add_argument("--split", choices=["train", "eval"], default="train", help="which frame sampler to use")
    p.add_argument("--same-texture-every", type=int, default=2,
                   help="make scenes 0, k, 2k, ... same-texture-at-two-depths scenes (0: none)")
    p.add_argument("--rgb-encoding", choices=["png", "jpeg", "raw"], default="png")
    args = p.parse_args(argv)
    if len(args.size) not in (1, 2):
        p.error("--size takes one value (square) or two (H W)")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    height, width = (args.size * 2)[:2]
    try:
        config = SyntheticSceneConfig(height=height, width=width, num_frames=args.frames, fov_deg=args.fov,
                                      pan_deg=args.pan)
    except ValueError as e:
        print(f"make_synthetic: error: {e}", file=sys.stderr)
        return 2
    made_by = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    keys = make_synthetic_file(args.out, args.scenes, args.seed, config, grid=args.grid,
                               sequences_per_scene=args.sequences_per_scene, split=args.split,
                               same_texture_every=args.same_texture_every, rgb_encoding=args.rgb_encoding,
                               progress=lambda it: tqdm(it, total=args.scenes, desc="scenes"),
                               extra_metadata={"made_by": made_by})
    log.info("%s: %d scenes, %d sequences", args.out, args.scenes, len(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
