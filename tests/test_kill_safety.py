"""SIGKILL mid-run, then rerun or resume: identical results and no corrupt file (issue 12); pickle safety."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _kill_when(cmd: list[str], ready, timeout: float = 300) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; fail if it ends first."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not ready():
            if p.poll() is not None:
                pytest.fail(f"{cmd[1]} ended (rc {p.returncode}) before it could be killed: "
                            f"{p.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"{cmd[1]} never reached the kill point")
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


# ---- the probe -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "eval.h5"
    make_synthetic_file(path, 10, seed=7, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=8, split="eval")
    return path


def _probe_arrays(out: Path) -> dict:
    with h5py.File(out / "results.h5", "r") as f:
        return {k: {d: f[k][d][()] for d in f[k]} for k in f}


@pytest.mark.slow
def test_probe_killed_mid_run_reruns_to_identical_results(tmp_path, tracks):
    pck = [sys.executable, str(ROOT / "probes" / "pck.py"), "--tracks", str(tracks)]
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run([*pck, "--out", str(full)])
    _kill_when([*pck, "--out", str(cut)], lambda: len(list((cut / "parts").glob("*.h5"))) >= 3)
    # what the kill left: whole part files only (any temporary one is hidden and never read)
    parts = sorted((cut / "parts").glob("*.h5"))
    assert 3 <= len(parts) < 10 and not (cut / "results.json").exists()
    for p in parts:
        with h5py.File(p, "r") as f:
            assert len(f) == 1
    _run([*pck, "--out", str(cut)])
    assert not (cut / "parts").exists()
    a, b = json.loads((full / "results.json").read_text()), json.loads((cut / "results.json").read_text())
    for k in ("pck_mean", "pck_std", "rho", "dt_pck", "references", "num_points", "sequences", "per_sequence"):
        assert a[k] == b[k], k
    fa, fb = _probe_arrays(full), _probe_arrays(cut)
    assert fa.keys() == fb.keys()
    for key in fa:
        for d in fa[key]:
            assert np.array_equal(fa[key][d], fb[key][d]), (key, d)


# ---- the trainer -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_tracks(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    make_synthetic_file(d / "train.h5", 4, seed=1, config=SyntheticSceneConfig(height=112, width=112, num_frames=12),
                        grid=4, split="train")
    return d / "train.h5"


@pytest.mark.slow
def test_trainer_killed_between_checkpoints_resumes_to_identical_results(tmp_path, train_tracks):
    def cmd(out, *extra):
        return [sys.executable, str(ROOT / "scripts" / "train_gasp.py"), *extra, f"data.tracks={train_tracks}",
                f"run.out={out}", "loss.lm=false", "data.min_frames=3", "data.max_frames=4", "optim.max_steps=8",
                "run.save_every=2", "run.eval_every=0", "run.eval_sequences=0", "lora.dropout=0.1"]

    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(cmd(full))

    def logged_past(step):
        m = cut / "metrics.jsonl"
        return m.is_file() and sum(1 for ln in m.read_text().splitlines() if ln.endswith("}")) >= step

    _kill_when(cmd(cut), lambda: logged_past(5))           # after checkpoint-4, before checkpoint-6 (mostly)
    done = sorted(int(p.name.split("-")[1]) for p in cut.glob("checkpoint-*"))
    assert done and done[-1] < 8
    for step in done:                                          # every visible checkpoint is whole
        ck = cut / f"checkpoint-{step}"
        assert (ck / "trainer_state.pt").is_file() and (ck / "adapter" / "adapter_model.safetensors").is_file()
    _run(cmd(cut, "--resume", str(cut / f"checkpoint-{done[-1]}")))
    assert not list(cut.glob(".checkpoint-*.tmp-*"))

    def metrics(out):
        return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]

    assert metrics(cut) == metrics(full)
    from safetensors.torch import load_file

    wa = load_file(str(full / "checkpoint-8" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(cut / "checkpoint-8" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- pickles -----------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_trainer_state_with_a_malicious_pickle_is_refused(tmp_path):
    from gasp.train.checkpoint import read_state

    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "micro": 1, "optimizer": _Payload(marker)}, tmp_path / "trainer_state.pt")
    with pytest.raises(ValueError, match="refused to load.*posix.system"):
        read_state(tmp_path / "trainer_state.pt")
    assert not marker.exists()


def test_trainer_state_round_trips_rng_with_weights_only(tmp_path):
    import random

    from gasp.train import checkpoint as ck

    np.random.seed(3), random.seed(4), torch.manual_seed(5)
    np.random.normal()                                             # a cached Gaussian is part of the state
    torch.save({"rng": [ck.rng_state()]}, tmp_path / "s.pt")
    expect = (np.random.rand(4), random.random(), torch.rand(3))
    ck.set_rng_state(ck.read_state(tmp_path / "s.pt")["rng"][0])
    got = (np.random.rand(4), random.random(), torch.rand(3))
    assert np.array_equal(expect[0], got[0]) and expect[1] == got[1] and torch.equal(expect[2], got[2])
