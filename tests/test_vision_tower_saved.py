"""A run that trains the vision tower in full (model.freeze_vision: false) keeps it: the checkpoint carries it
beside the peft adapter (gasp_vision_tower.safetensors), resume restores it, and the probe and the export
load it (gasp/models/loading.py: apply_lora)."""
import json

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from gasp_cli.train import main as train

    d = tmp_path_factory.mktemp("vision")
    common = ["optim.max_steps=2", "run.save_every=1", "run.eval_sequences=0", "data.synthetic_scenes=2",
              "loss.lm=false", "data.num_workers=0", "model.freeze_vision=false", f"data.cache={d / 'data'}"]
    assert train([f"run.out={d / 'full'}", *common]) == 0
    assert train(["--resume", str(d / "full" / "checkpoint-1"), f"run.out={d / 'resumed'}", *common]) == 0
    return d


def _tower(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter" / "gasp_vision_tower.safetensors"))


def test_the_trained_tower_is_saved_and_resume_restores_it(runs):
    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny

    base, _ = build_tiny("tiny-qwen2.5-vl")
    start = get_adapter(base).vision_tower(base).state_dict()
    saved = _tower(runs / "full" / "checkpoint-2")
    assert saved.keys() == start.keys()
    assert max(float((saved[k] - start[k]).abs().max()) for k in saved) > 1e-6          # training moved it
    metrics = lambda r: [json.loads(ln) for ln in (runs / r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert metrics("resumed") == metrics("full")[1:]            # step 2 from checkpoint-1, exactly as uninterrupted
    again = _tower(runs / "resumed" / "checkpoint-2")
    assert all(torch.equal(saved[k], again[k]) for k in saved)


def test_the_probe_and_the_export_load_the_trained_tower(runs, tmp_path):
    from gasp.adapters import get_adapter
    from gasp.models.loading import load_model
    from gasp_cli.export import main as export

    ck = runs / "full" / "checkpoint-2"
    model, _, adapter = load_model("tiny-qwen2.5-vl", adapter=str(ck / "adapter"))
    saved = _tower(ck)
    got = adapter.vision_tower(model).state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    assert export([str(ck), "--out", str(tmp_path / "x"), "--adapter-only"]) == 2         # peft cannot carry it
    assert export([str(ck), "--out", str(tmp_path / "m")]) == 0
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "m", local_files_only=True)
    mt = get_adapter(merged).vision_tower(merged).state_dict()
    assert all(torch.equal(mt[k], saved[k]) for k in saved)
    assert "vision tower | trained in full" in (tmp_path / "m" / "README.md").read_text()
