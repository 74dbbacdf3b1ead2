"""The playground of genrec serve: the substitutes and catalog routes over real HTTP (JSON 4xx, API key).
(The page in headless Chromium: ``tests/browser/test_playground_page.py``.)"""
from __future__ import annotations

import os

import httpx
import pytest

from genrec.serve import ServerThread, ServeSettings, create_app
from helpers.pages import PLAYGROUND_EVIL, playground_run
from index.retailer_index import RetailerIndex

KEY_ENV = "GENREC_PLAYGROUND_TEST_KEY"


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    return playground_run(tiny_run[0], tmp_path_factory.mktemp("playground") / "run")


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
        assert [p["title"] for p in found] == [PLAYGROUND_EVIL]
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


def test_openapi_lists_the_playground_routes(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        spec = c.get("/openapi.json").json()
    subs = spec["paths"]["/v1/items/{item_id}/substitutes"]["get"]
    assert {"200", "404", "422"} <= set(subs["responses"])
    assert "shared_levels" in spec["components"]["schemas"]["Substitute"]["properties"]
    assert "/" not in spec["paths"]  # the page is not part of the API
