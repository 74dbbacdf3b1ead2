"""genrec report: the payload read from a run (catalog sorted so every SID prefix is one range, neighbours,
the similarity curve, the decoder's history written as training happens), and the page itself in headless
Chromium, loaded from disk: expand a prefix, search a product, open it."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genrec.model.history import append_history, read_history
from helpers.browser import chrome, screenshot, wait_for
from genrec.report import write_report
from genrec.report.data import report_payload
from genrec.report.html import render_report
from genrec.run.layout import HISTORY_FILE


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    """The report of a copy of the tiny run, evaluated beside the popularity baseline (``RUN/eval.json``)."""
    from genrec.evaluation.harness import evaluate
    from semid.common import write_json

    root, _ = tiny_run
    out = tmp_path_factory.mktemp("report")
    run = shutil.copytree(root / "run", out / "run")
    write_json(evaluate(root / "data", run, ["popular"], seed=0), run / "eval.json")
    return write_report(run, out), report_payload(run)


def test_training_writes_its_history_as_it_goes(tiny_run):
    root, cfg = tiny_run
    lines = [json.loads(x) for x in (root / "run" / "decoder" / HISTORY_FILE).read_text().splitlines()]
    epochs = [r for r in lines if "lr" in r]
    evals = [r for r in lines if "recall@10" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, cfg.train.epochs + 1))
    assert all(np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in epochs)
    result = json.loads((root / "run" / "decoder" / "train_result.json").read_text())
    assert [r for r in result["history"] if "recall@10" in r] == evals  # the same records as the result's


def test_read_history_keeps_the_latest_training(tmp_path):
    for record in ({"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 3.0}, {"epoch": 2, "step": 20, "lr": 1.0},
                   {"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 2.5},  # --restart: steps go back
                   {"epoch": 1, "step": 10, "recall@10": 0.2}, {"epoch": 1, "step": 10, "recall@10": 0.3}):
        append_history(tmp_path, record)
    (tmp_path / HISTORY_FILE).open("a").write('{"epoch": 2, "st')  # cut short by a kill
    assert read_history(tmp_path) == [{"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 2.5},
                                      {"epoch": 1, "step": 10, "recall@10": 0.3}]
    append_history(tmp_path / "nowhere", {"epoch": 1}, enabled=False)  # other processes write nothing
    assert read_history(tmp_path / "empty") == []


def test_payload_sorts_the_catalog_by_sid(report, tiny_run):
    _, payload = report
    cat = payload["catalog"]
    levels = len(payload["codebook_sizes"])
    codes = np.asarray(cat["codes"]).reshape(-1, levels)
    n = codes.shape[0]
    keys = [tuple(c) for c in codes.tolist()]
    assert keys == sorted(keys)  # every prefix is one contiguous range
    table = pq.read_table(tiny_run[0] / "run" / "sids.parquet")
    sids = dict(zip(table.column("item_id").to_pylist(), table.column("sid").to_pylist()))
    assert cat["sids"] == [sids[i] for i in cat["ids"]] and len(set(cat["sids"])) == n
    assert all(s.startswith("_".join(map(str, k))) for s, k in zip(cat["sids"], keys))
    nn = np.asarray(cat["nn"]).reshape(n, cat["k_nn"])
    assert cat["k_nn"] == 5 and not (nn == np.arange(n)[:, None]).any()
    assert sum(payload["level1_counts"]) == n
    assert len(cat["path"]) == n and max(cat["path"]) < len(cat["paths"])
    curve = payload["curve"]
    assert curve["mean_depth"][-1] > curve["mean_depth"][0] + 1  # near pairs share far more levels
    assert payload["decoder"]["epochs"] and "train_loss" in payload["decoder"]["epochs"][0]


def test_report_is_self_contained(report):
    path, _ = report
    page = path.read_text()
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page  # scripts and styles inlined
    assert 1e6 < path.stat().st_size < 10e6


def test_report_in_chromium(report, tmp_path):
    path, payload = report
    cat = payload["catalog"]
    levels = len(payload["codebook_sizes"])
    codes = np.asarray(cat["codes"]).reshape(-1, levels)
    first = codes[0, 0]
    children = {tuple(c) for c in codes[codes[:, 0] == first, :2].tolist()}
    target = len(cat["names"]) // 2
    name, item_id = cat["names"][target], cat["ids"][target]
    with chrome() as driver:
        driver.get(path.as_uri())
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
        assert driver.execute_script("return document.body.dataset.ready") == "1"
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))] == []  # no network
        roots = driver.find_elements("css selector", "#tree > li.node")
        assert len(roots) == len(set(codes[:, 0].tolist()))
        assert roots[0].get_attribute("data-size") == str(int((codes[:, 0] == first).sum()))
        roots[0].find_element("css selector", "button").click()
        kids = roots[0].find_elements("css selector", ":scope > ul > li.node")
        assert len(kids) == len(children)
        assert kids[0].get_attribute("data-prefix") == "_".join(map(str, sorted(children)[0]))
        assert kids[0].find_element("css selector", ".examples .path").text.startswith("(")
        assert len(driver.find_elements("css selector", "svg.main-svg")) >= 7  # the plots are drawn

        box = driver.find_element("id", "search-input")
        box.send_keys(name)
        hit = wait_for(driver, lambda d: d.find_elements("css selector", f'#search-results li[data-item="{item_id}"]'))
        hits = driver.find_elements("css selector", "#search-results li[data-item]")
        assert 1 <= len(hits) <= 20 and all(name.lower() in h.text.lower() or h == hit[0] for h in hits)
        hit[0].click()
        sid = wait_for(driver, lambda d: d.find_element("id", "detail-sid")).text
        assert sid == cat["sids"][target]
        assert len(driver.find_elements("css selector", "#neighbours li")) == 5
        siblings = driver.find_elements("css selector", "#siblings li")
        assert all(s.text.split()[0].startswith("_".join(map(str, codes[target, :-1])) + "_") for s in siblings)
        bands = [name for name in payload["decoder"]["eval"]["slices"] if name.startswith("bought_")]
        assert bands  # the harness's popularity bands, one row each, a column per model
        rows = driver.find_elements("css selector", "#popularity-table tr")
        assert [r.find_elements("css selector", "td")[0].text for r in rows[1:]] == [
            b.replace("bought_", "").replace("_", "-") + " purchases" for b in bands]
        assert [h.text for h in rows[0].find_elements("css selector", "th")][2:] == ["genrec", "popular"]
        comparison = driver.find_elements("css selector", "#eval-tables table.eval")[0]
        assert [r.find_element("css selector", "td").text for r in comparison.find_elements("css selector", "tr")[1:]] \
            == ["genrec", "popular"]
        driver.execute_script("document.getElementById('tree-section').scrollIntoView()")
        screenshot(driver, tmp_path / "report.png")


def test_report_command(tiny_run, tmp_path, capsys):
    from genrec.cli import main as cli

    assert cli(["report", "--run", str(tiny_run[0] / "run"), "--out", str(tmp_path / "r")]) == 0
    assert f"wrote {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().out
    assert cli(["report", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "r2")]) == 2
    assert "genrec: error:" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def _synthetic_payload(n: int, sizes: list[int], seed: int = 0) -> dict:
    """A report payload for ``n`` random products (codes sorted, as ``report_payload`` writes them)."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    codes = codes[np.lexsort(codes.T[::-1])]
    levels = len(sizes)
    metrics = {"used_codes": sizes, "utilization": [1.0] * levels, "perplexity": [float(s) for s in sizes],
               "collision_rate": 0.1, "n_distinct_sids": n, "max_group": 3, "reconstruction_error": 0.2,
               "spearman_similarity_depth": 0.8, "n_pairs": 100, "n_pairs_cos90": 10, "taxonomy_alignment_l1": 0.9,
               "share_level_at_cos90": [0.9] * levels, "taxonomy_alignment_top": [0.9] * levels,
               "taxonomy_alignment_leaf": [0.8] * levels, "taxonomy_alignment_chance": 0.1}
    return {
        "run": "synthetic", "codebook_version": "v", "codebook_sizes": sizes, "metrics": metrics,
        "level1_counts": np.bincount(codes[:, 0], minlength=sizes[0]).tolist(),
        "curve": {"cosine": [0.1, 0.5, 0.9], "mean_depth": [0.1, 0.5, 2.0], "pairs": [5, 5, 5]},
        "catalog": {"ids": list(range(1, n + 1)), "names": [f"product {i} <b>x</b>" for i in range(1, n + 1)],
                    "paths": ["a > b", "a > c"], "path": (np.arange(n) % 2).tolist(), "codes": codes.ravel().tolist(),
                    "sids": ["_".join(map(str, c)) for c in codes.tolist()],
                    "nn": rng.integers(0, n, (n, 5)).ravel().tolist(), "k_nn": 5},
        "decoder": {"epochs": [], "evals": [], "eval": None}, "created": "now",
    }


