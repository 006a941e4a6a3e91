"""The per-layer depth probe (probes/depth.py, probes/depth_split.py, gasp/capture/hidden.py, pck.py --depth).

Each piece is checked against a formula written here separately: token targets by assigning
every pixel to its token, ridge by solving the normal equations per lambda and fold on the
raw tokens, the metrics by probe3d's definitions with numpy's least squares, and the whole
probe against hidden states captured here with plain forward hooks."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probes import depth as dp
from probes import metrics
from probes.config import ProbeConfig, ProbeError


# ---- independent references ------------------------------------------------------------------
def ref_token_depth(depth, grid, token_size):
    F, H, W = depth.shape
    (h, w), (th, tw) = grid, token_size
    out = np.full((F, h, w), np.nan)
    vals = {}
    for f in range(F):
        for y in range(H):
            for x in range(W):
                r, c = int(np.floor((y + 0.5) / th)), int(np.floor((x + 0.5) / tw))   # box [r*th - 0.5, ...)
                d = depth[f, y, x]
                if r < h and c < w and np.isfinite(d) and d > 0:
                    vals.setdefault((f, r, c), []).append(d)
    for (f, r, c), v in vals.items():
        out[f, r, c] = np.median(v)
    return out


def ref_ridge(X, y, lam):
    """Standardised, centred ridge with a free intercept, solved directly."""
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-6 * max(sd.max(), 1e-300), sd, 1.0)
    Z = (X - mu) / sd
    n = len(y)
    beta = np.linalg.solve(Z.T @ Z + lam * n * np.eye(X.shape[1]), Z.T @ (y - y.mean()))
    w = beta / sd
    return w, y.mean() - mu @ w


def ref_fit(X, y, fold, lambdas=dp.LAMBDAS):
    mse = []
    for lam in lambdas:
        sse = 0.0
        for k in np.unique(fold):
            w, b = ref_ridge(X[fold != k], y[fold != k], lam)
            sse += ((X[fold == k] @ w + b - y[fold == k]) ** 2).sum()
        mse.append(sse / len(y))
    mse = np.array(mse)
    best = max(j for j in range(len(lambdas)) if mse[j] <= mse.min() * (1 + 1e-9))
    w, b = ref_ridge(X, y, lambdas[best])
    return w, b, lambdas[best], mse


def ref_metrics(pred, gt, eps, align):
    if align:
        A = np.stack([pred, np.ones_like(pred)], 1)
        pred = A @ np.linalg.lstsq(A, gt, rcond=None)[0]
    p = np.maximum(pred, eps)
    return {"abs_rel": np.mean(np.abs(p - gt) / gt), "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(gt)) ** 2)),
            "delta_1.25": np.mean(np.maximum(p / gt, gt / p) < 1.25)}


# ---- pieces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,grid", [((2, 12, 9), (3, 3)), ((1, 10, 14), (3, 4))])
def test_token_depth_is_the_median_of_each_box(shape, grid):
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 5, shape).astype(np.float32)
    d[rng.random(shape) < 0.3] = np.nan
    d[0, :4, :4] = 0                                           # invalid (0) and NaN pixels are left out
    token = (shape[1] / grid[0], shape[2] / grid[1])           # 12/3 = 4, 9/3 = 3; 10/3 and 14/4: not integers
    np.testing.assert_allclose(dp.token_depth(d, grid, token), ref_token_depth(d, grid, token), equal_nan=True)
    assert np.isnan(dp.token_depth(d, grid, token)[0, 0, 0])   # a box without valid depth has no target


def test_pixel_features_are_the_token_pixels():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)   # 2 x 3 tokens of 4 x 4 px
    f = dp.pixel_features(frames, (2, 3), (4.0, 4.0), patch=4)     # no resampling at patch = token size
    r, c = 1, 2
    want = frames[1, 4 * r:4 * r + 4, 4 * c:4 * c + 4].transpose(2, 0, 1).reshape(-1) / 255
    np.testing.assert_allclose(f[1, r * 3 + c].numpy(), want, rtol=1e-6)
    g = dp.pixel_features(frames, (2, 3), (4.0, 4.0), patch=2)     # area resampling keeps each token's mean
    np.testing.assert_allclose(g[1, r * 3 + c].reshape(3, 4).mean(1).numpy(), want.reshape(3, 16).mean(1), rtol=1e-5)


def test_ridge_on_sufficient_statistics_matches_the_direct_solution():
    rng = np.random.default_rng(2)
    n, D = 300, 12
    X = rng.normal(size=(n, D)) * rng.uniform(0.1, 30, D) + rng.normal(size=D) * 50   # scales and offsets differ
    X[:, 3] = 7.0                                                                      # a constant feature
    y = X[:, :4] @ rng.normal(size=4) * 0.05 + 3 + rng.normal(size=n)
    fold = rng.integers(0, 3, n)
    stats = dp.RidgeStats(3, D)
    for k in range(3):
        stats.add(torch.from_numpy(X[fold == k]).float().double(), torch.from_numpy(y[fold == k]), k)
    fit = dp.fit_ridge(stats)
    w, b, lam, mse = ref_fit(X, y, fold)
    assert fit.lam == lam
    np.testing.assert_allclose(fit.cv_mse, mse, rtol=1e-7)
    np.testing.assert_allclose(fit.predict(torch.from_numpy(X)).numpy(), X @ w + b, rtol=1e-7, atol=1e-7)
    assert fit.mean_target == pytest.approx(y.mean())


def test_image_metrics_match_probe3d_definitions():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 8, 50)
    for pred in (gt * rng.uniform(0.7, 1.4, 50), rng.normal(2, 1, 50), np.full(50, 3.0)):   # the 2nd has p < 0
        got = dp.image_metrics(pred, gt, eps=1e-3)
        for align, key in ((False, "metric"), (True, "scale_shift")):
            want = ref_metrics(pred, gt, 1e-3, align)
            for m in dp.METRICS:
                assert got[key][m] == pytest.approx(want[m], rel=1e-9, abs=1e-12), (key, m)
    const = dp.image_metrics(np.full(50, 3.0), gt, eps=1e-3)["scale_shift"]     # aligned constant = the mean depth
    assert const["abs_rel"] == pytest.approx(np.mean(np.abs(gt.mean() - gt) / gt))


def _synthetic_probe(shuffle: bool, seed: int = 4):
    """Depth linearly readable from 16-d features (plus noise dims), 6 scenes of 4 images of 36 tokens."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(1, 16))
    probe = dp.DepthProbe(["feat"], folds=3)
    scenes = [rng.uniform(1, 10, (4, 36)) for _ in range(6)]
    def feats(depth):
        return torch.from_numpy((depth[..., None] * A + 0.01 * rng.normal(size=(*depth.shape, 16))).astype(np.float32))
    for s, depth in enumerate(scenes[:4]):
        target = rng.permutation(depth.reshape(-1)).reshape(depth.shape) if shuffle else depth
        probe.observe("feat", feats(depth), target, fold=s % 3)
    probe.fit()
    for depth in scenes[4:]:
        probe.observe("feat", feats(depth), depth)
    return probe


