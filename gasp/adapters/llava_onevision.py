"""LLaVA-OneVision adapter: per-frame grid plus one trailing newline token per video.

SigLIP gives n x n patches (27 x 27 at 384 px); the video path bilinearly resizes them to
ceil(n/2) x ceil(n/2) tokens (14 x 14). Token i then samples patch coordinate
(i + 0.5) * n / h - 0.5, so token centres are S/h resized pixels apart and that is the
token size used here. For odd n the bilinear weights spread a token over up to three
patches per axis, so the pixel box is the token's nominal footprint, not a hard support;
for even n (the tiny config) it is exactly a 2 x 2 patch average. After the F*h*w frame
tokens comes one more <video> placeholder that receives `image_newline`; it is not in
`layout.positions`.
"""
from __future__ import annotations

import math

from gasp.adapters import register_adapter
from gasp.adapters.llava_next_video import LlavaVideoAdapter
from gasp.adapters.preprocess import HALF_MEAN_STD


@register_adapter
class LlavaOnevisionAdapter(LlavaVideoAdapter):
    model_type = "llava_onevision"
    default_image_size = 384
    default_video_token_id = 151647
    default_mean_std = (HALF_MEAN_STD, HALF_MEAN_STD)
    n_trailing = 1

    def token_grid(self):
        n = math.ceil(self.image_size // self.patch_size / 2)
        return n, n

    def token_pixels(self):
        return self.image_size / self.token_grid()[0]

    def _template(self, tok, prompt):
        return (self._encode(tok, "<|im_start|>user "),
                self._encode(tok, "\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"))
