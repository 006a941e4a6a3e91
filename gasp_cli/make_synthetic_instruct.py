"""Write synthetic scenes as LLaVA-Video-format instruction data (library: gasp/data/synthetic_instruct.py).

    python scripts/make_synthetic_instruct.py --tracks FILE.h5 --out DIR [--frames 8] [--seed 0] [--multi-turn]
    python scripts/make_synthetic_instruct.py --scenes N --seed S --out DIR [--size 112] [--scene-frames 32]

Writes DIR/videos/<scene>/000.png ... and DIR/instruct.json (spatial questions: camera motion,
box count, which box is closer). The arguments are saved to DIR/made_by.json.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from gasp.data.synthetic_instruct import render_scenes, scenes_from_tracks, write_synthetic_instruct
from gasp.runinfo import save_args
from tracks.synthetic import SyntheticSceneConfig

log = logging.getLogger("make_synthetic_instruct")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tracks", type=Path, help="tracks file or folder of shards made by make_synthetic.py")
    src.add_argument("--scenes", type=int, help="render this many scenes instead of reading --tracks")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--frames", type=int, default=8, help="frames written per video (uniform in time)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (with --scenes) and option-order seed")
    p.add_argument("--multi-turn", action="store_true", help="one record per scene, questions as rounds")
    p.add_argument("--size", type=int, default=112, help="rendered square image size (with --scenes)")
    p.add_argument("--scene-frames", type=int, default=32, help="rendered frames per scene (with --scenes)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.tracks is not None:
        scenes, total = scenes_from_tracks(args.tracks), None
    else:
        config = SyntheticSceneConfig(height=args.size, width=args.size, num_frames=args.scene_frames)
        scenes, total = render_scenes(args.scenes, args.seed, config), args.scenes
    try:
        path = write_synthetic_instruct(scenes, args.out, num_frames=args.frames, seed=args.seed,
                                        multi_turn=args.multi_turn,
                                        progress=lambda it: tqdm(it, total=total, desc="scenes"))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_args(args, args.out / "made_by.json")
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
