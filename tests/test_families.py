"""Per-family end to end: the probe CLI and a 10-step training run on each family's tiny model.

Each family is one entry of FAMILY_CASES (its tiny name, a frame size its tokens divide, and the
decoder layers the probe and the heads sit on); every test is parametrized over it.
"""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# name -> size: frame side in px (a multiple of the family's token size); attn: softmax-attention
# layers (probed, heads); linear: linear-attention layers (skipped, marked in results.json)
FAMILY_CASES = {
    "tiny-qwen3.5": dict(size=128, attn=[3], linear=[0, 1, 2]),    # 32-px tokens, layer_types L L L F
    "tiny-internvl": dict(size=112, attn=[0, 1, 2, 3], linear=[]),  # 112-px square view, 28-px tokens
    "tiny-gemma3": dict(size=112, attn=[0, 1, 2, 3], linear=[]),    # sliding and global layers alternate
    "tiny-paligemma": dict(size=112, attn=[0, 1, 2, 3], linear=[]),
    "tiny-llava": dict(size=112, attn=[0, 1, 2, 3], linear=[]),
    "tiny-smolvlm": dict(size=112, attn=[0, 1, 2, 3], linear=[]),
}


def _script(name: str):
    return importlib.import_module(f"gasp_cli.{ {'train_gasp': 'train'}.get(name, name) }")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_probe_cli_writes_one_entry_per_probed_layer(tmp_path, name):
    from gasp_cli import probe as pck

    case = FAMILY_CASES[name]
    out = tmp_path / "probe"
    assert pck.main(["--model", name, "--max-sequences", "2", "--synthetic-scenes", "2",
                     "--synthetic-size", str(case["size"]), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["layers"] == case["attn"] and res["layer_kinds"] == ["full"] * len(case["attn"])
    assert res["linear_attention_layers"] == case["linear"]
    assert (res["linear_attention_note"] is None) == (not case["linear"])
    for key in ("pck_mean", "pck_std", "rho", "dt_pck"):
        assert len(res[key]) == len(res["layers"]), key
    assert res["num_sequences"] == 2 and all(v is not None for v in res["pck_mean"])
    assert (out / "figure3.png").is_file()


@pytest.mark.parametrize("name", [n for n, c in FAMILY_CASES.items() if c["linear"]])  # hybrid LLMs only
def test_linear_attention_layers_are_refused_by_name(name):
    from gasp.adapters import get_adapter
    from gasp.capture.qk import capture_qk
    from gasp.models import build_tiny
    from probes.runner import ProbeError, parse_layers

    case = FAMILY_CASES[name]
    model, _ = build_tiny(name)
    kinds = get_adapter(model).layer_kinds(model)
    assert [i for i, k in enumerate(kinds) if k == "linear"] == case["linear"]
    assert parse_layers("all", len(kinds), kinds) == case["attn"]
    with pytest.raises(ProbeError, match="linear-attention"):
        parse_layers(str(case["linear"][0]), len(kinds), kinds)
    with pytest.raises(ValueError, match="no softmax attention"), capture_qk(model, layers=case["linear"][:1]):
        pass


def test_qwen3_5_heads_read_the_query_rows_of_the_gated_q_proj():
    """Qwen3.5's q_proj emits (query, gate) per head; base_q_proj keeps the query, what q_norm/RoPE see."""
    from gasp.heads import CorrespondenceHeads, base_q_proj
    from gasp.models import build_tiny

    model, _ = build_tiny("tiny-qwen3.5")
    layer = model.model.language_model.layers[3]
    attn = layer.self_attn
    x = torch.randn(1, 5, model.config.text_config.hidden_size)
    full = attn.q_proj(x)                                                    # (1, 5, H*2D)
    assert full.shape[-1] == 2 * model.config.text_config.num_attention_heads * attn.head_dim
    query, _gate = torch.chunk(full.view(1, 5, -1, 2 * attn.head_dim), 2, dim=-1)  # as Qwen3_5Attention.forward
    q = base_q_proj(layer)
    torch.testing.assert_close(q(x), query.reshape(1, 5, -1), rtol=0, atol=1e-6)
    heads = CorrespondenceHeads.from_model(model, hidden=256, d_emb=32)
    assert heads.layers == [3]


def test_qwen3_5_partial_rotary_leaves_three_quarters_of_the_head_unrotated():
    """Pre- and post-RoPE Q/K agree outside the rotated first quarter (partial_rotary_factor 1/4)."""
    from gasp.adapters import get_adapter
    from gasp.capture.qk import capture_qk
    from gasp.models import build_tiny

    model, tok = build_tiny("tiny-qwen3.5")
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    inputs, layout = get_adapter(model).prepare_inputs(frames, processor_or_tokenizer=tok, prompt="what")
    recs = {}
    for rope in ("post", "pre"):
        with torch.no_grad(), capture_qk(model, positions=layout.flat_positions, rope=rope) as recs[rope]:
            model(**inputs)
    rot = int(model.config.text_config.head_dim * model.config.text_config.rope_parameters["partial_rotary_factor"])
    for a, b in ((recs["pre"].q[3], recs["post"].q[3]), (recs["pre"].k[3], recs["post"].k[3])):
        assert torch.equal(a[..., rot:], b[..., rot:])
        assert (a[..., :rot] - b[..., :rot]).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_ten_step_training_and_stock_peft_load(tmp_path, name):
    from peft import PeftModel
    from safetensors.torch import load_file

    from gasp.models import build_tiny

    case = FAMILY_CASES[name]
    out = tmp_path / "run"
    s = case["size"]
    assert _script("train_gasp").main([
        f"model.name={name}", "optim.max_steps=10", "loss.lm=false", "run.eval_sequences=0",
        "data.synthetic_scenes=2", f"data.synthetic_size={s}", f"model.size=[{s},{s}]", f"run.out={out}",
        "run.save_every=0"]) == 0
    ckpt = out / "checkpoint-10"
    heads_cfg = json.loads((ckpt / "heads" / "config.json").read_text())
    assert heads_cfg["layers"] == case["attn"]                      # heads only where q_proj exists
    base, _ = build_tiny(name, seed=0)
    stock = PeftModel.from_pretrained(base, str(ckpt / "adapter"))
    lora = {n: p for n, p in stock.named_parameters() if "lora_" in n}
    assert lora and all(re.search(r"\.(language|text)_model\.layers\.", n) for n in lora)   # text_model: SmolVLM
    # the saved adapter + heads are the trained weights: their sum is the run's own checksum
    summary = json.loads((out / "train_summary.json").read_text())
    heads = load_file(str(ckpt / "heads" / "heads.safetensors"))
    total = sum(p.double().sum() for p in lora.values()) + sum(t.double().sum() for t in heads.values())
    assert np.isclose(float(total), summary["weights_checksum"][0], rtol=0, atol=1e-6)
    assert any(p.abs().max() > 0 for n, p in lora.items() if "lora_B" in n)   # B moved off its zero init
