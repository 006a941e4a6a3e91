"""Every input of a training run checked before any work: the model, the data files, and the data and loss
settings that cannot work together. A refusal is one :class:`InputError` line naming the key and the fix;
nothing has been rendered, made or written when it is raised.
"""
from __future__ import annotations

from pathlib import Path

from gasp.train.config import TrainConfig, objective_specs


class InputError(ValueError):
    """A training input that cannot work, found before the run starts."""


def geo_on(cfg: TrainConfig) -> bool:
    """Whether the run has geometric batches: some objective (``objectives``, or loss.on with corr/depth)."""
    return bool(objective_specs(cfg))


def lm_on(cfg: TrainConfig) -> bool:
    """Whether the run has LM batches: the LM loss on, and a share of steps (or no geometric loss at all)."""
    return cfg.loss.lm and (cfg.data.lm_ratio > 0 or not geo_on(cfg))


def _is_synthetic(tracks: str) -> bool:
    """Whether the first scene of a tracks file was rendered by gasp (synthetic instruction data needs that)."""
    from tracks.io import TrackReader

    with TrackReader(tracks) as reader:
        names = reader.scene_names
        if not names:
            return False
        meta = reader.scene_metadata(names[0])
    return isinstance(meta, dict) and meta.get("generator") == "gasp.synthetic"


def check_inputs(cfg: TrainConfig, resume: str | Path | None = None) -> None:
    """Raise InputError for the first input of ``cfg`` that cannot work; reads configs and file headers only."""
    from gasp.models.loading import AdapterMismatchError, ModelNotFoundError, UnknownModelError, check_model
    from tracks.io import TrackFormatError, TrackReader

    try:
        check_model(cfg.model.name)
    except (ModelNotFoundError, UnknownModelError, AdapterMismatchError) as e:
        raise InputError(f"model.name={cfg.model.name}: {e}") from None
    d = cfg.data
    for key in ("tracks", "tracks_eval"):
        path = getattr(d, key)
        if path:
            try:
                TrackReader(path).close()
            except (FileNotFoundError, TrackFormatError) as e:
                raise InputError(f"data.{key}={path}: {e}") from None
    if lm_on(cfg):
        if d.instruct and not Path(d.instruct).exists():
            raise InputError(f"data.instruct={d.instruct}: not found (LLaVA-Video-178K JSON/JSONL, gasp/data/instruct.py)")
        if not d.instruct and d.tracks and not _is_synthetic(d.tracks):
            raise InputError(
                f"loss.lm=true needs instruction data: data.instruct is not set, and synthetic instruction data is "
                f"made only from gasp's own synthetic scenes, not from data.tracks={d.tracks}. Set "
                "data.instruct=PATH (LLaVA-Video-178K format), or loss.lm=false to train the geometric losses alone")
    _check_objectives(cfg)
    if resume is not None:
        state = Path(resume)
        if not (state / "adapter").is_dir():
            raise InputError(f"--resume {resume}: not a checkpoint folder (OUT/checkpoint-STEP with adapter/ and "
                             "trainer_state.pt)")


