"""Vision pre-training (issue 9, v3): the tokens it trains are the LLM's visual inputs, and only the tower moves."""
import json

import numpy as np
import pytest
import torch

from experiments.replication.vision_pretrain import pretrain_vision, visual_embeddings
from gasp.models import load_model
from gasp.models.tiny import save_tiny
from tracks.io import TrackReader
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=128, vision_depth=1, vision_hidden_size=32)
SIZE = (112, 112)                                       # 4 x 4 tokens of 28 px


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("vision")
    save_tiny("tiny-qwen2.5-vl", d / "init", seed=0, **TINY)
    make_synthetic_file(d / "train.h5", 2, seed=1, grid=4, split="train",
                        config=SyntheticSceneConfig(height=112, width=112, num_frames=8, shake_deg=5.0))
    return d


def test_visual_tokens_are_what_decoder_layer_0_receives(setup):
    model, proc, ad = load_model(str(setup / "init"))
    with TrackReader(setup / "train.h5") as r:
        frames = r.scene(r.scene_names[0], frames=np.arange(3)).frames
    inputs, layout = ad.prepare_inputs(frames, processor_or_tokenizer=proc, prompt="describe the video.", size=SIZE)
    seen = {}

    def grab(module, args, kwargs):                                            # returns None: inputs unchanged
        seen.setdefault("x", (args[0] if args else kwargs["hidden_states"]).detach())

    hook = ad.decoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
            tokens = ad.visual_tokens(model, inputs)                            # (F*P, d)
    finally:
        hook.remove()
    expect = seen["x"][0, layout.flat_positions]                               # (F*P, d)
    assert tokens.shape == (3 * 16, TINY["hidden_size"])
    torch.testing.assert_close(tokens, expect, rtol=0, atol=0)


def test_pretrain_vision_moves_only_the_tower_and_writes_atomically(setup):
    out = setup / "run"
    dest = pretrain_vision(setup / "init", setup / "train.h5", out, steps=3, lr=1e-2, size=SIZE, min_frames=3,
                           max_frames=4, radius=4, grid=4)
    assert dest == out / "vision_pretrained" and not (out / "vision_pretrained.partial").exists()
    rows = [json.loads(ln) for ln in (out / "vision_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["l_corr"]) and r["grad_norm"] > 0 for r in rows)
    before, _, ad = load_model(str(setup / "init"))
    after, _, _ = load_model(str(dest))
    tower = {n for n, _ in ad.vision_tower(before).named_parameters()}
    changed = {n for (n, p), (_, q) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(p, q)}
    assert changed and all(any(n.endswith(t) for t in tower) for n in changed)     # the tower moved, nothing else
    assert "visual" in next(iter(changed))
    # a finished folder is reused, not retrained
    assert pretrain_vision(setup / "init", setup / "train.h5", out, steps=3, lr=1e-2, size=SIZE, min_frames=3,
                           max_frames=4, radius=4, grid=4) == dest


def test_visual_embeddings_are_unit_vectors_per_frame(setup):
    model, proc, ad = load_model(str(setup / "init"))
    from gasp.train.geo_stream import GeoStream

    seq = GeoStream(setup / "train.h5", grid=4, min_frames=3, max_frames=3, radius=4)[0]
    with torch.no_grad():
        emb, layout = visual_embeddings(model, ad, proc, seq, SIZE)
    assert emb.shape == (1, 3, 16, TINY["hidden_size"]) and layout.num_grids == 3
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1, 3, 16))
