"""The review queue's page in headless Chromium: three cases marked before a restart are still marked after it,
and two tabs never lose a decision. (The store and its routes: ``tests/unit/test_review.py``.)"""
from __future__ import annotations

import pytest

from genrec.review import ReviewStore, create_review_app, open_review
from helpers.browser import chrome, screenshot, serve_app, wait_for
from helpers.pages import REVIEW_EVIL, review_store


@pytest.fixture
def store(tmp_path) -> ReviewStore:
    return review_store(tmp_path / "review.sqlite")


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
        assert title == f"#3  {REVIEW_EVIL}" and driver.execute_script("return window.__xss") is None  # shown as text
        assert driver.find_elements("css selector", "article img, article b") == []
        screenshot(driver, tmp_path / "two-tabs.png")
    assert [(r["item_id"], r["decision"]) for r in store.log()] == [(1, "code_wrong"), (2, "ambiguous"), (1, "ambiguous")]
