"""LLaVA-1.5 adapter (`model_type` "llava"): an image-only model, so every frame is one image.

Shape vocabulary: F frames, S x S vision input, p patch size, n = S/p patches per side.

CLIP ViT-L/14 at S = 336 gives n x n = 24 x 24 patches; `vision_feature_layer` -2 with
`vision_feature_select_strategy` "default" drops the CLS token, and the two-layer projector
keeps every patch, so one image is n*n = 576 <image> tokens, one per patch, row-major,
with no newline or separator tokens. Token (r, c) is patch (r, c): p = 14 resized pixels.
LLaVA-1.5 has no tiling (that is LLaVA-NeXT's anyres), so there is nothing to turn off.

Each frame is resized, whole, to S x S (bicubic, CLIP normalisation) instead of the image
processor's shortest-edge resize + centre crop, which would drop the frame's sides; the
aspect change is folded into the per-axis token size. tests/test_preprocess.py checks
the pixels against `CLIPImageProcessorPil(size=S x S, do_center_crop=False)`.

Sequence (the checkpoint's chat template, Vicuna v1; images first, each followed by "\\n"):
    <s> "USER:" [<image> x n*n "\\n"] x F  prompt " ASSISTANT:"
(the template's "USER: " space before the first <image> is not encoded, as in the LLaVA-NeXT-Video
adapter), and answers are " answer</s>", further rounds "USER: human ASSISTANT:".
The model places image features by `input_ids == image_token_id` (masked_scatter, in order),
and the LLM (Llama) attends causally over the whole sequence. Its context is 4096 tokens
(Vicuna-7B), i.e. 7 frames at 576 + 1 tokens each; longer sequences run, with a warning.
"""
from __future__ import annotations

import logging

import torch

from gasp.adapters import register_adapter
from gasp.adapters.base import VisualLayout
from gasp.adapters.llava_next_video import LlavaNextVideoAdapter
from gasp.adapters.preprocess import check_frames, normalize_frames, processor_mean_std, resize_frames

logger = logging.getLogger(__name__)


@register_adapter
class LlavaAdapter(LlavaNextVideoAdapter):
    """Reuses LLaVA-NeXT-Video's sizes and Vicuna dialogue format; images instead of a video, no pooling."""

    model_type = "llava"
    frames_modes = ("images",)
    default_image_token_id = 32000

    def token_grid(self):
        n = self.image_size // self.patch_size  # the patch conv floors
        return n, n

    def pre_projector_features(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(F*h*w, 1, d): the vision tower's hidden states at ``vision_feature_layer`` (-2 in LLaVA-1.5) without
        the CLS token, what the multi-modal projector reads; differentiable."""
        inner = self.inner_model(model)
        cfg = self.unwrap(model).config
        layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
        if not isinstance(layer, int):
            raise NotImplementedError(f"vision_feature_layer {layer}: several layers concatenated are not supported")
        out = inner.vision_tower(inputs["pixel_values"].type(inner.vision_tower.dtype), output_hidden_states=True,
                                 return_dict=True)
        h = out.hidden_states[layer]                                             # (F, 1 + h*w, d)
        return self.pre_projector_from_input(h[:, 1:] if strategy == "default" else h, inputs, model)

    def projector(self, model) -> torch.nn.Module:
        return self.inner_model(model).multi_modal_projector

    def vision_lora_target_modules(self, model=None) -> str:
        """The CLIP encoder layers' q, k, v and out projections (not the patch embedding, not the projector)."""
        return r".*vision_tower\..*layers\.\d+\.self_attn\.(q|k|v|out)_proj"

    def pre_projector_from_input(self, x: torch.Tensor, inputs: dict[str, torch.Tensor], model) -> torch.Tensor:
        return x.reshape(-1, 1, x.shape[-1])                                     # (F, h*w, d): one vector a token

    def token_pixels(self):
        return float(self.patch_size)

    def prepare_inputs(self, frames, *, processor_or_tokenizer, prompt="", frames_mode=None, fps=1.0, size=None,
                       answer=None, turns=None):
        self._check_mode(frames_mode)
        frames = check_frames(frames)
        n_frames, height, width = frames.shape[:3]
        s, tpx = self.image_size, self.token_pixels()
        self._check_square_input(height, width, size, tpx)
        tok = self._tokenizer(processor_or_tokenizer)
        cfg_id = self.default_image_token_id if self.config is None else getattr(self.config, "image_token_id", None)
        image_id = self._token_id(tok, "<image>", cfg_id)
        mean, std = processor_mean_std(processor_or_tokenizer, *self.default_mean_std)
        x = normalize_frames(resize_frames(frames, (s, s)), mean, std)  # (F, 3, S, S)

        h, w = self.token_grid()
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids = bos + self._encode(tok, "USER:")  # as LLaVA-NeXT-Video: no lone space token before <image>
        starts = []
        newline = self._encode(tok, "\n")
        for _ in range(n_frames):
            starts.append(len(ids))
            ids += [image_id] * (h * w) + newline
        ids += self._encode(tok, prompt + " ASSISTANT:")
        context = getattr(self.config.get_text_config(), "max_position_embeddings", None) if self.config else None
        if context is not None and len(ids) > context:
            logger.warning("%d frames give %d tokens, beyond %s's %d-token context", n_frames, len(ids),
                           self.model_type, context)
        input_ids = torch.tensor([ids], dtype=torch.long)
        positions = torch.stack([st + torch.arange(h * w).reshape(h, w) for st in starts])  # (F, h, w)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.from_numpy(x),  # (F, 3, S, S)
        }
        layout = VisualLayout(
            positions=positions,
            frame_ids=torch.arange(n_frames),
            grid=(h, w),
            image_size=(height, width),
            token_size=(tpx * height / s, tpx * width / s),
        )
        return self._add_dialogue(inputs, tok, answer, turns), layout
