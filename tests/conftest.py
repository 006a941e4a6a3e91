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


# Scheduled first under pytest-xdist (``-n 2 --dist loadfile``, as .ci/run runs), so that the one test
# that takes minutes (README command 1's re-probe) overlaps the rest of the suite on the other worker.
SLOWEST_FIRST = ("test_shipped_checkpoints.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in SLOWEST_FIRST)       # stable: order kept otherwise
