"""Export the small replication's checkpoints that ship with the repository (issues 5 and 9).

    export_checkpoints("runs/v3", "checkpoints/gasp-v3", arms=("A", "C", "D", "E"), seed=0)

DEST/base is the warm-up model (what every arm starts from), DEST/arm_<ARM> are peft LoRA
adapters on it (the heads are dropped, as at inference). Tensors are stored as
float16 safetensors to fit the size budget; `load_model` upcasts them to fp32. DEST/manifest.json
records where they came from (command, git SHA, plan, seed) and the numbers the run reported
for them on the test split, which `scripts/demo.py` re-probes and compares against.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from experiments.replication.plan import ARMS, Plan
from gasp.runinfo import data_library_versions
from probes.results import ProbeResults
from tracks.content import compare, digest, summarize

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TEST_SPLIT_CONTENT = "test_split_content.json"     # tracks.content.summarize of the test split
BASE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "preprocessor_config.json")


def shipped_runs(ckpt: Path, out: Path, progress=None) -> tuple[str, Path, tuple[int, int], dict[str, tuple[str, dict]], Plan]:
    """(base model, test tracks, input size, {label: (adapter, reported)}, plan) of exported checkpoints.

    The test split is re-rendered into OUT/data exactly as the run made it; :func:`check_test_split`
    says whether it is the one the numbers were reported on.
    ``progress`` wraps the rendering's scene loop (e.g. tqdm).
    """
    from experiments.replication.small import make_split

    path = ckpt / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point --checkpoints at an export of scripts/export_small.py")
    man = json.loads(path.read_text())
    plan = Plan(**man["plan"])
    tracks = make_split(plan, "test", out / "data" / "test.h5", progress=progress)
    runs = {m["label"]: (str(ckpt / m["adapter"]), m["reported"]) for m in man["models"].values()}
    return str(ckpt / "base"), tracks, (plan.image_size, plan.image_size), runs, plan


def model_free_references(tracks: Path, size: int, version: int) -> dict[str, float]:
    """PCK@2 of the no-model references on the test split, as the probe averages (mean over sequences)."""
    from experiments.replication.baselines import benchmark_references, references_at_input_size

    if version >= 2:
        ref = benchmark_references(tracks)
        return {k: ref[k]["2"]["mean"] for k in ("uniform", "same_position", "appearance")}
    return {k: v for k, v in references_at_input_size(tracks, size).items() if k != "num_sequences"}


def check_test_split(tracks: Path, ckpt: Path) -> str:
    """One line saying whether the re-rendered test split is the one the numbers were reported on.

    Bytes equal to the recorded digest: identical. Otherwise the content summary
    (``tracks.content``) is held to its stated precision against the one recorded with the
    checkpoints: a re-render on another CPU passes (its OpenBLAS kernel moves float32 depth
    by an ulp and a few edge pixels by a level), a changed scene does not and is warned about.
    """
    man = json.loads((ckpt / MANIFEST).read_text())
    if digest(tracks) == man["test_split"]["digest"]:
        return "test split: byte-identical to the one the numbers were reported on"
    recorded = ckpt / man["test_split"]["content"]
    diffs = compare(summarize(tracks), json.loads(recorded.read_text()))
    if not diffs:
        return ("test split: same content as the one the numbers were reported on, to the precision of "
                "tracks/content.py (its bytes differ, as they do between CPUs: OpenBLAS picks its kernel by CPU)")
    log.warning("the re-rendered test split %s differs from the one the numbers were reported on (%d difference(s), "
                "e.g. %s), so expect the numbers to differ too (this run: %s)", tracks, len(diffs), diffs[0],
                ", ".join(f"{k} {v}" for k, v in data_library_versions().items()))
    return f"test split: content DIFFERS from the one the numbers were reported on ({len(diffs)} difference(s))"


def _to_fp16(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(src).items()}
    save_file(state, dst, metadata={"format": "pt"})
    dst.chmod(0o644)


def _portable(path: Path) -> str:
    """`path` relative to the repository root when inside it (the shipped files name no local folder)."""
    from gasp.runinfo import ROOT

    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def export_checkpoints(run: str | Path, dest: str | Path, arms: tuple[str, ...] = ("A", "C"),
                       seed: int = 0, note: str | None = None) -> dict[str, Any]:
    """Write DEST (replacing it only once complete) from a finished `reproduce_small.py` run."""
    run, dest = Path(run), Path(dest)
    results_path = run / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: export needs a finished scripts/reproduce_small.py run")
    res = json.loads(results_path.read_text())
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "base").mkdir(parents=True)
    for name in BASE_FILES:
        if (run / "base" / name).is_file():
            shutil.copy2(run / "base" / name, tmp / "base" / name)
    _to_fp16(run / "base" / "model.safetensors", tmp / "base" / "model.safetensors")
    models: dict[str, Any] = {}
    for arm in arms:
        if arm not in res["runs"]:
            raise KeyError(f"arm {arm!r} is not in {results_path} (arms: {', '.join(res['runs'])})")
        entry = next((r for r in res["runs"][arm] if r["seed"] == seed), None)
        if entry is None:
            raise KeyError(f"arm {arm} has no seed {seed} in {results_path}")
        src, out = Path(entry["checkpoint"]) / "adapter", tmp / f"arm_{arm}"
        out.mkdir()
        cfg = json.loads((src / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = _portable(dest / "base")
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        _to_fp16(src / "adapter_model.safetensors", out / "adapter_model.safetensors")
        models[arm] = {"label": res["labels"][arm], "adapter": out.name, "seed": seed,
                       "reported": ProbeResults(entry["probe"]).peak(), "probe_command": entry["probe_command"]}
    manifest = {
        "what": "small Qwen2.5-VL-architecture model after the shared LM warm-up (base) and LoRA adapters of "
                "the replication's arms; tensors stored as float16, probed in fp32",
        "results": (f"docs/results/v{res['plan']['version']}/results.json" if res["plan"].get("version", 1) >= 2
                    else "docs/results/small"),
        "source": {k: res.get(k) for k in ("command", "preset", "git_sha", "gasp_version", "torch", "transformers",
                                            "numpy", "h5py", "pillow")},
        "plan": res["plan"],
        "test_split": {"seed": Plan(**res["plan"]).split_seeds["test"], "digest": digest(res["data"]["test"]),
                       "content": TEST_SPLIT_CONTENT},
        "models": models, "arm_labels": {a: ARMS[a]["label"] for a in arms},
    }
    if note:
        manifest["note"] = note
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (tmp / TEST_SPLIT_CONTENT).write_text(json.dumps(summarize(res["data"]["test"])) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return manifest
