"""The report page in headless Chromium, loaded from disk: no network, expand a prefix, search a product, open
it, the evaluation tables; a 50,000-product catalog keeps the page's DOM small. (Its payload and command:
``tests/unit/test_report.py``.)"""
from __future__ import annotations

import numpy as np
import pytest

from helpers.browser import chrome, screenshot, wait_for
from genrec.report.html import render_report
from helpers.pages import tiny_report


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    return tiny_report(tiny_run[0], tmp_path_factory.mktemp("report"))


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