def _check_objectives(cfg: TrainConfig) -> None:
    """Each objective's site on this family, the vision LoRA and projector asked for, and the data each one
    needs (depth maps, a structure teacher for every frame), from configs and file headers."""
    from gasp.adapters.base import ModelAdapter
    from gasp.models.loading import adapter_of
    from gasp.objectives import ObjectiveError
    from gasp.objectives.structure_teacher import StructureTeacherError
    from gasp.train.gasp_model import make_objectives

    adapter = adapter_of(cfg.model.name)
    if cfg.lora.vision_r and adapter.vision_lora_target_modules() is None:
        raise InputError(f"lora.vision_r={cfg.lora.vision_r}: gasp does not know the {adapter.model_type} family's "
                         "vision blocks; families with a vision LoRA: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA")
    if cfg.model.train_projector and type(adapter).projector is ModelAdapter.projector:
        raise InputError(f"model.train_projector: gasp does not know the {adapter.model_type} family's projector")
    _check_pointmap(cfg, adapter)
    objectives = make_objectives(cfg) if geo_on(cfg) else []
    for obj in objectives:
        try:
            obj.check(adapter)
        except ObjectiveError as e:
            raise InputError(f"model.name={cfg.model.name}: {e}") from None
    tracks = cfg.data.tracks
    if tracks is None:                      # gasp's synthetic scenes: depth, cameras and surfaces, every frame
        for obj in objectives:
            if obj.spec.teacher is not None:
                try:
                    obj.teacher.dim()
                except StructureTeacherError as e:
                    raise InputError(f"objective {obj.name}: {e}") from None
        return
    from tracks.io import TrackReader

    with TrackReader(tracks) as reader:
        for obj in objectives:
            if "depth_maps" in obj.needs:
                lacking = scenes_lacking(reader, "depth")
                if lacking:
                    raise InputError(f"objective {obj.name} needs depth maps, but {len(lacking)} of "
                                     f"{len(reader.scene_names)} scene(s) of data.tracks={tracks} have none (e.g. "
                                     f"{lacking[0]!r}); bring depth (scripts/convert_colmap.py --depth-npy, "
                                     "scripts/convert_vggt.py) or drop the objective")
            if "structure" in obj.needs:
                try:
                    obj.teacher.check(reader)
                except StructureTeacherError as e:
                    raise InputError(f"objective {obj.name}: {e}") from None


def scenes_lacking(reader, *what: str) -> list[str]:
    """The scenes of an open TrackReader that lack any of ``what`` ("depth", "cameras": ``scene_has``'s keys)."""
    return [s for s in reader.scene_names if not all(reader.scene_has(s)[w] for w in what)]


def _check_pointmap(cfg: TrainConfig, adapter) -> None:
    """model.pointmap: a family with the input, gasp's own instruction data (its records name their scene, whose
    depth and cameras make the point map), depth in the tracks, one process engine."""
    source = cfg.model.pointmap
    if source is None:
        return
    from gasp.pointmap import unsupported

    if (why := unsupported(adapter)) is not None:
        raise InputError(f"model.pointmap={source}: {why}")
    if lm_on(cfg) and cfg.data.instruct:
        raise InputError(f"model.pointmap={source} with data.instruct={cfg.data.instruct}: its records carry no "
                         "depth or cameras for a point map; leave data.instruct unset (gasp makes instruction data from "
                         "the training tracks, each record naming its scene) or loss.lm=false")
    from gasp.train import zero

    if cfg.run.fsdp or zero.requested():
        raise InputError(f"model.pointmap={source} is not wired for sharded training (run.fsdp, DeepSpeed) yet; "
                         "train on one process or DDP")
    if source != "none" and cfg.data.tracks:
        from tracks.io import TrackReader

        with TrackReader(cfg.data.tracks) as reader:
            total, lacking = len(reader.scene_names), scenes_lacking(reader, "depth", "cameras")
        if lacking:
            raise InputError(f"model.pointmap={source} needs depth and cameras, but {len(lacking)} of "
                             f"{total} scene(s) of data.tracks={cfg.data.tracks} lack them (e.g. "
                             f"{lacking[0]!r}); use tracks with depth, or model.pointmap=none")


def describe_data(cfg: TrainConfig) -> list[str]:
    """Lines the run logs once about where its data comes from, so nothing synthetic is used silently."""
    d, lines = cfg.data, []
    if d.tracks and cfg.run.eval_sequences > 0 and not d.tracks_eval:
        lines.append(f"evaluation: data.tracks_eval is not set, so the probe runs on {cfg.run.eval_sequences} "
                     "synthetic scenes, not on your data; set data.tracks_eval=FILE to evaluate on held-out "
                     "sequences of your own")
    return lines

