"""The layer-wise correspondence probe (paper Sec. 5.3, Fig. 3) over a track dataset.

For each sequence: the adapter turns its frames into model inputs with one token grid
per frame; one forward pass with :func:`gasp.capture.qk.capture_qk` hands over each layer's
visual-token Q/K as soon as that layer has run; :func:`probes.metrics.evaluate_layer`
reduces them to per-point correctness and confidence, and the tensors are dropped, so
peak extra memory is one layer's visual Q/K. Per-sequence results are appended to
``OUT/results.h5`` (resumable and kill-safe; see ``probes/store.py``), and the summary goes to
``OUT/results.json``.

Shapes: L layers, H heads, F frames (token grids), N points, h x w tokens, D head dim.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch

from gasp.distributed import process_state
from gasp.models import load_model
from gasp.runinfo import write_json_atomic
from probes import metrics, store, viewpoint
from probes.config import DTS, ProbeConfig, ProbeError, layer_kind_fields, parse_layers  # noqa: F401 (re-exported)
from probes.summary import delta_key, summarize  # noqa: F401 (re-exported)
from tracks.io import TrackReader
from tracks.types import TrackSequence

if TYPE_CHECKING:
    from probes.depth import DepthProbe

log = logging.getLogger(__name__)

PRE_PROJECTOR = -2        # the depth probe's name for the vision encoder's output before the projector


def synthetic_eval_tracks(cfg: ProbeConfig, progress: Callable[..., Any] | None = None) -> Path:
    """The embedded default's evaluation sequences, rendered once into the cache (``tracks/cache.py``)."""
    from tracks.cache import cached_synthetic_file
    from tracks.synthetic import SyntheticSceneConfig

    scene_cfg = SyntheticSceneConfig(height=cfg.synthetic_size, width=cfg.synthetic_size, num_frames=26)
    wrap = (lambda it: progress(it, desc="render eval scenes", unit="scene")) if progress else None
    return cached_synthetic_file(cfg.synthetic_scenes, 10_000 + cfg.seed, scene_cfg, grid=8, split="eval",
                                 progress=wrap)


