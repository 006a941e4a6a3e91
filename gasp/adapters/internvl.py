"""InternVL adapter (InternVL2.5 / InternVL3 `-hf` checkpoints): InternViT + pixel shuffle + Qwen2.

Shape vocabulary: F frames, S x S vision input, n = S/p patches per side, h x w = n/2 x n/2 tokens.

Tiling is off: every frame is resized, whole, to one S x S view (bicubic, ImageNet mean/std),
which is what the transformers video path does (`InternVLVideoProcessor`: resize to `size`,
no crop) and what the image processor does with `crop_to_patches=False`. The dynamic tiles +
thumbnail of the image path (`crop_to_patches=True`, up to `max_patches` 448-px tiles) would give
one frame several grids, so it is not used. The aspect change is folded into the per-axis
token size.

Per frame, InternViT gives n x n patches (CLS dropped, `vision_feature_select_strategy`
"default"); `pixel_shuffle` with `downsample_ratio` 0.5 folds each 2 x 2 block of patches
(rows 2r, 2r+1, cols 2c, 2c+1) into token (r, c), row-major, so a token covers 2p = 28 px of
the S x S view (S/h px; 448 -> 16 x 16 = 256 tokens). Sequence (the `-hf` chat template's
video content, expanded as `InternVLProcessor.replace_video_token` does; no system prompt):
`<|im_start|>user\\nFrame1: <img><IMG_CONTEXT>*h*w</img>\\nFrame2: <img>...</img>\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`.
<img>, </img> and the "FrameK: " text are not visual positions; no row separators. The model
takes all frames as `pixel_values` (F, 3, S, S) and scatters them into the <IMG_CONTEXT>
placeholders in order. The LLM is Qwen2 with 1-D RoPE.
"""
from __future__ import annotations

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import ModelAdapter, VisualLayout
from gasp.adapters.preprocess import check_frames, normalize_frames, processor_mean_std, resize_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_adapter
class InternVLAdapter(ModelAdapter):
    model_type = "internvl"
    frames_modes = ("video",)
    vision_attr = "vision_tower"
    # Released-checkpoint values, used when no config is given.
    default_image_size = 448
    default_patch_size = 14
    default_downsample_ratio = 0.5
    default_image_token_id = 151667
    default_mean_std = (IMAGENET_MEAN, IMAGENET_STD)

    def _vision(self, name: str, default):
        v = super()._vision(name, default)                # InternViT stores sizes as [h, w]
        return int(v[0] if isinstance(v, (list, tuple)) else v)

    @property
    def image_size(self) -> int:
        return self._vision("image_size", self.default_image_size)

    @property
    def patch_size(self) -> int:
        return self._vision("patch_size", self.default_patch_size)

    @property
    def merge(self) -> int:
        """Patches per token along each axis (1 / downsample_ratio)."""
        ratio = getattr(self.config, "downsample_ratio", self.default_downsample_ratio)
        m = round(1 / ratio)
        if abs(m * ratio - 1) > 1e-9:
            raise ValueError(f"downsample_ratio {ratio} is not 1/integer")
        return m

    @property
    def token_px(self) -> int:
        """Pixels of the S x S view per token along each axis (2 x 14 = 28)."""
        return self.patch_size * self.merge

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        self._check_mode(frames_mode)
        frames = check_frames(frames)
        n_frames, height, width = frames.shape[:3]
        f = self.token_px
        s = self.image_size
        if size is not None:
            if size[0] != size[1] or size[0] % f or size[0] <= 0:
                # get_image_features reshapes the patches to a square grid
                raise ValueError(f"{self.model_type} takes square views whose side is a multiple of {f} px, "
                                 f"not {tuple(size)}")
            s = int(size[0])
        if min(height, width) < f:
            raise ValueError(f"frames of {height}x{width} px are smaller than one {self.model_type} token ({f} px)")
        tok = self._tokenizer(processor_or_tokenizer)
        cfg_id = self.default_image_token_id if self.config is None else getattr(self.config, "image_token_id", None)
        ctx = self._token_id(tok, "<IMG_CONTEXT>", cfg_id)
        img_start, img_end = self._token_id(tok, "<img>"), self._token_id(tok, "</img>")
        mean, std = processor_mean_std(processor_or_tokenizer, *self.default_mean_std)
        x = normalize_frames(resize_frames(frames, (s, s)), mean, std)  # (F, 3, S, S)

        h = w = s // f
        ids = self._encode(tok, "<|im_start|>user\n")
        starts = []
        for i in range(n_frames):
            ids += self._encode(tok, ("\n" if i else "") + f"Frame{i + 1}: ") + [img_start]
            starts.append(len(ids))
            ids += [ctx] * (h * w) + [img_end]
        ids += self._encode(tok, "\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n")
        input_ids = torch.tensor([ids], dtype=torch.long)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                  "pixel_values": torch.from_numpy(x)}
        offs = torch.arange(h * w).reshape(h, w)
        layout = VisualLayout(
            positions=torch.stack([st + offs for st in starts]),  # (F, h, w)
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(height / h, width / w),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout
