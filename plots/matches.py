"""Match explorer: look at a probe's predicted matches, per sequence, layer and query point.

    python plots/matches.py OUT                         # OUT written by python probes/pck.py --out OUT
    python plots/matches.py OUT --sequences 0 3 --layers 0 12 27 --points 5 40 --out /tmp/look

Writes under OUT/matches/ (or --out):
    matches_<seq>_L<layer>.png   every frame with lines from each valid point's ground truth to
                                 its predicted token's centre, green within delta, red not
    heatmap_<seq>_p<point>.png   a point's similarity maps (eq. 10) over a few frames, one
                                 column per layer (only points the probe stored maps for)
    geometry.png/.pdf            with a --depth probe: PCK and depth per layer (plots/pck_depth.py), also on the page
    where.png, where.json        per layer, pooled over all sequences: fractions of valid
                                 predictions that are correct > at the query's own token >
                                 on the grid border > elsewhere (first that applies)
    index.html                   one self-contained page to flip through all of the above

Default sequences are those with stored similarity maps (the probe's first 8): the page shows
them all, the PNGs the first --figures (2) of them, all of them with --sequences. Default layers
are all probed ones, or 6 spread ones (with the peak) for deeper models; --points picks the
points drawn (default: all valid in matches_*, those with maps in heatmap_*).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tqdm import tqdm  # noqa: E402

from plots import match_data, match_figures, match_page  # noqa: E402
from tracks.io import TrackFormatError  # noqa: E402

log = logging.getLogger("plots.matches")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="probe output folder (holds results.json and results.h5)")
    p.add_argument("--sequences", nargs="+", help="indices into the probed sequences, keys, or unique parts of keys")
    p.add_argument("--layers", nargs="+", type=int, help="probed layer numbers to draw")
    p.add_argument("--points", nargs="+", type=int, help="query point indices to draw")
    p.add_argument("--out", "--dest", dest="dest", type=Path, help="output folder (default OUT/matches)")
    p.add_argument("--tracks", type=Path, help="tracks file to read instead of the one results.json names")
    p.add_argument("--figures", type=int, default=2,
                   help="draw PNGs for the first N chosen sequences (default 2; all with --sequences); "
                        "the page shows every chosen sequence")
    p.add_argument("--thumb", type=int, default=480, help="longest side of the page's JPEG frames (default 480)")
    a = p.parse_args(argv)
    if a.figures < 0:
        p.error(f"argument --figures: must be >= 0, got {a.figures}")
    return a


def explore(args: argparse.Namespace) -> list[Path]:
    run = match_data.load_run(args.out)
    dest = args.dest or args.out / "matches"
    keys = match_data.select_sequences(run, args.sequences)
    layers = match_data.select_layers(run, args.layers)
    layer_idx = [run.layers.index(v) for v in layers]
    written: list[Path] = []
    chosen: dict[str, match_data.SequenceMatches] = {}
    pooled = []
    with match_data.open_tracks(run, args.tracks) as reader:
        for key, rec in tqdm(run.records.items(), desc="sequences", unit="seq"):
            sm = match_data.load_sequence(reader, key, rec)
            bad = [p for p in args.points or () if not 0 <= p < sm.valid.shape[1]]
            if bad:
                raise ValueError(f"--points {bad}: sequence {key!r} has points 0..{sm.valid.shape[1] - 1}")
            if key in keys:
                chosen[key] = sm
            else:                                            # where.png pools every sequence: keep no frames
                sm.frames = sm.frames[:0]
            pooled.append(sm)
    where = match_data.where_summary(pooled, run.layers, run.delta)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "where.json").write_text(json.dumps(where, indent=1))
    written += [dest / "where.json", match_figures.draw_where(where, dest, run.results.get("references"))]
    drawn = keys if args.sequences else keys[:args.figures]
    for key in tqdm(drawn, desc="figures", unit="seq"):
        sm = chosen[key]
        for li, layer in zip(layer_idx, layers):
            written.append(match_figures.draw_matches(sm, li, layer, run.delta, dest, args.points))
        points = [p for p in (args.points or sm.sim_points.tolist()) if p in sm.sim_points]
        if args.points and len(points) < len(args.points):
            log.warning("%s: no similarity maps stored for points %s (stored: %s)", key,
                        sorted(set(args.points) - set(points)), sm.sim_points.tolist())
        for p in points:
            path = match_figures.draw_heatmaps(sm, layer_idx, layers, p, dest)
            if path is None:
                log.warning("%s: point %d is valid in no frame; no heatmap", key, p)
            else:
                written.append(path)
    geometry = None
    if run.results.get("depth"):                         # probed with --depth: PCK and depth per layer
        from plots.pck_depth import draw_geometry

        label = Path(str(run.results.get("model", "model"))).name
        geometry, pdf = draw_geometry([run.results], [label], dest / "geometry.png")
        written += [geometry, pdf]
    data = match_page.page_data([chosen[k] for k in keys], layer_idx, layers, run.delta, where,
                                title=f"{run.results.get('model', '?')} — {args.out}", most=args.thumb,
                                geometry_png=geometry)
    written.append(match_page.write_page(dest / "index.html", data))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        written = explore(args)
    except (FileNotFoundError, KeyError, ValueError, TrackFormatError) as e:
        print(f"matches: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    log.info("wrote %d files under %s", len(written), written[-1].parent)
    print(f"page: {written[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