class Probe:
    """A loaded model plus its adapter, ready to probe sequences."""

    def __init__(self, cfg: ProbeConfig, model, processor, adapter, device: str | torch.device = "cpu",
                 training: bool = False):
        """A probe around a loaded model (e.g. the trainer's, with its LoRA adapter); see :meth:`load`.

        ``training``: the model goes on training afterwards, so its forwards run under ``no_grad``, not
        ``inference_mode``: a sharded model (FSDP2) keeps gathered weights made in a forward, and inference
        tensors among them cannot take part in the next backward."""
        if cfg.heads not in metrics.HEADS_MODES:
            raise ProbeError(f"--heads must be one of {metrics.HEADS_MODES}, got {cfg.heads!r}")
        if cfg.match not in metrics.MATCH_MODES:
            raise ProbeError(f"--match must be one of {metrics.MATCH_MODES}, got {cfg.match!r}")
        if (cfg.match != "cosine-mean" or cfg.bidirectional) and cfg.heads != "mean":
            raise ProbeError(f"--match {cfg.match}{' --bidirectional' if cfg.bidirectional else ''} averages over "
                             f"heads; use it with --heads mean (got --heads {cfg.heads})")
        self.cfg, self.model, self.processor, self.adapter, self.device = cfg, model, processor, adapter, device
        self.grad_off = torch.no_grad if training else torch.inference_mode
        self.layer_kinds = adapter.layer_kinds(model)          # per decoder layer "full" / "linear"
        self.layers = parse_layers(cfg.layers, len(self.layer_kinds), self.layer_kinds)

    @classmethod
    def load(cls, cfg: ProbeConfig, device: str | torch.device = "cpu") -> "Probe":
        """Load ``cfg.model`` (plus ``cfg.adapter``) and wrap it; loading errors become ProbeError."""
        from gasp.models.loading import AdapterMismatchError, ModelNotFoundError, UnknownModelError

        try:
            model, processor, adapter = load_model(
                cfg.model, adapter=cfg.adapter, dtype=cfg.dtype, device=device,
                trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
        except (ModelNotFoundError, UnknownModelError, AdapterMismatchError) as e:
            raise ProbeError(str(e)) from None
        return cls(cfg, model, processor, adapter, device)

    def prepare(self, seq: TrackSequence):
        try:
            inputs, layout = self.adapter.prepare_inputs(seq.frames, processor_or_tokenizer=self.processor,
                                                         **self.cfg.input_settings())
        except ValueError as e:
            raise ProbeError(f"sequence {seq.key} ({seq.image_size[0]}x{seq.image_size[1]} px): {e}") from None
        return inputs, layout

    def evaluate(self, seqs: list[TrackSequence], maps: list[bool] | None = None, depth: "DepthProbe | None" = None,
                 folds: list[int | None] | None = None, pck: bool = True) -> list[list[ProbeRecord]]:
        """Probe a batch of sequences with identical input shapes in one forward.

        With ``depth`` the same forward also feeds the depth probe (``probes/depth.py``): each
        sequence's visual hidden states at layer -1 and every probed layer, and its pixel
        patches, with ``folds[b]`` its cross-validation fold while the probe is being fitted.
        ``pck=False`` runs that forward alone and returns no records.

        Returns each sequence's records. A sequence whose points share one query frame gives
        one record, keyed by the sequence's key. One whose points have their own query frames
        (TAP-Vid) gives one record per query frame, keyed ``<key>#q<f>``, holding that group's
        points (``points``, indices into the sequence's N) and naming the sequence as its
        ``parent``; the summary pools a sequence's groups. A record holds the metrics' inputs
        (correct, conf, valid, dt), the predicted token of every point in every frame at every
        layer (``pred``, flat row-major index into the h x w grid), TAP-Vid's δ bits
        (``within_px``) and, where ``maps[b]``, similarity maps of ``explore_points`` query
        points of its first group.
        """
        maps = maps or [False] * len(seqs)
        prepared = [self.prepare(s) for s in seqs]
        layout = prepared[0][1]
        # every input's first dim is the batch or a flat run of patches: both concatenate on dim 0
        inputs = {k: torch.cat([p[0][k] for p in prepared]) for k in prepared[0][0]}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        fids = layout.frame_ids.cpu().numpy()
        heads_modes = ["mean", "per-head"] if self.cfg.heads == "per-head" else [self.cfg.heads]
        F, (h, w) = layout.num_grids, layout.grid

        units = []                       # (batch row, sequence or its group, query grid, point indices, key, attrs)
        for b, seq in enumerate(seqs if pck else ()):
            groups = seq.query_groups()
            for j, (qf, pts) in enumerate(groups):
                if qf not in fids:
                    raise ProbeError(f"sequence {seq.key}: query frame {qf} has no token grid of its own in frames "
                                     f"mode {self.cfg.frames_mode!r}; grids stand for frames {fids.tolist()}")
                single = len(groups) == 1
                unit = seq if single else seq.subset(pts)
                explore = spread_points(unit.visible[qf], self.cfg.explore_points) if maps[b] and j == 0 else []
                units.append((b, unit, int(np.flatnonzero(fids == qf)[0]), None if single else pts,
                              seq.key if single else f"{seq.key}#q{qf}", explore,
                              {"scene": seq.scene, **({} if single else {"parent": seq.key})}))
        rows: list[list[Any]] = [[] for _ in units]

        def on_layer(layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
            # q: (B, H, F*h*w, D) -> (B, H, F, h, w, D)
            q = q.float().unflatten(2, (F, h, w))
            k = k.float().unflatten(2, (F, h, w))
            for u, (b, seq, qg, _, _, explore, _) in enumerate(units):
                rows[u].append([metrics.evaluate_layer(
                    q[b], k[b], torch.from_numpy(seq.tracks[fids]), torch.from_numpy(seq.visible[fids]),
                    layout.token_size, torch.from_numpy(seq.frame_index[fids]), query_frame=qg,
                    heads=mode, delta=self.cfg.delta, extra_deltas=self.cfg.extra_deltas if mode != "per-head" else (),
                    sim_points=explore if mode != "per-head" else (), match=self.cfg.match,
                    bidirectional=self.cfg.bidirectional, image_size=seq.image_size, refine=self.cfg.refine,
                    pck_px=(self.cfg.pck_px, self.cfg.pck_px_size) if self.cfg.pck_px else None)
                    for mode in heads_modes])

        from contextlib import ExitStack

        from gasp.capture.qk import capture_qk

        positions = layout.flat_positions.to(self.device)
        with self.grad_off(), ExitStack() as stack:
            if pck:
                stack.enter_context(capture_qk(self.model, self.adapter.decoder_layers(self.model), layers=self.layers,
                                               positions=positions, rope=self.cfg.rope, on_layer=on_layer))
            fusion = getattr(self.model, "gasp_pointmap", None)
            if fusion is not None:                        # HiSpatial's point map, each sequence's, batch-major
                from gasp.pointmap import PointMapError, batch_pointmap

                try:
                    pm = torch.cat([batch_pointmap(self.cfg.pointmap or "none", s, layout, self.adapter, self.cfg.seed)
                                    for s in seqs])
                except PointMapError as e:
                    raise ProbeError(str(e)) from None
                stack.enter_context(fusion.feeding(pm, inputs))
            feats: dict[int, torch.Tensor] = {}           # --depth: -2 / -1 features, for their own PCK too
            if depth is not None:
                self._feed_depth(stack, depth, seqs, layout, folds or [None] * len(seqs), positions, inputs,
                                 feats if pck else None)
            self.model(**inputs)
        out: list[list[ProbeRecord]] = [[] for _ in seqs]
        for u, ((b, seq, qg, pts, key, explore, attrs), res) in enumerate(zip(units, rows)):
            arrays = self._record(res, seq, fids, qg, layout, explore, pts)
            if feats:                                       # (n_feat, F', N): cosine matching of the features
                arrays["correct_feat"] = torch.stack([metrics.evaluate_layer(
                    x[b][None], x[b][None], torch.from_numpy(seq.tracks[fids]), torch.from_numpy(seq.visible[fids]),
                    layout.token_size, query_frame=qg, delta=self.cfg.delta).correct for _, x in sorted(feats.items())
                ]).cpu().numpy()
                arrays["feat_layers"] = np.int32(sorted(feats))
            angles, why = viewpoint.sequence_angles(seq, fids, qg)
            if angles is not None:
                arrays["view_angle"] = angles                                 # (F',) degrees from the query frame
            out[b].append(ProbeRecord(key, arrays, {**attrs, **({"view_why": why} if why else {})}))
        return out

    def _feed_depth(self, stack, depth: "DepthProbe", seqs: list[TrackSequence], layout, folds, positions,
                    inputs: dict[str, torch.Tensor], keep: dict[int, torch.Tensor] | None = None) -> None:
        """Register the hidden-state hooks that feed ``depth`` during the coming forward; feed the pixels now."""
        from gasp.capture.hidden import capture_hidden
        from probes.depth import pixel_features, token_depth

        fids = layout.frame_ids.cpu().numpy()
        F, (h, w) = layout.num_grids, layout.grid
        targets = []
        for seq in seqs:
            if seq.depth is None:
                raise ProbeError(f"sequence {seq.key} has no depth maps; depth probing (--depth) needs them")
            t = token_depth(seq.depth[fids], (h, w), layout.token_size).reshape(F, h * w)   # (F, P)
            targets.append(t)

        def on_hidden(layer: int, x: torch.Tensor) -> None:
            if keep is not None and layer == -1:
                keep[-1] = x.float().unflatten(1, (F, h, w))                              # (B, F, h, w, D)
            for b in range(x.shape[0]):                                                   # x: (B, F*P, D)
                depth.observe(layer, x[b].float().unflatten(0, (F, h * w)), targets[b], folds[b])

        stack.enter_context(capture_hidden(self.adapter.decoder_layers(self.model), layers=[-1, *self.layers],
                                           positions=positions, on_hidden=on_hidden))
        if PRE_PROJECTOR in depth.names:                   # layer -2: the vision encoder's output, before the projector

            def on_projector(module, args) -> None:
                feats = self.adapter.pre_projector_from_input(args[0], inputs, self.model)   # (B*F*P, k, d)
                feats = feats.flatten(1).float().unflatten(0, (len(seqs), F, h * w))     # (B, F, P, k*d)
                if keep is not None:
                    keep[PRE_PROJECTOR] = feats.unflatten(2, (h, w))                      # (B, F, h, w, k*d)
                for b in range(len(seqs)):
                    depth.observe(PRE_PROJECTOR, feats[b], targets[b], folds[b])

            stack.callback(self.adapter.projector(self.model).register_forward_pre_hook(on_projector).remove)
        for b, seq in enumerate(seqs):
            depth.observe("pixels", pixel_features(seq.frames[fids], (h, w), layout.token_size), targets[b], folds[b])

    def _record(self, rows: list[list[metrics.LayerResult]], seq: TrackSequence, fids: np.ndarray, qg: int,
                layout, explore: list[int], points: np.ndarray | None) -> dict[str, np.ndarray]:
        """The arrays of one record from its per-layer results (``rows[layer][heads mode]``)."""
        (h, w) = layout.grid
        first = rows[0][0]
        pred = torch.stack([r[0].pred_rc for r in rows]).cpu()                      # (L, F', N, 2) row, col
        rec = {"correct": torch.stack([r[0].correct for r in rows]).cpu().numpy(),   # (L, F', N)
               "conf": torch.stack([r[0].conf for r in rows]).float().cpu().numpy(),  # (L, F', N)
               "valid": first.valid.cpu().numpy(), "dt": first.dt.cpu().numpy(),
               "pred": (pred[..., 0] * w + pred[..., 1]).numpy().astype(np.uint16),   # (L, F', N) flat token
               "within_px": torch.stack([r[0].within_px for r in rows]).cpu().numpy(),  # (L, F', N) δ bits
               "mass": torch.stack([r[0].mass for r in rows]).float().cpu().numpy(),  # (L, F', N)
               "frame_ids": fids.astype(np.int32), "query_grid": np.int32(qg),
               "grid": np.int32([h, w]), "token_size": np.float64(layout.token_size)}
        others = np.arange(len(fids)) != qg
        rec["occluded"] = seq.occluded[fids][others] & seq.visible[fids][qg][None]  # (F', N) known occluded
        if points is not None:
            rec["points"] = np.asarray(points, dtype=np.int32)                       # (N,) into the sequence's points
        ref = metrics.reference_pck(seq.tracks[fids], seq.visible[fids], qg, (h, w), layout.token_size,
                                    self.cfg.delta)
        rec["reference"] = np.float64([ref["uniform"], ref["same_position"]])    # model-free PCK@delta
        if explore:
            rec["sim_points"] = np.asarray(explore, dtype=np.int32)                   # (M,)
            rec["sim"] = torch.stack([r[0].sim for r in rows]).cpu().numpy().astype(np.float16)  # (L, F', M, h, w)
        if self.cfg.pck_px:
            rec["correct_px"] = torch.stack([r[0].correct_px for r in rows]).cpu().numpy()   # (L, F', N)
        for d in self.cfg.extra_deltas:
            rec[delta_key(d)] = torch.stack([r[0].correct_at[float(d)] for r in rows]).cpu().numpy()
        if len(rows[0]) > 1:
            rec["correct_head"] = torch.stack([r[1].correct for r in rows]).cpu().numpy()  # (L, H, F', N)
            rec["conf_head"] = torch.stack([r[1].conf_head for r in rows]).float().cpu().numpy()  # (L, H, F', N)
            rec["mass_head"] = torch.stack([r[1].mass_head for r in rows]).float().cpu().numpy()  # (L, H, F', N)
        return rec


@dataclass
class ProbeRecord:
    """One stored result: a sequence, or one query-frame group of a sequence (``attrs["parent"]``)."""

    key: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]


def spread_points(visible_query: np.ndarray, m: int) -> list[int]:
    """``m`` query points spread evenly over those visible in the query frame (for similarity maps)."""
    idx = np.flatnonzero(visible_query)
    if m <= 0 or idx.size == 0:
        return []
    return sorted({int(idx[round(j)]) for j in np.linspace(0, idx.size - 1, min(m, idx.size))})


def batches(indices: list[int], reader: TrackReader, batch_size: int) -> Iterable[list[tuple[int, TrackSequence]]]:
    """Consecutive sequences with the same frame count and size, up to batch_size at a time."""
    batch: list[tuple[int, TrackSequence]] = []
    for i in indices:
        seq = reader[i]
        if batch and (len(batch) == batch_size or batch[0][1].frames.shape != seq.frames.shape):
            yield batch
            batch = []
        batch.append((i, seq))
    if batch:
        yield batch


# ProbeConfig fields that do not change the numbers: a resumed probe may differ in these only
_RESUME_FREE = ("out", "device", "batch_size", "max_sequences", "explore_sequences", "explore_points")
_ADDED_FIELDS = ("extra_deltas", "match", "bidirectional", "refine", "depth", "depth_train", "depth_holdout",
                 "viewpoint_bins", "pck_px", "pck_px_size", "pointmap",
                 "depth_folds")


def _check_resume(cfg: ProbeConfig, out: Path, write: bool = True) -> None:
    """Refuse to resume OUT with a probe whose numbers would differ; record the config otherwise."""
    import json

    defaults = dataclasses.asdict(ProbeConfig())
    # fields added since (extra_deltas, match, bidirectional) are left out at their defaults, so older OUTs resume
    want = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in _RESUME_FREE and not (k in _ADDED_FIELDS and v == defaults[k])}
    want = json.loads(json.dumps(want))                  # tuples -> lists, as read back
    path = out / "probe_config.json"
    if path.is_file():
        have = json.loads(path.read_text())
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            changes = ", ".join(f"{k}: {have.get(k)!r} -> {want.get(k)!r}" for k in diff)
            raise ProbeError(f"{out} holds results of a different probe ({changes}); "
                             f"use a fresh --out or delete {out}")
    elif store.read_finished(out):
        raise ProbeError(f"{out} holds probe results without {path.name} (made by an older version); "
                         f"use a fresh --out or delete {out}")
    if write:
        write_json_atomic(path, want)


