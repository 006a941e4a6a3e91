"""Layer-wise correspondence probe of a VLM's own attention: PCK@δ, calibration ρ, Δt robustness.

    python probes/pck.py                                   # tiny Qwen2.5-VL on synthetic tracks
    python probes/pck.py --model qwen2.5-vl-7b --tracks test.h5 --out runs/qwen7b --dtype bf16
    accelerate launch probes/pck.py ...                    # sequences sharded over processes

Writes OUT/results.h5 (per sequence, resumable), OUT/results.json and OUT/figure3.png/.pdf.
results.json also carries TAP-Vid's δ^x metrics (``tapvid``; probes/tapvid_metrics.py) for any tracks.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from gasp.inputs import INPUT_KEYS, ModelInput, check_input
from probes.results import ProbeResults, references_text
from probes.runner import ProbeConfig, ProbeError, run_probe
from tracks.io import TrackFormatError

log = logging.getLogger("gasp.probe")
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "probe"
PRESETS = ("difftrack", "peer_conventions")


def parse_args(argv: list[str] | None = None) -> ProbeConfig:
    d = ProbeConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)   # flags are matched exactly
    p.add_argument("--model", default=d.model, help="alias (qwen2.5-vl-7b, ...), local checkpoint folder, "
                   "HF id in the local cache, or tiny-* (default %(default)s)")
    p.add_argument("--adapter", help="peft LoRA adapter folder applied on top of --model")
    p.add_argument("--tracks", help="tracks file or folder of shards (default: synthetic eval sequences, "
                   "rendered once into GASP_CACHE, ~/.cache/gasp)")
    p.add_argument("--out", default=d.out, help="results folder (default %(default)s)")
    p.add_argument("--layers", default=d.layers, help="'all' or comma-separated layer indices")
    p.add_argument("--rope", choices=["post", "pre"], default=d.rope, help="Q/K after (default) or before RoPE")
    p.add_argument("--heads", choices=["mean", "concat", "per-head"], default=d.heads)
    p.add_argument("--match", choices=["cosine-mean", "softmax-mean"], default=d.match,
                   help="matching map: head-mean cosine (paper eq. 10, default) or head-mean softmax (DiffTrack)")
    p.add_argument("--bidirectional", action="store_true",
                   help="average the map with the k -> query-frame direction before the argmax (DiffTrack)")
    p.add_argument("--delta", default=f"{d.delta:g}",
                   help="PCK threshold(s) in tokens, e.g. 2 or 1,2,4: one curve each, the figure uses the first")
    p.add_argument("--refine", choices=["softargmax", "none"], default=d.refine,
                   help="sub-token position behind TAP-Vid's pixel metrics: a soft-argmax of the attention around "
                        "the matched token (default), or the token's centre")
    p.add_argument("--max-sequences", type=int, help="probe only the first N sequences")
    p.add_argument("--frames-mode", help="Qwen2/2.5-VL: duplicate (default), images or merged")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=d.dtype)
    p.add_argument("--device", help="torch device (default: accelerate's device for this process)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--fps", type=float, help=f"frame rate passed to the model (M-RoPE time ids; default: the "
                   f"adapter's, else {d.fps:g})")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="model input size in pixels (default: the adapter's, else the family's)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of tiny models and synthetic tracks")
    p.add_argument("--synthetic-scenes", type=int, default=d.synthetic_scenes,
                   help="without --tracks: number of synthetic evaluation scenes to render")
    p.add_argument("--synthetic-size", type=int, default=d.synthetic_size, help="their frame size in pixels")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--depth", action="store_true",
                   help="also probe depth per layer (linear ridge on hidden states, probes/depth.py), same forward")
    p.add_argument("--depth-train", help="tracks the depth probe is fitted on (default: a seeded split of --tracks "
                                         "by scene; every probed sequence is then scored)")
    p.add_argument("--depth-holdout", type=float, default=d.depth_holdout,
                   help="fraction of --tracks' scenes held out for the depth probe (default %(default)s)")
    p.add_argument("--depth-folds", type=int, default=d.depth_folds,
                   help="cross-validation folds (by scene) for its ridge lambda (default %(default)s)")
    p.add_argument("--pointmap", choices=("gt", "reldepth", "noisy", "none"),
                   help="feed an adapter trained with HiSpatial's point-map input this point map (gt: from depth and "
                        "K; none: every pixel invalid); required for such an adapter, refused for others")
    p.add_argument("--viewpoint-bins", default=",".join(f"{e:g}" for e in d.viewpoint_bins),
                   help="camera rotation bin edges in degrees for PCK by viewpoint (default %(default)s)")
    p.add_argument("--preset", choices=PRESETS, help="a preset from configs/probe/ (difftrack: DiffTrack's "
                   "conventions; peer_conventions: its matching with PCK@1/2/4), the same as --config FILE")
    p.add_argument("--config", help="YAML of probe settings (the keys of probes/config.py's ProbeConfig, e.g. "
                   "configs/probe/*.yaml); the flags given and KEY=VALUE overrides apply on top")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings by their config key, after --config (e.g. explore_sequences=0)")
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)
    if a.preset:
        if a.config:
            p.error("argument --preset: give --preset or --config, not both")
        a.config = str(PRESET_DIR / f"{a.preset}.yaml")
    try:
        deltas = [float(x) for x in a.delta.split(",") if x.strip()]
    except ValueError:
        p.error(f"argument --delta: expected numbers separated by commas, e.g. 1,2,4; got {a.delta!r}")
    bad = [x for x in deltas if not x > 0]
    if not deltas or bad:
        p.error(f"argument --delta: every threshold must be > 0 (a distance in tokens), got {a.delta}")
    if len(set(deltas)) != len(deltas):
        p.error(f"argument --delta: a threshold is repeated in {a.delta}")
    if (a.match != "cosine-mean" or a.bidirectional) and a.heads != "mean":
        p.error(f"argument --match: {a.match}{' with --bidirectional' if a.bidirectional else ''} averages over "
                f"heads; use --heads mean (got --heads {a.heads})")
    if a.batch_size < 1:
        p.error(f"argument --batch-size: must be >= 1, got {a.batch_size}")
    if a.max_sequences is not None and a.max_sequences < 1:
        p.error(f"argument --max-sequences: must be >= 1, got {a.max_sequences}")
    try:
        view_bins = tuple(float(x) for x in a.viewpoint_bins.split(",") if x.strip())
    except ValueError:
        p.error(f"argument --viewpoint-bins: expected degrees separated by commas, e.g. 0,15,30,60,180; "
                f"got {a.viewpoint_bins!r}")
    flags = dict(viewpoint_bins=view_bins, model=a.model, adapter=a.adapter, tracks=a.tracks, out=a.out, layers=a.layers, rope=a.rope,
                 heads=a.heads, match=a.match, bidirectional=a.bidirectional, delta=deltas[0],
                 extra_deltas=tuple(deltas[1:]), max_sequences=a.max_sequences, dtype=a.dtype, device=a.device,
                 batch_size=a.batch_size, seed=a.seed, trust_remote_code=a.trust_remote_code,
                 synthetic_scenes=a.synthetic_scenes, synthetic_size=a.synthetic_size, refine=a.refine,
                 depth=a.depth or a.depth_train is not None, depth_train=a.depth_train,
                 depth_holdout=a.depth_holdout, depth_folds=a.depth_folds, frames_mode=a.frames_mode,
                 size=tuple(a.size) if a.size else None, fps=a.fps, pointmap=a.pointmap)
    # one loader for every config (gasp/config.py): defaults, the YAML, KEY=VALUE; then the flags given. The flags'
    # defaults are ProbeConfig's, so without --config this is the flags alone.
    from gasp.config import ConfigError, load_typed, parse_override

    try:
        base = load_typed(ProbeConfig, a.config, a.overrides)
        in_config = set(yaml.safe_load(Path(a.config).read_text()) or {}) if a.config else set()
        in_config |= {parse_override(o)[0] for o in a.overrides}
        check_probe_config(base)
    except ConfigError as e:
        p.error(str(e))
    given = {dest for dest, opts in _flag_options(p).items() if any(t in opts or t.split("=", 1)[0] in opts
                                                                     for t in argv if t.startswith("--"))}
    merged = {**dataclasses.asdict(base), **{k: v for k, v in flags.items() if _given(k, given)}}
    merged["extra_deltas"], merged["size"] = tuple(merged["extra_deltas"]), merged["size"] and tuple(merged["size"])
    merged["viewpoint_bins"] = tuple(float(x) for x in merged["viewpoint_bins"])
    cfg = ProbeConfig(**{**merged, **adapter_inputs(merged["adapter"], merged, in_config | given)})
    try:                                             # the flags' values too (--size 0 0 passes argparse), and the
        check_probe_config(cfg)                      # adapter's recorded input settings
    except ConfigError as e:
        p.error(str(e))
    return cfg


def _flag_options(p: argparse.ArgumentParser) -> dict[str, set[str]]:
    return {act.dest: set(act.option_strings) for act in p._actions if act.option_strings}


SET_ALSO_BY = {"extra_deltas": "delta", "depth": "depth_train"}    # --delta 1,2 sets both; --depth-train implies depth


def _given(field: str, given: set[str]) -> bool:
    """Whether a ProbeConfig field was set by a flag on the command line."""
    return field in given or SET_ALSO_BY.get(field) in given


def check_probe_config(cfg: ProbeConfig) -> None:
    """What the flags' own checks say, for settings that came from a YAML file or KEY=VALUE."""
    from gasp.config import ConfigError

    deltas = [cfg.delta, *cfg.extra_deltas]
    if any(not x > 0 for x in deltas) or len(set(deltas)) != len(deltas):
        raise ConfigError(f"delta and extra_deltas must be distinct thresholds > 0, got {deltas}")
    if (cfg.match != "cosine-mean" or cfg.bidirectional) and cfg.heads != "mean":
        raise ConfigError(f"match {cfg.match} averages over heads; it needs heads: mean, got {cfg.heads}")
    if cfg.batch_size < 1 or (cfg.max_sequences is not None and cfg.max_sequences < 1):
        raise ConfigError("batch_size and max_sequences must be >= 1")
    if (bad := check_input(cfg)) is not None:
        raise ConfigError(bad)
    if cfg.pointmap is not None and cfg.pointmap not in ("gt", "reldepth", "noisy", "none"):
        raise ConfigError(f"pointmap must be gt, reldepth, noisy or none, got {cfg.pointmap!r}")
    if cfg.pck_px is not None and (not cfg.pck_px > 0 or len(cfg.pck_px_size) != 2 or min(cfg.pck_px_size) < 1):
        raise ConfigError(f"pck_px must be > 0 px and pck_px_size [H, W], got {cfg.pck_px} at {list(cfg.pck_px_size)}")
    e = list(cfg.viewpoint_bins)
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:])) or e[0] < 0 or e[-1] > 180:
        raise ConfigError(f"viewpoint_bins must be at least 2 increasing edges in [0, 180] degrees, got {e}")


