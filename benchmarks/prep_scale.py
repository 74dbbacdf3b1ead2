"""Data preparation in memory against out of core: shopper sequences, co-purchase counts and SID assignment on a
generated catalog (``genrec data synth --scale``), each engine in its own process, side by side.

For each events folder (``--data``, a dataset folder with events.parquet) three engines compute the same things:

- ``memory``: today's path. ``pq.read_table`` of events.parquet (conformed as ``read_dataset`` does; the items
  and assortment it also reads are left out), ``split_events`` as ``genrec train`` does (the decoder's
  ``max_items``), ``training_sequences`` as the SID stage's collaborative part does, then the co-purchase
  counts of both consumers: ``semid.collab.cooccurrence`` (symmetric, window ``--window``, the collaborative
  vectors' input) and ``genrec.data.copurchase.pair_counts`` (directed, per distance, the co-purchase memory's).
- ``arrow``: pyarrow datasets and numpy, out of core by hash partitioning. The events are scanned in batches
  and written into buckets by a hash of the shopper (each bucket a parquet file holding whole shoppers, about
  ``--bucket-events`` rows); each bucket is cut into training sequences by the project's own code
  (``training_sequences``), its directed pair counts (distance, a, b) aggregated and written as partial counts
  into pair partitions by the range of a; each partition is then summed (the reduce) into pairs.parquet.
- ``duckdb``: the steps of ``genrec.data.outofcore``, SQL over the parquet file in a database file under
  ``--memory-limit``, spilling to a temp_directory past it: the sessions numbered per shopper, one window pass
  over the events (order, next items) keeping the training rows, sequences (``list`` per shopper) and pair
  counts (GROUP BY) written with COPY, then the co-occurrence counts summed and ordered by DuckDB.

Both out-of-core engines write the same two files (sequences: user_id, items; pairs: d, a, b, n) and end with
``counts csr``, the symmetric count matrix the collaborative vectors' SVD takes (what ``cooccurrence``
returns): arrow reads pairs.parquet in batches into it (scipy sums and sorts), DuckDB fills it from its
ordered rows. Checks, against the memory engine when it ran, else between the others: order-free digests of
the pair counts, of every training sequence and of the count matrix, and the exact sequences of a sample of
shoppers (a hash of the id, about 1 in 101).

``--sid`` measures SID assignment of the catalog's embeddings.parquet: a small RQ-VAE trained on a sample
(``--sid-sample`` products read in batches, ``--sid-epochs``), then ``SemIDModel.encode`` over every product
in batches of ``--sid-batch``, once after ``read_embeddings`` of the whole file (today) and once streamed with
``ParquetFile.iter_batches``; the codes must be identical.

Each stage's peak resident memory is the process's VmHWM with the peak reset (/proc/self/clear_refs, 5) as
the stage starts, so it includes what earlier stages still hold, as in the real pipeline. One JSON per events
folder (and one for SIDs) in ``--out``; a table at the end (``--table`` prints it again from JSONs).

    genrec data synth --scale --products 5000000 --events 20000000 --out /root/work/prep/world-20000000  # etc.
    .venv/bin/python benchmarks/prep_scale.py --data /root/work/prep/world-2000000 /root/work/prep/world-20000000
    .venv/bin/python benchmarks/prep_scale.py --data /root/work/prep/world-100000000 --engines arrow,duckdb
    .venv/bin/python benchmarks/prep_scale.py --data /root/work/prep/world-2000000 /root/work/prep/world-20000000 \\
        --engines collab-memory,collab-duckdb
    .venv/bin/python benchmarks/prep_scale.py --sid --catalog work/scale-data/scale-5000000
    .venv/bin/python benchmarks/prep_scale.py --pair-stats --data /root/work/prep/world-{2,20,100}000000
    .venv/bin/python benchmarks/prep_scale.py --table benchmarks/results/2026-12-07-prep-scale/prep-*.json

``--engines collab-memory,collab-duckdb`` time the SID stage's co-purchase counts as the product computes them
(``sequence.counts_engine`` memory and duckdb: ``read_events`` + ``training_sequences`` + ``cooccurrence``,
against ``genrec.data.outofcore.copurchase_counts``), one stage each. ``--pair-stats`` (not timed) counts the
co-occurrence matrix's pairs by how often they occur and the products with any co-purchase.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("memory", "arrow", "duckdb")  # the default; also collab-memory, collab-duckdb (the product's counts)
COLS = ["user_id", "session_id", "ts", "item_id", "position"]
SAMPLE_MOD = 101  # shoppers whose id hashes to 0 mod this are compared sequence by sequence
MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
np.seterr(over="ignore")


# ----- measuring -------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "pyarrow": pa.__version__, "numpy": np.__version__}


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0


class Stages:
    """Wall time and peak RSS per stage: VmHWM is reset as a stage starts (clear_refs 5)."""

    def __init__(self, dump: Path | None = None) -> None:
        self.rows: list[dict] = []
        self.dump = dump  # the rows so far are written here after each stage (kept if a later step dies)

    def run(self, name: str, fn, *a, **kw):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            reset = True
        except OSError:
            reset = False
        start = time.perf_counter()
        out = fn(*a, **kw)
        self.rows.append({"stage": name, "wall_s": round(time.perf_counter() - start, 3),
                          "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
                          "rss_after_mb": round(_status_kb("VmRSS") / 1024, 1), "peak_reset": reset})
        if self.dump is not None:
            self.dump.write_text(json.dumps({"partial": True, "stages": self.rows}))
        return out


# ----- digests (order-free, so engines that emit rows in any order compare) ------------------------------------


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64."""
    z = np.asarray(x).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hash(*cols: np.ndarray) -> np.ndarray:
    h = np.zeros(np.shape(cols[0]), np.uint64)
    for c in cols:
        h = mix64(h ^ np.asarray(c).astype(np.int64).astype(np.uint64))
    return h


