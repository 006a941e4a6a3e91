"""Qwen3.5 adapter: Qwen3-VL's frame layout in front of a hybrid LLM (Gated DeltaNet + attention).

Shape vocabulary: F input frames, h x w tokens per frame, H query heads, D head dim.

Vision side (transformers `models/qwen3_5`): the Qwen3-VL vision tower without deepstack
(16-px patches, temporal patch 2, 2 x 2 merge: one token per 32 x 32 px), processed by
`Qwen3VLProcessor` with the Qwen2-VL image processor, so the token layout is Qwen3-VL's:
per frame grid `<{t:.1f} seconds><|vision_start|><|video_pad|>*h*w<|vision_end|>` in video
modes ("duplicate" default: every frame given twice so each temporal patch is one frame;
"merged": two frames per grid), or `<|vision_start|><|image_pad|>*h*w<|vision_end|>` per
frame in "images" mode; no system prompt; tokens row-major, no row separators. Token
(r, c) covers the original frame's box of (H/h) x (W/w) px. get_rope_index splits the video
grid into one grid per frame, as for Qwen3-VL.

LLM side: `config.text_config.layer_types` mixes "linear_attention" (Gated DeltaNet,
`layer.linear_attn`, no softmax over keys) and "full_attention" (`layer.self_attn`, every
4th layer in the released checkpoints). A full-attention layer's q_proj emits 2*H*D: per head
D query rows then D rows of an output gate; the query gets q_norm (per-head RMSNorm), then
partial rotary (the first `partial_rotary_factor` = 1/4 of D is rotated by interleaved M-RoPE,
the rest passes through), and sigmoid(gate) scales the attention output after the kernel. The
kernel thus compares exactly the post-RoPE (q_norm'ed, partially rotated) Q and K that
`gasp.capture.qk.capture_qk` records; the gate does not enter the attention weights. The probe
runs on the full-attention layers only (see docs/METHOD.md sec. 1); heads sit on the same
layers, SVD-initialised from q_proj's query rows (`gasp.heads.base_q_proj`).

LoRA targets: the full-attention layers' q/k/v/o_proj, the linear-attention layers'
in_proj_qkv / in_proj_z / out_proj, and every MLP's gate/up/down_proj, all inside
`language_model.layers` (never the vision tower `model.visual`).
"""
from __future__ import annotations

from gasp.adapters import register_adapter
from gasp.adapters.qwen3_vl import Qwen3VLAdapter


@register_adapter
class Qwen3_5Adapter(Qwen3VLAdapter):
    model_type = "qwen3_5"
    # Qwen3_5Config's defaults (the released checkpoints' ids).
    default_token_ids = dict(vision_start_token_id=248053, vision_end_token_id=248054,
                             image_token_id=248056, video_token_id=248057)

    def lora_target_modules(self, model=None) -> str:
        return (r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj"
                r"|linear_attn\.(in_proj_qkv|in_proj_z|out_proj)|mlp\.(gate|up|down)_proj)")
