"""The objectives registry (gasp/objectives) and PseudoGD's training wiring on the tiny Qwen2.5-VL (CPU).

GASP's heads and arm E give the losses they gave before the registry; PseudoGD's gradients reach the vision
LoRA and the projector and nothing frozen moves; its arms, refusals, checkpoint and resume."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gasp.train.config import ConfigError, load_config
from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tracks")
    cfg = SyntheticSceneConfig(height=112, width=112, num_frames=10)
    make_synthetic_file(d / "train.h5", 3, seed=1, config=cfg, grid=4, split="train")
    make_synthetic_file(d / "eval.h5", 1, seed=2, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=4, split="eval")
    return d


def _pgd(tracks, out, *extra):
    """configs/pseudogd_tiny.yaml (arm P) on the fixture's tracks, small."""
    return load_config(ROOT / "configs" / "pseudogd_tiny.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={out}",
        "data.min_frames=3", "data.max_frames=4", "run.eval_sequences=1", "optim.max_steps=2", "data.num_workers=0",
        *extra])


def _gasp(tracks, out, *extra):
    return load_config(ROOT / "configs" / "tiny_synthetic.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={out}",
        "loss.lm=false", "data.min_frames=3", "data.max_frames=4", "run.eval_sequences=1", "data.num_workers=0",
        *extra])


def _setup(cfg):
    from gasp.train.recipe import setup

    run, _ = setup(cfg)
    return run


# ---- the registry --------------------------------------------------------------------------------------
def test_the_registry_holds_every_objective_file_and_refuses_unknown_names():
    import pkgutil

    import gasp.objectives as objectives

    assert set(objectives.names()) == {"heads", "qk", "qk_heads", "pgd_depth", "pgd_structure"}
    files = {m.name for m in pkgutil.iter_modules(objectives.__path__)} - objectives._NOT_OBJECTIVES
    assert files == {objectives.get(n).__module__.rsplit(".", 1)[1] for n in objectives.names()}   # one file each
    with pytest.raises(objectives.ObjectiveError, match="registered: heads, pgd_depth"):
        objectives.get("sam")


@pytest.mark.parametrize("items, want", [
    (["objectives=[{name: sam}]"], "unknown objective 'sam'"),
    (["objectives=[{name: pgd_depth}, {name: pgd_depth}]"], "listed twice"),
    (["objectives=[{name: pgd_depth, head: none}]"], "takes heads mlp, linear"),
    (["objectives=[{name: pgd_depth, site: qk}]"], "reads pre_projector, projector"),
    (["objectives=[{name: pgd_depth, teacher: x}]"], "takes no teacher"),
    (["objectives=[{name: heads}, {name: qk_heads}]"], "both keep their heads"),
    (["objectives=[{name: pgd_depth, weight: -1}]"], "weight must be >= 0"),
    (["optim.warmup_ratio=1.5"], "warmup_ratio"),
    (["lora.vision_r=4", "model.freeze_vision=false"], "choose one"),
])
def test_bad_objective_settings_are_config_errors(items, want):
    with pytest.raises(ConfigError, match=re.escape(want)):
        load_config(None, items)


def test_loss_on_is_the_objective_list_when_none_is_given():
    from gasp.train.config import objective_specs

    assert [s.name for s in objective_specs(load_config(None, ["loss.on=qk_heads"]))] == ["qk_heads"]
    assert objective_specs(load_config(None, ["loss.corr=false", "loss.depth=false"])) == []
    assert [s.name for s in objective_specs(load_config(None, ["objectives=[{name: pgd_structure}]"]))] == \
        ["pgd_structure"]


def test_warmup_ratio_sets_three_percent_of_the_steps():
    from gasp.train.config import warmup_steps

    assert warmup_steps(load_config(None, ["optim.warmup_ratio=0.03", "optim.max_steps=100"]).optim) == 3
    assert warmup_steps(load_config(None, ["optim.warmup_ratio=0.03", "optim.max_steps=40"]).optim) == 2  # ceil 1.2
    assert warmup_steps(load_config(None, ["optim.warmup_steps=7"]).optim) == 7


