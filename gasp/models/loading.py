"""Load a VLM strictly offline: a tiny built-in model, a local folder, or an alias / id in the HF cache.

    model, processor_or_tokenizer, adapter = load_model("qwen2.5-vl-7b", dtype="bf16", device="cuda")

Nothing is ever downloaded (`local_files_only=True`); a missing checkpoint raises
`ModelNotFoundError` saying where we looked and how to point at local weights. `adapter=DIR`
applies a peft LoRA adapter after checking that its targets fit the model.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from gasp.adapters import ModelAdapter, get_adapter, supported_model_types
from gasp.models.aliases import ALIASES, known_names, resolve_alias
from gasp.models.tiny import TINY_NAMES, build_tiny

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


class ModelNotFoundError(FileNotFoundError):
    """No local checkpoint for the requested model (we never download)."""


class UnknownModelError(ValueError):
    """A name that is neither an alias, a tiny model, a path nor an `org/name` id, or an unsupported family."""


class AdapterMismatchError(ValueError):
    """A LoRA adapter that does not fit the loaded model."""


@dataclass
class ProcessorBundle:
    """Tokenizer plus image processor, for checkpoints whose full processor needs torchvision."""

    tokenizer: Any
    image_processor: Any = None


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _cache_dirs() -> list[str]:
    from huggingface_hub import constants

    dirs = [constants.HF_HUB_CACHE]
    legacy = os.environ.get("TRANSFORMERS_CACHE")
    if legacy and legacy not in dirs:
        dirs.append(legacy)
    return dirs


def _find_in_cache(repo_id: str) -> tuple[str | None, list[str]]:
    """The cached snapshot folder holding `repo_id`'s config.json, and the places looked at."""
    from huggingface_hub import try_to_load_from_cache

    looked = []
    for cache in _cache_dirs():
        looked.append(os.path.join(cache, "models--" + repo_id.replace("/", "--")))
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
        if isinstance(hit, str) and os.path.isfile(hit):
            return os.path.dirname(hit), looked
    return None, looked


def _not_found(what: str, looked: list[str]) -> ModelNotFoundError:
    where = "\n".join(f"  - {p}" for p in looked)
    return ModelNotFoundError(
        f"no local checkpoint for {what}. Looked in:\n{where}\n"
        "Models are loaded offline and never downloaded. Point to local weights with "
        "`--model /path/to/dir` (a folder with config.json and the weights), or set HF_HOME "
        "(or HF_HUB_CACHE) to a Hugging Face cache that holds the model."
    )


def resolve_checkpoint(name_or_path: str) -> str:
    """A local folder with config.json for a path, an alias or an `org/name` id, else a clear error."""
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise _not_found(f"{name_or_path!r} (the folder has no config.json)", [os.path.abspath(expanded)])
        return expanded
    repo_id = resolve_alias(name_or_path)
    is_id = repo_id != name_or_path or (repo_id.count("/") == 1 and not repo_id.startswith((".", "/", "~")))
    if not is_id:
        if os.sep in name_or_path or name_or_path.startswith((".", "~")):
            raise _not_found(f"path {name_or_path!r}", [os.path.abspath(expanded)])
        raise UnknownModelError(
            f"unknown model {name_or_path!r}: not a folder, an alias or an org/name id. "
            f"Known names: {', '.join(known_names())}"
        )
    snapshot, looked = _find_in_cache(repo_id)
    if snapshot is None:
        label = f"{name_or_path!r} ({repo_id})" if repo_id != name_or_path else repr(repo_id)
        raise _not_found(label, looked)
    return snapshot


PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json")


