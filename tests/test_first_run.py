"""A first run without rough edges (issue 12): what a new user sees from the README's commands."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "configs" / "accelerate" / "single.yaml"), "-q"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _launch(*args):
    return subprocess.run([*ACCELERATE, str(ROOT / "scripts" / "train_gasp.py"), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("override, message", [
    ("optim.max_steps=-1", "optim.max_steps must be >= 1, got -1"),
    ("optim.no_such_key=1", "optim.no_such_key"),
])
@pytest.mark.slow
def test_a_bad_override_under_accelerate_launch_ends_the_output(override, message):
    r = _launch(override)
    assert r.returncode != 0
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error:") and message in last, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "CalledProcessError" not in r.stderr
    assert "had defaults used instead" not in r.stderr + r.stdout


@pytest.mark.slow
def test_tiny_training_under_the_shipped_accelerate_config(tmp_path):
    r = _launch(f"run.out={tmp_path}", "optim.max_steps=6", "run.eval_every=3", "data.synthetic_scenes=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "had defaults used instead" not in out
    evals = re.findall(r"eval at step (\d+): (.*)", out)
    assert [int(s) for s, _ in evals] == [0, 3, 6], evals
    refs = r"uniform \d\.\d{3}, same position \d\.\d{3}"
    num = r"peak PCK@2 \d\.\d{3} at layer \d+ over 2 sequence\(s\) \((rho [+-]\d\.\d\d; )?"
    assert re.fullmatch(num + refs + r"\)", evals[0][1]), evals[0]                  # step 0 is the untrained model
    assert all(re.fullmatch(num + refs + r", untrained \d\.\d{3}\)", e) for _, e in evals[1:]), evals


def test_summary_line_puts_the_references_beside_the_number():
    from probes.results import summary_line

    res = {"pck_mean": [0.1, None, 0.3, 0.6076170510132775], "rho": [None, None, 0.1, 0.123456], "layers": [0, 1, 2, 3],
           "num_sequences": 8, "delta": 2.0, "references": {"uniform": 0.0261, "same_position": 0.9431}}
    assert summary_line(res, {"untrained": 0.579}) == ("peak PCK@2 0.608 at layer 3 over 8 sequence(s) (rho +0.12; "
                                                       "uniform 0.026, same position 0.943, untrained 0.579)")
    assert summary_line({**res, "references": None, "rho": [None] * 4}) == \
        "peak PCK@2 0.608 at layer 3 over 8 sequence(s)"
    assert summary_line({**res, "pck_mean": [None] * 4}) == "no valid prediction"


def test_loading_the_shipped_base_says_nothing_alarming(caplog):
    """checkpoints/gasp-v3/base has a tokenizer and no processor files: one plain line, no Hub error text."""
    import logging

    from gasp.models import load_model

    with caplog.at_level(logging.INFO):
        load_model(str(ROOT / "checkpoints" / "gasp-v3" / "base"))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("huggingface.co" in m or "failed" in m for m in said), said
    assert any("has no processor files" in m for m in said), said


def _own_tracks(path):
    """A tracks file of supplied tracks, as a converter writes one (no depth, no cameras, not gasp's renderer)."""
    import numpy as np

    from tracks.types import Scene
    from tracks.writer import TrackWriter

    rng = np.random.default_rng(0)
    with TrackWriter(path) as w:
        w.add_scene(Scene(name="clip", frames=rng.integers(0, 255, (6, 56, 56, 3), dtype=np.uint8), depth=None,
                          K=None, cam_from_world=None, frame_index=np.arange(6)))
        pts = rng.uniform(5, 50, (6, 16, 2)).astype(np.float32)
        vis = np.ones((6, 16), bool)
        w.add_tracks("clip", range(6), pts, vis, ~vis, np.zeros(16, np.int64))
    return path


@pytest.mark.parametrize("case", ["model", "pickle", "own tracks with the LM loss", "missing tracks"])
def test_the_trainer_refuses_bad_input_at_once_and_leaves_nothing(tmp_path, capsys, case):
    """Friction items 3-5: a wrong model name, a TAP-Vid pickle, own tracks without instruction data: one line
    naming the key and the fix, before anything is rendered (data used to render for 12-17 s first)."""
    import pickle

    from gasp_cli.train import main

    (tmp_path / "davis.pkl").write_bytes(pickle.dumps({"v": {"points": [1.0]}}))
    out = tmp_path / "run"
    args, want = {
        "model": (["model.name=qwen2.5-vl-7bb"], "model.name=qwen2.5-vl-7bb: unknown model"),
        "pickle": ([f"data.tracks={tmp_path / 'davis.pkl'}"], "gasp convert tapvid --pickle"),
        "own tracks with the LM loss": ([f"data.tracks={_own_tracks(tmp_path / 'own.h5')}"], "loss.lm=false"),
        "missing tracks": ([f"data.tracks={tmp_path / 'nope.h5'}"], "does not exist"),
    }[case]
    assert main([*args, f"run.out={out}", "data.synthetic_scenes=2"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and want in err[0], err
    assert not out.exists()


@pytest.mark.slow
def test_own_tracks_train_with_the_lm_loss_off_and_say_where_evaluation_runs(tmp_path, caplog):
    """The README recipe for your own tracks: loss.lm=false (no instruction data), data.tracks_eval for evaluation."""
    import logging

    from gasp_cli.train import main

    own = _own_tracks(tmp_path / "own.h5")
    common = [f"data.tracks={own}", "loss.lm=false", "loss.depth=false", "optim.max_steps=2", "data.num_workers=0",
              "model.size=[56,56]", "data.grid=4", "data.min_frames=2", "data.max_frames=3", "data.radius=4"]
    with caplog.at_level(logging.INFO):
        assert main([*common, f"run.out={tmp_path / 'a'}", "run.eval_sequences=1"]) == 0
    assert "data.tracks_eval is not set, so the probe runs on 1 synthetic scenes" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main([*common, f"run.out={tmp_path / 'b'}", f"data.tracks_eval={own}", "run.eval_sequences=1"]) == 0
    assert "data.tracks_eval is not set" not in caplog.text
    assert (tmp_path / "b" / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_a_trained_adapter_is_probed_at_its_training_input_settings(tmp_path, capsys, caplog):
    """Friction item 2: the adapter records size, frames mode and fps; the probe uses them unless told otherwise,
    says so, and warns on an explicit mismatch (a 112-px adapter probed at 448 px scored chance)."""
    import json
    import logging

    from gasp_cli import probe
    from gasp_cli.train import main as train

    run = tmp_path / "run"
    assert train([f"run.out={run}", "optim.max_steps=1", "run.eval_sequences=0", "data.synthetic_scenes=2",
                  "loss.lm=false", "data.num_workers=0", "model.fps=4.0"]) == 0
    adapter = run / "checkpoint-1" / "adapter"
    rec = json.loads((adapter / "gasp_input.json").read_text())
    assert rec == {"model": "tiny-qwen2.5-vl", "size": [112, 112], "frames_mode": None, "fps": 4.0,
                   "prompt": "describe the video."}
    with caplog.at_level(logging.INFO):
        cfg = probe.parse_args(["--adapter", str(adapter)])
    assert cfg.size == (112, 112) and cfg.fps == 4.0 and "adapter's training input settings" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cfg = probe.parse_args(["--adapter", str(adapter), "--size", "448", "448"])
    assert cfg.size == (448, 448) and "--size (448, 448) differs" in caplog.text
    assert probe.parse_args([]).size is None and probe.parse_args([]).fps == 2.0     # no adapter: the defaults
