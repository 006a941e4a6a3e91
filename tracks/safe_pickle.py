"""Load a pickle that may only hold numpy arrays and plain containers (TAP-Vid's files).

``pickle.load`` runs whatever the file names: a pickle can import ``os.system`` and call it.
TAP-Vid ships its annotations as pickles of dicts and lists of numpy arrays, bytes, str and
numbers, so the loader admits exactly the globals those need and refuses every other
before it is imported, let alone called. Containers (dict, list, tuple, str, bytes, int,
float, bool, None) are pickle opcodes, not globals, and need no admission.

Admitted globals (``find_class``): numpy's array and scalar reconstructors and its dtype
and ndarray classes, under numpy 1's ``numpy.core`` and numpy 2's ``numpy._core`` names,
and ``_codecs.encode``, which protocol-2 pickles use to carry bytes (a string codec, no
side effects). Object arrays hold their elements as further pickled values, which go
through the same check.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

_NUMPY_NAMES = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
}
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class UnsafePickleError(ValueError):
    """The pickle names a global outside the admitted set, or cannot be read."""


def _numpy_core():
    return getattr(np, "_core", None) or np.core


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _NUMPY_NAMES:
                sub = getattr(_numpy_core(), module[len(prefix):])       # numpy 1 and 2 names alike
                return getattr(sub, name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):  # numpy 2 dtype classes
            import numpy.dtypes

            return getattr(numpy.dtypes, name)
        raise UnsafePickleError(f"refused global {module}.{name}: only numpy arrays and plain containers "
                                f"are admitted")


def load_restricted(path: str | Path) -> Any:
    """The object in pickle file ``path``; UnsafePickleError (naming the file) for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnsafePickleError(f"{path}: cannot read ({e})") from None
    try:
        return _Restricted(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}; this is not a TAP-Vid pickle (or it was tampered with), so it "
                                f"was not loaded") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UnsafePickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); is the download "
                                f"truncated? Fetch it again") from None