@pytest.mark.parametrize("shuffle", [False, True])
def test_linearly_readable_depth_is_recovered_and_shuffled_targets_fall_to_the_constant(shuffle):
    probe = _synthetic_probe(shuffle)
    got = dp.mean_metrics(probe.images["feat"])
    const = dp.mean_metrics(probe.images["constant"])
    if not shuffle:
        assert got["metric"]["delta_1.25"] > 0.99 and got["metric"]["abs_rel"] < 0.02
    else:
        assert const["metric"]["delta_1.25"] < 0.6
        assert abs(got["metric"]["delta_1.25"] - const["metric"]["delta_1.25"]) < 0.08
        assert abs(got["metric"]["abs_rel"] - const["metric"]["abs_rel"]) < 0.08


def test_hidden_capture_matches_output_hidden_states():
    from gasp.capture.hidden import capture_hidden
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    m = LlamaModel(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 9))
    pos = torch.tensor([1, 4, 5, 8])
    got = {}
    with torch.no_grad(), capture_hidden(m.layers, layers=[-1, 0, 2], positions=pos,
                                         on_hidden=lambda layer, x: got.setdefault(layer, x.clone())):
        hs = m(ids, output_hidden_states=True).hidden_states       # embeddings, layer 0, 1, final norm(layer 2)
    torch.testing.assert_close(got[-1], hs[0][:, pos])
    torch.testing.assert_close(got[0], hs[1][:, pos])
    torch.testing.assert_close(m.norm(got[2]), hs[3][:, pos])
    with pytest.raises(ValueError, match="do not exist"):
        with capture_hidden(m.layers, layers=[3], positions=pos, on_hidden=lambda *a: None):
            pass


