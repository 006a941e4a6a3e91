"""Where the trainer's data lives, and the tiny default's synthetic data, made once.

Training tracks, held-out evaluation tracks and instruction data come from the config's
paths. A path left empty is filled with synthetic data in `data.cache` (default OUT/data),
made by process 0 while the others wait: training scenes (`tracks.synthetic`), evaluation
sequences from the evaluation sampler (26-frame scenes, so every dt in 1..24 occurs), and
LLaVA-Video-format instruction data written from the training scenes
(`gasp.data.synthetic_instruct`), so the real loader path is what runs.
"""
from __future__ import annotations

import logging
from pathlib import Path

from gasp.train.config import TrainConfig
from gasp.train.preflight import geo_on, lm_on

log = logging.getLogger(__name__)


def prepare_data(cfg: TrainConfig, out: Path, accelerator) -> tuple[Path | None, Path | None, Path | None]:
    """Paths of the training tracks, eval tracks and instruction data; synthetic ones are made once."""
    d = cfg.data
    cache = Path(d.cache) if d.cache else out / "data"
    geo, lm = geo_on(cfg), lm_on(cfg)
    scenes = geo or (lm and cfg.model.pointmap is not None)   # point maps read the instruction records' scenes
    tracks = Path(d.tracks) if d.tracks else cache / "synthetic_train.h5"
    tracks_eval = Path(d.tracks_eval) if d.tracks_eval else cache / "synthetic_eval.h5"
    name = "instruct" + ("_metric" if d.metric_qa else "") + ("_vst" if d.vst_qa else "")
    instruct = Path(d.instruct) if d.instruct else cache / name / "instruct.json"
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

            size = d.synthetic_size
            if not d.tracks and (scenes or (lm and not d.instruct)) and not tracks.exists():
                log.info("no data.tracks: rendering %d synthetic training scenes into %s", d.synthetic_scenes, tracks)
                make_synthetic_file(tracks, d.synthetic_scenes, seed=cfg.run.seed, grid=d.grid, split="train",
                                    config=SyntheticSceneConfig(height=size, width=size, num_frames=d.synthetic_frames))
            if not d.tracks_eval and cfg.run.eval_sequences > 0 and not tracks_eval.exists():
                make_synthetic_file(tracks_eval, cfg.run.eval_sequences, seed=10_000 + cfg.run.seed, grid=d.grid,
                                    split="eval", config=SyntheticSceneConfig(height=size, width=size, num_frames=26))
            if lm and not d.instruct and not instruct.exists():
                from gasp.data.synthetic_instruct import (
                    scenes_from_tracks,
                    write_synthetic_instruct,
                )

                log.info("no data.instruct: writing synthetic instruction data from %s into %s", tracks, instruct.parent)
                from gasp.data.instruct import InstructionDataError

                try:
                    write_synthetic_instruct(scenes_from_tracks(tracks), instruct.parent, num_frames=d.num_frames_lm,
                                             seed=cfg.run.seed, metric=d.metric_qa, vst=d.vst_qa)
                except ValueError as e:
                    raise InstructionDataError(
                        f"data.instruct is not set, and instruction data cannot be made from {tracks}: {e}. Set "
                        "data.instruct=PATH (LLaVA-Video-178K format, see gasp/data/instruct.py), or train without "
                        "the LM loss (loss.lm=false)") from e
    return (tracks if scenes else None, tracks_eval if cfg.run.eval_sequences > 0 else None,
            instruct if lm else None)
