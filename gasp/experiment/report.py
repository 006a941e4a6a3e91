"""Markdown tables for RESULTS.md from a finished small replication's results.json (issue 5).

Every number is read from the JSON, never typed by hand. `targets` checks the issue's five
criteria for a convincing replication; they are reported whether met or not.
"""
from __future__ import annotations

from typing import Any


def _ms(m: float | None, s: float | None = None, nd: int = 2) -> str:
    if m is None:
        return "n/a"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s else "")


def peak_table(res: dict[str, Any]) -> str:
    """One row per model: its peak layer (argmax of the seed-mean PCK) and the numbers there."""
    rows = ["| model | peak layer | PCK@2 | ρ | Y(Δt=24) | same-texture PCK | other PCK | head-space PCK (max over layers) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, s in res["summary"].items():
        p = s["peak"]
        rows.append(f"| {res['labels'][name]} | {p['layer']} | {_ms(p['pck'], p['pck_std'])} | "
                    f"{_ms(p['rho'], p['rho_std'])} | {_ms(p['y_dt24'], p['y_dt24_std'])} | "
                    f"{_ms(p['same_texture_pck'], p['same_texture_pck_std'])} | "
                    f"{_ms(p['other_pck'], p['other_pck_std'])} | {_ms(p.get('head_pck_max'))} |")
    return "\n".join(rows) + "\n"


def layer_table(res: dict[str, Any], key: str, std_key: str | None = None) -> str:
    """Per-layer values of `key` (mean, ± `std_key` over seeds), one row per model that has them."""
    layers = next(iter(res["summary"].values()))["layers"]
    rows = ["| model | " + " | ".join(f"L{i}" for i in layers) + " |", "|---|" + "---|" * len(layers)]
    for name, s in res["summary"].items():
        if key not in s:
            continue
        std = s.get(std_key) if std_key else None
        cells = [_ms(m, std[i] if std and len(res["seeds"]) > 1 else None) for i, m in enumerate(s[key])]
        rows.append(f"| {res['labels'][name]} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def seed_table(res: dict[str, Any]) -> str:
    """Each seed's peak-layer PCK and rho (on its own peak layer) and the validation probe's numbers."""
    from gasp.experiment.ship import peak_numbers

    rows = ["| arm | seed | peak layer | PCK@2 | ρ | validation mean PCK (best layer) | train s | test s |",
            "|---|---|---|---|---|---|---|---|"]
    for name, runs in res["runs"].items():
        for r in runs if isinstance(runs, list) else []:
            p = peak_numbers(r["probe"])
            val = r.get("val") or {}
            vp = [v for v in (val.get("pck_mean") or []) if v is not None]
            rows.append(f"| {name} | {r['seed']} | {p['peak_layer']} | {p['pck']:.3f} | {_ms(p['rho'], nd=3)} | "
                        f"{_ms(max(vp) if vp else None, nd=3)} | {r['train_s']:.0f} | {r['test_s']:.0f} |")
    return "\n".join(rows) + "\n"


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's five criteria; None where an arm is missing."""
    s = res["summary"]
    out: list[tuple[str, str, bool | None]] = []

    def have(*arms: str) -> bool:
        return all(a in s for a in arms)

    if have("A", "C"):
        a, c = s["A"]["peak"]["pck"], s["C"]["peak"]["pck"]
        out.append(("C peak PCK@2 ≥ 3 × A's and ≥ 0.5", f"C {c:.3f}, A {a:.3f} (ratio {c / a:.2f})",
                    c >= 3 * a and c >= 0.5))
        ra, rc = s["A"]["peak"]["rho"], s["C"]["peak"]["rho"]
        out.append(("C ρ at peak > 0, A's ≤ 0 or clearly lower", f"C {rc:+.3f}, A {ra:+.3f}",
                    rc > 0 and (ra <= 0 or rc - ra >= 0.1)))
    if have("C"):
        y = s["C"]["peak"]["y_dt24"]
        out.append(("C Y(Δt=24) ≥ 0.7", f"{y:.3f}", y >= 0.7))
    if have("B", "C"):
        b, c = s["B"]["peak"]["same_texture_pck"], s["C"]["peak"]["same_texture_pck"]
        out.append(("C > B on same-texture-at-two-depths PCK", f"C {c:.3f}, B {b:.3f}", c > b))
    if have("A", "C"):
        qa, qc = s["A"]["qa"]["camera_motion"]["mean"], s["C"]["qa"]["camera_motion"]["mean"]
        out.append(("C ≥ A on camera-motion QA", f"C {qc:.3f}, A {qa:.3f}", qc >= qa))
    return out


def targets_table(res: dict[str, Any]) -> str:
    rows = ["| target | measured | met |", "|---|---|---|"]
    rows += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets(res)]
    return "\n".join(rows) + "\n"


def reference_section(res: dict[str, Any]) -> str:
    """Model-free PCK references and point motion on the run's test split (`baselines`)."""
    from pathlib import Path

    from gasp.experiment.baselines import TOKEN_PX, motion_by_dt, references_at_input_size

    path = Path(res.get("data", {}).get("test", ""))
    if not path.is_file():
        return f"(test split {path} not found; references not computed)\n"
    ref = references_at_input_size(path, res["plan"]["image_size"])
    rows = ["| reference (no model) | PCK@2 |", "|---|---|",
            f"| uniform random token of frame k | {ref['uniform']:.3f} |",
            f"| same position as the query (no motion) | {ref['same_position']:.3f} |", "",
            "| Δt | median motion (tokens) | 90th percentile | moved ≤ 2 tokens | point pairs |", "|---|---|---|---|---|"]
    rows += [f"| {m['dt'][0]}–{m['dt'][1]} | {m['median']:.2f} | {m['p90']:.2f} | {m['within_2']:.3f} | {m['n']} |"
             for m in motion_by_dt(path, float(TOKEN_PX))]
    return "\n".join(rows) + "\n"


def report(res: dict[str, Any]) -> str:
    """All tables, with the provenance line (command, seeds, git SHA, wall time)."""
    t = res["timings"]
    head = (f"Command: `python scripts/{res['command']}` · preset `{res['preset']}` · seeds {res['seeds']} · "
            f"git `{res['git_sha']}` · torch {res['torch']} · transformers {res['transformers']} · "
            f"wall time {t['total_s'] / 60:.1f} min (data {t['data_s']:.0f} s, warm-up {t['warmup_s']:.0f} s)\n")
    return "\n".join([
        head, "### Peak layer (mean ± std over seeds)\n", peak_table(res),
        "### PCK@2 per layer, the model's own post-RoPE Q/K\n", layer_table(res, "pck_mean", "pck_seed_std"),
        "### ρ per layer\n", layer_table(res, "rho", "rho_std"),
        "### PCK@2 per layer in the heads' embedding space\n", layer_table(res, "head_pck", "head_pck_seed_std"),
        "### Same-texture-at-two-depths subset, PCK@2 per layer\n", layer_table(res, "same_texture_pck"),
        "### Spatial QA (option log-likelihood)\n", res["qa_table"],
        "### Per seed\n", seed_table(res),
        "### Targets\n", targets_table(res),
        "### References on the test split (no model)\n", reference_section(res)])
