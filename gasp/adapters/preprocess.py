"""Frame preprocessing done by the project, without torchvision.

Shape vocabulary: F frames, H x W pixels, C = 3 channels, p patch size, tp temporal patch
size, m spatial merge size, gh x gw patch grid.

Mirrors the transformers PIL image-processor path (`Qwen2VLImageProcessorPil`,
`CLIPImageProcessorPil`, `SiglipImageProcessorPil`): PIL resize of the uint8 image
(bicubic by default), rescale by 1/255 in float64 then float32, per-channel normalise,
and for Qwen the flat patch layout of its vision tower. tests/test_preprocess.py checks
the result against those processors to 1e-5. (The transformers *video* processors
resize with torchvision, which rounds slightly differently; we match the image path.)
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF_MEAN_STD = (0.5, 0.5, 0.5)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate (F, H, W, 3) uint8 RGB frames."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("no frames given")
    return frames


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen's rule: both sides a multiple of `factor`, area in [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} is above 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, size: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, h, w, 3) uint8 with PIL, as the image processors' PIL backend does."""
    frames = check_frames(frames)
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    mode = _RESAMPLE[resample]
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample=mode)) for f in frames])


def normalize_lut(mean, std, rescale: float = 1 / 255) -> np.ndarray:
    """(3, 256) float32: channel c's value for each uint8 v, float32(v * rescale in float64), then (x - mean) / std
    in float32, the same rounding as transformers' rescale and normalise element by element."""
    x = (np.arange(256, dtype=np.float64) * rescale).astype(np.float32)
    return (x[None] - np.asarray(mean, dtype=np.float32)[:, None]) / np.asarray(std, dtype=np.float32)[:, None]


def normalize_frames(frames: np.ndarray, mean, std, rescale: float = 1 / 255) -> np.ndarray:
    """(F, h, w, 3) uint8 -> (F, 3, h, w) float32: x * rescale, then (x - mean) / std.

    A 256-entry table per channel gives the identical float32 values without a float64
    temporary, and gathering channel by channel writes the channel-first layout directly
    (no transposing copy).
    """
    lut = normalize_lut(mean, std, rescale)
    out = np.empty((frames.shape[0], 3, *frames.shape[1:3]), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], frames[..., c], out=out[:, c])
    return out


def _patch_grid(f: int, hh: int, ww: int, patch_size: int, tp: int, merge_size: int, repeat_frames: bool):
    """Checks F frames of hh x ww against the Qwen patching and returns (t, src, gh, gw): t grid steps
    of src source frames each (src = 1 when every frame fills all tp slots), gh x gw patches."""
    if f % tp and not repeat_frames:
        raise ValueError(f"{f} frames is not a multiple of temporal_patch_size={tp}")
    factor = patch_size * merge_size
    if hh % factor or ww % factor:
        raise ValueError(f"frame size {hh}x{ww} is not a multiple of {factor}")
    t, src = (f, 1) if repeat_frames else (f // tp, tp)
    return t, src, hh // patch_size, ww // patch_size


def qwen_patchify(
    video: np.ndarray, patch_size: int, temporal_patch_size: int, merge_size: int, repeat_frames: bool = False
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(F, C, H, W) float32 -> (T*gh*gw, C*tp*p*p) patches and the grid (T, gh, gw), T = F / tp.

    Row order is (t, gh/m, gw/m, m, m): the m x m patches of one merged token are
    consecutive, so merged token k of a block is (t, r, c) with
    t = k // (h*w), r = (k // w) % h, c = k % w for h = gh/m, w = gw/m.
    Columns are (C, tp, p, p), as in the Qwen processors.

    ``repeat_frames``: every frame fills all tp temporal slots of its own patches (T = F),
    the same array as ``qwen_patchify(np.repeat(video, tp, axis=0), ...)`` without the
    repeated copy: the one copy made is the output's.
    """
    f, c, hh, ww = video.shape
    tp = temporal_patch_size
    t, src, gh, gw = _patch_grid(f, hh, ww, patch_size, tp, merge_size, repeat_frames)
    m, p = merge_size, patch_size
    x = video.reshape(t, src, c, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)                  # (t, gh/m, gw/m, m, m, C, src, p, p), a view
    if repeat_frames:
        x = np.broadcast_to(x, (*x.shape[:6], tp, p, p))          # (..., C, tp, p, p), still a view
    return np.ascontiguousarray(x).reshape(t * gh * gw, c * tp * p * p), (t, gh, gw)


def qwen_pixels(
    frames: np.ndarray, mean, std, patch_size: int, temporal_patch_size: int, merge_size: int,
    repeat_frames: bool = False, rescale: float = 1 / 255,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(F, H, W, 3) uint8 -> the Qwen patches (T*gh*gw, C*tp*p*p) float32 and the grid (T, gh, gw).

    The same array as ``qwen_patchify(normalize_frames(frames, mean, std, rescale), ...)``, made
    in the other order: the transposing copy into the patch layout moves uint16 table indices
    (channel c's 256 entries start at 256 c) instead of float32 values, and the table is read
    once per value already in place. With ``repeat_frames`` the looked-up values are copied into
    the tp temporal slots, so the table is read once per pixel, not tp times. It runs one grid
    step t at a time, so that only the output is a full-size allocation.
    """
    frames = check_frames(frames)
    f, hh, ww, c = frames.shape
    tp = temporal_patch_size
    t, src, gh, gw = _patch_grid(f, hh, ww, patch_size, tp, merge_size, repeat_frames)
    m, p = merge_size, patch_size
    x = frames.reshape(t, src, gh // m, m, p, gw // m, m, p, c)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)                  # (t, gh/m, gw/m, m, m, C, src, p, p), a view
    lut = normalize_lut(mean, std, rescale).reshape(-1)             # (C*256,)
    offset = (256 * np.arange(c, dtype=np.uint16)).reshape(c, 1, 1, 1)
    out = np.empty((*x.shape[:6], tp, p, p), dtype=np.float32)      # (t, gh/m, gw/m, m, m, C, tp, p, p)
    idx = np.empty(x.shape[1:], dtype=np.uint16)                    # one t at a time: small, reused temporaries
    for i in range(t):
        idx[...] = x[i]                                             # the transposing copy, 2 bytes a value
        idx += offset
        if repeat_frames:
            out[i] = np.take(lut, idx)                              # (..., C, 1, p, p) -> (..., C, tp, p, p)
        else:
            np.take(lut, idx, out=out[i])
    return out.reshape(t * gh * gw, c * tp * p * p), (t, gh, gw)


def processor_mean_std(processor_or_tokenizer, default_mean, default_std):
    """Mean/std of the processor's image (or video) processor, else the family default."""
    for attr in ("video_processor", "image_processor"):
        proc = getattr(processor_or_tokenizer, attr, None)
        if proc is not None and getattr(proc, "image_mean", None) is not None:
            return tuple(proc.image_mean), tuple(proc.image_std)
    return tuple(default_mean), tuple(default_std)
