"""What every tiny model shares: the word tokenizer, the text sizes, the family registry.

``gasp/models/tiny.py`` builds the models; a family whose config is built in its own module
(``gasp/models/tiny_<family>.py``) registers it here with ``register_tiny``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

# Words the tiny tokenizer knows besides letters, digits and punctuation.
_WORDS = (
    "the a an of in on at to and or is are was be this that it its what which where who how "
    "point points frame frames image images video videos labeled marked corresponds correspond "
    "predict describe x y left right top bottom first second next previous same object camera "
    "scene moves move motion depth near far yes no color red green blue white black one two three "
    "four five six seven eight nine ten user assistant system you answer question seconds"
).split()
# Appended later for the synthetic spatial QA and correspondence VQA (gasp.data); kept after
# _WORDS so that every earlier id stays the same.
_QA_WORDS = (
    "yellow orange purple cyan pink brown gray beige box boxes many closer farther forward backward "
    "does way options there see can pixel pixels coordinates coordinate give label labels column row from "
    "A B C D"
).split()
_PUNCT = list(".,:;!?'\"()[]{}<>-_/+*=#%&|@")

# Per-family special tokens, in the order their ids are assigned (after <unk>, <pad>).
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
LLAVA_SPECIALS = ["<s>", "</s>", "<image>", "<video>"]
QWEN_LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

TINY_VOCAB_SIZE = 512  # text vocab_size of every tiny model; all tokenizer ids stay below it


@dataclass(frozen=True)
class Family:
    model_type: str
    specials: list[str]
    bos: str | None
    eos: str
    pad: str
    # (tokenizer, text kwargs, vision overrides, top-level overrides) -> config; None: tiny.py builds it
    make_config: Callable[..., Any] | None = None
    # model -> None, run on the built model right after init (weights an init leaves degenerate)
    post_init: Callable[[Any], None] | None = None


FAMILIES: dict[str, Family] = {}       # filled by the family modules' @register_tiny, one file per family


def register_tiny(name: str, model_type: str, specials: list[str], *, eos: str, pad: str, bos: str | None = None,
                  post_init: Callable[[Any], None] | None = None):
    """Decorator for a family module's config builder: adds ``name`` to the tiny models.

    The builder gets ``(tokenizer, text, vision_overrides, top_overrides)``, where ``text`` holds
    the shared tiny text sizes with the text overrides applied, and returns the config.
    ``post_init(model)`` runs on the built model (e.g. to randomise weights the family's
    ``_init_weights`` zeroes).
    """
    def register(make_config: Callable[..., Any]) -> Callable[..., Any]:
        if name in FAMILIES:
            raise ValueError(f"tiny model {name!r} is already registered")
        FAMILIES[name] = Family(model_type, specials, bos, eos, pad, make_config, post_init)
        return make_config
    return register


def build_tiny_tokenizer(name: str):
    """A PreTrainedTokenizerFast over a small word vocabulary plus the family's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    fam = family(name)
    specials = ["<unk>"] + (["<pad>"] if fam.pad == "<pad>" else []) + fam.specials
    plain = list("abcdefghijklmnopqrstuvwxyz") + list("0123456789") + _PUNCT + _WORDS + _QA_WORDS
    vocab: dict[str, int] = {}
    for tok in specials + plain:
        vocab.setdefault(tok, len(vocab))
    assert len(vocab) <= TINY_VOCAB_SIZE, len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token=fam.pad,
        eos_token=fam.eos,
        bos_token=fam.bos,
        additional_special_tokens=[t for t in fam.specials if t not in (fam.pad, fam.eos, fam.bos)],
        model_max_length=1 << 20,
    )
    return tok


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def token_ids(tok, *tokens: str) -> list[int]:
    ids = tok.convert_tokens_to_ids(list(tokens))
    assert tok.unk_token_id not in ids or "<unk>" in tokens, tokens
    return ids


def text_kwargs(tok) -> dict[str, Any]:
    return dict(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )


def split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    text, vision, top = {}, {}, {}
    for k, v in overrides.items():
        if k.startswith("vision_"):
            vision[k[len("vision_"):]] = v
        elif k.startswith("text_"):
            text[k[len("text_"):]] = v
        elif k in ("image_token_id", "video_token_id", "spatial_pool_stride", "vision_feature_layer",
                   "vision_feature_select_strategy", "tie_word_embeddings"):
            top[k] = v
        else:
            text[k] = v
    return text, vision, top


def check_keys(cfg, keys: dict, where: str) -> None:
    # Configs accept misspelled keys silently, so compare against the declared fields.
    known = {f.name for f in dataclasses.fields(type(cfg))} | set(getattr(cfg, "attribute_map", {}))
    known |= {"model_type", "pad_token_id", "bos_token_id", "eos_token_id"}
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        raise ValueError(f"unknown {where} config key(s) {unknown} for {type(cfg).__name__}")


def qwen_rope(head_dim: int, theta: float, interleaved: bool = False) -> dict:
    # sum(mrope_section) must equal head_dim/2; split like the real checkpoints (t gets the least).
    half = head_dim // 2
    t = half // 4 if not interleaved else half - 2 * (half * 5 // 16)
    hw = (half - t) // 2
    sec = [half - 2 * hw, hw, hw]
    rope = {"rope_type": "default", "rope_theta": theta, "mrope_section": sec}
    if interleaved:
        rope["mrope_interleaved"] = True
    return rope


def check_special_ids(cfg, tok) -> None:
    vocab = cfg.get_text_config().vocab_size
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None and v >= vocab:
            raise ValueError(f"{n}={v} is not below vocab_size={vocab}")
    if len(tok) > vocab:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than vocab_size={vocab}")


