"""Idefics3 adapter (`model_type` "idefics3": Idefics3-8B-Llama3, SmolVLM v1): SmolVLM2's layout, images only.

SmolVLM2 is Idefics3 with a different model_type: the same vision tower, pixel shuffle,
connector, `text_model` LLM, <fake_token_around_image><global-img><image>... separators,
chat format and image processor (gasp/adapters/smolvlm.py states the layout). Idefics3's
processor has no video path, so the frames go in as F images ("images" mode), with image
splitting off. The chat template's first token differs by checkpoint: <|im_start|> for
SmolVLM v1, <|begin_of_text|> (the BOS) for Idefics3-8B-Llama3, whose vocabulary has no
<|im_start|>. Defaults are Idefics3-8B's (S = 364, p = 14, s = 2: 13 x 13 = 169 tokens of 28 px).
"""
from __future__ import annotations

from gasp.adapters import register_adapter
from gasp.adapters.smolvlm import SmolVLMAdapter


@register_adapter
class Idefics3Adapter(SmolVLMAdapter):
    model_type = "idefics3"
    frames_modes = ("images",)
    default_image_size = 364
    default_scale_factor = 2
    default_image_token_id = 128257

    def _start(self, tok) -> str:
        im_start = tok.convert_tokens_to_ids("<|im_start|>")
        if im_start is not None and im_start != tok.unk_token_id:
            return "<|im_start|>"
        return tok.bos_token or ""
