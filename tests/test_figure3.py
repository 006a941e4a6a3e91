"""Figure 3: reference lines (chance and same position) and integer Delta-t ticks (issue 12)."""
import numpy as np

import plots.figure3 as F


def _results(dts_with_data):
    layers = [0, 1, 2]
    dt_norm = [[(1.0 if d in dts_with_data else None) for d in range(1, 25)] for _ in layers]
    return {"layers": layers, "pck_mean": [0.1, 0.3, 0.2], "pck_std": [0.01, 0.02, 0.01], "rho": [0.0, 0.1, -0.1],
            "dt": list(range(1, 25)), "dt_norm": dt_norm, "delta": 2, "rope": "post",
            "references": {"uniform": 0.05, "same_position": 0.4}}


def test_reference_lines_and_integer_ticks(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(F, "save_png_pdf", lambda fig, out: figs.append(fig) or [out])
    res = _results({1, 2, 3})                                   # few Delta-t values: ticks must stay integers
    F.draw_figure3([res], ["m"], tmp_path / "f.png", references=res["references"])
    (fig,) = figs
    fig.canvas.draw()
    ax_pck, _, ax_dt = fig.axes[:3]
    lines = {ln.get_label(): ln for ln in ax_pck.get_lines()}
    chance = next(v for k, v in lines.items() if k.startswith("chance (uniform)"))
    same = next(v for k, v in lines.items() if k.startswith("same position"))
    assert np.allclose(chance.get_ydata(), 0.05) and np.allclose(same.get_ydata(), 0.4)
    lo, hi = ax_dt.get_xlim()
    ticks = [t for t in ax_dt.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_probe_results_draw_their_own_references(tmp_path):
    """pck.py passes results.json's references; without any, no reference line is drawn."""
    res = _results(set(range(1, 25)))
    res.pop("references")
    paths = F.draw_figure3([res], ["m"], tmp_path / "f.png")
    assert paths[0].stat().st_size > 10_000
