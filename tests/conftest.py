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
