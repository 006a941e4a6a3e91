"""DeepSpeed ZeRO-3 and ZeRO-2 on 2 CPU processes under accelerate, against DDP (gasp/train/zero.py).

The launches use the shipped configs (configs/accelerate/deepspeed_zero{3,2}.yaml) with the process count
and precision given on the command line, as a user on this machine would. The base is a tiny model saved
to a folder, so that ZeRO-3 loads it partitioned (zero3_init_flag) from the same weights DDP loads whole:
the heads' SVD initialisation then reads gathered weights, and the per-step losses can be compared.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, free_port
from tests.conftest import run_metrics as _metrics
from tests.conftest import saved_weights as _weights
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

pytest.importorskip("deepspeed", reason="deepspeed is in the test extra; this environment was installed without it")
pytestmark = pytest.mark.slow

# ZeRO reduce-scatters gradients into flat fp32 partitions where DDP all-reduces them bucket by bucket:
# float sums in another order, which AdamW amplifies where a gradient is near zero (as for FSDP2,
# tests/test_fsdp.py). Measured after 5 steps on this CPU (AVX-512): losses within 2.4e-7 (ZeRO-3) and 4.8e-7
# (ZeRO-2); adapter 3.1e-6 and 8.6e-8, heads 5.9e-7 and 8.8e-7. 3e-5 leaves room for another CPU's kernels and
# stays below a single step's movement (AdamW moves a weight by about lr, 2e-4 at step 1), so a lost or
# doubled partition, a double-scaled loss, a step at every micro-batch or a stale gradient still fails (the
# stale ZeRO-3 gradient gasp clears moved the step-3 loss by 2.4e-4).
TOL = 3e-5
STEPS = 5


def _launch(d, out, how, *extra, check=True):
    if how == "ddp":
        engine = ["--multi_gpu"]
    else:
        engine = ["--config_file", str(how)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *engine, "--num_processes", "2",
           "--main_process_port", str(free_port()), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-q", str(ROOT / "scripts" / "train_gasp.py"), f"model.name={d / 'base'}",
           f"data.tracks={d / 'train.h5'}", f"data.tracks_eval={d / 'eval.h5'}", f"run.out={out}", "data.min_frames=3",
           "data.max_frames=5", f"optim.max_steps={STEPS}", "run.save_every=2", "run.eval_every=0",
           "run.eval_sequences=1", "optim.grad_accum=2", "data.lm_ratio=0.5", "data.num_workers=0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from gasp.models.tiny import save_tiny

    d = tmp_path_factory.mktemp("deepspeed")
    save_tiny("tiny-qwen2.5-vl", d / "base")
    make_synthetic_file(d / "train.h5", 4, seed=1, config=SyntheticSceneConfig(height=112, width=112, num_frames=12),
                        grid=4, split="train")
    make_synthetic_file(d / "eval.h5", 1, seed=2, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=4, split="eval")
    z3 = ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml"
    _launch(d, d / "ddp", "ddp")
    _launch(d, d / "zero3", z3)
    _launch(d, d / "resumed", z3, "--resume", str(d / "zero3" / "checkpoint-2"))
    _launch(d, d / "zero2", ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml")
    return d


@pytest.mark.parametrize("run,stage", [("zero3", 3), ("zero2", 2)])
def test_the_engine_is_deepspeed_and_says_so(runs, run, stage):
    summary = json.loads((runs / run / "train_summary.json").read_text())
    assert summary["engine"] == {"distributed_type": "DEEPSPEED", "zero_stage": stage, "fsdp2": False,
                                 "num_processes": 2, "prepared": "DeepSpeedEngine"}
    import yaml

    block = yaml.safe_load((runs / run / "config.yaml").read_text())["_run"]
    assert (block["distributed_type"], block["zero_stage"], block["num_processes"]) == ("DEEPSPEED", stage, 2)
    ddp = json.loads((runs / "ddp" / "train_summary.json").read_text())["engine"]
    assert ddp == {"distributed_type": "MULTI_CPU", "zero_stage": None, "fsdp2": False, "num_processes": 2,
                   "prepared": "DistributedDataParallel"}
    assert len(set(summary["weights_checksum"])) == 1                       # both processes hold the same weights


@pytest.mark.parametrize("run", ["zero3", "zero2"])
def test_losses_and_saved_weights_match_ddp(runs, run):
    ma, mb = _metrics(runs / "ddp"), _metrics(runs / run)
    assert [r["step"] for r in mb] == list(range(1, STEPS + 1))
    assert any(r["l_lm"] is not None for r in mb) and any(r["l_corr"] is not None for r in mb)   # both step kinds
    for ra, rb in zip(ma, mb):
        for k in ("loss", "l_lm", "l_corr", "l_depth", "lr"):
            assert (ra[k] is None) == (rb[k] is None), (k, ra, rb)
            if ra[k] is not None:
                assert abs(ra[k] - rb[k]) <= TOL * max(1.0, abs(ra[k])), (run, k, ra, rb)
    for part in ("adapter", "heads"):
        a, b = _weights(runs / "ddp" / f"checkpoint-{STEPS}", part), _weights(runs / run / f"checkpoint-{STEPS}", part)
        assert a.keys() == b.keys()
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst <= TOL, (run, part, worst)
    lora_b = max(float(v.abs().max()) for k, v in _weights(runs / "ddp" / f"checkpoint-{STEPS}", "adapter").items()
                 if "lora_B" in k)
    assert lora_b > 30 * TOL          # LoRA B starts at 0 and reached 3.0e-3: the comparison is not of zeros


def test_zero3_resume_continues_exactly(runs):
    assert _metrics(runs / "resumed") == _metrics(runs / "zero3")[2:]           # steps 3..5, bit for bit
    for part in ("adapter", "heads"):
        a, b = _weights(runs / "zero3" / f"checkpoint-{STEPS}", part), _weights(runs / "resumed" / f"checkpoint-{STEPS}", part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    state = torch.load(runs / "zero3" / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    assert state["engine"]["zero_stage"] == 3 and len(state["optimizer"]) == 2   # one partition per process


def test_the_zero3_adapter_loads_with_peft_and_the_probe_reads_it(runs, tmp_path):
    from peft import PeftModel

    from gasp.models.loading import load_model
    from probes.runner import ProbeConfig, run_probe

    model, _, _ = load_model(str(runs / "base"))
    ck = runs / "zero3" / f"checkpoint-{STEPS}" / "adapter"
    peft = PeftModel.from_pretrained(model, str(ck))
    got = {k: v for k, v in peft.state_dict().items() if "lora_" in k}
    saved = _weights(runs / "zero3" / f"checkpoint-{STEPS}", "adapter")
    assert len(got) == len(saved) and all(torch.equal(got[k.replace(".weight", ".default.weight")], v)
                                          for k, v in saved.items())
    res = run_probe(ProbeConfig(model=str(runs / "base"), adapter=str(ck), tracks=str(runs / "eval.h5"),
                                out=str(tmp_path / "probe"), explore_sequences=0))
    trained = json.loads((runs / "zero3" / "results.json").read_text())     # the evaluation under ZeRO-3 itself
    assert res["pck_mean"] == pytest.approx(trained["pck_mean"], abs=1e-6)


def test_a_deepspeed_setting_that_cannot_work_is_refused_before_training(runs, tmp_path):
    bad = tmp_path / "z3_nogather.yaml"
    bad.write_text((ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml").read_text()
                   .replace("zero3_save_16bit_model: true", "zero3_save_16bit_model: false"))
    r = _launch(runs, tmp_path / "out", bad, check=False)
    assert r.returncode != 0 and not (tmp_path / "out").exists()
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "zero3_save_16bit_model: true" in errors[0], r.stderr[-2000:]
    clip = tmp_path / "z3_clip.yaml"
    clip.write_text((ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml").read_text()
                    .replace("  zero_stage: 3\n", "  zero_stage: 3\n  gradient_clipping: 2.0\n"))
    r = _launch(runs, tmp_path / "out", clip, check=False)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and not (tmp_path / "out").exists()
    assert len(errors) == 1 and "gradient_clipping: 2.0, but this run uses 1.0 (optim.grad_clip)" in errors[0]


def test_a_launch_that_names_an_engine_it_does_not_get_is_refused(tmp_path):
    """accelerate's FSDP plugin needs GPUs: on CPU it would quietly train plain DDP; gasp refuses instead."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_FSDP": "true"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_gasp.py"), f"run.out={tmp_path / 'out'}",
                        "optim.max_steps=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and not (tmp_path / "out").exists()
    assert "the launch asked for accelerate's FSDP, but accelerate set up NO" in r.stderr and "run.fsdp=true" in r.stderr
