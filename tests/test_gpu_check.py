"""scripts/gpu_check.py: the --tiny run end to end on CPU, the 7B sizes, and the no-GPU exit (issue 11 sec. 3)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bench.gpu import shapes
from bench.gpu.check import SECTIONS
from bench.gpu.qk_check import tolerance
from tests.conftest import ROOT

FRAMES = (2, 3)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def numbers(obj, path=""):
    """Every (path, number) inside a JSON value."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "tiny.json"
    # one timed call per measurement and the smallest probe frame counts: every section still runs end to end
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--out", str(out),
                        "--reps", "1", "--frames", *map(str, FRAMES)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    return r, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.slow
def test_tiny_run_writes_every_section(tiny_run):
    r, res = tiny_run
    assert r.returncode == 0, r.stderr[-3000:]
    assert res["complete"] and res["errors"] == {} and res["non_finite"] == [] and all(s in res for s in SECTIONS)
    assert res["device"]["type"] == "cpu" and "CPU peak RSS" in res["memory_kind"]
    assert res["dtype"] == "bfloat16" and res["git_sha"] and res["torch"] and res["transformers"]
    assert res["attn_implementations"]["sdpa"] == "run" and "flash_attention_2" in res["attn_implementations"]
    assert res["config_sizes"]["text"]["num_hidden_layers"] == 4 and res["train"]["lora_r"] == 16
    for path, x in numbers({k: res[k] for k in SECTIONS}):
        assert math.isfinite(x), path
    rows = res["probe"]["sdpa"]
    assert sorted(rows, key=int) == [str(f) for f in FRAMES] and res["reps"] == 1
    for f, row in rows.items():
        assert row["frames"] == int(f) and row["token_grid"] == [16, 16] and row["visual_tokens"] == 256 * int(f)
        for key in ("plain_forward_s", "probe_s", "ratio", "peak_memory_plain_mb", "peak_memory_probe_mb"):
            assert row[key] > 0, (f, key)
    for kind in ("lm", "geo", "geo_max_frames"):
        step = res["train"][kind]
        assert step["s"] > 0 and step["peak_memory_mb"] > 0 and step["loss"] > 0, kind
    assert res["train"]["activation_checkpointing"] and res["train"]["trainable_params"]["heads"] > 0


@pytest.mark.slow
def test_tiny_qk_matches_eager_within_the_stated_tolerance(tiny_run):
    qk = tiny_run[1]["qk_eager"]
    assert qk["pass"] and qk["dtype"] == "bfloat16" and qk["layers"] == [0, 1]
    assert qk["criterion"] and qk["why"] and qk["unit_roundoff"] == 2 ** -8 and qk["atol"] > 0
    for row in qk["per_layer"]:
        assert 0 < row["max_abs_err"] and row["worst_ratio"] <= 1
        assert row["rtol"] == pytest.approx(tolerance(torch.bfloat16, row["max_abs_score"]))
    # the check has power: a wrong pairing of Q/K and eager maps fails the same criterion
    assert qk["contrast"]["discriminates"] and qk["contrast"]["worst_ratio"] > 1


def test_7b_sizes_give_the_checkpoint_on_the_meta_device():
    from transformers import AutoModelForImageTextToText

    cfg, _ = shapes.build_config(shapes.QWEN25_VL_7B)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == shapes.QWEN25_VL_7B_PARAMS   # the card's 8.29B
    attn = model.model.language_model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.head_dim) == (3584, 512, 128)
    assert model.model.language_model.layers[0].mlp.gate_proj.out_features == 18944
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight
    assert len(model.model.visual.blocks) == 32 and model.model.visual.merger.mlp[-1].out_features == 3584
    sizes = shapes.config_sizes(cfg)
    assert sizes["text"]["rope_parameters"]["mrope_section"] == [16, 24, 24] and sizes["vision"]["hidden_size"] == 1280


@pytest.mark.slow
def test_without_a_gpu_it_exits_2_with_a_clear_message(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                       capture_output=True, text=True, env={**ENV, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "--tiny" in r.stderr
    assert not (tmp_path / "x.json").exists()
