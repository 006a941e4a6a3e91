"""PaliGemma / PaliGemma 2 adapter (google/paligemma2-3b-pt-224): each frame is one image.

Shape vocabulary: F frames, S x S vision input (224), p patch size (14), n = S/p tokens
per side (16, 256 tokens per image), L sequence length.

Frames -> inputs. The model is image-only: the F frames are F images of one sample (the
processor's multi-image form, its image tokens repeated per image). Each frame is resized,
whole, to S x S (PIL bicubic, rescale, mean/std 0.5: exactly the SigLIP image processor
PaliGemma uses, which also ignores the aspect ratio); the aspect change is folded into the
per-axis token size. There is no image splitting or pan-and-scan in PaliGemma.

Tokens. One token per SigLIP patch (no pooling, `PaliGemmaMultiModalProjector` is one
linear layer), row-major: token (r, c) covers p resized pixels per axis, `token_size` =
(H/n, W/n) original pixels.

Sequence (the processor's prefix, tokenized as one string):
    F*n*n x <image>  <bos> {prompt} \\n              token_type_ids 0 (prefix)
    {answer} <eos>                                   token_type_ids 1 (suffix, labelled)
`layout.positions[f]` = f*n*n + (r*n + c): the image tokens open the sequence. PaliGemma is
not a chat model, so there is one answer and `turns` are refused.

Attention mask. PaliGemmaModel turns `token_type_ids` into `block_sequence_ids` (prefix 0,
suffix -1): the whole prefix (all F images, <bos>, the prompt) attends bidirectionally, the
suffix causally. Sliding layers OR the same prefix overlay onto the windowed causal mask
(`create_sliding_window_causal_mask`), so the prefix stays fully bidirectional there and only
the suffix is windowed. So, unlike in causal VLMs,
frame-1 queries do attend to frame-k keys in the model's own attention. `token_type_ids` are
always passed (all zeros without an answer), as the processor does. `attention_mask_2d`
states this mask; tests/test_capture.py rebuilds eager attention from captured Q/K with it.

Softcapping. Gemma 2 scores are softcapped, cap * tanh(q.k * query_pre_attn_scalar**-0.5 / cap)
(`attn_logit_softcapping`, Gemma2Config's default 50; the checkpoint's own value was not read
offline), which sdpa refuses, so the LLM runs eager (`attn_implementation`); gasp.capture.qk then
wraps the modeling file's own `eager_attention_forward`, which receives `softcap` in its
kwargs. The cap acts on scores, not on Q/K, so the captured post-RoPE Q/K are what the
kernel multiplies. The probe's similarity (cosine) and softmax confidence (q.k / sqrt(D)) use
raw, uncapped scores: tanh is monotone, so the model's own argmax over a frame's keys is
unchanged, but the confidence is that of the uncapped logits, not the model's softmax.
Eager attention materialises each layer's (H, L, L) weights while that layer runs (not kept).
"""
from __future__ import annotations

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.gemma3 import block_attention_mask
from gasp.adapters.preprocess import HALF_MEAN_STD, check_frames, normalize_frames, processor_mean_std, resize_frames


@register_adapter
class PaliGemmaAdapter(ModelAdapter):
    model_type = "paligemma"
    frames_modes = ("images",)
    vision_attr = "vision_tower"
    dialogue_token_type = 1  # the answer is the suffix
    prefix_cache_exact = False  # the prompt is in the bidirectional prefix

    @property
    def image_size(self) -> int:
        return int(self._vision("image_size", 224))

    def token_grid(self) -> tuple[int, int]:
        n = self.image_size // int(self._vision("patch_size", 14))
        return n, n

    pointmap_first_linear = "linear"      # PaliGemmaMultiModalProjector is one linear layer (HiSpatial's family)

    def projector(self, model) -> torch.nn.Module:
        return self.inner_model(model).multi_modal_projector

    def pre_projector_from_input(self, x: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        return x.reshape(-1, 1, x.shape[-1])                                     # (F, n*n, d): one vector a token

    def pre_projector_features(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(F*n*n, 1, d): SigLIP's last hidden state, what the projector reads; differentiable."""
        tower = self.vision_tower(model)
        out = tower(inputs["pixel_values"].type(tower.dtype))
        return self.pre_projector_from_input(out.last_hidden_state, inputs, model)

    def pointmap_patch_merge(self) -> tuple[int, int]:
        return int(self._vision("patch_size", 14)), 1

    def pointmap_rows(self, feats: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        """(F, n, n, C) -> (F*n*n, C): one SigLIP patch a token, row-major, frames in order."""
        return feats.reshape(-1, feats.shape[-1])

    def attn_implementation(self):
        text = self.config.get_text_config() if self.config is not None else None
        if text is None or getattr(text, "attn_logit_softcapping", None) is not None:
            return {"text_config": "eager", "vision_config": "sdpa"}  # sdpa has no softcap
        return "sdpa"

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        self._check_mode(frames_mode)
        if turns:
            raise ValueError("PaliGemma is not a chat model: one answer (the suffix), no further turns")
        frames = check_frames(frames)
        n_frames, height, width = frames.shape[:3]
        s = self.image_size
        h, w = self.token_grid()
        self._check_square_input(height, width, size, s / h)
        tok = self._tokenizer(processor_or_tokenizer)
        self._token_id(tok, "<image>", getattr(self.config, "image_token_id", None))
        self._user_text(tok, prompt, "prompt")
        n = n_frames * h * w
        ids = self._encode(tok, "<image>" * n + tok.bos_token + prompt + "\n")
        input_ids = torch.tensor([ids], dtype=torch.long)
        mean, std = processor_mean_std(processor_or_tokenizer, HALF_MEAN_STD, HALF_MEAN_STD)
        x = normalize_frames(resize_frames(frames, (s, s), "bicubic"), mean, std)  # (F, 3, S, S)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids),  # the prefix
            "pixel_values": torch.from_numpy(x),
        }
        layout = VisualLayout(
            positions=torch.arange(n).reshape(n_frames, h, w),
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(height / h, width / w),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout

    def attention_mask_2d(self, inputs, layer_type: str = "full_attention") -> torch.Tensor:
        """(L, L) bool, True where query i may attend key j, as PaliGemmaModel builds it for batch row 0."""
        tt = inputs["token_type_ids"][0]
        block = torch.where(tt == 0, 0, -1)
        if layer_type != "sliding_attention":
            return block_attention_mask(block)
        # create_sliding_window_causal_mask ORs the block overlay onto the windowed causal mask
        i = torch.arange(tt.numel())
        window = int(self.text_config(self.config).sliding_window)
        windowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
        prefix = (block[:, None] == 0) & (block[None, :] == 0)
        return windowed | prefix

    def _end_of_turn(self, tok):
        return [tok.eos_token_id]