# ---- GASP's objectives give the losses they gave before the registry -------------------------------------
@pytest.mark.parametrize("on", ["heads", "qk_heads"])
def test_gasp_objectives_are_the_pre_registry_losses(tracks, tmp_path, on):
    """The loss the registry computes equals the pre-registry code path, written out here: capture, heads,
    gasp_losses, lambda-weighted sum (arm D, loss.on=qk, has its own such test in test_trainer)."""
    from gasp.capture.q_inputs import capture_q_inputs
    from gasp.capture.qk import capture_qk
    from gasp.losses import gasp_losses
    from gasp.train.recipe import make_batch

    cfg = _gasp(tracks, tmp_path, f"loss.on={on}", "loss.lambda_depth=0.5")
    run = _setup(cfg)
    gm, batch = run.gm, make_batch(run, "geo", 0)
    torch.manual_seed(0)
    got = gm(batch)
    inputs, tg = batch["inputs"], batch["targets"]
    nf, p = batch["grids"]
    if on == "heads":
        with capture_q_inputs(gm.model, gm.decoder_layers, layers=gm.heads.layers, positions=batch["positions"],
                              require_grad=True) as rec:
            gm.model(**inputs, logits_to_keep=1)
        emb = gm.heads({i: x[0].unflatten(0, (nf, p)) for i, x in rec.states.items()}, checkpoint=True)
        anchor = None
    else:
        with capture_qk(gm.model, gm.decoder_layers, layers=gm.heads.layers, positions=batch["positions"],
                        grad=True) as rec:
            gm.model(**inputs, logits_to_keep=1)
        a, c = gm.heads.embed_record(rec)
        emb, anchor = c.unflatten(1, (nf, p)), a.unflatten(1, (nf, p))
    res = gasp_losses(emb, tg.anchor_tok, tg.gt_tok, tg.valid, tg.gt_depth, tg.tok_depth, query_frame=tg.query_frame,
                      tau=cfg.loss.tau, chunk_size=cfg.loss.chunk_size, anchor_emb=anchor)
    want = cfg.loss.lambda_corr * res["l_corr"] + cfg.loss.lambda_depth * res["l_depth"]
    torch.testing.assert_close(got["loss"], want, rtol=1e-6, atol=0)
    assert float(got["l_corr"]) == pytest.approx(float(res["l_corr"]), rel=1e-6)


# ---- PseudoGD: what trains, what does not ----------------------------------------------------------------
def _params(gm):
    return {n: p.detach().clone() for n, p in gm.named_parameters()}


def test_pseudogd_gradients_reach_the_vision_lora_and_projector_and_nothing_frozen_moves(tracks, tmp_path):
    from gasp.train.recipe import make_batch, train_step

    run = _setup(_pgd(tracks, tmp_path))
    gm = run.gm
    names = {n for n, p in gm.named_parameters() if p.requires_grad}
    vision_lora = {n for n in names if "visual.blocks" in n and "lora_" in n}
    llm_lora = {n for n in names if "language_model" in n and "lora_" in n}
    projector = {n for n in names if "merger.modules_to_save" in n}
    heads = {n for n in names if n.startswith("objective_heads.")}
    assert vision_lora and llm_lora and projector and heads
    assert names == vision_lora | llm_lora | projector | heads                  # nothing else trains
    assert not any("patch_embed" in n for n in vision_lora)                      # not the patch embedding
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in vision_lora} == {"qkv", "proj"}

    # a geometric micro-batch alone: the vision LoRA and the heads, not the projector (it reads before it)
    out = gm(make_batch(run, "geo", 0))
    out["loss"].backward()
    grads = {n: p.grad for n, p in gm.named_parameters() if p.requires_grad}
    assert all(grads[n] is not None and grads[n].abs().max() > 0 for n in heads)
    assert any(grads[n] is not None and grads[n].abs().max() > 0 for n in vision_lora if "lora_B" in n)
    assert all(grads[n] is None or grads[n].abs().max() == 0 for n in projector | llm_lora)
    gm.zero_grad(set_to_none=True)

    # one step (one instruction and one geometric micro-batch): every trained group moves, nothing frozen does
    before = _params(gm)
    rec = train_step(run, 0)
    after = _params(gm)
    assert rec["l_lm"] is not None and rec["l_pgd_depth"] is not None and rec["l_pgd_structure"] is not None
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved <= names, sorted(moved - names)[:5]
    for group in (vision_lora, llm_lora, projector, heads):
        assert group & moved
    lrs = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    o = run.cfg.optim
    assert set(lrs) == {"lora", "vision", "head:pgd_depth", "head:pgd_structure"}  # projector at 1x: with lora
    assert lrs["vision"] == pytest.approx(lrs["lora"] * o.vision_lr_mult)
    assert lrs["head:pgd_depth"] == pytest.approx(lrs["lora"] * o.head_lr_mult)


