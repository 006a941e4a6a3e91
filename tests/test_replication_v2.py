"""Issue 9's pieces against independent formulas: camera shake, the v2 model-free references (an NCC
appearance matcher among them), linear heads (arm F), Q/K head pairs (arm E), extra PCK thresholds
and the full-weight warm-up."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F_

from tests.conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


# ---- camera shake -------------------------------------------------------------------------------

def _centres(poses):
    return -np.einsum("tji,tj->ti", poses[:, :3, :3], poses[:, :3, 3])


def test_shake_turns_cameras_about_their_centres_by_the_drawn_angles():
    from tracks.camera_path import shake_poses

    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (400, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(400, 3))
    shaken = shake_poses(poses, 5.0, np.random.default_rng(1))
    R = shaken[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(_centres(shaken), _centres(poses), atol=1e-12)    # only the view turns
    # the drawn angles, recomputed independently: identity base rotation, so R = J
    yaw, pitch = np.deg2rad(np.clip(np.random.default_rng(1).normal(0.0, 5.0, (2, 400)), -12.5, 12.5))
    fwd = R[:, 2]                                           # new optical axis in the old camera frame
    np.testing.assert_allclose(np.arctan2(fwd[:, 0], fwd[:, 2]), yaw, atol=1e-12)
    np.testing.assert_allclose(np.arcsin(fwd[:, 1]), pitch, atol=1e-12)
    np.testing.assert_allclose(R[:, 0, 1], 0.0, atol=1e-12)                    # no roll: right axis stays level
    assert np.std(np.rad2deg(yaw)) == pytest.approx(5.0, rel=0.15)


def test_shake_moves_a_point_by_f_tan_of_the_yaw():
    from tracks.camera_path import shake_poses
    from tracks.geometry import project

    K = np.array([[300.0, 0, 100], [0, 300.0, 100], [0, 0, 1]])
    pose = np.eye(4)[None]
    shaken = shake_poses(pose, 4.0, np.random.default_rng(5))
    yaw = np.deg2rad(np.clip(np.random.default_rng(5).normal(0.0, 4.0, (2, 1)), -10, 10))[0, 0]
    pitch = np.deg2rad(np.clip(np.random.default_rng(5).normal(0.0, 4.0, (2, 1)), -10, 10))[1, 0]
    x = np.array([[0.0, 0.0, 10.0]])                        # on the original optical axis
    uv, _ = project(x, K[None], shaken)
    # turning the camera right by yaw moves the point left by about f tan(yaw); pitch moves it vertically
    assert uv[0, 0, 0] == pytest.approx(100 - 300 * np.tan(yaw) / np.cos(pitch), abs=1e-6)
    assert uv[0, 0, 1] == pytest.approx(100 - 300 * np.tan(pitch), abs=1e-6)


def test_shake_zero_renders_byte_identical_and_shake_changes_only_the_views():
    from tracks.synthetic import SyntheticSceneConfig, render_scene

    cfg = SyntheticSceneConfig(height=40, width=40, num_frames=6)
    a, b = render_scene(4, cfg), render_scene(4, replace(cfg, shake_deg=0.0))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.cam_from_world, b.cam_from_world)
    s = render_scene(4, replace(cfg, shake_deg=6.0))
    np.testing.assert_allclose(_centres(s.cam_from_world), _centres(a.cam_from_world), atol=1e-9)
    assert not np.array_equal(s.frames, a.frames)
    assert s.metadata["config"]["shake_deg"] == 6.0
    with pytest.raises(ValueError, match="shake_deg"):
        SyntheticSceneConfig(shake_deg=45)


# ---- model-free references ----------------------------------------------------------------------

def test_ncc_matcher_recovers_an_exact_shift():
    from experiments.replication.baselines import ncc_predictions

    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (200, 200, 3)).astype(np.uint8)
    big = np.repeat(np.repeat(big[::4, ::4], 4, 0), 4, 1)[:200, :200]          # texture coarser than a pixel
    f0, f1 = big[40:152, 40:152], big[40 + 14:152 + 14, 40 + 28:152 + 28]       # frame 1: view moved 2 right, 1 down
    frames = np.stack([f0, f1])                                                 # (2, 112, 112, 3), 8 x 8 tokens of 14
    qxy = np.array([[x * 14 + 6.5, y * 14 + 6.5] for y in range(3, 8) for x in range(3, 8)])
    pred = ncc_predictions(frames, qxy, 0, 14)                                   # (1, N, 2) row, col
    tok = (qxy - 6.5) / 14
    np.testing.assert_array_equal(pred[0], np.stack([tok[:, 1] - 1, tok[:, 0] - 2], -1).astype(int))


def test_pair_references_against_brute_force_counts():
    from experiments.replication.baselines import pair_references
    from tracks.types import TrackSequence

    rng = np.random.default_rng(3)
    F, N, ts, h = 3, 6, 10, 5
    tracks = rng.uniform(0, h * ts - 1, (F, N, 2)).astype(np.float32)
    vis = rng.random((F, N)) > 0.2
    vis[0] = True
    seq = TrackSequence(frames=rng.integers(0, 255, (F, h * ts, h * ts, 3), dtype=np.uint8),
                        depth=np.ones((F, h * ts, h * ts), np.float32), K=np.tile(np.eye(3), (F, 1, 1)),
                        cam_from_world=np.tile(np.eye(4), (F, 1, 1)), frame_index=np.array([0, 2, 7]),
                        tracks=tracks, visible=vis, track_depth=np.ones((F, N), np.float32))
    r = pair_references(seq, ts, deltas=(1.0, 2.0))
    for fi, f in enumerate([1, 2]):
        for n in range(N):
            gx, gy = (tracks[f, n] + 0.5) / ts - 0.5                     # token coordinates
            qx, qy = np.floor((tracks[0, n] + 0.5) / ts - 0.5 + 0.5)
            assert r["valid"][fi, n] == vis[f, n]
            for d in (1.0, 2.0):
                hits = sum(np.hypot(c - gx, rr - gy) <= d + 1e-9 for rr in range(h) for c in range(h))
                assert r[f"uniform@{d:g}"][fi, n] == pytest.approx(hits / h ** 2)
                assert r[f"same_position@{d:g}"][fi, n] == (np.hypot(qx - gx, qy - gy) <= d + 1e-9)
    assert list(r["dt"]) == [2, 7]


def test_benchmark_references_on_a_rendered_split(tmp_path):
    from experiments.replication.baselines import benchmark_references
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    path = tmp_path / "t.h5"
    make_synthetic_file(path, 3, seed=11, grid=4, split="eval",
                        config=SyntheticSceneConfig(height=56, width=56, num_frames=26, shake_deg=8.0))
    r = benchmark_references(path, 14, same_keys=set())
    assert r["num_sequences"] == 3 and r["same_texture_sequences"] == 0
    for name in ("uniform", "same_position", "appearance"):
        assert set(r[name]) == {"1", "2", "4"}
        pooled = [r[name][d]["pooled"] for d in ("1", "2", "4")]
        assert pooled == sorted(pooled) and all(0 <= p <= 1 for p in pooled)    # a larger delta never scores less
    assert 0 <= r["visible_at_max_dt"] <= 1 and set(r["visible_at_dt"]) >= {"1", "24"}


# ---- heads: linear (arm F) and Q/K pairs (arm E) ------------------------------------------------

def test_linear_head_is_the_normalised_principal_query_projection(tmp_path):
    from gasp.heads import CorrespondenceHead, CorrespondenceHeads

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 16, generator=g, dtype=torch.float64), torch.randn(24, generator=g, dtype=torch.float64)
    head = CorrespondenceHead(16, 0, 5).double().svd_init_(w, b)
    assert head.fc2 is None and head.fc1.weight.shape == (5, 16)
    evals, evecs = torch.linalg.eigh(w @ w.T)                  # U without an SVD
    u = evecs[:, torch.argsort(evals, descending=True)[:5]]
    x = torch.randn(7, 16, generator=g, dtype=torch.float64)
    ref = F_.normalize((x @ w.T + b) @ u, dim=-1)              # U^T (W x + b), up to each column's sign
    got = head(x)
    signs = torch.sign((got * ref).sum(0))
    torch.testing.assert_close(got, ref * signs, atol=1e-10, rtol=1e-10)
    heads = CorrespondenceHeads([0, 2], 16, 0, 5)
    heads.save_pretrained(tmp_path / "h")
    back = CorrespondenceHeads.from_pretrained(tmp_path / "h")
    assert back.hidden == 0 and back[2].fc2 is None


def test_flat_heads_repeats_kv_heads_like_transformers():
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import repeat_kv

    from gasp.qk_heads import flat_heads

    k = torch.randn(2, 5, 3)                                   # (Hkv, N, D)
    ref = repeat_kv(k[None], 3)[0]                             # (H, N, D)
    torch.testing.assert_close(flat_heads(k, 6), ref.transpose(0, 1).reshape(5, 18))


def _tiny_geo_run(tmp_path, on, extra=()):
    from gasp.train.config import load_config
    from gasp.train.recipe import setup

    cfg = load_config(None, ["model.grad_ckpt=false", "model.mixed_precision='no'", "heads.hidden=32",
                             "heads.d_emb=8", "data.grid=4", "data.min_frames=3", "data.max_frames=3",
                             "data.synthetic_scenes=1", "data.lm_ratio=0", "optim.max_steps=1",
                             f"loss.on={on}", f"run.out={tmp_path}", *extra])
    run, _ = setup(cfg)
    from gasp.train.recipe import make_batch
    return run, make_batch(run, "geo", 0)


def test_qk_head_pair_init_compares_q_with_k_in_w_q_basis(tmp_path):
    from gasp.capture.qk import capture_qk
    from gasp.qk_heads import QKHeads, flat_heads, load_heads

    run, batch = _tiny_geo_run(tmp_path, "qk_heads")
    heads = run.heads
    assert isinstance(heads, QKHeads)
    layers = run.adapter.decoder_layers(run.peft_model)
    with torch.no_grad(), capture_qk(run.peft_model, layers, positions=batch["positions"]) as rec:
        run.peft_model(**batch["inputs"])
    for i in heads.layers:
        qp = layers[i].self_attn.q_proj.base_layer
        u, _, _ = torch.linalg.svd(qp.weight.detach(), full_matrices=False)
        m = min(heads.hidden, u.shape[1])
        q, k = flat_heads(rec.q[i][0]), flat_heads(rec.k[i][0], rec.q[i].shape[1])
        ref_q = F_.normalize(F_.gelu(q @ u[:, :m])[:, :heads.d_emb], dim=-1)   # fc2 = [I | 0] keeps E coords
        ref_k = F_.normalize(F_.gelu(k @ u[:, :m])[:, :heads.d_emb], dim=-1)
        eq, ek = heads.q[i](q), heads.k[i](k)
        torch.testing.assert_close(eq @ ek.T, ref_q @ ref_k.T, atol=2e-4, rtol=2e-4)
    heads.save_pretrained(tmp_path / "pair")
    back = load_heads(tmp_path / "pair")
    assert isinstance(back, QKHeads) and back.layers == heads.layers
    torch.testing.assert_close(back.k[0].fc1.weight, heads.k[0].fc1.weight)


def _lora_grad(run, layer, proj):
    mod = getattr(run.adapter.decoder_layers(run.peft_model)[layer].self_attn, proj)
    g = mod.lora_B["default"].weight.grad
    return 0.0 if g is None else float(g.abs().sum())


@pytest.mark.slow
def test_only_head_pairs_on_qk_reach_the_last_layers_q_and_k(tmp_path):
    """The design reason for arm E: C's heads read q_proj's input, so no loss reaches the last layer's
    q_proj/k_proj; E's heads read that layer's Q and K, so its loss does."""
    last = None
    for on, reaches in (("heads", False), ("qk_heads", True)):
        run, batch = _tiny_geo_run(tmp_path / on, on, ["lora.dropout=0.0"])
        last = len(run.adapter.decoder_layers(run.peft_model)) - 1
        # LoRA B starts at zero, so give A and B a value for the gradients to be informative
        for n, p in run.peft_model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.01)
        run.gm(batch)["loss"].backward()
        got = (_lora_grad(run, last, "q_proj") > 0, _lora_grad(run, last, "k_proj") > 0)
        assert got == (reaches, reaches), on
    assert last is not None


# ---- extra PCK thresholds in the probe ----------------------------------------------------------

def test_extra_deltas_match_the_probe_run_at_that_delta(tmp_path):
    from probes.runner import ProbeConfig, run_probe

    base = dict(model="tiny-qwen2.5-vl", synthetic_scenes=2, synthetic_size=112, seed=0)
    many = run_probe(ProbeConfig(out=str(tmp_path / "a"), extra_deltas=(1.0, 4.0), **base))
    for d in (1.0, 4.0):
        one = run_probe(ProbeConfig(out=str(tmp_path / f"d{d:g}"), delta=d, **base))
        assert many["pck_at"][f"{d:g}"]["pck_mean"] == pytest.approx(one["pck_mean"], abs=1e-12)
    lo, mid, hi = (np.array(many["pck_at"]["1"]["pck_mean"]), np.array(many["pck_mean"]),
                   np.array(many["pck_at"]["4"]["pck_mean"]))
    assert (lo <= mid + 1e-12).all() and (mid <= hi + 1e-12).all()


# ---- the warm-up trains the vision tower too ----------------------------------------------------

def test_full_warmup_trains_every_weight_and_saves_a_loadable_base(tmp_path):
    from gasp.data.synthetic_instruct import render_scenes, write_synthetic_instruct
    from experiments.replication.warmup import full_warmup
    from gasp.models import load_model
    from gasp.models.tiny import save_tiny
    from tracks.synthetic import SyntheticSceneConfig

    init = save_tiny("tiny-qwen2.5-vl", tmp_path / "init", seed=0)
    js = write_synthetic_instruct(render_scenes(2, 7, SyntheticSceneConfig(height=56, width=56, num_frames=4)),
                                  tmp_path / "instruct", num_frames=2)
    base = full_warmup(init, js, tmp_path / "w", steps=3, lr=1e-3, size=(56, 56), num_frames=2)
    before, _, _ = load_model(str(init))
    after, _, adapter = load_model(str(base))
    vis_b, vis_a = adapter.vision_tower(before).state_dict(), adapter.vision_tower(after).state_dict()
    assert any(not torch.equal(vis_b[k], vis_a[k]) for k in vis_b)                   # the vision tower moved
    rows = [json.loads(ln) for ln in (tmp_path / "w" / "warmup_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert full_warmup(init, js, tmp_path / "w", steps=3, lr=1e-3, size=(56, 56), num_frames=2) == base  # reused


# ---- the v2 report reads its targets from the JSON ----------------------------------------------

def _ref(same_pooled, same_12, app, vis, n_same, n=30):
    bins = lambda v: {"1-4": v, "5-11": v, "12-24": v}  # noqa: E731
    row = lambda v, b: {"mean": v, "pooled": v, "by_dt": b}  # noqa: E731
    return {"uniform": {"2": row(0.05, bins(0.05))},
            "same_position": {"2": row(same_pooled, {"1-4": 0.1, "5-11": 0.1, "12-24": same_12})},
            "appearance": {"2": row(app, bins(app))}, "visible_at_max_dt": vis,
            "same_texture_sequences": n_same, "num_sequences": n}


def test_benchmark_targets_are_the_issues_thresholds():
    from experiments.replication.report import benchmark_targets

    ok = [m for _, _, m in benchmark_targets(_ref(0.30, 0.15, 0.60, 0.50, 10))]
    assert ok == [True, True, True, True, True]                         # every bound is inclusive
    bad = [m for _, _, m in benchmark_targets(_ref(0.31, 0.16, 0.61, 0.49, 9))]
    assert bad == [False, False, False, False, False]


def test_replication_targets_v2_apply_the_conditions():
    from experiments.replication.aggregate import summarize_arms
    from experiments.replication.report import replication_targets_v2

    def run(pck, rho, same, qa, blind, dt1):
        qa_res = lambda a: {c: {"accuracy": a, "chance": 0.25, "n": 4}  # noqa: E731
                            for c in ("camera_motion", "object_count", "relative_depth", "all")}
        return {"probe": {"layers": [0, 1], "dt": list(range(1, 25)), "delta": 2.0, "rope": "post",
                          "pck_mean": pck, "pck_std": [0.1, 0.1], "rho": rho, "dt_norm": [[0.8] * 24] * 2,
                          "dt_pck": [[dt1] * 24] * 2},
                "same_texture_pck": same, "other_pck": same, "qa": qa_res(qa), "qa_blind": qa_res(blind)}

    runs = {"A": [run([0.1, 0.15], [-0.2, -0.1], [0.1, 0.1], 0.5, 0.25, 0.2)] * 2,
            "B": [run([0.3, 0.4], [0.1, 0.2], [0.2, 0.3], 0.5, 0.25, 0.4)] * 2,
            "C": [run([0.4, 0.6], [0.2, 0.4], [0.3, 0.5], 0.6, 0.25, 0.6)] * 2}
    res = {"summary": summarize_arms(runs), "runs": runs, "references": _ref(0.1, 0.1, 0.5, 0.6, 15)}
    got = {t.split(",")[0]: ok for t, _, ok in replication_targets_v2(res)}
    assert list(got.values()) == [True, True, True, True, True]
    runs["C"] = [run([0.4, 0.6], [0.2, 0.4], [0.3, 0.5], 0.6, 0.25, 0.05)] * 2    # PCK(dt=1) < 2 x uniform
    runs["A"] = [run([0.1, 0.15], [-0.2, -0.1], [0.1, 0.1], 0.5, 0.5, 0.2)] * 2   # A no better than grey
    res["summary"] = summarize_arms(runs)
    got = {t.split(",")[0]: ok for t, _, ok in replication_targets_v2(res)}
    assert got["C Y(Δt=24) ≥ 0.7"] is None and got["C ≥ A on camera-motion QA"] is False


@pytest.mark.parametrize("version", [2, 3])
def test_published_tables_are_the_report_of_the_committed_json(version):
    """docs/results/vN/tables.md is scripts/report_small.py's output on docs/results/vN/results.json."""
    from experiments.replication.report import report

    res = json.loads((ROOT / "docs" / "results" / f"v{version}" / "results.json").read_text())
    assert report(res) == (ROOT / "docs" / "results" / f"v{version}" / "tables.md").read_text()
    assert res["plan"]["version"] == version
    assert res["plan_sha"] and res["git_sha"].startswith(res["plan_sha"])        # the run ran the plan's commit
    assert {"uniform", "same_position", "appearance"} <= set(res["references"])
    assert set(res["summary"]) == {"base", "A", "B", "C", "D", "E", "F"}
    assert all(s["peak"]["pck"] is not None for s in res["summary"].values())