def test_a_50k_catalog_never_gets_a_node_per_product(tmp_path):
    """The page's DOM stays small for 50,000 products: the tree shows only what is opened, search at most 20."""
    payload = _synthetic_payload(50_000, [128, 256, 512, 1024])
    path = tmp_path / "index.html"
    path.write_text(render_report(payload, "synthetic"))
    assert path.stat().st_size < 10e6
    codes = np.asarray(payload["catalog"]["codes"]).reshape(-1, 4)
    with chrome() as driver:
        driver.get(path.as_uri())
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
        assert driver.execute_script("return document.body.dataset.ready") == "1"
        roots = driver.find_elements("css selector", "#tree > li.node")
        assert len(roots) == 128
        biggest = max(roots, key=lambda r: int(r.get_attribute("data-size")))
        biggest.find_element("css selector", "button").click()
        first = int(biggest.get_attribute("data-prefix"))
        kids = biggest.find_elements("css selector", ":scope > ul > li.node")
        assert len(kids) == len(np.unique(codes[codes[:, 0] == first, 1]))
        box = driver.find_element("id", "search-input")
        box.send_keys("product 1")
        wait_for(driver, lambda d: len(d.find_elements("css selector", "#search-results li[data-item]")) == 20)
        assert driver.find_elements("css selector", "#search-results b") == []  # names are text
        assert driver.execute_script("return document.getElementsByTagName('*').length") < 5_000
        prefix = codes[25_000, :2]  # a SID prefix typed in: the products under it, counted
        box.clear()
        box.send_keys("_".join(map(str, prefix)))
        under = int(((codes[:, 0] == prefix[0]) & (codes[:, 1] == prefix[1])).sum())
        typed = "_".join(map(str, prefix))
        expected = f"{under:,} products under {typed}"
        wait_for(driver, lambda d: d.find_element("id", "search-count").text in (expected, expected + ", first 20 shown"))
        shown = driver.find_elements("css selector", "#search-results li[data-item] .sid")
        assert len(shown) == min(under, 20) and all(e.text.startswith("_".join(map(str, prefix)) + "_") for e in shown)
