"""Model adapters: token mapping, placeholders, M-RoPE positions and LoRA targets, on tiny models.

Token-mapping method. Every family's vision tower mixes tokens through self-attention, so a
pixel change reaches every output feature and "only one feature changes" cannot hold on the
intact model. We therefore silence cross-token mixing: a forward hook zeroes the output of
every attention module inside the vision tower (the residual stream passes unchanged), which
leaves a tower in which every patch is processed on its own (patch embedding, positional
embedding, per-token MLPs and norms) and only the 2x2 merger (Qwen) or pooling (LLaVA)
combines patches. Everything the adapter is responsible for is still exercised: the pixel
box of a token, the resize, the patch order, the temporal pairing of frames, Qwen2.5's
window permutation and its inverse, the merge/pool grouping, and where the model's own
masked_scatter puts each feature in the sequence. We capture `inputs_embeds` as they enter
the language model and check that perturbing one token's pixel box in one frame changes the
embedding at exactly `layout.positions[g, r, c]` and nowhere else.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from gasp.adapters import get_adapter, supported_model_types
from gasp.capture.qk import _owner_of
from gasp.models.tiny import TINY_NAMES, build_tiny

CASES = [(n, m) for n in TINY_NAMES for m in get_adapter(build_tiny(n)[0].config).frames_modes]


@pytest.fixture(scope="module")
def tiny():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_tiny(name, seed=0)
        return cache[name]

    return get


def _lm_inputs(model, adapter, inputs, silence_vision_attention=False):
    """Run the model; return (inputs_embeds, position_ids) as they enter the language model."""
    seen = {}

    def pre_hook(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()
        seen["pos"] = kwargs.get("position_ids")

    def zero_out(module, args, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]),) + out[1:]
        return torch.zeros_like(out)

    lm = _owner_of(model, adapter.decoder_layers(model))  # language_model, or text_model (Idefics3-style)
    handles = [lm.register_forward_pre_hook(pre_hook, with_kwargs=True)]
    if silence_vision_attention:
        attn = [m for m in adapter.vision_tower(model).modules() if type(m).__name__.endswith("Attention")]
        assert attn, "found no attention modules in the vision tower"
        handles += [m.register_forward_hook(zero_out) for m in attn]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return seen["embeds"][0], seen["pos"]


def _frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _perturb(frames, layout, frame, r, c, inner):
    """Invert the pixels whose centres lie in token (r, c)'s box (its central part if `inner`)."""
    x0, y0, x1, y1 = layout.token_boxes()[r, c].tolist()
    if inner:  # keep clear of the box edge so the resize kernel cannot reach a neighbour token
        mx, my = (x1 - x0) * 0.3, (y1 - y0) * 0.3
        x0, x1, y0, y1 = x0 + mx, x1 - mx, y0 + my, y1 - my
    ys = np.arange(frames.shape[1])
    xs = np.arange(frames.shape[2])
    ym, xm = (ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1)
    assert ym.any() and xm.any()
    out = frames.copy()
    out[frame][np.ix_(ym, xm)] = 255 - out[frame][np.ix_(ym, xm)]
    return out


def _native_size(adapter, name):
    if hasattr(adapter, "image_size"):  # one square vision input per frame (LLaVA, Gemma, InternVL, SmolVLM)
        return adapter.image_size, adapter.image_size
    return 3 * adapter.token_px, 4 * adapter.token_px


# SmolVLM's images path resizes twice even at native size (longest edge to 4 S, then to S x S,
# LANCZOS, as its image processor does without splitting), so a token's pixels reach its
# neighbours' and only the token's inner part is perturbed there.
RESAMPLED_AT_NATIVE = {("tiny-smolvlm", "images")}


@pytest.mark.parametrize("name,mode", CASES)
@pytest.mark.parametrize("resized", [False, True], ids=["native", "resized"])
def test_token_mapping(tiny, name, mode, resized):
    model, tok = tiny(name)
    adapter = get_adapter(model)
    hh, ww = (75, 101) if resized else _native_size(adapter, name)
    frames = _frames(3, hh, ww)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, frames_mode=mode, fps=2.0)
    base, _ = _lm_inputs(model, adapter, inputs, silence_vision_attention=True)
    h, w = layout.grid
    g_last = layout.num_grids - 1
    # Tokens off the grid's diagonal, so a transposed or mis-strided order cannot pass.
    for g, r, c in [(0, 0, 0), (g_last, h - 1, w - 1), (min(1, g_last), 0, 1), (g_last, 1, 0), (0, h - 1, 1)]:
        frame = int(layout.frame_ids[g])
        pert = _perturb(frames, layout, frame, r, c, inner=resized or (name, mode) in RESAMPLED_AT_NATIVE)
        new_inputs, new_layout = adapter.prepare_inputs(pert, processor_or_tokenizer=tok, frames_mode=mode, fps=2.0)
        assert torch.equal(new_layout.positions, layout.positions)
        emb, _ = _lm_inputs(model, adapter, new_inputs, silence_vision_attention=True)
        changed = torch.nonzero((emb - base).abs().amax(-1) > 1e-6).flatten().tolist()
        assert changed == [int(layout.positions[g, r, c])], (g, r, c, changed)


