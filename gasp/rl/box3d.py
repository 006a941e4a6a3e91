"""9-DoF 3D boxes in camera coordinates and their rotated IoU (VST, seed 004, App. A.1, eq. 3).

A box is (x, y, z, x_l, y_l, z_l, pitch, yaw, roll): its centre in the camera frame (OpenCV: x right, y down,
z forward), its side lengths along its own axes, and its orientation as angles in degrees. The rotation is
R = R_y(yaw) R_x(pitch) R_z(roll) (yaw about the camera's y axis, then pitch about x, then roll about z, each
right-handed): a box axis-aligned with the camera has all three 0. VST writes the angles divided by 180 with two
decimals (``format_box``); ``parse_boxes`` reads them back.

IoU is exact: the intersection of two boxes is the intersection of their 12 half-spaces, a convex polytope whose
volume ``scipy.spatial.HalfspaceIntersection`` and ``ConvexHull`` give (an interior point from a linear program).
"""
from __future__ import annotations

import re

import numpy as np

NUMBER = r"-?\d+(?:\.\d+)?"


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """(3, 3) R = R_y(yaw) R_x(pitch) R_z(roll), angles in degrees."""
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def euler(R: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) degrees of R = R_y(yaw) R_x(pitch) R_z(roll) (pitch in [-90, 90])."""
    pitch = np.degrees(np.arcsin(np.clip(-R[1, 2], -1, 1)))
    yaw = np.degrees(np.arctan2(R[0, 2], R[2, 2]))
    roll = np.degrees(np.arctan2(R[1, 0], R[1, 1]))
    return float(pitch), float(yaw), float(roll)


def corners(box) -> np.ndarray:
    """(8, 3) camera-frame corners of a 9-DoF box."""
    b = np.asarray(box, dtype=np.float64)
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, 8).T
    return (signs * b[3:6] / 2) @ rotation(*b[6:9]).T + b[:3]


def volume(box) -> float:
    return float(np.prod(np.asarray(box, dtype=np.float64)[3:6]))


def _halfspaces(box) -> np.ndarray:
    """(6, 4) rows [n, -d] with n . x - d <= 0 inside (scipy's A x + b <= 0 form)."""
    b = np.asarray(box, dtype=np.float64)
    R = rotation(*b[6:9])
    rows = []
    for k in range(3):
        n = R[:, k]
        c = n @ b[:3]
        rows.append([*n, -(c + b[3 + k] / 2)])
        rows.append([*(-n), c - b[3 + k] / 2])
    return np.array(rows)


def intersection_volume(a, b) -> float:
    from scipy.optimize import linprog
    from scipy.spatial import ConvexHull, HalfspaceIntersection, QhullError

    hs = np.vstack([_halfspaces(a), _halfspaces(b)])
    A, c = hs[:, :3], hs[:, 3]
    norm = np.linalg.norm(A, axis=1)
    # the Chebyshev centre: the point deepest inside both (max r with A x + r |a| <= -c)
    res = linprog([0, 0, 0, -1], A_ub=np.hstack([A, norm[:, None]]), b_ub=-c, bounds=[(None, None)] * 3 + [(0, None)])
    if not res.success or res.x[3] < 1e-9:
        return 0.0
    try:
        pts = HalfspaceIntersection(hs, res.x[:3]).intersections
        return float(ConvexHull(pts).volume)
    except QhullError:
        return 0.0


def iou(a, b) -> float:
    """Rotated 3D IoU of two 9-DoF boxes (0 for a degenerate box)."""
    va, vb = volume(a), volume(b)
    if va <= 0 or vb <= 0:
        return 0.0
    inter = intersection_volume(a, b)
    return inter / (va + vb - inter)


def format_box(box) -> str:
    """VST's text: centre and sizes in metres, angles / 180, two decimals: "[x, y, z, xl, yl, zl, p, y, r]"."""
    b = np.asarray(box, dtype=np.float64)
    vals = [*b[:6], *(b[6:9] / 180.0)]
    return "[" + ", ".join(f"{v:.2f}" for v in vals) + "]"


def parse_boxes(text: str) -> list[np.ndarray] | None:
    """Every "[9 numbers]" in ``text`` as a 9-DoF box (angles back to degrees); None if there is none, or a bracket
    holds another count of numbers (an answer that does not parse scores 0, it does not raise)."""
    text = text.replace(" . ", ".").replace(" .", ".").replace(". ", ".")       # the tiny tokenizer's spacing
    groups = re.findall(r"\[([^\[\]]*)\]", text)
    if not groups:
        return None
    boxes = []
    for g in groups:
        nums = [float(x) for x in re.findall(NUMBER, g)]
        if len(nums) != 9:
            return None
        boxes.append(np.array([*nums[:6], *(np.array(nums[6:]) * 180.0)]))
    return boxes