class Digest:
    """Sum (mod 2^64) of row hashes, rows and a total: equal multisets of rows give equal digests."""

    def __init__(self) -> None:
        self.h, self.rows, self.total = 0, 0, 0

    def add(self, *cols: np.ndarray, total: np.ndarray | None = None) -> None:
        self.h = (self.h + int(row_hash(*cols).sum(dtype=np.uint64))) & 0xFFFFFFFFFFFFFFFF
        self.rows += int(np.size(cols[0]))
        if total is not None:
            self.total += int(np.asarray(total).sum())

    def as_dict(self) -> dict:
        return {"digest": f"{self.h:016x}", "rows": self.rows, "total": self.total}


def sampled(users: np.ndarray) -> np.ndarray:
    return (mix64(users) % np.uint64(SAMPLE_MOD)) == 0


def sequences_check(users: np.ndarray, offsets: np.ndarray, items: np.ndarray, digest: Digest, sample: dict) -> None:
    """Fold ragged training sequences into the digest (user, position, item) and the sampled shoppers' lists."""
    lengths = np.diff(offsets)
    owner = np.repeat(users, lengths)
    pos = np.arange(items.size) - np.repeat(offsets[:-1], lengths)
    digest.add(owner, pos, items, total=lengths)
    for u in np.flatnonzero(sampled(users)):
        sample[str(int(users[u]))] = items[offsets[u]:offsets[u + 1]].tolist()


def csr_digest(m) -> dict:
    d = Digest()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    d.add(rows, m.indices, np.rint(m.data), total=m.data)
    return {**d.as_dict(), "nnz": int(m.nnz)}


# ----- shared pieces ---------------------------------------------------------------------------------------------


def read_catalog(folder: Path) -> np.ndarray:
    """items.parquet's item ids in file order (the rows of the collaborative count matrix)."""
    return pq.read_table(folder / "items.parquet", columns=["item_id"]).column("item_id").to_numpy()


class CatalogRows:
    """Row of an item id in the catalog (any order), vectorised, with the sort done once."""

    def __init__(self, catalog: np.ndarray) -> None:
        self.order = np.argsort(catalog, kind="stable")
        self.sorted = catalog[self.order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.sorted, ids), self.sorted.size - 1)
        if not np.array_equal(self.sorted[pos], ids):
            raise ValueError("an item id of the events is not in the catalog")
        return self.order[pos]


def counts_from_pairs(pairs_path: Path, catalog: np.ndarray, window: int, batch: int = 1 << 22):
    """The symmetric co-purchase count matrix of ``semid.collab.cooccurrence`` from directed pair counts
    (d, a, b, n): pairs d <= window with a != b, both directions, duplicates summed."""
    import scipy.sparse as sp

    rows_of = CatalogRows(catalog)
    f = pq.ParquetFile(pairs_path)
    cap = 2 * f.metadata.num_rows
    r, c, v = np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.float64)
    at = 0
    for b in f.iter_batches(batch_size=batch):
        d, a, bb, n = (b.column(k).to_numpy() for k in ("d", "a", "b", "n"))
        keep = (d <= window) & (a != bb)
        k = int(keep.sum())
        ra, rb = rows_of(a[keep]), rows_of(bb[keep])
        r[at:at + k], c[at:at + k], v[at:at + k] = ra, rb, n[keep]
        r[at + k:at + 2 * k], c[at + k:at + 2 * k], v[at + k:at + 2 * k] = rb, ra, n[keep]
        at += 2 * k
    n_items = catalog.size
    m = sp.coo_matrix((v[:at], (r[:at], c[:at])), shape=(n_items, n_items))
    del r, c, v
    return m.tocsr()