def test_the_structure_targets_are_the_stand_in_of_the_batchs_frames(tracks, tmp_path):
    from gasp.objectives.structure_teacher import standin_targets
    from gasp.train.recipe import make_batch

    run = _setup(_pgd(tracks, tmp_path, "loss.lm=false"))
    batch = make_batch(run, "geo", 3)
    seq = run.geo[3]
    fids = batch["targets"].gt_tok.shape[0]
    want = standin_targets(run.geo.reader.scene_metadata(seq.scene), seq.K[:fids], seq.cam_from_world[:fids],
                           seq.image_size, (4, 4))
    assert batch["structure"].shape == (fids, 16, 256)
    torch.testing.assert_close(batch["structure"], want)


def test_p0_trains_the_same_parameters_but_its_heads_get_no_signal(tracks, tmp_path):
    from gasp.train.recipe import train_step

    cfg = load_config(ROOT / "configs" / "pseudogd" / "P0.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"run.out={tmp_path}", "data.min_frames=3", "data.max_frames=4",
        "data.num_workers=0", "optim.max_steps=2"])
    run = _setup(cfg)
    before = _params(run.gm)
    recs = [train_step(run, s) for s in range(2)]
    after = _params(run.gm)
    heads = [n for n in before if n.startswith("objective_heads.")]
    assert heads and all(torch.equal(before[n], after[n]) for n in heads)
    assert any(not torch.equal(before[n], after[n]) for n in before if "visual.blocks" in n and "lora_B" in n)
    assert all(r["l_pgd_depth"] is not None for r in recs)                      # still measured, weighted 0


