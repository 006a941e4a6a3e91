"""Procedural RGB-D scenes with exact depth and poses.

A scene is a closed box-shaped room (every ray hits a wall, so depth is defined at every
pixel) with 2-5 textured boxes on the floor at several depths, seen by a look-at camera on
a smooth orbit, dolly or truck path: translation and rotation, hence parallax and occlusion.
``shake_deg`` adds handheld shake (i.i.d. per-frame yaw/pitch jitter, ``camera_path.shake_poses``),
so that points move at every frame gap, the smallest included (without it, "same position as the query" wins).
A vectorised ray caster shoots one ray per pixel centre, slab-tests each yaw-rotated box
inside its projected pixel window, and colours hits with procedural textures attached to
faces by local (u, v) in metres (``tracks/textures.py``) times one Lambertian factor per
face, so colour never depends on the viewpoint.

``same_texture_two_depths`` adds a thin panel in front of the back wall that carries the
wall's texture, showing the wall region ``uv_shift_m`` beside it: one pattern at two
depths, the ambiguity the depth loss (paper eq. 6-8) exists to resolve.

Tracks never come from the renderer: ``make_synthetic_file`` stores scenes and lets
``TrackWriter.add_sequence`` build them with ``tracks.geometry.build_tracks``.

World frame: x right, y DOWN, z forward into the room, metres; an OpenCV camera with
identity rotation looks along +z. Rays are R^T K^-1 [x, y, 1] (camera z = 1), so the ray
parameter t of a hit is exactly its depth.

Shapes: T frames, H x W pixels, P pixels of one surface, M objects.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tracks.camera_path import (
    MOTIONS,
    look_at,
    motion_summary,
    pan_targets,
    round_list,
    sample_camera_path,
    shake_poses,
)
from tracks.geometry import project
from tracks.io import TrackWriter
from tracks.sampling import plan_sequences
from tracks.textures import OBJECT_COLORS, WALL_COLORS, Texture, random_texture
from tracks.types import Scene

log = logging.getLogger(__name__)

ROOM_FACES = ("left_wall", "right_wall", "ceiling", "floor", "front_wall", "back_wall")
# Face f = 2 * axis + (1 if its outward normal points along +axis); the room uses the same order.
UV_AXES = np.array([[2, 1], [0, 2], [0, 1]])          # local axes giving (u, v) on faces normal to x, y, z
FACE_UV_OFFSET = np.arange(6, dtype=np.float32) * 37.0  # a different texture region on each face
TO_LIGHT = np.array([-0.4, -1.0, -0.6]) / np.linalg.norm([-0.4, -1.0, -0.6])  # from upper left, behind the camera


@dataclass
class SyntheticSceneConfig:
    height: int = 448
    width: int = 448
    num_frames: int = 32
    fov_deg: float = 60.0                 # horizontal field of view
    min_boxes: int = 2
    max_boxes: int = 5
    texture_octaves: int = 3
    texture_max_freq: float = 8.0         # noise cells per metre of the finest octave
    pattern_prob: float = 0.7             # chance that a texture has a checker/stripe overlay
    same_texture_two_depths: bool = False
    motion: str | None = None             # "orbit" | "dolly" | "truck"; None draws one per scene
    pan_deg: float = 0.0                  # extra eased yaw sweep over the path (random side); 0: none
    shake_deg: float = 0.0                # handheld shake: i.i.d. per-frame yaw/pitch jitter, std in degrees; 0: none

    def __post_init__(self) -> None:
        if min(self.height, self.width, self.num_frames) < 1 or not 0 < self.fov_deg < 150:
            raise ValueError(f"bad image size, frame count or field of view in {self}")
        if not 0 <= self.min_boxes <= self.max_boxes <= len(OBJECT_COLORS):
            raise ValueError(f"need 0 <= min_boxes <= max_boxes <= {len(OBJECT_COLORS)}, "
                             f"got {self.min_boxes}, {self.max_boxes}")
        if not 0 <= self.pan_deg <= 90:
            raise ValueError(f"pan_deg must be in [0, 90] degrees, got {self.pan_deg}")
        if not 0 <= self.shake_deg <= 20:
            raise ValueError(f"shake_deg must be in [0, 20] degrees, got {self.shake_deg}")
        if self.motion not in (None, *MOTIONS):
            raise ValueError(f"unknown camera motion {self.motion!r}; use one of {MOTIONS} or None")


@dataclass
class SceneObject:
    """An oriented box. The room is also one, but it is seen from inside."""

    name: str
    kind: str                                     # "box" | "plane" | "room"
    center: np.ndarray                            # (3,) world metres
    size: np.ndarray                              # (3,) full extents along local x, y, z
    yaw: float = 0.0                              # radians about the world y (down) axis
    textures: tuple[int, ...] = (0,) * 6          # texture id per face
    uv_offset: tuple[float, float] = (0.0, 0.0)   # metres added to every face's (u, v)

    def rotation(self) -> np.ndarray:
        """(3, 3) world_from_local."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    def corners(self) -> np.ndarray:
        """(8, 3) world corners."""
        signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, 8).T
        return (signs * self.size / 2) @ self.rotation().T + self.center

    def face_shade(self) -> np.ndarray:
        """(6,) float32 Lambertian factor per face; room normals point inwards."""
        normals = np.repeat(np.eye(3), 2, axis=0) * np.tile([-1.0, 1.0], 3)[:, None]   # (6, 3) local
        normals = normals @ self.rotation().T * (-1.0 if self.kind == "room" else 1.0)
        return (0.55 + 0.45 * np.clip(normals @ TO_LIGHT, 0, None)).astype(np.float32)


