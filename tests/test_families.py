"""Per-family end to end on the tiny models: the probe CLI writes results, a 10-step training run's
adapter loads with stock peft. (Q/K vs eager attention, token mapping and preprocessing are in
test_hooks.py, test_adapters.py and test_preprocess.py, parametrized over every tiny model.)

Each case calls the entry point's `main(argv)` in this process (the CLI code path without a
second interpreter start-up): about 5-9 s each on 2 CPU cores.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import ROOT

# (tiny model, synthetic frame size in px: the vision tower's square input)
FAMILIES = [("tiny-llava", 112), ("tiny-smolvlm", 112)]


def _run(script, *args):
    spec = importlib.util.spec_from_file_location(f"_entry_{script.replace('/', '_')[:-3]}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(list(args)) == 0, f"{script} {' '.join(args)} failed"


@pytest.mark.parametrize("name,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_probe_cli_writes_one_entry_per_layer(tmp_path, name, size):
    out = tmp_path / "probe"
    _run("probes/pck.py", "--model", name, "--max-sequences", "2", "--synthetic-scenes", "2",
         "--synthetic-size", str(size), "--out", str(out))
    res = json.loads((out / "results.json").read_text())
    n_layers = 4
    assert res["model"] == name and res["layers"] == list(range(n_layers))
    for key in ("pck_mean", "pck_std", "rho"):
        assert len(res[key]) == n_layers
    assert all(0 <= v <= 1 for v in res["pck_mean"]) and res["num_sequences"] == 2


@pytest.mark.parametrize("name,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_ten_step_training_adapter_loads_with_stock_peft(tmp_path, name, size):
    from peft import PeftModel

    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny

    out = tmp_path / "train"
    _run("scripts/train_gasp.py", f"model.name={name}", f"model.size=[{size},{size}]", "optim.max_steps=10",
         "loss.lm=false", "run.eval_sequences=0", "run.eval_every=0", "run.save_every=0",
         "data.synthetic_scenes=2", "heads.init=svd", f"run.out={out}")
    adapter_dir = out / "checkpoint-10" / "adapter"
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base, tok = build_tiny(name, seed=0)
    adapter = get_adapter(base)
    assert cfg["target_modules"] == adapter.lora_target_modules(base)
    frames = torch.randint(0, 256, (2, size, size, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    inputs, _ = adapter.prepare_inputs(frames.numpy(), processor_or_tokenizer=tok, prompt="what moves")
    with torch.no_grad():
        plain = base(**inputs).logits
        stock = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        got = stock(**inputs).logits
    wrapped = [n for n, m in stock.named_modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)]
    in_llm = {id(m) for m in adapter.decoder_layers(stock).modules()}
    assert len(wrapped) == 4 * 7 and all(id(stock.get_submodule(n)) in in_llm for n in wrapped)  # the LLM only
    assert (got - plain).abs().max() > 1e-5                     # the trained LoRA changes the model
    assert (out / "checkpoint-10" / "heads" / "heads.safetensors").is_file()
