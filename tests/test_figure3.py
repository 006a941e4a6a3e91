"""Figure 3: reference lines (chance and same position) and integer Delta-t ticks (issue 12)."""
import pytest
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


def test_panel_d_appears_only_where_a_run_binned_by_viewpoint(tmp_path):
    """Figure 3's optional panel (d): Y(dtheta) per camera-rotation bin, drawn only when results.json has it."""
    from PIL import Image

    from plots.figure3 import draw_figure3

    base = {"layers": [0, 1], "pck_mean": [0.2, 0.4], "pck_std": [0.0, 0.0], "rho": [0.1, 0.2],
            "dt": [1, 2], "dt_norm": [[1.0, 0.9], [1.0, 0.8]], "num_sequences": 1}
    viewed = {**base, "viewpoint": {"bins_deg": [0, 15, 30], "y": [[1.0, 0.7], [1.0, 0.5]], "pck": [[0.2, 0.14], [0.4, 0.2]],
                                    "count": [10, 5]}}
    no_cams = {**base, "viewpoint": {"bins_deg": [0, 15, 30], "reason": "no cameras", "num_sequences": 0}}
    w3 = Image.open(draw_figure3([no_cams], ["a"], tmp_path / "three.png")[0]).size[0]
    w4 = Image.open(draw_figure3([viewed, no_cams], ["a", "b"], tmp_path / "four.png")[0]).size[0]
    assert w4 / w3 == pytest.approx(20 / 15, rel=0.02)