def check_outputs(seq_path: Path, pairs_path: Path) -> dict:
    """Digests of the sequences and pairs files (not timed)."""
    seq, sample = Digest(), {}
    for b in pq.ParquetFile(seq_path).iter_batches(batch_size=1 << 20):
        items = b.column("items")
        offsets = items.offsets.to_numpy().astype(np.int64)
        flat = items.values.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        sequences_check(b.column("user_id").to_numpy(), offsets, flat[: offsets[-1]], seq, sample)
    pairs = Digest()
    for b in pq.ParquetFile(pairs_path).iter_batches(batch_size=1 << 22):
        d, a, bb, n = (b.column(k).to_numpy() for k in ("d", "a", "b", "n"))
        pairs.add(d, a, bb, n, total=n)
    return {"sequences": seq.as_dict(), "pairs": pairs.as_dict(), "sample": sample}


def resolved_split(args) -> str:
    return args.split


# ----- engine: memory (today) ----------------------------------------------------------------------------------


def engine_memory(args, data: Path, catalog: np.ndarray, st: Stages, scratch: Path) -> dict:
    from genrec.data.copurchase import pair_counts, training_sequences
    from genrec.data.dataset import EVENTS_SCHEMA
    from genrec.data.sequences import SequenceConfig, split_events
    from genrec.model.config import DecoderConfig
    from semid.catalog import conform
    from semid.collab import cooccurrence

    max_items = DecoderConfig().max_items
    events = st.run("read events", lambda: conform(pq.read_table(data / "events.parquet"), EVENTS_SCHEMA,
                                                   "events.parquet"))
    splits, cfg = st.run("split_events", split_events, events, max_items, SequenceConfig(split=args.split))
    del splits  # genrec train keeps them for the decoder; here they go before the co-purchase stages
    seqs = st.run("training sequences", training_sequences, events, cfg)
    counts = st.run("cooccurrence (collab)", cooccurrence, seqs.history_offsets, seqs.history_items, catalog,
                    args.window)
    sorted_catalog = np.unique(catalog)
    pairs = st.run("pair_counts (memory)", pair_counts, seqs, sorted_catalog, args.window)
    # checks (not timed), lean: the events and splits go first; pair matrices one distance at a time
    n_events = events.num_rows
    del events
    seq_digest, sample = Digest(), {}
    sequences_check(seqs.user_ids, seqs.history_offsets, seqs.history_items, seq_digest, sample)
    del seqs
    counts_digest = csr_digest(counts)
    del counts
    pd_ = Digest()
    for d in range(1, len(pairs) + 1):
        m = pairs[d - 1].tocoo()
        pairs[d - 1] = None
        pd_.add(np.full(m.nnz, d), sorted_catalog[m.row], sorted_catalog[m.col], np.rint(m.data), total=m.data)
        del m
    return {"split": cfg.split, "events": n_events,
            "check": {"sequences": seq_digest.as_dict(), "pairs": pd_.as_dict(), "sample": sample,
                      "counts": counts_digest}}


# ----- engine: pyarrow datasets + numpy, hash partitioned -------------------------------------------------------


def _has_multi_item_session(table: pa.Table) -> bool:
    return table.group_by(["user_id", "ts", "session_id"]).aggregate([]).num_rows < table.num_rows


def arrow_partition(events_path: Path, folder: Path, buckets: int, batch: int) -> dict:
    """Scan events in batches and append each shopper's rows to bucket hash(user) mod buckets (rows keep
    their file order within a shopper, so ties order as in the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pads.dataset(events_path, format="parquet")
    schema = ds.schema
    writers = [pq.ParquetWriter(folder / f"bucket-{k:04d}.parquet", schema) for k in range(buckets)]
    multi = False
    rows = 0
    for b in ds.to_batches(batch_size=batch):
        t = pa.Table.from_batches([b])
        rows += t.num_rows
        if not multi:
            multi = _has_multi_item_session(t.select(["user_id", "ts", "session_id"]))
        k = (mix64(t.column("user_id").to_numpy()) % np.uint64(buckets)).astype(np.int64)
        order = np.argsort(k, kind="stable")
        counts = np.bincount(k, minlength=buckets)
        t = t.take(pa.array(order))
        start = 0
        for j in range(buckets):
            if counts[j]:
                writers[j].write_table(t.slice(start, counts[j]))
                start += counts[j]
    for w in writers:
        w.close()
    return {"rows": rows, "multi_item_session_seen": multi}


PAIR_D_BITS, PAIR_ITEM_BITS = 3, 30  # key = (row a << 33) | (row b << 3) | d: catalogs below 2^30 products


def _bucket_pairs(offsets: np.ndarray, rows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (a, b, d) and their counts of one bucket's training sequences."""
    owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    keys = []
    for d in range(1, window + 1):
        a = np.arange(max(rows.size - d, 0))
        a = a[owner[a] == owner[a + d]]
        keys.append((rows[a] << np.int64(PAIR_ITEM_BITS + PAIR_D_BITS)) | (rows[a + d] << np.int64(PAIR_D_BITS)) | d)
    return np.unique(np.concatenate(keys), return_counts=True)