def check_pointmap(cfg: ProbeConfig) -> None:
    """An adapter trained with a point map is probed with one, and only such an adapter (one line, before work)."""
    from gasp.pointmap import pairing_error

    if (why := pairing_error(cfg.adapter, cfg.pointmap)) is not None:
        raise ProbeError(why)


def run_probe(cfg: ProbeConfig, progress: Callable[..., Any] | None = None) -> dict[str, Any] | None:
    """Probe every sequence (sharded over accelerate processes); return results on process 0."""
    from gasp.models.loading import AdapterMismatchError, ModelNotFoundError, UnknownModelError, check_model

    try:                                           # a wrong --model fails here, before anything is made
        check_model(cfg.model, adapter=cfg.adapter, trust_remote_code=cfg.trust_remote_code)
    except (ModelNotFoundError, UnknownModelError, AdapterMismatchError) as e:
        raise ProbeError(str(e)) from None
    check_pointmap(cfg)
    state = process_state(cfg.device)
    out = Path(cfg.out)
    if cfg.tracks is None:
        with state.main_process_first():           # process 0 renders (once), the others then read the cache
            tracks_path = synthetic_eval_tracks(cfg, progress if state.is_main_process else None)
    else:
        tracks_path = Path(cfg.tracks)
    reader = TrackReader(tracks_path)
    n = len(reader) if cfg.max_sequences is None else min(cfg.max_sequences, len(reader))
    if n == 0:
        raise ProbeError(f"{tracks_path} holds no sequences")
    keys = reader.sequence_keys[:n]
    if cfg.pointmap not in (None, "none"):
        lacking = sorted({reader.sequence_scene(i) for i in range(n)
                          if not reader.scene_has(reader.sequence_scene(i))["depth"]})
        if lacking:
            raise ProbeError(f"--pointmap {cfg.pointmap} needs depth maps, and {len(lacking)} scene(s) of {tracks_path} "
                             f"have none (e.g. {lacking[0]!r}); use tracks with depth, or --pointmap none")
    split = None                                    # checked before OUT is made
    if cfg.depth:
        if state.num_processes > 1:
            raise ProbeError("--depth fits one probe over all sequences and runs in one process; launch it without "
                             f"accelerate's {state.num_processes} processes, or drop --depth")
        from probes import depth_split

        split = depth_split.plan(cfg, reader, n, tracks_path)
    _check_resume(cfg, out, write=False)            # a different probe's OUT is refused before the model loads
    probe = Probe.load(cfg, device=cfg.device or state.device)   # an adapter that does not fit fails here
    out.mkdir(parents=True, exist_ok=True)          # only now is anything written
    _check_resume(cfg, out, write=state.is_main_process)
    state.wait_for_everyone()                       # every process has checked OUT before any writes a part
    done = store.read_finished(out)
    finished = {str(r["attrs"].get("parent", k)) for k, r in done.items()}     # sequences, not group records
    todo = [i for i in range(n) if keys[i] not in finished and i % state.num_processes == state.process_index]
    if len(done):
        log.info("resuming: %d of %d sequences already finished in %s", sum(k in finished for k in keys), n, out)

    def store_batch(batch, recs) -> None:
        for (i, seq), records in zip(batch, recs):
            parts = {}
            for r in records:
                skipped = not r.arrays["valid"].any()
                parts[r.key] = (r.arrays, {**r.attrs, "skipped": skipped})
            if all(a["skipped"] for _, a in parts.values()):
                log.warning("sequence %s has no point visible in the query frame and another frame; skipped", seq.key)
            store.append_records(out, keys[i], parts)

    if split is None:
        bar = progress(total=len(todo), desc=f"probe [{state.process_index}]", unit="seq") if progress else None
        for batch in batches(todo, reader, cfg.batch_size):
            maps = [i < cfg.explore_sequences for i, _ in batch]
            store_batch(batch, probe.evaluate([s for _, s in batch], maps=maps))
            if bar:
                bar.update(len(batch))
        depth_block = None
    else:
        depth_block = _probe_with_depth(cfg, probe, reader, set(todo), split, store_batch, progress)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    store.merge_parts(out)
    wanted = set(keys)
    done = {k: v for k, v in store.read_finished(out).items() if str(v["attrs"].get("parent", k)) in wanted}
    skipped = [k for k, r in done.items() if r["attrs"].get("skipped", False)]
    res = summarize(cfg, probe.layers, done, skipped, probe.layer_kinds)
    res["tracks"] = str(tracks_path)
    if depth_block is not None:
        res["depth"] = depth_block
    write_json_atomic(out / "results.json", res)
    return res


