"""Data preparation out of core on DuckDB: shoppers' training sequences and their co-purchase counts computed by
SQL over events.parquet, under a memory limit past which DuckDB spills to a temporary folder, instead of
holding the event table in memory (docs/scaling.md, "Data preparation out of core", has the measurements).

The results equal the in-memory path's (``genrec.data.copurchase``): the same order (ts, session_id,
position, then the row's place in the file, as numpy's stable sort has it), the same training part as
``make_splits`` (a shopper with three or more units loses the last two, with two the last one; a unit is a
basket for ``last_basket``, an item for ``leave_one_out``), only shoppers with two or more training items.

- ``copurchase_counts``: the symmetric count matrix of ``semid.collab.cooccurrence`` (the collaborative
  vectors' input), straight from events.parquet;
- ``connect``, ``number_sessions``, ``training_rows``, then ``write_sequences``, ``write_pair_counts`` and
  ``cooccurrence_counts`` on the same connection: the steps, for a caller that wants several outputs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from semid.common import DataError

OUT_OF_CORE_EVENTS = 20_000_000  # sequence.counts_engine auto: DuckDB from this many events on
ENGINES = ("auto", "memory", "duckdb")
FETCH_ROWS = 1 << 22  # entries of the count matrix fetched at a time


def resolve_engine(engine: str, n_events: int) -> str:
    """``auto`` -> duckdb from ``OUT_OF_CORE_EVENTS`` events on, else memory."""
    if engine not in ENGINES:
        raise DataError(f"sequence.counts_engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "duckdb" if n_events >= OUT_OF_CORE_EVENTS else "memory"
    return engine


def connect(database: str | Path, memory_limit: str = "2GB", threads: int | None = None,
            temp_dir: str | Path | None = None):
    """A DuckDB connection on a database file (tables live on disk) that spills past ``memory_limit``."""
    import duckdb

    con = duckdb.connect(str(database))
    temp = Path(temp_dir) if temp_dir is not None else Path(database).parent / "spill"
    temp.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET memory_limit = '{_quoted(memory_limit)}'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute(f"SET temp_directory = '{_quoted(str(temp))}'")
    con.execute("SET preserve_insertion_order = false")
    return con


def number_sessions(con, events_path: str | Path, split: str) -> str:
    """View ``ev`` over the events and table ``sess``: each (shopper, ts, session) with its order among the
    shopper's sessions (``unit``) and their count (``units``). Returns the split, ``auto`` resolved as
    ``resolve_split`` does (last_basket when some session holds several items)."""
    if split not in ("auto", "last_basket", "leave_one_out"):
        raise DataError(f"split must be leave_one_out, last_basket or auto, got {split!r}")
    path = _quoted(str(events_path))
    con.execute(f"""CREATE VIEW ev AS SELECT user_id, session_id, ts, item_id, position, file_row_number AS row_no
                    FROM read_parquet('{path}', file_row_number = true)""")
    con.execute("""CREATE TABLE sess AS
        SELECT user_id, ts, session_id,
               row_number() OVER (PARTITION BY user_id ORDER BY ts, session_id) AS unit,
               count(*) OVER (PARTITION BY user_id) AS units
        FROM (SELECT DISTINCT user_id, ts, session_id FROM ev)""")
    n_events = con.execute("SELECT count(*) FROM ev").fetchall()[0][0]
    if n_events == 0:
        raise DataError("events.parquet: no events")
    if split == "auto":
        n_sessions = con.execute("SELECT count(*) FROM sess").fetchall()[0][0]
        split = "last_basket" if n_sessions < n_events else "leave_one_out"
    return split


def training_rows(con, split: str, window: int) -> None:
    """Table ``tr``: every training row (user_id, item_id, pos: 1-based order in the shopper's history) with
    the next ``window`` training items b1..bW (NULL past the training part)."""
    if window < 1:
        raise DataError(f"co-purchase window must be at least 1, got {window}")
    if split == "last_basket":
        unit, units = "s.unit", "s.units"
        leads = ", ".join(f"lead(e.item_id, {d}) OVER w AS b{d}, lead(s.unit, {d}) OVER w AS u{d}"
                          for d in range(1, window + 1))
        kept = ", ".join(f"CASE WHEN u{d} <= lim THEN b{d} END AS b{d}" for d in range(1, window + 1))
    elif split == "leave_one_out":
        unit, units = "row_number() OVER w", "count(*) OVER (PARTITION BY e.user_id)"
        leads = ", ".join(f"lead(e.item_id, {d}) OVER w AS b{d}" for d in range(1, window + 1))
        kept = ", ".join(f"CASE WHEN pos + {d} <= lim THEN b{d} END AS b{d}" for d in range(1, window + 1))
    else:
        raise DataError(f"training_rows: split must be resolved (last_basket or leave_one_out), got {split!r}")
    con.execute(f"""CREATE TABLE tr AS
        SELECT user_id, item_id, pos, {kept} FROM (
            SELECT e.user_id, e.item_id, row_number() OVER w AS pos, {unit} AS unit,
                   {units} - CASE WHEN {units} >= 3 THEN 2 WHEN {units} = 2 THEN 1 ELSE 0 END AS lim,
                   {leads}
            FROM ev e JOIN sess s USING (user_id, ts, session_id)
            WINDOW w AS (PARTITION BY e.user_id ORDER BY e.ts, e.session_id, e.position, e.row_no))
        WHERE unit <= lim""")


def write_sequences(con, path: str | Path) -> None:
    """Each shopper's training sequence (user_id, items) with two or more items, as parquet."""
    con.execute(f"""COPY (SELECT user_id, list(item_id ORDER BY pos) AS items FROM tr GROUP BY user_id
                          HAVING count(*) >= 2) TO '{_quoted(str(path))}' (FORMAT parquet)""")


def write_pair_counts(con, path: str | Path, window: int) -> None:
    """Table ``pairs`` and its parquet: (d, a, b, n) = how often item b follows item a d steps later in a
    training sequence, d = 1..window (``genrec.data.copurchase.pair_counts``, in item ids)."""
    con.execute(f"CREATE TABLE pairs AS SELECT d, a, b, count(*)::BIGINT AS n FROM ({_pairs_sql(window)}) "
                "GROUP BY d, a, b")
    con.execute(f"COPY pairs TO '{_quoted(str(path))}' (FORMAT parquet)")


def cooccurrence_counts(con, item_ids: np.ndarray, window: int) -> sp.csr_matrix:
    """``semid.collab.cooccurrence`` of the training sequences: symmetric counts [n, n] over ``item_ids``
    (any order) of two different items within ``window`` positions, as a canonical CSR (float64, indices
    sorted). DuckDB sums the pairs and orders them by (row, column), so the CSR is filled without a sort."""
    item_ids = np.asarray(item_ids, np.int64)
    n = item_ids.size
    if n == 0:
        raise DataError("collab_embeddings: the catalog is empty")
    con.register("catalog_arrow", pa.table({"item_id": pa.array(item_ids),
                                            "r": pa.array(np.arange(n, dtype=np.int64))}))
    con.execute("CREATE TABLE cat AS SELECT * FROM catalog_arrow")
    con.unregister("catalog_arrow")
    missing = con.execute("""SELECT DISTINCT t.item_id FROM tr t SEMI JOIN (SELECT user_id FROM tr WHERE pos = 2)
                             USING (user_id) ANTI JOIN cat USING (item_id) ORDER BY 1 LIMIT 5""").fetchall()
    if missing:
        raise DataError(f"events.parquet: item_id values not in the catalog, e.g. {[m[0] for m in missing]}")
    con.execute(f"""CREATE TABLE half AS SELECT least(a, b) AS x, greatest(a, b) AS y, count(*)::DOUBLE AS n
                    FROM ({_pairs_sql(window)}) WHERE a <> b GROUP BY x, y""")
    con.execute("""CREATE TABLE joined AS SELECT ca.r AS ra, cb.r AS rb, h.n FROM half h
                   JOIN cat ca ON h.x = ca.item_id JOIN cat cb ON h.y = cb.item_id""")
    nnz = 2 * con.execute("SELECT count(*) FROM joined").fetchall()[0][0]
    index_type = np.int32 if n < 2**31 else np.int64
    rows, indices = np.empty(nnz, index_type), np.empty(nnz, index_type)
    data = np.empty(nnz, np.float64)
    at, ordered = 0, True
    # con.sql, not con.execute: a DB-API result's arrow reader can hand the batches over out of order
    for batch in con.sql("SELECT ra, rb, n FROM joined UNION ALL SELECT rb, ra, n FROM joined "
                         "ORDER BY 1, 2").to_arrow_reader(FETCH_ROWS):
        k = batch.num_rows
        rows[at:at + k] = batch.column(0).to_numpy()
        indices[at:at + k] = batch.column(1).to_numpy()
        data[at:at + k] = batch.column(2).to_numpy()
        r, c = rows[max(at - 1, 0):at + k], indices[max(at - 1, 0):at + k]  # the batch and the row before it
        ordered = ordered and bool(np.all((r[1:] > r[:-1]) | ((r[1:] == r[:-1]) & (c[1:] > c[:-1]))))
        at += k
    if at != nnz:
        raise DataError(f"cooccurrence_counts: fetched {at} of {nnz} entries")
    if not ordered:  # never seen; a sort keeps the result right should DuckDB hand rows over out of order
        return sp.coo_matrix((data, (rows, indices)), shape=(n, n)).tocsr()
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]
    del rows
    out = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    out.has_sorted_indices = True
    return out


def copurchase_counts(events_path: str | Path, item_ids: np.ndarray, split: str, window: int,
                      memory_limit: str = "2GB", threads: int | None = None,
                      temp_dir: str | Path | None = None) -> sp.csr_matrix:
    """``cooccurrence(training_sequences(events))`` computed out of core from ``events_path``: the database
    and its spill live in a temporary folder (under ``temp_dir``, else the system's), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="genrec-duckdb-", dir=temp_dir) as tmp:
        con = connect(Path(tmp) / "prep.duckdb", memory_limit, threads)
        try:
            training_rows(con, number_sessions(con, events_path, split), window)
            return cooccurrence_counts(con, item_ids, window)
        finally:
            con.close()


def _pairs_sql(window: int) -> str:
    """(d, a, b) of every training pair d steps apart, d = 1..window."""
    return " UNION ALL ".join(f"SELECT {d}::TINYINT AS d, item_id AS a, b{d} AS b FROM tr WHERE b{d} IS NOT NULL"
                              for d in range(1, int(window) + 1))


def _quoted(text: str) -> str:
    """``text`` inside a single-quoted SQL string."""
    return str(text).replace("'", "''")
