"""PCK by camera rotation (probes/viewpoint.py): angles against scipy's rotation magnitude, bins against a
literal loop, the camera check against a swapped pose convention, and the probe's results.json block."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from probes import viewpoint as vp
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file


def _poses(rotvecs_deg, rng):
    T = np.tile(np.eye(4), (len(rotvecs_deg), 1, 1))
    T[:, :3, :3] = Rotation.from_rotvec(np.radians(rotvecs_deg)).as_matrix()
    T[:, :3, 3] = rng.normal(size=(len(rotvecs_deg), 3))
    return T


def test_relative_angles_are_the_rotation_between_the_cameras():
    rng = np.random.default_rng(0)
    rv = rng.normal(size=(7, 3)) * 40                                      # arbitrary rotations, degrees
    T = _poses(rv, rng)
    for q in (0, 3):
        want = [np.degrees(Rotation.from_matrix(T[f, :3, :3] @ T[q, :3, :3].T).magnitude()) for f in range(7)]
        np.testing.assert_allclose(vp.relative_angles(T, q), want, atol=1e-6)
    T2 = _poses([[0, 0, 10], [0, 35, 10]], rng)                             # a 35-degree turn about y, then the same roll
    known = Rotation.from_rotvec(np.radians([0, 35, 10])).as_matrix() @ Rotation.from_rotvec(np.radians([0, 0, 10])).as_matrix().T
    assert vp.relative_angles(T2, 0)[1] == pytest.approx(np.degrees(Rotation.from_matrix(known).magnitude()), abs=1e-9)


def test_bins_count_like_a_literal_loop():
    rng = np.random.default_rng(1)
    L, F, N = 3, 9, 11
    correct, valid = rng.random((L, F, N)) < 0.4, rng.random((F, N)) < 0.7
    angles = np.array([0, 3, 14.99, 15, 29, 30, 59.9, 60, 180.0])
    edges = vp.DEFAULT_EDGES
    hits, total = vp.bin_counts(correct, valid, angles, edges)
    for j in range(4):
        lo, hi = edges[j], edges[j + 1]
        rows = [f for f in range(F) if lo <= angles[f] < hi or (j == 3 and angles[f] == hi)]
        assert total[j] == sum(valid[f].sum() for f in rows)
        for li in range(L):
            assert hits[li, j] == sum((correct[li, f] & valid[f]).sum() for f in rows)


def test_cameras_that_do_not_reproject_their_tracks_are_not_binned(tmp_path):
    """The geodesic angle survives a swapped convention (inverting both poses keeps it), so the check that
    catches one is the reprojection: given world-from-camera as camera-from-world, no sequence is binned."""
    from tracks.io import TrackReader

    path = tmp_path / "s.h5"
    make_synthetic_file(path, 1, seed=3, config=SyntheticSceneConfig(height=112, width=112,
                                                                                          num_frames=12), split="train")
    seq = TrackReader(path)[0]
    fids = np.arange(seq.num_frames)
    angles, why = vp.sequence_angles(seq, fids, 0)
    assert why == "" and angles.shape == (seq.num_frames - 1,) and angles.max() > 1.0
    np.testing.assert_allclose(angles, np.delete(vp.relative_angles(seq.cam_from_world, 0), 0), atol=1e-4)
    swapped = np.linalg.inv(seq.cam_from_world)                              # world-from-camera, mislabelled
    assert vp.relative_angles(swapped, 0) == pytest.approx(vp.relative_angles(seq.cam_from_world, 0), abs=1e-6)
    seq.cam_from_world = swapped
    angles, why = vp.sequence_angles(seq, fids, 0)
    assert angles is None and "do not reproject the tracks" in why
    seq.cam_from_world = None
    assert vp.sequence_angles(seq, fids, 0) == (None, "no cameras")


def test_summary_pools_predictions_per_bin_and_names_what_was_not_binned():
    rng = np.random.default_rng(2)
    recs = []
    for s in range(3):
        recs.append({"correct": rng.random((2, 4, 5)) < 0.5, "valid": np.ones((4, 5), bool),
                     "angles": np.array([5.0, 20.0, 40.0, 90.0]), "why": "", "key": f"s{s}"})
    recs.append({"correct": np.ones((2, 4, 5), bool), "valid": np.ones((4, 5), bool), "angles": None,
                 "why": "no cameras", "key": "tapvid"})
    out = vp.summarize(recs, vp.DEFAULT_EDGES)
    assert out["num_sequences"] == 3 and out["count"] == [15, 15, 15, 15] and out["not_binned"] == {"no cameras": ["tapvid"]}
    for j in range(4):
        want = np.mean([r["correct"][:, j].mean(-1) for r in recs[:3]], 0)    # equal counts: pooled = mean
        np.testing.assert_allclose([row[j] for row in out["pck"]], want)
    assert [row[0] for row in out["y"]] == [1.0, 1.0]
    assert "reason" in vp.summarize(recs[3:], vp.DEFAULT_EDGES) and "pck" not in vp.summarize(recs[3:], vp.DEFAULT_EDGES)


def test_the_probe_reports_pck_by_viewpoint(tmp_path, capsys):
    from gasp_cli.probe import main

    path = tmp_path / "s.h5"
    make_synthetic_file(path, 2, seed=4, config=SyntheticSceneConfig(height=112, width=112,
                                                                                          num_frames=26), split="eval")
    out = tmp_path / "probe"
    assert main(["--tracks", str(path), "--out", str(out), "--layers", "0,2", "--viewpoint-bins", "0,2,5,180",
                 "--synthetic-size", "112"]) == 0
    res = json.loads((out / "results.json").read_text())
    v = res["viewpoint"]
    assert v["bins_deg"] == [0.0, 2.0, 5.0, 180.0] and v["num_sequences"] == 2 and len(v["pck"]) == 2
    assert sum(v["count"]) == res["num_predictions"]                       # every valid prediction lands in a bin
    said = capsys.readouterr().out
    assert "by camera rotation at layer" in said and "uniform" in said.split("by camera rotation")[1]
