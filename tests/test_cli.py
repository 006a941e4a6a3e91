"""The `gasp` command and what a newcomer sees from bad input: one line, exit 2, nothing left behind."""
import os
import subprocess
import sys

import pytest

from gasp_cli.main import COMMANDS, main
from tests.conftest import ROOT


def test_gasp_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, entry in COMMANDS.items():
        assert name in out
        for sub in entry if isinstance(entry, dict) else ():
            assert sub in out
    assert main([]) == 2                                       # no command: the list, and a usage exit code


def test_the_installed_command_runs_a_subcommand():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    gasp = [sys.executable, "-m", "gasp_cli.main"]
    r = subprocess.run([*gasp, "convert", "--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and "tapvid" in r.stdout and "colmap" in r.stdout
    r = subprocess.run([*gasp, "convert", "tapvid", "--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("usage: gasp convert tapvid")
    r = subprocess.run([*gasp, "probez"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and "unknown command 'probez'" in r.stderr


def _one_line(capsys, rc):
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err                   # no empty progress bar before the error
    return lines[0]


@pytest.mark.parametrize("module, args", [
    ("convert_tapvid", ["--pickle", "{tmp}/missing.pkl"]),
    ("convert_tapvid", ["--pickle", "{tmp}/bad.pkl"]),
    ("convert_dl3dv", ["--scene", "{tmp}", "--depth", "{tmp}"]),
    ("convert_colmap", ["--colmap", "{tmp}"]),
    ("convert_vggt", ["--predictions", "{tmp}/missing.npz", "--images", "{tmp}"]),
    ("build_tracks", ["--scene", "{tmp}"]),
])
def test_a_converter_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, module, args):
    import importlib

    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    out = tmp_path / "out.h5"
    rc = importlib.import_module(f"gasp_cli.{module}").main([a.format(tmp=tmp_path) for a in args] + ["--out", str(out)])
    line = _one_line(capsys, rc)
    assert line.startswith(f"{module}: error: ") and str(tmp_path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pkl"]


@pytest.mark.parametrize("kind, converter", [
    ("pickle", "gasp convert tapvid --pickle"), ("npz", "gasp convert vggt --predictions"),
    ("colmap", "gasp convert colmap --colmap"), ("dl3dv", "gasp convert dl3dv --scene"),
    ("rgbd", "gasp convert rgbd --scene"), ("json", "data.instruct"), ("text", "not an HDF5 file"),
])
def test_a_download_given_as_tracks_is_answered_with_its_converter(tmp_path, kind, converter):
    """Friction item 4: the reader names the converter for what it was given, whoever reads (probe or trainer)."""
    import pickle

    import numpy as np

    from tracks.io import TrackFormatError, TrackReader

    path = tmp_path / "thing"
    if kind == "pickle":
        path = tmp_path / "tapvid_davis.pkl"
        path.write_bytes(pickle.dumps({"v": {"points": np.zeros(2)}}))
    elif kind == "npz":
        path = tmp_path / "predictions.npz"
        np.savez(path, depth=np.zeros(2))
    elif kind == "json":
        path = tmp_path / "instruct.json"
        path.write_text("[]")
    elif kind == "text":
        path.write_text("hello")
    else:
        marker = {"colmap": "sparse/0/cameras.bin", "dl3dv": "nerfstudio/transforms.json", "rgbd": "cameras.json"}[kind]
        (path / marker).parent.mkdir(parents=True)
        (path / marker).write_bytes(b"")
        (path / "frames").mkdir()
    with pytest.raises(TrackFormatError, match=converter.replace("-", "\\-")):
        TrackReader(path)


@pytest.mark.slow
def test_out_names_the_training_run_folder(tmp_path):
    from gasp_cli.train import main as train

    assert train(["--out", str(tmp_path / "run"), "optim.max_steps=1", "run.eval_sequences=0", "loss.lm=false",
                  "data.synthetic_scenes=2", "data.num_workers=0"]) == 0
    assert (tmp_path / "run" / "checkpoint-1" / "adapter" / "adapter_config.json").is_file()
    assert "out: " + str(tmp_path / "run") in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("module, args", [
    ("gasp_cli.compare", ["--model", "tiny-qwen2.5-vl", "--tracks", "{tmp}/bad.pkl", "--adapter", "a=none",
                          "--out", "{tmp}/o"]),
    ("gasp_cli.compare", ["--model", "nope-model", "--tracks", "{tmp}/bad.pkl", "--adapter", "a=none",
                          "--out", "{tmp}/o"]),
    ("gasp_cli.demo", ["--checkpoints", "{tmp}/none", "--out", "{tmp}/o"]),
    ("plots.figure3", ["{tmp}/none", "--out", "{tmp}/o/f.png"]),
    ("plots.pck_depth", ["{tmp}/none", "--out", "{tmp}/o/g.png"]),
])
def test_probe_and_plot_commands_refuse_in_one_line_before_any_output(tmp_path, capsys, module, args):
    import importlib
    import pickle

    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"v": 1}))
    rc = importlib.import_module(module).main([a.format(tmp=tmp_path) for a in args])
    out, err = capsys.readouterr()
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "error:" in lines[0], out + err
    assert not (tmp_path / "o").exists()


def test_the_probe_loads_its_settings_like_the_trainer(tmp_path, capsys):
    """One typed loader (gasp/config.py): defaults, then --config YAML, then KEY=VALUE, then the flags given;
    unknown keys and wrong types are refused; without --config the flags behave as before."""
    from gasp_cli.probe import parse_args
    from probes.config import ProbeConfig

    preset = ROOT / "configs" / "probe" / "peer_conventions.yaml"
    c = parse_args(["--config", str(preset)])
    assert (c.match, c.bidirectional, c.extra_deltas) == ("softmax-mean", True, (1.0, 4.0))
    c = parse_args(["--config", str(preset), "--delta", "3", "explore_sequences=0", "size=[224,224]"])
    assert (c.delta, c.extra_deltas, c.explore_sequences, c.size) == (3.0, (), 0, (224, 224))
    assert c.match == "softmax-mean" and isinstance(c, ProbeConfig)
    assert parse_args(["--delta", "1,2"]).extra_deltas == (2.0,)
    for bad, said in ((["no_such=1"], "unknown config key 'no_such'"), (["delta=abc"], "delta must be float"),
                      (["heads=per-head"], "needs heads: mean")):
        with pytest.raises(SystemExit) as e:
            parse_args(["--config", str(preset), *bad])
        assert e.value.code == 2 and said in capsys.readouterr().err