def test_results_md_quotes_the_v3_tables_and_report_small_prints_them(capsys):
    from experiments import report_small

    tables = (ROOT / "docs" / "results" / "v3" / "tables.md").read_text()
    assert tables in (ROOT / "RESULTS.md").read_text()
    assert report_small.main([]) == 0                                          # default: the committed v3 JSON
    assert capsys.readouterr().out == tables + "\n"
    res = json.loads((ROOT / "docs" / "results" / "v3" / "results.json").read_text())
    assert set(res["val_features"]) == {"base_init", "vision_pretrained", "base"}


def test_design_benchmark_study_never_uses_a_split_seed(tmp_path):
    """experiments/design_benchmark.py: references and section-1 checks per camera setting, on design seeds only."""
    from experiments import design_benchmark

    from experiments.replication.plan import SPLIT_SEEDS, SPLIT_SEEDS_V2

    assert design_benchmark.DESIGN_SEED not in {*SPLIT_SEEDS.values(), *SPLIT_SEEDS_V2.values()}
    out = tmp_path / "design.json"
    assert design_benchmark.main(["--out", str(out), "--scenes", "2", "--shake", "0", "10", "--pan", "0",
                                  "--size", "112"]) == 0
    res = json.loads(out.read_text())
    assert [(r["shake_deg"], r["pan_deg"]) for r in res["rows"]] == [(0.0, 0.0), (10.0, 0.0)]
    for r in res["rows"]:
        assert len(r["targets"]) == 5 and r["all_met"] == all(t["met"] for t in r["targets"])
        assert r["references"]["num_sequences"] == 2 and r["references"]["same_texture_sequences"] == 1
        lo, hi = r["same_position_dt12_bootstrap_95"]
        assert lo <= r["references"]["same_position"]["2"]["by_dt"]["12-24"] <= hi
    still, shaken = (r["references"]["same_position"]["2"]["pooled"] for r in res["rows"])
    assert shaken < still                                          # shake moves points away from their token
    assert res["git_sha"] and res["design_seed"] == design_benchmark.DESIGN_SEED
