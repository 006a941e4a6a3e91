"""`gasp rl --config configs/vst_rl_tiny.yaml [key=value ...]`: VST's RL stage (gasp/rl/loop.py)."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gasp rl", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML file (gasp.rl.loop.RLConfig's keys)")
    p.add_argument("overrides", nargs="*", help="key=value, parsed as YAML")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gasp.config import ConfigError
    from gasp.rl.loop import RLError, load_rl_config, train_rl

    try:
        cfg = load_rl_config(a.config, a.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    try:
        summary = train_rl(cfg, progress=tqdm)
    except RLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"adapter: {summary['adapter']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
