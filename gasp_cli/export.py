"""Export a trained checkpoint as a Hugging Face model folder that evaluators load, with a model card.

    gasp export runs/gasp/checkpoint-100 --out exported/gasp-qwen7b
    gasp export checkpoints/gasp-v3/arm_C --base checkpoints/gasp-v3/base --out exported/arm_C
    gasp export runs/gasp/checkpoint-100 --out exported/adapter --adapter-only

The LoRA is merged into the base and the correspondence heads are dropped (training-only, as in the
paper); the folder holds safetensors, the config, the base's tokenizer/processor files and README.md,
a model card with the training config, the data, gasp's version and git SHA, and the probe's numbers
with their references where the checkpoint's run (or --results) has them. ``--adapter-only`` writes the
peft adapter and the card instead. Everything is checked before anything is written; the folder
appears whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gasp.config import RUN_BLOCK
from gasp.runinfo import write_dir_atomic
from gasp.models.export import ExportError, adapter_base, copy_base_files, find_adapter
from gasp.models.loading import VISION_FILE
from probes.results import ProbeResults, references_text

log = logging.getLogger("gasp.export")

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
TAGS = ["gasp", "vision-language", "spatial-reasoning", "correspondence", "lora"]


@dataclass
class Source:
    """What the checkpoint's folder says about how it was made."""

    adapter: Path                               # the peft adapter folder
    step: int | None = None                     # N of OUT/checkpoint-N
    run_dir: Path | None = None                 # OUT, when it holds the run's config.yaml
    config: dict | None = None                  # OUT/config.yaml (with its _run block)
    inputs: dict | None = None                  # adapter/gasp_input.json
    results: ProbeResults | None = None         # probe numbers of this checkpoint
    results_from: str = ""                      # where they came from
    eval_line: dict | None = None               # else the trainer's eval.jsonl line at this step (PCK only)
    vision: bool = False                        # the adapter folder carries a vision tower trained in full
    made: dict = field(default_factory=dict)   # gasp version and git SHA the training ran with
    trained: str = ""                           # its objectives, in words
    notes: list[str] = field(default_factory=list)


def read_source(checkpoint: Path, results: Path | None) -> Source:
    adapter = find_adapter(checkpoint)
    src = Source(adapter=adapter)
    m = re.fullmatch(r"checkpoint-(\d+)", checkpoint.resolve().name)
    if m and (checkpoint.resolve().parent / "config.yaml").is_file():
        src.step, src.run_dir = int(m.group(1)), checkpoint.resolve().parent
        src.config = yaml.safe_load((src.run_dir / "config.yaml").read_text())
    if (manifest := adapter.parent / "manifest.json").is_file():     # an export of gasp's own (checkpoints/)
        man = json.loads(manifest.read_text())
        src.made = man.get("source") or {}
        arm = next((v for v in (man.get("models") or {}).values() if v.get("adapter") == adapter.name), None)
        src.trained = f"{arm['label']} (seed {arm.get('seed')})" if arm else ""
        src.notes.append(f"how it was trained: {manifest} (the replication's plan and source)")
    if (adapter / "gasp_input.json").is_file():
        src.inputs = json.loads((adapter / "gasp_input.json").read_text())
    if src.config:
        src.trained = objectives(src.config)
    src.vision = (adapter / VISION_FILE).is_file()
    if src.config and not src.config.get("model", {}).get("freeze_vision", True) and not src.vision:
        raise ExportError(f"{checkpoint}: its run trained the vision tower (model.freeze_vision: false), but the "
                          f"checkpoint holds only the LoRA adapter (no {VISION_FILE}: written before gasp saved it), "
                          "so no export of it would be the trained model")
    if results is not None:
        src.results, src.results_from = _given_results(results, src), str(results)
    elif src.run_dir is not None:
        _run_results(src)
    return src


