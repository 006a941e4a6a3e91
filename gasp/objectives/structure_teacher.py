"""Per-token targets for PseudoGD's structure loss (eq. 4): a stand-in for SAM, or a teacher's own features.

PseudoGD distils SAM ViT-B's features. No SAM weights can be had here, so the default teacher is a **named
stand-in**: the renderer's surfaces. Every pixel of a gasp synthetic scene lies on one surface, a room
face (0-5) or a box (6 + m). Each surface id has a fixed random unit code of ``CODE_DIM`` (256, as the
paper's features) drawn from ``numpy.random.default_rng([seed, id])``, and a token's target is the
mean code of its pixels. So tokens on one surface agree and tokens across a boundary mix: segment
structure, as SAM's features carry, without SAM's semantics. The surfaces are re-rendered from the
scene's own metadata (its seed and config) and the sequence's cameras, so a tracks file needs nothing
new.

``NpyTeacher`` is the pluggable alternative: a folder ``DIR/<scene>/<frame_index:06d>.npy`` of (H', W', C)
feature maps (from SAM or any teacher, made elsewhere), pooled to the same token grid.

Shapes: F frames, H x W pixels, h x w tokens, C channels.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gasp.losses import token_of_pixel

CODE_DIM = 256
ROOM_SURFACES = 6                # room faces 0-5; box m is surface 6 + m


class StructureTeacherError(ValueError):
    """Teacher features that cannot serve a sequence; the message names what is missing and where."""


def surface_ids(metadata: dict, K: np.ndarray, cam_from_world: np.ndarray, height: int, width: int) -> np.ndarray:
    """(F, H, W) int16 visible surface of every pixel of a gasp synthetic scene seen by these cameras.

    metadata: the scene's JSON (``tracks.synthetic.scene_metadata``: its seed and config); K (3, 3) or
    (F, 3, 3) at ``height`` x ``width``; cam_from_world (F, 4, 4).
    """
    from tracks import synthetic as syn

    if metadata.get("generator") != "gasp.synthetic":
        raise StructureTeacherError("the surface stand-in needs gasp's synthetic scenes (their metadata names "
                                    f"generator 'gasp.synthetic', this scene has {metadata.get('generator')!r}); "
                                    "for other data pass a teacher folder of .npy feature maps")
    config = syn.SyntheticSceneConfig(**metadata["config"])
    layout = syn.sample_layout(np.random.default_rng(metadata["seed"]), config)   # render_scene's first draw
    return syn.render_surface_ids(layout, K, cam_from_world, height, width)


def surface_codes(num_surfaces: int, seed: int = 0, dim: int = CODE_DIM) -> np.ndarray:
    """(S, dim) float32 unit codes, row s from ``default_rng([seed, s])`` (fixed per id, whatever S is)."""
    codes = np.stack([np.random.default_rng([seed, s]).standard_normal(dim) for s in range(num_surfaces)])
    return (codes / np.linalg.norm(codes, axis=1, keepdims=True)).astype(np.float32)


def pool_tokens(maps: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(F, H, W, C) per-pixel features -> (F, h*w, C) the mean over each token's pixel box.

    Boxes as ``gasp.losses.pool_token_depth`` assigns pixels (``token_of_pixel``).
    """
    x = torch.as_tensor(maps, dtype=torch.float32)
    F, H, W, C = x.shape
    h, w = int(grid[0]), int(grid[1])
    row, col = token_of_pixel(H, h), token_of_pixel(W, w)                          # (H,), (W,)
    token = (row[:, None] * w + col[None, :]).reshape(-1)                           # (H*W,)
    sums = torch.zeros(F, h * w, C).index_add_(1, token, x.reshape(F, H * W, C))
    counts = torch.bincount(token, minlength=h * w).clamp_min(1).to(torch.float32)
    return sums / counts[None, :, None]


