"""TAP-Vid (tracks/tapvid.py, scripts/convert_tapvid.py) on pickles written here in tapnet's documented layout,
and the probe's TAP-Vid metrics (probes/tapvid_metrics.py) against tapnet's formula written out independently.

The fixture video shows a random texture sliding 2 px left and 1 px up per frame in a 96 x 128
(H x W) frame, so every point's true position is known in closed form. tapnet stores positions
divided by the frame size with the origin at the image's top-left corner; a point at gasp's
pixel-centre position x is stored as (x + 0.5) / W.
"""
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from probes import tapvid_metrics as tv
from tracks.io import TrackReader
from tracks.safe_pickle import UnsafePickleError, load_restricted
from tracks.tapvid import sample_queries, subsample_frames

ROOT = Path(__file__).resolve().parents[1]
T, H, W, N = 30, 96, 128, 40
DX, DY = -2.0, -1.0


def truth(seed=0):
    """(frames (T, H, W, 3), pixel-centre positions (N, T, 2), occluded (N, T))."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (2 * H // 4, 3 * W // 4, 3), dtype=np.uint8)     # smooth texture (JPEG-friendly)
    tex = np.asarray(Image.fromarray(coarse).resize((3 * W, 2 * H), Image.BILINEAR))
    frames = np.stack([tex[t:t + H, 2 * t:2 * t + W] for t in range(T)])
    x0, y0 = rng.uniform(10, W - 10, N), rng.uniform(10, H - 10, N)
    xy = np.stack([x0[:, None] + DX * np.arange(T), y0[:, None] + DY * np.arange(T)], -1)
    occ = (xy[..., 0] < -0.5) | (xy[..., 1] < -0.5)
    occ[:5, 10:15] = True                                       # hidden for a while
    occ[5, :12] = True                                          # appears late: its first query is frame 12
    return frames, xy, occ


def tapvid_entry(frames, xy, occ, dtype=np.float32):
    return {"video": frames, "points": ((xy + 0.5) / np.array([W, H])).astype(dtype), "occluded": occ}


def write_davis(path: Path, names=("bear", "swan")):
    data = {}
    for i, name in enumerate(names):
        frames, xy, occ = truth(i)
        data[name] = tapvid_entry(frames, xy, occ)
    path.write_bytes(pickle.dumps(data))
    return path


def jpeg(frame):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=98)
    return buf.getvalue()


def write_kinetics(folder: Path):
    """Kinetics' shards as generate_tapvid.py writes them: a list of dicts, 'video' = np.array of JPEG bytes."""
    folder.mkdir(parents=True)
    frames, xy, occ = truth(3)
    entry = tapvid_entry(frames, xy, occ, np.float64)
    entry["video"] = np.array([jpeg(f) for f in frames])
    (folder / "0000_of_0010.pkl").write_bytes(pickle.dumps([entry], protocol=2))
    return folder


def convert(*argv):
    """The converter in this process (the CLI's subprocess behaviour is checked in the malicious-pickle test)."""
    from gasp_cli.convert_tapvid import main

    assert main([str(a) for a in argv]) == 0


def convert_subprocess(*argv, check=True):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_tapvid.py"), *map(str, argv)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert p.returncode == 0, p.stderr
    return p


# ----------------------------------------------------------------------------- reading

def test_davis_tracks_are_the_known_positions(tmp_path):
    out = tmp_path / "davis.h5"
    convert("--pickle", write_davis(tmp_path / "tapvid_davis.pkl"), "--out", out, "--max-frames", 8)
    reader = TrackReader(out)
    assert reader.scene_names == ["bear", "swan"] and len(reader) == 2
    frames, xy, occ = truth(0)
    seq = reader[0]
    kept = np.round(np.linspace(0, T - 1, 8)).astype(int)
    np.testing.assert_array_equal(seq.frame_index, kept)                          # source frame numbers
    np.testing.assert_array_equal(seq.frames, frames[kept])
    assert reader.scene_metadata("bear")["source_frames"] == kept.tolist()
    first = (~occ[:, kept]).argmax(1)
    np.testing.assert_array_equal(seq.query_frames, first)                        # first visible kept frame
    assert seq.query_frames[5] == np.flatnonzero(kept >= 12)[0]
    expected = xy[:, kept].transpose(1, 0, 2)                                     # (F, N, 2)
    vis = ~occ[:, kept].T
    np.testing.assert_allclose(seq.tracks[vis], expected[vis], atol=2e-4)
    np.testing.assert_array_equal(seq.visible, vis)
    np.testing.assert_array_equal(seq.occluded, ~vis)                            # TAP-Vid knows every state
    assert seq.metadata["query_mode"] == "first" and seq.depth is None and seq.K is None
    # sensitivity: the corner-origin reading (x = u W) or swapped axes would miss by >= 0.5 px
    u = (xy + 0.5) / np.array([W, H])
    assert np.abs((u * np.array([W, H]))[:, kept].transpose(1, 0, 2) - expected)[vis].min() >= 0.5 - 1e-6
    assert np.abs((u[..., ::-1] * np.array([W, H]) - 0.5)[:, kept].transpose(1, 0, 2) - expected)[vis].max() > 5


