"""Smooth camera paths of the synthetic scenes and the motion they summarise (``tracks/synthetic.py``).

A path is T camera centres and look-at targets (orbit, dolly or truck, eased in and out),
turned into OpenCV ``cam_from_world`` poses by ``look_at``; ``motion_summary`` measures the
dominant translation and the yaw change in the first camera's frame, which the spatial
questions (``gasp/data/spatial_qa.py``) ask about. World frame: x right, y down, z forward.

Shapes: T frames.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class PathConfig(Protocol):
    """What a path needs of a scene config (``tracks.synthetic.SyntheticSceneConfig`` has it)."""

    num_frames: int
    motion: str | None              # "orbit", "dolly", "truck", or None to draw one

MOTIONS = ("orbit", "dolly", "truck")


def sample_camera_path(rng: np.random.Generator, config: PathConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Camera centres (T, 3), look-at targets (T, 3) and the motion pattern name."""
    T = config.num_frames
    s = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, T))[:, None]       # (T, 1) eased progress
    pattern = config.motion or str(rng.choice(MOTIONS))
    target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.6), rng.uniform(4.5, 5.5)])
    height = rng.uniform(-0.2, 0.2)
    if pattern == "orbit":
        r, a0 = rng.uniform(5.0, 6.0), rng.uniform(-0.5, 0.5)      # |angle| <= 0.5 keeps z < 1.2, |x| < 3.5
        a = a0 - s[:, 0] * (np.sign(a0) or 1.0) * rng.uniform(0.3, 0.5 + abs(a0))
        pos = np.stack([target[0] + r * np.sin(a), np.full_like(a, height), target[2] - r * np.cos(a)], axis=1)
        targets = np.broadcast_to(target, (T, 3))
    elif pattern == "dolly":
        z0, z1 = (-0.8, rng.uniform(0.4, 1.2)) if rng.random() < 0.5 else (rng.uniform(0.4, 1.2), -0.8)
        x0, sway = rng.uniform(-1.0, 1.0), rng.uniform(0.2, 0.4)
        pos = np.concatenate([x0 + sway * np.sin(np.pi * s), np.full_like(s, height), z0 + (z1 - z0) * s], axis=1)
        targets = target + np.concatenate([rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * s, 0 * s, 0 * s], axis=1)
    elif pattern == "truck":
        x0 = rng.uniform(-2.0, -0.5) * rng.choice([-1, 1])
        x1 = -np.sign(x0) * rng.uniform(0.5, 2.0)
        pos = np.concatenate([x0 + (x1 - x0) * s, np.full_like(s, height), np.full_like(s, rng.uniform(-0.5, 0.5))], axis=1)
        targets = target + np.concatenate([0.3 * (x0 + (x1 - x0) * s), 0 * s, 0 * s], axis=1)
    else:
        raise ValueError(f"unknown camera motion {pattern!r}; use one of {MOTIONS}")
    return pos, np.asarray(targets, dtype=np.float64), pattern


def look_at(positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, 4, 4) OpenCV cam_from_world for cameras at (T, 3) looking at (T, 3), no roll (world y down)."""
    fwd = targets - positions
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)                  # (T, 3, 3) rows = camera axes in world
    out = np.tile(np.eye(4), (len(positions), 1, 1))
    out[:, :3, :3], out[:, :3, 3] = R, -np.einsum("tij,tj->ti", R, positions)
    return out


def motion_summary(cam_from_world: np.ndarray, pattern: str) -> dict[str, Any]:
    """Dominant camera motion, measured in the first camera's frame (x right, z forward)."""
    R = cam_from_world[:, :3, :3]
    centres = -np.einsum("tji,tj->ti", R, cam_from_world[:, :3, 3])     # (T, 3) = -R^T t
    disp = R[0] @ (centres[-1] - centres[0])
    fwd_last = R[0] @ R[-1][2]                                         # last optical axis in camera 0
    yaw = float(np.degrees(np.arctan2(fwd_last[0], fwd_last[2])))
    lateral = abs(disp[0]) >= abs(disp[2])
    direction = ("right" if disp[0] > 0 else "left") if lateral else ("forward" if disp[2] > 0 else "backward")
    return {"pattern": pattern, "direction": direction, "rotation": "right" if yaw > 0 else "left",
            "yaw_change_deg": round(yaw, 2), "displacement_cam0": round_list(disp),
            "path_length_m": round(float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()), 4)}


def round_list(x) -> list[float]:
    return [round(float(v), 4) for v in np.ravel(x)]


def pan_targets(positions: np.ndarray, targets: np.ndarray, degrees: float) -> np.ndarray:
    """Targets (T, 3) swung about the world vertical through each camera by an eased 0 -> `degrees` sweep.

    The look direction at frame t turns by degrees * s(t), s easing from 0 to 1 like the paths
    above, so the image content slides sideways: positive turns the camera to its right.
    """
    T = len(positions)
    s = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, T))                # (T,)
    a = np.deg2rad(degrees) * s
    d = targets - positions                                                 # (T, 3) look vectors
    c, n = np.cos(a), np.sin(a)
    # rotation about y (down): x' = c x + n z, z' = -n x + c z turns +z towards +x (to the right)
    turned = np.stack([c * d[:, 0] + n * d[:, 2], d[:, 1], -n * d[:, 0] + c * d[:, 2]], axis=1)
    return positions + turned


def shake_poses(cam_from_world: np.ndarray, std_deg: float, rng: np.random.Generator) -> np.ndarray:
    """(T, 4, 4) poses turned about their own centres by i.i.d. yaw and pitch jitter (handheld shake).

    Frame t's camera turns by yaw ~ N(0, std^2) about its down axis and pitch ~ N(0, std^2)
    about its right axis (each clipped to +-2.5 std), independently per frame, so the image
    moves by about f * tan(angle) pixels between ANY two frames, Delta-t = 1 included, while a
    zero-mean jitter never carries the view away (points stay in view at large Delta-t). No
    roll. The centres do not move: cam_from_world' = [J R | J t] with J the jitter rotation.
    """
    T = len(cam_from_world)
    yaw, pitch = np.deg2rad(np.clip(rng.normal(0.0, std_deg, (2, T)), -2.5 * std_deg, 2.5 * std_deg))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    J = np.zeros((T, 3, 3))
    # J = R_pitch(about camera x) @ R_yaw(about camera y): rows map old camera axes to new ones
    J[:, 0, 0], J[:, 0, 2] = cy, -sy
    J[:, 1, 0], J[:, 1, 1], J[:, 1, 2] = -sp * sy, cp, -sp * cy
    J[:, 2, 0], J[:, 2, 1], J[:, 2, 2] = cp * sy, sp, cp * cy
    out = cam_from_world.copy()
    out[:, :3, :3] = J @ cam_from_world[:, :3, :3]
    out[:, :3, 3] = np.einsum("tij,tj->ti", J, cam_from_world[:, :3, 3])
    return out
