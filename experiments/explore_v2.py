"""Exploratory follow-ups of a finished v2 replication, on the VALIDATION split only (never test).

    python experiments/explore_v2.py runs/v2 --out docs/results/v2/explore [--steps 1200 --every 300]

1. features  cosine matching on the raw normed hidden states that q_proj reads, every layer, no head:
             the warm-up base against the same architecture at its random init (OUT/base_init),
             beside the pixel-patch NCC matcher on the same sequences. It says how much
             correspondence the features carry before any GASP training.
2. steps     arm C, seed 0, the run's chosen lr / LoRA rank, trained `--steps` steps from the base
             with a checkpoint every `--every`: validation head-space PCK@2 and Q/K PCK@2 against
             steps. It says whether the heads target is a matter of training length.

3. warm-up  (`--warmup-study STEPS`) the same warm-up with the vision tower frozen at its random
             init, against the run's base: spatial QA with frames and on a grey video on 40 fresh
             scenes of a design seed range (2500, neither validation nor test), and the features'
             matching as in 1. It says whether training the vision tower on QA is what lost the frames.

Writes OUT/explore.json (with the command, git SHA and the trainer config).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished scripts/reproduce_small.py output folder (v2 preset)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "v2" / "explore"))
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=300)
    ap.add_argument("--skip-steps", action="store_true", help="skip the step study")
    ap.add_argument("--warmup-study", type=int, default=0, metavar="STEPS",
                    help="also run study 3 with this many warm-up steps (0: skip)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    run = Path(a.run)
    if not (run / "results.json").is_file():
        print(f"explore_v2: error: {run / 'results.json'} not found", file=sys.stderr)
        return 2
    if a.steps < 1 or a.every < 1 or a.steps % a.every:
        print(f"explore_v2: error: --steps ({a.steps}) must be a positive multiple of --every ({a.every})",
              file=sys.stderr)
        return 2
    from experiments.replication.baselines import TOKEN_PX, benchmark_references
    from experiments.replication.head_probe import feature_pck, head_pck
    from experiments.replication.plan import ARMS, Plan
    from experiments.replication.small import _config, read_jsonl
    from gasp.models import load_model
    from gasp.qk_heads import load_heads
    from gasp.runinfo import run_info, write_json_atomic
    from gasp.train.config import to_dict
    from gasp.train.recipe import train
    from probes.train_eval import evaluate

    res = json.loads((run / "results.json").read_text())
    plan = Plan(**res["plan"])
    size = (plan.image_size, plan.image_size)
    data = {k: Path(v) for k, v in res["data"].items()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"command": " ".join(["explore_v2.py", *(argv if argv is not None else sys.argv[1:])]), **run_info(),
            "split": "val", "run": str(run)}
    ref = benchmark_references(data["val"], TOKEN_PX)
    feats = {"appearance_ncc": ref["appearance"]["2"]["mean"], "same_position": ref["same_position"]["2"]["mean"],
             "uniform": ref["uniform"]["2"]["mean"]}
    for name in ("base_init", "base"):
        model, proc, ad = load_model(str(run / name))
        feats[name] = feature_pck(model, proc, ad, data["val"], size=size)["pck_mean"]
        print(f"features of {name}: PCK@2 per layer " + ", ".join(f"{v:.3f}" for v in feats[name]), flush=True)
    print(f"pixel NCC {feats['appearance_ncc']:.3f}, same position {feats['same_position']:.3f}, "
          f"uniform {feats['uniform']:.3f} (validation split)", flush=True)
    out_path = out / "explore.json"
    result = {**info, "features": feats}
    if out_path.exists():                                 # studies run separately add up in one file
        old = json.loads(out_path.read_text())
        result = {**old, **result, "commands": [*old.get("commands", [old.get("command")]), result["command"]]}
    if a.warmup_study:
        result["warmup_study"] = warmup_study(run, plan, data, size, a.warmup_study)
    if not a.skip_steps:
        chosen = (res.get("sweep") or {}).get("chosen", {})
        d = run / "explore" / "run_C_seed0"            # checkpoints stay in the run folder, not in docs
        cfg = _config(plan, data, run / "base", d, 0, a.steps, {**ARMS["C"]["settings"], "run": {"save_every": a.every}},
                      chosen.get("lr"), chosen.get("lora_r"))
        t = time.time()
        summary = train(cfg, evaluator=evaluate)
        curve = []
        for step in range(a.every, a.steps + 1, a.every):
            ck = d / f"checkpoint-{step}"
            model, proc, ad = load_model(str(run / "base"), adapter=str(ck / "adapter"))
            hp = head_pck(model, proc, ad, load_heads(ck / "heads"), data["val"], size=size)
            curve.append({"step": step, "val_head_pck": hp["pck_mean"]})
            print(f"step {step}: val head-space PCK@2 " + ", ".join(f"{v:.3f}" for v in hp["pck_mean"]), flush=True)
        rows = read_jsonl(d / "metrics.jsonl")
        result["steps"] = {"arm": "C", "seed": 0, "train_s": time.time() - t, "curve": curve,
                           "val_qk_pck_final": (summary.get("results") or {}).get("pck_mean"),
                           "l_corr": [[r["step"], r["l_corr"]] for r in rows if r.get("l_corr") is not None],
                           "train_config": to_dict(cfg)}
    write_json_atomic(out_path, result)
    print(f"wrote {out_path}")
    return 0


def warmup_study(run: Path, plan, data: dict, size: tuple[int, int], steps: int) -> dict:
    """Study 3 (module docstring)."""
    from experiments.replication.head_probe import feature_pck
    from experiments.replication.qa_eval import build_questions, score
    from experiments.replication.warmup import full_warmup
    from gasp.models import load_model
    from tracks.synthetic import make_synthetic_file

    d = run / "explore" / "frozen_vision"
    frozen = full_warmup(run / "base_init", data["instruct"], d, steps=steps, lr=plan.warmup_lr, size=size,
                         num_frames=plan.qa_frames, seed=0, train_vision=False,
                         say=lambda m: print(m, flush=True))
    qa_path = run / "explore" / "qa_design.h5"
    if not qa_path.exists():
        make_synthetic_file(qa_path, 40, seed=2500, grid=8, split="eval", config=plan.scene_config(26))
    questions = build_questions(qa_path, plan.qa_frames)
    out = {"steps": steps, "qa_scenes": "40 scenes, base seed 2500", "num_questions": len(questions)}
    for name, path in (("base", run / "base"), ("frozen_vision", frozen)):
        model, proc, ad = load_model(str(path))
        qa, blind = score(model, proc, ad, questions, size=size), score(model, proc, ad, questions, blind=True, size=size)
        out[name] = {"qa": {k: v["accuracy"] for k, v in qa.items() if k != "per_question"},
                     "qa_blind": {k: v["accuracy"] for k, v in blind.items() if k != "per_question"},
                     "qa_n": {k: v["n"] for k, v in qa.items() if k != "per_question"},
                     "features_val": feature_pck(model, proc, ad, data["val"], size=size)["pck_mean"]}
        print(f"{name}: QA with frames {out[name]['qa']}, grey {out[name]['qa_blind']}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
