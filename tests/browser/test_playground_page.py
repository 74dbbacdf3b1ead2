"""The playground page of genrec serve in headless Chromium: search and add two products, retrieve, open a
result's substitutes; a product name holding HTML renders as text. (Its routes: ``tests/unit/test_playground.py``.)"""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from genrec.serve import ServerThread, ServeSettings, create_app
from helpers.browser import chrome, screenshot, wait_for
from helpers.pages import PLAYGROUND_EVIL, playground_run
from index.retailer_index import RetailerIndex


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """The playground's run (a product named in HTML) and a server of it."""
    run = playground_run(tiny_run[0], tmp_path_factory.mktemp("playground") / "run")
    with ServerThread(create_app(run, ServeSettings(log_level="warning"))) as srv:
        yield run, srv


def test_playground_in_chromium(served, tmp_path):
    run, server = served
    items = pq.read_table(run / "items.parquet")
    ids, titles = items.column("item_id"), items.column("title")
    picks = [(PLAYGROUND_EVIL, ids[0].as_py()), (titles[5].as_py(), ids[5].as_py())]
    with chrome(width=1300, height=1000) as driver:
        driver.get(server.url + "/")
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
        options = [o.get_attribute("value") for o in driver.find_elements("css selector", "#retailer option")]
        assert options == ["", "0", "1"]
        for query, item in (("Evil Cheese", picks[0][1]), (picks[1][0], picks[1][1])):
            box = driver.find_element("id", "q")
            box.clear()
            box.send_keys(query)
            driver.find_element("id", "search").click()
            hit = wait_for(driver, lambda d: d.find_elements("css selector", f'#search-results li[data-item="{item}"] button.add'))
            hit[0].click()
        history = driver.find_elements("css selector", "#history li")
        assert [int(h.get_attribute("data-item")) for h in history] == [item for _, item in picks]
        assert history[0].find_element("css selector", ".name").text == PLAYGROUND_EVIL  # the markup shown as text
        assert driver.execute_script("return window.__xss") is None
        assert driver.find_elements("css selector", "#history img, #search-results img") == []
        driver.find_element("css selector", "#retailer option[value='1']").click()
        k = driver.find_element("id", "k")
        k.clear()
        k.send_keys("6")
        driver.find_element("id", "retrieve").click()
        rows = wait_for(driver, lambda d: d.find_elements("css selector", "#results tbody tr"))
        assert len(rows) == 6 and driver.find_element("id", "error").text == ""
        stocked = set(RetailerIndex.load(run / "index").stocked(1).tolist())
        shown = [int(r.get_attribute("data-item")) for r in rows]
        assert set(shown) <= stocked
        assert all(r.find_element("css selector", ".name").text for r in rows)  # names, not bare ids
        assert all(r.find_element("css selector", ".source").text for r in rows)  # which source proposed it
        rows[0].find_element("css selector", "button.subs").click()
        subs = wait_for(driver, lambda d: d.find_elements("css selector", "#substitutes-table tbody tr"))
        assert len(subs) == 8 and {int(s.get_attribute("data-item")) for s in subs} <= stocked
        screenshot(driver, tmp_path / "playground.png")
