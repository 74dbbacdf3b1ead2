"""``genrec report``: the run folder as one self-contained HTML file that opens from disk with no network and
no server. Plots are drawn by Plotly (its JavaScript bundle ships inside the ``plotly`` wheel and is inlined
here); the data travels gzip-compressed and base64-encoded in the page and is unpacked in the browser with
``DecompressionStream``, so a 50k-product catalog stays a few MB. The page never builds one DOM node per
product: the SID tree renders a prefix's children only when it is expanded, search shows at most 20 hits."""
from __future__ import annotations

import base64
import gzip
import html
import json
import logging
import time
from pathlib import Path

from genrec.report.data import report_payload

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
REPORT_FILE = "index.html"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genrec report: {title}</title>
<style>{css}</style>
<script>{plotly}</script>
</head><body>
<header><h1>genrec run report: {title}</h1><div class="meta" id="meta"></div></header>
<nav><a href="#health">codebook health</a><a href="#similarity">similarity &amp; taxonomy</a>
<a href="#tree-section">SID tree</a><a href="#search-section">search</a><a href="#decoder">decoder</a></nav>
<main>
<section id="health"><h2>Codebook health</h2>
<div class="figures" id="health-figures"></div>
<div class="grid"><div><table id="health-table"></table>
<p class="note">Utilisation: share of a level's codewords used by at least one product. Perplexity: exp(entropy)
of code usage (equal to the number of codewords when usage is uniform).</p></div>
<div class="plot" id="plot-level1"></div></div></section>
<section id="similarity"><h2>Similarity, taxonomy, co-purchase</h2>
<div class="figures" id="similarity-figures"></div>
<div class="grid"><div class="plot" id="plot-curve"></div><div class="plot" id="plot-cos90"></div>
<div class="plot" id="plot-taxonomy"></div><div class="plot" id="plot-copurchase"></div></div>
<p class="note">Pairs: a fixed seeded sample (each of 5,000 products with its 10 nearest neighbours, plus 50,000 random
pairs), the same sample as the Spearman figure of <code>genrec semid eval</code>.</p></section>
<section id="tree-section"><h2>SID tree</h2>
<p class="note">Click a prefix to see its children, their sizes and example products (name, category path).</p>
<ul class="tree" id="tree"></ul></section>
<section id="search-section"><h2>Find a product</h2>
<input id="search-input" type="search" placeholder="product name, item id or SID prefix (6_19_32)" autocomplete="off">
<span class="note" id="search-count"></span>
<ul id="search-results"></ul><div id="product-detail"></div></section>
<section id="decoder"><h2>Decoder</h2>
<div class="grid"><div class="plot" id="plot-loss"></div><div class="plot" id="plot-recall"></div></div>
<div class="plot" id="plot-popularity"></div>
<div id="eval-tables"></div></section>
</main>
<script type="application/octet-stream" id="report-data">{data}</script>
<script>{js}</script>
</body></html>
"""


def plotly_js() -> str:
    """The minified Plotly bundle shipped in the ``plotly`` wheel (no network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_report(payload: dict, title: str) -> str:
    """The report page for ``payload`` (see ``report_payload``)."""
    blob = gzip.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), compresslevel=9, mtime=0)
    return PAGE.format(
        title=html.escape(title), css=(STATIC / "report.css").read_text(encoding="utf-8"), plotly=plotly_js(),
        data=base64.b64encode(blob).decode("ascii"), js=(STATIC / "report.js").read_text(encoding="utf-8"),
    )


def write_report(run: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write ``out/index.html`` for the run folder ``run``; returns its path."""
    run, out = Path(run), Path(out)
    start = time.perf_counter()
    page = render_report(report_payload(run, seed=seed), run.resolve().name)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    log.info("report: %s (%.1f MB, %.1fs)", path, path.stat().st_size / 1e6, time.perf_counter() - start)
    return path