def _probe_with_depth(cfg: ProbeConfig, probe: Probe, reader: TrackReader, todo: set[int], split, store_batch,
                      progress) -> dict[str, Any]:
    """Fit the depth probe on the probe-train sequences, then score it on the held-out ones, in the forwards
    that also probe PCK. Every probed sequence not yet finished gets its PCK record; finished ones (a resume)
    and probe-train sequences of ``--depth-train`` run for the depth probe alone."""
    from probes.depth import DepthProbe

    first = [PRE_PROJECTOR, -1] if probe.adapter.projector(probe.model) is not None else [-1]
    dp = DepthProbe([*first, *probe.layers, "pixels"], cfg.depth_folds)
    same = split.train_reader is reader
    train = list(split.train)                      # every probed sequence is probe-train or held out
    total = len(train) + len(split.held_out)
    bar = progress(total=total, desc="probe + depth", unit="seq") if progress else None

    def run(rd: TrackReader, items: list[tuple[int, int | None]], with_pck) -> None:
        fold = dict(items)
        for batch in batches([i for i, _ in items], rd, cfg.batch_size):
            for part in _runs(batch, with_pck):
                pck = with_pck(part[0][0])
                recs = probe.evaluate([s for _, s in part], maps=[pck and i < cfg.explore_sequences for i, _ in part],
                                      depth=dp, folds=[fold[i] for i, _ in part], pck=pck)
                if pck:
                    store_batch(part, recs)
            if bar:
                bar.update(len(batch))

    run(split.train_reader, train, lambda i: same and i in todo)
    log.info("depth probe: fitting ridge on %d tokens of %d probe-train images (%d-fold CV by scene)",
             dp.train_tokens, dp.train_images, cfg.depth_folds)
    dp.fit()
    run(reader, [(i, None) for i in split.held_out], lambda i: i in todo)
    return {**dp.summary([*first, *probe.layers]), "split": split.info}


def _runs(batch: list[tuple[int, TrackSequence]], key) -> list[list[tuple[int, TrackSequence]]]:
    """Consecutive parts of ``batch`` with the same ``key(index)``."""
    parts: list[list[tuple[int, TrackSequence]]] = []
    for item in batch:
        if parts and key(parts[-1][0][0]) == key(item[0]):
            parts[-1].append(item)
        else:
            parts.append([item])
    return parts
