"""genrec review: decisions in SQLite survive a restart and a new codebook (for unchanged cases), concurrent
reviewers lose nothing, bad input is a JSON 4xx, and in Chromium three cases marked before a restart are
still marked after it."""
from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.browser import chrome, screenshot, serve_app, wait_for
from genrec.cli import main as cli
from genrec.review import Decision, ReviewError, ReviewStore, create_review_app, open_review
from semid.audit import AUDIT_SCHEMA

EVIL = '<img src=x onerror="window.__xss=1">Cheese &amp; <b>bold</b>'


def _audit(rows: list[tuple[int, str, str]]) -> pa.Table:
    """An audit table of (item_id, label, majority_label) rows, ranked as given."""
    return pa.table({
        "item_id": [r[0] for r in rows], "title": [EVIL if r[0] == 3 else f"product {r[0]}" for r in rows],
        "label": [r[1] for r in rows],
        "majority_label": [r[2] for r in rows], "confidence": [0.9 - 0.01 * i for i in range(len(rows))],
        "n_neighbours": [7] * len(rows), "example_neighbours": [["a", "b"]] * len(rows),
        "sid": [f"1_{r[0]}_0" for r in rows], "depth": [2] * len(rows)}, schema=AUDIT_SCHEMA)


@pytest.fixture
def store(tmp_path) -> ReviewStore:
    s = ReviewStore(tmp_path / "review.sqlite")
    s.load_audit(_audit([(i, "dairy > milk", "snacks > chips") for i in range(1, 41)]), "v1")
    return s


def test_decisions_persist_and_follow_unchanged_cases(store, tmp_path):
    store.decide(1, Decision("label_wrong", proposed_category="snacks > chips", note="crisps", reviewer="ann"))
    store.decide(2, Decision("code_wrong"))
    store.decide(3, Decision("ambiguous"))
    again = ReviewStore(tmp_path / "review.sqlite")  # a restart: a new store on the same file
    assert [c["decision"]["decision"] for c in again.cases(0, 3)["cases"]] == ["label_wrong", "code_wrong", "ambiguous"]
    assert again.case(1)["decision"] | {"decided_at": 0} == {
        "decision": "label_wrong", "proposed_category": "snacks > chips", "note": "crisps", "reviewer": "ann",
        "decided_at": 0, "version": 1}
    # a new codebook: product 1's case is unchanged, 2's majority label changed, 3 left the queue
    summary = again.load_audit(_audit([(1, "dairy > milk", "snacks > chips"), (2, "dairy > milk", "bakery > bread"),
                                       (4, "dairy > milk", "snacks > chips")]), "v2")
    assert summary == {"cases": 3, "decisions_current": 1, "decisions_stale": 2}
    assert again.case(1)["decision"]["decision"] == "label_wrong"
    assert again.case(2)["decision"] is None and again.cases(status="open")["total"] == 2
    table = again.export()
    assert table.column("item_id").to_pylist() == [1, 2, 3]
    assert table.column("current").to_pylist() == [True, False, False]
    assert table.column("decision").to_pylist() == ["label_wrong", "code_wrong", "ambiguous"]


