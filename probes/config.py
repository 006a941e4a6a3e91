"""What determines a probe's numbers: its config, its layer selection, and the error it reports bad input with.

Saved into results.json (``config``) and compared on resume (``probes/runner.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gasp.inputs import ModelInput

DTS = tuple(range(1, 25))


@dataclass
class ProbeConfig(ModelInput):
    """Everything that determines a probe's numbers; saved into results.json.

    frames_mode, size, fps and prompt come from ``ModelInput``, shared with the trainer's model config.
    """

    model: str = "tiny-qwen2.5-vl"
    adapter: str | None = None
    tracks: str | None = None          # None: synthetic evaluation sequences, rendered once into GASP_CACHE
    out: str = "runs/probe"
    layers: str = "all"                # "all" or "i,j,..."
    rope: str = "post"
    heads: str = "mean"
    match: str = "cosine-mean"         # "cosine-mean" (paper eq. 10) or "softmax-mean" (DiffTrack)
    bidirectional: bool = False        # average the matching map with the k -> query-frame direction
    delta: float = 2.0
    extra_deltas: tuple[float, ...] = ()  # further PCK thresholds, reported as pck_at (e.g. 1 and 4)
    max_sequences: int | None = None
    dtype: str = "fp32"
    device: str | None = None          # None: accelerate's device for this process
    batch_size: int = 1
    seed: int = 0
    trust_remote_code: bool = False
    synthetic_scenes: int = 8          # embedded default: scenes of 26 frames, one 8-frame sequence each
    synthetic_size: int = 448          # 16 x 16 tokens per frame for Qwen (28 px tokens)
    explore_sequences: int = 8         # the first N sequences also store similarity maps (plots/matches.py)
    explore_points: int = 4            # ... of this many query points each
    refine: str = "softargmax"         # sub-token position for TAP-Vid's δ metrics (probes/tapvid_metrics.py)
    depth: bool = False                # also the per-layer linear depth probe (probes/depth.py), same forward
    depth_train: str | None = None     # its probe-train tracks; None: a seeded split of --tracks by scene
    depth_holdout: float = 0.5         # fraction of --tracks' scenes held out for it when depth_train is None
    depth_folds: int = 3               # cross-validation folds (by scene) for its ridge lambda
    viewpoint_bins: tuple[float, ...] = (0.0, 15.0, 30.0, 60.0, 180.0)  # camera rotation bin edges, deg (viewpoint.py)
    pck_px: float | None = None        # also PCK at this many pixels (strict <) with positions scaled to pck_px_size
    pck_px_size: tuple[int, int] = (480, 720)  # (H, W) frame the pixel PCK is measured in (DiffTrack's 480 x 720)
    pointmap: str | None = None        # HiSpatial's point map fed to an adapter trained with one (gasp.pointmap.SOURCES)


class ProbeError(ValueError):
    """Bad probe input, reported to the user without a traceback."""


def parse_layers(spec: str, num_layers: int, kinds: list[str] | None = None) -> list[int]:
    """Layer indices from --layers; "all" means every softmax-attention ("full") layer of ``kinds``.

    A hybrid LLM's linear-attention layers (Qwen3.5's Gated DeltaNet) have no Q/K softmax to
    probe: "all" leaves them out and naming one is an error (docs/METHOD.md sec. 1).
    """
    kinds = kinds or ["full"] * num_layers
    if spec == "all":
        return [i for i in range(num_layers) if kinds[i] == "full"]
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ProbeError(f"--layers must be 'all' or comma-separated integers, got {spec!r}") from None
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ProbeError(f"--layers {spec!r}: layer(s) {bad} do not exist; the model has layers 0..{num_layers - 1}")
    linear = [i for i in layers if kinds[i] != "full"]
    if linear:
        raise ProbeError(f"--layers {spec!r}: layer(s) {linear} are linear-attention layers (no softmax Q/K to probe); "
                         f"the attention layers are {[i for i, k in enumerate(kinds) if k == 'full']}")
    return sorted(set(layers))


def layer_kind_fields(layers: list[int], kinds: list[str] | None) -> dict[str, Any]:
    """results.json's marking of hybrid LLMs: ``layer_kinds`` aligned with ``layers`` and the
    decoder layers left out because they are linear attention (empty for softmax-only LLMs)."""
    kinds = kinds or ["full"] * (max(layers) + 1)
    return {"layer_kinds": [kinds[i] for i in layers],
            "num_decoder_layers": len(kinds),
            "linear_attention_layers": [i for i, k in enumerate(kinds) if k == "linear"],
            "linear_attention_note": "not probed: linear attention (Gated DeltaNet) has no softmax over keys, "
                                     "so its q/k are not what the layer's token mixing compares"
            if "linear" in kinds else None}
