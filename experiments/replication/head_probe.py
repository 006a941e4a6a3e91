"""PCK@2 in the correspondence heads' embedding space (issue 5: did the geometry reach the attention?).

The probe (`probes.runner`) matches the model's own post-RoPE Q against K. Here the same
matching (eq. 10-12: cosine, argmax over frame k's grid, within 2 tokens) runs on the
heads' unit embeddings e = H_c(x) of the same visual tokens (x = q_proj's input,
`gasp.capture.q_inputs`), one "head" of width E per layer, query and key side both e. High PCK
here with low probe PCK means the heads learnt the matching but the attention did not.
Q/K head pairs (`gasp.qk_heads`, arm E) embed the query side from the captured post-RoPE Q
and the key side from K, as they were trained.

Shape vocabulary: L head layers, F grids (frames), h x w tokens, P = h*w, E embedding width.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gasp.capture.q_inputs import capture_q_inputs
from gasp.heads import CorrespondenceHeads
from probes import metrics
from probes.runner import DTS
from tracks.io import TrackReader


@torch.no_grad()
def head_pck(model, processor, adapter, heads: CorrespondenceHeads, tracks_path, *,
             size: tuple[int, int] | None, fps: float = 2.0, prompt: str = "describe the video.",
             delta: float = 2.0) -> dict[str, Any]:
    """Per-layer PCK (mean, std over sequences), pooled Y(dt), per-sequence PCK and keys."""
    heads = heads.eval()
    layers_module = adapter.decoder_layers(model)
    return embedding_pck(model, processor, adapter, heads.layers, tracks_path,
                         lambda inputs, layout, dev: _embed(model, layers_module, heads, inputs, layout, dev),
                         size=size, fps=fps, prompt=prompt, delta=delta)


@torch.no_grad()
def feature_pck(model, processor, adapter, tracks_path, *, layers: list[int] | None = None,
                size: tuple[int, int] | None, fps: float = 2.0, prompt: str = "describe the video.",
                delta: float = 2.0) -> dict[str, Any]:
    """The same matching on the raw normed hidden states q_proj reads (no head, no training):
    what the features themselves carry about correspondence, layer by layer."""
    layers_module = adapter.decoder_layers(model)
    layers = list(range(len(layers_module))) if layers is None else layers

    def embed(inputs, layout, dev):
        with capture_q_inputs(model, layers_module, layers=layers, positions=layout.flat_positions.to(dev)) as rec:
            model(**{k: v.to(dev) for k, v in inputs.items()})
        e = torch.stack([torch.nn.functional.normalize(rec.states[i][0].float(), dim=-1) for i in layers])
        return e, e                                                          # (L, F*h*w, d)

    return embedding_pck(model, processor, adapter, layers, tracks_path, embed, size=size, fps=fps, prompt=prompt,
                         delta=delta)


def embedding_pck(model, processor, adapter, layers: list[int], tracks_path, embed, *, size, fps: float,
                  prompt: str, delta: float) -> dict[str, Any]:
    """PCK of matching query-side against key-side embeddings, `embed(inputs, layout, dev)` ->
    ((L, F*h*w, E), (L, F*h*w, E)), over every sequence of a tracks file (eq. 10-12 as the probe)."""
    model.eval()
    per_seq, keys = [], []
    with TrackReader(tracks_path) as reader:
        for i in range(len(reader)):
            seq = reader[i]
            inputs, layout = adapter.prepare_inputs(seq.frames, processor_or_tokenizer=processor, prompt=prompt,
                                                    fps=fps, size=size)
            dev = next(model.parameters()).device
            f, (h, w) = layout.num_grids, layout.grid
            emb_q, emb_k = embed(inputs, layout, dev)
            emb_q, emb_k = emb_q.unflatten(1, (f, h, w)), emb_k.unflatten(1, (f, h, w))  # (L, F, h, w, E)
            fids = layout.frame_ids.cpu().numpy()
            qf = int(np.flatnonzero(fids == seq.query_frame)[0])
            tracks = torch.from_numpy(seq.tracks[fids])
            visible = torch.from_numpy(seq.visible[fids])
            frame_index = torch.from_numpy(seq.frame_index[fids])
            per_seq.append([metrics.evaluate_layer(eq[None], ek[None], tracks, visible, layout.token_size,
                                                   frame_index, query_frame=qf, delta=delta)
                            for eq, ek in zip(emb_q, emb_k)])
            keys.append(seq.key)
    s = metrics.summarize(per_seq, DTS)
    nn = metrics.nan_to_none
    return {"layers": list(layers), "pck_mean": nn(s["pck_mean"]), "pck_std": nn(s["pck_std"]),
            "dt": list(DTS), "dt_norm": nn(s["dt_norm"]), "sequences": keys, "pck_seq": nn(s["pck_seq"])}


def _embed(model, layers_module, heads, inputs, layout, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, F*h*w, E) query-side and key-side embeddings of one sequence's visual tokens."""
    from gasp.capture.qk import capture_qk
    from gasp.qk_heads import QKHeads

    pos = layout.flat_positions.to(dev)
    if isinstance(heads, QKHeads):
        with capture_qk(model, layers_module, layers=heads.layers, positions=pos) as rec:
            model(**{k: v.to(dev) for k, v in inputs.items()})
        return heads.embed_record(rec)
    with capture_q_inputs(model, layers_module, layers=heads.layers, positions=pos) as rec:
        model(**{k: v.to(dev) for k, v in inputs.items()})
    emb = heads({l: x[0].to(heads.heads[str(l)].fc1.weight.device) for l, x in rec.states.items()})
    return emb, emb