# ---- the whole probe against a separate run ---------------------------------------------------
@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    from probes.runner import run_probe

    cfg = ProbeConfig(out=str(tmp_path_factory.mktemp("depth") / "probe"), synthetic_scenes=4, synthetic_size=112,
                      depth=True, depth_folds=2, explore_sequences=2)
    return cfg, run_probe(cfg)


def test_probe_equals_a_separate_run_on_plain_forward_hooks(depth_run):
    from gasp.models import load_model
    from tracks.io import TrackReader

    cfg, res = depth_run
    d = res["depth"]
    split = d["split"]
    assert set(split["train"]["scenes"]).isdisjoint(split["held_out"]["scenes"])
    assert len(split["train"]["scenes"]) == 2 and len(split["held_out"]["scenes"]) == 2
    model, proc, adapter = load_model(cfg.model, seed=cfg.seed)
    layers = adapter.decoder_layers(model)
    reader = TrackReader(res["tracks"])
    feats, targets, scenes = {}, [], []
    for i in range(len(reader)):
        seq = reader[i]
        inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=proc, prompt=cfg.prompt,
                                                fps=cfg.fps)
        pos = layout.flat_positions
        caught = {}
        hooks = [layers[0].register_forward_pre_hook(lambda m, a: caught.__setitem__(-1, a[0][0, pos].double()))]
        assert d["layers"][:2] == [-2, -1]              # -2: the vision encoder's output before the projector
        with torch.no_grad():                           # ... read here by calling the vision tower itself
            caught[-2] = adapter.pre_projector_features(model, inputs).flatten(1).double()
        for j in d["layers"][2:]:
            hooks.append(layers[j].register_forward_hook(
                lambda m, a, o, j=j: caught.__setitem__(j, (o[0] if isinstance(o, tuple) else o)[0, pos].double())))
        with torch.no_grad():
            model(**inputs)
        for h in hooks:
            h.remove()
        fids = layout.frame_ids.numpy()
        t = ref_token_depth(seq.depth[fids], layout.grid, layout.token_size).reshape(len(fids), -1)   # (F, P)
        for j, x in caught.items():
            feats.setdefault(j, []).append(x.numpy().reshape(len(fids), -1, x.shape[-1]))
        targets.append(t)
        scenes.append(seq.scene)
    train = [s in split["train"]["scenes"] for s in scenes]
    fold_of = split["train"]["fold_of_scene"]
    for li, layer in enumerate(d["layers"]):
        Xtr = np.concatenate([f.reshape(-1, f.shape[-1]) for f, tr in zip(feats[layer], train) if tr])
        ytr = np.concatenate([t.reshape(-1) for t, tr in zip(targets, train) if tr])
        ftr = np.concatenate([np.full(t.size, fold_of[s]) for t, s, tr in zip(targets, scenes, train) if tr])
        ok = np.isfinite(ytr)
        w, b, lam, mse = ref_fit(Xtr[ok], ytr[ok], ftr[ok])
        assert d["lambda"][li] == lam
        np.testing.assert_allclose(d["cv_mse"][li], mse, rtol=1e-6)
        per_image = {"metric": [], "scale_shift": []}
        eps = dp.EPS_REL * ytr[ok].mean()
        for f, t, tr in zip(feats[layer], targets, train):
            if tr:
                continue
            pred = f @ w + b                                                  # (F, P)
            for k in range(t.shape[0]):
                m = np.isfinite(t[k])
                for key, align in (("metric", False), ("scale_shift", True)):
                    per_image[key].append(ref_metrics(pred[k][m], t[k][m], eps, align))
        for key in ("metric", "scale_shift"):
            for m in dp.METRICS:
                want = np.mean([im[m] for im in per_image[key]])
                assert d[key][m][li] == pytest.approx(want, rel=1e-6, abs=1e-9), (layer, key, m)
    assert d["num_eval_images"] == sum(t.shape[0] for t, tr in zip(targets, train) if not tr)