def _load_processor(path: str, trust_remote_code: bool):
    """The checkpoint's processor; without torchvision, its tokenizer and PIL image processor.

    A folder with no processor files (a tiny or exported model: tokenizer only) gets its tokenizer and
    the adapters' family defaults, said in one plain line; transformers' own error text for a missing
    file (which points at the Hub) goes to the debug log only.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    kw = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    has_files = not os.path.isdir(path) or any(os.path.isfile(os.path.join(path, f)) for f in PROCESSOR_FILES)
    if has_files:
        try:
            proc = AutoProcessor.from_pretrained(path, **kw)
            if hasattr(proc, "tokenizer") or hasattr(proc, "convert_tokens_to_ids"):
                return proc
        except Exception as err:  # video processors need torchvision; fall back to the parts we use
            logger.debug("AutoProcessor failed for %s (%s); using tokenizer + image processor", path, err)
    tok = AutoTokenizer.from_pretrained(path, **kw)
    if not has_files:
        logger.info("%s has no processor files: using its tokenizer and the family's image defaults", path)
        return tok
    try:
        image_processor = AutoImageProcessor.from_pretrained(path, **kw)
    except Exception as err:
        logger.info("%s: its image processor does not load here; using the family's image defaults", path)
        logger.debug("image processor error for %s: %s", path, err)
        return tok
    return ProcessorBundle(tokenizer=tok, image_processor=image_processor)


def _adapter_files(adapter_dir: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """adapter_config.json and the shapes of the saved LoRA tensors."""
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(cfg_path):
        raise ModelNotFoundError(f"no LoRA adapter at {os.path.abspath(adapter_dir)} (missing adapter_config.json)")
    with open(cfg_path) as fh:
        cfg = json.load(fh)
    shapes: dict[str, tuple[int, ...]] = {}
    st = os.path.join(adapter_dir, "adapter_model.safetensors")
    if os.path.isfile(st):
        from safetensors import safe_open

        with safe_open(st, framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    elif os.path.isfile(os.path.join(adapter_dir, "adapter_model.bin")):
        state = torch.load(os.path.join(adapter_dir, "adapter_model.bin"), map_location="cpu", weights_only=True)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
    return cfg, shapes


def check_adapter_fits(model, adapter_dir: str, model_name: str) -> None:
    """Raise AdapterMismatchError unless every saved LoRA tensor matches a module of `model`."""
    cfg, shapes = _adapter_files(adapter_dir)
    base = cfg.get("base_model_name_or_path")
    problems = []
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            path = key.split(part)[0].removeprefix("base_model.model.")
            try:
                module = model.get_submodule(path)
            except AttributeError:
                problems.append(f"{path} does not exist")
                break
            want = module.in_features if dim == 1 else module.out_features
            if shape[dim] != want:
                side = "in" if dim == 1 else "out"
                problems.append(f"{path}: adapter {side}_features {shape[dim]} != model {want}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise AdapterMismatchError(
            f"the LoRA adapter at {adapter_dir} (trained on base model {base!r}) does not fit the loaded "
            f"model {model_name!r}: {shown}"
        )
    if base:
        _check_base_name(base, model_name, adapter_dir)


def model_identity(name: str) -> str | None:
    """A tiny name or Hugging Face id that `name` stands for; None for a local folder."""
    if name.lower() in TINY_NAMES:
        return name.lower()
    rid = resolve_alias(name)
    if rid.count("/") == 1 and not rid.startswith((".", "/", "~")) and not os.path.isdir(rid):
        return rid
    return None


def _check_base_name(base: str, model_name: str, adapter_dir: str) -> None:
    a, b = model_identity(base), model_identity(model_name)
    if a is not None and b is not None:
        if a != b:
            raise AdapterMismatchError(
                f"the LoRA adapter at {adapter_dir} was trained on base model {base!r} ({a}), "
                f"not on the loaded model {model_name!r} ({b})"
            )
        return
    # A local folder carries no hub id: compare folder and repo names, and only warn.
    def stems(*names):
        return {os.path.basename(os.path.normpath(n)).lower() for n in names if n}

    if not stems(base, a) & stems(model_name, b):
        logger.warning("adapter %s was trained on %r but is applied to %r (shapes fit)", adapter_dir, base, model_name)


VISION_FILE = "gasp_vision_tower.safetensors"   # beside the peft files: a vision tower trained in full


def apply_lora(model, adapter_dir: str, model_name: str):
    """Wrap `model` with the peft LoRA adapter in `adapter_dir` (inference mode), and load the vision tower
    saved beside it where the run trained that in full (``model.freeze_vision: false``; peft carries LoRA only)."""
    from peft import PeftModel

    check_adapter_fits(model, adapter_dir, model_name)
    with peft_quietly():
        wrapped = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    load_vision_tower(adapter_dir, wrapped)
    from gasp.pointmap import load_branch

    if load_branch(wrapped, get_adapter(wrapped), adapter_dir) is not None:     # HiSpatial's point-map input
        logger.info("joined the point-map branch saved in %s to the projector", adapter_dir)
    return wrapped


def load_vision_tower(adapter_dir: str | os.PathLike, model) -> bool:
    """The fully trained vision tower saved in ``adapter_dir`` (``VISION_FILE``) into ``model``; False if none."""
    from safetensors.torch import load_file

    path = os.path.join(os.fspath(adapter_dir), VISION_FILE)
    if not os.path.isfile(path):
        return False
    tower = get_adapter(model).vision_tower(model)
    state = load_file(path)
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AdapterMismatchError(f"{path} does not fit the model's vision tower (missing {missing[:3]}, "
                                   f"unexpected {unexpected[:3]})")
    logger.info("loaded the trained vision tower from %s", path)
    return True


@contextmanager
def peft_quietly():
    """Silence exactly one warning that peft, not gasp, triggers on every LoRA wrap.

    peft (0.21) reads `model.is_gradient_checkpointing`, which transformers 5.24 deprecates
    with a FutureWarning. gasp itself calls only the new names (`activation_checkpointing_*`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def enable_activation_checkpointing(model, context_fn=None) -> None:
    """Non-reentrant activation checkpointing, by the API name the installed transformers uses.

    Non-reentrant: with use_reentrant=True the captured states carry no gradient (docs/METHOD.md sec. 3).
    ``context_fn``: torch checkpoint's (forward, recompute) context pair (the trainer's ZeRO-3 one).
    """
    kwargs = {"use_reentrant": False, **({"context_fn": context_fn} if context_fn is not None else {})}
    if hasattr(model, "activation_checkpointing_enable"):           # transformers >= 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def check_model(name_or_path: str, *, adapter: str | os.PathLike | None = None,
                trust_remote_code: bool = False) -> str | None:
    """Fail fast, before any work, if `name_or_path` (and `adapter`) cannot be loaded; reads configs only.

    Returns the checkpoint folder, or None for a `tiny-*` name (built, not loaded).
    """
    name_or_path = os.fspath(name_or_path)
    path = None
    if name_or_path.lower() not in TINY_NAMES:
        from transformers import AutoConfig

        path = resolve_checkpoint(name_or_path)
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        if config.model_type not in supported_model_types():
            raise UnknownModelError(
                f"{name_or_path!r} is a {config.model_type!r} model; supported model types: "
                f"{', '.join(supported_model_types())}"
            )
    if adapter is not None and not os.path.isfile(os.path.join(os.fspath(adapter), "adapter_config.json")):
        raise ModelNotFoundError(f"no LoRA adapter at {os.path.abspath(adapter)} (missing adapter_config.json)")
    return path


