"""Build a tracks file from a posed RGB-D scene folder (layout: tracks/scene_folder.py).

    python scripts/build_tracks.py --scene DIR --out FILE.h5 [--grid 24] [--frames all|sampled]
        [--sequences N] [--seed S] [--split train|eval] [--rel-tol 0.05]

``--frames all`` writes one sequence over every frame with query frame 0.
``--frames sampled`` writes N sequences from the training sampler (``--split train``)
or the evaluation sampler (``--split eval``); either way the query frame is the first.
Bad input exits with code 2 and a one-line message; no output file is left behind.
The arguments are recorded in each scene's metadata (key ``built_by``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tracks.geometry import DEFAULT_REL_TOL, CameraError
from tracks.io import TrackWriter
from tracks.sampling import SamplingError, plan_sequences
from tracks.scene_folder import SceneError, load_scene_folder
from tracks.types import Scene

log = logging.getLogger("build_tracks")
INPUT_ERRORS = (SceneError, CameraError, SamplingError)


def write_scene(writer: TrackWriter, scene: Scene, plans: list[np.ndarray], grid: int, rel_tol: float) -> int:
    """Add the scene and one sequence per plan (query frame 0); returns the number written."""
    writer.add_scene(scene)
    for ids in tqdm(plans, desc=f"sequences of {scene.name}", leave=False, disable=len(plans) < 2):
        writer.add_sequence(scene.name, ids, grid=grid, query_frame=0, rel_tol=rel_tol)
    return len(plans)


def add_sampling_args(p: argparse.ArgumentParser, frames_default: str) -> None:
    """Options shared with scripts/convert_dl3dv.py."""
    p.add_argument("--out", required=True, type=Path, help="output tracks file (.h5)")
    p.add_argument("--grid", type=int, default=24, help="g of the g x g query grid (paper: 8 or 24)")
    p.add_argument("--frames", choices=["all", "sampled"], default=frames_default)
    p.add_argument("--sequences", type=int, default=10, help="sequences per scene with --frames sampled")
    p.add_argument("--split", choices=["train", "eval"], default="train", help="sampler for --frames sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rel-tol", type=float, default=DEFAULT_REL_TOL, help="depth agreement for visibility")
    p.add_argument("--rgb-encoding", choices=["png", "jpeg", "raw"], default="png")


def check_sampling_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.grid < 1:
        p.error(f"--grid must be >= 1, got {args.grid}")
    if args.sequences < 1:
        p.error(f"--sequences must be >= 1, got {args.sequences}")
    if not args.rel_tol > 0:
        p.error(f"--rel-tol must be > 0, got {args.rel_tol}")


def record_args(scene: Scene, script: str, args: argparse.Namespace) -> None:
    scene.metadata["built_by"] = {"script": script, "args": {k: str(v) for k, v in vars(args).items()}}


@dataclass
class OutputStatus:
    failed: bool = False


@contextmanager
def guarded_output(out: Path, name: str, errors: tuple):
    """Run a conversion that writes ``out``; on one of ``errors`` print one line and leave nothing behind.

    The line is ``<name>: error: <message>`` on stderr and ``status.failed`` is set (the script
    exits 2). ``TrackWriter`` writes aside and renames, so no partial file exists; folders this
    run created for ``out`` are removed again if they are still empty.
    """
    out = Path(out)
    created = [d for d in (out.parent, *out.parent.parents) if not d.exists()]      # deepest first
    status = OutputStatus()
    try:
        yield status
    except errors as e:
        status.failed = True
        print(f"{name}: error: {e}", file=sys.stderr)
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break


def convert(load, args: argparse.Namespace, script: str, errors: tuple = INPUT_ERRORS) -> int:
    """Load one scene with ``load()``, write its planned sequences to ``args.out``; 2 on bad input."""
    name = Path(script).stem
    with guarded_output(args.out, name, errors) as status:
        scene = load()
        record_args(scene, script, args)
        plans = plan_sequences(scene.num_frames, scene.name, args.frames, args.split, args.sequences, args.seed)
        with TrackWriter(args.out, rgb_encoding=args.rgb_encoding) as writer:
            n = write_scene(writer, scene, plans, args.grid, args.rel_tol)
    if status.failed:
        return 2
    logging.getLogger(name).info("wrote %d sequence(s) of %s to %s", n, scene.name, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", required=True, type=Path, help="posed RGB-D scene folder")
    add_sampling_args(p, frames_default="all")
    args = p.parse_args(argv)
    check_sampling_args(p, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return convert(lambda: load_scene_folder(args.scene), args, "build_tracks.py")


if __name__ == "__main__":
    sys.exit(main())