def test_depth_block_and_figure(depth_run, tmp_path):
    from plots.pck_depth import draw_geometry

    cfg, res = depth_run
    d = res["depth"]
    assert d["layers"] == [-2, -1, *res["layers"]] and d["folds"] == 2 and d["split"]["seed"] == cfg.seed
    for ref in ("pixels", "constant"):
        assert 0 <= d["references"][ref]["scale_shift"]["delta_1.25"] <= 1
    saved = json.loads((Path(cfg.out) / "results.json").read_text())
    assert saved["config"]["depth"] is True and saved["config"]["depth_folds"] == 2 and saved["depth"] == d
    paths = draw_geometry([res, res], ["a", "b"], tmp_path / "g.png")
    assert paths[0].stat().st_size > 10_000 and paths[1].suffix == ".pdf"


def test_one_forward_per_sequence_serves_pck_and_depth(tmp_path, monkeypatch):
    from probes import runner

    calls = []
    load = runner.Probe.load.__func__

    def counting_load(cls, cfg, device="cpu"):
        probe = load(cls, cfg, device)
        probe.model.register_forward_pre_hook(lambda *a: calls.append(1))
        return probe

    monkeypatch.setattr(runner.Probe, "load", classmethod(counting_load))
    cfg = ProbeConfig(out=str(tmp_path / "p"), synthetic_scenes=4, synthetic_size=112, depth=True, depth_folds=2,
                      explore_sequences=0)
    res = runner.run_probe(cfg)
    assert len(calls) == res["num_sequences"] == 4 and res["depth"]["num_eval_images"] > 0


def test_resume_rebuilds_the_depth_probe_without_new_pck_records(depth_run):
    from probes.runner import run_probe
    from probes.store import read_finished

    cfg, res = depth_run
    before = read_finished(Path(cfg.out))
    again = run_probe(cfg)                               # every sequence finished: the forwards feed depth only
    assert again["depth"]["scale_shift"] == res["depth"]["scale_shift"] and again["pck_mean"] == res["pck_mean"]
    assert sorted(read_finished(Path(cfg.out))) == sorted(before)