def test_merged_mode_pairs_frames(tiny):
    """In merged mode frame 2t+1 lands in grid t as well; an odd last frame gets its own grid."""
    model, tok = tiny("tiny-qwen2.5-vl")
    adapter = get_adapter(model)
    frames = _frames(5, 56, 84)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, frames_mode="merged")
    assert layout.frame_ids.tolist() == [0, 2, 4]
    base, _ = _lm_inputs(model, adapter, inputs, silence_vision_attention=True)
    pert = _perturb(frames, layout, 3, 1, 2, inner=False)
    emb, _ = _lm_inputs(model, adapter, adapter.prepare_inputs(pert, processor_or_tokenizer=tok, frames_mode="merged")[0],
                        silence_vision_attention=True)
    changed = torch.nonzero((emb - base).abs().amax(-1) > 1e-6).flatten().tolist()
    assert changed == [int(layout.positions[1, 1, 2])]


@pytest.mark.parametrize("name,mode", CASES)
def test_placeholders_and_forward(tiny, name, mode):
    model, tok = tiny(name)
    adapter = get_adapter(model)
    frames = _frames(4, 64, 96)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="where is the point",
                                            frames_mode=mode)
    ids = inputs["input_ids"][0]
    h, w = layout.grid
    n = layout.num_grids * h * w
    # InternVL writes video frames into its image placeholders (<IMG_CONTEXT>); it has no video token id
    pad_id = model.config.video_token_id if "pixel_values_videos" in inputs else model.config.image_token_id
    pos = layout.flat_positions
    assert len(set(pos.tolist())) == n
    assert (ids[pos] == pad_id).all()
    extra = 1 if name == "tiny-llava-onevision" else 0  # OneVision's trailing newline placeholder
    assert int((ids == pad_id).sum()) == n + extra
    if extra:
        assert int(ids[pos.max() + 1]) == pad_id
    if "mm_token_type_ids" in inputs or name.startswith("tiny-qwen"):
        tt = inputs["mm_token_type_ids"][0]
        expected = torch.zeros_like(tt)
        expected[pos] = 1 if mode == "images" else 2
        assert torch.equal(tt, expected)
    assert layout.positions.shape == (layout.num_grids, h, w)
    assert layout.image_size == (64, 96)
    th, tw = layout.token_size
    assert th * h == pytest.approx(64) and tw * w == pytest.approx(96)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, ids.numel(), model.config.get_text_config().vocab_size)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5"])
@pytest.mark.parametrize("mode", ["duplicate", "merged"])
def test_mrope_temporal_positions(tiny, name, mode):
    """Temporal M-RoPE ids differ between frame grids and rows get their own ids (no 1-D fallback)."""
    model, tok = tiny(name)
    adapter = get_adapter(model)
    inputs, layout = adapter.prepare_inputs(_frames(6, 56, 84), processor_or_tokenizer=tok, frames_mode=mode, fps=1.0)
    _, pos = _lm_inputs(model, adapter, inputs)
    assert pos is not None and pos.shape[-1] == inputs["input_ids"].shape[1]
    t_axis, h_axis, w_axis = pos[-3, 0], pos[-2, 0], pos[-1, 0]  # a leading text axis may precede (T, H, W)
    vis = layout.positions  # (T, h, w)
    t_per_grid = t_axis[vis].flatten(1)
    assert (t_per_grid == t_per_grid[:, :1]).all(), "temporal id varies inside a grid"
    t = t_per_grid[:, 0]
    assert (t[1:] > t[:-1]).all(), f"temporal ids do not advance between frames: {t.tolist()}"
    rows = h_axis[vis[0]]
    cols = w_axis[vis[0]]
    assert (rows[1:] > rows[:-1]).all() and (cols[:, 1:] > cols[:, :-1]).all()


