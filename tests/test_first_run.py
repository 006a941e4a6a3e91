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
def test_a_bad_override_under_accelerate_launch_ends_the_output(override, message):
    r = _launch(override)
    assert r.returncode != 0
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error:") and message in last, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "CalledProcessError" not in r.stderr
    assert "had defaults used instead" not in r.stderr + r.stdout


def test_tiny_training_under_the_shipped_accelerate_config(tmp_path):
    r = _launch(f"run.out={tmp_path}", "optim.max_steps=6", "run.eval_every=3", "data.synthetic_scenes=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "had defaults used instead" not in out
    evals = re.findall(r"eval at step \d+: (.*)", out)
    assert len(evals) == 2 and all(re.fullmatch(r"peak PCK@2 \d\.\d{3} at layer \d+( \(rho [+-]\d\.\d\d\))?", e)
                                   for e in evals), evals


def test_eval_summary_rounds():
    from probes.train_eval import eval_summary

    line = {"pck_peak": 0.6076170510132775, "peak_layer": 3, "pck_mean": [0.1, 0.2, 0.3, 0.6076170510132775]}
    assert eval_summary(line, [None, 0.0, 0.1, 0.123456]) == "peak PCK@2 0.608 at layer 3 (rho +0.12)"
    assert eval_summary({"pck_peak": None}, []) == "no valid prediction"