def _given_results(path: Path, src: Source) -> ProbeResults:
    """A results.json the user names: refused unless it is a probe of this adapter or this run's step."""
    res = ProbeResults.load(path)
    probed = (res.get("config") or {}).get("adapter")
    if probed is not None:
        if not (Path(probed).is_dir() and os.path.samefile(probed, src.adapter)):
            raise ExportError(f"--results {path} is a probe of the adapter {probed}, not of {src.adapter}; "
                              f"probe this one (gasp probe --adapter {src.adapter} ...) or leave --results out")
    elif src.step is None or res.get("step") != src.step:
        raise ExportError(f"--results {path} is not a probe of {src.adapter} (its config names no adapter and "
                          f"its step {res.get('step')} is not this checkpoint's); pass the results.json of "
                          f"gasp probe --adapter {src.adapter}")
    return res


def _run_results(src: Source) -> None:
    """The trainer's own evaluation at this checkpoint's step: OUT/results.json, else its eval.jsonl line."""
    final = src.run_dir / "results.json"
    if final.is_file() and (res := ProbeResults.load(final)).get("step") == src.step:
        src.results, src.results_from = res, str(final)
        return
    evals = src.run_dir / "eval.jsonl"
    for ln in evals.read_text().splitlines() if evals.is_file() else []:
        rec = json.loads(ln)
        if rec.get("step") == src.step and rec.get("pck_peak") is not None:
            src.eval_line, src.results_from = rec, str(evals)


def objectives(cfg: dict) -> str:
    """The run's losses and trained parts in words, from its config.yaml."""
    loss, lora, model = cfg.get("loss", {}), cfg.get("lora", {}), cfg.get("model", {})
    listed = cfg.get("objectives") or []
    if listed:                                   # the registry's objectives (gasp/objectives), each with its weight
        from gasp import objectives as registry

        geo = []
        for o in listed:
            name = o.get("name")
            paper = registry.get(name).paper if name in registry.names() else "not registered in this gasp"
            head = "" if o.get("head", "default") == "default" else f", {o['head']} head"
            geo.append(f"{name} (weight {o.get('weight', 1.0)}{head}; {paper})")
        parts = (["LM loss"] if loss.get("lm") else []) + [" and ".join(geo)]
    else:
        where = {"heads": "on correspondence heads (GASP eq. 5-8)", "qk": "on post-RoPE Q/K, no heads",
                 "qk_heads": "on head pairs over post-RoPE Q and K"}.get(loss.get("on", "heads"), loss.get("on"))
        geo = [f"{name} (lambda {loss.get('lambda_' + key)})" for key, name in
               (("corr", "InfoNCE correspondence"), ("depth", "soft-argmax depth")) if loss.get(key)]
        parts = (["LM loss"] if loss.get("lm") else []) + ([" and ".join(geo) + " " + where] if geo else [])
    trained = f"; LoRA r {lora.get('r')}, alpha {lora.get('alpha')}"
    if lora.get("vision_r"):
        trained += f"; vision LoRA r {lora['vision_r']}, alpha {lora.get('vision_alpha')}"
    if model.get("train_projector"):
        trained += "; projector trained"
    return "; ".join(parts) + trained


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gasp export", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("checkpoint", help="a training checkpoint OUT/checkpoint-N, or a LoRA adapter folder")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty, unless --force)")
    p.add_argument("--base", help="the base model (local folder, alias or HF id in the cache; default: the one the "
                   "adapter records)")
    p.add_argument("--adapter-only", action="store_true", help="write the peft adapter and the card, no merge")
    p.add_argument("--results", type=Path, help="a probe's results.json of this checkpoint for the card (default: "
                   "the trainer's evaluation at this step, if the run folder has it)")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                   help="weights of the merged model (default: the base's); the merge itself runs in fp32, which "
                        "holds the model at 4 bytes per parameter")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    out = Path(a.out)
    try:
        src = read_source(Path(a.checkpoint), a.results)
        base = a.base or adapter_base(src.adapter)
        base_folder = _check_base(base, src.adapter)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not a.force:
            raise ExportError(f"--out {out} exists and is not empty; pass --force to replace it, or another --out")
        if a.adapter_only and src.vision:
            raise ExportError(f"{src.adapter} carries a vision tower trained in full ({VISION_FILE}), which a peft "
                              "adapter cannot hold; export the merged model (leave out --adapter-only)")
        from gasp.pointmap import CONFIG_FILE as POINTMAP_FILE

        if (src.adapter / POINTMAP_FILE).is_file():
            raise ExportError(f"{src.adapter} carries HiSpatial's point-map branch ({POINTMAP_FILE}), which neither a "
                              "merged HF model nor a peft adapter can hold, and which needs a point map at every "
                              "forward; use the adapter folder with gasp's loaders (load_model(..., adapter=...), "
                              "probes/pck.py --pointmap)")
        if a.adapter_only:
            write = _adapter_writer(src)
        else:
            write = _merged_writer(src, base, base_folder, a.dtype)
    except (ExportError, FileNotFoundError) as e:
        print(f"gasp export: error: {e}", file=sys.stderr)
        return 2
    card = model_card(src, base, adapter_only=a.adapter_only, name=out.name)
    write_dir_atomic(out, lambda tmp: (write(tmp), (tmp / "README.md").write_text(card)))
    print(f"exported {'adapter' if a.adapter_only else 'merged model'} to {out}")
    print(f"card:     {out / 'README.md'}")
    return 0