def standin_targets(metadata: dict, K: np.ndarray, cam_from_world: np.ndarray, image_hw: tuple[int, int],
                    grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """(F, h*w, CODE_DIM): the surface stand-in's per-token targets (module docstring)."""
    ids = surface_ids(metadata, K, cam_from_world, *image_hw)                        # (F, H, W)
    codes = surface_codes(int(ids.max()) + 1, seed)
    return pool_tokens(codes[ids.astype(np.int64)], grid)


class NpyTeacher:
    """Teacher features from a folder: ``root/<scene>/<frame_index:06d>.npy``, each (H', W', C) float."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StructureTeacherError(f"structure teacher folder {self.root} does not exist")

    def check(self, scene: str, frame_index: np.ndarray) -> None:
        """Refuse, naming them, frames of ``scene`` that have no feature map (before any training)."""
        missing = [int(f) for f in frame_index if not self._path(scene, int(f)).is_file()]
        if missing:
            raise StructureTeacherError(f"structure teacher {self.root}: scene {scene!r} lacks feature maps for "
                                        f"frames {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                                        f"(expected {self._path(scene, missing[0])})")

    def targets(self, scene: str, frame_index: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
        """(F, h*w, C) the feature maps of these frames, pooled per token."""
        self.check(scene, frame_index)
        maps = [np.load(self._path(scene, int(f))) for f in frame_index]
        shapes = {m.shape for m in maps}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise StructureTeacherError(f"structure teacher {self.root}/{scene}: feature maps must share one "
                                        f"(H', W', C) shape, got {sorted(shapes)}")
        return pool_tokens(np.stack(maps), grid)

    def _path(self, scene: str, frame: int) -> Path:
        return self.root / scene / f"{frame:06d}.npy"


class StructureTargets:
    """The per-token structure targets of a training sequence: the surface stand-in (``teacher`` None) or a
    teacher folder (``NpyTeacher``). Called in the data workers with the scene's metadata."""

    def __init__(self, teacher: str | os.PathLike | None = None, seed: int = 0):
        self.npy = NpyTeacher(teacher) if teacher else None
        self.seed = seed

    @property
    def name(self) -> str:
        return f"teacher folder {self.npy.root}" if self.npy else "surface stand-in (not SAM: renderer surface ids)"

    def dim(self, reader=None) -> int:
        """C, the targets' channel count (a teacher folder's first feature map says)."""
        if self.npy is None:
            return CODE_DIM
        first = next(iter(sorted(self.npy.root.glob("*/*.npy"))), None)
        if first is None:
            raise StructureTeacherError(f"structure teacher folder {self.npy.root} holds no <scene>/<frame>.npy")
        return int(np.load(first, mmap_mode="r").shape[-1])

    def check(self, reader) -> None:
        """Refuse, before any work, data this teacher cannot serve (every scene of ``reader``, every frame)."""
        for name in reader.scene_names:
            if self.npy is not None:
                self.npy.check(name, reader.scene_frame_index(name))
                continue
            gen = reader.scene_metadata(name).get("generator")
            if gen != "gasp.synthetic":
                raise StructureTeacherError(
                    f"scene {name!r} was not rendered by gasp (its generator is {gen!r}), so the surface stand-in has "
                    "no surfaces for it; give the objective a teacher folder (teacher: DIR of <scene>/<frame>.npy)")

    def __call__(self, seq, layout, metadata: dict) -> torch.Tensor:
        """(F', P, C) for the frames the layout's grids stand for."""
        fids = layout.frame_ids.cpu().numpy()
        if self.npy is not None:
            return self.npy.targets(seq.scene, np.asarray(seq.frame_index)[fids], layout.grid)
        if seq.K is None or seq.cam_from_world is None:
            raise StructureTeacherError(f"sequence {seq.key}: the surface stand-in needs its cameras")
        return standin_targets(metadata, seq.K[fids], seq.cam_from_world[fids], seq.image_size, layout.grid,
                               self.seed)
