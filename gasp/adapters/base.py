"""The model-adapter contract: what differs between VLM families, and nothing else.

Shape vocabulary: F input frames, H x W frame pixels, h x w token grid per frame,
L sequence length, D hidden width.

An adapter turns F frames into model inputs with one token grid per frame and returns a
`VisualLayout` saying which sequence position holds the visual token of which
(frame, row, col) and which pixels of the original frame that token covers. It also
names the decoder layers and the LoRA targets (the LLM only, never the vision tower).

LM targets (the L_LM term of the paper's total loss, Sec. 4). With `answer` the inputs
gain `labels` (1, L): the assistant answer tokens and the end-of-turn token that closes
them carry their own ids, everything else is -100, so the loss is on assistant tokens
only (as HF chat SFT masks it). `turns` adds further (human, gpt) rounds after the first
answer, each in the family's chat format and with its gpt text labelled the same way.
The dialogue text follows the visual block and the first prompt, so `VisualLayout` is
unchanged. Each text piece is tokenized on its own (as LLaVA's per-round preprocessing
does), so labels never straddle a template boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class VisualLayout:
    """Where each frame's visual tokens sit in the sequence and which pixels they cover.

    Pixel convention: pixel (0, 0) has its centre at (0, 0); token (r, c) covers
    x in [c*tw - 0.5, (c+1)*tw - 0.5) and y in [r*th - 0.5, (r+1)*th - 0.5) of the
    ORIGINAL frame (the resize scale is folded into th, tw), so its centre is at
    ((c+0.5)*tw - 0.5, (r+0.5)*th - 0.5).
    """

    positions: torch.LongTensor  # (F', h, w) sequence index of the token for (grid f, row, col)
    frame_ids: torch.LongTensor  # (F',) index of the input frame that grid f stands for
    grid: tuple[int, int]  # (h, w) tokens per frame
    image_size: tuple[int, int]  # (H, W) original frame size in pixels
    token_size: tuple[float, float]  # (th, tw) original-frame pixels per token

    def __post_init__(self) -> None:
        h, w = self.grid
        if self.positions.ndim != 3 or tuple(self.positions.shape[1:]) != (h, w):
            raise ValueError(f"positions {tuple(self.positions.shape)} do not match grid {self.grid}")
        if self.frame_ids.shape != (self.positions.shape[0],):
            raise ValueError(f"frame_ids {tuple(self.frame_ids.shape)} vs {self.positions.shape[0]} grids")

    @property
    def num_grids(self) -> int:
        return int(self.positions.shape[0])

    @property
    def flat_positions(self) -> torch.LongTensor:
        """(F'*h*w,) sequence indices, grid-major then row-major."""
        return self.positions.reshape(-1)

    def token_boxes(self) -> torch.Tensor:
        """(h, w, 4) box x0, y0, x1, y1 of every token in original-frame pixels."""
        h, w = self.grid
        th, tw = self.token_size
        r = torch.arange(h, dtype=torch.float64)
        c = torch.arange(w, dtype=torch.float64)
        y0, x0 = (r * th - 0.5)[:, None].expand(h, w), (c * tw - 0.5)[None, :].expand(h, w)
        return torch.stack([x0, y0, x0 + tw, y0 + th], dim=-1)

    def to_token_units(self, xy):
        """Pixel (x, y) (..., 2) -> token-grid (col, row) coords in which token centres are integers."""
        th, tw = self.token_size
        if isinstance(xy, np.ndarray):
            scale = np.asarray([tw, th], dtype=np.float64)
        else:
            xy = torch.as_tensor(xy)
            xy = xy if xy.is_floating_point() else xy.double()
            scale = torch.tensor([tw, th], dtype=xy.dtype, device=xy.device)
        return (xy + 0.5) / scale - 0.5


def attention_layers(decoder_layers) -> list[int]:
    """Indices of the softmax-attention layers (those with ``self_attn``).

    Hybrid LLMs (Qwen3.5: Gated DeltaNet ``linear_attn`` in three of four layers) have no
    query-key softmax in the other layers, so there is nothing the probe's Q/K would mean there.
    """
    return [i for i, layer in enumerate(decoder_layers) if hasattr(layer, "self_attn")]


class ModelAdapter:
    """Per-family knowledge. Subclasses set `model_type`, `frames_modes` and implement `prepare_inputs`."""

    model_type: str = ""
    frames_modes: tuple[str, ...] = ()
    # Vision tower attribute of the inner model (`model.model.<name>`).
    vision_attr: str = "visual"
    # `token_type_ids` value of appended dialogue tokens (families whose inputs carry them).
    dialogue_token_type: int = 0
    # Whether a KV-cached prompt prefix plus a causal continuation equals the full forward
    # (False where the prompt attends bidirectionally, e.g. PaliGemma's prefix).
    prefix_cache_exact: bool = True

    def __init__(self, config=None):
        # The model's config fixes patch sizes and special-token ids; without one the
        # adapter assumes the released checkpoints' values.
        if config is not None and getattr(config, "model_type", None) != self.model_type:
            raise ValueError(f"{type(self).__name__} got a {getattr(config, 'model_type', None)!r} config")
        self.config = config

    def prepare_inputs(
        self,
        frames: np.ndarray,
        *,
        processor_or_tokenizer,
        prompt: str = "",
        frames_mode: str | None = None,
        fps: float = 1.0,
        size: tuple[int, int] | None = None,
        answer: str | None = None,
        turns: list[tuple[str, str]] | None = None,
    ) -> tuple[dict[str, torch.Tensor], VisualLayout]:
        """(F, H, W, 3) uint8 RGB frames -> (model inputs with batch 1, layout).

        `prompt` is the first user turn's text (the frames come before it). With `answer`
        the inputs also hold `labels` (1, L) long, -100 except on assistant tokens;
        `turns` are extra (human, gpt) rounds after it and need `answer`.
        """
        raise NotImplementedError

    # ---- dialogue / LM targets ---------------------------------------------------------
    # Chat-format pieces after the first user turn; families override these.
    def _answer_text(self, answer: str) -> str:
        """The assistant text as it follows the assistant opening of the template."""
        return answer

    def _end_of_turn(self, tok) -> list[int]:
        """Token ids that close an assistant turn; they are labelled (the model must learn to stop)."""
        return [self._token_id(tok, "<|im_end|>")]

    def _between_turns(self, tok) -> list[int]:
        """Unlabelled ids after an assistant turn's end, before the next user turn."""
        return self._encode(tok, "\n")

    def _user_turn(self, tok, human: str) -> tuple[list[int], list[int], list[int]]:
        """(template ids before the human text, human ids, template ids up to the assistant's answer)."""
        return (self._encode(tok, "<|im_start|>user\n"), self._user_text(tok, human, "turn human text"),
                self._encode(tok, "<|im_end|>\n<|im_start|>assistant\n"))

    def _user_text(self, tok, text: str, what: str) -> list[int]:
        ids = self._encode(tok, text)
        special = sorted(set(ids) & (set(tok.all_special_ids) - {tok.unk_token_id}))  # <unk> is only unknown text
        if special:
            # A stray <video>/<|im_end|> in dialogue text would shift the visual tokens or the turns.
            raise ValueError(f"{what} {text!r} contains special token(s) "
                             f"{tok.convert_ids_to_tokens(special)}; only the first prompt is followed by the frames")
        return ids

    def _add_dialogue(self, inputs: dict[str, torch.Tensor], tok, answer: str | None,
                      turns: list[tuple[str, str]] | None) -> dict[str, torch.Tensor]:
        """Append the answer and further rounds to a prompt-only sequence and add `labels` (1, L)."""
        if answer is None:
            if turns:
                raise ValueError("turns need an answer to the first prompt")
            return inputs
        ids: list[int] = []
        labels: list[int] = []

        def add(piece: list[int], labelled: bool) -> None:
            ids.extend(piece)
            labels.extend(piece if labelled else [-100] * len(piece))

        rounds = [(None, answer)] + [tuple(t) for t in (turns or [])]
        for k, rnd in enumerate(rounds):
            if len(rnd) != 2 or not all(isinstance(x, str) for x in rnd[(k == 0):]):
                raise ValueError(f"turn {k} must be a (human, gpt) pair of strings, got {rnd!r}")
            human, gpt = rnd
            if k > 0:
                add(self._between_turns(tok), False)
                before, text, after = self._user_turn(tok, human)
                add(before + text + after, False)
            add(self._user_text(tok, self._answer_text(gpt), "assistant text"), True)
            add(self._end_of_turn(tok), True)
        prompt_ids = inputs["input_ids"]
        extra = torch.tensor([ids], dtype=prompt_ids.dtype)
        out = dict(inputs)
        out["input_ids"] = torch.cat([prompt_ids, extra], dim=1)
        out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
        # dialogue text is text (modality type 0); its token_type_ids are the family's (PaliGemma: 1, suffix)
        for key, fill in (("mm_token_type_ids", 0), ("token_type_ids", self.dialogue_token_type)):
            if key in inputs:
                tt = inputs[key]
                out[key] = torch.cat([tt, torch.full((1, len(ids)), fill, dtype=tt.dtype)], dim=1)
        out["labels"] = torch.cat([torch.full_like(prompt_ids, -100), torch.tensor([labels], dtype=torch.long)], dim=1)
        return out

    # ---- model structure -------------------------------------------------------------
    @staticmethod
    def unwrap(model):
        """The transformers model under any peft wrapper."""
        get_base = getattr(model, "get_base_model", None)
        return get_base() if callable(get_base) else model

    def inner_model(self, model):
        """`model.model` of a *ForConditionalGeneration (holds language_model and the vision tower)."""
        m = self.unwrap(model)
        inner = getattr(m, "model", m)
        if not hasattr(inner, "language_model"):
            raise TypeError(f"{type(m).__name__} has no language_model; is it a {self.model_type} VLM?")
        return inner

    def decoder_layers(self, model) -> torch.nn.ModuleList:
        """The LLM decoder layers, on the plain model or a peft-wrapped one."""
        return self.inner_model(model).language_model.layers

    def layer_kinds(self, model) -> list[str]:
        """Per decoder layer "full" (softmax attention, ``self_attn``: probed) or "linear"
        (a hybrid LLM's linear-attention layer, e.g. Qwen3.5's Gated DeltaNet: not probed)."""
        layers = self.decoder_layers(model)
        full = set(attention_layers(layers))
        return ["full" if i in full else "linear" for i in range(len(layers))]

    def vision_tower(self, model) -> torch.nn.Module:
        return getattr(self.inner_model(model), self.vision_attr)

    def visual_tokens(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T*h*w, d) the visual tokens as the LLM receives them, with grad (vision pre-training)."""
        raise NotImplementedError(f"{type(self).__name__} ({self.model_type}) has no visual_tokens; "
                                  "vision pre-training supports the Qwen2-VL / Qwen2.5-VL adapters")

    def projector(self, model) -> torch.nn.Module | None:
        """The module that turns the vision encoder's output into the LLM's visual tokens; None where unknown."""
        return None

    def pre_projector_from_input(self, x: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        """``projector``'s input as ``pre_projector_features`` gives it: (T*h*w, k, d) in the LLM's token order."""
        raise NotImplementedError(f"{type(self).__name__} ({self.model_type}) has no projector hook")

    # HiSpatial's point-map input (gasp.pointmap): the projector's first linear layer, by its name inside the
    # projector, where the point half joins; None: the family has no point-map input
    pointmap_first_linear: str | None = None

    def pointmap_patch_merge(self) -> tuple[int, int]:
        """(vision patch px, patches merged per token side) for the point map's patchify."""
        raise NotImplementedError(f"{type(self).__name__} has no point-map input")

    def pointmap_size(self, layout) -> tuple[int, int]:
        """(H', W') px of the vision input the point map is resized to: the token grid x patch x merge."""
        p, m = self.pointmap_patch_merge()
        return layout.grid[0] * p * m, layout.grid[1] * p * m

    def pointmap_rows(self, feats: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        """(F', h*m, w*m, C) point patch features -> the rows of the projector's first linear layer, in its order."""
        raise NotImplementedError(f"{type(self).__name__} has no point-map input")

    @classmethod
    def objective_sites(cls) -> tuple[str, ...]:
        """Where a training objective can read in this family (``gasp.objectives.base.SITES``): every family has
        the projector's output (layer -1), the LLM's hidden states and Q/K; the encoder's output before the
        projector only where the family maps it to the LLM's tokens (``pre_projector_from_input``)."""
        own = cls.pre_projector_from_input is not ModelAdapter.pre_projector_from_input
        return (("pre_projector",) if own else ()) + ("projector", "hidden", "qk")

    def vision_lora_target_modules(self, model=None) -> str | None:
        """Regex (peft full-match) for the vision blocks' attention projections, for a vision LoRA
        (``lora.vision_r``); None where gasp does not know the family's vision blocks."""
        return None

    def pre_projector_features(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T*h*w, k, d) the vision encoder's output before the projector, with grad: for each LLM visual
        token (grid-major then row-major, like ``VisualLayout``) the k encoder vectors the projector turns
        into it. What a vision-tower objective (PseudoGD) reads."""
        raise NotImplementedError(f"{type(self).__name__} ({self.model_type}) has no pre_projector_features; "
                                  "supported: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, LLaVA, PaliGemma")

    def text_config(self, model):
        cfg = getattr(self.unwrap(model), "config", model)
        return cfg.get_text_config()

    def attention_mask_2d(self, inputs: dict[str, torch.Tensor], layer_type: str = "full_attention") -> torch.Tensor:
        """(L, L) bool, True where query i may attend key j in the LLM (batch row 0 of `inputs`).

        Causal here; families with bidirectional image attention or sliding windows override it.
        Tests rebuild the model's eager attention from captured Q/K with it.
        """
        n = inputs["input_ids"].shape[1]
        return torch.ones(n, n, dtype=torch.bool).tril()

    def attn_implementation(self) -> str | dict[str, str]:
        """What to load the model with: sdpa, which `gasp.capture.qk.capture_qk` wraps (a family whose
        LLM cannot run sdpa returns a per-sub-config dict)."""
        return "sdpa"

    def lora_target_modules(self, model=None) -> str:
        """Regex (peft full-match) for the LLM's attention and MLP projections, never the vision tower."""
        return r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

    # ---- helpers shared by the families ------------------------------------------------
    def _vision(self, name: str, default):
        """A `vision_config` setting, or `default` without a config or without that key."""
        return getattr(getattr(self.config, "vision_config", None), name, default)

    def _check_square_input(self, height: int, width: int, size, token_px: float | None) -> None:
        """Families that resize every frame, whole, to the vision tower's S x S input (`self.image_size`):
        `size` may only restate S x S, and a frame must hold at least one token (`token_px` original-frame px)."""
        s = self.image_size
        if size is not None and tuple(size) != (s, s):
            raise ValueError(f"{self.model_type} takes {s}x{s} frames (its vision tower's input), not {tuple(size)}")
        if token_px is not None and min(height, width) < token_px:
            raise ValueError(f"frames of {height}x{width} px are smaller than one {self.model_type} token "
                             f"({token_px:g} px)")

    def _check_mode(self, frames_mode: str | None) -> str:
        mode = frames_mode or self.frames_modes[0]
        if mode not in self.frames_modes:
            raise ValueError(
                f"frames_mode {mode!r} is not supported by {self.model_type}; choose one of {self.frames_modes}"
            )
        return mode

    @staticmethod
    def _tokenizer(processor_or_tokenizer):
        return getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)

    @staticmethod
    def _encode(tokenizer, text: str) -> list[int]:
        if not text:
            return []
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _token_id(tokenizer, token: str, config_id: int | None = None) -> int:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        if config_id is not None and tid != config_id:
            raise ValueError(f"tokenizer id of {token!r} is {tid} but the model config says {config_id}")
        return tid

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_type={self.model_type!r}, frames_modes={self.frames_modes})"
