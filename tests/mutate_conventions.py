"""Mutation check of the real-data readers' conventions (not collected by pytest; run it by hand).

    python tests/mutate_conventions.py

Each line makes one deliberate convention mistake in a reader (x/y order, the half-pixel origin,
VGGT's crop offset, a depth scale, the strictness of TAP-Vid's threshold), runs the tests that
guard it, restores the file and reports whether the tests caught it. Every line must say CAUGHT.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = [  # (what, file, original text, mistaken text, tests that must fail)
    ("TAP-Vid half-pixel origin", "tracks/tapvid.py", "* np.array([W, H]) - 0.5", "* np.array([W, H])",
     "tests/test_tapvid.py"),
    ("TAP-Vid x/y order", "tracks/tapvid.py", "* np.array([W, H]) - 0.5", "* np.array([H, W]) - 0.5",
     "tests/test_tapvid.py"),
    ("TAP-Vid strict threshold", "probes/tapvid_metrics.py", "bits |= (d2 < float(t) ** 2)",
     "bits |= (d2 <= float(t) ** 2)", "tests/test_tapvid.py"),
    ("COLMAP keypoint half-pixel origin", "tracks/colmap.py", "return xy * self.pixel_scale[frame] - 0.5",
     "return xy * self.pixel_scale[frame]", "tests/test_colmap_sparse.py"),
    ("COLMAP keypoint x/y order (binary)", "tracks/colmap_io.py", 'xy=np.stack([raw["x"], raw["y"]], -1)',
     'xy=np.stack([raw["y"], raw["x"]], -1)', "tests/test_colmap_sparse.py"),
    ("COLMAP keypoint x/y order (text)", "tracks/colmap_io.py", "return vals[:, :2], np.where",
     "return vals[:, 1::-1], np.where", "tests/test_colmap_sparse.py"),
    ("COLMAP K half-pixel origin", "tracks/dl3dv.py", "[[fl_x * sx, 0.0, cx * sx - 0.5]", "[[fl_x * sx, 0.0, cx * sx]",
     "tests/test_colmap_sparse.py"),
    ("VGGT crop offset", "tracks/vggt.py", "return Preprocess(mode, (w2, h2), (0, top), (w2, min(h2, TARGET)))",
     "return Preprocess(mode, (w2, h2), (0, 0), (w2, min(h2, TARGET)))", "tests/test_vggt.py"),
    ("VGGT half-pixel origin", "tracks/vggt.py", "Ks[:, 0, 2] = (K[:, 0, 2] + ox) / sx - 0.5",
     "Ks[:, 0, 2] = (K[:, 0, 2] + ox) / sx", "tests/test_vggt.py"),
    ("VGGT x/y scale order", "tracks/vggt.py", "Ks[:, 0, 0], Ks[:, 1, 1] = K[:, 0, 0] / sx, K[:, 1, 1] / sy",
     "Ks[:, 0, 0], Ks[:, 1, 1] = K[:, 0, 0] / sy, K[:, 1, 1] / sx", "tests/test_vggt.py"),
    ("VGGT depth scale", "tracks/vggt.py", "    depth[keep] = d[keep]", "    depth[keep] = 1.5 * d[keep]",
     "tests/test_vggt.py"),
    ("depth-to-pose scale inverted", "tracks/depth_align.py", "ratio = samples.z / samples.depth",
     "ratio = samples.depth / samples.z", "tests/test_depth_align.py"),
]


def main() -> int:
    missed = 0
    for what, file, old, new, tests in MUTATIONS:
        path = ROOT / file
        src = path.read_text()
        if src.count(old) != 1:
            print(f"STALE   {what}: {file} no longer holds the text this mutation changes")
            missed += 1
            continue
        path.write_text(src.replace(old, new))
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", tests], cwd=ROOT,
                               capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        finally:
            path.write_text(src)
        caught = r.returncode != 0
        missed += not caught
        print(f"{'CAUGHT' if caught else 'MISSED'}  {what:38s} {r.stdout.strip().splitlines()[-1]}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
