"""Per-family end to end on the tiny models: the PCK probe CLI and a 10-step training run.

Each family's case runs probes/pck.py and scripts/train_gasp.py through their `main(argv)`
(in-process, to skip a second interpreter start), then loads the trained adapter with stock
`PeftModel.from_pretrained`.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# (tiny name, --synthetic-size / model.size): the frame size each family's vision input takes.
FAMILIES = [
    ("tiny-gemma3", 112),
    ("tiny-paligemma", 112),
]


def _main(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_").removesuffix(".py"), ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("name,size", FAMILIES)
def test_pck_probe_writes_results(tmp_path, monkeypatch, name, size):
    monkeypatch.setenv("GASP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pck"
    rc = _main("probes/pck.py")(["--model", name, "--max-sequences", "2", "--synthetic-scenes", "2",
                                 "--synthetic-size", str(size), "--out", str(out)])
    assert rc in (0, None)
    res = json.loads((out / "results.json").read_text())
    from gasp.models import build_tiny

    n_layers = build_tiny(name)[0].config.get_text_config().num_hidden_layers
    assert res["layers"] == list(range(n_layers)) and len(res["pck_mean"]) == n_layers
    assert res["num_sequences"] == 2 and all(0.0 <= p <= 1.0 for p in res["pck_mean"])


@pytest.mark.parametrize("name,size", FAMILIES)
def test_ten_step_training_adapter_loads_with_stock_peft(tmp_path, name, size):
    from peft import PeftModel

    from gasp.adapters import get_adapter
    from gasp.models import build_tiny, load_model

    out = tmp_path / "run"
    rc = _main("scripts/train_gasp.py")([
        f"model.name={name}", f"model.size=[{size}, {size}]", "optim.max_steps=10", "loss.lm=false",
        "run.eval_sequences=0", "data.synthetic_scenes=2", "run.eval_every=0", "run.save_every=0",
        f"run.out={out}"])
    assert rc in (0, None)
    cfg_text = (out / "config.yaml").read_text()
    assert "init: svd" in cfg_text
    adapter_dir = out / "checkpoint-10" / "adapter"
    base, tok = build_tiny(name, seed=0)
    inputs, _ = get_adapter(base).prepare_inputs(
        np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8),
        processor_or_tokenizer=tok, prompt="what moves")
    with torch.no_grad():
        plain = base(**inputs).logits
        ours = load_model(name, adapter=str(adapter_dir), seed=0)[0](**inputs).logits
        stock = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        got = stock(**inputs).logits
    wrapped = [n for n, m in stock.named_modules()
               if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)]
    assert wrapped and all(".language_model.layers." in n for n in wrapped)      # LoRA on the LLM only
    assert (got - plain).abs().max() > 1e-5                                      # training moved the adapter
    torch.testing.assert_close(got, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, _ in FAMILIES])
def test_family_mask_is_the_models_own(name):
    """The bidirectional image / prefix blocks are real: the stated mask is not causal, and the
    inputs carry the token_type_ids that make the model build it."""
    from gasp.adapters import get_adapter
    from gasp.models import build_tiny

    model, tok = build_tiny(name)
    adapter = get_adapter(model)
    # both Gemma attention kinds are present, so tests/test_hooks.py checks both masks
    assert set(model.config.get_text_config().layer_types) == {"sliding_attention", "full_attention"}
    frames = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="what moves", answer="left")
    assert "token_type_ids" in inputs
    mask = adapter.attention_mask_2d(inputs)
    p0, p1 = layout.positions[0].reshape(-1), layout.positions[1].reshape(-1)
    assert mask[p0[0], p0[-1]]                              # the first token of frame 0 sees its last token
    # frame 0 sees frame 1 only in PaliGemma's bidirectional prefix; Gemma 3 keeps images causal
    assert bool(mask[p0[0], p1[0]]) == (adapter.model_type == "paligemma")
    assert not mask[:, -1][:-1].any()                       # the answer's last token is seen by no one before it


@pytest.mark.parametrize("name", [n for n, _ in FAMILIES])
def test_qa_logliks_equal_full_forwards(name):
    """Spatial-QA scoring: the cached-prefix path (or PaliGemma's per-option forwards) equals full forwards."""
    from gasp.adapters import get_adapter
    from gasp.experiment.qa_eval import scene_logliks
    from gasp.models import build_tiny

    model, tok = build_tiny(name)
    adapter = get_adapter(model)
    frames = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    questions = [("what is the color", ("red", "blue green")), ("is it near", ("yes", "no"))]
    got = scene_logliks(model, tok, adapter, frames, questions, None, 2.0)
    ref = []
    for prompt, options in questions:
        row = []
        for option in options:
            x, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt=prompt, answer=option)
            with torch.no_grad():
                logits = model(**x).logits[0, :-1].double()
            labels = x["labels"][0, 1:]
            keep = labels != -100
            row.append(float(torch.log_softmax(logits[keep], -1).gather(1, labels[keep, None]).sum()))
        ref.append(row)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def _processor(name, tok, layout):
    """The family's own transformers processor (PIL image backend) around the tiny tokenizer."""
    from transformers import PreTrainedTokenizerFast

    n = layout.grid[0] * layout.grid[1]
    s = {"tiny-gemma3": 112, "tiny-paligemma": 112}[name]
    named = {"tiny-gemma3": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                             "image_token": "<image_soft_token>"},
             "tiny-paligemma": {"image_token": "<image>"}}[name]
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<bos>", eos_token="<eos>", extra_special_tokens=named)
    kw = dict(size={"height": s, "width": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if name == "tiny-gemma3":
        from transformers import Gemma3Processor
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        return Gemma3Processor(image_processor=Gemma3ImageProcessorPil(do_pan_and_scan=False, **kw), tokenizer=tok,
                               image_seq_length=n)
    from transformers import PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    proc = PaliGemmaProcessor(image_processor=SiglipImageProcessorPil(**kw), tokenizer=tok)
    proc.image_seq_length = n
    return proc


@pytest.mark.parametrize("name", [n for n, _ in FAMILIES])
def test_inputs_equal_the_family_processor(name):
    """Token layout, token_type_ids (the mask's source), labels and pixels equal the processor's exactly."""
    from gasp.adapters import get_adapter
    from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

    tok = build_tiny_tokenizer(name)
    adapter = get_adapter(build_tiny_config(name, tok))
    frames = np.random.default_rng(0).integers(0, 256, (2, 75, 101, 3), dtype=np.uint8)
    answer = None if name == "tiny-gemma3" else "left"   # PaliGemma's processor labels a suffix
    ours, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="what moves", answer=answer)
    proc = _processor(name, tok, layout)
    if name == "tiny-gemma3":  # what Gemma 3's chat template makes of [image, image, text]
        text = ("<bos><start_of_turn>user\n<start_of_image><start_of_image>what moves<end_of_turn>\n"
                "<start_of_turn>model\n")
        ref = proc(images=[list(frames)], text=[text], return_tensors="pt")
    else:
        ref = proc(images=[list(frames)], text=["<image><image>what moves"], suffix=[answer], return_tensors="pt")
    assert set(ref) - {"labels"} <= set(ours)
    for key in ref:
        assert torch.equal(ref[key], ours[key]), key