def test_strided_queries_and_resize(tmp_path):
    out = tmp_path / "s.h5"
    convert("--pickle", write_davis(tmp_path / "d.pkl", names=("bear",)), "--out", out, "--max-frames", 10,
            "--query-mode", "strided", "--query-stride", 3, "--resize", 48, 64)
    seq = TrackReader(out)[0]
    frames, xy, occ = truth(0)
    kept = subsample_frames(T, 10)
    vis = ~occ[:, kept]
    expect = [(n, f) for f in range(0, 10, 3) for n in np.flatnonzero(vis[:, f])]
    assert [(int(n), int(f)) for n, f in zip(seq.metadata["track_ids"], seq.query_frames)] == expect
    assert seq.frames.shape[1:3] == (48, 64)
    n, f = expect[-1]
    np.testing.assert_allclose(seq.tracks[:, len(expect) - 1], (xy[n, kept] + 0.5) / 2 - 0.5, atol=2e-4)
    assert seq.visible[seq.query_frames, np.arange(seq.num_points)].all()


def test_rgb_stacking_list_and_kinetics_jpeg_shards(tmp_path):
    frames, xy, occ = truth(2)
    (tmp_path / "rgb.pkl").write_bytes(pickle.dumps([tapvid_entry(frames, xy, occ)]))
    convert("--pickle", tmp_path / "rgb.pkl", "--out", tmp_path / "r.h5", "--max-frames", 30)
    seq = TrackReader(tmp_path / "r.h5")[0]
    assert TrackReader(tmp_path / "r.h5").scene_names == ["rgb_stacking_0000"]
    np.testing.assert_array_equal(seq.frame_index, np.arange(T))
    np.testing.assert_allclose(seq.tracks[~occ.T], xy.transpose(1, 0, 2)[~occ.T], atol=2e-4)

    convert("--pickle", write_kinetics(tmp_path / "kinetics"), "--out", tmp_path / "k.h5", "--max-frames", 6)
    reader = TrackReader(tmp_path / "k.h5")
    seq = reader[0]
    meta = reader.scene_metadata(reader.scene_names[0])
    assert meta["dataset"] == "kinetics" and meta["fps"] == 25.0
    frames, xy, occ = truth(3)
    kept = subsample_frames(T, 6)
    assert np.abs(seq.frames.astype(int) - frames[kept]).mean() < 6                # JPEG-decoded
    vis = ~occ[:, kept].T
    np.testing.assert_allclose(seq.tracks[vis], xy[:, kept].transpose(1, 0, 2)[vis], atol=1e-4)


def test_query_sampling_matches_tapnet_rules():
    occ = np.array([[1, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]], dtype=bool)
    tracks, frames = sample_queries(occ, "first")
    assert tracks.tolist() == [0, 2] and frames.tolist() == [1, 0]                # track 1 is never visible
    tracks, frames = sample_queries(occ, "strided", stride=2)
    assert list(zip(tracks.tolist(), frames.tolist())) == [(2, 0), (0, 2), (0, 4)]


# ----------------------------------------------------------------------------- bad input

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "tapvid_davis.pkl"
    evil.write_bytes(pickle.dumps({"bear": {"video": Payload(marker), "points": 0, "occluded": 0}}))
    with pytest.raises(UnsafePickleError, match="refused global (posix|os|nt).system"):
        load_restricted(evil)
    out = tmp_path / "out" / "d.h5"
    p = convert_subprocess("--pickle", evil, "--out", out, check=False)
    assert p.returncode == 2 and not marker.exists()
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("convert_tapvid: error:") and "refused global" in lines[-1] and str(evil) in lines[-1]
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


BAD = [
    (lambda d: d.write_bytes(pickle.dumps({"bear": tapvid_entry(*truth())})[:5000]), "truncated"),
    (lambda d: d.write_bytes(pickle.dumps({"bear": {**tapvid_entry(*truth()), "points": np.zeros((T, N, 2))}})),
     r"'points' cover 40 frames but 'video' has 30; points are \(N, T, 2\)"),
    (lambda d: d.write_bytes(pickle.dumps({"bear": {**tapvid_entry(*truth()), "points": truth()[1]}})),
     "not normalised"),
    (lambda d: d.write_bytes(pickle.dumps({"bear": {"video": truth()[0]}})),
     r"missing key\(s\) \['points', 'occluded'\]"),
    (lambda d: d.write_bytes(b"not a pickle at all"), "not a readable pickle"),
]


