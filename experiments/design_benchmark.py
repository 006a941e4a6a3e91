"""Choose benchmark v2's camera motion on DESIGN scenes only (never test): issue 9's section-1 targets.

    python experiments/design_benchmark.py --out docs/results/v2/explore/benchmark_design.json \\
        [--scenes 30] [--shake 10 12 14] [--pan 0 20 40]

For every (shake_deg, pan_deg) it renders `--scenes` evaluation scenes of the design seed range
(base seed 2500, neither validation nor test; every second one a same-texture scene, as the
splits are made), at the v2 plan's size and frame count, and computes the model-free references
of `experiments.replication.baselines.benchmark_references`. It prints each section-1 target as met or
not (`experiments.replication.report.benchmark_targets`) and writes everything, with the command and git
SHA, to --out. The test split is not touched.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DESIGN_SEED = 2500


def late_same_position_interval(path: Path, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap interval, resampling sequences, of the pooled same-position PCK@2 at Δt >= 12.

    It says how far a 30-scene split's value can drift from another 30 scenes' of the same design.
    """
    import numpy as np

    from experiments.replication.baselines import TOKEN_PX, pair_references
    from tracks.io import TrackReader

    hits, tot = [], []
    with TrackReader(path) as reader:
        for i in range(len(reader)):
            pr = pair_references(reader[i], TOKEN_PX, (2.0,))
            late = (pr["dt"] >= 12)[:, None] & pr["valid"]                 # (F', N)
            hits.append(float(pr["same_position@2"][late].sum()))
            tot.append(float(late.sum()))
    hits, tot = np.array(hits), np.array(tot)
    idx = np.random.default_rng(seed).integers(0, len(hits), (draws, len(hits)))
    values = hits[idx].sum(1) / np.maximum(tot[idx].sum(1), 1)
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def study(shakes, pans, scenes: int, size: int, frames: int, work: Path, progress=None) -> list[dict]:
    """References and target checks for every (shake, pan) on the same design seeds."""
    from experiments.replication.baselines import benchmark_references
    from experiments.replication.report import benchmark_targets
    from experiments.replication.small import same_texture_keys
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    rows = []
    for shake, pan in itertools.product(shakes, pans):
        path = work / f"design_s{shake:g}_p{pan:g}.h5"
        cfg = SyntheticSceneConfig(height=size, width=size, num_frames=frames, shake_deg=shake, pan_deg=pan)
        make_synthetic_file(path, scenes, seed=DESIGN_SEED, grid=8, split="eval", config=cfg, progress=progress)
        ref = benchmark_references(path, same_keys=same_texture_keys(path))    # every second scene, as in the splits
        checks = benchmark_targets(ref)
        rows.append({"shake_deg": shake, "pan_deg": pan, "references": ref,
                     "same_position_dt12_bootstrap_95": late_same_position_interval(path),
                     "targets": [{"target": t, "value": v, "met": bool(ok)} for t, v, ok in checks],
                     "all_met": all(ok for _, _, ok in checks)})
        path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--scenes", type=int, default=30)
    p.add_argument("--shake", type=float, nargs="+", default=[10.0, 12.0, 14.0])
    p.add_argument("--pan", type=float, nargs="+", default=[0.0, 20.0, 40.0])
    p.add_argument("--size", type=int, default=448, help="frame size in px (the v2 plan: 448)")
    p.add_argument("--frames", type=int, default=26, help="frames per scene (the evaluation scenes: 26)")
    a = p.parse_args(argv)
    if a.scenes < 2:
        p.error(f"argument --scenes: must be >= 2, got {a.scenes}")
    logging.basicConfig(level=logging.WARNING)
    from tqdm import tqdm

    from gasp.runinfo import run_info, write_json_atomic

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows = study(a.shake, a.pan, a.scenes, a.size, a.frames, Path(tmp),
                     progress=lambda it: tqdm(it, desc="design scenes", unit="scene", leave=False))
    print("| shake ° | pan ° | same pos. pooled | same pos. Δt ≥ 12 (95% bootstrap) | NCC / same pos. "
          "| visible at Δt 24 | all met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        v = {t["target"]: t for t in r["targets"]}
        ref = r["references"]
        sp, app = ref["same_position"]["2"], ref["appearance"]["2"]
        lo, hi = r["same_position_dt12_bootstrap_95"]
        print(f"| {r['shake_deg']:g} | {r['pan_deg']:g} | {sp['pooled']:.3f} | {sp['by_dt']['12-24']:.3f} "
              f"({lo:.3f}–{hi:.3f}) | "
              f"{app['pooled'] / max(sp['pooled'], 1e-9):.1f}× | {ref['visible_at_max_dt']:.3f} | "
              f"{'yes' if r['all_met'] else 'no'} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.out, {"command": " ".join(["python", "experiments/design_benchmark.py", *(argv or sys.argv[1:])]),
                              "design_seed": DESIGN_SEED, "scenes": a.scenes, "size": a.size, "frames": a.frames,
                              "seconds": round(time.monotonic() - t0, 1), "rows": rows, **run_info()})
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
