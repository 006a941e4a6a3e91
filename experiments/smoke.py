"""What the issue smoke runs (`experiments/*_smoke.py`) share: run a project script with its output logged, and
find a run's last checkpoint."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(args: list[str], log: Path) -> None:
    """``python ARGS`` in the project root, stdout and stderr into ``log``; exit naming the log if it fails."""
    with log.open("w") as f:
        r = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(args)} failed (exit {r.returncode}); see {log}")


def last_checkpoint(run: Path) -> Path:
    """RUN/checkpoint-N with the largest N."""
    return max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
