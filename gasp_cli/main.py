"""The `gasp` command: one entry point, each subcommand a thin wrapper around a module's ``main(argv)``.

    gasp probe --model qwen2.5-vl-7b --tracks test.h5 --out runs/qwen7b
    gasp train --config configs/qwen2.5-vl-7b.yaml optim.max_steps=50
    gasp convert tapvid --pickle tapvid_davis.pkl --out davis.h5 --max-frames 24
    gasp plot figure3 runs/a runs/b --labels A B --out fig3.png
    gasp demo --out runs/demo

The README's script paths (``python probes/pck.py``, ``accelerate launch scripts/train_gasp.py``)
run the same functions. ``accelerate launch -m gasp_cli.main train ...`` launches a subcommand
under accelerate.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module with main(argv), one line of help); a group maps names to the same pairs
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "probe": ("gasp_cli.probe", "layer-wise correspondence probe of a VLM's attention (PCK@2, rho, dt; Figure 3)"),
    "train": ("gasp_cli.train", "train GASP: LoRA + correspondence heads (also under `accelerate launch`)"),
    "convert": {
        "tapvid": ("gasp_cli.convert_tapvid", "TAP-Vid pickles (DAVIS, RGB-Stacking, Kinetics) -> tracks file"),
        "colmap": ("gasp_cli.convert_colmap", "a COLMAP reconstruction (sparse tracks or depth) -> tracks file"),
        "vggt": ("gasp_cli.convert_vggt", "VGGT's predictions.npz -> tracks file"),
        "dl3dv": ("gasp_cli.convert_dl3dv", "a DL3DV scene (transforms.json + your depth) -> tracks file"),
        "rgbd": ("gasp_cli.build_tracks", "a posed RGB-D folder -> tracks file"),
        "synthetic": ("gasp_cli.make_synthetic", "render procedural scenes with exact depth and poses"),
    },
    "plot": {
        "figure3": ("plots.figure3", "Figure 3 from probe folders, overlaid"),
        "matches": ("plots.matches", "the match explorer: PNGs and an offline HTML page"),
        "geometry": ("plots.pck_depth", "PCK and depth delta<1.25 per layer (probes run with --depth)"),
        "compare": ("gasp_cli.compare", "probe one base model under several adapters, one overlaid figure"),
    },
    "rl": ("gasp_cli.rl", "VST's RL stage: rollouts, rule rewards, DAPO updates from an SFT adapter"),
    "export": ("gasp_cli.export", "a trained checkpoint -> a merged HF model folder (or --adapter-only) + card"),
    "demo": ("gasp_cli.demo", "probe the shipped v3 checkpoints and check them against RESULTS.md"),
    "gpu-check": ("gasp_cli.gpu_check", "probe and training-step check at Qwen2.5-VL-7B's shape (one CUDA GPU)"),
}


def _usage(group: dict, prefix: str) -> str:
    width = max(len(k) for k in group) + 2
    lines = [f"usage: {prefix} <command> [options]   ({prefix} <command> --help for its options)", "", "commands:"]
    for name, entry in group.items():
        if isinstance(entry, dict):
            lines.append(f"  {name:{width}s}{' | '.join(entry)}")
            lines += [f"  {'':{width}s}  {sub:10s} {help_}" for sub, (_, help_) in entry.items()]
        else:
            lines.append(f"  {name:{width}s}{entry[1]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    group: dict = COMMANDS
    prog = "gasp"
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(group, prog))
            return 0 if argv else 2
        name = argv.pop(0)
        entry = group.get(name)
        if entry is None:
            print(f"{prog}: error: unknown command {name!r}; choose from {', '.join(group)}", file=sys.stderr)
            return 2
        prog = f"{prog} {name}"
        if isinstance(entry, dict):
            group = entry
            continue
        module = importlib.import_module(entry[0])
        sys.argv[0] = prog                          # argparse names the subcommand in usage and errors
        return int(module.main(argv) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