@pytest.mark.parametrize("spoil, message", BAD, ids=["truncated", "transposed", "pixels", "keys", "garbage"])
def test_bad_pickles_give_one_line_and_no_output(tmp_path, spoil, message):
    bad = tmp_path / "x.pkl"
    spoil(bad)
    from gasp_cli.convert_tapvid import main

    out = tmp_path / "o" / "x.h5"
    assert main(["--pickle", str(bad), "--out", str(out)]) == 2
    assert not (tmp_path / "o").exists()
    from tracks.tapvid import TapVidError, iter_videos

    with pytest.raises(TapVidError, match=message):
        list(iter_videos(bad))


# ----------------------------------------------------------------------------- metrics

def tapnet_pts_within(query_frames, gt_occluded, gt_tracks, pred_tracks, query_mode):
    """tapnet's compute_tapvid_metrics' pts_within_x for one video, written from its documentation:
    evaluation frames are those after the query ('first') or all but it ('strided'); a point counts when
    visible there, and is within x px when its squared distance is strictly below x^2."""
    n, t = gt_occluded.shape
    out = {}
    for thresh in (1, 2, 4, 8, 16):
        hit = total = 0
        for i in range(n):
            for f in range(t):
                evaluate = f > query_frames[i] if query_mode == "first" else f != query_frames[i]
                if not evaluate or gt_occluded[i, f]:
                    continue
                total += 1
                d2 = ((pred_tracks[i, f] - gt_tracks[i, f]) ** 2).sum()
                hit += d2 < thresh ** 2
        out[thresh] = hit / total
    return out


def test_within_bits_and_video_fractions_match_tapnet(tmp_path):
    rng = np.random.default_rng(0)
    F, Q, HH, WW = 7, 30, 90, 160
    gt = rng.uniform(0, [WW, HH], (F, Q, 2))
    pred = gt + rng.normal(0, 6, (F, Q, 2))
    pred[0, 0] = gt[0, 0] + [2 * WW / 256, 0]                # exactly 2 px at 256 x 256: strict < excludes it
    occ = rng.random((F, Q)) < 0.2
    qf = np.zeros(Q, int)
    occ[0] = False
    bits = tv.within_bits(torch.from_numpy(pred), torch.from_numpy(gt), (HH, WW)).numpy()      # (F, Q)
    # the probe's valid: visible, not the query frame (frames before a 'first' query are occluded)
    valid = ~occ & (np.arange(F)[:, None] != qf[None])
    frac = tv.video_fractions(bits[None], valid)[0]
    scale = np.array([256 / WW, 256 / HH])
    ref = tapnet_pts_within(qf, occ.T, (gt * scale).transpose(1, 0, 2), (pred * scale).transpose(1, 0, 2), "first")
    np.testing.assert_allclose(frac, [ref[x] for x in tv.THRESHOLDS], atol=1e-12)
    assert not (bits[0, 0] >> 1) & 1 and (bits[0, 0] >> 2) & 1
    # two videos: each threshold, and delta_avg, averaged over videos
    other = tv.video_fractions(bits[None] * 0, valid)
    s = tv.summarize_videos([frac[None], other])
    assert s["delta_avg"] == [pytest.approx((frac.mean() + 0.0) / 2)] and s["num_videos"] == 2
    assert s["delta_2"] == [pytest.approx(frac[1] / 2)]


