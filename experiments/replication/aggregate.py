"""Mean +- std over seeds of every per-arm number of the small replication (issue 5), and the QA table.

Per arm (lists are per LLM layer, L entries; std is over seeds, ddof 0, 0 for one seed):
    pck_mean / pck_seed_std      the probe's PCK@2 (each seed's value is its mean over test sequences)
    pck_std                      what Figure 3 draws as the band: std over seeds with >1 seed,
                                 else the probe's std over test sequences (`band` says which)
    rho, rho_std, dt_norm        pooled rho per layer; Y(dt) per layer (L, 24), means over seeds
    peak                         at the arm's peak layer (argmax of pck_mean): PCK, rho, Y(24),
                                 same-texture PCK and other-scene PCK, each mean and std
    same_texture_pck, head_pck   per layer (head_pck only for arms with heads)
    qa, qa_blind                 accuracy per question kind, mean and std
The warm-up base ("base") has one run and is summarised the same way.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gasp.data.spatial_qa import KINDS
from probes.results import ProbeResults

QA_COLUMNS = (*KINDS, "all")


def _arr(x) -> np.ndarray:
    return np.array(x if not isinstance(x, list) else
                    [[np.nan if v is None else v for v in r] if isinstance(r, list) else (np.nan if r is None else r)
                     for r in x], dtype=float)


def _ms(values) -> tuple[Any, Any]:
    a = np.stack([_arr(v) for v in values])
    with warnings.catch_warnings():                  # all-NaN columns (no support) stay None
        warnings.simplefilter("ignore", RuntimeWarning)
        m, s = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
    return _clean(m), _clean(s)


def _clean(x):
    x = np.asarray(x, dtype=float)
    if x.ndim == 0:
        return None if not np.isfinite(x) else float(x)
    return [_clean(v) for v in x]


def summarize_arm(runs: list[dict]) -> dict[str, Any]:
    probes = [r["probe"] for r in runs]
    out: dict[str, Any] = {"seeds": [r.get("seed", 0) for r in runs], "layers": probes[0]["layers"],
                           "dt": probes[0]["dt"], "delta": probes[0]["delta"], "rope": probes[0]["rope"]}
    out["pck_mean"], out["pck_seed_std"] = _ms([p["pck_mean"] for p in probes])
    if len(runs) > 1:
        out["pck_std"], out["band"] = out["pck_seed_std"], "std over seeds"
    else:
        out["pck_std"], out["band"] = probes[0]["pck_std"], "std over test sequences (one seed)"
    out["rho"], out["rho_std"] = _ms([p["rho"] for p in probes])
    out["dt_norm"], _ = _ms([p["dt_norm"] for p in probes])
    out["same_texture_pck"], _ = _ms([r["same_texture_pck"] for r in runs])
    out["other_pck"], _ = _ms([r["other_pck"] for r in runs])
    if all("head_pck" in r for r in runs):
        out["head_pck"], out["head_pck_seed_std"] = _ms([r["head_pck"]["pck_mean"] for r in runs])
    k = ProbeResults(out).peak_index                            # of the seed-mean PCK
    peak: dict[str, Any] = {"layer": out["layers"][k]}
    for name, per_run in (("pck", [p["pck_mean"][k] for p in probes]), ("rho", [p["rho"][k] for p in probes]),
                          ("y_dt24", [p["dt_norm"][k][-1] for p in probes]),
                          ("same_texture_pck", [r["same_texture_pck"][k] for r in runs]),
                          ("other_pck", [r["other_pck"][k] for r in runs])):
        peak[name], peak[name + "_std"] = _ms(per_run)
    if "head_pck" in out:
        hp = _arr(out["head_pck"])
        peak["head_pck_max"] = _clean(np.nanmax(hp)) if np.isfinite(hp).any() else None
    out["peak"] = peak
    out["qa"] = {c: dict(zip(("mean", "std"), _ms([r["qa"][c]["accuracy"] for r in runs]))) for c in QA_COLUMNS}
    out["qa_blind"] = {c: dict(zip(("mean", "std"), _ms([r["qa_blind"][c]["accuracy"] for r in runs])))
                       for c in QA_COLUMNS}
    out["qa_n"] = {c: runs[0]["qa"][c]["n"] for c in QA_COLUMNS}
    out["qa_chance"] = {c: runs[0]["qa"][c]["chance"] for c in QA_COLUMNS}
    return out


def summarize_arms(runs: dict[str, Any]) -> dict[str, Any]:
    return {name: summarize_arm(r if isinstance(r, list) else [r]) for name, r in runs.items()}


def _fmt(d: dict) -> str:
    if d["mean"] is None:
        return "n/a"
    return f"{d['mean']:.2f}" + (f" ± {d['std']:.2f}" if d["std"] else "")


def qa_table(summary: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: one row per model with frames, one per model on a grey video, and chance."""
    head = "| model | " + " | ".join(QA_COLUMNS) + " |\n|---|" + "---|" * len(QA_COLUMNS) + "\n"
    rows = []
    for key in ("qa", "qa_blind"):
        for name, s in summary.items():
            tag = labels.get(name, name) + (" — blind (grey video)" if key == "qa_blind" else "")
            rows.append(f"| {tag} | " + " | ".join(_fmt(s[key][c]) for c in QA_COLUMNS) + " |")
    any_s = next(iter(summary.values()))
    rows.append("| chance | " + " | ".join("n/a" if any_s["qa_chance"][c] is None else f"{any_s['qa_chance'][c]:.2f}"
                                           for c in QA_COLUMNS) + " |")
    rows.append("| questions (n) | " + " | ".join(str(any_s["qa_n"][c]) for c in QA_COLUMNS) + " |")
    return head + "\n".join(rows) + "\n"