@dataclass
class SceneLayout:
    room: SceneObject
    objects: list[SceneObject]
    textures: list[Texture]
    same_texture_pair: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- ray casting

def intrinsics(config: SyntheticSceneConfig) -> np.ndarray:
    """(3, 3) pinhole K with square pixels; the optical axis hits the image centre."""
    f = (config.width / 2) / np.tan(np.deg2rad(config.fov_deg) / 2)
    return np.array([[f, 0, (config.width - 1) / 2], [0, f, (config.height - 1) / 2], [0, 0, 1]])


def camera_rays(K: np.ndarray, cam_from_world: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and world ray directions (H, W, 3) float32 with camera z = 1."""
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    ys, xs = np.mgrid[0:height, 0:width]
    pix = np.stack([xs, ys, np.ones_like(xs)], axis=-1).astype(np.float64)   # (H, W, 3)
    d_cam = pix @ np.linalg.inv(K).T                                          # (H, W, 3)
    return (-R.T @ t).astype(np.float32), (d_cam @ R).astype(np.float32)      # row-vector R^T d


def _room_hits(room: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit distance (H, W) and face (H, W) of rays leaving the axis-aligned room from inside."""
    lo, hi = room.center - room.size / 2, room.center + room.size / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axis = (np.where(dirs > 0, hi, lo).astype(np.float32) - origin) / dirs   # (H, W, 3)
    t_axis = np.where(t_axis > 0, t_axis, np.float32(np.inf))                   # d = 0 gives -inf or NaN
    axis = t_axis.argmin(-1)                                                     # (H, W)
    t = np.take_along_axis(t_axis, axis[..., None], -1)[..., 0]
    face = 2 * axis + (np.take_along_axis(dirs, axis[..., None], -1)[..., 0] > 0)
    return t.astype(np.float32), face.astype(np.int8)


def _box_hits(obj: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance (..., ) (inf on a miss) and face (...,) of rays hitting ``obj`` from outside."""
    R = obj.rotation().astype(np.float32)
    o = (origin - obj.center).astype(np.float32) @ R                 # (3,) local
    d = dirs @ R                                                     # (..., 3) local
    half = (obj.size / 2).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / d, (half - o) / d                     # (..., 3) slab planes
    t_min = np.minimum(t1, t2)
    t_near, t_far = t_min.max(-1), np.maximum(t1, t2).min(-1)
    axis = t_min.argmax(-1)
    hit = (t_near <= t_far) & (t_near > 0)                           # NaN (ray on a slab plane) misses
    face = 2 * axis + (np.take_along_axis(d, axis[..., None], -1)[..., 0] < 0)
    return np.where(hit, t_near, np.float32(np.inf)), face.astype(np.int8)


def _pixel_window(obj: SceneObject, K: np.ndarray, cam_from_world: np.ndarray,
                  height: int, width: int) -> tuple[slice, slice] | None:
    """Pixel box that holds the object's projection (whole image if it straddles the camera plane)."""
    xy, z = project(obj.corners(), K[None], cam_from_world[None])   # (1, 8, 2), (1, 8)
    if not (z > 1e-3).all():
        return slice(0, height), slice(0, width)
    x0, y0 = np.floor(xy[0].min(0)).astype(int) - 1
    x1, y1 = np.ceil(xy[0].max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (slice(y0, y1), slice(x0, x1)) if x0 < x1 and y0 < y1 else None


def _shade(layout: SceneLayout, origin: np.ndarray, dirs: np.ndarray, depth: np.ndarray,
           ids: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 colour from each pixel's surface, face and local (u, v)."""
    pts = (origin + depth[..., None] * dirs).reshape(-1, 3)              # (H*W, 3) world hit points
    key = (ids.astype(np.int32) * 6 + face).ravel()                      # one (surface, face) per group
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.diff(key[order], prepend=-1))
    rgb = np.empty_like(pts)
    surfaces = [layout.room] + layout.objects
    for lo, hi in zip(starts, np.append(starts[1:], len(order))):
        idx = order[lo:hi]                                               # (P,) flat pixels of one face
        m, f = divmod(int(key[idx[0]]), 6)
        obj = surfaces[m]
        local = (pts[idx] - obj.center.astype(np.float32)) @ obj.rotation().astype(np.float32)  # (P, 3)
        ua, va = UV_AXES[f // 2]
        u = local[:, ua] + (FACE_UV_OFFSET[f] + obj.uv_offset[0])
        v = local[:, va] + (FACE_UV_OFFSET[f] + obj.uv_offset[1])
        rgb[idx] = layout.textures[obj.textures[f]](u, v) * obj.face_shade()[f]
    return rgb.reshape(depth.shape + (3,))


def render_views(layout: SceneLayout, K: np.ndarray, cam_from_world: np.ndarray,
                 height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render T views. K (3, 3); cam_from_world (T, 4, 4).

    Returns rgb (T, H, W, 3) uint8, depth (T, H, W) float32 camera z, and ids (T, H, W)
    int16 giving the visible surface: 0 for the room, m + 1 for ``layout.objects[m]``.
    """
    T = len(cam_from_world)
    rgb = np.empty((T, height, width, 3), dtype=np.uint8)
    depth = np.empty((T, height, width), dtype=np.float32)
    ids = np.zeros((T, height, width), dtype=np.int16)
    for k, pose in enumerate(np.asarray(cam_from_world, dtype=np.float64)):
        origin, dirs = camera_rays(K, pose, height, width)
        depth[k], face = _room_hits(layout.room, origin, dirs)
        for m, obj in enumerate(layout.objects):
            win = _pixel_window(obj, K, pose, height, width)
            if win is None:
                continue
            t, f = _box_hits(obj, origin, dirs[win])
            closer = t < depth[k][win]
            depth[k][win][closer], face[win][closer], ids[k][win][closer] = t[closer], f[closer], m + 1
        col = _shade(layout, origin, dirs, depth[k], ids[k], face)
        rgb[k] = np.clip(col * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rgb, depth, ids


def render_surface_ids(layout: SceneLayout, K: np.ndarray, cam_from_world: np.ndarray,
                       height: int, width: int) -> np.ndarray:
    """(T, H, W) int16 visible surface of every pixel, finer than ``render_views``' ids: room face f (0-5,
    ``ROOM_FACES`` order) or 6 + m for ``layout.objects[m]``. The same ray casts, no shading.
    K (3, 3) or (T, 3, 3); cam_from_world (T, 4, 4)."""
    K = np.asarray(K, dtype=np.float64)
    out = np.empty((len(cam_from_world), height, width), dtype=np.int16)
    for k, pose in enumerate(np.asarray(cam_from_world, dtype=np.float64)):
        Kk = K[k] if K.ndim == 3 else K
        origin, dirs = camera_rays(Kk, pose, height, width)
        depth, face = _room_hits(layout.room, origin, dirs)
        ids = face.astype(np.int16)
        for m, obj in enumerate(layout.objects):
            win = _pixel_window(obj, Kk, pose, height, width)
            if win is None:
                continue
            t, _ = _box_hits(obj, origin, dirs[win])
            closer = t < depth[win]
            depth[win][closer], ids[win][closer] = t[closer], len(ROOM_FACES) + m
        out[k] = ids
    return out


# ----------------------------------------------------------------------------- scene sampling

def sample_layout(rng: np.random.Generator, config: SyntheticSceneConfig) -> SceneLayout:
    """A random room, optional same-texture panel, and 2-5 non-overlapping boxes on the floor."""
    textures: list[Texture] = []

    def new_texture(color: str) -> int:
        textures.append(random_texture(len(textures), rng, color, config.texture_octaves,
                                       config.texture_max_freq, config.pattern_prob))
        return textures[-1].tex_id

    half_w, floor, back = rng.uniform(4.5, 5.5), rng.uniform(1.3, 1.6), rng.uniform(8.5, 10.0)
    lo, hi = np.array([-half_w, floor - rng.uniform(3.2, 3.8), -4.0]), np.array([half_w, floor, back])
    room = SceneObject("room", "room", (lo + hi) / 2, hi - lo,
                       textures=tuple(new_texture(str(rng.choice(WALL_COLORS))) for _ in ROOM_FACES))
    objects, footprints, pair = [], [], None                    # footprints: (x, z, radius)
    if config.same_texture_two_depths:
        panel, pair = _same_texture_panel(rng, room)
        objects.append(panel)
        footprints.append((panel.center[0], panel.center[2], panel.size[0] / 2))
    n_boxes = int(rng.integers(config.min_boxes, config.max_boxes + 1))
    for color in rng.permutation(OBJECT_COLORS)[:n_boxes]:
        for _ in range(50):
            size = np.array([rng.uniform(0.4, 1.3), rng.uniform(0.4, 1.5), rng.uniform(0.4, 1.3)])
            x, z, r = rng.uniform(-2.5, 2.5), rng.uniform(3.0, 7.0), np.hypot(size[0], size[2]) / 2
            if all(np.hypot(x - fx, z - fz) > r + fr + 0.1 for fx, fz, fr in footprints):
                break
        else:
            log.debug("no free floor space for the %s box; skipping it", color)
            continue
        yaw = 0.0 if rng.random() < 0.3 else rng.uniform(-np.pi / 4, np.pi / 4)
        tex = new_texture(str(color))
        objects.append(SceneObject(f"{color} box", "box", np.array([x, floor - size[1] / 2, z]), size,
                                   yaw, textures=(tex,) * 6))
        footprints.append((x, z, r))
    return SceneLayout(room, objects, textures, pair)


def _same_texture_panel(rng: np.random.Generator, room: SceneObject) -> tuple[SceneObject, dict[str, Any]]:
    """A thin panel on the floor whose camera-facing side shows the back wall region beside it."""
    w, h = rng.uniform(1.2, 1.8), rng.uniform(1.0, 1.6)
    floor = room.center[1] + room.size[1] / 2
    center = np.array([rng.uniform(-1.0, 1.0), floor - h / 2, rng.uniform(3.5, 5.5)])
    # Far enough that, seen from the front, the twin wall region shows beside the panel, not behind it.
    side = -np.sign(center[0]) if abs(center[0]) > 0.3 else rng.choice([-1.0, 1.0])
    shift = float(side * (w * (room.center[2] + room.size[2] / 2) / center[2] + 0.4))
    wall_tex = room.textures[5]
    # Panel face 4 (-z) at world (x, y) samples the texture the back wall (face 5) has at (x + shift, y).
    du = center[0] - room.center[0] + shift + FACE_UV_OFFSET[5] - FACE_UV_OFFSET[4]
    dv = center[1] - room.center[1] + FACE_UV_OFFSET[5] - FACE_UV_OFFSET[4]
    panel = SceneObject("panel", "plane", center, np.array([w, h, 0.04]), 0.0,
                        textures=(wall_tex,) * 6, uv_offset=(float(du), float(dv)))
    pair = {"foreground": "panel", "background": "back_wall", "texture": wall_tex, "uv_shift_m": [shift, 0.0]}
    return panel, pair


def scene_metadata(seed: int, config: SyntheticSceneConfig, layout: SceneLayout, cam_from_world: np.ndarray,
                   ids: np.ndarray, pattern: str) -> dict[str, Any]:
    """JSON-serialisable description: objects with 3D boxes, room, textures, camera path, motion."""
    objects = [{"name": o.name, "kind": o.kind, "center": round_list(o.center), "size": round_list(o.size),
                "yaw_deg": round(float(np.degrees(o.yaw)), 3), "texture": o.textures[4],
                "color": layout.textures[o.textures[4]].color, "rgb": round_list(layout.textures[o.textures[4]].base_rgb),
                "visible_pixels": (ids == m + 1).sum(axis=(1, 2)).tolist()} for m, o in enumerate(layout.objects)]
    room = layout.room
    path = [{"frame_index": t, "position": round_list(-pose[:3, :3].T @ pose[:3, 3]), "forward": round_list(pose[2, :3])}
            for t, pose in enumerate(cam_from_world)]
    return {"generator": "gasp.synthetic", "seed": int(seed),
            "same_texture_two_depths": bool(config.same_texture_two_depths),
            "same_texture_pair": layout.same_texture_pair,
            "world_frame": "x right, y down, z forward (metres); boxes stand on the floor plane y = room.y[1]",
            "config": asdict(config),
            "room": {"x": round_list(room.center[0] + np.array([-.5, .5]) * room.size[0]),
                     "y": round_list(room.center[1] + np.array([-.5, .5]) * room.size[1]),
                     "z": round_list(room.center[2] + np.array([-.5, .5]) * room.size[2]),
                     "textures": dict(zip(ROOM_FACES, room.textures))},
            "objects": objects, "num_objects": len(objects),
            "textures": [t.to_dict() for t in layout.textures],
            "camera_path": path, "motion": motion_summary(cam_from_world, pattern)}


def render_scene(seed: int, config: SyntheticSceneConfig | None = None, name: str | None = None) -> Scene:
    """Render one deterministic scene of ``config.num_frames`` frames from ``seed``."""
    config = config or SyntheticSceneConfig()
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, config)
    positions, targets, pattern = sample_camera_path(rng, config)
    if config.pan_deg:                    # its own stream: the layout and path draws stay as without a pan
        side = np.random.default_rng([seed, 7]).choice([-1.0, 1.0])
        targets = pan_targets(positions, targets, side * config.pan_deg)
    cam_from_world = look_at(positions, targets)
    if config.shake_deg:                  # its own stream too: renders without shake stay byte-identical
        cam_from_world = shake_poses(cam_from_world, config.shake_deg, np.random.default_rng([seed, 11]))
    K = intrinsics(config)
    rgb, depth, ids = render_views(layout, K, cam_from_world, config.height, config.width)
    T = config.num_frames
    return Scene(name=name or f"synthetic_{seed}", frames=rgb, depth=depth, K=np.repeat(K[None], T, axis=0),
                 cam_from_world=cam_from_world, frame_index=np.arange(T, dtype=np.int64),
                 metadata=scene_metadata(seed, config, layout, cam_from_world, ids, pattern))


def make_synthetic_file(path: str | Path, num_scenes: int, seed: int, config: SyntheticSceneConfig | None = None,
                        grid: int = 8, sequences_per_scene: int = 1, split: str = "train",
                        same_texture_every: int = 2, rgb_encoding: str = "png",
                        progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
                        extra_metadata: dict[str, Any] | None = None) -> list[str]:
    """Render ``num_scenes`` scenes into one tracks file; returns the sequence keys.

    Scene i gets seed ``SeedSequence(seed).generate_state(num_scenes)[i]`` (in its metadata).
    With ``same_texture_every`` = k > 0, scenes 0, k, 2k, ... are same-texture scenes and the
    others are not; with k = 0, ``config.same_texture_two_depths`` applies to every scene.
    Frames come from the training sampler (``split="train"``) or the evaluation sampler.
    ``progress`` wraps the scene loop (e.g. tqdm); ``extra_metadata`` is merged into every scene's.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    config = config or SyntheticSceneConfig()
    scene_seeds = np.random.SeedSequence(seed).generate_state(num_scenes) if num_scenes > 0 else []
    keys: list[str] = []
    with TrackWriter(path, rgb_encoding=rgb_encoding) as writer:
        for i in (progress or iter)(range(num_scenes)):
            same = (i % same_texture_every == 0) if same_texture_every > 0 else config.same_texture_two_depths
            scene = render_scene(int(scene_seeds[i]), replace(config, same_texture_two_depths=same),
                                 name=f"synth_{seed}_{i:05d}")
            scene.metadata.update(extra_metadata or {})
            writer.add_scene(scene)
            for ids in plan_sequences(scene.num_frames, scene.name, "sampled", split, sequences_per_scene,
                                      seed, first_index=len(keys)):
                keys.append(writer.add_sequence(scene.name, ids, grid=grid, query_frame=0))
    log.info("wrote %d scenes, %d %s sequences (grid %d) to %s", num_scenes, len(keys), split, grid, path)
    return keys
