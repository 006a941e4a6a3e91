"""The GASP recipe on the tiny Qwen2.5-VL and synthetic tracks (CPU, a few seconds each)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port
import torch

from gasp.train.config import load_config
from gasp.train.geo_stream import GeoStreamError
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tracks")
    cfg = SyntheticSceneConfig(height=112, width=112, num_frames=12)
    make_synthetic_file(d / "train.h5", 4, seed=1, config=cfg, grid=4, split="train")
    make_synthetic_file(d / "eval.h5", 1, seed=2, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=4, split="eval")
    return d


def _cfg(tracks, out, *extra):
    return load_config(ROOT / "configs" / "tiny_synthetic.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={out}",
        "loss.lm=false", "data.min_frames=3", "data.max_frames=4", "run.eval_every=0", "run.save_every=0",
        "run.eval_sequences=1", *extra])


def test_trainable_parameters_are_lora_and_heads(tracks, tmp_path):
    from gasp.train.recipe import setup

    run, _ = setup(_cfg(tracks, tmp_path))
    names = [n for n, p in run.gm.named_parameters() if p.requires_grad]
    lora = [n for n in names if n.startswith("model.")]
    heads = [n for n in names if n.startswith("heads.")]
    assert len(lora) + len(heads) == len(names)
    llm_lora = re.compile(r"model\.base_model\.model\.model\.language_model\.layers\.\d+\."
                          r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.lora_[AB]\.default\.weight")
    assert lora and all(llm_lora.fullmatch(n) for n in lora), [n for n in lora if not llm_lora.fullmatch(n)]
    assert len(lora) == 4 * 7 * 2                                     # 4 layers x 7 projections x (A, B)
    assert sorted({n.split(".")[2] for n in heads}) == ["0", "1", "2", "3"]
    assert not any("visual" in n for n in names)
    frozen = sum(p.numel() for n, p in run.gm.named_parameters() if not p.requires_grad)
    assert frozen > 0


def _grads(tracks, out, ckpt):
    from gasp.train.recipe import make_batch, setup

    torch.manual_seed(0)
    run, _ = setup(_cfg(tracks, out, f"model.grad_ckpt={str(ckpt).lower()}", "lora.dropout=0.0"))
    # a nonzero LoRA B so gradients reach A and the layers below
    with torch.no_grad():
        for n, p in run.gm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(hash(n) % 2**31)) * 0.02)
    batch = make_batch(run, "geo", 3)
    calls = []
    q = run.adapter.decoder_layers(run.peft_model)[2].self_attn.q_proj
    handle = q.register_forward_pre_hook(lambda m, a: calls.append(1))
    run.gm(batch)["loss"].backward()
    handle.remove()
    assert len(calls) == (2 if ckpt else 1)                          # checkpointing really recomputes
    return {n: p.grad.clone() for n, p in run.gm.named_parameters() if p.requires_grad and p.grad is not None}


def test_activation_checkpointing_gives_same_gradients(tracks, tmp_path):
    a = _grads(tracks, tmp_path / "a", ckpt=True)
    b = _grads(tracks, tmp_path / "b", ckpt=False)
    assert a.keys() == b.keys()
    assert any("layers.0.self_attn.q_proj.lora_A" in n for n in a)   # the lowest layer gets gradient
    assert sum(float(g.abs().sum()) for g in a.values()) > 0
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-6, msg=n)


def _metrics(out):
    return [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_corr_loss_decreases(tracks, tmp_path):
    from gasp.train.recipe import train

    train(_cfg(tracks, tmp_path, "optim.max_steps=30", "loss.depth=false", "run.eval_sequences=0",
               "optim.warmup_steps=2"))
    m = _metrics(tmp_path)
    corr = [r["l_corr"] for r in m]
    assert len(corr) == 30 and all(r["l_depth"] is None and r["l_lm"] is None for r in m)
    first, last = np.mean(corr[:5]), np.mean(corr[-5:])
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tracks, tmp_path):
    from gasp.train.recipe import train

    extra = ("optim.max_steps=6", "run.save_every=3", "optim.grad_accum=2", "run.eval_sequences=0")
    train(_cfg(tracks, tmp_path / "full", *extra))
    cfg = _cfg(tracks, tmp_path / "cut", *extra)
    train(cfg, stop_after=4)                                   # "interrupted" after step 4, checkpoint at 3
    assert len(_metrics(tmp_path / "cut")) == 4
    train(cfg, resume=tmp_path / "cut" / "checkpoint-3")
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "full")
    assert (tmp_path / "cut" / "checkpoint-6" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_resume_runs_on_the_thread_count_the_checkpoint_was_saved_with(tracks, tmp_path):
    from gasp.train.checkpoint import STATE_NAME
    from gasp.train.recipe import train

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = _cfg(tracks, tmp_path / "cut", "optim.max_steps=4", "run.save_every=2", "run.eval_sequences=0")
        train(cfg, stop_after=3)
        state = torch.load(tmp_path / "cut" / "checkpoint-2" / STATE_NAME, weights_only=True)
        assert state["num_threads"] == 2
        torch.set_num_threads(1)                                   # a process started with other threads
        train(cfg, resume=tmp_path / "cut" / "checkpoint-2")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_adapter_loads_with_stock_peft(tracks, tmp_path):
    from peft import PeftModel

    from gasp.models import build_tiny
    from gasp.train.recipe import make_batch, save, setup, train_step

    run, _ = setup(_cfg(tracks, tmp_path))
    for s in range(2):
        train_step(run, s)
    save(run, 2)
    inputs = make_batch(run, "geo", 0)["inputs"]
    run.peft_model.eval()
    with torch.no_grad():
        ref = run.peft_model(**inputs).logits
        base, _ = build_tiny("tiny-qwen2.5-vl", seed=0)
        plain = base(**inputs).logits
        stock = PeftModel.from_pretrained(base, str(tmp_path / "checkpoint-2" / "adapter")).eval()
        got = stock(**inputs).logits
    assert (ref - plain).abs().max() > 1e-4                    # training changed the model
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "checkpoint-2" / "heads" / "heads.safetensors").is_file()


def test_eval_and_outputs(tracks, tmp_path):
    from gasp.train.recipe import train

    from probes.train_eval import evaluate

    summary = train(_cfg(tracks, tmp_path, "optim.max_steps=2", "run.eval_every=1"), evaluator=evaluate)
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["pck_mean"]) == 4 and res["num_sequences"] == 1 and len(res["dt_norm"]) == 4
    assert summary["results"]["pck_mean"] == res["pck_mean"]
    evals = [json.loads(ln) for ln in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 1, 2]                # step 0: the untrained reference
    assert evals[0]["references"] and set(evals[0]["references"]) == {"uniform", "same_position"}
    cfg_text = (tmp_path / "config.yaml").read_text()
    assert "git_sha" in cfg_text and "gasp_version" in cfg_text
    assert set(_metrics(tmp_path)[0]) >= {"step", "lr", "loss", "l_lm", "l_corr", "l_depth"}


def test_too_few_frames_is_a_clear_error(tracks, tmp_path):
    from gasp.train.recipe import setup

    with pytest.raises(GeoStreamError, match=r"fewer frames than data.min_frames=20"):
        setup(_cfg(tracks, tmp_path, "data.min_frames=20", "data.max_frames=24"))


@pytest.mark.slow
def test_two_process_run_keeps_weights_in_sync(tracks, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(free_port()),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "scripts" / "train_gasp.py"),
           f"data.tracks={tracks / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={out}",
           "loss.lm=false", "data.min_frames=3", "data.max_frames=4", "optim.max_steps=3", "run.eval_every=0",
           "run.save_every=0", "run.eval_sequences=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    sums = summary["weights_checksum"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert "num_processes: 2" in (out / "config.yaml").read_text()   # gloo MULTI_CPU, not 2 single runs
    assert len(_metrics(out)) == 3 and (out / "checkpoint-3" / "adapter").is_dir()
    assert (out / "results.json").is_file()


def _instruct(tmp_path, tracks_dir):
    from gasp.data.synthetic_instruct import (
        scenes_from_tracks,
        write_synthetic_instruct,
    )

    path = write_synthetic_instruct(scenes_from_tracks(tracks_dir / "train.h5"), tmp_path / "lm", num_frames=3)
    records = json.loads(path.read_text())
    records[0]["video"] = "videos/not_there"                   # one record's video is missing
    path.write_text(json.dumps(records))
    return path


def test_lm_stream_skips_missing_videos(tracks, tmp_path, caplog):
    from gasp.train.lm_stream import LMStream

    stream = LMStream(_instruct(tmp_path, tracks), None, num_frames=3, seed=0)
    n = len(stream.dataset)
    examples = [stream[i] for i in range(n)]                    # one full epoch meets the missing record once
    assert all(ex is not None and ex.frames.shape[0] == 3 for ex in examples)
    assert stream.dataset.missing == 1
    assert "not_there" in caplog.text


def test_interleaved_lm_and_lm_only_control(tracks, tmp_path):
    from gasp.train.recipe import make_batch, setup, train

    path = _instruct(tmp_path, tracks)
    extra = (f"data.instruct={path}", "loss.lm=true", "data.num_frames_lm=3", "run.eval_sequences=0")
    train(_cfg(tracks, tmp_path / "mix", *extra, "data.lm_ratio=0.5", "optim.max_steps=4"))
    m = _metrics(tmp_path / "mix")
    kinds = ["lm" if r["l_lm"] is not None else "geo" for r in m]
    assert kinds == ["geo", "lm", "geo", "lm"]
    assert all(np.isfinite(r["loss"]) for r in m)
    # the paper's control row: LM only, no heads
    run, _ = setup(_cfg(tracks, tmp_path / "lm_only", *extra, "loss.corr=false", "loss.depth=false"))
    assert run.heads is None and run.geo is None
    assert all(".lora_" in n for n, p in run.gm.named_parameters() if p.requires_grad)
    batch = make_batch(run, "lm", 0)
    labels = batch["inputs"]["labels"]
    assert (labels == -100).any() and (labels != -100).any()
    assert np.isfinite(float(run.gm(batch)["loss"]))


def test_loss_on_qk_supervises_the_attentions_own_q_and_k(tracks, tmp_path):
    from gasp.train.gasp_model import qk_embedding
    from gasp.capture.qk import capture_qk
    from gasp.losses import gasp_losses
    from gasp.train.recipe import make_batch, setup

    run, _ = setup(_cfg(tracks, tmp_path, "loss.on=qk", "model.grad_ckpt=true"))
    assert run.heads is None and not any(n.startswith("heads.") for n, _ in run.gm.named_parameters())
    batch = make_batch(run, "geo", 1)
    res = run.gm(batch)
    res["loss"].backward()
    grads = {n: p.grad for n, p in run.gm.named_parameters() if p.requires_grad and p.grad is not None}
    assert any("layers.0.self_attn.k_proj.lora_B" in n and float(g.abs().sum()) > 0 for n, g in grads.items())
    # the same numbers from Q/K captured in a separate no-grad forward, embedded independently per layer
    tg, (nf, p) = batch["targets"], batch["grids"]
    with torch.no_grad(), capture_qk(run.peft_model, positions=batch["positions"]) as rec:
        run.peft_model(**batch["inputs"])
    k = torch.stack([qk_embedding(rec.k[i][0], rec.q[i].shape[1]) for i in rec.layers]).unflatten(1, (nf, p))
    q = torch.stack([qk_embedding(rec.q[i][0]) for i in rec.layers]).unflatten(1, (nf, p))
    ref = gasp_losses(k, tg.anchor_tok, tg.gt_tok, tg.valid, tg.gt_depth, tg.tok_depth, query_frame=tg.query_frame,
                      tau=run.cfg.loss.tau, anchor_emb=q)
    torch.testing.assert_close(res["l_corr"], ref["l_corr"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res["l_depth"], ref["l_depth"], rtol=1e-4, atol=1e-5)


def test_real_tracks_without_instruction_data_is_a_clear_error(tracks, tmp_path):
    import shutil

    import h5py

    from gasp.train.preflight import InputError
    from gasp.train.recipe import setup

    real = tmp_path / "real"                         # scenes without synthetic metadata, as from DL3DV
    real.mkdir()
    shutil.copy(tracks / "train.h5", real / "train.h5")
    with h5py.File(real / "train.h5", "r+") as f:
        for g in f["scenes"].values():
            g.attrs["metadata"] = "{}"
    cfg = load_config(ROOT / "configs" / "tiny_synthetic.yaml", [
        f"data.tracks={real / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={tmp_path / 'out'}",
        "data.min_frames=3", "data.max_frames=4", "run.eval_sequences=1"])
    with pytest.raises(InputError, match=r"data.instruct is not set.*not from data.tracks=.*loss.lm=false"):
        setup(cfg)
    assert not (tmp_path / "out").exists()             # refused before the eval scenes were rendered


def test_geo_stream_reads_only_the_sampled_frames_and_matches_whole_scene_indexing(tracks, monkeypatch):
    from gasp.train.geo_stream import GeoStream
    from tracks.geometry import build_tracks
    from tracks.io import TrackReader

    stream = GeoStream(tracks / "train.h5", grid=4, min_frames=3, max_frames=5, radius=4, seed=3)
    whole = TrackReader(tracks / "train.h5")
    read = []
    orig = TrackReader._read_frames
    monkeypatch.setattr(TrackReader, "_read_frames", lambda self, g, ids, where: read.append(len(ids)) or
                        orig(self, g, ids, where))
    for index in range(6):
        seq = stream[index]
        n_read = read[-1]
        scene = whole.scene(seq.scene)
        ids = [int(np.flatnonzero(scene.frame_index == f)[0]) for f in seq.frame_index]
        assert np.array_equal(seq.frames, scene.frames[ids])
        exp = build_tracks(scene.depth[ids], scene.K[ids], scene.cam_from_world[ids], query_frame=0, grid=4)
        assert np.array_equal(seq.tracks, exp[0], equal_nan=True) and np.array_equal(seq.visible, exp[1])
        assert n_read == len(seq.frame_index) < scene.num_frames


@pytest.mark.slow
def test_two_process_resume_restores_every_ranks_rng(tracks, tmp_path):
    """With LoRA dropout the RNG matters; each rank must get its own state back on resume."""
    import torch

    def launch(*args):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(free_port()),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "scripts" / "train_gasp.py"), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, r.stderr[-3000:]

    full = tmp_path / "full"
    launch(f"data.tracks={tracks / 'train.h5'}", f"run.out={full}", "loss.lm=false", "data.min_frames=3",
           "data.max_frames=5", "optim.max_steps=4", "run.save_every=2", "run.eval_every=0", "run.eval_sequences=0",
           "lora.dropout=0.2")
    state = torch.load(full / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    summary = lambda out: json.loads((out / "train_summary.json").read_text())["weights_checksum"]  # noqa: E731
    for name, keep in (("resumed", 2), ("rank0_rng_only", 1)):      # the second is the old behaviour
        out = tmp_path / name
        out.mkdir()
        (out / "config.yaml").write_text((full / "config.yaml").read_text().replace(str(full), str(out)))
        ck = out / "checkpoint-2"
        subprocess.run(["cp", "-r", str(full / "checkpoint-2"), str(ck)], check=True)
        torch.save({**state, "rng": state["rng"][:keep]}, ck / "trainer_state.pt")
        launch("--resume", str(ck))
        same = summary(out) == summary(full)
        assert same == (keep == 2), name
    assert _metrics(tmp_path / "resumed") == _metrics(full)[2:]                  # steps 3 and 4


def test_lora_wrap_and_checkpointing_raise_no_deprecation_warning(tracks, tmp_path):
    """Issue 12: our calls used transformers' deprecated gradient-checkpointing names (FutureWarning)."""
    import warnings

    from gasp.train.gasp_model import build_lora_model
    from gasp.models import load_model
    from gasp.models.loading import apply_lora

    cfg = _cfg(tracks, tmp_path, "model.grad_ckpt=true")
    model, _, adapter = load_model("tiny-qwen2.5-vl")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        peft_model = build_lora_model(model, adapter, cfg)
        assert peft_model.base_model.model.is_activation_checkpointing
        peft_model.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
        base, _, _ = load_model("tiny-qwen2.5-vl")
        apply_lora(base, str(tmp_path / "adapter"), "tiny-qwen2.5-vl")


