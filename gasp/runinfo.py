"""What every results and run folder records about the code that produced it, and atomic writes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gasp import __version__

ROOT = Path(__file__).resolve().parents[1]


def git_sha(root: Path = ROOT) -> str | None:
    """HEAD commit of the source tree (``+dirty`` if it has uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def data_library_versions() -> dict[str, str | None]:
    """Versions of the libraries that can change stored bytes or numbers without any change to gasp:
    the numerics (numpy), the track files (h5py) and the PNG frames (Pillow's encoder)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("numpy", "h5py", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def run_info() -> dict[str, Any]:
    import torch
    import transformers

    return {"gasp_version": __version__, "git_sha": git_sha(), "torch": torch.__version__,
            "transformers": transformers.__version__, **data_library_versions()}


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dir_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Fill a folder with ``write(tmp)`` in a temporary folder beside ``path``, then put it in place: whole or not
    at all. An existing ``path`` is moved aside first and removed only once the new folder stands; a failure
    leaves ``path`` as it was. Like ``write_text_atomic``'s files, the result takes the umask's permissions
    (mkdtemp alone would leave 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
        old = None
        if path.exists() or path.is_symlink():   # rename() cannot replace a non-empty folder: move it aside
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / path.name)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_args(args: Any, path: str | os.PathLike) -> None:
    """Write a script's parsed arguments (an argparse Namespace) plus :func:`run_info` as JSON."""
    made_by = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(args).items()}
    write_json_atomic(path, {"args": made_by, **run_info()})
