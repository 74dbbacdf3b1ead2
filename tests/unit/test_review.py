"""genrec review: decisions in SQLite survive a restart and a new codebook (for unchanged cases), concurrent
reviewers lose nothing, bad input is a JSON 4xx. (The page in headless Chromium:
``tests/browser/test_review_page.py``.)"""
from __future__ import annotations

import threading

import httpx
import pyarrow.parquet as pq
import pytest

from genrec.cli import main as cli
from genrec.review import Decision, ReviewError, ReviewStore, create_review_app
from helpers.browser import serve_app
from helpers.pages import review_audit, review_store

@pytest.fixture
def store(tmp_path) -> ReviewStore:
    return review_store(tmp_path / "review.sqlite")


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
    summary = again.load_audit(review_audit([(1, "dairy > milk", "snacks > chips"),
                                             (2, "dairy > milk", "bakery > bread"),
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