def arrow_map(args, buckets: Path, parts: Path, seq_path: Path, catalog_sorted: np.ndarray, n_parts: int,
              split: str) -> dict:
    """Per bucket: training sequences by the project's code, written out; partial pair counts into the pair
    partition of their first item's range."""
    from genrec.data.copurchase import training_sequences
    from genrec.data.sequences import SequenceConfig

    parts.mkdir(parents=True, exist_ok=True)
    part_schema = pa.schema([("key", pa.int64()), ("n", pa.int64())])
    writers = [pq.ParquetWriter(parts / f"part-{p:04d}.parquet", part_schema) for p in range(n_parts)]
    seq_schema = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64()))])
    cfg = SequenceConfig(split=split)
    n_cat = catalog_sorted.size
    with pq.ParquetWriter(seq_path, seq_schema) as seq_out:
        for f in sorted(buckets.glob("bucket-*.parquet")):
            t = pq.read_table(f)
            if t.num_rows == 0:
                continue
            seqs = training_sequences(t, cfg)
            del t
            if len(seqs) == 0:
                continue
            seq_out.write_table(pa.Table.from_arrays(
                [pa.array(seqs.user_ids), pa.ListArray.from_arrays(pa.array(seqs.history_offsets),
                                                                    pa.array(seqs.history_items))],
                schema=seq_schema))
            rows = np.searchsorted(catalog_sorted, seqs.history_items).astype(np.int64)
            keys, n = _bucket_pairs(seqs.history_offsets, rows, args.window)
            del seqs, rows
            part = (keys >> np.int64(PAIR_ITEM_BITS + PAIR_D_BITS)) * n_parts // n_cat
            cuts = np.searchsorted(part, np.arange(n_parts + 1))  # keys are sorted, so parts are contiguous
            for p in range(n_parts):
                if cuts[p + 1] > cuts[p]:
                    writers[p].write_table(pa.Table.from_arrays([pa.array(keys[cuts[p]:cuts[p + 1]]),
                                                                 pa.array(n[cuts[p]:cuts[p + 1]])], schema=part_schema))
    for w in writers:
        w.close()
    return {"pair_parts": n_parts}


def arrow_reduce(parts: Path, pairs_path: Path, catalog_sorted: np.ndarray) -> dict:
    """Sum each partition's partial counts into (d, a, b, n) rows (item ids)."""
    schema = pa.schema([("d", pa.int8()), ("a", pa.int64()), ("b", pa.int64()), ("n", pa.int64())])
    rows = 0
    item_mask = np.int64((1 << PAIR_ITEM_BITS) - 1)
    with pq.ParquetWriter(pairs_path, schema) as out:
        for f in sorted(parts.glob("part-*.parquet")):
            t = pq.read_table(f)
            if t.num_rows == 0:
                continue
            keys, n = t.column("key").to_numpy(), t.column("n").to_numpy()
            del t
            order = np.argsort(keys, kind="stable")
            keys, n = keys[order], n[order]
            del order
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            keys, n = keys[starts], np.add.reduceat(n, starts)
            a = catalog_sorted[keys >> np.int64(PAIR_ITEM_BITS + PAIR_D_BITS)]
            b = catalog_sorted[(keys >> np.int64(PAIR_D_BITS)) & item_mask]
            d = (keys & np.int64((1 << PAIR_D_BITS) - 1)).astype(np.int8)
            out.write_table(pa.Table.from_arrays([pa.array(d), pa.array(a), pa.array(b), pa.array(n)], schema=schema))
            rows += keys.size
    return {"pair_rows": rows}


def engine_arrow(args, data: Path, catalog: np.ndarray, st: Stages, scratch: Path) -> dict:
    events_path = data / "events.parquet"
    n_events = pq.ParquetFile(events_path).metadata.num_rows
    n_buckets = max(1, math.ceil(n_events / args.bucket_events))
    n_parts = max(1, math.ceil(args.window * n_events / args.part_rows))
    catalog_sorted = np.unique(catalog)
    if catalog_sorted.size >= 1 << PAIR_ITEM_BITS:
        raise SystemExit(f"arrow engine: catalogs below {1 << PAIR_ITEM_BITS:,} products")
    part = st.run("partition by shopper", arrow_partition, events_path, scratch / "buckets", n_buckets, args.batch)
    split = args.split
    if split == "auto":  # any multi-item session seen -> last_basket; else check buckets exactly (none seen)
        split = "last_basket" if part["multi_item_session_seen"] else st.run(
            "resolve split", lambda: "last_basket" if any(_has_multi_item_session(pq.read_table(
                f, columns=["user_id", "ts", "session_id"])) for f in (scratch / "buckets").glob("*.parquet"))
            else "leave_one_out")
    seq_path, pairs_path = scratch / "sequences.parquet", scratch / "pairs.parquet"
    st.run("sequences + partial pairs", arrow_map, args, scratch / "buckets", scratch / "parts", seq_path,
           catalog_sorted, n_parts, split)
    shutil.rmtree(scratch / "buckets")
    reduced = st.run("reduce pairs", arrow_reduce, scratch / "parts", pairs_path, catalog_sorted)
    shutil.rmtree(scratch / "parts")
    out = {"split": split, "events": n_events, "buckets": n_buckets, "pair_parts": n_parts, **reduced}
    return _finish(args, out, seq_path, pairs_path, catalog, st)


