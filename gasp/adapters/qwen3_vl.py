"""Qwen3-VL adapter: 16-px patches (32 px per token) and text timestamps between frames.

In transformers 5.x the Qwen3-VL processor writes a video as, per temporal grid,
`<{t:.1f} seconds><|vision_start|><|video_pad|>*h*w<|vision_end|>`, and get_rope_index
splits video_grid_thw into T single-frame grids: the temporal M-RoPE axis advances
through the timestamp text, not through a time interval. The grid timestamp is the mean
time of the frames in it (one frame in "duplicate" mode, tp frames in "merged" mode).
There is no default system prompt. Deepstack features from early vision layers are
added to the visual positions of the first LLM layers; the placeholders are the same.
"""
from __future__ import annotations

import numpy as np

from gasp.adapters import register_adapter
from gasp.adapters.preprocess import HALF_MEAN_STD
from gasp.adapters.qwen2_vl import IMAGE, VIDEO, Qwen2VLAdapter, _Sequence


@register_adapter
class Qwen3VLAdapter(Qwen2VLAdapter):
    model_type = "qwen3_vl"
    pointmap_first_linear = None          # its merger (norm, linear_fc1) is not wired for the point-map input
    default_patch_size = 16
    default_mean_std = (HALF_MEAN_STD, HALF_MEAN_STD)
    system_prompt = ""

    def _build_sequence(self, tok, ids, prompt, type_id, per_grid, grid_frames, fps):
        if type_id == IMAGE:
            return super()._build_sequence(tok, ids, prompt, type_id, per_grid, grid_frames, fps)
        seq = _Sequence()
        seq.text(self._encode(tok, "<|im_start|>user\n"))
        starts = []
        for span in grid_frames:
            # Mean time of the grid's frames, as the processor's _calculate_timestamps (an odd
            # last frame is already padded with itself in `span`).
            stamp = float(np.mean(span)) / fps
            seq.text(self._encode(tok, f"<{stamp:.1f} seconds>"))
            starts.append(self._vision_block(seq, tok, ids, VIDEO, per_grid))
        seq.text(self._encode(tok, prompt + "<|im_end|>\n<|im_start|>assistant\n"))
        return seq.tensors(), starts
