"""SmolVLM and Idefics3 specifics: the shared layout and the processor's own prompt.

The probe CLI and 10-step training cases of LLaVA-1.5 and SmolVLM are in tests/test_families.py.
"""
from __future__ import annotations

import pytest
import torch


def _tiny_idefics3():
    """tiny-smolvlm's sizes as an Idefics3 model (no tiny-idefics3 name: the layout is SmolVLM's, tested above)."""
    from transformers import AutoModelForImageTextToText, Idefics3Config

    from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

    smol = build_tiny_config("tiny-smolvlm")
    cfg = Idefics3Config(text_config=smol.text_config.to_dict(), vision_config=smol.vision_config.to_dict(),
                         scale_factor=smol.scale_factor, image_token_id=smol.image_token_id)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    return model, build_tiny_tokenizer("tiny-smolvlm")


def test_idefics3_shares_the_smolvlm_layout():
    """Idefics3: frames as images, splitting off; pixels, token mapping and Q/K vs eager attention hold."""
    import numpy as np
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from gasp.adapters import get_adapter
    from gasp.capture.qk import _owner_of, capture_qk
    from tests.test_capture import attention_from_qk, eager_attentions

    model, tok = _tiny_idefics3()
    adapter = get_adapter(model)
    assert adapter.model_type == "idefics3" and adapter.frames_modes == ("images",)
    frames = np.random.default_rng(0).integers(0, 256, (2, 75, 101, 3), dtype=np.uint8)
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="what moves")
    s = adapter.image_size
    proc = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 4 * s},
                                     max_image_size={"longest_edge": s}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ref = proc(images=[list(frames)], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), ref, atol=1e-5, rtol=0)
    assert layout.grid == (4, 4)
    assert (inputs["input_ids"][0][layout.flat_positions] == model.config.image_token_id).all()

    # token mapping with the vision tower's attention silenced (see tests/test_adapters.py)
    lm = _owner_of(model, adapter.decoder_layers(model))

    def embeds(inp):
        seen = {}
        hooks = [lm.register_forward_pre_hook(lambda m, a, kw: seen.update(e=kw["inputs_embeds"][0].clone()),
                                              with_kwargs=True)]
        hooks += [m.register_forward_hook(lambda m, a, out: (torch.zeros_like(out[0]),) + tuple(out[1:]))
                  for m in adapter.vision_tower(model).modules() if type(m).__name__.endswith("Attention")]
        try:
            with torch.no_grad():
                model(**inp)
        finally:
            for h in hooks:
                h.remove()
        return seen["e"]

    base = embeds(inputs)
    for g, r, c in [(0, 0, 1), (1, 3, 2)]:
        x0, y0, x1, y1 = layout.token_boxes()[r, c].tolist()
        mx, my = (x1 - x0) * 0.3, (y1 - y0) * 0.3
        ys, xs = np.arange(75), np.arange(101)
        ym, xm = (ys >= y0 + my) & (ys < y1 - my), (xs >= x0 + mx) & (xs < x1 - mx)
        pert = frames.copy()
        pert[g][np.ix_(ym, xm)] = 255 - pert[g][np.ix_(ym, xm)]
        emb = embeds(adapter.prepare_inputs(pert, processor_or_tokenizer=tok, prompt="what moves")[0])
        changed = torch.nonzero((emb - base).abs().amax(-1) > 1e-6).flatten().tolist()
        assert changed == [int(layout.positions[g, r, c])]

    layers = adapter.decoder_layers(model)
    with torch.no_grad(), capture_qk(model) as rec:
        model(**inputs)
    eager, masks = eager_attentions(model, inputs)
    for li in rec.layers:
        ours = attention_from_qk(rec.q[li], rec.k[li], layers[li].self_attn.scaling, masks[li])
        assert (ours - eager[li].double()).abs().max() < 1e-5, li


@pytest.mark.parametrize("mode,fps", [("video", 1.0), ("video", 0.5), ("images", 1.0)])
def test_smolvlm_prompt_is_the_processors(monkeypatch, mode, fps):
    """The text the adapter tokenizes is the chat template rendered and expanded as SmolVLMProcessor does it."""
    from types import SimpleNamespace

    import jinja2
    from transformers.models.smolvlm import processing_smolvlm as ps
    from transformers.video_utils import VideoMetadata

    from gasp.adapters import get_adapter
    from gasp.adapters.smolvlm import number_words
    from gasp.models.tiny import build_tiny_config, build_tiny_tokenizer

    assert [number_words(n) for n in (3, 21, 64, 100, 105)] == [
        "three", "twenty-one", "sixty-four", "one hundred", "one hundred and five"]  # num2words' English
    monkeypatch.setattr(ps, "num2words", number_words)  # not installed here
    adapter, tok = get_adapter(build_tiny_config("tiny-smolvlm")), build_tiny_tokenizer("tiny-smolvlm")
    n_frames, prompt, n_tokens = 3, "what moves", 16
    names = dict(fake_image_token="<fake_token_around_image>", image_token="<image>", global_image_token="<global-img>")
    proc = SimpleNamespace(image_seq_len=n_tokens, **names)
    content = [{"type": "video"}] if mode == "video" else [{"type": "image"}] * n_frames
    messages = [{"role": "user", "content": content + [{"type": "text", "text": prompt}]}]
    text = jinja2.Template(ps.DEFAULT_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    if mode == "video":
        meta = VideoMetadata(total_num_frames=n_frames, fps=fps, frames_indices=list(range(n_frames)))
        video = {"pixel_values": torch.zeros(1, n_frames, 3, 1, 1), "video_metadata": [meta]}
        expected = text.replace("<video>", ps.SmolVLMProcessor.replace_video_token(proc, video, 0))
    else:
        grid = ps.get_image_prompt_string(0, 0, n_tokens, names["fake_image_token"], names["image_token"],
                                          names["global_image_token"])
        expected = grid.join(text.split("<image>"))
    per_frame = ps._prompt_single_image(n_tokens, names["fake_image_token"], names["image_token"],
                                        names["global_image_token"])
    assert adapter._prompt_text(tok, mode, n_frames, per_frame, prompt, fps) == expected
