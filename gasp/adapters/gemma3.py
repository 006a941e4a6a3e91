"""Gemma 3 adapter (google/gemma-3-4b-it): each frame is one image, 256 pooled tokens each.

Shape vocabulary: F frames, S x S vision input (896), p patch size (14), n = S/p patches per
side (64), t x t tokens per image (16 x 16 = `mm_tokens_per_image`), k = n/t pooling kernel (4).

Frames -> inputs. The model is image-only: the F frames are F images of one user turn.
Each frame is resized, whole, to S x S (PIL bilinear, rescale, mean/std 0.5: exactly the
Gemma 3 image processor, which also ignores the aspect ratio); the aspect change is folded
into the per-axis token size. Pan-and-scan is OFF (the processor's default,
`do_pan_and_scan=False`): with it a frame would add crops with their own token grids.

Tokens. SigLIP gives n x n patches; the projector average-pools them with kernel = stride = k
(`Gemma3MultiModalProjector.avg_pool`) to t x t tokens, flattened row-major. Token (r, c)
is the mean of patches [k*r, k*(r+1)) x [k*c, k*(c+1)), so it covers k*p resized pixels
per axis (56 px at 896), `token_size` = (H/t, W/t) original pixels. SigLIP's own attention
is bidirectional over the whole image; the pooling on top of it is local.

Sequence (the chat template with the processor's `full_image_sequence` per image):
    <bos><start_of_turn>user\\n
    F x [ \\n\\n <start_of_image> t*t x <image_soft_token> <end_of_image> \\n\\n ]
    {prompt}<end_of_turn>\\n<start_of_turn>model\\n
tokenized as one string (as the processor does). `layout.positions[f]` are the t*t soft
tokens of frame f; the begin/end-of-image and newline tokens are not in the layout.

Attention mask. `token_type_ids` (1 on the soft tokens, 0 elsewhere) are passed, as the
processor does; with them Gemma3Model makes the soft tokens of ONE image attend to each
other bidirectionally (`create_masks_for_vision_model`: global layers OR(causal, same image
block), sliding layers AND(sliding window, that)); different images stay causal, so frame-1
queries still never see frame-k keys in the model's own attention. `attention_mask_2d`
states this mask; tests/test_capture.py rebuilds eager attention from captured Q/K with it.
Gemma 3 has no attention logit softcapping; q_norm/k_norm come before RoPE (post-RoPE
capture sees them); scores use query_pre_attn_scalar**-0.5 (the probe's confidence uses its
own 1/sqrt(D), a temperature choice). Text layers alternate 5 sliding : 1 global.
"""
from __future__ import annotations

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.preprocess import HALF_MEAN_STD, check_frames, normalize_frames, processor_mean_std, resize_frames


def block_attention_mask(block: torch.Tensor) -> torch.Tensor:
    """(L,) block ids (-1: none) -> (L, L) bool: causal, OR same block >= 0 (bidirectional inside a block)."""
    n = block.numel()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    same = (block[:, None] == block[None, :]) & (block[:, None] >= 0)
    return causal | same


@register_adapter
class Gemma3Adapter(ModelAdapter):
    model_type = "gemma3"
    frames_modes = ("images",)
    vision_attr = "vision_tower"

    @property
    def image_size(self) -> int:
        return int(self._vision("image_size", 896))

    def token_grid(self) -> tuple[int, int]:
        tokens = int(getattr(self.config, "mm_tokens_per_image", 256))
        t = int(round(tokens ** 0.5))
        n = self.image_size // int(self._vision("patch_size", 14))
        if t * t != tokens or n % t:  # the projector's AvgPool2d would drop patches: boxes would be wrong
            raise ValueError(f"{n}x{n} patches do not pool evenly to mm_tokens_per_image={tokens}")
        return t, t

    def _text(self, tok, n_frames: int, prompt: str) -> str:
        t = self.token_grid()[0]
        image = f"\n\n<start_of_image>{'<image_soft_token>' * (t * t)}<end_of_image>\n\n"
        return f"{tok.bos_token}<start_of_turn>user\n{image * n_frames}{prompt}<end_of_turn>\n<start_of_turn>model\n"

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        self._check_mode(frames_mode)
        frames = check_frames(frames)
        n_frames, height, width = frames.shape[:3]
        s = self.image_size
        h, w = self.token_grid()
        self._check_square_input(height, width, size, s / h)
        tok = self._tokenizer(processor_or_tokenizer)
        cfg = self.config
        img = self._token_id(tok, "<image_soft_token>", getattr(cfg, "image_token_id", None))
        self._token_id(tok, "<start_of_image>", getattr(cfg, "boi_token_id", None))
        self._token_id(tok, "<end_of_image>", getattr(cfg, "eoi_token_id", None))
        self._user_text(tok, prompt, "prompt")
        ids = torch.tensor([self._encode(tok, self._text(tok, n_frames, prompt))], dtype=torch.long)
        where = torch.nonzero(ids[0] == img).flatten()
        if where.numel() != n_frames * h * w:
            raise ValueError(f"found {where.numel()} image tokens, expected {n_frames * h * w}")
        mean, std = processor_mean_std(processor_or_tokenizer, HALF_MEAN_STD, HALF_MEAN_STD)
        x = normalize_frames(resize_frames(frames, (s, s), "bilinear"), mean, std)  # (F, 3, S, S)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": (ids == img).long(),
            "pixel_values": torch.from_numpy(x),  # (F, 3, S, S): F images of one sample
        }
        layout = VisualLayout(
            positions=where.reshape(n_frames, h, w),
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(height / h, width / w),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout

    def attention_mask_2d(self, inputs, layer_type: str = "full_attention") -> torch.Tensor:
        """(L, L) bool, True where query i may attend key j, as Gemma3Model builds it for batch row 0."""
        tt = inputs["token_type_ids"][0]
        is_img = tt == 1
        start = is_img & ~torch.nn.functional.pad(is_img, (1, 0))[:-1]
        block = torch.where(is_img, torch.cumsum(start.long(), 0) - 1, -1)
        mask = block_attention_mask(block)
        if layer_type == "sliding_attention":
            i = torch.arange(block.numel())
            mask &= i[None, :] > i[:, None] - int(self.text_config(self.config).sliding_window)
        return mask

    # Gemma chat turns: "<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n answer<end_of_turn>\n"
    def _end_of_turn(self, tok):
        return [self._token_id(tok, "<end_of_turn>")]

    def _user_turn(self, tok, human):
        return (self._encode(tok, "<start_of_turn>user\n"), self._user_text(tok, human, "turn human text"),
                self._encode(tok, "<end_of_turn>\n<start_of_turn>model\n"))
