"""plots/matches.py (the match explorer): categories by hand, the PNGs end to end, the page in a real browser."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from plots.match_data import CATEGORIES, INVALID, SequenceMatches, categorize, where_summary
from probes.store import read_finished
from tests.conftest import ROOT

PCK, MATCHES = str(ROOT / "probes" / "pck.py"), str(ROOT / "plots" / "matches.py")


def run(script, *args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def hand_built() -> SequenceMatches:
    """5 x 5 grid of 10 px tokens, 4 points, 2 other frames, 2 layers; every category placed by hand."""
    query_rc = np.array([[1, 2], [2, 2], [4, 1], [2, 3]])                       # row, col
    centre = np.stack([(query_rc[:, 1] + 0.5) * 10 - 0.5, (query_rc[:, 0] + 0.5) * 10 - 0.5], -1)  # x, y
    gt = np.zeros((3, 4, 2))
    gt[0] = centre + [[0, 0], [-3, 4], [4.9, -4.9], [2, 2]]                    # off-centre, same token
    pred = np.array([[[[1, 2], [2, 2], [0, 4], [2, 1]],        # L0 f0: p0 correct (and same), p1 same, p2 border,
                      #                                           p3 elsewhere
                      [[0, 0], [4, 2], [4, 1], [0, 0]]],       # L0 f1: p0 correct (and border), p1 border, p2 same
                     #                                           (and border), p3 invalid though "correct"
                     [[[2, 1], [2, 1], [2, 1], [2, 1]],        # L1 f0: all elsewhere
                      [[2, 2], [1, 1], [0, 1], [1, 2]]]])      # L1 f1: p0 at p1's query token: elsewhere; p2 border
    correct = np.zeros((2, 2, 4), bool)
    correct[0, 0, 0] = correct[0, 1, 0] = correct[0, 1, 3] = True
    valid = np.ones((2, 4), bool)
    valid[1, 3] = False
    return SequenceMatches(key="k", scene="s", frames=np.zeros((3, 50, 50, 3), np.uint8), frame_index=np.arange(3),
                           query=0, others=np.array([1, 2]), gt_px=gt, visible=np.ones((3, 4), bool), valid=valid,
                           pred_rc=pred, correct=correct, dt=np.array([1, 2]), grid=(5, 5), token_size=(10.0, 10.0),
                           sim_points=np.zeros(0, np.int64), sim=None)


def test_categories_of_a_hand_built_case():
    sm = hand_built()
    assert sm.query_rc.tolist() == [[1, 2], [2, 2], [4, 1], [2, 3]]
    assert sm.token_centre_px(np.array([1, 2])).tolist() == [24.5, 14.5]
    c, s, b, e = range(4)
    expect = [[[c, s, b, e], [c, b, s, INVALID]], [[e, e, e, e], [e, e, b, INVALID]]]
    assert categorize(sm.pred_rc, sm.correct, sm.valid, sm.query_rc, sm.grid).tolist() == expect
    w = where_summary([sm, sm], layers=[3, 7], delta=2.0)                     # pooling two copies: same fractions
    assert w["num_predictions"] == [14, 14] and w["priority"] == list(CATEGORIES)
    assert w["fractions"] == {"correct": [2 / 7, 0], "same_position": [2 / 7, 0], "border": [2 / 7, 1 / 7],
                              "elsewhere": [1 / 7, 6 / 7]}
    assert w["any"] == {"same_position": [3 / 7, 0], "border": [4 / 7, 1 / 7]}
    assert w["border_tokens"] == pytest.approx(16 / 25)


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "out"
    run(PCK, "--synthetic-scenes", "2", "--synthetic-size", "112", "--max-sequences", "2", "--out", out)
    t = time.perf_counter()
    p = run(MATCHES, out)
    return out, p, time.perf_counter() - t


@pytest.mark.slow
def test_explorer_end_to_end(explored):
    out, p, seconds = explored
    dest = out / "matches"
    res = json.loads((out / "results.json").read_text())
    done = read_finished(out)
    assert str(dest / "index.html") in p.stdout
    for key, rec in done.items():
        name = key.split(":")[-1]
        for layer in res["layers"]:
            assert (dest / f"matches_{name}_L{layer}.png").stat().st_size > 20_000
        for point in rec["arrays"]["sim_points"]:
            assert (dest / f"heatmap_{name}_p{point}.png").stat().st_size > 20_000
    assert (dest / "where.png").stat().st_size > 10_000
    where = json.loads((dest / "where.json").read_text())
    assert where["layers"] == res["layers"] and where["priority"] == list(CATEGORIES)
    frac = np.array([where["fractions"][c] for c in CATEGORIES])               # (4, L)
    assert np.allclose(frac.sum(0), 1)
    correct = sum(r["arrays"]["correct"].sum((1, 2)) for r in done.values())
    valid = sum(r["arrays"]["valid"].sum() for r in done.values())
    assert np.allclose(frac[0], correct / valid) and where["num_predictions"] == [int(valid)] * len(res["layers"])
    html = (dest / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|<link|<script[^>]+src""", html)  # self-contained
    assert html.count("data:image/jpeg;base64,") == sum(len(r["arrays"]["frame_ids"]) for r in done.values())


