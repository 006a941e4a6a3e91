"""Random-weight Qwen2.5-VL models at a named shape, built straight onto the target device.

Shape vocabulary: F frames, S x S frame pixels, N = g*g track points.

`QWEN25_VL_7B` holds the sizes of Qwen/Qwen2.5-VL-7B-Instruct, written here because nothing is
downloaded. Where each value comes from:
  * text hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate 18944, vocab 152064 and
    vision depth 32, hidden 1280, 16 heads, intermediate 3420, out_hidden 3584: the 7B
    checkpoint's module printout (q_proj 3584 -> 3584, k_proj 3584 -> 512 = 4 KV heads x 128,
    gate_proj 3584 -> 18944, embed_tokens (152064, 3584); patch_embed Conv3d(3, 1280, (2, 14, 14)),
    32 vision blocks with an MLP of 3420, merger 5120 -> 3584), as quoted in public notes on the
    model (e.g. github.com/acproject/duorou docs/qwen2.5vl_graph.md). Built with these values the
    model has 8,292,166,656 parameters, the model card's "8.29B" (tests/test_gpu_check.py checks it
    on the meta device).
  * rope theta 1e6, vocab 152064, vision depth 32 / 16 heads / intermediate 3420 / out_hidden 3584,
    patch 14, spatial merge 2, temporal patch 2, window 112, fullatt_block_indexes [7, 15, 23, 31]:
    also the defaults of the installed transformers' Qwen2_5_VLTextConfig / Qwen2_5_VLVisionConfig
    (5.24). Its other defaults are NOT the 7B's: the text defaults are the 72B's (hidden 8192,
    80 layers, 64 heads, 8 KV heads, intermediate 29568), vision hidden_size defaults to 3584
    (7B: 1280) and tokens_per_second to 4 (7B config.json: 2).
  * mrope_section [16, 24, 24] (sums to head_dim / 2 = 64), rms_norm_eps 1e-6,
    max_position_embeddings 128000, untied lm_head, tokens_per_second 2: the 7B config.json.
Special-token ids are the tiny tokenizer's (`gasp.models.tiny`), not the checkpoint's: the
weights are random, so only the shapes matter, and the adapters read the ids from the config.

`TINY` is the project's `tiny-qwen2.5-vl` (no overrides): the same code on CPU in seconds.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MODEL_FAMILY = "tiny-qwen2.5-vl"   # builder, tokenizer and adapter family of every shape here

QWEN25_VL_7B: dict[str, Any] = dict(
    hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
    intermediate_size=18944, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    vision_depth=32, vision_hidden_size=1280, vision_num_heads=16, vision_intermediate_size=3420,
    vision_patch_size=14, vision_spatial_merge_size=2, vision_temporal_patch_size=2, vision_window_size=112,
    vision_fullatt_block_indexes=[7, 15, 23, 31], vision_tokens_per_second=2, tie_word_embeddings=False,
)
QWEN25_VL_7B_PARAMS = 8_292_166_656
TINY: dict[str, Any] = {}


def build_config(sizes: dict[str, Any], **overrides):
    """(config, tokenizer) of the Qwen2.5-VL family at `sizes` (+ `overrides`, e.g. num_hidden_layers=2)."""
    from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

    tok = build_tiny_tokenizer(MODEL_FAMILY)
    return build_tiny_config(MODEL_FAMILY, tok, **{**sizes, **overrides}), tok


def build_model(config, device: str | torch.device, dtype: torch.dtype, attn: str = "sdpa", seed: int = 0):
    """A random-weight model of `config`, allocated and initialised on `device` in `dtype` (eval mode).

    Built under ``torch.device(device)``: a 7B model never has a CPU copy (bf16 is ~16.6 GB).
    """
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, attn_implementation=attn, dtype=dtype)
    model.eval()
    model.name_or_path = model.config._name_or_path = MODEL_FAMILY  # what peft records
    n = sum(p.numel() for p in model.parameters())
    logger.info("built a random %s model: %s parameters, %s, %s, %s", MODEL_FAMILY, f"{n:,}", dtype, device, attn)
    return model


def config_sizes(config) -> dict[str, Any]:
    """The sizes of `config` that the JSON records (text and vision)."""
    t, v = config.get_text_config(), config.vision_config
    text_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_parameters")
    vision_keys = ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "patch_size",
                   "spatial_merge_size", "temporal_patch_size", "window_size", "fullatt_block_indexes",
                   "tokens_per_second")
    out = {"text": {k: getattr(t, k) for k in text_keys}, "vision": {k: getattr(v, k) for k in vision_keys}}
    out["vision"]["fullatt_block_indexes"] = list(out["vision"]["fullatt_block_indexes"])
    out["text"]["head_dim"] = t.hidden_size // t.num_attention_heads
    return out


def synthetic_sequence(frames: int, size: int, grid: int = 8, seed: int = 0):
    """A random TrackSequence: F random S x S frames, a g x g grid of tracks with noise, all visible.

    Values do not matter for time and memory; shapes do (the probe's metrics and the losses'
    targets are computed from them exactly as from real tracks).
    """
    from tracks.geometry import grid_points
    from tracks.types import TrackSequence

    rng = np.random.default_rng(seed)
    n = grid * grid
    pts = grid_points(grid, size, size)                                                       # (N, 2)
    tracks = np.clip(pts[None] + rng.normal(0, size / 40, (frames, n, 2)), 0, size - 1).astype(np.float32)
    tracks[0] = pts                                                                           # (F, N, 2)
    return TrackSequence(
        frames=rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8),
        depth=rng.uniform(1, 10, (frames, size, size)).astype(np.float32),
        K=np.tile(np.eye(3), (frames, 1, 1)), cam_from_world=np.tile(np.eye(4), (frames, 1, 1)),
        frame_index=np.arange(frames, dtype=np.int64), tracks=tracks, visible=np.ones((frames, n), dtype=bool),
        track_depth=rng.uniform(1, 10, (frames, n)).astype(np.float32), query_frame=0,
        scene="gpu_check", key=f"gpu_check/{frames}", grid=grid)