def _check_base(base: str, adapter: Path) -> str | None:
    """The base's folder (None for a tiny-* model, which is built), or a refusal naming --base."""
    from gasp.models.loading import AdapterMismatchError, ModelNotFoundError, UnknownModelError, check_model

    try:
        return check_model(base, adapter=adapter)
    except ModelNotFoundError as e:
        looked = [ln.strip()[2:] for ln in str(e).splitlines() if ln.startswith("  - ")]
        raise ExportError(f"the base model {base!r} of {adapter} is not on this machine (looked in "
                          f"{', '.join(looked) or base}); pass --base with its local folder, or set HF_HOME to a "
                          "Hugging Face cache that holds it") from None
    except (UnknownModelError, AdapterMismatchError) as e:
        raise ExportError(f"the base model {base!r} of {adapter}: {e}; pass --base with its local folder") from None


def _merged_writer(src: Source, base: str, base_folder: str | None, dtype: str):
    """Merge now (so a bad adapter is refused before anything is written); return what writes the folder."""
    import torch

    from gasp.models.export import base_files, merged_model
    from gasp.models.loading import PROCESSOR_FILES, load_model

    want = DTYPES.get(dtype) or _saved_dtype(base_folder)
    model, processor, _ = load_model(base, adapter=src.adapter, dtype="fp32")
    model = merged_model(model, getattr(torch, want))
    model.config.dtype = want
    log.info("merged %s into %s (%s); the objectives' heads are training-only and not exported",
             src.adapter, base, want)

    if base_folder is None:                     # a tiny-* base is built; it has a tokenizer, no processor files
        src.notes.append(f"{base} is a random-weight test model built from a config; the folder has its "
                         "tokenizer and no processor files")
    elif not any(p.name in PROCESSOR_FILES for p in base_files(base_folder)):
        src.notes.append(f"the base ({base}) has no processor files, so AutoProcessor will not load this "
                         "folder; AutoTokenizer will, and gasp's loader uses the family's image defaults")

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if base_folder is not None:
            copy_base_files(base_folder, tmp)
        else:
            getattr(processor, "tokenizer", processor).save_pretrained(tmp)
    return write


def _saved_dtype(base_folder: str | None) -> str:
    """The dtype the base's config.json records ("bfloat16" for the released Qwen2.5-VL), float32 if none."""
    cfg = json.loads((Path(base_folder) / "config.json").read_text()) if base_folder else {}
    want = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return want if want in DTYPES.values() else "float32"


