"""Train GASP: LoRA + correspondence heads on a VLM (paper Sec. 4-5.2).

    python scripts/train_gasp.py                                  # one process: configs/tiny_synthetic.yaml
    accelerate launch --config_file configs/accelerate/single.yaml -q scripts/train_gasp.py
    accelerate launch --multi_gpu --num_processes 8 scripts/train_gasp.py --config configs/qwen2.5-vl-7b.yaml
    python scripts/train_gasp.py --resume runs/tiny/checkpoint-20 [overrides]

Under `accelerate launch`, a config file silences accelerate's "defaults were used" block and
`-q` keeps its CalledProcessError traceback off a failed run, so gasp's own error message is
the last line of the output.

Config: defaults, then the YAML file, then dotted key=value overrides (values parsed as YAML).
With --resume and no --config, the run's own OUT/config.yaml is used. Writes OUT/config.yaml,
metrics.jsonl, eval.jsonl, checkpoint-STEP/, results.json and figure3.png/.pdf.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from gasp.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "tiny_synthetic.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help=f"YAML config (default {DEFAULT_CONFIG.relative_to(ROOT)})")
    ap.add_argument("--resume", help="OUT/checkpoint-STEP folder to continue from")
    ap.add_argument("--out", help="run folder (the same as the override run.out=DIR)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.max_steps=50")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gasp.data.instruct import InstructionDataError
    from gasp.train.geo_stream import GeoStreamError

    config = args.config
    if config is None:
        run_cfg = Path(args.resume).parent / "config.yaml" if args.resume else None
        config = run_cfg if run_cfg is not None and run_cfg.is_file() else DEFAULT_CONFIG
    try:
        cfg = load_config(config, [*args.overrides, *([f"run.out={args.out}"] if args.out else [])])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    from gasp.train.preflight import InputError
    from gasp.train.recipe import EngineError, train
    from gasp.train.zero import ZeroConfigError
    from probes.train_eval import evaluate
    from tracks.io import TrackFormatError

    out = Path(cfg.run.out)
    made_out = not out.exists()
    try:
        summary = train(cfg, resume=args.resume, progress=tqdm, evaluator=evaluate)
    except (InputError, GeoStreamError, InstructionDataError, TrackFormatError, FileNotFoundError, EngineError,
            ZeroConfigError) as e:
        if made_out and not any(out.glob("checkpoint-*")):      # a refused run leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        if os.environ.get("RANK", "0") == "0":                    # under a launch, every process refuses; one says so
            print(f"error: {e}", file=sys.stderr)
        return 2
    if summary.get("results") is not None:
        from plots.figure3 import draw_figure3  # noqa: PLC0415

        draw_figure3([summary["results"]], [f"GASP ({cfg.model.name}, step {summary['step']})"],
                     Path(cfg.run.out) / "figure3.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
