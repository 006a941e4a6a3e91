"""Model names, offline loading and tiny random-weight models."""

from gasp.models.aliases import ALIASES, known_names, resolve_alias
from gasp.models.loading import (
    AdapterMismatchError, ModelNotFoundError, UnknownModelError, apply_lora, check_model, load_model,
    resolve_checkpoint,
)
from gasp.models.tiny import TINY_NAMES, build_tiny, save_tiny

__all__ = [
    "ALIASES", "AdapterMismatchError", "ModelNotFoundError", "TINY_NAMES", "UnknownModelError", "apply_lora",
    "build_tiny", "check_model", "known_names", "load_model", "resolve_alias", "resolve_checkpoint", "save_tiny",
]
