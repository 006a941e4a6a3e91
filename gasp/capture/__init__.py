"""Capture from a running model, one place for every kind: forward hooks on the LLM's decoder layers.

    qk.py        capture_qk: post-RoPE (or pre-RoPE) Q and K of the visual tokens, as the attention kernel
                 compares them (the probe, the losses on Q/K)
    hidden.py    capture_hidden: the residual stream of the visual tokens after each layer (the depth probe)
    q_inputs.py  capture_q_inputs: q_proj's input, with gradients, under activation checkpointing (the heads)

Each hands over only the visual positions, layer by layer, and checks that every requested
layer ran once per forward.
"""
from gasp.capture.hidden import capture_hidden
from gasp.capture.q_inputs import QInputRecord, capture_q_inputs
from gasp.capture.qk import QKRecord, attention_layers, capture_qk

__all__ = ["QInputRecord", "QKRecord", "attention_layers", "capture_hidden", "capture_q_inputs", "capture_qk"]
