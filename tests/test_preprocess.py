"""The project's own frame preprocessing against the transformers image processors (PIL backend).

The transformers video processors need torchvision, which is not a requirement here; their
image processors fall back to a PIL backend without it, and that is what we compare with:
same resize, rescale, normalisation and patch layout, to 1e-5.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gasp.adapters import get_adapter
from gasp.adapters.preprocess import (
    HALF_MEAN_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize_frames, qwen_patchify, qwen_pixels, resize_frames, smart_resize,
)
from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

SIZES = [(75, 101), (224, 224), (56, 84), (300, 170)]


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ours_qwen(img, patch, mean, std, min_pixels, max_pixels):
    f = patch * 2
    size = smart_resize(img.shape[0], img.shape[1], f, min_pixels, max_pixels)
    x = normalize_frames(resize_frames(img[None], size), mean, std)
    return qwen_patchify(np.repeat(x, 2, axis=0), patch, 2, 2)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("patch,mean_std", [(14, (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)), (16, (HALF_MEAN_STD,) * 2)],
                         ids=["qwen2", "qwen3"])
def test_qwen_patches_match_image_processor(hw, patch, mean_std):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    f = 2 * patch
    lo, hi = 4 * f * f, 1280 * f * f
    proc = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2, image_mean=list(mean_std[0]),
                                    image_std=list(mean_std[1]), size={"shortest_edge": lo, "longest_edge": hi})
    img = _image(*hw)
    ref = proc(images=[img], return_tensors="np")
    ours, grid = _ours_qwen(img, patch, *mean_std, lo, hi)
    assert tuple(ref["image_grid_thw"][0]) == grid
    assert ours.shape == ref["pixel_values"].shape
    np.testing.assert_allclose(ours, ref["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5"])
def test_adapter_pixels_match_image_processor(name):
    """The adapter's images mode and duplicate mode both give the processor's patches for every frame."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    adapter = get_adapter(build_tiny_config(name))
    f = adapter.token_px
    mean, std = adapter.default_mean_std
    proc = Qwen2VLImageProcessorPil(patch_size=adapter.patch_size, image_mean=list(mean), image_std=list(std),
                                    size={"shortest_edge": 4 * f * f, "longest_edge": 1280 * f * f})
    frames = np.stack([_image(75, 101, seed=s) for s in range(3)])
    ref = proc(images=list(frames), return_tensors="np")
    tok = build_tiny_tokenizer(name)
    img_inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, frames_mode="images")
    np.testing.assert_allclose(img_inputs["pixel_values"].numpy(), ref["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(img_inputs["image_grid_thw"], torch.as_tensor(ref["image_grid_thw"]))
    vid_inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, frames_mode="duplicate")
    np.testing.assert_allclose(vid_inputs["pixel_values_videos"].numpy(), ref["pixel_values"], atol=1e-5, rtol=0)


def test_processor_mean_std_is_used():
    """A processor object's image_mean/std take precedence over the family default."""
    from types import SimpleNamespace

    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    name = "tiny-qwen2-vl"
    adapter = get_adapter(build_tiny_config(name))
    ip = Qwen2VLImageProcessorPil(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6])
    frames = _image(56, 56)[None]
    proc = SimpleNamespace(tokenizer=build_tiny_tokenizer(name), image_processor=ip)
    ours, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=proc, frames_mode="images")
    ref = ip(images=[frames[0]], return_tensors="np")
    np.testing.assert_allclose(ours["pixel_values"].numpy(), ref["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_llava_frames_match_image_processor(hw, kind):
    """LLaVA-style: whole frame resized to S x S (no crop), CLIP or SigLIP normalisation."""
    s = 336 if kind == "clip" else 384
    if kind == "clip":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Proc
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        proc = Proc(size={"height": s, "width": s}, do_center_crop=False)
    else:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as Proc
        mean, std = HALF_MEAN_STD, HALF_MEAN_STD
        proc = Proc(size={"height": s, "width": s})
    img = _image(*hw)
    ref = proc(images=[img], return_tensors="np")["pixel_values"]
    ours = normalize_frames(resize_frames(img[None], (s, s)), mean, std)
    assert ours.shape == ref.shape == (1, 3, s, s)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny-llava-next-video", "tiny-llava-onevision"])
def test_llava_adapter_pixels(name):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    adapter = get_adapter(build_tiny_config(name))
    s = adapter.image_size
    mean, std = adapter.default_mean_std
    proc = CLIPImageProcessorPil(size={"height": s, "width": s}, do_center_crop=False, image_mean=list(mean),
                                 image_std=list(std))
    frames = np.stack([_image(75, 101, seed=k) for k in range(2)])
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=build_tiny_tokenizer(name))
    ref = proc(images=list(frames), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(inputs["pixel_values_videos"][0].numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", [(75, 101), (300, 170)])
def test_internvl_adapter_pixels_match_image_processor_without_tiling(hw):
    """InternVL: one whole-frame view per frame, as GotOcr2ImageProcessorPil with crop_to_patches=False."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    adapter = get_adapter(build_tiny_config("tiny-internvl"))
    s = adapter.image_size
    mean, std = adapter.default_mean_std
    proc = GotOcr2ImageProcessorPil(size={"height": s, "width": s}, crop_to_patches=False, image_mean=list(mean),
                                    image_std=list(std))
    frames = np.stack([_image(*hw, seed=k) for k in range(2)])
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=build_tiny_tokenizer("tiny-internvl"))
    ref = proc(images=list(frames), return_tensors="np")
    assert list(ref["num_patches"]) == [1, 1]                     # no tiles: one view per frame
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), ref["pixel_values"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-paligemma", "gemma3", "paligemma"])
def test_gemma_adapter_pixels(name):
    """Gemma 3 (bilinear, pan-and-scan off) and PaliGemma (SigLIP, bicubic) processors, tiny and real sizes."""
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tiny = name.startswith("tiny-")
    adapter = get_adapter(build_tiny_config(name) if tiny else name)  # a bare model_type: the real input size
    s = adapter.image_size
    assert tiny or s == {"gemma3": 896, "paligemma": 224}[name]
    gemma3 = adapter.model_type == "gemma3"
    Proc = Gemma3ImageProcessorPil if gemma3 else SiglipImageProcessorPil
    kwargs = {"do_pan_and_scan": False} if gemma3 else {}
    proc = Proc(size={"height": s, "width": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3, **kwargs)
    frames = np.stack([_image(75, 101, seed=k) for k in range(2)])
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=build_tiny_tokenizer(
        "tiny-gemma3" if gemma3 else "tiny-paligemma"))
    ref = proc(images=list(frames), return_tensors="np")["pixel_values"]
    assert ref.shape == (2, 3, s, s)
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w", [(75, 101), (10, 10), (2000, 3000), (28, 5000)])
def test_smart_resize_matches_transformers(h, w):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    assert smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280) == ref(h, w, 28, 56 * 56, 28 * 28 * 1280)


def test_llava15_adapter_pixels():
    """LLaVA-1.5 takes the frames as images: `pixel_values` (F, 3, S, S), one per frame."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    name = "tiny-llava"
    adapter = get_adapter(build_tiny_config(name))
    s = adapter.image_size
    proc = CLIPImageProcessorPil(size={"height": s, "width": s}, do_center_crop=False)
    frames = np.stack([_image(75, 101, seed=k) for k in range(2)])
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=build_tiny_tokenizer(name))
    ref = proc(images=list(frames), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("s", [112, 384])
def test_smolvlm_frames_match_image_processor(hw, s):
    """SmolVLM with splitting off: LANCZOS to the longest edge, then to S x S; images and video sizes."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    name = "tiny-smolvlm"
    cfg = build_tiny_config(name, vision_image_size=s)
    cfg.scale_factor = 3 if s == 384 else 2  # 384 px: SmolVLM2-2.2B's 27 -> 9 x 9 tokens
    adapter = get_adapter(cfg)
    tok = build_tiny_tokenizer(name)
    frames = np.stack([_image(*hw, seed=k) for k in range(2)])
    for mode, longest in (("images", 4 * s), ("video", s)):  # the released checkpoints' size / video_size
        proc = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": longest},
                                        max_image_size={"longest_edge": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        ref = proc(images=[list(frames)], return_tensors="np")["pixel_values"]  # (1, F, 3, S, S)
        ours, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, frames_mode=mode)
        assert ours["pixel_values"].shape == ref.shape == (1, 2, 3, s, s)
        np.testing.assert_allclose(ours["pixel_values"].numpy(), ref, atol=1e-5, rtol=0)
        # a processor object's sizes are the ones used
        bundle = SimpleNamespace(tokenizer=tok, image_processor=proc, video_processor=proc)
        again, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=bundle, frames_mode=mode)
        np.testing.assert_allclose(again["pixel_values"].numpy(), ref, atol=1e-5, rtol=0)


def _patchify_reference(video, p, tp, m):
    """The Qwen processors' patch layout, written out: (T, tp, C, gh/m, m, p, gw/m, m, p) -> rows, columns."""
    f, c, hh, ww = video.shape
    t, gh, gw = f // tp, hh // p, ww // p
    x = video.reshape(t, tp, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * gh * gw, c * tp * p * p)


@pytest.mark.parametrize("frames", [1, 3])
def test_repeated_frames_patchify_equals_repeating_first(frames):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(frames, 3, 56, 84)).astype(np.float32)
    got, grid = qwen_patchify(x, 14, 2, 2, repeat_frames=True)
    want = _patchify_reference(np.repeat(x, 2, axis=0), 14, 2, 2)
    assert grid == (frames, 4, 6) and got.flags.c_contiguous and np.array_equal(got, want)
    plain, _ = qwen_patchify(np.repeat(x, 2, axis=0), 14, 2, 2)
    assert np.array_equal(plain, want)


def test_normalize_frames_equals_the_float64_rescale_then_float32_normalise():
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = (frames.astype(np.float64) * (1 / 255)).astype(np.float32)
    want = ((x - np.float32(OPENAI_CLIP_MEAN)) / np.float32(OPENAI_CLIP_STD)).transpose(0, 3, 1, 2)
    got = normalize_frames(frames, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, want)


@pytest.mark.parametrize("frames, repeat", [(1, True), (3, True), (4, False)])
def test_qwen_pixels_equals_normalising_then_patchifying(frames, repeat):
    """The fused path (uint8 indices moved into the patch layout, then one table read) gives the
    bytes of the written-out reference on normalised float frames; distinct channel statistics,
    so a channel's table offset or the channel axis's place in the layout cannot be wrong unseen."""
    rng = np.random.default_rng(7)
    u8 = rng.integers(0, 256, (frames, 56, 84, 3), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    x = (u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = ((x - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2)      # (F, C, H, W)
    want = _patchify_reference(np.repeat(x, 2, axis=0) if repeat else x, 14, 2, 2)
    got, grid = qwen_pixels(u8, mean, std, 14, 2, 2, repeat_frames=repeat)
    t = frames if repeat else frames // 2
    assert grid == (t, 4, 6) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, want)
