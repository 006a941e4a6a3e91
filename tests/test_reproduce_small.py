"""The small replication (issue 5): its pieces against independent formulas, and a smoke run of the script."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_qk_embedding_dot_is_mean_head_cosine_under_gqa():
    from gasp.train.gasp_model import qk_embedding

    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 5, 8, generator=g)          # (H, N, D)
    k = torch.randn(2, 7, 8, generator=g)          # (Hkv, M, D), query head h reads kv head h // 2
    eq, ek = qk_embedding(q), qk_embedding(k, num_heads=4)
    ref = torch.stack([torch.nn.functional.cosine_similarity(q[h][:, None], k[h // 2][None], dim=-1)
                       for h in range(4)]).mean(0)  # (N, M)
    torch.testing.assert_close(eq @ ek.T, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(eq.norm(dim=-1), torch.ones(5))


def test_anchor_emb_defaults_to_emb_and_changes_only_the_anchors():
    from gasp.losses import gasp_losses

    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(2, 3, 4, 8, generator=g), dim=-1)  # (L, F, P, E)
    args = (torch.tensor([0, 3]), torch.tensor([[0, 3], [1, 2], [3, 0]]), torch.ones(3, 2, dtype=torch.bool),
            torch.full((3, 2), 2.0), torch.rand(3, 4, generator=g) + 1)
    same = gasp_losses(emb, *args, anchor_emb=emb)
    plain = gasp_losses(emb, *args)
    torch.testing.assert_close(same["l_corr"], plain["l_corr"])
    other = emb.clone()
    other[:, 0] = torch.nn.functional.normalize(torch.randn(2, 4, 8, generator=g), dim=-1)
    assert not torch.allclose(gasp_losses(emb, *args, anchor_emb=other)["l_corr"], plain["l_corr"])
    other_tokens = emb.clone()
    other_tokens[:, 1:] = other[:, 0:1]             # non-anchor frames change, anchors do not
    assert not torch.allclose(gasp_losses(other_tokens, *args, anchor_emb=emb)["l_corr"], plain["l_corr"])


def test_loss_on_is_checked():
    from gasp.train.config import ConfigError, load_config

    assert load_config(None, ["loss.on=qk"]).loss.on == "qk"
    with pytest.raises(ConfigError, match="loss.on"):
        load_config(None, ["loss.on=attention"])


def test_scene_logliks_match_the_models_own_lm_loss():
    from experiments.replication.qa_eval import scene_logliks
    from gasp.models import load_model

    model, tok, adapter = load_model("tiny-qwen2.5-vl")
    frames = np.random.default_rng(0).integers(0, 255, (2, 56, 56, 3), dtype=np.uint8)
    questions = [("which object is closer to the camera in the first frame?", ("the red box", "three", "the blue box")),
                 ("how many boxes are in the video?", ("2", "3"))]
    lls = scene_logliks(model, tok, adapter, frames, questions, None, 2.0)      # one cache for everything
    assert [len(x) for x in lls] == [3, 2]
    for (prompt, options), row in zip(questions, lls):
        for option, ll in zip(options, row):
            inputs, _ = adapter.prepare_inputs(frames, processor_or_tokenizer=tok, prompt=prompt, answer=option,
                                               fps=2.0)
            with torch.no_grad():
                loss = model(**inputs).loss           # one full forward: mean over the labelled (shifted) tokens
            n = int((inputs["labels"][0, 1:] != -100).sum())
            assert n >= 2                             # the answer and the end-of-turn token
            assert ll == pytest.approx(-float(loss) * n, rel=1e-4, abs=1e-4), (prompt, option)


def _run(pck, rho, same, qa):
    dt_norm = [[1.0] * 24 for _ in pck]
    qa_res = {c: {"accuracy": qa, "chance": 0.25, "n": 4} for c in ("camera_motion", "object_count",
                                                                    "relative_depth", "all")}
    return {"probe": {"layers": list(range(len(pck))), "dt": list(range(1, 25)), "delta": 2.0, "rope": "post",
                      "pck_mean": pck, "pck_std": [0.1] * len(pck), "rho": rho, "dt_norm": dt_norm},
            "same_texture_pck": same, "other_pck": same, "qa": qa_res, "qa_blind": qa_res}


def test_summarize_arm_is_mean_and_std_over_seeds():
    from experiments.replication.aggregate import qa_table, summarize_arms

    s = summarize_arms({"A": [_run([0.1, 0.3], [0.0, -0.2], [0.1, 0.2], 0.5),
                              _run([0.3, 0.5], [0.2, 0.0], [0.3, None], 1.0)]})["A"]
    assert s["pck_mean"] == pytest.approx([0.2, 0.4]) and s["pck_std"] == pytest.approx([0.1, 0.1])
    assert s["peak"]["layer"] == 1 and s["peak"]["rho"] == pytest.approx(-0.1)
    assert s["same_texture_pck"] == pytest.approx([0.2, 0.2])   # a missing value is left out, not zero
    assert s["qa"]["all"]["mean"] == pytest.approx(0.75) and s["qa"]["all"]["std"] == pytest.approx(0.25)
    table = qa_table({"A": s}, {"A": "arm A"})
    assert "| arm A | 0.75 ± 0.25" in table and "arm A — blind (grey video)" in table and "| chance |" in table


@pytest.mark.slow
def test_smoke_run_writes_results_figure_and_table(tmp_path):
    from experiments import reproduce_small

    assert reproduce_small.main(["--out", str(tmp_path), "--smoke"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "figure3.png").stat().st_size > 0 and (tmp_path / "figure3.pdf").exists()
    n_layers = res["plan"]["num_hidden_layers"]
    assert res["seeds"] == [0] and res["git_sha"] and res["plan"]["preset"] == "smoke"
    assert set(res["summary"]) == {"base", "A", "B", "C", "D", "E", "F"}
    assert res["plan"]["version"] == 3 and res["plan_sha"]                      # v3 records its PLAN.md commit
    assert set(res["references"]) >= {"uniform", "same_position", "appearance", "motion_by_dt", "visible_at_max_dt"}
    assert res["sweep"]["chosen"] in [{"lr": lr, "lora_r": r} for lr, r in res["plan"]["sweep"]]
    chosen = res["sweep"]["chosen"]
    assert res["runs"]["A"][0]["train_config"]["optim"]["lr"] == chosen["lr"]     # every arm uses the sweep's pick
    assert res["runs"]["F"][0]["train_config"]["lora"]["r"] == chosen["lora_r"]
    assert res["runs"]["F"][0]["train_config"]["heads"]["hidden"] == 0
    assert res["runs"]["E"][0]["train_config"]["loss"]["on"] == "qk_heads"
    for arm in "BCEF":
        assert len(res["runs"][arm][0]["val_head_pck"]["pck_mean"]) == n_layers
        assert any(v is not None for v in res["runs"][arm][0]["curves"]["l_corr"])
    assert set(res["runs"]["C"][0]["probe"]["pck_at"]) == {"1", "2", "4"}       # every threshold, delta 2 included
    for arm, s in res["summary"].items():
        for key in ("pck_mean", "pck_std", "rho", "same_texture_pck"):
            assert len(s[key]) == n_layers, (arm, key)
        assert len(s["dt_norm"]) == n_layers and len(s["dt_norm"][0]) == 24
        assert {"pck", "rho", "y_dt24", "same_texture_pck"} <= set(s["peak"])
        assert ("head_pck" in s) == (arm in ("B", "C", "E", "F")), arm
    for arm in "ABCDEF":
        (run,) = res["runs"][arm]
        assert run["seed"] == 0 and Path(run["checkpoint"], "adapter", "adapter_model.safetensors").exists()
        assert run["probe_command"].startswith("python probes/pck.py --model ")
    assert res["same_texture_sequences"]                        # the test split has the subset
    assert all(k.startswith("test:synth_4000_") for k in res["same_texture_sequences"])  # not the reported split
    table = (tmp_path / "qa_table.md").read_text()
    assert table == res["qa_table"]
    for label in res["labels"].values():
        assert f"| {label} |" in table and f"| {label} — blind (grey video) |" in table
    assert res["timings"]["total_s"] > 0

    # export the base and arm A/C adapters as shipped checkpoints, then re-probe them against the numbers
    from experiments import export_small
    from gasp_cli import demo

    ship = tmp_path / "ship"
    assert export_small.main([str(tmp_path), "--dest", str(ship), "--arms", "A", "C"]) == 0
    man = json.loads((ship / "manifest.json").read_text())
    assert man["source"]["git_sha"] == res["git_sha"] and set(man["models"]) == {"A", "C"}
    from safetensors import safe_open
    with safe_open(str(ship / "arm_C" / "adapter_model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert not list(ship.rglob("*.bin")) and not list(ship.rglob("*.pt"))    # safetensors only, no heads
    assert demo.main(["--checkpoints", str(ship), "--out", str(tmp_path / "cmp"), "--check"]) == 0
    rows = {r["label"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]}
    for arm in ("A", "C"):
        r = rows[res["labels"][arm]]
        assert r["pck"] == pytest.approx(res["summary"][arm]["peak"]["pck"], abs=0.02) and r["abs_diff"] <= 0.02
    assert (tmp_path / "cmp" / "figure3.png").exists()


def test_an_output_folder_of_another_plan_is_refused(tmp_path):
    from experiments.replication import make_plan
    from experiments.replication.small import PlanMismatchError, _check_plan

    _check_plan(make_plan("smoke", seeds=1), tmp_path)
    _check_plan(make_plan("smoke", seeds=3, arms=["A"]), tmp_path)     # seeds and arms may differ
    with pytest.raises(PlanMismatchError, match="fresh --out"):
        _check_plan(make_plan("quick"), tmp_path)


def test_targets_read_the_summary():
    from experiments.replication.aggregate import summarize_arms
    from experiments.replication.report import report, targets

    runs = {"A": [_run([0.1, 0.15], [-0.2, -0.1], [0.1, 0.1], 0.5)],
            "B": [_run([0.3, 0.6], [0.1, 0.3], [0.2, 0.4], 0.5)],
            "C": [_run([0.4, 0.7], [0.2, 0.5], [0.3, 0.5], 0.75)]}
    res = {"summary": summarize_arms(runs), "runs": {}, "labels": {a: f"arm {a}" for a in runs}, "seeds": [0],
           "qa_table": "", "command": "reproduce_small.py --out x", "preset": "full", "git_sha": "abc",
           "torch": "t", "transformers": "t", "timings": {"total_s": 60.0, "data_s": 1.0, "warmup_s": 2.0}}
    got = {t: (m, ok) for t, m, ok in targets(res)}
    assert got["C peak PCK@2 ≥ 3 × A's and ≥ 0.5"] == ("C 0.700, A 0.150 (ratio 4.67)", True)
    assert got["C ρ at peak > 0, A's ≤ 0 or clearly lower"][1] is True          # +0.5 vs -0.1
    assert got["C > B on same-texture-at-two-depths PCK"] == ("C 0.500, B 0.400", True)
    assert got["C ≥ A on camera-motion QA"][1] is True and got["C Y(Δt=24) ≥ 0.7"][1] is True
    res["summary"]["C"]["peak"]["pck"] = 0.44                                      # 3x A but below 0.5
    assert dict((t, ok) for t, _, ok in targets(res))["C peak PCK@2 ≥ 3 × A's and ≥ 0.5"] is False
    md = report(res)
    assert "| arm C | 1 | 0.44 |" in md and "git `abc`" in md and "| C Y(Δt=24) ≥ 0.7 | 1.000 | yes |" in md


def test_reference_pck_against_hand_counts():
    from probes.metrics import reference_pck as sequence_reference

    tracks = np.array([[[3.0, 3.0], [0.0, 0.0]], [[3.0, 3.0], [3.0, 0.0]]])     # (F=2, N=2) pixel = token
    ref = sequence_reference(tracks, np.ones((2, 2), bool), 0, (8, 8), token_size=1.0)
    # 13 tokens within 2 of an interior point, 9 of (3, 0) on the top edge; the first point stays put
    assert ref["uniform"] == pytest.approx((13 + 9) / 128) and ref["same_position"] == 0.5
