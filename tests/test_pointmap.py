"""HiSpatial's point-map input (gasp/pointmap.py): the encoding against its formula, unprojection against known
geometry, step-0 equality with the base, the point map on the frame's token grid (Qwen's window order and merge
included), and gradients into the branch."""
import math

import numpy as np
import pytest
import torch

from gasp.adapters import get_adapter
from gasp.models.tiny import build_tiny
from gasp.pointmap import (CLIP, ENC_CHANNELS, NOISE, PointMapInput, PointMapError, branch_for, encode,
                           make_pointmap, relative_depth, resize_pointmap, unproject_depth)


def test_the_encoding_is_the_stated_sinusoid_read_literally():
    g = torch.Generator().manual_seed(0)
    pm = torch.cat([torch.randn(5, 3, generator=g) * 6, torch.tensor([[1.0], [1.0], [0.0], [1.0], [1.0]])], dim=1)
    pm[1, 0] = 25.0                                                      # clipped to CLIP
    enc = encode(pm)
    assert enc.shape == (5, ENC_CHANNELS) == (5, 193)
    for i in range(5):
        want = []
        for c in range(3):
            x = max(-CLIP, min(CLIP, float(pm[i, c])))
            w = [math.pi * 2 ** (k / 4) / CLIP for k in range(32)]
            want += [math.sin(wk * x) for wk in w] + [math.cos(wk * x) for wk in w]
        m = float(pm[i, 3])
        want = [v * m for v in want] + [m]
        assert enc[i].tolist() == pytest.approx(want, abs=2e-4)     # float32 angles up to ~2e3 rad: ulp ~1e-4


def test_unprojection_puts_pixels_where_the_camera_sees_them():
    """A plane at Z = 2 seen by K: X = (x - cx) Z / fx; and a point's XYZ projects back to its pixel."""
    K = np.array([[50.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])
    depth = np.full((1, 48, 64), 2.0)
    depth[0, 5, 7] = np.nan
    pm = unproject_depth(depth, K)
    assert pm.shape == (1, 48, 64, 4)
    assert pm[0, 10, 20].tolist() == pytest.approx([(20 - 31.5) * 2 / 50, (10 - 23.5) * 2 / 40, 2.0, 1.0])
    assert pm[0, 5, 7].tolist() == [0.0, 0.0, 0.0, 0.0]                      # unusable depth: invalid
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (2, 48, 64))
    pm = unproject_depth(depth, np.stack([K, K * [[1.1], [1.1], [1]]]))
    for f in range(2):
        Kf = K * ([[1.1], [1.1], [1]] if f else 1)
        uvw = pm[f, ..., :3].reshape(-1, 3) @ Kf.T
        ys, xs = np.mgrid[0:48, 0:64]
        np.testing.assert_allclose(uvw[:, :2] / uvw[:, 2:], np.stack([xs.ravel(), ys.ravel()], 1), atol=1e-3)


def test_the_sources():
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 8, (2, 16, 16))
    depth[0, 0, 0] = 0.0
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]])
    gt = make_pointmap("gt", depth, K)
    rel = make_pointmap("reldepth", depth, K)
    r = relative_depth(depth)
    assert np.nanmin(r[1]) == 0 and np.nanmax(r[1]) == 255 and np.all(r[np.isfinite(r)] == np.round(r[np.isfinite(r)]))
    assert np.allclose(rel[..., 0], rel[..., 2]) and rel[..., :3].max() <= CLIP and rel[0, 0, 0, 3] == 0
    noisy = make_pointmap("noisy", depth, K, seed=3)
    kept = noisy[..., 3] > 0
    ratio = noisy[..., 2][kept] / gt[..., 2][kept]
    assert 0.5 < ratio.mean() < 2 and ratio.std() > NOISE["pixel_sigma"] / 2       # scaled and jittered
    assert not np.array_equal(noisy, make_pointmap("noisy", depth, K, seed=4))
    assert not make_pointmap("none", depth, K).any()
    with pytest.raises(PointMapError, match="needs depth maps"):
        make_pointmap("gt", None, K)
    with pytest.raises(PointMapError, match="choose one of gt, reldepth, noisy, none"):
        make_pointmap("moge", depth, K)
    small = resize_pointmap(gt, (8, 8))
    assert small.shape == (2, 8, 8, 4) and np.array_equal(small[1, 3, 5], gt[1, 7, 11])   # nearest centre