def _finish(args, out: dict, seq_path: Path, pairs_path: Path, catalog: np.ndarray, st: Stages, counts=None) -> dict:
    """The count matrix (unless the engine built it, or past ``--csr-max-events``), then the checks."""
    out["files_mb"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in (seq_path, pairs_path)}
    counts_digest = None
    if counts is None and out["events"] <= args.csr_max_events:
        counts = st.run("counts csr", counts_from_pairs, pairs_path, catalog, args.window)
    if counts is not None:
        out["counts_nnz"] = int(counts.nnz)
        counts_digest = csr_digest(counts)
        del counts
    out["check"] = {**check_outputs(seq_path, pairs_path), "counts": counts_digest}
    return out


# ----- engine: DuckDB (genrec.data.outofcore, the product's out-of-core path) -----------------------------


def engine_duckdb(args, data: Path, catalog: np.ndarray, st: Stages, scratch: Path) -> dict:
    import duckdb

    from genrec.data import outofcore as ooc

    events_path = data / "events.parquet"
    n_events = pq.ParquetFile(events_path).metadata.num_rows
    con = ooc.connect(scratch / "prep.duckdb", args.memory_limit, args.threads, scratch / "spill")
    split = st.run("sessions", ooc.number_sessions, con, events_path, args.split)
    seq_path, pairs_path = scratch / "sequences.parquet", scratch / "pairs.parquet"
    st.run("training rows", ooc.training_rows, con, split, args.window)
    st.run("sequences", ooc.write_sequences, con, seq_path)
    st.run("pairs", ooc.write_pair_counts, con, pairs_path, args.window)
    counts, extra = None, {}
    if n_events <= args.csr_max_events:
        counts = st.run("counts csr", ooc.cooccurrence_counts, con, catalog, args.window)
    else:  # not timed: how big the matrix would be
        extra["counts_nnz"] = 2 * con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT least(a, b), greatest(a, b) FROM pairs "
            f"WHERE d <= {int(args.window)} AND a <> b)").fetchall()[0][0]
    spilled = sum(f.stat().st_size for f in (scratch / "spill").rglob("*") if f.is_file())
    db_mb = (scratch / "prep.duckdb").stat().st_size / 2**20
    con.close()
    out = {"split": split, "events": n_events, "duckdb": duckdb.__version__, "memory_limit": args.memory_limit,
           "database_mb": round(db_mb, 1), "spill_left_mb": round(spilled / 2**20, 1), **extra}
    return _finish(args, out, seq_path, pairs_path, catalog, st, counts)


# ----- the SID stage's co-purchase counts as the product computes them (sequence.counts_engine) ------------


def engine_collab_memory(args, data: Path, catalog: np.ndarray, st: Stages, scratch: Path) -> dict:
    """counts_engine memory: ``read_events``, ``training_sequences``, ``cooccurrence`` in one stage."""
    from genrec.data.copurchase import training_sequences
    from genrec.data.dataset import read_events
    from genrec.data.sequences import SequenceConfig
    from semid.collab import cooccurrence

    def counts():
        seqs = training_sequences(read_events(data), SequenceConfig(split=args.split))
        return cooccurrence(seqs.history_offsets, seqs.history_items, catalog, args.window)

    m = st.run("co-purchase counts", counts)
    return {"events": pq.ParquetFile(data / "events.parquet").metadata.num_rows, "counts_nnz": int(m.nnz),
            "check": {"counts": csr_digest(m)}}


def engine_collab_duckdb(args, data: Path, catalog: np.ndarray, st: Stages, scratch: Path) -> dict:
    """counts_engine duckdb: ``genrec.data.outofcore.copurchase_counts`` in one stage."""
    from genrec.data.outofcore import copurchase_counts

    m = st.run("co-purchase counts", copurchase_counts, data / "events.parquet", catalog, args.split, args.window,
               memory_limit=args.memory_limit, threads=args.threads, temp_dir=scratch)
    return {"events": pq.ParquetFile(data / "events.parquet").metadata.num_rows, "counts_nnz": int(m.nnz),
            "memory_limit": args.memory_limit, "check": {"counts": csr_digest(m)}}


# ----- SID assignment --------------------------------------------------------------------------------------------


