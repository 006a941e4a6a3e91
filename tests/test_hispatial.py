"""HiSpatial's point-map input in the trainer and the probe, its arms, refusals, and the metric QA (scoring against
hand-computed cases, questions against hand-built geometry)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gasp.data import metric_qa
from gasp.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


# ---- metric QA --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("truth, answer, at25, at50", [
    (2.0, "2.4", True, True), (2.0, "2.5", True, True), (2.0, "2.6", False, True), (2.0, "1.5", True, True),
    (2.0, "1.4", False, True), (2.0, "0.9", False, False), (2.0, "3 . 0", False, True), (0.4, "0.5", True, True),
    (2.0, "far", False, False), (2.0, "", False, False)])
def test_numeric_answers_succeed_within_25_and_50_percent(truth, answer, at25, at50):
    item = metric_qa.MetricItem("q", "point_depth", truth)
    assert metric_qa.success(item, answer) == {"@0.25": at25, "@0.5": at50}


def test_choices_count_by_exact_match():
    item = metric_qa.MetricItem("q", "depth_order", options=("the red box", "the blue box"), answer_index=1)
    assert metric_qa.success(item, " The Blue Box ") == {"exact": True}
    assert metric_qa.success(item, "the red box") == {"exact": False}
    assert item.answer == "the blue box" and not item.numeric


def test_metric_questions_read_the_geometry():
    """Hand-built scene: camera at the origin looking down +z; boxes at known centres and heights."""
    def box(name, center, size):
        return {"name": name, "kind": "box", "center": center, "size": size, "yaw_deg": 0.0, "visible_pixels": [900, 900]}

    meta = {"config": {"height": 100, "width": 100},
            "camera_path": [{"position": [0, 0, 0], "forward": [0, 0, 1]}, {"position": [0, 0, 0.1], "forward": [0, 0, 1]}],
            "objects": [box("red box", [0.0, 0.0, 2.0], [0.5, 0.8, 0.5]), box("blue box", [3.0, 0.0, 6.0], [0.5, 1.6, 0.5])]}
    items = {it.kind: it for it in metric_qa.metric_questions_for_scene(meta, np.random.default_rng(0))}
    assert set(items) == set(metric_qa.METRIC_KINDS)
    depth = items["point_depth"]
    assert depth.value == (2.0 if "red" in depth.question else 6.0)
    assert items["object_distance"].value == 5.0                               # |(3, 0, 4)|
    size = items["object_size"]
    assert size.value == (0.8 if "red" in size.question else 1.6)
    assert items["depth_order"].answer == "the red box"
    assert metric_qa.prompt_text(depth).endswith("answer in meters with one decimal.")
    grid = np.array(metric_qa.NUMBER_GRID)
    assert grid[0] == 0.1 and grid[-1] == 15.0 and (grid[grid >= 1][1:] / grid[grid >= 1][:-1]).max() < 1.25


# ---- training and probing with a point map ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    d = tmp_path_factory.mktemp("tracks")
    make_synthetic_file(d / "train.h5", 3, seed=1, config=SyntheticSceneConfig(height=112, width=112, num_frames=10),
                        grid=4, split="train")
    make_synthetic_file(d / "eval.h5", 1, seed=2, config=SyntheticSceneConfig(height=112, width=112, num_frames=26),
                        grid=4, split="eval")
    return d


def _cfg(tracks, out, arm="H", *extra):
    return load_config(ROOT / "configs" / "hispatial" / f"{arm}.yaml", [
        f"data.tracks={tracks / 'train.h5'}", f"data.tracks_eval={tracks / 'eval.h5'}", f"run.out={out}",
        "run.eval_sequences=0", "optim.max_steps=2", "data.num_workers=0", *extra])


@pytest.mark.parametrize("arm, source", [("H", "gt"), ("H-rel", "reldepth"), ("H-noisy", "noisy"), ("H0", "none")])
def test_the_arms_differ_only_in_their_point_map(arm, source):
    base = load_config(ROOT / "configs" / "hispatial_tiny.yaml")
    cfg = load_config(ROOT / "configs" / "hispatial" / f"{arm}.yaml")
    assert cfg.model.pointmap == source
    cfg.model.pointmap = base.model.pointmap
    for section in ("model", "lora", "loss", "data", "optim"):
        assert getattr(cfg, section) == getattr(base, section), section


def test_a_point_map_run_trains_the_branch_projector_and_lora_and_saves_them(tracks, tmp_path):
    from safetensors.torch import load_file

    from gasp.train.recipe import make_batch, setup, train_step

    run, _ = setup(_cfg(tracks, tmp_path / "run"))
    gm = run.gm
    trained = {n for n, p in gm.named_parameters() if p.requires_grad}
    assert {n for n in trained if n.startswith("pointmap.")} == {"pointmap.conv.weight", "pointmap.conv.bias",
                                                                 "pointmap.proj.weight"}
    assert any("multi_modal_projector.modules_to_save" in n for n in trained)
    assert not any("vision_tower" in n for n in trained)                          # SigLIP stays frozen
    batch = make_batch(run, "lm", 0)
    assert batch["pointmap"].shape == (4, 112, 112, 4) and batch["pointmap"][..., 3].mean() > 0.9
    before = {n: p.detach().clone() for n, p in gm.named_parameters()}
    train_step(run, 0)
    moved = {n for n, p in gm.named_parameters() if not torch.equal(before[n], p.detach())}
    assert "pointmap.proj.weight" in moved and moved <= trained
    from gasp.train.recipe import save

    save(run, 1)
    adapter = tmp_path / "run" / "checkpoint-1" / "adapter"
    saved = load_file(str(adapter / "gasp_pointmap.safetensors"))
    torch.testing.assert_close(saved["proj.weight"], gm.pointmap.proj.weight.detach())
    assert json.loads((adapter / "gasp_pointmap.json").read_text())["source"] == "gt"


def test_h0s_branch_sees_no_points(tracks, tmp_path):
    from gasp.train.recipe import make_batch, setup

    run, _ = setup(_cfg(tracks, tmp_path / "run", "H0"))
    assert not make_batch(run, "lm", 0)["pointmap"].any()


def test_a_trained_point_map_adapter_probes_with_its_point_map_and_resumes_exactly(tracks, tmp_path, capsys):
    from gasp.train.recipe import train
    from gasp_cli.probe import main as probe

    full = train(_cfg(tracks, tmp_path / "full", "H", "optim.max_steps=4", "run.save_every=2"))
    train(_cfg(tracks, tmp_path / "cut", "H", "optim.max_steps=4", "run.save_every=2"), stop_after=2)
    resumed = train(_cfg(tracks, tmp_path / "cut", "H", "optim.max_steps=4", "run.save_every=2"),
                    resume=tmp_path / "cut" / "checkpoint-2")
    assert resumed["weights_checksum"] == full["weights_checksum"]
    adapter = tmp_path / "full" / "checkpoint-4" / "adapter"
    common = ["--model", "tiny-paligemma", "--adapter", str(adapter), "--tracks", str(tracks / "eval.h5")]
    assert probe([*common, "--pointmap", "gt", "--depth", "--depth-train", str(tracks / "train.h5"),
                  "--out", str(tmp_path / "probe")]) == 0
    res = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert res["config"]["pointmap"] == "gt" and res["depth"]["layers"][:2] == [-2, -1]
    # the same adapter without a point map, and a plain model with one: one line each, nothing written
    capsys.readouterr()
    for args, want in ((common, "was trained with a gt point map"),
                       (["--model", "tiny-paligemma", "--pointmap", "gt"], "has no point-map branch")):
        assert probe([*args, "--out", str(tmp_path / "refused")]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and want in err[0], err
        assert not (tmp_path / "refused").exists()


def test_the_point_map_changes_the_models_answers_only_through_the_branch(tracks, tmp_path, monkeypatch):
    """probes/metric_qa: with the branch's weight zero the point map cannot matter, so every condition with the
    same frames answers alike; the grey frames are a different input."""
    from gasp.models import load_model
    from gasp.pointmap import PointMapInput, branch_for
    from probes.metric_qa import evaluate
    from tracks.io import TrackReader

    model, proc, adapter = load_model("tiny-paligemma")
    fusion = PointMapInput.install(model, adapter, branch_for(model, adapter))
    model.gasp_pointmap = fusion
    with TrackReader(tracks / "eval.h5") as r:
        scenes = [r.scene(n) for n in r.scene_names]
    monkeypatch.setattr(metric_qa, "NUMBER_GRID", (0.5, 1.0, 2.0, 4.0, 8.0))      # a short grid: seconds, not a minute
    res = evaluate(model, proc, adapter, scenes, {}, 4, 0, "gt")
    by = {}
    for row in res["rows"]:
        by.setdefault((row["question"], row["view"]), set()).add(row["answer"])
    assert by and all(len(v) == 1 for v in by.values())          # point map on or off: the same answer
    assert set(res["summary"]) == {"frames+pointmap:gt", "grey+pointmap:gt", "frames+pointmap:none",
                                   "grey+pointmap:none"}


@pytest.mark.parametrize("case", ["family", "depthless", "instruct"])
def test_bad_point_map_settings_are_refused_in_one_line_before_any_work(tracks, tmp_path, capsys, case):
    from gasp_cli.train import main
    from tests.test_objectives import _depthless

    own = _depthless(tmp_path / "own.h5")
    (tmp_path / "i.json").write_text("[]")
    args, want = {
        "family": (["model.name=tiny-smolvlm", "model.train_projector=false"],
                   "the smolvlm adapter has no point-map input; families with one: paligemma, qwen2_5_vl, qwen2_vl"),
        "depthless": ([f"data.tracks={own}", "loss.lm=false", "loss.corr=true"],
                      "model.pointmap=gt needs depth and cameras, but 1 of 1 scene(s)"),
        "instruct": ([f"data.instruct={tmp_path / 'i.json'}"], "its records carry no depth or cameras"),
    }[case]
    out = tmp_path / "run"
    assert main(["--config", str(ROOT / "configs" / "hispatial_tiny.yaml"), *args, f"run.out={out}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and want in err[0], err
    assert not out.exists()


def test_config_checks():
    with pytest.raises(ConfigError, match=re.escape("model.pointmap must be one of gt, reldepth, noisy, none")):
        load_config(None, ["model.pointmap=moge"])
    with pytest.raises(ConfigError, match="keeps the vision tower frozen"):
        load_config(None, ["model.pointmap=gt", "model.freeze_vision=false"])


def test_qwen2_5_vl_trains_with_a_point_map_too(tracks, tmp_path):
    """The paper's family is PaliGemma; Qwen2.5-VL's merger takes the point half as well (window order, 2x2 merge)."""
    from gasp.train.recipe import setup, train_step

    run, _ = setup(_cfg(tracks, tmp_path / "run", "H", "model.name=tiny-qwen2.5-vl", "model.size=[112,112]"))
    before = run.gm.pointmap.proj.weight.detach().clone()
    rec = train_step(run, 0)
    assert rec["l_lm"] is not None and not torch.equal(before, run.gm.pointmap.proj.weight.detach())


def test_the_probe_refuses_a_point_map_on_tracks_without_depth(tmp_path, capsys):
    from gasp_cli.probe import main as probe
    from gasp.train.recipe import train
    from tests.test_objectives import _depthless

    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    scenes = tmp_path / "scenes.h5"
    make_synthetic_file(scenes, 2, seed=1, config=SyntheticSceneConfig(height=112, width=112, num_frames=10), grid=4)
    train(_cfg(tmp_path.parent / tmp_path.name, tmp_path / "run", "H", f"data.tracks={scenes}",
               f"data.tracks_eval={scenes}", "optim.max_steps=1"))
    own = _depthless(tmp_path / "own.h5")
    capsys.readouterr()
    assert probe(["--model", "tiny-paligemma", "--adapter", str(tmp_path / "run" / "checkpoint-1" / "adapter"),
                  "--pointmap", "gt", "--tracks", str(own), "--out", str(tmp_path / "p")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--pointmap gt needs depth maps, and 1 scene(s)" in err[0], err
    assert not (tmp_path / "p").exists()


def test_export_refuses_a_point_map_adapter(tracks, tmp_path, capsys):
    from gasp.train.recipe import train
    from gasp_cli.export import main as export

    train(_cfg(tracks, tmp_path / "run", "H", "optim.max_steps=1"))
    for extra in ([], ["--adapter-only"]):
        out = tmp_path / ("o" + "".join(extra))
        assert export([str(tmp_path / "run" / "checkpoint-1"), "--out", str(out), *extra]) == 2
        assert "point-map branch" in capsys.readouterr().err and not out.exists()


def test_metric_qa_reports_a_constant_answer_reference_beside_each_number():
    """Truths 1.0, 2.0, 4.0 (median 2.0): the constant 2.0 succeeds within 25 % only on 2.0, within 50 % also on
    4.0 (|2 - 4| = 0.5 x 4) and not on 1.0 (|2 - 1| = 1.0 x 1)."""
    from probes.metric_qa import lines, summarize

    rows = [{"view": "frames", "pointmap": None, "kind": "point_depth", "truth": t, "answer": "9.0",
             "@0.25": False, "@0.5": False} for t in ("1.0", "2.0", "4.0")]
    entry = summarize(rows)["frames"]["point_depth"]
    assert entry["constant"] == {"@0.25": pytest.approx(1 / 3), "@0.5": pytest.approx(2 / 3)}
    assert "constant answer 0.33/0.67" in lines(summarize(rows))[0]