def test_soft_argmax_refinement_against_a_loop():
    g = torch.Generator().manual_seed(0)
    h, w = 5, 7
    probs = torch.rand(3, 4, h * w, generator=g).softmax(-1)
    pred = torch.stack([probs.argmax(-1) // w, probs.argmax(-1) % w], -1)
    pred[0, 0] = torch.tensor([0, 6])                         # a corner: the window loses 5 of its 9 cells
    pos = tv.refine_positions(probs, pred, (h, w)).numpy()
    for f in range(3):
        for n in range(4):
            r0, c0 = pred[f, n].tolist()
            acc = np.zeros(2)
            tot = 0.0
            for r in range(r0 - 1, r0 + 2):
                for c in range(c0 - 1, c0 + 2):
                    if 0 <= r < h and 0 <= c < w:
                        p = float(probs[f, n, r * w + c])
                        acc += p * np.array([c, r])
                        tot += p
            np.testing.assert_allclose(pos[f, n], acc / tot, atol=1e-12)
    one_hot = torch.zeros(1, 1, h * w, dtype=torch.float64)
    one_hot[0, 0, 2 * w + 3] = 1.0
    assert tv.refine_positions(one_hot, torch.tensor([[[2, 3]]]), (h, w)).tolist() == [[[3.0, 2.0]]]


def test_probe_reports_tapvid_metrics_equal_to_tapnets_formula(tmp_path, capsys):
    """End to end on a strided conversion: results.json's δ^x equal tapnet's formula applied to the probe's own
    predictions (token centres, --refine none), pooled over each video's query-frame groups."""
    tracks = tmp_path / "d.h5"
    convert("--pickle", write_davis(tmp_path / "d.pkl"), "--out", tracks, "--max-frames", 6, "--query-mode",
            "strided", "--query-stride", 3)
    out = tmp_path / "probe"
    from gasp_cli.probe import main

    assert main(["--tracks", str(tracks), "--out", str(out), "--refine", "none", "--layers", "0,3"]) == 0
    assert "TAP-Vid delta_avg" in capsys.readouterr().out
    import json

    from probes.store import read_finished

    res = json.loads((out / "results.json").read_text())
    assert res["num_sequences"] == 2 and len(res["sequences"]) == 4        # two query frames per video
    assert res["tapvid"]["refine"] == "none" and res["tapvid"]["num_videos"] == 2
    vp = res["viewpoint"]                     # TAP-Vid has no cameras: said once, nothing put in the 0-degree bin
    assert vp["num_sequences"] == 0 and "pck" not in vp and "no cameras" in vp["reason"]
    assert sorted(vp["not_binned"]["no cameras"]) == sorted({k.split("#")[0] for k in res["sequences"]})
    done = read_finished(out)
    reader = TrackReader(tracks)
    per_video = {}
    for key in res["sequences"]:
        a, parent = done[key]["arrays"], done[key]["attrs"]["parent"]
        seq = reader[reader.sequence_keys.index(parent)].subset(a["points"])
        fids, qg = a["frame_ids"], int(a["query_grid"])
        (_, w), (th, tw) = a["grid"], a["token_size"]
        pred = np.stack([(a["pred"] % w + 0.5) * tw - 0.5, (a["pred"] // w + 0.5) * th - 0.5], -1)  # (L, F', Q, 2)
        others = [f for f in range(len(fids)) if f != qg]
        for li in range(2):
            full = np.zeros((len(fids), seq.num_points, 2))
            full[others] = pred[li]
            scale = np.array([256 / W, 256 / H])
            counts = per_video.setdefault((parent, li), {x: [0, 0] for x in tv.THRESHOLDS})
            ref = tapnet_pts_within(np.full(seq.num_points, qg), ~seq.visible[fids].T,
                                    (seq.tracks[fids] * scale).transpose(1, 0, 2), (full * scale).transpose(1, 0, 2),
                                    "strided")
            n = int((seq.visible[fids] & seq.visible[qg][None] & (np.arange(len(fids)) != qg)[:, None]).sum())
            for x in tv.THRESHOLDS:
                counts[x][0] += ref[x] * n
                counts[x][1] += n
    for li in range(2):
        for x in tv.THRESHOLDS:
            videos = [per_video[(v, li)][x] for v in {k[0] for k in per_video}]
            expect = np.mean([hit / tot for hit, tot in videos])
            assert res["tapvid"][f"delta_{x}"][li] == pytest.approx(expect, abs=1e-9)
    # AJ / OA under DiffTrack's all-visible rule: OA is each video's fraction of visible evaluation points
    vis_occ = {}
    for key in res["sequences"]:
        a, parent = done[key]["arrays"], done[key]["attrs"]["parent"]
        seq = reader[reader.sequence_keys.index(parent)].subset(a["points"])
        fids, qg = a["frame_ids"], int(a["query_grid"])
        others = [f for f in range(len(fids)) if f != qg]
        qvis = seq.visible[fids][qg]
        c = vis_occ.setdefault(parent, [0, 0])
        c[0] += int((seq.visible[fids][others] & qvis).sum())
        c[1] += int((seq.occluded[fids][others] & qvis).sum())
    occ = res["tapvid"]["occlusion"]
    want = np.mean([v / (v + o) for v, o in vis_occ.values()])
    assert occ["all_visible"]["oa"] == pytest.approx([want, want], abs=1e-12) and len(occ["all_visible"]["aj"]) == 2
    assert "threshold" in occ["confidence"] or "reason" in occ["confidence"]
    assert res["selection"]["layer"] in (0, 3) and len(res["selection"]["attention_score"]) == 2


def test_frame_budget_from_the_model(tmp_path):
    out = tmp_path / "b.h5"
    convert("--pickle", write_davis(tmp_path / "d.pkl", names=("bear",)), "--out", out, "--model", "tiny-qwen2.5-vl",
            "--max-frames-cap", 5)
    reader = TrackReader(out)
    meta = reader.scene_metadata("bear")
    assert meta["frame_budget"]["chosen_by"] == "--model tiny-qwen2.5-vl" and meta["frame_budget"]["max_frames"] == 5
    assert meta["frame_budget"]["tokens_per_frame"] > 0 and reader[0].num_frames == 5