def adapter_inputs(adapter: str | None, values: dict, explicit: set[str]) -> dict:
    """``ModelInput``'s fields (frames_mode, size, fps, prompt): as given (a flag, the YAML or KEY=VALUE;
    ``explicit`` names which), else as the adapter was trained (its gasp_input.json), else the defaults.
    Says which it adopted, and warns where a given value differs from the adapter's."""
    from gasp.train.checkpoint import input_settings

    d, rec = ModelInput(), (input_settings(adapter) if adapter else None) or {}
    used, adopted = {}, []
    for k in INPUT_KEYS:
        given = values.get(k) if k in explicit else None
        want = rec.get(k)
        if k == "size":
            given, want = (tuple(x) if x is not None else None for x in (given, want))
        if given is not None:
            used[k] = given
            if want is not None and given != want and k != "prompt":
                log.warning("--%s %s differs from the %s the adapter was trained with (%s); probing with yours",
                            k.replace("_", "-"), given, k, want)
        elif want is not None:
            used[k] = want
            if k != "prompt":
                adopted.append(f"{k} {'x'.join(map(str, want)) if k == 'size' else want}")
        else:
            used[k] = getattr(d, k)
    if adopted:
        log.info("probing at the adapter's training input settings (%s): %s; pass --size/--frames-mode/--fps "
                 "to override", ", ".join(adopted), Path(adapter) / "gasp_input.json")
    return used


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    try:
        res = run_probe(cfg, progress=tqdm)
    except (ProbeError, TrackFormatError, FileNotFoundError) as e:
        print(f"pck: error: {e}", file=sys.stderr)
        return 2
    if res is None:                       # not the main process
        return 0
    from plots.figure3 import draw_figure3

    paths = draw_figure3([res], [Path(cfg.model).name + (" + adapter" if cfg.adapter else "")],
                         Path(cfg.out) / "figure3.png", references=res.get("references"))
    print(ProbeResults(res).summary_line())
    if (sel := ProbeResults(res).selection_line()) is not None:
        print(sel)
    if fp := res.get("feature_pck"):
        names = {-2: "vision encoder before the projector (-2)", -1: "LLM input (-1)"}
        refs = references_text(res.get("references"))
        print(f"PCK@{res['delta']:g} of the features themselves: " + ", ".join(
            f"{names.get(layer, layer)} {'-' if v is None else f'{v:.3f}'}" for layer, v in zip(fp["layers"], fp["pck_mean"]))
            + (f" ({refs})" if refs else ""))
    vp = res.get("viewpoint") or {}
    if "pck" in vp:
        pk, e = ProbeResults(res).peak_index, vp["bins_deg"]
        cells = [f"{a:g}-{b:g} deg {'-' if v is None else f'{v:.3f}'} ({n})"
                 for a, b, v, n in zip(e, e[1:], vp["pck"][pk], vp["count"])]
        refs = references_text(res.get("references"))
        print(f"PCK@{res['delta']:g} by camera rotation at layer {res['layers'][pk]}: " + ", ".join(cells)
              + (f"; not binned: {sum(len(k) for k in vp['not_binned'].values())} sequence(s)" if vp.get("not_binned") else "")
              + (f" (over all bins: {refs})" if refs else ""))
    elif vp.get("reason"):
        print(f"PCK by camera rotation: none ({vp['reason']})")
    if res.get("pck_px"):
        px, pk = res["pck_px"], ProbeResults(res).peak_index
        print(f"PCK at {px['threshold_px']:g} px ({px['eval_size_hw'][0]}x{px['eval_size_hw'][1]}) "
              f"{px['pck_mean'][pk]:.3f} at layer {res['layers'][pk]} (the peak PCK@{res['delta']:g} layer)")
    tv = res.get("tapvid") or {}
    if tv.get("delta_avg"):
        best = max(range(len(tv["delta_avg"])), key=lambda i: tv["delta_avg"][i])
        print(f"TAP-Vid delta_avg {tv['delta_avg'][best]:.3f} at layer {res['layers'][best]} over {tv['num_videos']} "
              f"sequence(s) (256x256 px, every point predicted visible, {cfg.refine} positions)")
    if res.get("depth"):
        from plots.pck_depth import draw_geometry

        print(ProbeResults(res).depth_summary_line())
        paths = [*paths, *draw_geometry([res], [Path(cfg.model).name + (" + adapter" if cfg.adapter else "")],
                                        Path(cfg.out) / "geometry.png")]
    print(f"results: {Path(cfg.out) / 'results.json'}")
    print(f"figure:  {paths[0]}" + (f"\ngeometry: {paths[2]}" if len(paths) > 2 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
