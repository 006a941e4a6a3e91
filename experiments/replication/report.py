"""Markdown tables for RESULTS.md from a finished replication's results.json (issues 5 and 9).

Every number is read from the JSON, never typed by hand. `targets` checks the five criteria
for a convincing replication; they are reported whether met or not. A v2 run (issue 9) adds
the benchmark targets (`benchmark_targets`, from the model-free `references`), the base
model's QA target, the validation head-space target, the sweep and PCK@1/@4.
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
    from probes.results import ProbeResults

    rows = ["| arm | seed | peak layer | PCK@2 | ρ | validation mean PCK (best layer) | train s | test s |",
            "|---|---|---|---|---|---|---|---|"]
    for name, runs in res["runs"].items():
        for r in runs if isinstance(runs, list) else []:
            p = ProbeResults(r["probe"]).peak()
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

    from experiments.replication.baselines import TOKEN_PX, motion_by_dt, references_at_input_size

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


# ---- v2 (issue 9) ------------------------------------------------------------------------------

def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def benchmark_targets(ref: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 9 sec. 1 targets from the test split's model-free references."""
    sp, ap = ref["same_position"]["2"], ref["appearance"]["2"]
    vis, n_same, n = ref["visible_at_max_dt"], ref.get("same_texture_sequences", 0), ref["num_sequences"]
    return [("same-position PCK@2 ≤ 0.30, pooled", f"{sp['pooled']:.3f}", sp["pooled"] <= 0.30),
            ("same-position PCK@2 ≤ 0.15 at Δt ≥ 12", f"{sp['by_dt']['12-24']:.3f}", sp["by_dt"]["12-24"] <= 0.15),
            ("appearance matcher ≥ 2 × same position (PCK@2 pooled)",
             f"{ap['pooled']:.3f} vs {sp['pooled']:.3f} ({ap['pooled'] / max(sp['pooled'], 1e-9):.1f}×)",
             ap["pooled"] >= 2 * sp["pooled"]),
            ("≥ 50% of query points visible at Δt = 24", f"{vis:.3f}", vis >= 0.5),
            ("≥ 1/3 of sequences from same-texture scenes", f"{n_same} of {n}", 3 * n_same >= n)]


def references_table(ref: dict[str, Any]) -> str:
    rows = ["| reference (no model) | δ | mean over sequences | pooled | Δt 1–4 | Δt 5–11 | Δt 12–24 |",
            "|---|---|---|---|---|---|---|"]
    for name in ("uniform", "same_position", "appearance"):
        for d, v in ref[name].items():
            b = v["by_dt"]
            rows.append(f"| {name} | {d} | {v['mean']:.3f} | {v['pooled']:.3f} | "
                        + " | ".join(f"{b[k]:.3f}" for k in ("1-4", "5-11", "12-24")) + " |")
    rows += ["", "| Δt bin | median point motion (tokens) | share moving ≤ 2 tokens |", "|---|---|---|"]
    rows += [f"| {m['dt'][0]}–{m['dt'][1]} | {m['median']:.2f} | {m['within_2']:.3f} |" for m in ref["motion_by_dt"]]
    rows += ["", f"Query points visible at Δt = 24: {ref['visible_at_max_dt']:.3f}; "
                 f"{ref.get('same_texture_sequences', 'n/a')} of {ref['num_sequences']} sequences are same-texture; "
                 f"{ref['num_pairs']} valid pairs."]
    return "\n".join(rows) + "\n"


