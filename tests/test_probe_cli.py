"""probes/pck.py end to end: outputs, resume, 2-process sharding and bad input."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import ROOT, free_port
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

PCK = str(ROOT / "probes" / "pck.py")
NUMBERS = ("pck_mean", "pck_std", "rho", "dt_pck", "dt_norm", "num_sequences", "num_points", "sequences")


def run(*args, env=None, check=True):
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    p = subprocess.run([sys.executable, PCK, *args], capture_output=True, text=True, env=e, cwd=ROOT, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"pck.py failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def run_main(capsys, *args) -> tuple[int, str, str]:
    """probes/pck.py's main in this process: (exit code, stdout, stderr). The bad-input cases run here, where
    an uncaught exception fails the test as a traceback would; the end-to-end cases above run the script."""
    from gasp_cli import probe as pck

    try:
        rc = pck.main([str(a) for a in args])
    except SystemExit as e:                                      # argparse's usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tracks_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tracks") / "eval.h5"
    make_synthetic_file(path, 3, seed=5, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=8, split="eval")
    return path


@pytest.fixture(scope="module")
def full_probe(tracks_file, tmp_path_factory):
    """The default probe of every sequence of ``tracks_file``, in one process (shared, read only)."""
    out = tmp_path_factory.mktemp("full") / "run"
    run("--tracks", str(tracks_file), "--out", str(out))
    return out


def numbers(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    return {k: res[k] for k in NUMBERS}


@pytest.mark.slow
def test_embedded_default_writes_results(tmp_path):
    out = tmp_path / "run"
    p = run("--max-sequences", "2", "--synthetic-scenes", "2", "--synthetic-size", "112", "--out", str(out))
    res = json.loads((out / "results.json").read_text())
    n_layers = 4                                                 # tiny-qwen2.5-vl
    assert res["layers"] == list(range(n_layers)) and res["model"] == "tiny-qwen2.5-vl"
    for key in ("pck_mean", "pck_std", "rho"):
        assert len(res[key]) == n_layers
    assert all(0 <= v <= 1 for v in res["pck_mean"])
    assert all(v is None or -1 <= v <= 1 for v in res["rho"])
    assert np.array(res["dt_pck"], dtype=float).shape == (n_layers, 24)
    assert res["num_sequences"] == 2 and res["num_points"] == 128
    assert res["config"]["max_sequences"] == 2 and res["git_sha"] and res["gasp_version"]
    assert (out / "figure3.png").stat().st_size > 10_000 and (out / "figure3.pdf").exists()
    assert "figure3.png" in p.stdout
    refs = res["references"]                                     # the summary line reads the number against them
    assert "peak PCK@2" in p.stdout and \
        f"uniform {refs['uniform']:.3f}, same position {refs['same_position']:.3f})" in p.stdout, p.stdout


@pytest.mark.slow
def test_resume_gives_identical_results(tmp_path, tracks_file, full_probe):
    full, part = full_probe, tmp_path / "part"
    run("--tracks", str(tracks_file), "--out", str(part), "--max-sequences", "1")
    with h5py.File(part / "results.h5") as f:
        assert len(f) == 1
    p = run("--tracks", str(tracks_file), "--out", str(part))
    assert "resuming: 1 of 3" in p.stderr
    assert numbers(full) == numbers(part)


@pytest.mark.slow
def test_resume_refuses_a_different_probe(tmp_path, tracks_file, capsys):
    out = tmp_path / "run"
    run("--tracks", str(tracks_file), "--out", str(out), "--max-sequences", "1")
    rc, _, err = run_main(capsys, "--tracks", tracks_file, "--out", out, "--delta", "3")
    assert rc == 2 and "different probe" in err and "delta: 2.0 -> 3.0" in err
    with h5py.File(out / "results.h5") as f:                    # nothing mixed in
        assert len(f) == 1


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tracks_file, full_probe):
    one, two = full_probe, tmp_path / "two"
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate launcher is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--main_process_port", str(free_port()),
                        "--mixed_precision", "no", "--dynamo_backend", "no", PCK, "--tracks", str(tracks_file),
                        "--out", str(two)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "probe [1]" in p.stderr                              # the second process did work
    assert not (two / "parts").exists()                           # parts merged away
    assert numbers(one) == numbers(two)


@pytest.mark.parametrize("model, message", [
    ("no-such-model", "no-such-model"),
    ("/nonexistent/checkpoint", "/nonexistent/checkpoint"),
])
def test_bad_model(tmp_path, tracks_file, model, message, capsys):
    rc, _, err = run_main(capsys, "--model", model, "--tracks", tracks_file, "--out", tmp_path / "o")
    assert rc == 2 and message in err and not (tmp_path / "o").exists()


def test_bad_model_fails_before_rendering(tmp_path, capsys, monkeypatch):
    """Issue 12: a wrong --model used to surface after 13 s of rendering, leaving an 85 MB file in OUT."""
    cache, out = tmp_path / "cache", tmp_path / "o"
    monkeypatch.setenv("GASP_CACHE", str(cache))
    rc, _, err = run_main(capsys, "--model", "no-such-model", "--out", out)
    assert rc == 2 and "no-such-model" in err
    assert not out.exists() and not cache.exists()              # nothing rendered, nothing half-written


@pytest.mark.slow
def test_default_tracks_are_cached_outside_out(tmp_path):
    cache = tmp_path / "cache"
    args = ("--max-sequences", "1", "--synthetic-scenes", "1", "--synthetic-size", "112")
    run(*args, "--out", str(tmp_path / "a"), env={"GASP_CACHE": str(cache)})
    (cached,) = list((cache / "synthetic").glob("eval-*.h5"))
    mtime = cached.stat().st_mtime_ns
    run(*args, "--out", str(tmp_path / "b"), env={"GASP_CACHE": str(cache)})
    assert cached.stat().st_mtime_ns == mtime                      # read back, not rendered again
    for out in (tmp_path / "a", tmp_path / "b"):
        assert not list(out.glob("*.h5")) or {p.name for p in out.glob("*.h5")} == {"results.h5"}
        assert json.loads((out / "results.json").read_text())["tracks"] == str(cached)
    assert numbers(tmp_path / "a") == numbers(tmp_path / "b")


@pytest.mark.parametrize("arg, value", [("--delta", "-1"), ("--batch-size", "0"), ("--max-sequences", "0")])
def test_bad_number_names_its_argument(arg, value, capsys):
    rc, _, err = run_main(capsys, arg, value)
    assert rc == 2 and f"argument {arg}:" in err
    others = {"--delta", "--batch-size", "--max-sequences"} - {arg}
    assert not any(o in err.splitlines()[-1] for o in others)


@pytest.mark.slow
def test_match_records_agree_with_the_metrics(tmp_path, tracks_file):
    """results.h5 stores what plots/matches.py draws: predictions, similarity maps and the references."""
    import torch

    from probes import metrics
    from probes.store import read_finished
    from tracks.io import TrackReader

    out = tmp_path / "o"
    run("--tracks", str(tracks_file), "--out", str(out), "--max-sequences", "2")
    done = read_finished(out)
    res = json.loads((out / "results.json").read_text())
    with TrackReader(tracks_file) as reader:
        for key, rec in done.items():
            a = rec["arrays"]
            seq = reader[reader.sequence_keys.index(key)]
            h, w = a["grid"]
            L, Fp, N = a["pred"].shape
            assert (L, Fp, N) == a["correct"].shape and a["pred"].max() < h * w
            # correctness recomputed from the stored predictions and the tracks, independently of the probe
            others = [f for f in range(len(a["frame_ids"])) if f != a["query_grid"]]
            tok = (seq.tracks[a["frame_ids"]][others] + 0.5) / a["token_size"][::-1] - 0.5     # (F', N, 2) x, y
            pr, pc = a["pred"] // w, a["pred"] % w
            dist = np.hypot(pc - tok[None, ..., 0], pr - tok[None, ..., 1])
            assert np.array_equal(a["correct"], (dist <= 2 + 1e-6) & a["valid"][None])
            # the similarity maps' argmax is the stored prediction (ties aside) for the chosen points
            sim = a["sim"].astype(np.float32).reshape(L, Fp, len(a["sim_points"]), h * w)
            best = sim.max(-1)
            at_pred = np.take_along_axis(sim, a["pred"][:, :, a["sim_points"], None].astype(np.int64), -1)[..., 0]
            assert np.allclose(at_pred, best, atol=2e-3)           # fp16 maps
            ref = metrics.reference_pck(torch.from_numpy(seq.tracks[a["frame_ids"]]),
                                        torch.from_numpy(seq.visible[a["frame_ids"]]), int(a["query_grid"]),
                                        (int(h), int(w)), tuple(a["token_size"]))
            assert np.allclose(a["reference"], [ref["uniform"], ref["same_position"]])
    refs = np.mean([r["arrays"]["reference"] for r in done.values()], 0)
    assert res["references"] == pytest.approx(dict(zip(("uniform", "same_position"), refs)))


@pytest.mark.slow
def test_several_thresholds_and_the_peer_matching_convention(tmp_path, tracks_file, capsys):
    """--delta 1,2,4 gives one curve per threshold, each equal to a probe run at that threshold alone."""
    common = ("--tracks", str(tracks_file), "--match", "softmax-mean", "--bidirectional")
    run(*common, "--delta", "1,2,4", "--out", str(tmp_path / "all"))
    run(*common, "--delta", "4", "--out", str(tmp_path / "four"))
    res = json.loads((tmp_path / "all" / "results.json").read_text())
    four = json.loads((tmp_path / "four" / "results.json").read_text())
    assert res["delta"] == 1 and set(res["pck_at"]) == {"1", "2", "4"}
    assert res["match"] == "softmax-mean" and res["bidirectional"] is True
    assert res["pck_at"]["1"]["pck_mean"] == res["pck_mean"]
    assert res["pck_at"]["4"]["pck_mean"] == pytest.approx(four["pck_mean"])
    curves = np.array([res["pck_at"][d]["pck_mean"] for d in ("1", "2", "4")])
    assert (np.diff(curves, axis=0) >= -1e-12).all()                 # a larger threshold never scores lower
    rc, _, err = run_main(capsys, *common[:2], "--match", "softmax-mean", "--heads", "per-head")
    assert rc == 2 and "--heads mean" in err


def test_tracks_without_needed_datasets(tmp_path, tracks_file, capsys):
    bad = tmp_path / "bad.h5"
    shutil.copy(tracks_file, bad)
    with h5py.File(bad, "a") as f:
        name = f["index/sequences"][0].decode()
        del f[f"sequences/{name}/occluded"]          # required from format v2 on (track_depth is optional)
    rc, _, err = run_main(capsys, "--tracks", bad, "--out", tmp_path / "o")
    assert rc == 2 and "occluded" in err


def test_frames_too_small_for_a_token(tmp_path, capsys):
    path = tmp_path / "small.h5"
    make_synthetic_file(path, 1, seed=1, config=SyntheticSceneConfig(height=16, width=16, num_frames=26),
                        grid=2, split="eval")
    rc, _, err = run_main(capsys, "--tracks", path, "--out", tmp_path / "o", "--size", "16", "16")
    assert rc == 2 and "smaller than one" in err


@pytest.mark.slow
def test_sequence_without_visible_points_is_skipped(tmp_path, tracks_file):
    path = tmp_path / "vis.h5"
    shutil.copy(tracks_file, path)
    with h5py.File(path, "a") as f:
        name = f["index/sequences"][0].decode()
        f[f"sequences/{name}/visible"][...] = False
    out = tmp_path / "o"
    p = run("--tracks", str(path), "--out", str(out))
    res = json.loads((out / "results.json").read_text())
    assert res["num_sequences"] == 2 and len(res["skipped_sequences"]) == 1
    assert "skipped" in p.stderr


def test_adapter_for_a_different_base_model(tmp_path, tracks_file, capsys):
    from peft import LoraConfig, get_peft_model

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny

    model, _ = build_tiny("tiny-llava-next-video")
    target = get_adapter(model).lora_target_modules(model)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=target))
    peft_model.save_pretrained(tmp_path / "lora", save_embedding_layers=False)
    rc, _, err = run_main(capsys, "--tracks", tracks_file, "--adapter", tmp_path / "lora", "--out", tmp_path / "o")
    assert rc == 2 and "tiny-qwen2.5-vl" in err
    assert not (tmp_path / "o").exists()                         # nothing left behind (friction item 6)
