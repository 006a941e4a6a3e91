"""Gemma 3 and PaliGemma specifics: the model's own (bidirectional) mask, QA scoring, the processors' inputs.

The probe CLI and 10-step training cases of these families are in tests/test_families.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# (tiny name, --synthetic-size / model.size): the frame size each family's vision input takes.
FAMILIES = [
    ("tiny-gemma3", 112),
    ("tiny-paligemma", 112),
]


@pytest.mark.parametrize("name", [n for n, _ in FAMILIES])
def test_family_mask_is_the_models_own(name):
    """The bidirectional image / prefix blocks are real: the stated mask is not causal, and the
    inputs carry the token_type_ids that make the model build it."""
    from gasp.adapters import get_adapter
    from gasp.models import build_tiny

    model, tok = build_tiny(name)
    adapter = get_adapter(model)
    # both Gemma attention kinds are present, so tests/test_capture.py checks both masks
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
    from experiments.replication.qa_eval import scene_logliks
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
