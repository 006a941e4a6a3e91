"""Per-sample cost of a geometric micro-batch, measured in any checkout of gasp (issue 19's 2x point).

    python bench/bench_sample.py --code PATH --tracks long.h5 --frames 24 24 --samples 10

Imports `gasp` from the checkout at --code (default: this one), so that the same command
times the code before a change (a `git worktree` of the old commit) and after it, one process
each, on the same stored scenes. A sample is what `bench_pipeline.py` times (its
`samples_per_second`, from this checkout): a scene read, a 24 x 24 track build and
preprocessing to a 448 x 784 Qwen2.5-VL input, with --frames MIN MAX frames, in the training
process (no workers). One warm-up sample is left out. If --tracks does not exist, two 60-frame
960 x 540 synthetic scenes are rendered there first (this checkout's renderer). Prints one JSON
line: the checkout's git SHA (and whether it has uncommitted changes), ms per sample and the
mean frame count.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _git(code: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", type=Path, default=HERE, help="checkout whose gasp is timed")
    p.add_argument("--tracks", type=Path, required=True, help="track file; rendered here if missing")
    p.add_argument("--frames", type=int, nargs=2, default=[24, 24], metavar=("MIN", "MAX"))
    p.add_argument("--samples", type=int, default=10)
    a = p.parse_args(argv)
    if not (a.code / "gasp" / "__init__.py").is_file():
        p.error(f"--code {a.code}: no gasp/ package there; give a checkout of this repository")
    if not a.tracks.exists():
        from bench.bench_pipeline import render_long_scenes

        print(f"rendering 2 scenes of 60 frames at 960x540 into {a.tracks} ...", file=sys.stderr, flush=True)
        render_long_scenes(a.tracks, 2, 60)
    # a child process imports gasp from --code (run there, with it on PYTHONPATH: both come before the installed
    # checkout) and times it with
    # this checkout's bench_pipeline.samples_per_second, loaded from its file
    child = ("import importlib.util, json, sys\n"
             f"spec = importlib.util.spec_from_file_location('bench_pipeline', {str(HERE / 'bench' / 'bench_pipeline.py')!r})\n"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             f"r = m.samples_per_second({str(a.tracks)!r}, 0, {a.samples}, frames={tuple(a.frames)!r}, warmup=1)\n"
             "import gasp; assert gasp.__file__.startswith(sys.argv[1]), gasp.__file__\n"
             "print(json.dumps(r))\n")
    code = str(a.code.resolve())
    out = subprocess.run([sys.executable, "-c", child, code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": code}, cwd=code)     # "-c" puts the cwd first on sys.path
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"sha": _git(a.code, "rev-parse", "--short", "HEAD"),
                      "dirty": bool(_git(a.code, "status", "--porcelain", "--untracked-files=no")),
                      "samples": a.samples, "ms_per_sample": r["ms_per_sample"], "mean_frames": r["mean_frames"]}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