def sid_train(args, catalog_dir: Path, model_path: Path, st: Stages) -> dict:
    """A small RQ-VAE on a sample of the catalog's vectors, read in batches (never the whole file)."""
    import torch

    from semid.codebook_config import SemIDConfig
    from semid.embeddings import column_vectors
    from semid.train import train_codebook

    emb = pq.ParquetFile(catalog_dir / "embeddings.parquet")
    n = emb.metadata.num_rows
    take = np.sort(np.random.default_rng(0).choice(n, min(n, args.sid_sample), replace=False))

    def read_sample():
        xs, ids, start = [], [], 0
        for b in emb.iter_batches(batch_size=args.sid_batch):
            at = take[(take >= start) & (take < start + b.num_rows)] - start
            t = pa.Table.from_batches([b]).take(pa.array(at))
            xs.append(column_vectors(t, "embedding", "embeddings.parquet"))
            ids.append(t.column("item_id").to_numpy())
            start += b.num_rows
        return np.concatenate(ids), np.concatenate(xs)

    ids, x = st.run("read sample", read_sample)
    items = pq.read_table(catalog_dir / "items.parquet", columns=["item_id", "category_path"])
    rows = CatalogRows(items.column("item_id").to_numpy())(ids)
    paths = items.column("category_path").take(pa.array(rows)).to_pylist()
    del items
    cfg = SemIDConfig(epochs=args.sid_epochs, threads=args.threads, progress=False, seed=0,
                      latent_dim=min(SemIDConfig().latent_dim, x.shape[1]), batch_size=4096,
                      kmeans_sample=min(16384, ids.size), contrastive_batch_size=512)
    torch.set_num_threads(args.threads)
    model, _ = st.run("train codebook", train_codebook, x, paths, cfg)
    model_path.write_bytes(pickle.dumps(model))
    return {"sample": int(ids.size), "epochs": cfg.epochs, "codebook_sizes": cfg.codebook_sizes,
            "latent_dim": cfg.latent_dim}


def sid_assign(args, catalog_dir: Path, model_path: Path, st: Stages, how: str) -> dict:
    import torch

    from semid.embeddings import column_vectors, read_embeddings

    torch.set_num_threads(args.threads)
    model = pickle.loads(model_path.read_bytes())
    path = catalog_dir / "embeddings.parquet"
    digest = Digest()

    def fold(ids: np.ndarray, codes: np.ndarray) -> None:
        digest.add(ids, *codes.T)

    if how == "memory":
        ids, x = st.run("read_embeddings", read_embeddings, path)

        def encode_all():
            for s in range(0, ids.size, args.sid_batch):
                fold(ids[s:s + args.sid_batch], model.encode(x[s:s + args.sid_batch]))
        st.run("encode", encode_all)
    else:
        def stream():
            for b in pq.ParquetFile(path).iter_batches(batch_size=args.sid_batch):
                t = pa.Table.from_batches([b])
                fold(t.column("item_id").to_numpy(), model.encode(column_vectors(t, "embedding", path.name)))
        st.run("read + encode, streamed", stream)
    return {"products": digest.rows, "check": {"codes": digest.as_dict()}}


# ----- driver ----------------------------------------------------------------------------------------------------


def worker(args) -> None:
    """One engine (or SID step) in this process; writes its JSON to ``--worker-out``."""
    st = Stages(Path(args.worker_out))
    scratch = Path(args.scratch)
    start = time.perf_counter()
    info = machine()
    if args.worker.startswith("sid-"):
        catalog_dir = Path(args.catalog)
        model_path = scratch / "codebook.pkl"
        out = sid_train(args, catalog_dir, model_path, st) if args.worker == "sid-train" else \
            sid_assign(args, catalog_dir, model_path, st, args.worker.removeprefix("sid-"))
    else:
        data = Path(args.data[0])
        catalog = read_catalog(Path(args.catalog) if args.catalog else data)
        fn = {"memory": engine_memory, "arrow": engine_arrow, "duckdb": engine_duckdb,
              "collab-memory": engine_collab_memory, "collab-duckdb": engine_collab_duckdb}[args.worker]
        out = fn(args, data, catalog, st, scratch)
    out.update({"engine": args.worker, "stages": st.rows, "wall_s": round(time.perf_counter() - start, 2),
                "peak_rss_mb": max((r["peak_rss_mb"] for r in st.rows), default=0.0),
                "load_before": info["loadavg"], "load_after": [round(x, 2) for x in os.getloadavg()]})
    Path(args.worker_out).write_text(json.dumps(out))


