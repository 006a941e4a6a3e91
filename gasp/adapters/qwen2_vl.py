"""Qwen2-VL adapter, and the Qwen frame layout shared with Qwen2.5-VL and Qwen3-VL.

Shape vocabulary: F input frames, T token grids, h x w tokens per grid, gh x gw patches.

The vision tower patchifies p-px patches, stacks tp = 2 consecutive frames into one
temporal patch and merges m x m = 2 x 2 patches into one LLM token (28 px for p = 14).
Frames modes (one token grid per frame unless "merged"):
- "duplicate" (default): video input with every frame doubled (f0 f0 f1 f1 ...), so each
  temporal patch is one frame and the temporal M-RoPE axis still advances per frame;
- "images": every frame is its own image (own position block; same visual features);
- "merged": the native video mode, frames 2t and 2t+1 share grid t, which stands for
  frame 2t (an odd last frame is duplicated, as the processor does).
`mm_token_type_ids` (0 text, 1 image, 2 video) is always returned: without it
transformers silently falls back to 1-D positions.
"""
from __future__ import annotations

import numpy as np
import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.preprocess import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_frames, processor_mean_std, qwen_pixels, resize_frames, smart_resize,
)

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids values


class _Sequence:
    """Accumulates input ids and their modality types; remembers where visual blocks start."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.types: list[int] = []

    def text(self, ids: list[int]) -> None:
        self.ids += ids
        self.types += [TEXT] * len(ids)

    def visual(self, token_id: int, n: int, type_id: int) -> int:
        start = len(self.ids)
        self.ids += [token_id] * n
        self.types += [type_id] * n
        return start

    def tensors(self) -> dict[str, torch.Tensor]:
        ids = torch.tensor([self.ids], dtype=torch.long)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": torch.tensor([self.types], dtype=torch.int32),
        }


@register_adapter
class Qwen2VLAdapter(ModelAdapter):
    model_type = "qwen2_vl"
    frames_modes = ("duplicate", "images", "merged")
    vision_attr = "visual"
    # Released-checkpoint values, used when no config is given.
    default_patch_size = 14
    default_token_ids = dict(vision_start_token_id=151652, vision_end_token_id=151653,
                             image_token_id=151655, video_token_id=151656)
    default_mean_std = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    # The image processor's pixel limits (the video processor's would upscale small frames).
    default_min_tokens = 4
    default_max_tokens = 1280
    system_prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"

    def visual_tokens(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T*h*w, d) the visual tokens as the LLM receives them (vision tower + merger), grid-major
        then row-major like `VisualLayout`; differentiable, so the tower can be trained on them."""
        inner = self.inner_model(model)
        if "pixel_values_videos" in inputs:
            out = inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        else:
            out = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        return torch.cat(list(out.pooler_output))

    def pre_projector_features(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T*h*w, m*m, d): each LLM visual token's m x m patches as the vision blocks leave them, before the
        merger's LayerNorm and MLP (the projector), in the LLM's token order; differentiable."""
        visual = self.vision_tower(model)
        if "pixel_values_videos" in inputs:
            px, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
        else:
            px, grid = inputs["pixel_values"], inputs["image_grid_thw"]
        out = visual(px.type(visual.dtype), grid_thw=grid)
        return self.pre_projector_from_input(getattr(out, "last_hidden_state", out), inputs, model)

    def projector(self, model) -> torch.nn.Module:
        return self.vision_tower(model).merger

    pointmap_first_linear = "mlp.0"           # the merger: ln_q, mlp.0 (4d -> 4d), GELU, mlp.2

    def pointmap_patch_merge(self) -> tuple[int, int]:
        return self.patch_size, self.merge_size

    def pointmap_rows(self, feats: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        """(F', h*m, w*m, C) -> (F'*h*w, m*m*C): each token's m x m patches (row-major, the processor's order),
        tokens in the merger's input order (Qwen2.5-VL: window order)."""
        F, H, W, C = feats.shape
        m = self.merge_size
        rows = feats.reshape(F, H // m, m, W // m, m, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m * C)
        grid = inputs["video_grid_thw"] if "video_grid_thw" in inputs else inputs["image_grid_thw"]
        order = self._window_order(self.vision_tower(model), grid)
        return rows if order is None else rows[order.to(rows.device)]

    def vision_lora_target_modules(self, model=None) -> str:
        """Each vision block's fused qkv and its output proj (not the patch embedding, not the merger)."""
        return r".*visual\.blocks\.\d+\.attn\.(qkv|proj)"

    def pre_projector_from_input(self, x: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        grid = inputs["video_grid_thw"] if "video_grid_thw" in inputs else inputs["image_grid_thw"]
        h = x.reshape(-1, self.merge_size ** 2, x.shape[-1])                   # (T*h*w, m*m, d), merge units
        order = self._window_order(self.vision_tower(model), grid)
        return h if order is None else h[torch.argsort(order.to(h.device))]

    def _window_order(self, visual, grid: torch.Tensor) -> torch.Tensor | None:
        """The merge units' order in the blocks' output (Qwen2.5-VL's window attention); None: the token order."""
        return None

    # ---- config-derived sizes -------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return int(self._vision("patch_size", self.default_patch_size))

    @property
    def temporal_patch_size(self) -> int:
        return int(self._vision("temporal_patch_size", 2))

    @property
    def merge_size(self) -> int:
        return int(self._vision("spatial_merge_size", 2))

    @property
    def token_px(self) -> int:
        return self.patch_size * self.merge_size

    def _ids(self, tokenizer) -> dict[str, int]:
        names = {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
                 "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>"}
        out = {}
        for attr, token in names.items():
            cfg_id = getattr(self.config, attr, None) if self.config is not None else self.default_token_ids[attr]
            out[attr] = self._token_id(tokenizer, token, cfg_id)
        return out

    def _target_size(self, hw: tuple[int, int], size, processor) -> tuple[int, int]:
        f = self.token_px
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if size[0] % f or size[1] % f or min(size) <= 0:
                raise ValueError(f"size {size} must be positive multiples of {f} px for {self.model_type}")
            return size
        lo, hi = self.default_min_tokens * f * f, self.default_max_tokens * f * f
        proc_size = getattr(getattr(processor, "image_processor", None), "size", None)
        if proc_size is not None and proc_size.get("shortest_edge") and proc_size.get("longest_edge"):
            lo, hi = int(proc_size["shortest_edge"]), int(proc_size["longest_edge"])
        return smart_resize(hw[0], hw[1], factor=f, min_pixels=lo, max_pixels=hi)

    # ---- inputs -----------------------------------------------------------------------
    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        mode = self._check_mode(frames_mode)
        frames = check_frames(frames)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        n_frames, height, width = frames.shape[:3]
        if min(height, width) < self.token_px:
            raise ValueError(
                f"frames of {height}x{width} px are smaller than one {self.model_type} token ({self.token_px} px)"
            )
        tok = self._tokenizer(processor_or_tokenizer)
        ids = self._ids(tok)
        rh, rw = self._target_size((height, width), size, processor_or_tokenizer)
        mean, std = processor_mean_std(processor_or_tokenizer, *self.default_mean_std)
        x = resize_frames(frames, (rh, rw))  # (F, rh, rw, 3) uint8, normalised while patchifying
        h, w = rh // self.token_px, rw // self.token_px
        tp = self.temporal_patch_size

        def patches(video, repeat):
            return qwen_pixels(video, mean, std, self.patch_size, tp, self.merge_size, repeat_frames=repeat)

        if mode == "images":
            grid_frames = [[f] for f in range(n_frames)]
            pixels, (_, gh, gw) = patches(x, True)  # frame-major rows: image i's patches are block i
            grid_thw = torch.tensor([[1, gh, gw]] * n_frames, dtype=torch.long)
            inputs, starts = self._build_sequence(tok, ids, prompt, IMAGE, h * w, grid_frames, fps)
            inputs.update(pixel_values=torch.from_numpy(pixels), image_grid_thw=grid_thw)
        else:
            if mode == "duplicate":                # f0 f0 f1 f1 ..., without copying the frames twice
                video, repeat = x, True
                grid_frames = [[f] for f in range(n_frames)]
            else:  # merged: grid t stands for frame tp*t
                pad = -n_frames % tp
                video, repeat = (np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x), False
                grid_frames = [[min(t + i, n_frames - 1) for i in range(tp)] for t in range(0, n_frames, tp)]
            pixels, grid = patches(video, repeat)
            assert grid[0] == len(grid_frames), (grid, len(grid_frames))
            inputs, starts = self._build_sequence(tok, ids, prompt, VIDEO, h * w, grid_frames, fps)
            inputs.update(pixel_values_videos=torch.from_numpy(pixels),
                          video_grid_thw=torch.tensor([grid], dtype=torch.long))
            inputs.update(self._video_timing(grid_frames, fps))

        frame_ids = [g[0] for g in grid_frames]  # a grid stands for its first frame
        offs = torch.arange(h * w).reshape(h, w)
        positions = torch.stack([s + offs for s in starts])  # (T, h, w)
        layout = VisualLayout(
            positions=positions,
            frame_ids=torch.as_tensor(frame_ids, dtype=torch.long),
            grid=(h, w),
            image_size=(height, width),
            token_size=(height / h, width / w),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout

    def _video_timing(self, grid_frames: list[list[int]], fps: float) -> dict[str, torch.Tensor]:
        """Extra inputs that carry the frame rate (none for Qwen2-VL: its temporal ids step by 1 per grid)."""
        return {}

    def _vision_block(self, seq: _Sequence, tok, ids, type_id: int, n_tokens: int) -> int:
        pad = ids["image_token_id"] if type_id == IMAGE else ids["video_token_id"]
        seq.text([ids["vision_start_token_id"]])
        start = seq.visual(pad, n_tokens, type_id)
        seq.text([ids["vision_end_token_id"]])
        return start

    def _build_sequence(self, tok, ids, prompt, type_id, per_grid, grid_frames, fps):
        """Chat-formatted user turn with the visual block(s) before the prompt; returns (inputs, grid starts).

        `grid_frames[g]` lists the input frames that token grid g is made of.
        """
        n_grids = len(grid_frames)
        seq = _Sequence()
        seq.text(self._encode(tok, self.system_prompt + "<|im_start|>user\n"))
        if type_id == IMAGE:
            starts = [self._vision_block(seq, tok, ids, IMAGE, per_grid) for _ in range(n_grids)]
        else:
            start = self._vision_block(seq, tok, ids, VIDEO, n_grids * per_grid)
            starts = [start + g * per_grid for g in range(n_grids)]
        seq.text(self._encode(tok, prompt + "<|im_end|>\n<|im_start|>assistant\n"))
        return seq.tensors(), starts