def base_qa_target(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 9 sec. 2: with frames beats grey video by >= 15 points on camera motion and object count."""
    b = res["summary"].get("base")
    if b is None:
        return []
    out = []
    for kind in ("camera_motion", "object_count"):
        w, g = b["qa"][kind]["mean"], b["qa_blind"][kind]["mean"]
        ok = None if w is None or g is None else w - g >= 0.15
        out.append((f"base, {kind.replace('_', ' ')}: frames − grey ≥ 0.15",
                    "n/a" if ok is None else f"{w:.3f} − {g:.3f} = {w - g:+.3f} (n = {b['qa_n'][kind]})", ok))
    return out


def val_head_layers(res: dict[str, Any], arm: str) -> list[float | None] | None:
    """Seed-mean validation head-space PCK@2 per layer of an arm (None without heads)."""
    import numpy as np

    runs = res["runs"].get(arm)
    if not isinstance(runs, list) or not all("val_head_pck" in r for r in runs):
        return None
    a = np.array([[np.nan if v is None else v for v in r["val_head_pck"]["pck_mean"]] for r in runs], dtype=float)
    return [None if not np.isfinite(v) else float(v) for v in np.nanmean(a, 0)]


def heads_target(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 9 sec. 3: validation head-space PCK@2 of B and C >= 0.8 at most layers, far above same position."""
    ref = (res.get("references_val") or {}).get("same_position", {}).get("2", {}).get("mean")
    out = []
    for arm in ("B", "C"):
        v = val_head_layers(res, arm)
        if v is None:
            continue
        good = sum(x is not None and x >= 0.8 for x in v)
        ok = good > len(v) / 2 and (ref is None or min(x for x in v if x is not None) > 2 * ref)
        out.append((f"{arm}: val head-space PCK@2 ≥ 0.8 at most layers"
                    + (f" and > 2 × same position ({ref:.3f})" if ref is not None else ""),
                    f"{good} of {len(v)} layers; per layer " + ", ".join(_ms(x) for x in v), ok))
    return out


def val_heads_table(res: dict[str, Any]) -> str:
    layers = next(iter(res["summary"].values()))["layers"]
    rows = ["| arm | " + " | ".join(f"L{i}" for i in layers) + " |", "|---|" + "---|" * len(layers)]
    for arm in res["runs"]:
        v = val_head_layers(res, arm)
        if v is not None:
            rows.append(f"| {res['labels'].get(arm, arm)} | " + " | ".join(_ms(x) for x in v) + " |")
    return "\n".join(rows) + "\n"


FEATURE_ROWS = {"base_init": "random init", "vision_pretrained": "vision pre-trained (v3)", "base": "warm-up base"}


def features_table(res: dict[str, Any]) -> str:
    """v3's `val_features`: validation PCK@2 of cosine matching on the raw normed hidden states, no head."""
    feats = res.get("val_features") or {}
    if not feats:
        return ""
    n = len(next(iter(feats.values())))
    rows = ["| model | " + " | ".join(f"L{i}" for i in range(n)) + " |", "|---|" + "---|" * n]
    rows += [f"| {FEATURE_ROWS.get(k, k)} | " + " | ".join(_ms(x, nd=3) for x in v) + " |" for k, v in feats.items()]
    ref = res.get("references_val") or {}
    if ref:
        rows += ["", "Validation references (mean over sequences): " + ", ".join(
            f"{k} {ref[k]['2']['mean']:.3f}" for k in ("uniform", "same_position", "appearance") if k in ref) + "."]
    return "\n".join(rows) + "\n"


def thresholds_table(res: dict[str, Any]) -> str:
    """Peak-layer PCK at delta 1, 2 and 4 (mean ± std over seeds, at the arm's PCK@2 peak layer)."""
    import numpy as np

    ds = [f"{d:g}" for d in res["plan"].get("extra_deltas", [])]
    rows = ["| model | peak layer | " + " | ".join(f"PCK@{d}" for d in sorted(["2", *ds], key=float)) + " |",
            "|---|---|" + "---|" * (len(ds) + 1)]
    for name, s in res["summary"].items():
        runs = res["runs"][name] if isinstance(res["runs"][name], list) else [res["runs"][name]]
        k = s["layers"].index(s["peak"]["layer"])
        cells = {"2": _ms(s["peak"]["pck"], s["peak"]["pck_std"], 3)}
        for d in ds:
            vals = [r["probe"]["pck_at"][d]["pck_mean"][k] for r in runs]
            vals = np.array([np.nan if v is None else v for v in vals], dtype=float)
            cells[d] = _ms(float(np.nanmean(vals)), float(np.nanstd(vals)) if len(vals) > 1 else None, 3)
        rows.append(f"| {res['labels'][name]} | {s['peak']['layer']} | "
                    + " | ".join(cells[d] for d in sorted(cells, key=float)) + " |")
    return "\n".join(rows) + "\n"


def sweep_table(res: dict[str, Any]) -> str:
    sw = res.get("sweep")
    if not sw:
        return "(no sweep)\n"
    rows = [f"Rule: {sw['rule']}. Chosen: lr {sw['chosen']['lr']:g}, LoRA rank {sw['chosen']['lora_r']}.", "",
            "| lr | LoRA rank | steps | mean val head-space PCK@2 | per layer | last L_corr (mean of 10 geo steps) |",
            "|---|---|---|---|---|---|"]
    for r in sw["rows"]:
        lc = [v for v in r["curves"]["l_corr"] if v is not None][-10:]
        rows.append(f"| {r['lr']:g} | {r['lora_r']} | {r['steps']} | {_ms(r['val_head_pck_mean'], nd=3)} | "
                    + ", ".join(_ms(x) for x in r["val_head_pck"]) + f" | {_ms(sum(lc) / len(lc) if lc else None)} |")
    return "\n".join(rows) + "\n"


def replication_targets_v2(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The five replication targets as issue 9 words them (stricter than v1's `targets`)."""
    import numpy as np

    s, out = res["summary"], []
    if not all(a in s for a in ("A", "B", "C")):
        return targets(res)
    a, c = s["A"]["peak"], s["C"]["peak"]
    out.append(("C peak PCK@2 ≥ 3 × A's and ≥ 0.5", f"C {c['pck']:.3f}, A {a['pck']:.3f} (ratio "
                f"{c['pck'] / max(a['pck'], 1e-9):.2f})", c["pck"] >= 3 * a["pck"] and c["pck"] >= 0.5))
    out.append(("C ρ at peak > 0, A's ≤ 0 or clearly lower (by ≥ 0.1)", f"C {c['rho']:+.3f}, A {a['rho']:+.3f}",
                c["rho"] > 0 and (a["rho"] <= 0 or c["rho"] - a["rho"] >= 0.1)))
    k = s["C"]["layers"].index(c["layer"])
    p1 = float(np.nanmean([np.nan if r["probe"]["dt_pck"][k][0] is None else r["probe"]["dt_pck"][k][0]
                           for r in res["runs"]["C"]]))
    uni = (res.get("references") or {}).get("uniform", {}).get("2", {}).get("pooled")
    counts = uni is None or p1 >= 2 * uni
    out.append(("C Y(Δt=24) ≥ 0.7, counted only if C's PCK(Δt=1) ≥ 2 × uniform",
                f"Y(24) {c['y_dt24']:.3f}; PCK(Δt=1) {p1:.3f} vs uniform {uni if uni is None else round(uni, 3)}"
                + ("" if counts else " (does not count)"), (c["y_dt24"] >= 0.7) if counts else None))
    b = s["B"]["peak"]
    spread = max(b.get("same_texture_pck_std") or 0.0, c.get("same_texture_pck_std") or 0.0)
    out.append(("C > B on the same-texture subset by more than the seed spread",
                f"C {c['same_texture_pck']:.3f}, B {b['same_texture_pck']:.3f}, spread {spread:.3f}",
                c["same_texture_pck"] - b["same_texture_pck"] > spread))
    qa, qc, qb = (s["A"]["qa"]["camera_motion"]["mean"], s["C"]["qa"]["camera_motion"]["mean"],
                  s["A"]["qa_blind"]["camera_motion"]["mean"])
    out.append(("C ≥ A on camera-motion QA, with A above its grey-video row",
                f"C {qc:.3f}, A {qa:.3f}, A grey {qb:.3f}", qc >= qa and qa > qb))
    return out


def v2_targets_table(res: dict[str, Any]) -> str:
    rows = ["| section | target | measured | |", "|---|---|---|---|"]
    for sec, items in (("1 benchmark", benchmark_targets(res["references"]) if res.get("references") else []),
                       ("2 base model", base_qa_target(res)), ("3 training (validation)", heads_target(res)),
                       ("replication", replication_targets_v2(res))):
        rows += [f"| {sec} | {t} | {m} | {_yes(ok)} |" for t, m, ok in items]
    return "\n".join(rows) + "\n"


def report_v2(res: dict[str, Any]) -> str:
    t = res["timings"]
    head = (f"Command: `python scripts/{res['command']}` · preset `{res['preset']}` · seeds {res['seeds']} · "
            f"git `{res['git_sha']}` · plan `{res.get('plan_sha')}` · torch {res['torch']} · "
            f"transformers {res['transformers']} · wall time {t['total_s'] / 60:.1f} min (data {t['data_s']:.0f} s, "
            f"warm-up {t['warmup_s']:.0f} s, sweep {t.get('sweep_s', 0):.0f} s)\n")
    return "\n".join([
        head, "### Targets\n", v2_targets_table(res),
        "### Benchmark: model-free references on the test split\n", references_table(res["references"]),
        "### Peak layer (mean ± std over seeds)\n", peak_table(res),
        "### PCK at δ = 1, 2, 4 at the peak layer\n", thresholds_table(res),
        "### PCK@2 per layer, the model's own post-RoPE Q/K\n", layer_table(res, "pck_mean", "pck_seed_std"),
        "### ρ per layer\n", layer_table(res, "rho", "rho_std"),
        "### Head-space PCK@2 per layer, validation split\n", val_heads_table(res),
        *(["### Feature PCK@2 per layer, validation split (raw normed hidden states, no head)\n",
           features_table(res)] if res.get("val_features") else []),
        "### Head-space PCK@2 per layer, test split\n", layer_table(res, "head_pck", "head_pck_seed_std"),
        "### Same-texture-at-two-depths subset, PCK@2 per layer\n", layer_table(res, "same_texture_pck"),
        "### Spatial QA (option log-likelihood)\n", res["qa_table"],
        "### Validation sweep\n", sweep_table(res),
        "### Per seed\n", seed_table(res)])


def report(res: dict[str, Any]) -> str:
    """All tables, with the provenance line (command, seeds, git SHA, wall time)."""
    if res.get("plan", {}).get("version", 1) >= 2:
        return report_v2(res)
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
