"""HiSpatial's point-map input (seed 002, Sec. 3.3, App. 6.1-6.3): camera-frame XYZ beside the pixels.

A point map is (F, H, W, 4): each pixel's camera-frame X, Y, Z (OpenCV axes, Z = the depth map's value, in the
depth's units) and a validity mask. The branch encodes each coordinate with a 64-d sinusoid (192 channels, 193
with the mask), patchifies it with a stride-p convolution onto the vision tower's patch grid, and joins the
projector's first linear layer through a zero-initialised weight (``PointMapBranch.proj``): concatenating the
point features to the projector's input and widening that layer, with the point half zero, is the same map.
So at step 0 the model is the base, bit for bit.

Choices the paper's text lost, stated here:
- coordinates are clipped to [-CLIP, CLIP] = [-10, 10] (metres for gasp's synthetic scenes) before encoding;
- the 32 frequencies per coordinate are w_k = pi 2^(k/4) / CLIP, k = 0..31 (wavelengths from 2 CLIP down to
  ~0.09 m), each giving sin and cos: [sin w_0 x, ..., sin w_31 x, cos w_0 x, ..., cos w_31 x];
- an invalid pixel's 192 encoding channels are 0 and its mask 0;
- the convolution's kernel equals its stride, the vision patch (14 px): one point patch per RGB patch;
  Kaiming-uniform weights (torch's fan-in ReLU gain), zero bias.

Sources (``SOURCES``): ``gt`` unprojected from depth and K; ``reldepth`` (the paper's relative-depth row):
per frame the depth min-max normalised and discretised to 0..255, repeated in all three channels and scaled
to [0, CLIP] so the same encoding reads it; ``noisy``, a named stand-in for an estimator such as MoGe-2 (no
estimator weights here): ground truth with a per-frame scale error exp(N(0, 0.1)), a per-pixel one
exp(N(0, 0.03)), and at depth edges (a 4-neighbour more than 10 % farther) the mask 0 for half the pixels and
the mean of the two depths (a flying pixel) for the other half; ``none``: every pixel invalid (all zero).

Shapes: F frames, H x W pixels, h x w tokens, m merge (Qwen 2, PaliGemma 1), p patch px, C branch width.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

SOURCES = ("gt", "reldepth", "noisy", "none")
CLIP = 10.0
FREQS = 32
ENC_CHANNELS = 3 * 2 * FREQS + 1          # 193
NOISE = {"scale_sigma": 0.10, "pixel_sigma": 0.03, "edge_jump": 0.10, "edge_drop": 0.5}


class PointMapError(ValueError):
    """A point map that cannot be made: one line naming the input and the fix."""


# ---- point maps --------------------------------------------------------------------------------------
def unproject_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(F, H, W) depth and (F, 3, 3) or (3, 3) intrinsics -> (F, H, W, 4) float32 camera XYZ + mask.

    Pixel (x, y) is the point at its centre (integer coordinates, as ``tracks.geometry``): X = (x - cx) Z / fx,
    Y = (y - cy) Z / fy, Z = depth. Unusable depth (NaN, 0, negative) gives mask 0 and XYZ 0."""
    depth = np.asarray(depth, dtype=np.float64)
    F, H, W = depth.shape
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (F, 3, 3))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0)
    z = np.where(ok, depth, 0.0)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    fx, fy, cx, cy = K[:, 0, 0, None, None], K[:, 1, 1, None, None], K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    x = (xs[None] - cx) * z / fx
    y = (ys[None] - cy) * z / fy
    return np.stack([x, y, z, ok.astype(np.float64)], axis=-1).astype(np.float32)


def relative_depth(depth: np.ndarray) -> np.ndarray:
    """(F, H, W) -> (F, H, W) per-frame min-max normalised depth discretised to 0..255 (NaN where unusable)."""
    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    out = np.full(d.shape, np.nan)
    for f in range(len(d)):
        v = d[f][ok[f]]
        if v.size:
            lo, hi = v.min(), v.max()
            out[f][ok[f]] = np.round(255 * (v - lo) / max(hi - lo, 1e-12))
    return out


