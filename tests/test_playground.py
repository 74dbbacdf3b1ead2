"""The playground of genrec serve: the substitutes and catalog routes over real HTTP (JSON 4xx, API key), and
the page in headless Chromium: search and add two products, retrieve, open a result's substitutes; a product
name holding HTML renders as text."""
from __future__ import annotations

import os
import shutil

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers.browser import chrome, screenshot, wait_for
from genrec.serve import ServerThread, ServeSettings, create_app
from index.retailer_index import RetailerIndex

EVIL = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>Evil Cheese'
KEY_ENV = "GENREC_PLAYGROUND_TEST_KEY"


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """The tiny run with one product renamed to a name holding HTML and script."""
    dest = tmp_path_factory.mktemp("playground") / "run"
    shutil.copytree(tiny_run[0] / "run", dest)
    items = pq.read_table(dest / "items.parquet")
    titles = items.column("title").to_pylist()
    titles[0] = EVIL
    pq.write_table(items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles)),
                   dest / "items.parquet")
    return dest


@pytest.fixture(scope="module")
def server(run):
    with ServerThread(create_app(run, ServeSettings(log_level="warning"))) as srv:
        yield srv


def test_substitutes_route(server, run):
    index = RetailerIndex.load(run / "index")
    stocked = set(index.stocked(0).tolist())
    item = min(stocked)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get(f"/v1/items/{item}/substitutes", params={"k": 6, "retailer_id": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["item_id"] == item and len(body["items"]) == 6
        assert all(s["item_id"] in stocked and s["item_id"] != item for s in body["items"])
        levels = [s["shared_levels"] for s in body["items"]]
        assert levels == sorted(levels, reverse=True)
        whole = c.get(f"/v1/items/{item}/substitutes", params={"k": 6}).json()["items"]
        assert [s["shared_levels"] for s in whole] >= levels  # the whole catalog offers at least as close ones
        for path, params, status, code in [
            ("/v1/items/999999/substitutes", {}, 404, "unknown_item"),
            (f"/v1/items/{item}/substitutes", {"retailer_id": 77}, 422, "unknown_retailer"),
            (f"/v1/items/{item}/substitutes", {"k": 0}, 422, "invalid_request"),
            (f"/v1/items/{item}/substitutes", {"k": "x"}, 422, "invalid_request"),
            ("/v1/items/abc/substitutes", {}, 422, "invalid_request"),
            ("/v1/catalog/search", {}, 422, "invalid_request"),
            ("/v1/catalog/search", {"q": "a", "limit": 500}, 422, "invalid_request"),
        ]:
            r = c.get(path, params=params)
            assert (r.status_code, r.json()["error"]) == (status, code), (path, params, r.text)
        found = c.get("/v1/catalog/search", params={"q": "evil cheese"}).json()["items"]
        assert [p["title"] for p in found] == [EVIL]
        named = c.get("/v1/catalog/items", params=[("ids", item), ("ids", 999999)]).json()
        assert [p["item_id"] for p in named["items"]] == [item] and named["unknown"] == [999999]


def test_api_key_guards_the_playground_routes(run):
    os.environ[KEY_ENV] = "k-123"
    try:
        settings = ServeSettings(log_level="warning", api_key_env=KEY_ENV)
        with ServerThread(create_app(run, settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/v1/catalog/search", params={"q": "a"}).status_code == 401
            assert c.get("/v1/items/1/substitutes").status_code == 401
            page = c.get("/")  # the page holds no secret: it loads, its API calls need the key
            assert page.status_code == 200 and "k-123" not in page.text
            ok = c.get("/v1/catalog/search", params={"q": "a"}, headers={"Authorization": "Bearer k-123"})
            assert ok.status_code == 200 and ok.json()["items"]
    finally:
        os.environ.pop(KEY_ENV, None)


def test_playground_in_chromium(server, run, tmp_path):
    items = pq.read_table(run / "items.parquet")
    picks = [(EVIL, items.column("item_id")[0].as_py()), (items.column("title")[5].as_py(), items.column("item_id")[5].as_py())]
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
        assert history[0].find_element("css selector", ".name").text == EVIL  # the markup shown as text
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


def test_openapi_lists_the_playground_routes(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        spec = c.get("/openapi.json").json()
    subs = spec["paths"]["/v1/items/{item_id}/substitutes"]["get"]
    assert {"200", "404", "422"} <= set(subs["responses"])
    assert "shared_levels" in spec["components"]["schemas"]["Substitute"]["properties"]
    assert "/" not in spec["paths"]  # the page is not part of the API