def test_qwen2_5_fps_sets_temporal_spacing(tiny):
    model, tok = tiny("tiny-qwen2.5-vl")
    adapter = get_adapter(model)
    tps = model.config.vision_config.tokens_per_second
    for fps, mode, step in [(1.0, "duplicate", tps * 1), (0.5, "duplicate", tps * 2), (1.0, "merged", tps * 2)]:
        inputs, layout = adapter.prepare_inputs(_frames(4, 56, 56), processor_or_tokenizer=tok, frames_mode=mode, fps=fps)
        _, pos = _lm_inputs(model, adapter, inputs)
        t = pos[0, 0][layout.positions[:, 0, 0]]
        assert torch.equal(t[1:] - t[:-1], torch.full_like(t[1:], step)), (fps, mode, t.tolist())


@pytest.mark.parametrize("name", ["tiny-qwen3-vl", "tiny-qwen3.5"])
def test_qwen3_timestamps_between_frames(tiny, name):
    model, tok = tiny(name)
    adapter = get_adapter(model)
    inputs, layout = adapter.prepare_inputs(_frames(3, 64, 64), processor_or_tokenizer=tok, fps=2.0)
    text = tok.decode(inputs["input_ids"][0])
    stamps = [float(s.replace(" ", "")) for s in re.findall(r"<\s*([\d\s.]+?)\s*seconds\s*>", text)]
    assert stamps == [0.0, 0.5, 1.0]


def test_layout_geometry():
    from gasp.adapters import VisualLayout

    lay = VisualLayout(positions=torch.arange(6).reshape(1, 2, 3), frame_ids=torch.tensor([0]), grid=(2, 3),
                       image_size=(60, 90), token_size=(30.0, 30.0))
    boxes = lay.token_boxes()
    assert boxes.shape == (2, 3, 4)
    assert boxes[1, 2].tolist() == [59.5, 29.5, 89.5, 59.5]
    centres = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)
    tok = lay.to_token_units(centres)
    assert torch.allclose(tok[..., 0], torch.tensor([[0.0, 1, 2], [0, 1, 2]], dtype=tok.dtype))
    assert torch.allclose(tok[..., 1], torch.tensor([[0.0, 0, 0], [1, 1, 1]], dtype=tok.dtype))
    assert np.allclose(lay.to_token_units(np.array([-0.5, -0.5])), [-0.5, -0.5])


@pytest.mark.parametrize("name", TINY_NAMES)
def test_lora_targets_only_language_model(tiny, name):
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny(name, seed=0)  # a fresh copy: peft modifies the model in place
    adapter = get_adapter(model)
    n_layers = model.config.get_text_config().num_hidden_layers
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=adapter.lora_target_modules(model)))
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)]
    # 7 projections per attention layer; a Qwen3.5 linear-attention layer has in_proj_qkv, in_proj_z, out_proj
    kinds = adapter.layer_kinds(model)
    assert len(kinds) == n_layers
    assert len(wrapped) == sum(7 if k == "full" else 6 for k in kinds)
    in_llm = {id(m) for m in adapter.decoder_layers(peft_model).modules()}  # `text_model` in Idefics3-style models
    assert all(id(peft_model.get_submodule(n)) in in_llm for n in wrapped)
    assert all(re.search(r"\.(language|text)_model\.layers\.", n) for n in wrapped)
    assert not any("visual" in n or "vision_" in n or "projector" in n or "connector" in n for n in wrapped)
    layers = adapter.decoder_layers(peft_model)
    assert len(layers) == n_layers and layers is adapter.decoder_layers(model)
    assert get_adapter(peft_model).model_type == adapter.model_type
    assert adapter.text_config(peft_model) is model.config.get_text_config()


def test_registry_errors():
    assert set(supported_model_types()) >= {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_next_video", "llava_onevision",
                                            "llava", "smolvlm", "idefics3"}
    with pytest.raises(ValueError, match="supported: .*qwen2_5_vl"):
        get_adapter("gpt2")


def test_bad_inputs(tiny):
    model, tok = tiny("tiny-qwen2.5-vl")
    adapter = get_adapter(model)
    with pytest.raises(ValueError, match="smaller than one"):
        adapter.prepare_inputs(_frames(2, 20, 64), processor_or_tokenizer=tok)
    with pytest.raises(ValueError, match="frames_mode"):
        adapter.prepare_inputs(_frames(2, 56, 56), processor_or_tokenizer=tok, frames_mode="video")
    with pytest.raises(ValueError, match="multiple"):
        adapter.prepare_inputs(_frames(2, 56, 56), processor_or_tokenizer=tok, size=(50, 56))
    with pytest.raises(ValueError, match="uint8"):
        adapter.prepare_inputs(_frames(2, 56, 56).astype(np.float32), processor_or_tokenizer=tok)
    inputs, layout = adapter.prepare_inputs(_frames(2, 60, 90), processor_or_tokenizer=tok, size=(112, 168))
    assert layout.grid == (4, 6) and layout.token_size == (15.0, 15.0)


