"""Turn tracks into correspondence VQA in the LLaVA-Video format: the paper's Sec. 5.4 fairness
baseline (library: gasp/data/correspondence_vqa.py).

    python scripts/make_correspondence_vqa.py --tracks FILE.h5 --out DIR [--kind choice|coords|both]
        [--per-sequence K] [--seed S]

"choice": which labelled point (A-D) in image 2 corresponds to the point marked in image 1;
"coords": the [x, y] pixel of that point in image 2 ((0, 0) = top-left pixel, x right, y down).
Writes DIR/videos/<id>/000.png, 001.png and DIR/instruct.json; read it with num_frames=2.
The arguments are saved to DIR/made_by.json.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from gasp.data.correspondence_vqa import write_correspondence_vqa
from gasp.runinfo import save_args
from tracks.io import TrackFormatError, TrackReader

log = logging.getLogger("make_correspondence_vqa")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", required=True, type=Path, help="tracks file or folder of shards")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--kind", choices=["choice", "coords", "both"], default="both")
    p.add_argument("--per-sequence", type=int, default=2, help="samples of each kind per sequence")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        with TrackReader(args.tracks) as reader:
            sequences = (reader[i] for i in range(len(reader)))
            path = write_correspondence_vqa(sequences, args.out, kind=args.kind, per_sequence=args.per_sequence,
                                            seed=args.seed, progress=lambda it: tqdm(it, total=len(reader),
                                                                                     desc="sequences"))
    except (TrackFormatError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_args(args, args.out / "made_by.json")
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
