"""LLaVA-NeXT-Video adapter, and the LLaVA video layout shared with LLaVA-OneVision.

Shape vocabulary: F frames, S x S vision input, n = S/p patches per side, h x w tokens.

Every frame is resized, whole, to the vision tower's square input S x S (bicubic, as the
processors do) instead of the video processor's shortest-edge resize + centre crop: the
crop would drop the frame's sides, where tracks live. The aspect change is folded into
the per-axis token size. CLIP patches (n x n, CLS dropped) are average-pooled with
stride s to (n//s) x (n//s) tokens per frame (24 -> 12 for the 7B model); the video
placeholders are contiguous, frame-major then row-major, with 1-D positions.
"""
from __future__ import annotations

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.preprocess import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_frames, normalize_frames, processor_mean_std, resize_frames,
)


class LlavaVideoAdapter(ModelAdapter):
    """Shared LLaVA logic: one square image per frame, a contiguous run of <video> tokens."""

    frames_modes = ("video",)
    vision_attr = "vision_tower"
    default_image_size = 336
    default_patch_size = 14
    default_video_token_id = 32000
    default_mean_std = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    n_trailing = 0  # video placeholders after the frames (OneVision's newline)

    @property
    def image_size(self) -> int:
        vc = getattr(self.config, "vision_config", None)
        return int(getattr(vc, "image_size", self.default_image_size))

    @property
    def patch_size(self) -> int:
        vc = getattr(self.config, "vision_config", None)
        return int(getattr(vc, "patch_size", self.default_patch_size))

    def token_grid(self) -> tuple[int, int]:
        raise NotImplementedError

    def token_pixels(self) -> float:
        """Resized-frame pixels per token along each axis."""
        raise NotImplementedError

    def _template(self, tok, prompt: str) -> tuple[list[int], list[int]]:
        raise NotImplementedError

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        self._check_mode(frames_mode)
        frames = check_frames(frames)
        n_frames, height, width = frames.shape[:3]
        s, tpx = self.image_size, self.token_pixels()
        self._check_square_input(height, width, size, tpx)
        tok = self._tokenizer(processor_or_tokenizer)
        cfg_id = getattr(self.config, "video_token_id", None) if self.config is not None else self.default_video_token_id
        video_id = self._token_id(tok, "<video>", cfg_id)
        mean, std = processor_mean_std(processor_or_tokenizer, *self.default_mean_std)
        x = normalize_frames(resize_frames(frames, (s, s)), mean, std)  # (F, 3, S, S)

        h, w = self.token_grid()
        before, after = self._template(tok, prompt)
        n_video = n_frames * h * w + self.n_trailing
        ids = before + [video_id] * n_video + after
        input_ids = torch.tensor([ids], dtype=torch.long)
        start = len(before)
        positions = start + torch.arange(n_frames * h * w).reshape(n_frames, h, w)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": torch.from_numpy(x)[None],  # (1, F, 3, S, S)
        }
        scale_y, scale_x = height / s, width / s
        layout = VisualLayout(
            positions=positions,
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(tpx * scale_y, tpx * scale_x),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout


@register_adapter
class LlavaNextVideoAdapter(LlavaVideoAdapter):
    model_type = "llava_next_video"

    @property
    def pool_stride(self) -> int:
        return int(getattr(self.config, "spatial_pool_stride", 2))

    def token_grid(self):
        n = self.image_size // self.patch_size
        return n // self.pool_stride, n // self.pool_stride  # AvgPool2d floors

    def token_pixels(self):
        # Token r pools patches [s*r, s*(r+1)), i.e. s*p resized pixels.
        return float(self.pool_stride * self.patch_size)

    def _template(self, tok, prompt):
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return bos + self._encode(tok, "USER:"), self._encode(tok, "\n" + prompt + " ASSISTANT:")

    # Vicuna-style rounds: "USER: ... ASSISTANT: answer</s>USER: ... ASSISTANT: answer</s>".
    def _answer_text(self, answer):
        return " " + answer

    def _end_of_turn(self, tok):
        return [tok.eos_token_id]

    def _between_turns(self, tok):
        return []

    def _user_turn(self, tok, human):
        human_ids = self._user_text(tok, human, "turn human text")
        return self._encode(tok, "USER: "), human_ids, self._encode(tok, " ASSISTANT:")
