"""Captured Q/K reproduce eager attention in low precision, with a stated error bound.

Shape vocabulary: B batch (1), H query heads, Hkv KV heads, L sequence length, D head dim.

One forward with `gasp.capture.qk.capture_qk` (sdpa, every position kept) gives each layer's post-RoPE
q (B, H, L, D) and k (B, Hkv, L, D). A second forward with the LLM switched to eager attention
and ``output_attentions=True`` gives the model's own weights A_eager (B, H, L, L). From the
captured tensors alone, in float64: A_qk = softmax(q . repeat_kv(k)^T * scale + mask), with the
model's own mask (`adapter.attention_mask_2d`: causal, or Gemma's bidirectional image / prefix
blocks and sliding windows) and, where the LLM has it, Gemma 2's softcap cap * tanh(s / cap)
before the mask (its derivative is at most 1, so the bound below still holds).

Tolerance, elementwise: |A_qk - A_eager| <= atol + rtol * A_qk, with u the unit roundoff of the
model dtype (bf16: u = 2^-8) and s the scaled scores q.k^T * scale of the layer:
    rtol = u * (1 + 8 * max|s|),    atol = 1e-6.
Why: the eager kernel rounds the scores twice to the model dtype (matmul output, then the
scaling), so each score is off by up to 2u|s|; a softmax turns score errors delta into relative
probability errors of at most 2 max|delta|, i.e. 4u max|s|. Layers after the first also see
inputs that differ by rounding (the sdpa and eager kernels of the layers before round
differently and the residual stream carries it on), which we bound by doubling that: 8u max|s|.
The final cast of the probabilities to the model dtype adds u. atol only covers denormals: it
is far below 1/L, so small probabilities are compared relatively, not waved through.

Power: with random weights attention is close to uniform, so an absolute tolerance would pass
almost anything. As a contrast the same criterion is applied to a wrong pairing (each layer's
captured Q/K against another layer's eager map); `contrast.discriminates` says it fails there.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from gasp.adapters import get_adapter
from gasp.capture.qk import capture_qk

logger = logging.getLogger(__name__)

ATOL = 1e-6
PROPAGATION = 8.0   # rtol = u * (1 + PROPAGATION * max|s|); see the module docstring


def attention_from_qk(q: torch.Tensor, k: torch.Tensor, scale: float, allowed: torch.Tensor | None = None,
                      softcap: float | None = None) -> tuple[torch.Tensor, float]:
    """(B, H, L, D) q and (B, Hkv, L, D) k -> (masked softmax (B, H, L, L) float64, max |score| unmasked).

    allowed: (L, L) bool, True where query i may attend key j (default causal).
    """
    from transformers.integrations.sdpa_attention import repeat_kv

    q = q.double()
    k = repeat_kv(k.double(), q.shape[1] // k.shape[1])                      # (B, H, L, D)
    s = q @ k.transpose(-1, -2) * scale                                     # (B, H, L, L)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    n = s.shape[-1]
    if allowed is None:
        future = torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1)
    else:
        future = ~allowed.to(s.device)
    max_s = float(s.masked_fill(future, 0).abs().max())
    return s.masked_fill_(future, float("-inf")).softmax(-1), max_s


def tolerance(dtype: torch.dtype, max_score: float) -> float:
    """rtol of the module docstring for scores of magnitude up to `max_score`."""
    u = torch.finfo(dtype).eps / 2
    return u * (1 + PROPAGATION * max_score)


def compare(ref: torch.Tensor, eager: torch.Tensor, rtol: float) -> dict[str, float]:
    """Max abs / rel error of `eager` against `ref` (B, H, L, L) and the worst |d| / (atol + rtol * ref)."""
    ref, eager = ref.double(), eager.double()
    d = (ref - eager).abs()
    big = ref > ATOL
    return {"max_abs_err": float(d.max()),
            "max_rel_err": float((d[big] / ref[big]).max()) if big.any() else 0.0,
            "worst_ratio": float((d / (ATOL + rtol * ref)).max())}


def qk_vs_eager(model, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Run the check on every decoder layer of `model` (keep it small: eager maps are L x L per head)."""
    adapter = get_adapter(model)
    layers = adapter.decoder_layers(model)
    text_cfg = adapter.text_config(model)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode(), capture_qk(model, layers) as rec:
        model(**inputs)
    original = text_cfg._attn_implementation
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.inference_mode():
            eager = model(**inputs, output_attentions=True).attentions             # per layer (B, H, L, L)
    finally:
        model.set_attn_implementation({"text_config": original})
    if eager is None or len(eager) != len(layers):
        raise RuntimeError(f"eager forward returned {0 if eager is None else len(eager)} attention maps "
                           f"for {len(layers)} layers")
    refs, rows = {}, []
    for i in rec.layers:
        attn = layers[i].self_attn
        allowed = adapter.attention_mask_2d(inputs, getattr(attn, "layer_type", None) or "full_attention")
        ref, max_s = attention_from_qk(rec.q[i], rec.k[i], attn.scaling, allowed,
                                       getattr(attn, "attn_logit_softcapping", None))
        rtol = tolerance(dtype, max_s)
        row = {"layer": i, "max_abs_score": max_s, "rtol": rtol, **compare(ref, eager[i], rtol)}
        rows.append(row)
        refs[i] = ref
        logger.info("Q/K vs eager, layer %d: max abs err %.3g, max rel err %.3g (rtol %.3g), worst ratio %.3g",
                    i, row["max_abs_err"], row["max_rel_err"], rtol, row["worst_ratio"])
    contrast = []
    if len(rec.layers) > 1:                                # a wrong pairing must fail the same criterion
        for j, i in enumerate(rec.layers):
            other = rec.layers[(j + 1) % len(rec.layers)]
            contrast.append(compare(refs[other], eager[i], rows[j]["rtol"])["worst_ratio"])
    return {
        "layers": rec.layers, "seq_len": int(inputs["input_ids"].shape[1]), "dtype": str(dtype).removeprefix("torch."),
        "criterion": "|A_qk - A_eager| <= atol + rtol * A_qk elementwise, rtol = u * (1 + 8 * max|s|)",
        "why": ("u = unit roundoff of the dtype (bf16 2^-8); eager rounds each score twice (2u|s|), softmax "
                "doubles score errors into relative probability errors (4u max|s|), doubled again for rounding "
                "differences reaching later layers through the residual stream (8u max|s|), plus u for the "
                "final cast of the probabilities; atol only covers denormals (far below 1/L)"),
        "unit_roundoff": torch.finfo(dtype).eps / 2, "atol": ATOL, "per_layer": rows,
        "max_abs_err": max(r["max_abs_err"] for r in rows), "max_rel_err": max(r["max_rel_err"] for r in rows),
        "worst_ratio": max(r["worst_ratio"] for r in rows),
        "pass": all(r["worst_ratio"] <= 1.0 for r in rows),
        "contrast": {"what": "each layer's eager map against the next layer's captured Q/K (a wrong pairing)",
                     "worst_ratio": min(contrast) if contrast else None,
                     "discriminates": bool(contrast) and min(contrast) > 1.0},
    }
