"""Tiny models, offline loading, aliases and LoRA adapters."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gasp.adapters import get_adapter
from gasp.models import (
    AdapterMismatchError, ModelNotFoundError, TINY_NAMES, UnknownModelError, build_tiny, load_model, save_tiny,
)
from gasp.models.tiny import build_tiny_tokenizer


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


IMAGE_ONLY_TOKENS = {
    "tiny-gemma3": {"image_token_id": "<image_soft_token>", "boi_token_id": "<start_of_image>",
                    "eoi_token_id": "<end_of_image>"},
    "tiny-paligemma": {"image_token_id": "<image>"},
    "tiny-internvl": {"image_token_id": "<IMG_CONTEXT>"},      # one placeholder for image and video frames
}


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_is_deterministic_and_consistent(name):
    a, tok = build_tiny(name, seed=0)
    b, _ = build_tiny(name, seed=0)
    c, _ = build_tiny(name, seed=1)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    assert not a.training
    want = get_adapter(a).attn_implementation()  # sdpa; eager for Gemma 2's softcapped LLM
    assert a.config.get_text_config()._attn_implementation == (want if isinstance(want, str) else want["text_config"])
    n_params = sum(p.numel() for p in a.parameters())
    assert 3e5 < n_params < 3e6
    vocab = a.config.get_text_config().vocab_size
    assert len(tok) <= vocab and max(tok.get_vocab().values()) < vocab
    cfg = a.config
    if name in IMAGE_ONLY_TOKENS:  # image-only families: their own placeholder and begin/end tokens
        for attr, token in IMAGE_ONLY_TOKENS[name].items():
            assert getattr(cfg, attr) == tok.convert_tokens_to_ids(token) < vocab
        pad = IMAGE_ONLY_TOKENS[name]["image_token_id"]
        ids = tok(f"the point {pad}{pad} moves", add_special_tokens=False)["input_ids"]
        assert ids.count(cfg.image_token_id) == 2 and tok.unk_token_id not in ids
        return
    # image-only families (llava, smolvlm) have no video token
    attrs = [("image_token_id", "<image>")]
    if hasattr(cfg, "video_token_id"):
        attrs.append(("video_token_id", "<video>"))
    for attr, token in attrs:
        if name.startswith("tiny-qwen"):
            token = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>"}[attr]
        assert getattr(cfg, attr) == tok.convert_tokens_to_ids(token) < vocab
    if name.startswith("tiny-qwen"):
        assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>") < vocab
        assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>") < vocab
    # special tokens survive tokenisation as single ids
    attr, pad = attrs[-1]
    pad = {"<image>": "<|image_pad|>", "<video>": "<|video_pad|>"}[pad] if name.startswith("tiny-qwen") else pad
    ids = tok(f"the point {pad}{pad} moves", add_special_tokens=False)["input_ids"]
    assert ids.count(getattr(cfg, attr)) == 2 and tok.unk_token_id not in ids


def test_tiny_overrides():
    model, _ = build_tiny("tiny-qwen2.5-vl", hidden_size=256, num_hidden_layers=8)
    tc = model.config.text_config
    assert (tc.hidden_size, tc.num_hidden_layers) == (256, 8)
    assert sum(tc.rope_parameters["mrope_section"]) == tc.hidden_size // tc.num_attention_heads // 2
    assert model.config.vision_config.out_hidden_size == 256
    assert len(get_adapter(model).decoder_layers(model)) == 8
    with pytest.raises(ValueError, match="hiden_size"):
        build_tiny("tiny-qwen2.5-vl", hiden_size=256)
    with pytest.raises(KeyError, match="known: tiny-qwen2-vl"):
        build_tiny("tiny-gpt")


def _logits(model, tok, adapter):
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="describe the scene")
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-llava-next-video", "tiny-gemma3", "tiny-paligemma",
                                  "tiny-llava", "tiny-smolvlm"])
def test_save_tiny_then_load_local_path(tmp_path, name):
    save_tiny(name, tmp_path / "m", seed=3)
    model, proc, adapter = load_model(str(tmp_path / "m"))
    ref, ref_tok = build_tiny(name, seed=3)
    ref_adapter = get_adapter(ref)
    assert adapter.model_type == ref_adapter.model_type
    assert torch.equal(_logits(model, proc, adapter), _logits(ref, ref_tok, ref_adapter))


def test_load_tiny_by_name():
    model, tok, adapter = load_model("tiny-qwen3-vl", seed=5)
    assert adapter.model_type == "qwen3_vl"
    assert _same_weights(model, build_tiny("tiny-qwen3-vl", seed=5)[0])


def test_missing_checkpoint_errors(tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelNotFoundError, match=str(missing)) as err:
        load_model(str(missing))
    assert "--model /path/to/dir" in str(err.value) and "HF_HOME" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError) as err:
        load_model("qwen2.5-vl-7b")
    msg = str(err.value)
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in msg and str(tmp_path / "cache") in msg and "Traceback" not in msg
    assert err.value.__cause__ is None


def test_unknown_names():
    with pytest.raises(UnknownModelError, match="qwen2.5-vl-7b.*tiny-qwen2.5-vl"):
        load_model("qwen9-vl-1b")


def test_unsupported_model_type(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(UnknownModelError, match="'gpt2'.*qwen2_5_vl"):
        load_model(str(tmp_path))


def _save_lora(model, out):
    from peft import LoraConfig, get_peft_model

    adapter = get_adapter(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=adapter.lora_target_modules(model),
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out, save_embedding_layers=False)  # else peft looks the base name up online
    return peft_model


def test_lora_adapter_roundtrip(tmp_path):
    base, tok = build_tiny("tiny-qwen2.5-vl", seed=0)
    trained = _save_lora(base, tmp_path / "lora")
    model, proc, adapter = load_model("tiny-qwen2.5-vl", adapter=tmp_path / "lora")
    assert type(model).__name__ == "PeftModel"
    assert len(adapter.decoder_layers(model)) == 4
    plain, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
    with_lora = _logits(model, proc, adapter)
    assert torch.allclose(with_lora, _logits(trained, tok, adapter), atol=1e-5)
    assert not torch.allclose(with_lora, _logits(plain, tok, adapter), atol=1e-3)


def test_lora_adapter_for_other_model(tmp_path):
    base, _ = build_tiny("tiny-qwen2.5-vl", seed=0, hidden_size=64)
    _save_lora(base, tmp_path / "lora")
    with pytest.raises(AdapterMismatchError, match="tiny-qwen2.5-vl.*tiny-qwen2-vl|tiny-qwen2-vl.*tiny-qwen2.5-vl"):
        load_model("tiny-qwen2-vl", adapter=tmp_path / "lora")
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        load_model("tiny-qwen2-vl", adapter=tmp_path / "nothing")


def test_lora_adapter_for_other_family_same_shapes(tmp_path):
    """Tiny Qwen2-VL and Qwen2.5-VL LLMs have equal shapes; the recorded base name still tells them apart."""
    base, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
    _save_lora(base, tmp_path / "lora")
    with pytest.raises(AdapterMismatchError, match="'tiny-qwen2.5-vl'.*'tiny-qwen2-vl'"):
        load_model("tiny-qwen2-vl", adapter=tmp_path / "lora")


def test_tokenizer_roundtrip(tmp_path):
    tok = build_tiny_tokenizer("tiny-llava-onevision")
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "<|im_start|>user <video><video>\nwhere is the point<|im_end|>"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
