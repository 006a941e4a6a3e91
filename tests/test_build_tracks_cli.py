"""scripts/build_tracks.py end to end: disparity of a two-view translation, sampling, bad input."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracks.io import TrackReader
from tracks.scene_folder import save_scene_folder
from tracks.types import Scene

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_tracks.py"
F_PX, BASELINE, Z = 40.0, 0.5, 4.0          # disparity f * b / Z = 5 px
H, W = 24, 32


def translation_scene(T=2, name="plane") -> Scene:
    """Fronto-parallel plane at depth Z; camera t sits at x = t * BASELINE, looking down +z."""
    K = np.array([[F_PX, 0, (W - 1) / 2], [0, F_PX, (H - 1) / 2], [0, 0, 1]])
    poses = np.tile(np.eye(4), (T, 1, 1))
    poses[:, 0, 3] = -BASELINE * np.arange(T)                    # cam_from_world: x_cam = x_world - t*b
    rng = np.random.default_rng(0)
    return Scene(name=name, frames=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
                 depth=np.full((T, H, W), Z, np.float32), K=np.tile(K, (T, 1, 1)),
                 cam_from_world=poses, frame_index=np.arange(T) * 2)


def run_main(*argv):
    from gasp_cli.build_tracks import main
    return main([str(a) for a in argv])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_frames_all_reproduces_disparity(tmp_path):
    scene_dir = save_scene_folder(translation_scene(), tmp_path / "plane")
    out = tmp_path / "out" / "t.h5"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scene", str(scene_dir), "--out", str(out),
                           "--grid", "6"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    with TrackReader(out) as reader:
        assert len(reader) == 1
        seq = reader[0]
    assert seq.query_frame == 0 and seq.grid == 6 and seq.num_points == 36
    np.testing.assert_array_equal(seq.frame_index, [0, 2])
    disparity = seq.tracks[0, :, 0] - seq.tracks[1, :, 0]
    vis = seq.visible[1]
    np.testing.assert_allclose(disparity, F_PX * BASELINE / Z, atol=1e-4)
    np.testing.assert_allclose(seq.tracks[1, :, 1], seq.tracks[0, :, 1], atol=1e-4)
    np.testing.assert_allclose(seq.track_depth[1], Z, atol=1e-5)
    # Visible exactly where the shifted point stays inside the image.
    np.testing.assert_array_equal(vis, seq.tracks[1, :, 0] >= -0.5)
    assert 0 < vis.sum() < 36


@pytest.mark.parametrize("split, n_frames", [("train", None), ("eval", 8)])
def test_frames_sampled(tmp_path, split, n_frames):
    scene_dir = save_scene_folder(translation_scene(T=30), tmp_path / "plane")
    out = tmp_path / "s.h5"
    assert run_main("--scene", scene_dir, "--out", out, "--frames", "sampled", "--sequences", 3,
                    "--split", split, "--grid", 4, "--seed", 1) == 0
    with TrackReader(out) as reader:
        seqs = [reader[i] for i in range(len(reader))]
    assert len(seqs) == 3
    for s in seqs:
        assert s.query_frame == 0 and s.num_points == 16
        assert 8 <= s.num_frames <= 24 if n_frames is None else s.num_frames == n_frames
    if split == "eval":
        dts = np.concatenate([s.dt // 2 for s in seqs])          # frame_index steps by 2
        assert {1, 24} <= set(dts.tolist())


def test_bad_scene_exits_2_and_leaves_no_file(tmp_path, capsys):
    scene_dir = save_scene_folder(translation_scene(), tmp_path / "plane")
    np.save(scene_dir / "depth" / "000001.npy", np.ones((3, 3), np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert run_main("--scene", scene_dir, "--out", out_dir / "t.h5") == 2
    err = capsys.readouterr().err
    assert "000001.npy: depth has shape (3, 3)" in err and "Traceback" not in err
    assert leftovers(out_dir) == []


def test_bad_scene_subprocess_message(tmp_path):
    scene_dir = save_scene_folder(translation_scene(), tmp_path / "plane")
    (scene_dir / "cameras.json").write_text("{")
    out = tmp_path / "t.h5"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--scene", str(scene_dir), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "cameras.json: malformed JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_single_frame_with_frames_all_is_refused(tmp_path, capsys):
    scene_dir = save_scene_folder(translation_scene(T=1), tmp_path / "plane")
    out = tmp_path / "t.h5"
    assert run_main("--scene", scene_dir, "--out", out) == 2
    assert "has 1 frame(s); a sequence needs at least 2" in capsys.readouterr().err
    assert not out.exists()


def test_scene_too_short_for_eval_sampler(tmp_path, capsys):
    scene_dir = save_scene_folder(translation_scene(T=10), tmp_path / "plane")
    out = tmp_path / "t.h5"
    assert run_main("--scene", scene_dir, "--out", out, "--frames", "sampled", "--split", "eval") == 2
    assert "cannot sample eval sequences" in capsys.readouterr().err
    assert leftovers(tmp_path) == ["plane"]
