"""Headless Chromium for the browser tests, driven by Selenium through the OS's chromedriver (Debian:
``apt-get install chromium chromium-driver``; ``.ci/run`` installs both). ``chrome()`` skips the test with the
reason when no browser or driver is installed; pages are only ever loaded from disk or 127.0.0.1."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WAIT_S = 30  # upper bound of any wait for the page; the tests never sleep


def browser_paths() -> tuple[str, str] | None:
    """(browser, chromedriver) executables found on PATH, or None."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def chrome(width: int = 1280, height: int = 1000) -> Iterator["object"]:
    """A headless Chromium WebDriver, closed on exit."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        pytest.skip("no Chromium + chromedriver on PATH (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = WAIT_S):
    """WebDriverWait(driver, timeout).until(condition): polls the page, never sleeps a fixed time. An element
    the page re-rendered between finding and reading it (stale) counts as "not yet": the next poll finds the
    new one."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def screenshot(driver, path: Path) -> Path:
    """Save a PNG of the page and check it is one; with ``$GENREC_SCREENSHOT_DIR`` set, also copy it there
    (how the pictures in docs/report.md are made: ``GENREC_SCREENSHOT_DIR=docs pytest tests/browser``)."""
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("GENREC_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["GENREC_SCREENSHOT_DIR"]) / path.name)
    return path


@contextmanager
def serve_app(app, start_timeout_s: float = 30.0) -> Iterator[str]:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a thread; yields the base URL, stops on exit."""
    import socket
    import threading

    import uvicorn

    from genrec.serve.runner import SignalledServer

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = SignalledServer(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    server.wait_started(start_timeout_s, "server")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