def _adapter_writer(src: Source):
    def write(tmp: Path) -> None:
        for p in src.adapter.iterdir():
            if p.is_file():
                shutil.copyfile(p, tmp / p.name)
    return write


def model_card(src: Source, base: str, adapter_only: bool, name: str) -> str:
    """README.md with Hugging Face front matter; every number is read from the checkpoint's results."""
    from gasp.models.loading import model_identity
    from gasp.runinfo import run_info

    hub_id = model_identity(base)
    front = {**({"base_model": hub_id} if hub_id and "/" in hub_id else {}),
             "library_name": "peft" if adapter_only else "transformers", "pipeline_tag": "image-text-to-text",
             "tags": TAGS}
    now = run_info()
    cfg = dict(src.config or {})
    made = cfg.pop(RUN_BLOCK, None) or src.made
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", "",
             f"{'A LoRA adapter' if adapter_only else 'A LoRA adapter merged into its base model'}, trained with "
             "gasp. The objectives' heads (GASP's correspondence heads, PseudoGD's depth and structure heads) were training-only and are not included.",
             "", "| | |", "|---|---|", f"| base model | `{base}` |",
             f"| objectives | {src.trained or '(not recorded)'} |",
             f"| checkpoint | `{src.adapter}`{f' (step {src.step})' if src.step is not None else ''} |",
             f"| trained with | gasp {made.get('gasp_version', '(not recorded)')}, git "
             f"{made.get('git_sha', '(not recorded)')} |",
             f"| exported with | gasp {now['gasp_version']}, git {now['git_sha']}, transformers {now['transformers']} |"]
    if src.vision:
        lines.append(f"| vision tower | trained in full (model.freeze_vision: false); merged from {VISION_FILE} |")
    if src.inputs:
        ins = {k: v for k, v in src.inputs.items() if k != "model"}
        lines.append("| input settings | " + ", ".join(f"{k} `{v}`" if v is not None else f"{k} (the family's default)"
                                                    for k, v in ins.items()) + " |")
    lines += ["", "## Training data", ""]
    if cfg:
        data = cfg.get("data", {})
        lines += [f"- geometry (tracks): `{data.get('tracks') or 'synthetic scenes made by gasp (renderer)'}`",
                  f"- evaluation tracks: `{data.get('tracks_eval') or 'synthetic scenes made by gasp (renderer)'}`",
                  f"- instruction data: `{data.get('instruct') or 'synthetic instructions made by gasp'}`"
                  + ("" if cfg.get("loss", {}).get("lm", True) else " (not used: loss.lm false)")]
    else:
        lines.append("Not recorded: the checkpoint's folder has no run config.yaml beside it.")
    lines += ["", "## What gasp's probe measured", ""]
    if src.results is not None:
        lines += [f"- {src.results.summary_line()}"]
        if (dl := src.results.depth_summary_line()) is not None:
            lines.append(f"- {dl}")
        lines += [f"- from `{src.results_from}`; tracks `{src.results.get('tracks', '?')}`", ""]
    elif (rec := src.eval_line) is not None:
        refs = references_text(rec.get("references"))
        lines += [f"- peak PCK@2 {rec['pck_peak']:.3f} at layer {rec['peak_layer']}" + (f" ({refs})" if refs else ""),
                  f"- from the trainer's evaluation at step {src.step} (`{src.results_from}`)", ""]
    else:
        lines += ["No probe results of this checkpoint were found (run `gasp probe --adapter ...` and pass its "
                  "results.json with `--results`).", ""]
    lines += [f"- {n}" for n in src.notes]
    if cfg:
        lines += ["", "## Training config", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```"]
    lines += ["", "## Evaluate", "", "See gasp's README, \"Evaluate a trained model on spatial benchmarks\".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