# ---- LM targets: labels on the assistant tokens only ----------------------------------------
def _labelled_spans(labels):
    """Maximal runs of positions whose label is not -100, as (start, stop) pairs."""
    on = (labels != -100).tolist() + [False]
    spans, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _eot_id(name, tok):
    if name in ("tiny-llava-next-video", "tiny-paligemma", "tiny-llava"):  # Vicuna / PaliGemma: "</s>" / eos
        return tok.eos_token_id
    return tok.convert_tokens_to_ids({"tiny-gemma3": "<end_of_turn>", "tiny-smolvlm": "<end_of_utterance>"}
                                     .get(name, "<|im_end|>"))


@pytest.mark.parametrize("name,mode", [(n, None) for n in TINY_NAMES] + [("tiny-qwen2.5-vl", "images")])
def test_labels_mask_exactly_the_answer(tiny, name, mode):
    model, tok = tiny(name)
    adapter = get_adapter(model)
    frames = _frames(2, 56, 84)
    answer = "the camera moves left"
    plain, layout0 = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="where is the point",
                                            frames_mode=mode)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="where is the point",
                                            frames_mode=mode, answer=answer)
    assert "labels" not in plain
    ids, labels = inputs["input_ids"][0], inputs["labels"][0]
    n0 = plain["input_ids"].shape[1]
    # The prompt part and the visual layout are untouched; only the answer is appended.
    assert torch.equal(ids[:n0], plain["input_ids"][0]) and torch.equal(layout.positions, layout0.positions)
    assert labels.shape == ids.shape and labels.dtype == torch.long
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert _labelled_spans(labels) == [(n0, ids.numel())]  # everything after the prompt, nothing before
    assert labels[n0:].tolist() == answer_ids + [_eot_id(name, tok)]
    assert torch.equal(labels[n0:], ids[n0:])
    assert tok.decode(labels[n0:-1]) == answer
    for key in ("attention_mask", "mm_token_type_ids"):
        if key in inputs:
            assert inputs[key].shape == inputs["input_ids"].shape
    if "mm_token_type_ids" in inputs:
        assert (inputs["mm_token_type_ids"][0, n0:] == 0).all()

    with torch.no_grad():
        out = model(**inputs)
    logits = out.logits[0, :-1].double()  # position t predicts token t + 1
    target = labels[1:]
    keep = target != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-llava-next-video", "tiny-llava-onevision", "tiny-llava",
                                  "tiny-smolvlm"])
def test_labels_multi_turn(tiny, name):
    model, tok = tiny(name)
    adapter = get_adapter(model)
    rounds = [("what color is the object", "red"), ("is it near", "yes")]
    inputs, _ = adapter.prepare_inputs(_frames(2, 56, 56), processor_or_tokenizer=tok, prompt="describe the scene",
                                       answer="one red object", turns=rounds)
    ids, labels = inputs["input_ids"][0], inputs["labels"][0]
    spans = _labelled_spans(labels)
    assert [tok.decode(ids[a:b - 1]) for a, b in spans] == ["one red object", "red", "yes"]
    assert all(int(ids[b - 1]) == _eot_id(name, tok) for _, b in spans)
    # The later human turns are in the sequence but carry no loss.
    unlabelled = tok.decode(ids[labels == -100])
    assert "what color is the object" in unlabelled and "is it near" in unlabelled
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_labels_bad_dialogue(tiny):
    model, tok = tiny("tiny-qwen2.5-vl")
    adapter = get_adapter(model)
    frames = _frames(2, 56, 56)
    with pytest.raises(ValueError, match="need an answer"):
        adapter.prepare_inputs(frames, processor_or_tokenizer=tok, turns=[("a", "b")])
    with pytest.raises(ValueError, match="special token"):
        adapter.prepare_inputs(frames, processor_or_tokenizer=tok, answer="left <|video_pad|>")
    with pytest.raises(ValueError, match="special token"):
        adapter.prepare_inputs(frames, processor_or_tokenizer=tok, answer="left", turns=[("<|im_end|> x", "y")])
    with pytest.raises(ValueError, match="pair of strings"):
        adapter.prepare_inputs(frames, processor_or_tokenizer=tok, answer="left", turns=[("only human",)])
    # Words outside the tiny vocabulary become <unk>: unknown text, not a stray special token.
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, answer="Zebra left")
    labelled = inputs["labels"][0][inputs["labels"][0] != -100].tolist()
    assert labelled[:2] == [tok.unk_token_id, tok.convert_tokens_to_ids("left")]
