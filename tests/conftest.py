"""Shared test set-up: single-threaded torch for stable timings on small CI machines."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# rendered synthetic tracks go to a per-session cache, so tests never read a developer's ~/.cache
if "GASP_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GASP_CACHE"] = tempfile.mkdtemp(prefix="gasp-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GASP_CACHE"], True)


def free_port() -> int:
    """A TCP port nobody listens on now: each 2-process launch gets its own, so launches on parallel
    pytest-xdist workers do not meet on accelerate's default port 29500."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Under pytest-xdist (``-n 2 --dist loadfile``, as .ci/run runs) the files go to whichever worker is free,
# in this order: the slowest first (longest-processing-time scheduling), so the minutes-long re-probe of README
# command 1 overlaps the rest and the suite ends on short files rather than one worker finishing a long one
# alone. Seconds per file from `--durations` on 2 cores (issue 19); files not named keep their order after these.
SLOWEST_FIRST = (
    "test_shipped_checkpoints.py",   # 156 s
    "test_probe_cli.py",             # 116
    "test_trainer.py",               # 77
    "test_kill_safety.py",           # 51
    "test_fsdp.py",                  # 44
    "test_matches.py",               # 26
    "test_families.py",              # 18
    "test_gpu_check.py",             # 16
    "test_first_run.py",             # 15
    "test_reproduce_small.py",       # 11
)


def pytest_configure(config):
    # xdist (>= 3.6) otherwise re-sorts loadfile's files by their number of tests, which ignored SLOWEST_FIRST
    # and started the 2-test re-probe file last: one worker ran it alone for the suite's last minutes
    # (measured 2026-12-04: 6 min 38 s with the re-sort, 5 min 15 s without; the two workers now end 2 s apart)
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: order kept otherwise


def run_metrics(out) -> list[dict]:
    """A training run's OUT/metrics.jsonl as records (the 2-process engine tests compare them)."""
    import json

    return [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def saved_weights(ck, part: str) -> dict:
    """A checkpoint's adapter ("adapter") or heads tensors, as saved."""
    from safetensors.torch import load_file

    name = "adapter/adapter_model.safetensors" if part == "adapter" else "heads/heads.safetensors"
    return load_file(str(Path(ck) / name))
