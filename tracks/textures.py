"""Procedural surface textures for the synthetic renderer (``tracks/synthetic.py``).

A texture is a pure function of surface coordinates (u, v) in metres: a named base
colour, plus value-noise octaves (each a scalar lattice noise tinted by its own random
colour direction), plus an optional checker or stripe overlay. The octaves span
roughly 1 to 10 cells per metre, so any ~10 cm patch has its own colour layout and
local patches are distinguishable, which is what point matching is trained and
evaluated on. Colour never depends on the viewpoint, so a surface point looks the
same in every frame (photometric consistency of ground-truth tracks).

Shapes: P sample points; O noise octaves; L x L noise lattice (periodic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATTICE = 128  # noise lattice period in cells; at >= 0.8 cells/m it repeats after >= 160 m

NAMED_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.16, 0.14), "green": (0.20, 0.62, 0.24), "blue": (0.16, 0.30, 0.78),
    "yellow": (0.88, 0.80, 0.18), "orange": (0.92, 0.50, 0.12), "purple": (0.52, 0.22, 0.66),
    "cyan": (0.18, 0.72, 0.78), "pink": (0.90, 0.48, 0.66), "brown": (0.50, 0.32, 0.18),
    "white": (0.86, 0.86, 0.84), "gray": (0.50, 0.50, 0.52), "beige": (0.80, 0.72, 0.56),
}
OBJECT_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "brown")
WALL_COLORS = ("white", "gray", "beige")
PATTERNS = ("none", "checker", "stripes")


@dataclass
class Texture:
    """A seeded procedural texture; call it on (u, v) metres to get RGB in [0, 1]."""

    tex_id: int
    seed: int
    color: str                                  # name in NAMED_COLORS
    freqs: tuple[float, ...]                    # (O,) lattice cells per metre of each octave
    amps: tuple[float, ...]                     # (O,) colour amplitude of each octave
    pattern: str = "none"                       # one of PATTERNS
    pattern_freq: float = 2.0                   # periods per metre
    pattern_angle: float = 0.0                  # radians
    pattern_contrast: float = 0.0               # relative brightness swing of the overlay
    tables: np.ndarray = field(init=False, repr=False)   # (O, L, L) float32 noise in [0, 1]
    tints: np.ndarray = field(init=False, repr=False)    # (O, 3) float32 colour direction per octave
    shifts: np.ndarray = field(init=False, repr=False)   # (O, 2) float32 lattice offset per octave

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        O = len(self.freqs)
        self.tables = rng.random((O, LATTICE, LATTICE), dtype=np.float32)
        tints = rng.normal(size=(O, 3)) + 0.8          # correlated channels = some luminance change
        self.tints = (tints / np.linalg.norm(tints, axis=1, keepdims=True)).astype(np.float32)
        self.shifts = rng.uniform(0, LATTICE, size=(O, 2)).astype(np.float32)

    @property
    def base_rgb(self) -> np.ndarray:
        return np.asarray(NAMED_COLORS[self.color], dtype=np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(P,) u, v in metres -> (P, 3) float32 RGB in [0, 1]."""
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        noise = np.stack([value_noise(self.tables[k], u * np.float32(f) + self.shifts[k, 0],
                                      v * np.float32(f) + self.shifts[k, 1])
                          for k, f in enumerate(self.freqs)], axis=-1)                 # (P, O)
        weights = (2 * np.asarray(self.amps, dtype=np.float32))[:, None] * self.tints  # (O, 3)
        rgb = self.base_rgb + (noise - np.float32(0.5)) @ weights                      # (P, 3)
        if self.pattern != "none":
            rgb *= 1.0 + 0.5 * self.pattern_contrast * self._overlay(u, v)[..., None]
        return np.clip(rgb, 0.0, 1.0)

    def _overlay(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(P,) values in {-1, +1}: a rotated checkerboard or stripes."""
        c, s = np.cos(self.pattern_angle), np.sin(self.pattern_angle)
        a = (2 * np.pi * self.pattern_freq) * (c * u + s * v)
        if self.pattern == "stripes":
            return np.sign(np.sin(a)).astype(np.float32)
        b = (2 * np.pi * self.pattern_freq) * (-s * u + c * v)
        return np.sign(np.sin(a) * np.sin(b)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (the noise tables follow from ``seed``)."""
        return {"id": self.tex_id, "seed": self.seed, "color": self.color,
                "rgb": [round(float(c), 3) for c in self.base_rgb],
                "freqs": [round(f, 3) for f in self.freqs], "amps": [round(a, 3) for a in self.amps],
                "pattern": self.pattern, "pattern_freq": round(self.pattern_freq, 3),
                "pattern_angle": round(self.pattern_angle, 3), "pattern_contrast": round(self.pattern_contrast, 3)}


def value_noise(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value noise: (L, L) lattice values (L a power of 2), (P,) lattice coords -> (P,) in [0, 1]."""
    L = table.shape[0]
    flat = table.ravel()
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx = fx * fx * (3 - 2 * fx)                                 # smoothstep: C1 across cells
    fy = fy * fy * (3 - 2 * fy)
    i0 = x0.astype(np.int32) & (L - 1)                          # periodic lattice (two's complement wraps)
    j0 = (y0.astype(np.int32) & (L - 1)) * L
    i1, j1 = (i0 + 1) & (L - 1), (j0 + L) & (L * L - 1)
    a, b = flat.take(j0 + i0), flat.take(j0 + i1)
    c, d = flat.take(j1 + i0), flat.take(j1 + i1)
    top = a + fx * (b - a)
    return top + fy * (c + fx * (d - c) - top)


def random_texture(tex_id: int, rng: np.random.Generator, color: str, octaves: int = 3,
                   max_freq: float = 8.0, pattern_prob: float = 0.7) -> Texture:
    """A texture of base ``color`` with ``octaves`` noise octaves up to ~``max_freq`` cells/m."""
    if color not in NAMED_COLORS:
        raise ValueError(f"unknown colour {color!r}; known: {sorted(NAMED_COLORS)}")
    top = np.log(max_freq)
    centres = np.linspace(np.log(0.9), top, octaves) if octaves > 1 else np.array([top])
    freqs = tuple(float(f) for f in np.exp(centres + rng.uniform(-0.15, 0.15, size=octaves)))
    amps = tuple(float(a) for a in rng.uniform(0.15, 0.3, size=octaves))
    pattern = str(rng.choice(PATTERNS[1:])) if rng.random() < pattern_prob else "none"
    return Texture(tex_id=tex_id, seed=int(rng.integers(2**31)), color=color, freqs=freqs, amps=amps,
                   pattern=pattern, pattern_freq=float(rng.uniform(0.8, 2.5)),
                   pattern_angle=float(rng.uniform(0, np.pi)), pattern_contrast=float(rng.uniform(0.15, 0.35)))
