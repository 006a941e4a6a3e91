"""Measurements at a real model's shape with random weights (issue 11): the GPU check.

    shapes.py     Qwen2.5-VL-7B's sizes (and where each comes from), models built on the device
    measure.py    median time and peak memory, CUDA or CPU, labelled with what was measured
    qk_check.py   captured Q/K against eager attention in bf16, with the tolerance and its reason
    sections.py   probe vs plain forward; LoRA LM step vs GASP geometric step
    gpu_check.py  the check: spec, sections in order, the JSON

Floor 4 in the layout (tests/test_layout.py): it drives the probe (`probes`) and the trainer's
module (`gasp.train`) and is imported by nothing but `scripts/gpu_check.py`.
"""
