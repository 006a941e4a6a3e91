"""Convert TAP-Vid pickles (DAVIS, RGB-Stacking, Kinetics) into a tracks file (library: tracks/tapvid.py).

    python scripts/convert_tapvid.py --pickle tapvid_davis.pkl --out davis.h5 [--query-mode first|strided]
        [--max-frames 24 | --model NAME] [--query-stride 5] [--resize H W] [--dataset auto] [--max-videos N]

``--pickle`` is ``tapvid_davis.pkl``, ``tapvid_rgb_stacking.pkl`` or a folder of Kinetics'
``NNNN_of_0010.pkl`` shards. Pickles are read with a restricted unpickler that admits only
numpy arrays and plain containers. Each video becomes one scene holding its kept frames
(at most ``--max-frames``, evenly spaced; ``--model`` sets that budget from the model's
context) and one sequence of supplied tracks. The probe (``probes/pck.py --tracks OUT``)
then reports TAP-Vid's δ metrics beside PCK. Bad input exits with code 2 and one line
naming the file and the fix; no output file is left behind.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from gasp_cli.build_tracks import guarded_output
from tracks.tapvid import DATASETS, DEFAULT_QUERY_STRIDE, QUERY_MODES, TapVidError, iter_videos, video_tracks
from tracks.writer import TrackWriter

log = logging.getLogger("convert_tapvid")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pickle", required=True, type=Path, help="TAP-Vid pickle, or folder of Kinetics shards")
    p.add_argument("--out", required=True, type=Path, help="output tracks file (.h5)")
    p.add_argument("--dataset", choices=("auto",) + DATASETS, default="auto",
                   help="layout of the pickle (default: detected: dict = davis, list of arrays = rgb_stacking, "
                        "list of JPEG bytes = kinetics)")
    p.add_argument("--query-mode", choices=QUERY_MODES, default="first",
                   help="TAP-Vid's query sampling: each track's first visible frame, or every --query-stride-th "
                        "frame (default first)")
    p.add_argument("--query-stride", type=int, default=DEFAULT_QUERY_STRIDE,
                   help="strided mode's stride in kept frames")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-frames", type=int, default=None,
                        help="frames kept per video, evenly spaced (default 24)")
    budget.add_argument("--model", help="keep as many frames as this model's context holds (at most 24 unless "
                                        "--max-frames-cap says otherwise); an alias, checkpoint folder or tiny-*")
    p.add_argument("--max-frames-cap", type=int, default=24, help="upper bound with --model (default 24)")
    p.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"),
                   help="store frames at H x W (tapnet's readers use 256 256); default: as in the pickle")
    p.add_argument("--max-videos", type=int, help="convert only the first N videos")
    p.add_argument("--rgb-encoding", choices=["png", "jpeg", "raw"], default="png")
    a = p.parse_args(argv)
    for name in ("max_frames", "max_frames_cap"):
        if getattr(a, name) is not None and getattr(a, name) < 2:
            p.error(f"argument --{name.replace('_', '-')}: must be >= 2, got {getattr(a, name)}")
    if a.query_stride < 1:
        p.error(f"argument --query-stride: must be >= 1, got {a.query_stride}")
    if a.max_videos is not None and a.max_videos < 1:
        p.error(f"argument --max-videos: must be >= 1, got {a.max_videos}")
    if a.resize and min(a.resize) < 1:
        p.error(f"argument --resize: H and W must be >= 1, got {a.resize}")
    return a


def frame_budget(args: argparse.Namespace, frame_hw: tuple[int, int]) -> tuple[int, dict]:
    """(max frames, how it was chosen) from --max-frames, or from --model's context at this frame size."""
    if args.model is None:
        n = args.max_frames or 24
        return n, {"max_frames": n, "chosen_by": "--max-frames" if args.max_frames else "default"}
    from gasp.models.budget import ModelBudgetError
    from gasp.models.budget import frame_budget as model_budget

    try:
        b = model_budget(args.model, frame_hw, cap=args.max_frames_cap)
    except ModelBudgetError as e:
        raise TapVidError(str(e)) from None
    return b["max_frames"], {**b, "chosen_by": f"--model {args.model}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    count = 0
    with guarded_output(args.out, "convert_tapvid", (TapVidError, ValueError)) as status:
        with TrackWriter(args.out, rgb_encoding=args.rgb_encoding) as writer:
            budget = None
            videos = iter_videos(args.pickle, args.dataset, args.max_videos)
            first = next(videos, None)                      # reading the first video checks the pickle, before any bar
            if first is None:
                raise TapVidError(f"{args.pickle}: holds no videos")
            for video in tqdm(itertools.chain([first], videos), desc="videos", unit="video"):
                hw = tuple(args.resize) if args.resize else video.frames.shape[1:3]
                if budget is None:
                    budget = frame_budget(args, hw)
                    log.info("keeping at most %d frames per video (%s)", budget[0], budget[1]["chosen_by"])
                t = video_tracks(video, budget[0], args.query_mode, args.query_stride,
                                 tuple(args.resize) if args.resize else None)
                t.scene.metadata["frame_budget"] = budget[1]
                t.scene.metadata["converted_by"] = {"script": "convert_tapvid.py",
                                                    "args": {k: str(v) for k, v in vars(args).items()}}
                writer.add_scene(t.scene)
                writer.add_tracks(t.scene.name, range(t.scene.num_frames), t.tracks, t.visible, t.occluded,
                                  t.query_frames, metadata={**t.metadata, "track_ids": t.track_ids.tolist()})
                count += 1
    if status.failed:
        return 2
    log.info("wrote %d video(s) to %s", count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