@pytest.mark.slow
def test_explorer_names_what_is_wrong(explored, tmp_path):
    out = explored[0]
    p = run(MATCHES, out, "--layers", "9", "--dest", tmp_path / "d", check=False)
    assert p.returncode == 2 and "[0, 1, 2, 3]" in p.stderr and "Traceback" not in p.stderr
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("matches"))
    res = json.loads((moved / "results.json").read_text())
    res["tracks"] = str(tmp_path / "gone.h5")
    (moved / "results.json").write_text(json.dumps(res))
    p = run(MATCHES, moved, check=False)
    assert p.returncode == 2 and "gone.h5" in p.stderr and "rerun the same probe command" in p.stderr
    assert "Traceback" not in p.stderr and not (moved / "matches").exists()


def _browser():
    missing = [b for b in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not os.path.exists(b)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e .[browser])")
    if missing:
        pytest.skip(f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)")
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"      # set, so selenium-manager downloads nothing
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


@pytest.mark.slow
def test_page_in_a_headless_browser(explored, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = explored[0]
    done = read_finished(out)
    keys = json.loads((out / "results.json").read_text())["sequences"]
    d = _browser()
    try:
        d.get((out / "matches" / "index.html").as_uri())
        WebDriverWait(d, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        status = lambda: d.find_element("id", "status").text      # noqa: E731
        assert status().startswith("sequence 1/2") and re.search(r"layer 0 · all \d+ points", status())
        Select(d.find_element("id", "seq")).select_by_index(1)
        assert status().startswith(f"sequence 2/2: {keys[1]}")
        assert len(d.find_elements("css selector", "canvas.frame")) == len(done[keys[1]]["arrays"]["frame_ids"]) - 1
        d.find_element("id", "layer-next").click()
        assert re.search(r"layer 1 · all \d+ points", status()) and d.find_element("id", "layer-label").text == "L1"
        a = done[keys[1]]["arrays"]
        point = int(a["sim_points"][1])
        # click the query canvas where the page draws the point (canvas px -> CSS px offset from its centre)
        cx, cy, cw, ch = d.execute_script(       # CSS px: the canvas is drawn at its grid cell's width
            "const s = D.sequences[1], c = $('query-canvas'), [x, y] = gtAt(s, s.query, arguments[0]),"
            " r = c.getBoundingClientRect(), k = r.width / c.width;"
            "return [px(s, x) * k, px(s, y) * k, r.width, r.height];", point)
        canvas = d.find_element("id", "query-canvas")
        ActionChains(d).move_to_element_with_offset(canvas, round(cx - cw / 2), round(cy - ch / 2)).click().perform()
        assert f"layer 1 · point {point} · " in status() and "heatmap stored" in status()
        assert d.find_element("id", "point").get_attribute("value") == str(point)
        # the page's predicted centre of that point in the first other frame is the stored token's centre
        h, w = a["grid"]
        tok = int(a["pred"][1, 0, point])
        th, tw = a["token_size"]
        js = d.execute_script("return predCentre(D.sequences[1], 1, 0, arguments[0]);", point)
        assert js == pytest.approx([(tok % w + 0.5) * tw - 0.5, (tok // w + 0.5) * th - 0.5])
        spread = d.execute_script("const c = $('frame-0'), p = c.getContext('2d').getImageData(0, 0, c.width, c.height)"
                                  ".data; let lo = 255, hi = 0; for (let i = 0; i < p.length; i += 4) "
                                  "{ lo = Math.min(lo, p[i]); hi = Math.max(hi, p[i]); } return hi - lo;")
        assert spread > 50                                           # the frame and heatmap were drawn
        d.save_screenshot(str(tmp_path / "explorer.png"))
        assert (tmp_path / "explorer.png").stat().st_size > 20_000
        assert d.execute_script("return document.body.dataset.errors") == "0"
        assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        d.quit()


@pytest.mark.slow
def test_a_dense_sequence_opens_readable_and_frames_fill_the_page(tmp_path):
    """Friction item 12 at a real stereo pair's point count (508 there; 529 here): the page opens on a spread-out
    subset, all points are one click away, and the frames fill the page instead of 210-px thumbnails."""
    from tracks.synthetic import SyntheticSceneConfig, make_synthetic_file

    tracks, out = tmp_path / "dense.h5", tmp_path / "probe"
    make_synthetic_file(tracks, 1, seed=3, config=SyntheticSceneConfig(height=224, width=224, num_frames=26), grid=23,
                        split="eval")
    run(PCK, "--tracks", tracks, "--out", out, "--size", "224", "224")
    run(MATCHES, out, "--layers", "0")
    d = _browser()
    try:
        d.get((out / "matches" / "index.html").as_uri())
        WebDriverWait = __import__("selenium.webdriver.support.ui", fromlist=["WebDriverWait"]).WebDriverWait
        WebDriverWait(d, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        status = lambda: d.find_element("id", "status").text      # noqa: E731
        n = int(re.search(r"of (\d+) points \(a readable subset\)", status()).group(1))
        shown = int(re.search(r"· (\d+) of", status()).group(1))
        assert n > 500 and 10 <= shown <= 49, status()
        page_w = d.execute_script("return document.documentElement.clientWidth")
        widths = d.execute_script("return [...document.querySelectorAll('canvas')].map(c => c.getBoundingClientRect()"
                                  ".width)")
        assert min(widths) > 0.25 * page_w and sum(widths) > 0.9 * page_w, (widths, page_w)
        d.save_screenshot(str(tmp_path / "subset.png"))
        d.find_element("id", "show-all").click()
        assert f"all {n} points" in status() and not d.find_element("id", "show-all").is_displayed()
        d.save_screenshot(str(tmp_path / "all.png"))
        assert d.execute_script("return document.body.dataset.errors") == "0"
    finally:
        d.quit()


def test_figure_legends_never_sit_on_the_axes(tmp_path, monkeypatch):
    """Figure 3 and the PCK-and-depth figure keep their legends below the panels (the 0.94 same-position line
    was hidden under an upper-right legend)."""
    import plots.figure3 as f3
    import plots.pck_depth as pd

    figs = []
    monkeypatch.setattr(f3, "save_png_pdf", lambda fig, out: figs.append(fig) or [out])
    monkeypatch.setattr(pd, "save_png_pdf", lambda fig, out: figs.append(fig) or [out])
    res = {"layers": [0, 1], "pck_mean": [0.1, 0.2], "pck_std": [0.0, 0.1], "rho": [0.1, 0.0], "dt": [1, 2],
           "dt_norm": [[1.0, 0.9], [1.0, 0.8]], "delta": 2.0, "linear_attention_layers": [1],
           "references": {"uniform": 0.05, "same_position": 0.94},
           "depth": {"layers": [-1, 0, 1], "num_eval_images": 4,
                     "scale_shift": {"delta_1.25": [0.3, 0.4, 0.5]}, "metric": {"delta_1.25": [0.2, 0.3, 0.3]},
                     "references": {k: {"scale_shift": {"delta_1.25": 0.2}} for k in ("pixels", "constant")}}}
    f3.draw_figure3([res, res], ["a", "b"], tmp_path / "f.png", references=res["references"])
    pd.draw_geometry([res], ["a"], tmp_path / "g.png")
    for fig in figs:
        assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in figs[0].legends[0].get_texts()]
    assert any("same position" in t for t in labels) and any("linear attention" in t for t in labels)