@pytest.mark.slow
def test_match_page_shows_the_geometry_figure(depth_run, tmp_path):
    import argparse

    from plots.matches import explore
    from tests.test_matches import _browser

    cfg, _ = depth_run
    args = argparse.Namespace(out=Path(cfg.out), sequences=None, layers=None, points=None, dest=tmp_path / "m",
                              tracks=None, figures=0, thumb=96)
    written = explore(args)
    assert tmp_path / "m" / "geometry.png" in written
    html = (tmp_path / "m" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    d = _browser()
    try:
        d.get((tmp_path / "m" / "index.html").as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(d, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        shown = d.execute_script("const i = document.getElementById('geometry'); "
                                 "return [document.getElementById('geometry-box').hidden, i.complete, i.naturalWidth];")
        assert shown[0] is False and shown[1] is True and shown[2] > 1000
        assert d.execute_script("return document.body.dataset.errors") == "0"
    finally:
        d.quit()


@pytest.mark.slow
def test_compare_overlays_the_geometry_of_several_models(depth_run, tmp_path):
    from gasp_cli.compare import compare

    cfg, res = depth_run
    rows = compare(cfg.model, {"one": (None, None), "two": (None, None)}, Path(res["tracks"]), tmp_path,
                   depth=True, depth_folds=2, explore_sequences=0)
    assert [r["label"] for r in rows] == ["one", "two"]
    assert (tmp_path / "geometry.png").stat().st_size > 10_000
    one = json.loads((tmp_path / "one" / "results.json").read_text())["depth"]
    assert one["scale_shift"] == res["depth"]["scale_shift"]         # the same probe, run again, same numbers


# ---- bad input ---------------------------------------------------------------------------------
def test_too_few_scenes_names_the_minimum(tmp_path):
    from probes.runner import run_probe

    cfg = ProbeConfig(out=str(tmp_path / "p"), synthetic_scenes=4, synthetic_size=112, depth=True, depth_folds=3)
    with pytest.raises(ProbeError, match=r"needs at least 6 scenes .* it has 4"):
        run_probe(cfg)
    assert not (tmp_path / "p").exists()
    from probes.depth_split import min_scenes

    assert [min_scenes(k, 0.5) for k in (2, 3, 5)] == [4, 6, 10]     # k train + round(s / 2) held out


def test_depth_train_must_not_share_scenes(tmp_path):
    from probes.runner import run_probe, synthetic_eval_tracks

    base = ProbeConfig(synthetic_scenes=4, synthetic_size=112)
    cfg = ProbeConfig(out=str(tmp_path / "p"), synthetic_scenes=4, synthetic_size=112, depth=True,
                      depth_train=str(synthetic_eval_tracks(base)), depth_folds=2)
    with pytest.raises(ProbeError, match="share scenes"):
        run_probe(cfg)
    assert not (tmp_path / "p").exists()


def test_feature_pck_is_cosine_argmax_matching_of_the_encoder_and_llm_input_features(depth_run):
    """With --depth the probe also matches the -2 and -1 features themselves: recomputed here for each record
    from features read by calling the vision tower and by a hook on the first decoder layer."""
    from gasp.models import load_model
    from probes.store import read_finished
    from tracks.io import TrackReader

    cfg, res = depth_run
    fp = res["feature_pck"]
    assert fp["layers"] == [-2, -1] and len(fp["pck_mean"]) == 2
    model, proc, adapter = load_model(cfg.model, seed=cfg.seed)
    layers = adapter.decoder_layers(model)
    done, reader = read_finished(Path(cfg.out)), TrackReader(res["tracks"])
    per_seq = []
    for key in res["sequences"]:
        a = done[key]["arrays"]
        seq = reader[reader.sequence_keys.index(key)]
        inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=proc, prompt=cfg.prompt, fps=cfg.fps)
        (h, w), F, pos = layout.grid, layout.num_grids, layout.flat_positions
        caught = {}
        hook = layers[0].register_forward_pre_hook(lambda m, x: caught.__setitem__(-1, x[0][0, pos]))
        with torch.no_grad():
            model(**inputs)
            caught[-2] = adapter.pre_projector_features(model, inputs).flatten(1)
        hook.remove()
        fids, qg = a["frame_ids"], int(a["query_grid"])
        tok = metrics.pixels_to_tokens(torch.from_numpy(seq.tracks[fids]).double(), layout.token_size)   # (F, N, 2)
        q_col = tok[qg, :, 0].add(0.5).floor().long().clamp(0, w - 1)
        q_row = tok[qg, :, 1].add(0.5).floor().long().clamp(0, h - 1)
        others = [f for f in range(F) if f != qg]
        rows = []
        for name in (-2, -1):
            x = torch.nn.functional.normalize(caught[name].double(), dim=-1).reshape(F, h * w, -1)
            qv = x[qg][q_row * w + q_col]                                            # (N, D)
            idx = torch.einsum("nd,fpd->fnp", qv, x[others]).argmax(-1)              # (F', N)
            pred = torch.stack([idx // w, idx % w], -1)
            rows.append((metrics.within_delta(pred, tok[others], cfg.delta) & torch.from_numpy(a["valid"])).numpy())
        np.testing.assert_array_equal(a["correct_feat"], np.stack(rows))
        per_seq.append(np.stack(rows).sum((1, 2)) / a["valid"].sum())
    assert fp["pck_mean"] == pytest.approx(np.mean(per_seq, 0).tolist(), abs=1e-12)