def test_p_lin_puts_linear_heads_on_the_encoder(tracks, tmp_path):
    from gasp.objectives.pseudogd import LinearDepthHead

    cfg = load_config(ROOT / "configs" / "pseudogd" / "P-lin.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"run.out={tmp_path}", "data.min_frames=3", "data.max_frames=4"])
    heads = _setup(cfg).gm.objective_heads
    assert isinstance(heads["pgd_depth"], LinearDepthHead) and isinstance(heads["pgd_structure"], torch.nn.Linear)
    assert heads["pgd_structure"].in_features == 4 * 64 and heads["pgd_structure"].out_features == 256  # k*d -> C


@pytest.mark.parametrize("arm, names", [("P", ["pgd_depth", "pgd_structure"]), ("Pd", ["pgd_depth"]),
                                        ("Ps", ["pgd_structure"]), ("P0", ["pgd_depth", "pgd_structure"]),
                                        ("P-lin", ["pgd_depth", "pgd_structure"])])
def test_the_arms_are_configs_differing_only_in_their_objectives(arm, names):
    base = load_config(ROOT / "configs" / "pseudogd_tiny.yaml")
    cfg = load_config(ROOT / "configs" / "pseudogd" / f"{arm}.yaml")
    assert [o.name for o in cfg.objectives] == names
    weights = {o.weight for o in cfg.objectives}
    assert weights == ({0.0} if arm == "P0" else {1.0})
    assert {o.head for o in cfg.objectives} == ({"linear"} if arm == "P-lin" else {"default"})
    for section in ("model", "lora", "data", "optim", "loss"):
        assert getattr(cfg, section) == getattr(base, section), section


def test_a_pseudogd_run_resumes_exactly_with_its_heads(tracks, tmp_path):
    from safetensors.torch import load_file

    from gasp.train.recipe import train

    full = train(_pgd(tracks, tmp_path / "full", "optim.max_steps=4", "run.save_every=2"))
    train(_pgd(tracks, tmp_path / "cut", "optim.max_steps=4", "run.save_every=2"), stop_after=2)
    resumed = train(_pgd(tracks, tmp_path / "cut", "optim.max_steps=4", "run.save_every=2"),
                    resume=tmp_path / "cut" / "checkpoint-2")
    assert resumed["weights_checksum"] == full["weights_checksum"]
    a = load_file(str(tmp_path / "full" / "checkpoint-4" / "objective_heads.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoint-4" / "objective_heads.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {k.split(".")[0] for k in a} == {"pgd_depth", "pgd_structure"}


# ---- refusals: one line, before any work ----------------------------------------------------------------
def _depthless(path):
    """A converter's tracks file: no depth, no cameras, not gasp's renderer."""
    from tests.test_first_run import _own_tracks

    return _own_tracks(path)


@pytest.mark.parametrize("case", ["site", "depthless", "teacher frames", "stand-in on foreign data"])
def test_bad_pseudogd_settings_are_refused_in_one_line_before_any_work(tracks, tmp_path, capsys, case):
    from gasp_cli.train import main

    teacher = tmp_path / "teacher"
    (teacher / "synth_1_00000").mkdir(parents=True)
    for f in range(3):                                                  # the scene has 10 frames
        np.save(teacher / "synth_1_00000" / f"{f:06d}.npy", np.zeros((8, 8, 32), np.float32))
    own = _depthless(tmp_path / "own.h5")
    args, want = {
        "site": (["model.name=tiny-smolvlm", "lora.vision_r=0", "model.train_projector=false"],
                 "the vision encoder's output before the projector (pre_projector), which the smolvlm adapter does "
                 "not expose; families that do: llava, paligemma, qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_vl"),
        "depthless": ([f"data.tracks={own}", "loss.lm=false", "objectives=[{name: pgd_depth}]"],
                      "objective pgd_depth needs depth maps, but 1 of 1 scene(s)"),
        "teacher frames": ([f"data.tracks={tracks / 'train.h5'}",
                            f"objectives=[{{name: pgd_structure, teacher: {teacher}}}]"],
                           "scene 'synth_1_00000' lacks feature maps for frames [3, 4, 5, 6, 7, 8, 9]"),
        "stand-in on foreign data": ([f"data.tracks={own}", "loss.lm=false", "objectives=[{name: pgd_structure}]"],
                                     "was not rendered by gasp"),
    }[case]
    out = tmp_path / "run"
    assert main(["--config", str(ROOT / "configs" / "pseudogd_tiny.yaml"), *args, f"run.out={out}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and want in err[0], err
    assert not out.exists()


def test_a_teacher_folder_serves_its_own_features(tracks, tmp_path):
    """A complete .npy folder: the structure head's width is the teacher's C, the targets its pooled maps."""
    from gasp.objectives.structure_teacher import pool_tokens
    from gasp.train.recipe import make_batch

    teacher = tmp_path / "teacher"
    rng = np.random.default_rng(0)
    for scene in ("synth_1_00000", "synth_1_00001", "synth_1_00002"):
        (teacher / scene).mkdir(parents=True)
        for f in range(10):
            np.save(teacher / scene / f"{f:06d}.npy", rng.normal(size=(8, 8, 32)).astype(np.float32))
    run = _setup(_pgd(tracks, tmp_path / "run", "loss.lm=false",
                      f"objectives=[{{name: pgd_structure, teacher: {teacher}}}]"))
    assert run.gm.objective_heads["pgd_structure"].fc2.out_features == 32
    batch = make_batch(run, "geo", 1)
    seq = run.geo[1]
    n = batch["structure"].shape[0]
    maps = np.stack([np.load(teacher / seq.scene / f"{int(f):06d}.npy") for f in seq.frame_index[:n]])
    torch.testing.assert_close(batch["structure"], pool_tokens(maps, (4, 4)))


def test_a_pseudogd_checkpoint_exports_with_its_vision_lora_and_projector_merged(tracks, tmp_path):
    """`gasp export` merges the vision LoRA and the trained projector too: the merged model's logits are base +
    adapter's, its merger and vision qkv differ from the base's, and the card names the objectives."""
    import numpy as np

    from gasp.models import load_model
    from gasp.train.recipe import train
    from gasp_cli.export import main as export
    from transformers import AutoModelForImageTextToText

    train(_pgd(tracks, tmp_path / "run", "optim.max_steps=2", "run.eval_sequences=0"))
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert export([str(ckpt), "--out", str(tmp_path / "merged")]) == 0
    base, tok, adapter = load_model("tiny-qwen2.5-vl")
    tuned, _, _ = load_model("tiny-qwen2.5-vl", adapter=ckpt / "adapter")
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    frames = np.random.default_rng(0).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt="what", size=(112, 112))
    with torch.no_grad():
        lb, lt, lm = base(**inputs).logits, tuned(**inputs).logits, merged(**inputs).logits
    assert (lt - lb).abs().max() > 1e-3                                         # the adapter moved the model
    torch.testing.assert_close(lm, lt, atol=1e-4, rtol=0)
    sd, bsd = merged.state_dict(), base.state_dict()
    for key in ("model.visual.merger.mlp.0.weight", "model.visual.blocks.0.attn.qkv.weight"):
        assert (sd[key] - bsd[key]).abs().max() > 0, key
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "pgd_depth (weight 1.0; PseudoGD (seed 000), eq. 3)" in card and "vision LoRA r 4, alpha 8" in card
    assert "projector trained" in card


def test_the_one_forward_joint_step_is_the_lm_loss_plus_the_geometric_losses(tracks, tmp_path):
    """An instruction batch carrying geometric targets (the paper's per-sample joint step): one forward gives the LM
    loss and, through the projector hook, the same encoder features the vision-only path reads."""
    from gasp.train.recipe import make_batch

    run = _setup(_pgd(tracks, tmp_path, "loss.lm=false"))
    gm = run.gm
    geo = make_batch(run, "geo", 2)
    labels = geo["inputs"]["input_ids"].clone()
    labels[:, :-3] = -100
    joint = {**geo, "kind": "lm", "inputs": {**geo["inputs"], "labels": labels}}
    with torch.no_grad():
        alone = gm(geo)
        both = gm(joint)
        lm = gm.model(**joint["inputs"]).loss
    for term in ("l_pgd_depth", "l_pgd_structure"):
        torch.testing.assert_close(both[term], alone[term], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both["l_lm"], lm)
    torch.testing.assert_close(both["loss"], lm + both["l_pgd_depth"] + both["l_pgd_structure"], rtol=1e-6, atol=1e-6)


def test_instruction_batches_carry_their_scenes_targets_for_the_joint_step(tracks, tmp_path):
    """gasp's synthetic instruction records name their scene and frames; with PseudoGD objectives each instruction
    batch carries that scene's per-token depth (those frames' depth maps, pooled) and structure targets."""
    from gasp.losses import pool_token_depth
    from gasp.train.recipe import joint_step, make_batch

    cfg = _pgd(tracks, tmp_path)
    assert joint_step(cfg, __import__("gasp.train.gasp_model", fromlist=["x"]).make_objectives(cfg))
    run = _setup(cfg)
    batch = make_batch(run, "lm", 5)
    ex = run.lm[5]
    assert batch["kind"] == "lm" and "labels" in batch["inputs"] and ex.source_frames is not None
    scene = run.geo.reader.scene(ex.geometry["scene"], frames=ex.source_frames)
    nf = batch["grids"][0]
    want = pool_token_depth(torch.from_numpy(scene.depth[:nf]), (4, 4))
    torch.testing.assert_close(batch["targets"].tok_depth, want)
    assert batch["structure"].shape == (nf, 16, 256)
    out = run.gm(batch)
    assert {"l_lm", "l_pgd_depth", "l_pgd_structure"} <= set(out)
    # GASP's heads need tracks: their instruction batches stay plain
    assert not joint_step(_gasp(tracks, tmp_path, "loss.lm=true"), [])


def test_an_objective_can_read_after_the_projector(tracks, tmp_path):
    """site: projector reads the visual tokens as the LLM's first layer receives them (the probe's layer -1): the
    head's width is the LLM's, and the loss reaches the projector, which the pre-projector site cannot."""
    from gasp.train.recipe import make_batch

    run = _setup(_pgd(tracks, tmp_path, "loss.lm=false", "objectives=[{name: pgd_depth, site: projector}]"))
    gm = run.gm
    assert gm.objective_heads["pgd_depth"].fc1.in_features == gm.adapter.text_config(gm.model).hidden_size
    gm(make_batch(run, "geo", 0))["loss"].backward()
    merger = [p for n, p in gm.named_parameters() if "merger.modules_to_save" in n]
    assert merger and any(p.grad is not None and p.grad.abs().max() > 0 for p in merger)
