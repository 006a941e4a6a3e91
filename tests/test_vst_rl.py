"""VST's RL pieces (gasp/rl): rotated 3D IoU against a Monte-Carlo estimate, each reward against hand-computed
cases, the DAPO objective against a literal formula (asymmetric clip, no KL), group advantages and filtering."""
import math

import numpy as np
import pytest
import torch

from gasp.rl import box3d, rewards
from gasp.rl.dapo import EPS_HIGH, EPS_LOW, dapo_loss, group_advantages


def _inside(points, box):
    b = np.asarray(box, dtype=np.float64)
    local = (points - b[:3]) @ box3d.rotation(*b[6:9])                    # R^T (p - c), row vectors
    return np.all(np.abs(local) <= b[3:6] / 2, axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_rotated_iou_matches_a_monte_carlo_estimate(seed):
    rng = np.random.default_rng(seed)
    a = [*rng.uniform(-0.3, 0.3, 3), *rng.uniform(0.5, 1.5, 3), *rng.uniform(-40, 40, 3)]
    b = [*(np.array(a[:3]) + rng.uniform(-0.4, 0.4, 3)), *rng.uniform(0.5, 1.5, 3), *rng.uniform(-40, 40, 3)]
    pts = np.vstack([box3d.corners(a), box3d.corners(b)])
    lo, hi = pts.min(0), pts.max(0)
    sample = rng.uniform(lo, hi, (400_000, 3))
    ia, ib = _inside(sample, a), _inside(sample, b)
    mc = (ia & ib).sum() / (ia | ib).sum()
    assert box3d.iou(a, b) == pytest.approx(mc, abs=0.01)


def test_iou_of_known_boxes():
    cube = [0, 0, 5, 1, 1, 1, 0, 0, 0]
    assert box3d.iou(cube, cube) == pytest.approx(1.0)
    assert box3d.iou(cube, [0.5, 0, 5, 1, 1, 1, 0, 0, 0]) == pytest.approx(1 / 3)
    assert box3d.iou(cube, [3, 0, 5, 1, 1, 1, 0, 0, 0]) == 0.0
    # a unit square turned 45 deg overlaps itself in an octagon of area 2 (sqrt 2 - 1)
    octagon = 2 * (math.sqrt(2) - 1)
    assert box3d.iou(cube, [0, 0, 5, 1, 1, 1, 0, 45, 0]) == pytest.approx(octagon / (2 - octagon))
    assert box3d.iou(cube, [0, 0, 5, 1, 0, 1, 0, 0, 0]) == 0.0                       # degenerate


def test_euler_angles_round_trip_and_the_text_format():
    R = box3d.rotation(10, -35, 20)
    assert box3d.euler(R) == pytest.approx((10, -35, 20))
    text = box3d.format_box([1, -0.5, 3, 0.4, 0.8, 0.6, 18, -90, 36])
    assert text == "[1.00, -0.50, 3.00, 0.40, 0.80, 0.60, 0.10, -0.50, 0.20]"         # angles / 180, 2 decimals
    (back,) = box3d.parse_boxes(text)
    assert back.tolist() == pytest.approx([1, -0.5, 3, 0.4, 0.8, 0.6, 18, -90, 36])
    assert box3d.parse_boxes("[1 . 0, 2, 3, 4, 5, 6, 0, 0, 0]")[0][0] == 1.0         # the tiny tokenizer's spacing


@pytest.mark.parametrize("text", ["no box", "[1, 2, 3]", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "", "[a, b]"])
def test_an_unparseable_box_answer_scores_zero_and_does_not_raise(text):
    assert rewards.get("box3d")().score(text, {"boxes": [[0, 0, 5, 1, 1, 1, 0, 0, 0]]}) == {"acc": 0.0, "format": 0.0}


def test_box_reward_by_hand():
    reward = rewards.get("box3d")()
    a, b = [0, 0, 5, 1, 1, 1, 0, 0, 0], [3, 0, 5, 1, 1, 1, 0, 0, 0]
    one = box3d.format_box(a)
    # one of two true boxes, exactly: R_IoU = 1 / 2, TP = 1, F1 = 2 / 3
    assert reward.score(one, {"boxes": [a, b]})["acc"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # both, in the other order: Hungarian matching pairs them right
    assert reward.score(box3d.format_box(b) + " " + one, {"boxes": [a, b]})["acc"] == pytest.approx(1.0)
    # half a box off: IoU 1/3 > 0.25 is a true positive
    shifted = box3d.format_box([0.5, 0, 5, 1, 1, 1, 0, 0, 0])
    assert reward.score(shifted, {"boxes": [a]})["acc"] == pytest.approx(0.5 / 3 + 0.5)
    # IoU 0.2 is not
    off = box3d.format_box([2 / 3, 0, 5, 1, 1, 1, 0, 0, 0])
    assert box3d.iou(a, [2 / 3, 0, 5, 1, 1, 1, 0, 0, 0]) == pytest.approx(0.2, abs=0.01)
    assert reward.score(off, {"boxes": [a]})["acc"] == pytest.approx(0.5 * box3d.iou(a, box3d.parse_boxes(off)[0]))


def test_numeric_and_choice_rewards_by_hand():
    num, ch = rewards.get("numeric")(), rewards.get("choice")()
    assert num.score("2.5", {"value": 2.0}) == {"acc": 1.0, "format": 1.0}
    assert num.score("2.6", {"value": 2.0}) == {"acc": 0.0, "format": 1.0}
    assert num.score("far", {"value": 2.0}) == {"acc": 0.0, "format": 0.0}
    item = {"options": ["left", "right", "forward", "backward"], "answer_index": 2}
    assert ch.score(" Forward.", item) == {"acc": 1.0, "format": 1.0}
    assert ch.score("left", item) == {"acc": 0.0, "format": 1.0}
    assert ch.score("up", item) == {"acc": 0.0, "format": 0.0}
    with pytest.raises(rewards.RewardError, match="registered: box3d, choice, numeric"):
        rewards.get("caption")


def test_the_dapo_objective_is_the_literal_formula():
    """Hand-made log-probs: two completions of 3 and 2 tokens; ratios inside, above 1 + 0.28 and below 1 - 0.2."""
    logp_old = torch.zeros(2, 3)
    ratios = torch.tensor([[1.25, 1.40, 0.90], [0.70, 1.10, 1.00]])
    logp = ratios.log()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -2.0])
    loss, stats = dapo_loss(logp, logp_old, adv, mask)
    total, n, clipped = 0.0, 0, 0
    for i in range(2):
        for t in range(3):
            if not mask[i, t]:
                continue
            r, a = float(ratios[i, t]), float(adv[i])
            c = min(max(r, 1 - 0.2), 1 + 0.28)
            total += min(r * a, c * a)
            clipped += c * a < r * a
            n += 1
    assert float(loss) == pytest.approx(-total / n)                     # token mean over all completions
    assert float(stats["clip_frac"]) == pytest.approx(clipped / n)
    assert clipped == 2                                                  # 1.40 with A > 0, 0.70 with A < 0
    # the clip is asymmetric: 1.25 (< 1 + 0.28) counts in full for A > 0, where a symmetric 0.2 clip would cut it
    assert (EPS_LOW, EPS_HIGH) == (0.2, 0.28)
    sym, _ = dapo_loss(logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.2)
    assert float(sym) > float(loss)
    # no KL: the loss depends on pi_theta and pi_old only (nothing else is an input), and its gradient is the
    # clipped surrogate's
    lp = logp.clone().requires_grad_(True)
    dapo_loss(lp, logp_old, adv, mask)[0].backward()
    assert lp.grad[0, 1] == 0 and lp.grad[1, 0] == 0                   # clipped tokens pass no gradient
    assert lp.grad[0, 0] == pytest.approx(-1.25 * 1.0 / n)              # d(-r A / n) / d log r