@pytest.mark.slow
def test_workers_prepare_the_same_batches_and_resume_exactly(tracks, tmp_path):
    """Issue 11: DataLoader workers change when batches are made, never which (LM and geo batches, dropout on)."""
    from gasp.train.recipe import train

    extra = ("optim.max_steps=6", "run.save_every=3", "run.eval_sequences=0", "lora.dropout=0.1", "loss.lm=true",
             "data.lm_ratio=0.5", f"data.cache={tmp_path / 'data'}")
    train(_cfg(tracks, tmp_path / "w0", *extra, "data.num_workers=0"))
    s = train(_cfg(tracks, tmp_path / "w2", *extra, "data.num_workers=2"))
    assert s["data"]["num_workers"] == 2 and s["data"]["micro_batches"] == 6
    m0, m2 = _metrics(tmp_path / "w0"), _metrics(tmp_path / "w2")
    assert m0 == m2 and {r["l_lm"] is None for r in m2} == {True, False}      # both kinds of batch ran
    cfg = _cfg(tracks, tmp_path / "cut", *extra, "data.num_workers=2")
    train(cfg, stop_after=4)
    train(cfg, resume=tmp_path / "cut" / "checkpoint-3")
    assert _metrics(tmp_path / "cut") == m2


def test_the_first_step_already_moves_and_the_schedule_is_cosine_after_warmup(tracks, tmp_path):
    """Step 1 runs at lr / warmup, not 0 (friction item 11): steps 1 and 2 log different losses."""
    import math

    from gasp.train.recipe import cosine_with_warmup, train

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup=4, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    want = [0.25, 0.5, 0.75, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert lrs == pytest.approx(want)
    train(_cfg(tracks, tmp_path, "optim.max_steps=3", "optim.warmup_steps=2", "run.eval_sequences=0"))
    m = _metrics(tmp_path)
    assert m[0]["lr"] == pytest.approx(0.5 * m[1]["lr"]) and m[0]["lr"] > 0 and m[0]["loss"] != m[1]["loss"]