def test_export_command(store, tmp_path, capsys):
    store.decide(5, Decision("code_wrong", note="x"))
    assert cli(["review", "export", "--db", str(store.path), "--out", str(tmp_path / "out.parquet")]) == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 1 and table.column("note").to_pylist() == ["x"]
    assert "1 decisions (1 on the current queue)" in capsys.readouterr().out
    assert cli(["review", "export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "o.parquet")]) == 2
    assert cli(["review"]) == 2 and "give --run RUN" in capsys.readouterr().err
    assert cli(["review", "--run", str(tmp_path / "no-run")]) == 2 and not (tmp_path / "no-run").exists()


def test_store_refuses_bad_decisions(store):
    for item, decision, code in [(999, Decision("ambiguous"), "unknown_item"), (1, Decision("wrong"), "unknown_decision"),
                                 (1, Decision("ambiguous", note="x" * 2001), "note_too_long"),
                                 (1, Decision("label_wrong"), "category_required")]:
        with pytest.raises(ReviewError) as e:
            store.decide(item, decision)
        assert e.value.code == code
    assert store.log() == []


def test_concurrent_reviewers_lose_nothing(store):
    """Two reviewers write at once through the HTTP app (threads of the server's pool): every decision on
    a different product lands; on the same product the one who saw a stale version is refused, not lost."""
    with serve_app(create_review_app(store)) as url:
        def reviewer(items: range, name: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in items:
                    r = c.put(f"/api/cases/{i}/decision", json={"decision": "ambiguous", "reviewer": name})
                    assert r.status_code == 200, r.text
        threads = [threading.Thread(target=reviewer, args=(range(k, 41, 2), f"r{k}")) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with httpx.Client(base_url=url, timeout=30) as c:
            first = c.put("/api/cases/7/decision", json={"decision": "code_wrong", "base_version": 1})
            second = c.put("/api/cases/7/decision", json={"decision": "ambiguous", "base_version": 1})
            assert first.status_code == 200 and first.json()["decision"]["version"] == 2
            assert second.status_code == 409 and second.json()["error"] == "conflict"
            assert c.get("/api/cases/7").json()["decision"]["decision"] == "code_wrong"
    assert store.cases(status="decided")["total"] == 40
    assert {r["reviewer"] for r in store.log()} == {"r1", "r2", ""} and len(store.log()) == 41


def test_bad_input_gets_json_4xx(store):
    with serve_app(create_review_app(store)) as url, httpx.Client(base_url=url, timeout=30) as c:
        cases = [
            (c.put("/api/cases/12345/decision", json={"decision": "ambiguous"}), 404, "unknown_item"),
            (c.get("/api/cases/12345"), 404, "unknown_item"),
            (c.put("/api/cases/1/decision", json={"decision": "delete"}), 422, "unknown_decision"),
            (c.put("/api/cases/1/decision", json={"decision": "ambiguous", "note": "n" * 5000}), 422, "note_too_long"),
            (c.put("/api/cases/1/decision", content=b'{"decision": ', headers={"content-type": "application/json"}),
             400, "malformed_json"),
            (c.put("/api/cases/1/decision", json={"decision": "ambiguous", "extra": 1}), 422, "invalid_request"),
            (c.put("/api/cases/1/decision", json={"decision": 3}), 422, "invalid_request"),
            (c.put("/api/cases/1/decision", json=["ambiguous"]), 422, "invalid_request"),
            (c.put("/api/cases/abc/decision", json={"decision": "ambiguous"}), 422, "invalid_request"),
            (c.put("/api/cases/99999999999999999999/decision", json={"decision": "ambiguous"}), 422, "invalid_request"),
            (c.get("/api/cases", params={"limit": 0}), 422, "invalid_request"),
            (c.get("/api/cases", params={"status": "x"}), 422, "invalid_request"),
            (c.get("/nowhere"), 404, "not_found"),
            (c.post("/api/cases/1/decision", json={"decision": "ambiguous"}), 405, "method_not_allowed"),
        ]
        for response, status, code in cases:
            assert (response.status_code, response.json()["error"]) == (status, code), response.text
            assert response.json()["message"]
    assert store.log() == []


def test_review_in_chromium_survives_restart(tiny_run, tmp_path):
    root, _ = tiny_run
    store, summary = open_review(root / "run", tmp_path / "review.sqlite")
    assert summary["cases"] >= 3 and summary["decisions_current"] == 0
    with chrome(width=1200, height=1100) as driver:
        with serve_app(create_review_app(store)) as url:
            driver.get(url + "/")
            wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
            cards = driver.find_elements("css selector", "article.case")
            assert len(cards) == min(25, summary["cases"])
            marked = {}
            for card, decision in zip(cards[:3], ["label_wrong", "code_wrong", "ambiguous"]):
                if decision == "label_wrong":
                    box = card.find_element("css selector", "input.category")
                    box.clear()
                    box.send_keys("pantry > spreads")
                card.find_element("css selector", "textarea.note").send_keys(f"checked {decision}")
                card.find_element("css selector", f"button[data-decision={decision}]").click()
                marked[card.get_attribute("data-item")] = decision
            for item, decision in marked.items():
                wait_for(driver, lambda d: d.find_element("css selector", f'article[data-item="{item}"]')
                         .get_attribute("data-decision") == decision)
            screenshot(driver, tmp_path / "review-before.png")
        store = ReviewStore(tmp_path / "review.sqlite")  # the server is gone; a new one opens the same file
        with serve_app(create_review_app(store)) as url:
            driver.get(url + "/")
            wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
            shown = {a.get_attribute("data-item"): a for a in driver.find_elements("css selector", "article.case")}
            for item, decision in marked.items():
                assert shown[item].get_attribute("data-decision") == decision
            assert "label wrong \u2192 pantry > spreads" in shown[next(iter(marked))].find_element(
                "css selector", ".status").text
            assert sum(a.get_attribute("data-decision") != "" for a in shown.values()) == 3
            assert "3 decided" in driver.find_element("id", "summary").text
            screenshot(driver, tmp_path / "review.png")
    notes = {r["item_id"]: r["note"] for r in store.log()}
    assert sorted(notes.values()) == ["checked ambiguous", "checked code_wrong", "checked label_wrong"]


def test_two_tabs_never_lose_a_decision(store, tmp_path):
    """Two tabs loaded the same page: each marks a different case, then the second marks the case the first
    already decided. Both first decisions land; the stale one is refused with the fresh case shown, and a
    retry on the fresh case goes through."""
    with chrome() as driver, serve_app(create_review_app(store)) as url:
        driver.get(url + "/")
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(url + "/")
        wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"))
        second = driver.current_window_handle

        def mark(tab: str, item: int, decision: str) -> object:
            driver.switch_to.window(tab)
            card = driver.find_element("css selector", f'article[data-item="{item}"]')
            card.find_element("css selector", f"button[data-decision={decision}]").click()
            return card

        mark(first, 1, "code_wrong")
        wait_for(driver, lambda d: d.find_element("css selector", 'article[data-item="1"]').get_attribute("data-decision"))
        mark(second, 2, "ambiguous")
        wait_for(driver, lambda d: d.find_element("css selector", 'article[data-item="2"]').get_attribute("data-decision"))
        mark(second, 1, "ambiguous")  # this tab still shows case 1 open
        # read the re-rendered card in one script, so a later re-render cannot leave a stale handle between reads
        decision, error = wait_for(driver, lambda d: d.execute_script(
            "const c = document.querySelector('article[data-item=\"1\"]');"
            "const e = c && c.querySelector('.error');"
            "return c && c.dataset.decision && e && e.textContent ? [c.dataset.decision, e.textContent] : false;"))
        assert decision == "code_wrong"  # the other tab's decision, reloaded
        assert "decided by someone else" in error
        assert store.case(1)["decision"]["decision"] == "code_wrong"
        mark(second, 1, "ambiguous")  # decided again, knowingly, on the fresh case
        wait_for(driver, lambda d: d.find_element("css selector", 'article[data-item="1"]')
                 .get_attribute("data-decision") == "ambiguous")
        title = driver.find_element("css selector", 'article[data-item="3"] h3').get_attribute("textContent")
        assert title == f"#3  {EVIL}" and driver.execute_script("return window.__xss") is None  # shown as text
        assert driver.find_elements("css selector", "article img, article b") == []
        screenshot(driver, tmp_path / "two-tabs.png")
    assert [(r["item_id"], r["decision"]) for r in store.log()] == [(1, "code_wrong"), (2, "ambiguous"), (1, "ambiguous")]
