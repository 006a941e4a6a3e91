"""A probe's results.json, read back: :class:`ProbeResults` owns loading, the per-layer series (None as
NaN), the peak layer and the one-line summary.

One place for "which layer is the peak" (the layer of the highest mean PCK over sequences): the
figures, the comparison table, the replication's report and the trainer's log line all use it.
``ProbeResults`` is a read-only mapping over the JSON, so code that reads keys keeps working and the
file's format stays what it is.

Shapes: L probed layers.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class ProbeResults(Mapping):
    """results.json as a typed object: ``res.layers``, ``res.series("rho")``, ``res.peak_index``, ``res.peak()``,
    ``res.summary_line()``; ``res["pck_mean"]`` still reads the JSON."""

    def __init__(self, data: Mapping[str, Any], path: Path | None = None):
        self._data, self.path = dict(data), path

    @classmethod
    def load(cls, path: str | Path) -> "ProbeResults":
        """results.json of a probe folder (or the file itself)."""
        path = Path(path)
        path = path / "results.json" if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass a probe output folder (gasp probe --out DIR)")
        return cls(json.loads(path.read_text()), path)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def layers(self) -> list[int]:
        return list(self._data["layers"])

    def series(self, key: str) -> np.ndarray:
        """A per-layer entry as floats, None -> NaN: (L,) or (L, K)."""
        return series(self._data[key])

    @property
    def peak_index(self) -> int:
        return peak_layer_index(self._data)

    def peak(self) -> dict[str, Any]:
        return peak_numbers(self._data)

    def summary_line(self, extra_references: dict[str, float] | None = None) -> str:
        return summary_line(self._data, extra_references)

    def selection_line(self) -> str | None:
        """DiffTrack's layer choice with its PCK and the references, or None when results.json has none."""
        sel = self._data.get("selection") or {}
        if "layer" not in sel:
            return None
        k = sel["layer_index"]
        refs = references_text(self._data.get("references"))
        delta = f"{float(self._data.get('delta', 2.0)):g}"
        line = (f"DiffTrack's selection: layer {sel['layer']} (harmonic mean {sel['harmonic_mean'][k]:.3f} of normalised "
                f"PCK, confidence {sel['confidence'][k]:.3f}, attention score {sel['attention_score'][k]:.3f}); "
                f"PCK@{delta} there {sel['accuracy'][k]:.3f}")
        if (ph := sel.get("per_head")) is not None:
            li, hi = ph["layer_index"], ph["head"]
            line += f"; best head: layer {ph['layer']} head {hi}, PCK@{delta} {ph['accuracy'][li][hi]:.3f}"
        return line + (f" ({refs})" if refs else "")

    def depth_summary_line(self) -> str | None:
        """The depth probe's peak with its references (a probe run with --depth), else None."""
        return depth_summary_line(self._data)


def load_results(path: str | Path) -> ProbeResults:
    """:meth:`ProbeResults.load`."""
    return ProbeResults.load(path)


def series(x: list) -> np.ndarray:
    """A per-layer list (or list of lists) from results.json as floats, None -> NaN: (L,) or (L, K)."""
    return np.array([np.nan if v is None else v for v in x], dtype=float) if np.ndim(x) == 1 else \
        np.array([[np.nan if v is None else v for v in row] for row in x], dtype=float)


def peak_layer_index(res: dict[str, Any]) -> int:
    """Index (into res['layers']) of the layer with the highest mean PCK; 0 when no layer has one."""
    pck = series(res["pck_mean"])
    return int(np.nanargmax(pck)) if np.isfinite(pck).any() else 0


def peak_numbers(res: dict[str, Any]) -> dict[str, Any]:
    """Peak layer and PCK, rho, Y(dt=24) there, from results.json."""
    k = peak_layer_index(res)
    return {"peak_layer": res["layers"][k], "pck": res["pck_mean"][k], "rho": res["rho"][k],
            "y_dt24": res["dt_norm"][k][-1], "pck_per_layer": res["pck_mean"],
            "num_sequences": res["num_sequences"]}


REFERENCE_LABELS = {"uniform": "uniform", "same_position": "same position", "appearance": "pixel patches",
                    "untrained": "untrained"}


def references_text(refs: dict[str, float | None] | None) -> str:
    """'uniform 0.026, same position 0.943': the references a number is read against, as every line prints them."""
    return ", ".join(f"{REFERENCE_LABELS.get(name, name)} {v:.3f}" for name, v in (refs or {}).items() if v is not None)


def summary_line(res: dict[str, Any], extra_references: dict[str, float] | None = None) -> str:
    """'peak PCK@2 0.371 at layer 0 over 8 sequences (rho +0.12; uniform 0.026, same position 0.943)'.

    A number is never printed without what it should be read against: the model-free references of
    results.json (a uniform guess and "same position as the query", on the same points) and any
    ``extra_references`` the caller knows (e.g. {"untrained": 0.579}, the same probe before training).
    """
    pck = series(res["pck_mean"])
    if not np.isfinite(pck).any():
        return "no valid prediction"
    k = peak_layer_index(res)
    delta = f"{float(res.get('delta', 2.0)):g}"
    rho = res["rho"][k]
    refs = {**(res.get("references") or {}), **(extra_references or {})}
    ref_text = references_text(refs)
    inside = "; ".join(t for t in ((f"rho {rho:+.2f}" if rho is not None else ""), ref_text) if t)
    return (f"peak PCK@{delta} {pck[k]:.3f} at layer {res['layers'][k]} over {res['num_sequences']} sequence(s)"
            + (f" ({inside})" if inside else ""))


def depth_summary_line(res: dict[str, Any]) -> str | None:
    """'depth delta<1.25 (scale-and-shift aligned) 0.812 at layer 3 over 40 held-out images; pixels 0.601,
    constant 0.433': the per-layer depth probe's best layer, beside its model-free references."""
    if not res.get("depth"):
        return None
    dep = res["depth"]["scale_shift"]["delta_1.25"]
    best = max(range(len(dep)), key=lambda i: -1 if dep[i] is None else dep[i])
    ref = {k: v["scale_shift"]["delta_1.25"] for k, v in res["depth"]["references"].items()}
    return (f"depth delta<1.25 (scale-and-shift aligned) {dep[best]:.3f} at layer {res['depth']['layers'][best]} "
            f"over {res['depth']['num_eval_images']} held-out images; pixels {ref['pixels']:.3f}, "
            f"constant {ref['constant']:.3f}")