def spawn(args, engine: str, data: Path | None, scratch: Path) -> dict:
    out = scratch / f"{engine}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--worker-out", str(out), "--scratch", str(scratch),
           "--window", str(args.window), "--split", args.split, "--threads", str(args.threads),
           "--memory-limit", args.memory_limit, "--bucket-events", str(args.bucket_events),
           "--part-rows", str(args.part_rows), "--batch", str(args.batch), "--csr-max-events",
           str(args.csr_max_events), "--sid-sample", str(args.sid_sample), "--sid-epochs", str(args.sid_epochs),
           "--sid-batch", str(args.sid_batch)]
    if data is not None:
        cmd += ["--data", str(data)]
    if args.catalog:
        cmd += ["--catalog", str(args.catalog)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"  {engine}: {' '.join(cmd[2:4])} ...", flush=True)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0 or not out.is_file():
        return {"engine": engine, "error": f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


def compare(results: dict[str, dict]) -> dict:
    """Each engine's digests and sample sequences against the reference (memory when it ran)."""
    ok = {e: r for e, r in results.items() if "check" in r}
    if not ok:
        return {}
    ref_name = next((e for e in ("memory", "collab-memory") if e in ok), next(iter(ok)))
    ref = ok[ref_name]["check"]
    out = {"reference": ref_name}
    for e, r in ok.items():
        if e == ref_name:
            continue
        c = r["check"]
        out[e] = {"counts_equal": None if c.get("counts") is None or ref.get("counts") is None
                  else c["counts"] == ref["counts"]}
        if "sequences" in c and "sequences" in ref:
            same_sample = [u for u in ref["sample"] if c["sample"].get(u) == ref["sample"][u]]
            out[e].update({"sequences_equal": c["sequences"] == ref["sequences"],
                           "pairs_equal": c["pairs"] == ref["pairs"],
                           "sample_users": len(ref["sample"]), "sample_users_equal": len(same_sample),
                           "sample_users_extra": len(set(c["sample"]) - set(ref["sample"]))})
    return out


def run_data(args, data: Path) -> Path:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    results = {}
    info = machine()
    start = time.perf_counter()
    for engine in engines:
        scratch = Path(tempfile.mkdtemp(prefix=f"prep-{engine}-", dir=args.scratch))
        try:
            results[engine] = spawn(args, engine, data, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    checks = compare(results)
    for r in results.values():
        if "check" in r:
            r["check"].pop("sample", None)
    meta_path = data / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    doc = {"kind": "prep", "data": str(data), "catalog": str(args.catalog or data),
           "products": meta.get("counts", {}).get("items"),
           "events": pq.ParquetFile(data / "events.parquet").metadata.num_rows,
           "users": meta.get("counts", {}).get("users"),
           "events_mb": round((data / "events.parquet").stat().st_size / 2**20, 1),
           "window": args.window, "split": args.split, "threads": args.threads, "memory_limit": args.memory_limit,
           "bucket_events": args.bucket_events, "part_rows": args.part_rows, "machine": info,
           "load_after": [round(x, 2) for x in os.getloadavg()], "wall_s": round(time.perf_counter() - start, 1),
           "engines": results, "checks": checks}
    tag = "" if engines == list(ENGINES) or engines == ["arrow", "duckdb"] else "-" + "-".join(engines)
    out = Path(args.out) / f"prep-{doc['events']}{tag}.json"
    out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(checks, indent=2))
    return out


def run_sid(args) -> Path:
    info = machine()
    scratch = Path(tempfile.mkdtemp(prefix="prep-sid-", dir=args.scratch))
    try:
        results = {"train": spawn(args, "sid-train", None, scratch)}
        if "error" not in results["train"]:
            results.update({step: spawn(args, f"sid-{step}", None, scratch) for step in ("memory", "stream")})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    m, s = results["memory"].get("check"), results["stream"].get("check")
    doc = {"kind": "sid", "catalog": str(args.catalog), "threads": args.threads, "batch": args.sid_batch,
           "machine": info, "load_after": [round(x, 2) for x in os.getloadavg()], "engines": results,
           "checks": {"codes_equal": m is not None and m == s}}
    out = Path(args.out) / "prep-sid.json"
    out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc["checks"]))
    return out


def pair_stats(args) -> Path:
    """Not timed, for the plan at scale: per events folder, the co-occurrence matrix's unordered pairs by count
    (how much pruning rare pairs would save) and the products with any co-purchase (the rows the SVD needs)."""
    from genrec.data import outofcore as ooc

    out = {}
    for data in map(Path, args.data):
        scratch = Path(tempfile.mkdtemp(prefix="prep-stats-", dir=args.scratch))
        try:
            con = ooc.connect(scratch / "db.duckdb", args.memory_limit, args.threads)
            ooc.training_rows(con, ooc.number_sessions(con, data / "events.parquet", args.split), args.window)
            con.execute(f"""CREATE TABLE half AS SELECT least(a, b) AS x, greatest(a, b) AS y, count(*) AS n
                            FROM ({ooc._pairs_sql(args.window)}) WHERE a <> b GROUP BY x, y""")
            hist = con.sql("SELECT least(n, 5) AS k, count(*) FROM half GROUP BY k ORDER BY k").fetchall()
            warm = con.sql("SELECT count(*) FROM (SELECT x FROM half UNION SELECT y FROM half)").fetchall()[0][0]
            n_events = pq.ParquetFile(data / "events.parquet").metadata.num_rows
            out[str(n_events)] = {"data": str(data), "unordered_pairs_by_count": {("5+" if k == 5 else str(k)): c
                                                                                   for k, c in hist},
                                  "products_with_copurchase": warm, "window": args.window}
            con.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(data, out[str(n_events)], flush=True)
    path = Path(args.out) / "prep-pair-stats.json"
    path.write_text(json.dumps({"machine": machine(), "sizes": out}, indent=2))
    return path


