"""A validation-only pilot of the v3 plan before it is fixed (issue 9): does the pre-trained vision
tower survive the warm-up, do the heads rise above the same-position reference, does QA use frames?

    python experiments/pilot_v3.py --out runs/v3_pilot --dest docs/results/v3/pilot.json

Runs the full preset's model and steps on a smaller slice: 16 train scenes, 60 instruction
scenes, `--warmup-steps` warm-up steps, then arm C for `--arm-steps` steps at lr 1e-3, rank 64.
It reads the validation split (base seed 2000) and 20 QA scenes of the design seed range (2500),
never the test split. Writes the numbers, the command and the git SHA to DEST.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--warmup-steps", type=int, default=600)
    ap.add_argument("--arm-steps", type=int, default=150)
    a = ap.parse_args(argv)
    from experiments.replication.plan import make_plan
    from experiments.replication.qa_eval import build_questions, score
    from experiments.replication.small import feature_table, make_instruct, make_split, train_arm, val_head_pck, warmup
    from gasp.models import load_model
    from gasp.runinfo import run_info, write_json_atomic
    from tracks.synthetic import make_synthetic_file

    plan = replace(make_plan("full"), train_scenes=16, instruct_scenes=60, warmup_steps=a.warmup_steps)
    out = Path(a.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = {k: make_split(plan, k, out / "data" / f"{k}.h5") for k in ("train", "val")}
    data["instruct"] = make_instruct(plan, out / "data" / "instruct" / "instruct.json", data["train"])
    base = warmup(plan, data, out, say=print)
    feats = feature_table(plan, data, out)
    for k, row in feats.items():
        print(f"features {k}: " + ", ".join(f"{v:.3f}" for v in row), flush=True)
    ckpt, _, _ = train_arm(plan, data, base, "C", 0, out / "C", steps=a.arm_steps, lr=1e-3, lora_r=64)
    heads = val_head_pck(plan, data, base, ckpt)["pck_mean"]
    print("C val head-space PCK@2: " + ", ".join(f"{v:.3f}" for v in heads), flush=True)
    qa_path = out / "data" / "qa_design.h5"
    if not qa_path.exists():
        make_synthetic_file(qa_path, 20, seed=2500, grid=8, split="eval", config=plan.scene_config(26))
    questions = build_questions(qa_path, plan.qa_frames)
    model, proc, ad = load_model(str(base))
    s = (plan.image_size, plan.image_size)
    qa = {blind: {k: v["accuracy"] for k, v in score(model, proc, ad, questions, blind=blind, size=s).items()
                  if k != "per_question"} for blind in (False, True)}
    print(f"base QA frames {qa[False]}, grey {qa[True]}", flush=True)
    write_json_atomic(Path(a.dest), {
        "command": " ".join(["pilot_v3.py", *(argv if argv is not None else sys.argv[1:])]), **run_info(),
        "splits": "train 16 scenes (seed 1000), instruct 60 (1500), val 4 (2000), QA 20 design scenes (2500)",
        "plan": plan.to_dict(), "features_val": feats, "C_val_head_pck": heads, "C_steps": a.arm_steps,
        "qa_design": qa[False], "qa_design_grey": qa[True], "num_questions": len(questions),
        "seconds": time.time() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
