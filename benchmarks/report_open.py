"""How fast the HTML report of a run opens in headless Chromium, and how big it is (a benchmark, not a test).

Writes the report of ``--run`` (unless ``--html`` names one already written), then opens it ``--repeats``
times from disk, each in a fresh browser (then once more in the same one), and reads the page's own clock: milliseconds from navigation start until the
data is unpacked, the plots drawn and the tree and search ready (``document.body.dataset.readyMs``). Also
times expanding the largest first-level prefix and one product search.

    PYTHONPATH=. .venv/bin/python benchmarks/report_open.py --run runs/instacart --out /tmp/report
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser helper of the tests

from browser import chrome, wait_for  # noqa: E402


def open_once(driver, page: Path) -> int | None:
    """Load ``page`` and return the page's own ms from navigation start to ready (None if it failed)."""
    driver.get("about:blank")
    driver.get(page.resolve().as_uri())
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready"), timeout=120)
    if driver.execute_script("return document.body.dataset.ready") != "1":
        print("the page failed:", driver.find_element("id", "report-error").text)
        return None
    return int(driver.execute_script("return document.body.dataset.readyMs"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="run folder to report on")
    p.add_argument("--out", default="/tmp/genrec-report", help="folder for index.html")
    p.add_argument("--html", default=None, help="an existing report to open instead of writing one")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--search", default="cheese", help="text typed into the product search")
    args = p.parse_args(argv)
    if args.html:
        page = Path(args.html)
    else:
        from genrec.report import write_report

        start = time.perf_counter()
        page = write_report(Path(args.run), Path(args.out))
        print(f"wrote {page} in {time.perf_counter() - start:.1f}s")
    print(f"size {page.stat().st_size / 1e6:.2f} MB")
    cold, warm = [], []
    for _ in range(args.repeats):  # a fresh browser (empty profile, no code cache) per cold open
        with chrome() as driver:
            cold.append(open_once(driver, page))
            if cold[-1] is None:
                return 1
            warm.append(open_once(driver, page))  # the same tab again: V8's code cache now warm
    with chrome() as driver:
        open_once(driver, page)
        expand = driver.execute_script("""
            const nodes = [...document.querySelectorAll('#tree > li.node')];
            const big = nodes.reduce((a, b) => (+a.dataset.size >= +b.dataset.size ? a : b));
            const t = performance.now(); big.querySelector('button').click();
            return [performance.now() - t, big.querySelectorAll(':scope > ul > li.node').length, +big.dataset.size];""")
        search = driver.execute_script("""
            const box = document.getElementById('search-input'); box.value = arguments[0];
            const t = performance.now(); box.dispatchEvent(new Event('input'));
            return [performance.now() - t, document.querySelectorAll('#search-results li[data-item]').length];""",
                                       args.search)
        nodes = driver.execute_script("return document.getElementsByTagName('*').length")
    print(f"open, fresh browser (navigation start -> ready, ms): {cold}; median {statistics.median(cold):.0f}")
    print(f"open again, same browser (ms): {warm}; median {statistics.median(warm):.0f}")
    print(f"expand the largest first-level prefix ({expand[2]:,} products -> {expand[1]} children): {expand[0]:.0f} ms")
    print(f"search {args.search!r}: {search[1]} hits shown in {search[0]:.0f} ms; DOM elements on the page: {nodes:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