def table(paths: list[Path]) -> str:
    """One row per (events, engine, stage), the engine's whole run after its stages."""
    head = f"{'events':>7} {'engine':<13} {'stage':<26} {'wall s':>8} {'events/s':>11} {'peak MB':>8}  {'same':<6}"
    lines = [head, "-" * len(head)]
    for p in paths:
        doc = json.loads(Path(p).read_text())
        if doc.get("kind") is None:  # --pair-stats
            continue
        if doc["kind"] == "sid":
            n = doc["engines"].get("memory", {}).get("products") or 0
            label = f"{n / 1e6:g}M"
            lines.append(f"{'items':>7} {'step':<13} {'stage':<26} {'wall s':>8} {'items/s':>11} {'peak MB':>8}  same")
            for step in ("train", "memory", "stream"):
                r = doc["engines"].get(step, {})
                for s in r.get("stages", []):
                    rate = f"{n / s['wall_s']:,.0f}" if step != "train" and s["wall_s"] else "-"
                    same = "" if step != "stream" or "encode" not in s["stage"] else str(doc["checks"]["codes_equal"])
                    lines.append(f"{label:>7} {'sid-' + step:<13} {s['stage']:<26} {s['wall_s']:>8.1f} "
                                 f"{rate:>11} {s['peak_rss_mb']:>8,.0f}  {same:<6}")
            continue
        n = doc["events"]
        label = f"{n / 1e6:g}M"
        for engine, r in doc["engines"].items():
            if "stages" not in r:
                lines.append(f"{label:>7} {engine:<13} {'failed: ' + r.get('error', '?'):<26}")
                continue
            c = doc["checks"].get(engine, {})
            same = "ref" if doc["checks"].get("reference") == engine else \
                ("yes" if c and c.get("sequences_equal", True) and c.get("pairs_equal", True)
                 and c["counts_equal"] is not False and c.get("sample_users_equal") == c.get("sample_users")
                 else "NO")
            for s in r["stages"]:
                lines.append(f"{label:>7} {engine:<13} {s['stage']:<26} {s['wall_s']:>8.1f} "
                             f"{n / s['wall_s'] if s['wall_s'] else 0:>11,.0f} {s['peak_rss_mb']:>8,.0f}")
            total = sum(s["wall_s"] for s in r["stages"])
            lines.append(f"{label:>7} {engine:<13} {'= all stages':<26} {total:>8.1f} {n / total:>11,.0f} "
                         f"{r['peak_rss_mb']:>8,.0f}  {same:<6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", nargs="*", default=[], help="dataset folders with events.parquet, one run each")
    ap.add_argument("--catalog", default=None, help="folder with items.parquet (and embeddings.parquet for --sid); "
                    "default: each --data folder")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of " + ", ".join(ENGINES))
    ap.add_argument("--window", type=int, default=3, help="co-purchase window (embedding.collab_window, memory.window)")
    ap.add_argument("--split", default="auto", choices=["auto", "last_basket", "leave_one_out"])
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads and torch threads")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit (it spills past it)")
    ap.add_argument("--bucket-events", type=int, default=4_000_000, help="arrow: events per shopper bucket")
    ap.add_argument("--part-rows", type=int, default=16_000_000, help="arrow: partial pair rows per pair partition")
    ap.add_argument("--batch", type=int, default=1 << 20, help="arrow: rows per scanned batch")
    ap.add_argument("--csr-max-events", type=int, default=20_000_000,
                    help="skip the 'counts csr' stage above this many events (the matrix outgrows the memory budget)")
    ap.add_argument("--sid", action="store_true", help="also measure SID assignment of --catalog's embeddings.parquet")
    ap.add_argument("--sid-sample", type=int, default=50_000, help="products the small codebook trains on")
    ap.add_argument("--sid-epochs", type=int, default=1)
    ap.add_argument("--sid-batch", type=int, default=262_144, help="products encoded (and read) at a time")
    ap.add_argument("--scratch", default="/root/work/prep/scratch", help="temporary files (spill, buckets)")
    ap.add_argument("--out", default="benchmarks/results/2026-12-07-prep-scale", help="folder for the JSONs")
    ap.add_argument("--pair-stats", action="store_true", help="only count the co-occurrence pairs by count and the "
                    "products with any co-purchase of each --data folder (DuckDB; not timed)")
    ap.add_argument("--table", nargs="*", default=None, help="print the table of these JSONs and exit")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.table is not None:
        print(table([Path(p) for p in args.table]))
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    if args.pair_stats:
        pair_stats(args)
        return
    written = []
    for d in args.data:
        print(f"{d}:", flush=True)
        written.append(run_data(args, Path(d)))
    if args.sid:
        print(f"SIDs of {args.catalog}:", flush=True)
        written.append(run_sid(args))
    print(table(written))


if __name__ == "__main__":
    main()
