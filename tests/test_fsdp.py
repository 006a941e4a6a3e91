"""FSDP2 (run.fsdp=true) on 2 CPU processes (gloo) against DDP: same adapter, exact resume, stock peft loads it.

accelerate's FSDP plugin does not run on CPU (a CPU launch is plain multi-CPU data parallel), so
this tests the project's own FSDP2 path, gasp/train/fsdp.py, under `accelerate launch --multi_gpu`.
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

# DDP all-reduces gradients, FSDP2 reduce-scatters them: float sums in another order, which AdamW
# amplifies where a gradient component is near zero (it divides by sqrt(v)). Measured after 4 steps on the
# tiny model: 2.1e-8 (LoRA) and 1.2e-7 (heads) on the scenes this CPU renders; 3.4e-8 and 1.04e-6 on the same
# scenes rendered under OpenBLAS's Haswell kernel (an AVX2 CPU; tracks/content.py). 1e-5 leaves 10x room and
# stays far below one step's movement (the heads' lr x warm-up factor, about 1e-3), so a lost or doubled shard
# still fails.
TOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fsdp")
    make_synthetic_file(d / "train.h5", 4, seed=1, config=SyntheticSceneConfig(height=112, width=112, num_frames=12),
                        grid=4, split="train")
    make_synthetic_file(d / "eval.h5", 1, seed=2, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=4, split="eval")

    def launch(out, *extra):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(free_port()),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-q",
               str(ROOT / "scripts" / "train_gasp.py"), f"data.tracks={d / 'train.h5'}",
               f"data.tracks_eval={d / 'eval.h5'}", f"run.out={out}", "loss.lm=false", "data.min_frames=3",
               "data.max_frames=5", "optim.max_steps=4", "run.save_every=2", "run.eval_every=0",
               "run.eval_sequences=1", "lora.dropout=0.1", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]

    launch(d / "ddp", "run.fsdp=false")
    launch(d / "fsdp", "run.fsdp=true")
    launch(d / "resumed", "run.fsdp=true", "--resume", str(d / "fsdp" / "checkpoint-2"))
    return d


@pytest.mark.slow
@pytest.mark.parametrize("part", ["adapter", "heads"])
def test_fsdp_matches_ddp(runs, part):
    a, b = _weights(runs / "ddp" / "checkpoint-4", part), _weights(runs / "fsdp" / "checkpoint-4", part)
    assert a.keys() == b.keys() and len(a) > 0
    assert all(a[k].shape == b[k].shape for k in a)                   # gathered: whole tensors, not shards
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= TOL, worst
    if part == "adapter":                                             # it trained: LoRA B starts at zero
        assert any(b[k].abs().max() > 0 for k in b if "lora_B" in k)
    ma, mb = _metrics(runs / "ddp"), _metrics(runs / "fsdp")
    assert [r["loss"] for r in ma] == pytest.approx([r["loss"] for r in mb], abs=1e-5)


@pytest.mark.slow
def test_fsdp_resume_is_exact(runs):
    assert _metrics(runs / "resumed") == _metrics(runs / "fsdp")[2:]          # steps 3 and 4, exactly
    a, b = _weights(runs / "fsdp" / "checkpoint-4", "adapter"), _weights(runs / "resumed" / "checkpoint-4", "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(runs / "fsdp" / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    names = list(state["optimizer"]["state"])                          # the whole optimizer state, by name
    assert all(isinstance(n, str) for n in names)
    assert any(".lora_" in n for n in names) and any(n.startswith("heads.") for n in names)
    assert all(v["exp_avg"].shape == v["exp_avg_sq"].shape for v in state["optimizer"]["state"].values())


@pytest.mark.slow
def test_fsdp_adapter_loads_with_stock_peft_and_evaluates(runs):
    from peft import PeftModel

    from gasp.models import load_model

    base, _, _ = load_model("tiny-qwen2.5-vl")
    ck = runs / "fsdp" / "checkpoint-4" / "adapter"
    model = PeftModel.from_pretrained(base, str(ck))
    saved = _weights(runs / "fsdp" / "checkpoint-4", "adapter")
    got = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(got) == len(saved)
    for k, v in saved.items():                                       # saved names lack the adapter name
        match = [g for g in got if g.replace(".default", "") == "base_model.model." + k.removeprefix("base_model.model.")]
        assert match and torch.equal(got[match[0]], v), k
    res = json.loads((runs / "fsdp" / "results.json").read_text())  # evaluation ran under FSDP too
    assert res["num_sequences"] == 1 and len(res["pck_mean"]) == 4
