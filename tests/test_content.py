"""`tracks.content.digest`: every stored byte counts, and nothing but the bytes.

The files are written here with h5py directly (numeric datasets beside variable-length uint8 and
string ones, as tracks files store PNG frames and sequence names), not by gasp's writer.
"""
import platform
from pathlib import Path

import h5py
import numpy as np
import pytest

from tracks.content import digest

tracks_digest = digest


def _write(path, png_bytes, names=(b"seq_a", b"seq_b"), tracks=None, extra_v2=False):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        g = f.create_group("scenes/s0")
        rgb = g.create_dataset("rgb", (len(png_bytes),), dtype=h5py.vlen_dtype(np.uint8))
        for i, b in enumerate(png_bytes):
            rgb[i] = np.frombuffer(b, dtype=np.uint8)
        g["tracks"] = rng.normal(size=(3, 5, 2)).astype(np.float32) if tracks is None else tracks
        f.create_dataset("index/sequences", data=list(names), dtype=h5py.string_dtype("ascii"))
        if extra_v2:                                    # format v2's datasets derived from the same geometry
            g["occluded"] = np.zeros((3, 5), bool)
    return path


def _frames(n=3, size=5000, seed=1):
    rng = np.random.default_rng(seed)
    return [b"\x89PNG" + rng.integers(0, 256, size, dtype=np.uint8).tobytes() + b"IEND" for _ in range(n)]


def test_a_byte_in_the_middle_of_a_frame_changes_the_digest(tmp_path):
    frames = _frames()
    base = tracks_digest(_write(tmp_path / "a.h5", frames))
    assert tracks_digest(_write(tmp_path / "same.h5", frames)) == base          # a re-write matches
    hit = bytearray(frames[1])
    hit[len(hit) // 2] ^= 1                                                      # numpy's repr shows none of it
    assert tracks_digest(_write(tmp_path / "b.h5", [frames[0], bytes(hit), frames[2]])) != base
    moved = [frames[0] + frames[1][:1], frames[1][1:], frames[2]]                # same bytes, other boundaries
    assert tracks_digest(_write(tmp_path / "c.h5", moved)) != base
    assert tracks_digest(_write(tmp_path / "d.h5", frames, names=(b"seq_a", b"seq_c"))) != base
    t = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    t[2, 4, 1] = np.nextafter(t[2, 4, 1], np.float32(np.inf))
    assert tracks_digest(_write(tmp_path / "e.h5", frames, tracks=t)) != base


def test_print_options_and_v2_only_datasets_leave_the_digest_alone(tmp_path):
    frames = _frames()
    path = _write(tmp_path / "a.h5", frames)
    base = tracks_digest(path)
    with np.printoptions(threshold=3, edgeitems=1, linewidth=20, legacy="1.25"):
        assert tracks_digest(path) == base
    assert tracks_digest(_write(tmp_path / "v2.h5", frames, extra_v2=True)) == base


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_frame_files_digest(tmp_path, n):
    assert len(tracks_digest(_write(tmp_path / "x.h5", _frames(n)))) == 64


# ------------------------------------------------------------------------- the content summary at its precision

_RENDER = """
import sys
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file
make_synthetic_file(sys.argv[1], 2, seed=5000, config=SyntheticSceneConfig(height=96, width=96, num_frames=26,
                    shake_deg=10.0), grid=8, split="eval")
"""


def _render(path, **env):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")}
    subprocess.run([sys.executable, "-c", _RENDER, str(path)], cwd=ROOT, check=True,   # the CPU's own kernel unless
                   env={**base, **env, "PYTHONPATH": str(ROOT)})                        # another is named
    return path


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file() or platform.machine() != "x86_64",
                    reason="OpenBLAS's x86-64 kernels are the point; this machine is not x86-64 Linux")
@pytest.mark.slow
def test_a_rerender_under_another_cpus_blas_kernel_has_the_same_content(tmp_path):
    """OpenBLAS picks its kernel by CPU (the renderer's small float32 products go through it); Haswell's is the one
    an AVX2-only x86-64 machine runs. On an AVX-512 machine the bytes differ and the content still agrees."""
    from tracks.content import compare, summarize

    a = _render(tmp_path / "native.h5")
    b = _render(tmp_path / "haswell.h5", OPENBLAS_CORETYPE="Haswell")
    if " avx512f " in open("/proc/cpuinfo").read():     # the cause: another kernel, other bytes (equal on AVX2 CPUs)
        assert digest(a) != digest(b)
    assert compare(summarize(b), summarize(a)) == []
    assert compare(summarize(a), summarize(a), {k: 0 for k in ("rgb", "depth_rel", "track_mean", "visible")}) == []


def test_a_changed_scene_frame_or_sequence_is_reported(tmp_path):
    import copy

    from tracks.content import compare, summarize

    want = summarize(_render(tmp_path / "a.h5"))
    scene, seq = sorted(want["scenes"])[0], sorted(want["sequences"])[0]
    cases = {
        "RGB": lambda s: s["scenes"][scene]["rgb"][3].__setitem__(1, s["scenes"][scene]["rgb"][3][1] + 0.1),
        "depth": lambda s: s["scenes"][scene]["depth"].__setitem__(0, s["scenes"][scene]["depth"][0] * 1.001),
        "frames": lambda s: s["sequences"][seq]["frame_index"].__setitem__(1, 99),
        "visible": lambda s: s["sequences"][seq].__setitem__("visible", s["sequences"][seq]["visible"] + 3),
        "mean track": lambda s: s["sequences"][seq]["track_mean"].__setitem__(0, s["sequences"][seq]["track_mean"][0]
                                                                               + 0.02),
        "scenes differ": lambda s: s["scenes"].pop(scene),
    }
    for word, change in cases.items():
        got = copy.deepcopy(want)
        change(got)
        diffs = compare(got, want)
        assert len(diffs) >= 1 and any(word in d for d in diffs), (word, diffs)