def adapter_of(name_or_path: str, *, trust_remote_code: bool = False) -> ModelAdapter:
    """The adapter of model ``name_or_path`` from its config alone (no weights): what preflight checks ask."""
    path = check_model(name_or_path, trust_remote_code=trust_remote_code)
    if path is None:
        from gasp.models.tiny import build_tiny_config

        return get_adapter(build_tiny_config(os.fspath(name_or_path).lower()))
    from transformers import AutoConfig

    return get_adapter(AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code))


def load_model(
    name_or_path: str,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    seed: int = 0,
) -> tuple[Any, Any, ModelAdapter]:
    """Load `(model, processor_or_tokenizer, adapter)`; see the module docstring.

    `name_or_path`: a `tiny-*` name (built from `seed`), a local folder, an alias
    (`qwen2.5-vl-7b`, ...) or an `org/name` id found in the HF cache.
    """
    name_or_path = os.fspath(name_or_path)
    torch_dtype = _torch_dtype(dtype)
    path = check_model(name_or_path, adapter=adapter, trust_remote_code=trust_remote_code)
    if path is None:
        model, processor = build_tiny(name_or_path.lower(), seed=seed)
        model = model.to(torch_dtype)
    else:
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=get_adapter(config).attn_implementation(),
            local_files_only=True,
            trust_remote_code=trust_remote_code,
        )
        processor = _load_processor(path, trust_remote_code)
    model = model.to(device)
    if adapter is not None:
        model = apply_lora(model, os.fspath(adapter), name_or_path)
    model.eval()
    logger.info("loaded %s (%s, %s) on %s%s", name_or_path, model.config.model_type, torch_dtype, device,
                f" with adapter {adapter}" if adapter is not None else "")
    return model, processor, get_adapter(model)


__all__ = [
    "ALIASES", "AdapterMismatchError", "ModelNotFoundError", "ProcessorBundle", "UnknownModelError",
    "adapter_of", "apply_lora", "check_adapter_fits", "check_model", "model_identity", "enable_activation_checkpointing", "peft_quietly", "load_model", "resolve_checkpoint",
]