def noisy_depth(depth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``noisy`` stand-in (module docstring): (F, H, W) depth with the stated errors, and the edge drop mask."""
    rng = np.random.default_rng(seed)
    d = np.asarray(depth, dtype=np.float64)
    F = len(d)
    out = d * np.exp(rng.normal(0, NOISE["scale_sigma"], (F, 1, 1))) * np.exp(rng.normal(0, NOISE["pixel_sigma"], d.shape))
    keep = np.ones(d.shape, bool)
    with np.errstate(invalid="ignore"):
        for axis in (1, 2):
            a = d
            b = np.roll(d, -1, axis=axis)
            edge = np.abs(b - a) > NOISE["edge_jump"] * np.minimum(a, b)
            if axis == 1:
                edge[:, -1] = False
            else:
                edge[:, :, -1] = False
            drop = edge & (rng.random(d.shape) < NOISE["edge_drop"])
            keep &= ~drop
            fly = edge & ~drop
            out = np.where(fly, 0.5 * (a + b) * (out / np.where(d > 0, d, 1.0)), out)
    return out, keep


def make_pointmap(source: str, depth: np.ndarray | None, K: np.ndarray | None, seed: int = 0,
                  shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """(F, H, W, 4) float32 point map of ``source`` (``SOURCES``) from depth (F, H, W) and K; ``shape`` (F, H, W)
    is needed only for ``none`` without depth."""
    if source not in SOURCES:
        raise PointMapError(f"point map source {source!r}: choose one of {', '.join(SOURCES)}")
    if source == "none":
        f, h, w = shape if depth is None else np.asarray(depth).shape
        return np.zeros((f, h, w, 4), np.float32)
    if depth is None or K is None:
        raise PointMapError(f"a {source} point map needs depth maps and intrinsics; these frames have "
                            f"{'no depth' if depth is None else 'no intrinsics'}")
    if source == "gt":
        return unproject_depth(depth, K)
    if source == "reldepth":
        r = relative_depth(depth)
        ok = np.isfinite(r)
        v = np.where(ok, r / 255.0 * CLIP, 0.0)
        return np.stack([v, v, v, ok.astype(np.float64)], axis=-1).astype(np.float32)
    d, keep = noisy_depth(depth, seed)
    pm = unproject_depth(d, K)
    pm[~keep] = 0.0
    return pm


def resize_pointmap(pm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(F, H, W, 4) -> (F, size[0], size[1], 4) by nearest pixel centre (XYZ is never blended across an edge)."""
    F, H, W, _ = pm.shape
    h, w = size
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return pm[:, rows][:, :, cols]


# ---- the branch -----------------------------------------------------------------------------------------
def frequencies() -> Tensor:
    return math.pi * 2.0 ** (torch.arange(FREQS, dtype=torch.float32) / 4.0) / CLIP          # (32,)


def encode(pm: Tensor) -> Tensor:
    """(..., 4) XYZ + mask -> (..., 193): per coordinate [sin w_k x (32), cos w_k x (32)], x clipped to +-CLIP,
    zero where the mask is 0, then the mask."""
    xyz, mask = pm[..., :3].clamp(-CLIP, CLIP), pm[..., 3:4]
    ang = xyz[..., None] * frequencies().to(pm.device)                                       # (..., 3, 32)
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)                               # (..., 192)
    return torch.cat([enc * mask, mask], dim=-1)