def _setup(name, n_frames=2, hw=224):
    model, tok = build_tiny(name, seed=0)
    adapter = get_adapter(model)
    frames = np.random.default_rng(0).integers(0, 256, (n_frames, hw, hw, 3), dtype=np.uint8)
    kw = {} if name == "tiny-paligemma" else {"size": (hw, hw)}
    inputs, layout = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="how far", **kw)
    torch.manual_seed(0)
    branch = branch_for(model, adapter)
    return model, adapter, inputs, layout, branch


def _pm(adapter, layout, seed=0):
    H, W = adapter.pointmap_size(layout)
    depth = np.random.default_rng(seed).uniform(1, 6, (layout.num_grids, H, W))
    K = np.array([[H, 0, (W - 1) / 2], [0, H, (H - 1) / 2], [0, 0, 1]])
    return torch.from_numpy(make_pointmap("gt", depth, K))


@pytest.mark.parametrize("name", ["tiny-paligemma", "tiny-qwen2.5-vl"])
def test_at_step_0_the_model_is_the_base_bit_for_bit(name):
    model, adapter, inputs, layout, branch = _setup(name)
    with torch.no_grad():
        base = model(**inputs).logits
        fusion = PointMapInput.install(model, adapter, branch)
        with fusion.feeding(_pm(adapter, layout), inputs):
            fused = model(**inputs).logits
    assert torch.equal(base, fused)
    with pytest.raises(PointMapError, match="no point map was fed"):                 # fed nothing: refused
        with torch.no_grad():
            model(**inputs)
    fusion.remove()


@pytest.mark.parametrize("name", ["tiny-paligemma", "tiny-qwen2.5-vl"])
def test_a_token_boxs_points_change_only_that_visual_token(name):
    """Every pixel invalid except one token's box in frame 1: only that token's visual embedding moves (Qwen2.5-VL:
    through its window order and 2x2 merge), so the point map sits on the frame's token grid."""
    model, adapter, inputs, layout, branch = _setup(name)
    with torch.no_grad():
        branch.proj.weight.normal_()
    fusion = PointMapInput.install(model, adapter, branch)
    H, W = adapter.pointmap_size(layout)
    h, w = layout.grid
    th, tw = H // h, W // w
    if name == "tiny-qwen2.5-vl":
        order = adapter._window_order(adapter.vision_tower(model), inputs["video_grid_thw"])
        assert not torch.equal(order, torch.arange(len(order)))                      # the order is not trivial
    full = _pm(adapter, layout)
    none = torch.zeros_like(full)
    r, c = h - 2, 1
    one = none.clone()
    one[1, r * th:(r + 1) * th, c * tw:(c + 1) * tw] = full[1, r * th:(r + 1) * th, c * tw:(c + 1) * tw]

    def tokens(pm):
        with torch.no_grad(), fusion.feeding(pm, inputs):
            if name == "tiny-paligemma":
                inner = adapter.inner_model(model)
                return inner.get_image_features(inputs["pixel_values"]).pooler_output.reshape(-1, h * w, inner.config.text_config.hidden_size)
            return adapter.visual_tokens(model, inputs).reshape(layout.num_grids, h * w, -1)

    moved = (tokens(one) - tokens(none)).abs().amax(-1)                                 # (F', P)
    assert moved[1, r * w + c] > 1e-4
    moved[1, r * w + c] = 0
    assert moved.max() == 0
    fusion.remove()


def test_gradients_reach_the_point_branch():
    model, adapter, inputs, layout, branch = _setup("tiny-qwen2.5-vl")
    fusion = PointMapInput.install(model, adapter, branch)
    pm = _pm(adapter, layout)
    with fusion.feeding(pm, inputs):
        model(**inputs).logits.square().mean().backward()
    assert branch.proj.weight.grad.abs().max() > 0                                  # the zero half learns at once
    assert branch.conv.weight.grad.abs().max() == 0                                 # behind a zero weight, not yet
    branch.zero_grad()
    with torch.no_grad():
        branch.proj.weight.normal_(std=0.01)
    with fusion.feeding(pm, inputs):
        model(**inputs).logits.square().mean().backward()
    assert branch.conv.weight.grad.abs().max() > 0


def test_a_family_without_the_input_says_which_have_it():
    model, _ = build_tiny("tiny-smolvlm", seed=0)
    with pytest.raises(PointMapError, match="families with one: paligemma, qwen2_5_vl, qwen2_vl"):
        branch_for(model, get_adapter(model))
