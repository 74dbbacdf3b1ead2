"""What the pages' browser tests (``tests/browser``) share with their route and data tests (``tests/unit``): the
playground's copy of the tiny run with a product named in HTML, the report of the tiny run, and the review
queue's audit tables. Plain functions; each test module wraps them in its own fixtures."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# product names holding markup and script: the pages must show them as text
PLAYGROUND_EVIL = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>Evil Cheese'
REVIEW_EVIL = '<img src=x onerror="window.__xss=1">Cheese &amp; <b>bold</b>'


def playground_run(tiny_root: Path, dest: Path) -> Path:
    """A copy of the tiny run (``tiny_run``'s root) at ``dest`` with its first product renamed to
    ``PLAYGROUND_EVIL``."""
    shutil.copytree(tiny_root / "run", dest)
    items = pq.read_table(dest / "items.parquet")
    titles = items.column("title").to_pylist()
    titles[0] = PLAYGROUND_EVIL
    pq.write_table(items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles)),
                   dest / "items.parquet")
    return dest


def tiny_report(tiny_root: Path, out: Path) -> tuple[Path, dict]:
    """The report of a copy of the tiny run, evaluated beside the popularity baseline (``RUN/eval.json``):
    (the report's path, its payload)."""
    from genrec.evaluation.harness import evaluate
    from genrec.report import write_report
    from genrec.report.data import report_payload
    from semid.common import write_json

    run = shutil.copytree(tiny_root / "run", out / "run")
    write_json(evaluate(tiny_root / "data", run, ["popular"], seed=0), run / "eval.json")
    return write_report(run, out), report_payload(run)


def review_audit(rows: list[tuple[int, str, str]]) -> pa.Table:
    """An audit table of (item_id, label, majority_label) rows, ranked as given; product 3 is named
    ``REVIEW_EVIL``."""
    from semid.audit import AUDIT_SCHEMA

    return pa.table({
        "item_id": [r[0] for r in rows], "title": [REVIEW_EVIL if r[0] == 3 else f"product {r[0]}" for r in rows],
        "label": [r[1] for r in rows],
        "majority_label": [r[2] for r in rows], "confidence": [0.9 - 0.01 * i for i in range(len(rows))],
        "n_neighbours": [7] * len(rows), "example_neighbours": [["a", "b"]] * len(rows),
        "sid": [f"1_{r[0]}_0" for r in rows], "depth": [2] * len(rows)}, schema=AUDIT_SCHEMA)


def review_store(path: Path):
    """A review store at ``path`` holding 40 cases (products 1-40 filed under dairy > milk, their neighbours
    under snacks > chips) of codebook "v1"."""
    from genrec.review import ReviewStore

    store = ReviewStore(path)
    store.load_audit(review_audit([(i, "dairy > milk", "snacks > chips") for i in range(1, 41)]), "v1")
    return store