class PointMapBranch(nn.Module):
    """Encoding + stride-p patchify conv (193 -> C) + the zero-initialised projection into the projector's first
    linear layer (m*m*C -> that layer's output width)."""

    def __init__(self, width: int, patch: int, merge: int, out_features: int):
        super().__init__()
        self.patch, self.merge = int(patch), int(merge)
        self.conv = nn.Conv2d(ENC_CHANNELS, width, kernel_size=patch, stride=patch)
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        self.proj = nn.Linear(merge * merge * width, out_features, bias=False)
        nn.init.zeros_(self.proj.weight)

    def patches(self, pm: Tensor) -> Tensor:
        """(F, H', W', 4) point map at the vision input's size -> (F, H'/p, W'/p, C) patch features."""
        out = []
        for f in range(pm.shape[0]):            # frame by frame: one (193, H', W') encoding alive at a time
            x = encode(pm[f:f + 1].float()).permute(0, 3, 1, 2)                              # (1, 193, H', W')
            out.append(self.conv(x.to(self.conv.weight.dtype)).permute(0, 2, 3, 1))
        return torch.cat(out)                                                                 # (F, h*m, w*m, C)


def pointmap_config(branch: PointMapBranch, source: str) -> dict:
    """What a checkpoint records about its branch (``gasp_pointmap.json``)."""
    return {"source": source, "width": branch.conv.out_channels, "patch": branch.patch, "merge": branch.merge,
            "out_features": branch.proj.out_features, "clip": CLIP, "freqs": FREQS,
            "kernel": branch.patch, "encoding": "sin/cos pi 2^(k/4) / clip, k < 32, per coordinate; then mask"}


def fused_output(out: Tensor, rows: Tensor, proj: nn.Linear) -> Tensor:
    """The projector's first linear layer's output plus the point half's contribution (same rows, same order)."""
    return out + proj(rows.to(proj.weight.dtype)).reshape(out.shape).to(out.dtype)



