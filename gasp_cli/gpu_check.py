"""GPU check at Qwen2.5-VL-7B's shape (issue 11 sec. 3): probe and GASP-step cost, Q/K == eager in bf16.

    python scripts/gpu_check.py --out gpu_check.json            # one CUDA GPU, meant to fit in 8 minutes
    python scripts/gpu_check.py --tiny --out tiny.json          # the same code on CPU, tiny shape

A random-weight model with the 7B config's sizes (bf16, sdpa; flash_attention_2 too where
`flash_attn` imports) is built on the GPU. The JSON records: device, versions, git SHA, dtype,
attention implementations, per frame count (8, 16, 24 at 448x448) the plain forward and the
probe (time, peak memory), the Q/K == eager error with its tolerance and pass flag, one LoRA LM
step and one GASP geometric step (time, peak memory) at the training config's LoRA rank with
activation checkpointing, and the config sizes (`bench/gpu/check.py`). The JSON is
rewritten after every section. Exit status: 0 all sections ran and the Q/K check passed;
1 otherwise (the JSON says what failed); 2 no CUDA device and no --tiny.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_S = 10.0          # longest stretch without a progress line


class _Heartbeat(logging.Handler):
    """Logs 'still running' when nothing was logged for QUIET_S seconds (a 7B init or SVD can be quiet)."""

    def __init__(self, log: logging.Logger):
        super().__init__()
        self.log, self.last, self.message = log, time.monotonic(), "start"
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def emit(self, record):
        self.last, self.message = time.monotonic(), record.getMessage()

    def _run(self):
        t0 = time.monotonic()
        while not self.stop.wait(1.0):
            if time.monotonic() - self.last >= QUIET_S:
                self.log.info("... still running (%.0f s in; last: %s)", time.monotonic() - t0, self.message[:80])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write (rewritten after each section)")
    p.add_argument("--tiny", action="store_true", help="tiny-qwen2.5-vl shape on CPU (a smoke run, not GPU numbers)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "qwen2.5-vl-7b.yaml",
                   help="training config whose LoRA rank, heads and checkpointing the train section uses")
    p.add_argument("--frames", type=int, nargs="+", help="probe frame counts (default 8 16 24; --tiny 4 8)")
    p.add_argument("--reps", type=int, help="timed calls after one warm-up (default 3)")
    p.add_argument("--device", default="cuda", help="CUDA device, e.g. cuda:1 (ignored with --tiny)")
    a = p.parse_args(argv)
    if a.reps is not None and a.reps < 1:
        p.error(f"--reps must be >= 1, got {a.reps}")
    if a.frames and min(a.frames) < 2:
        p.error(f"--frames must be >= 2 (the probe matches a query frame against the others), got {a.frames}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("gpu_check")
    import torch

    if not a.tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False). Run it on a machine "
              "with a GPU, or pass --tiny for the CPU smoke run.", file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from bench.gpu.check import TINY_TRAIN_OVERRIDES, CheckSpec, run_check
    from gasp.train.config import ConfigError, load_config

    # transformers warns that the vision tower's sdpa ignores output_attentions (only the LLM's eager
    # maps are compared) and that checkpointing turns the KV cache off: both expected here
    hf_logging.set_verbosity_error()
    for noisy in ("accelerate", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    try:
        train = load_config(a.config, TINY_TRAIN_OVERRIDES if a.tiny else ())
    except ConfigError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    kw = {k: v for k, v in (("frame_counts", tuple(a.frames) if a.frames else None), ("reps", a.reps)) if v}
    if not a.tiny:
        kw["device"] = a.device
    spec = (CheckSpec.tiny if a.tiny else CheckSpec.qwen25_vl_7b)(train, **kw)
    spec.notes.append(f"command: {' '.join(['scripts/gpu_check.py', *(argv if argv is not None else sys.argv[1:])])}")
    shown = a.config.resolve().relative_to(ROOT) if a.config.resolve().is_relative_to(ROOT) else a.config
    spec.notes.append(f"training config: {shown}" + (f" with {', '.join(TINY_TRAIN_OVERRIDES)}" if a.tiny else ""))

    beat = _Heartbeat(log)
    logging.getLogger().addHandler(beat)
    try:
        res = run_check(spec, a.out)
    finally:
        beat.stop.set()
    qk = res.get("qk_eager", {})
    log.info("wrote %s in %.0f s: Q/K == eager %s (worst ratio %.3g, contrast %.3g); errors: %s", a.out,
             res["wall_s"], "PASS" if qk.get("pass") else "FAIL", qk.get("worst_ratio", float("nan")),
             (qk.get("contrast") or {}).get("worst_ratio") or float("nan"), sorted(res["errors"]) or "none")
    return 0 if res["complete"] and qk.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