def test_group_advantages_and_online_filtering():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5])       # two groups of 5; the second is flat
    adv, keep = group_advantages(r, 5)
    assert keep.tolist() == [True, False]
    g = r[:5]
    want = (g - g.mean()) / (g.std(unbiased=False) + 1e-6)
    torch.testing.assert_close(adv[:5], want)
    assert adv[5:].abs().max() == 0


# ---- the loop -------------------------------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A 2-step SFT run of configs/vst_sft_tiny.yaml (its data: gasp's VST-style questions)."""
    from gasp.train.config import load_config
    from gasp.train.recipe import train

    out = tmp_path_factory.mktemp("sft")
    train(load_config(ROOT / "configs" / "vst_sft_tiny.yaml", [f"run.out={out}", "optim.max_steps=2",
                                                                "run.eval_sequences=0", "data.synthetic_scenes=3",
                                                                "data.num_workers=0"]))
    return out / "checkpoint-2"


def _rl_cfg(sft, out, *extra):
    from gasp.rl.loop import load_rl_config

    return load_rl_config(ROOT / "configs" / "vst_rl_tiny.yaml", [f"sft_adapter={sft}", f"out={out}", "max_steps=2",
                                                                   "max_new_tokens=6", "synthetic_scenes=3", *extra])


def test_the_loop_updates_with_the_ratio_and_clip_acting_from_the_second_iteration(sft, tmp_path, monkeypatch):
    """A reward that varies within every group (the completion's first token id, odd or even) so that no group is
    dropped; with a large learning rate the second iteration's ratio leaves 1 and the clip acts."""
    import json

    from gasp.models import load_model
    from gasp.rl import loop, rewards

    class Parity:
        kind = "choice"
        calls = [0]

        def score(self, text, item):
            Parity.calls[0] += 1
            return {"acc": float(Parity.calls[0] % 2), "format": 0.0}

    real_get = rewards.get
    monkeypatch.setattr(rewards, "get", lambda k: Parity if k == "choice" else real_get(k))
    summary = loop.train_rl(_rl_cfg(sft, tmp_path / "rl", "kinds=[choice]", "lr=0.05"))
    recs = [json.loads(ln) for ln in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(r["dropped_frac"] == 0 for r in recs)
    for r in recs:
        assert r["ratio_mean_it1"] == pytest.approx(1.0, abs=1e-5)              # pi_theta = pi_old at first
        assert abs(r["ratio_mean_it2"] - 1.0) > 1e-3                            # one step later it is not
    assert any(r["clip_frac_it2"] > 0 for r in recs) and all(r["clip_frac_it1"] == 0 for r in recs)
    assert {"reward", "dropped_frac", "completion_len", "clip_frac", "reward_choice"} <= set(recs[0])
    model, _, _ = load_model("tiny-qwen2.5-vl", adapter=summary["adapter"])          # the adapter loads
    assert (Path(summary["adapter"]) / "gasp_vision_tower.safetensors").is_file()      # with SFT's trained tower


def test_flat_groups_are_dropped_and_nothing_updates(sft, tmp_path, monkeypatch):
    import json

    import torch as _t

    from gasp.rl import loop, rewards

    class Zero:
        kind = "choice"

        def score(self, text, item):
            return {"acc": 0.0, "format": 0.0}

    monkeypatch.setattr(rewards, "get", lambda k: Zero)
    loop.train_rl(_rl_cfg(sft, tmp_path / "rl", "kinds=[choice]"))
    recs = [json.loads(ln) for ln in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["dropped_frac"] == 1.0 and "loss_it1" not in r for r in recs)
    from safetensors.torch import load_file

    a = load_file(str(sft / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "rl" / "checkpoint-2" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(_t.equal(a[k], b[k]) for k in a)           # no update, no change


def test_bad_rl_settings_are_refused_in_one_line_before_any_work(sft, tmp_path, capsys):
    from gasp.rl.loop import Prompt, RLError, check_data, load_rl_config
    from gasp_cli.rl import main

    out = tmp_path / "rl"
    assert main(["--config", str(ROOT / "configs" / "vst_rl_tiny.yaml"), "sft_adapter=null", f"out={out}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "VST's RL starts from the SFT stage's adapter" in err[0] and not out.exists()
    assert main(["--config", str(ROOT / "configs" / "vst_rl_tiny.yaml"), f"sft_adapter={sft}", "kinds=[caption]",
                 f"out={out}"]) == 2
    assert "no reward scores task kind 'caption'" in capsys.readouterr().err and not out.exists()
    cfg = load_rl_config(None, [f"sft_adapter={sft}", "kinds=[choice, box3d]"])
    with pytest.raises(RLError, match=r"the data has no question scored by \['box3d'\]"):
        check_data(cfg, [Prompt(np.zeros((2, 8, 8, 3), np.uint8), "q", "relative_depth", "choice", {})])


def test_vst_questions_read_the_cameras(tmp_path):
    """A rendered scene: each 3D box's corners in camera coordinates are the world corners seen by that camera, and
    the SFT data holds every VST kind with the reward that scores it (correspondence as a 2-image video)."""
    import json

    from gasp.data.spatial_qa import box_corners
    from gasp.data.synthetic_instruct import write_synthetic_instruct
    from gasp.data.vst_qa import camera_box, vst_questions_for_scene
    from tracks.synthetic import render_scene

    scene = render_scene(5, None, name="s")
    boxes = [o for o in scene.metadata["objects"] if o["kind"] == "box"]
    for o in boxes:
        T = scene.cam_from_world[3]
        world = box_corners(o) @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(box3d.corners(camera_box(o, T)), world, atol=1e-6)
    items = {it.kind: it for it in vst_questions_for_scene(scene.metadata, scene.cam_from_world,
                                                           np.random.default_rng(0), [0, 8, 16, 23])}
    truth = items["box3d"]
    assert rewards.get("box3d")().score(truth.answer, truth.target)["acc"] > 0.95      # two decimals cost a little
    path = write_synthetic_instruct([scene], tmp_path, num_frames=4, metric=True, vst=True)
    recs = json.loads(path.read_text())
    kinds = {r["qa"]["kind"]: r for r in recs}
    assert {"box3d", "correspondence", "point_depth", "camera_motion"} <= set(kinds)
    assert {r["qa"]["reward"] for r in recs} == {"choice", "numeric", "box3d"}
    corr = kinds["correspondence"]
    assert len(list((tmp_path / corr["video"]).glob("*.png"))) == 2 and len(corr["geometry"]["frames"]) == 2


def test_vst_qa_summary_reads_numbers_against_a_constant_answer():
    """Truths 1.0, 2.0, 4.0: the median 2.0 answered to all succeeds (within 25 %) on one of three; choices keep
    1/#options as chance."""
    from probes.vst_qa import summarize

    rows = [{"kind": "point_depth", "reward": "numeric", "view": "frames", "acc": a, "format": 1.0,
             "target": {"value": v}, "chance": 0.0} for v, a in ((1.0, 1.0), (2.0, 0.0), (4.0, 0.0))]
    rows += [{"kind": "relative_depth", "reward": "choice", "view": "frames", "acc": 1.0, "format": 1.0,
              "target": {"options": ["a", "b"], "answer_index": 0}, "chance": 0.5}]
    s = summarize(rows)["frames"]
    assert s["point_depth"]["chance"] == pytest.approx(1 / 3) and s["point_depth"]["acc"] == pytest.approx(1 / 3)
    assert s["relative_depth"]["chance"] == 0.5 and s["relative_depth"]["se"] is None