# ---- installing the branch in a model -------------------------------------------------------------------
class PointMapInput:
    """A branch joined to a model's projector: forward hooks on the projector's first linear layer (every copy of
    it: peft's modules_to_save keeps the original beside the trained one) add ``branch.proj`` of the point rows
    fed for the coming forward.

        fusion = PointMapInput.install(model, adapter, branch)
        with fusion.feeding(pointmaps, inputs):     # (F', H', W', 4) at the vision input's size
            model(**inputs)
    """

    def __init__(self, model, adapter, branch: PointMapBranch):
        self.model, self.adapter, self.branch = model, adapter, branch
        self._rows: Tensor | None = None
        self._handles = []

    @classmethod
    def install(cls, model, adapter, branch: PointMapBranch) -> PointMapInput:
        self = cls(model, adapter, branch)
        projector = adapter.projector(model)
        suffix = adapter.pointmap_first_linear
        targets = [m for n, m in projector.named_modules() if n == suffix or n.endswith("." + suffix)]
        if not targets:
            raise PointMapError(f"{adapter.model_type}: no {suffix!r} inside its projector")
        for m in targets:
            self._handles.append(m.register_forward_hook(self._hook))
        return self

    def _hook(self, module, args, out):
        if self._rows is None:
            raise PointMapError("this model carries a point-map branch but no point map was fed for this forward; "
                                "give one (source none: every pixel invalid)")
        rows, self._rows = self._rows, None
        return fused_output(out, rows, self.branch.proj)

    @contextmanager
    def feeding(self, pointmaps: Tensor, inputs: dict) -> Iterator[PointMapInput]:
        """Context: the point rows of ``pointmaps`` (F', H', W', 4), in the projector's row order, for one forward."""
        feats = self.branch.patches(pointmaps.to(self.branch.conv.weight.device))        # (F', H'/p, W'/p, C)
        self._rows = self.adapter.pointmap_rows(feats, inputs, self.model)
        try:
            yield self
        finally:
            self._rows = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def branch_for(model, adapter) -> PointMapBranch:
    """A fresh branch sized to ``model``'s projector (its first linear layer's input and output widths)."""
    if (why := unsupported(adapter)) is not None:
        raise PointMapError(why)
    projector = adapter.projector(model)
    suffix = adapter.pointmap_first_linear
    first = next(m for n, m in projector.named_modules() if n == suffix or n.endswith("." + suffix))
    patch, merge = adapter.pointmap_patch_merge()
    return PointMapBranch(first.in_features // (merge * merge), patch, merge, first.out_features)


def unsupported(adapter) -> str | None:
    """Why the family has no point-map input (naming those that have one), or None."""
    if adapter.pointmap_first_linear is not None:
        return None
    return (f"the {adapter.model_type} adapter has no point-map input; families with one: "
            f"{', '.join(families_with_pointmap())}")


def families_with_pointmap() -> list[str]:
    from gasp.adapters import _REGISTRY

    return sorted(t for t, c in _REGISTRY.items() if c.pointmap_first_linear is not None)


# ---- in a checkpoint's adapter folder ------------------------------------------------------------------------
WEIGHTS_FILE = "gasp_pointmap.safetensors"      # beside the peft files: the branch (peft does not carry it)
CONFIG_FILE = "gasp_pointmap.json"


def save_branch(branch: PointMapBranch, source: str, adapter_dir) -> None:
    """Write the branch's weights and its config into an adapter folder."""
    from safetensors.torch import save_file

    d = Path(adapter_dir)
    save_file({k: v.detach().cpu().contiguous() for k, v in branch.state_dict().items()}, str(d / WEIGHTS_FILE))
    (d / CONFIG_FILE).write_text(json.dumps(pointmap_config(branch, source), indent=1) + "\n")


def saved_source(adapter_dir) -> str | None:
    """The point-map source an adapter was trained with, or None when it has no point-map branch."""
    p = Path(adapter_dir) / CONFIG_FILE
    return json.loads(p.read_text())["source"] if p.is_file() else None


def pairing_error(adapter_dir, pointmap: str | None) -> str | None:
    """Why ``pointmap`` cannot be fed to the adapter in ``adapter_dir`` (None: it can): an adapter trained with a
    point map needs one, and only such an adapter takes one."""
    saved = saved_source(adapter_dir) if adapter_dir else None
    if saved is not None and pointmap is None:
        return (f"--adapter {adapter_dir} was trained with a {saved} point map (HiSpatial's input, model.pointmap); "
                "pass --pointmap gt|reldepth|noisy|none (none: every pixel invalid)")
    if pointmap is not None and saved is None:
        return (f"--pointmap {pointmap}: {'--adapter ' + str(adapter_dir) if adapter_dir else 'the model'} has no "
                "point-map branch; only an adapter trained with model.pointmap takes one")
    return None


def load_branch(model, adapter, adapter_dir) -> PointMapInput | None:
    """The branch saved in ``adapter_dir`` joined to ``model`` (``model.gasp_pointmap``), or None without one."""
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    if not (d / CONFIG_FILE).is_file():
        return None
    cfg = json.loads((d / CONFIG_FILE).read_text())
    branch = branch_for(model, adapter)
    if (cfg["clip"], cfg["freqs"]) != (CLIP, FREQS):
        raise PointMapError(f"{d}: its point map was encoded with clip {cfg['clip']}, {cfg['freqs']} frequencies; "
                            f"this gasp encodes with {CLIP}, {FREQS}")
    branch.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
    dev = next(model.parameters()).device
    branch.to(dev).eval()
    fusion = PointMapInput.install(model, adapter, branch)
    model.gasp_pointmap = fusion
    return fusion


def batch_pointmap(source: str, seq, layout, adapter, seed: int = 0) -> Tensor:
    """(F', H', W', 4) the point map of a sequence's frames the layout's grids stand for, at the vision input's
    size (``adapter.pointmap_size``)."""
    fids = layout.frame_ids.cpu().numpy()
    depth = None if seq.depth is None else np.asarray(seq.depth)[fids]
    K = None if seq.K is None else np.asarray(seq.K)[fids]
    if source != "none" and depth is None:
        raise PointMapError(f"sequence {seq.key or seq.scene}: a {source} point map needs depth maps, and it has none "
                            "(use tracks with depth: rendered, DL3DV, COLMAP or VGGT with depth; or source none)")
    pm = make_pointmap(source, depth, K, seed=seed, shape=(len(fids), *seq.image_size))
    return torch.from_numpy(resize_pointmap(pm, adapter.pointmap_size(layout)))
