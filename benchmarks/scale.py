"""How each stage's cost grows with the catalog: 50k and 500k products by default, 5M with ``--with-5m``, on
generated catalogs (``genrec data synth --scale``: 100 retailers each stocking 20-60%, clustered 64-d
product vectors), each size in one run, side by side:

- **Semantic IDs**: the project's RQ-VAE (``semid.train.train_codebook``, the default codebook 32/256/512/1024
  with the taxonomy term, the latent as wide as the 64-d vectors) trained on a uniform random sample of at most
  ``--sample`` (500k) products drawn without replacement (numpy ``default_rng(0).choice``), for ``--epochs``
  (2) epochs at batch ``--rq-batch`` (4096) for reconstruction and ``--tax-batch`` (512) for the taxonomy term
  (``semid.contrastive_batch_size``: its cost grows with the square of its batch), its codebooks seeded by
  k-means on ``--kmeans-sample`` (65,536) of them (``semid.kmeans_sample``); then every product assigned in batches of 262,144
  (``SemIDModel.encode``), the last level capped at ``--last-capacity`` (64) products a code tuple
  (``semid.last_code_capacity``, ``semid.capacity``: crowded prefixes split by their residuals; 0 keeps the
  nearest codewords) and given its SID (``semid.sids.assign_sids``): products per second of each, the
  collisions (distinct code tuples, products alone in theirs, largest group), the dedup tokens needed, and how
  the codes follow the taxonomy on the sample (the share of products whose first code is their department's
  most common one, and whose first two codes are their leaf's most common pair).
- **The index**: ``RetailerIndex`` built from the SIDs and the assortment (stock as a bit per retailer and
  product), its stock trie (``index.stock_trie``: the catalog trie, a bit per retailer and node), saved to
  disk; then a serving process (a fresh interpreter) loads it and builds the stock trie, and its resident
  memory is read from /proc (after imports, after loading, peak), with what each part of the index holds.
  Up to ``--forest-max`` (500k) products the pair forest (a trie row per (retailer, product) pair, what
  candidates and ranking use) is built too, for its time and size.
- **Constrained decoding**: ``constrained_beam_search`` with each query's retailer as its start (the stock
  trie), batch 64, beam 20 and 50, over an untrained decoder of the project's default shape
  (``DecoderConfig()``: Llama, d_model 128, 4 layers, 4 heads, d_ff 512, float32, seed 0): the search and the
  constraint are what is timed, not the model's quality. Prompts are ``<bos>`` + the SID tokens of a shopper's
  last 20 products at their home retailer. Queries per second, p50 and p99 seconds per batch, and the
  decoded SIDs mapped to products (``RetailerIndex.decoded_items``) per batch; ``--decode-batches`` (10)
  timed batches after one warm-up. Up to ``--forest-decode-max`` (50k), the same batches on the pair forest.
- **faiss two-tower**: the product vectors as the item tower, a query the L2-normalised mean of the vectors
  of the same shoppers' histories (the query tower of an untrained mean-pooling two-tower model); exact
  inner-product search (``IndexFlatIP``) is the truth; an ``IndexIVFFlat`` with nlist = 2 sqrt(N), trained on
  50 x nlist sampled products, and the smallest power-of-two nprobe whose recall@100 on half the queries
  reaches 0.95; recall@100, build time, index bytes and queries per second at batch 64 on the other half.
  No retailer filter (the decoder's lists are in stock; faiss's are not).

Each size writes ``scale-N.json`` to ``--out``; one table with every figure per size and its growth from the
smallest size is printed (``--table FILES`` prints it from saved JSONs). Threads: ``--threads`` (2) for torch
and faiss. Generated data is kept in ``--data-root`` and reused.

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --out benchmarks/results/2026-12-07-scale
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --with-5m --sizes 5000000 --out benchmarks/results/2026-12-07-scale
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --table benchmarks/results/2026-12-07-scale/scale-*.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (50_000, 500_000)
FIVE_M = 5_000_000
BATCH = 64
BEAMS = (20, 50)
HISTORY = 20  # products per prompt and per two-tower query: DecoderConfig.max_items


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident (VmRSS) or peak resident (VmHWM) memory in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def machine_load() -> dict:
    """The machine as it was: load averages, cores, available memory."""
    avail = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemAvailable:")), 0)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(), "cpu": cpu,
            "mem_available_gb": round(avail / 1024**2, 1)}


class Timer:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        out, self.t = now - self.t, now
        return out


# ----- data -----------------------------------------------------------------------------------------------


def catalog(n: int, root: Path, events: int) -> tuple[Path, float | None]:
    """The generated catalog of ``n`` products (made once, then reused) and how long making it took."""
    from genrec.data.synth.scale import write_scale_world
    from genrec.data.synth.scale_config import ScaleConfig

    folder = root / f"scale-{n}"
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        if meta["config"]["products"] == n and meta["config"]["events"] == events:
            return folder, None
        shutil.rmtree(folder)
    t = Timer()
    write_scale_world(ScaleConfig(products=n, events=events), folder, overwrite=True, show_progress=False)
    return folder, t.lap()


def read_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and vectors [n, dim] float32 of embeddings.parquet, a row group at a time."""
    f = pq.ParquetFile(folder / "embeddings.parquet")
    n = f.metadata.num_rows
    ids, out, at = np.empty(n, np.int64), None, 0
    for batch in f.iter_batches(batch_size=1 << 18):
        emb = batch.column(1)
        dim = emb.type.list_size
        x = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        if out is None:
            out = np.empty((n, dim), np.float32)
        out[at:at + len(x)] = x
        ids[at:at + len(x)] = batch.column(0).to_numpy()
        at += len(x)
    return ids, out


def histories(folder: Path, n_queries: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """The last ``HISTORY`` products of ``n_queries`` shoppers (drawn at random) and their home retailers."""
    ev = pq.read_table(folder / "events.parquet", columns=["user_id", "ts", "position", "item_id", "retailer_id"])
    ev = ev.sort_by([("user_id", "ascending"), ("ts", "ascending"), ("position", "ascending")])
    users = ev.column("user_id").to_numpy()
    items = ev.column("item_id").to_numpy()
    shops = ev.column("retailer_id").to_numpy()
    ends = np.r_[np.flatnonzero(users[1:] != users[:-1]) + 1, users.size]
    pick = np.random.default_rng(seed).choice(ends, min(n_queries, ends.size), replace=False)
    hist = [items[max(e - HISTORY, 0):e] for e in pick]
    return hist, shops[pick - 1].astype(np.int64)


# ----- semantic IDs ----------------------------------------------------------------------------------------


def semantic_ids(folder: Path, ids: np.ndarray, x: np.ndarray, args: argparse.Namespace) -> tuple[dict, object]:
    """Train on a sample, assign every product; the SID table and its figures."""
    import torch

    from semid.codebook_config import SemIDConfig
    from semid.sids import assign_sids, collision_summary
    from semid.train import train_codebook

    n = ids.size
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, args.sample), replace=False))
    items = pq.read_table(folder / "items.parquet", columns=["item_id", "category_path"])
    order = np.argsort(items.column("item_id").to_numpy())
    at = order[np.searchsorted(items.column("item_id").to_numpy(), ids[sample], sorter=order)]
    paths = items.column("category_path").take(pa.array(at)).to_pylist()
    del items
    # the default codebook; the latent is as wide as the vectors where they are narrower than its 128
    cfg = SemIDConfig(epochs=args.epochs, threads=args.threads, progress=False, seed=0,
                      latent_dim=min(SemIDConfig().latent_dim, x.shape[1]), batch_size=args.rq_batch,
                      kmeans_sample=args.kmeans_sample, contrastive_batch_size=args.tax_batch,
                      last_code_capacity=args.last_capacity)
    t = Timer()
    model, history = train_codebook(x[sample], paths, cfg)
    train_s = t.lap()
    torch.set_num_threads(args.threads)
    codes, residuals = model.encode_with_residuals(x, residuals=bool(args.last_capacity))  # one pass
    nearest_max = int(np.unique(codes, axis=0, return_counts=True)[1].max())
    encode_s = t.lap()
    codes = model.capped(x, codes, residuals)
    del residuals
    cap_s = t.lap()
    assign_s = encode_s + cap_s
    table = assign_sids(ids, codes, model.codebook_version)
    sid_s = t.lap()
    col = collision_summary(table)
    taxonomy = taxonomy_alignment(codes[sample], paths)
    dedup = table.column("dedup").to_numpy()
    out = {
        "sample": int(sample.size), "sample_rule": "uniform without replacement, numpy default_rng(0).choice",
        "epochs": args.epochs, "latent_dim": cfg.latent_dim, "batch_size": cfg.batch_size,
        "taxonomy_batch_size": cfg.contrastive_batch_size or cfg.batch_size,
        "kmeans_sample": cfg.kmeans_sample, "train_s": train_s, "train_products_per_s": sample.size * args.epochs / train_s,
        "assign_s": assign_s, "assign_products_per_s": n / assign_s, "sid_table_s": sid_s,
        "sids_total_s": train_s + assign_s + sid_s, "last_code_capacity": args.last_capacity, "cap_s": cap_s,
        "max_group_nearest": nearest_max,
        "distinct_codes": col["n_distinct_codes"], "unique_fraction": col["unique_fraction"],
        "max_group": col["max_group"], "dedup_vocab": int(dedup.max()) + 1,
        "products_with_dedup_gt0": int((dedup > 0).sum()), "full_sid_unique": col["full_sid_unique"],
        "utilization_last_epoch": history[-1].get("utilization"), "codebook_version": model.codebook_version,
        **taxonomy,
    }
    return out, (table, model)


def _majority_share(group: np.ndarray, value: np.ndarray) -> float:
    """Share of products whose ``value`` is the most common one in their ``group``."""
    pairs = np.unique(np.stack([group, value], 1), axis=0, return_counts=True)
    (g, _), counts = pairs[0].T, pairs[1]
    best = np.zeros(int(group.max()) + 1, np.int64)
    np.maximum.at(best, g, counts)
    return float(best.sum() / group.size)


def taxonomy_alignment(codes: np.ndarray, paths: list) -> dict:
    """How the codes follow the taxonomy, on the training sample: the share of products whose first code is the
    most common first code of their department, and whose first two codes are their leaf's most common pair."""
    dept = np.unique(np.array([p[0] if p else "" for p in paths]), return_inverse=True)[1].ravel()
    leaf = np.unique(np.array(["/".join(p) if p else "" for p in paths]), return_inverse=True)[1].ravel()
    prefix2 = codes[:, 0] * (int(codes[:, 1].max()) + 1) + codes[:, 1]
    return {"dept_code1_share": _majority_share(dept, codes[:, 0]),
            "leaf_prefix2_share": _majority_share(leaf, prefix2)}


# ----- the index --------------------------------------------------------------------------------------------


def build_index(folder: Path, table, model, ids: np.ndarray, work: Path, args: argparse.Namespace):
    """RetailerIndex from the SIDs and the assortment, its stock trie, saved; the pair forest up to a size."""
    from index.retailer_index import RetailerIndex
    from semid.sids import codes_matrix
    from semid.tokenizer import SIDTokenizer

    tok = SIDTokenizer.from_sids(table, model.codebook_sizes, codebook_version=model.codebook_version)
    rows = tok.encode_batch(codes_matrix(table), table.column("dedup").to_numpy())
    sid_ids = table.column("item_id").to_numpy()
    ev_items = pq.read_table(folder / "events.parquet", columns=["item_id"]).column("item_id").to_numpy()
    pop_ids, counts = np.unique(ev_items, return_counts=True)
    pop = np.zeros(sid_ids.size)
    hit = np.searchsorted(sid_ids, pop_ids)
    pop[hit] = counts
    t = Timer()
    index = RetailerIndex(tok.tokens_per_item, tok.vocab_size, tok.codebook_version)
    index.add(sid_ids, rows, popularity=pop, sids=table.column("sid").to_numpy(zero_copy_only=False))
    catalog_s = t.lap()
    pairs = 0
    for batch in pq.ParquetFile(folder / "assortment.parquet").iter_batches(batch_size=1 << 23):
        r, i = batch.column("retailer_id").to_numpy(), batch.column("item_id").to_numpy()
        index.add(i, retailer_ids=r.astype(np.int64))
        pairs += r.size
    stock_s = t.lap()
    trie = index.stock_trie()
    trie_s = t.lap()
    path = work / "index"
    if path.exists():
        shutil.rmtree(path)
    index.save(path)
    save_s = t.lap()
    out = {"stock_pairs": pairs, "catalog_add_s": catalog_s, "stock_add_s": stock_s, "stock_trie_s": trie_s,
           "build_s": catalog_s + stock_s + trie_s, "save_s": save_s, "disk_mb": folder_mb(path),
           "trie_nodes": trie.catalog.n_nodes, "vocab": tok.vocab_size}
    forest = None
    if ids.size <= args.forest_max:
        t.lap()
        forest = index.stock_forest()
        out["forest_s"] = t.lap()
        out["forest_rows"] = forest.trie.n_leaves
        out["forest_mb"] = forest_bytes(forest) / 1e6
    return index, tok, path, out, forest


def forest_bytes(forest) -> int:
    """Bytes of the pair forest's arrays and trie tensors (SID strings counted as pointers)."""
    trie = forest.trie
    tensors = [trie.leaf_rows, *trie.child_start, *trie.edge_token, *trie.edge_key, *trie.leaf_start,
               *(t for t in trie.child_table if t is not None)]
    arrays = [v for v in vars(forest).values() if isinstance(v, np.ndarray)]
    return sum(t.numel() * t.element_size() for t in tensors) + sum(a.nbytes for a in arrays)


SERVE = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import numpy as np, torch
    from index.retailer_index import RetailerIndex
    import genrec.model.beam_search  # what a serving process imports before its index

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    base = rss("VmRSS")
    t = time.perf_counter()
    index = RetailerIndex.load(sys.argv[1])
    load_s = time.perf_counter() - t
    after_load = rss("VmRSS")
    index.start_for([int(index.retailers[0]), None])
    ready_s = time.perf_counter() - t
    trie = index.stock_trie()
    sids = index._sids
    step = max(1, sids.size // 20000)
    sid_bytes = sids.size * 8 + sids.size * float(np.mean([sys.getsizeof(s) for s in sids[::step]]))
    cat = trie.catalog
    trie_bytes = sum(x.numel() * x.element_size() for x in [cat.leaf_rows, *cat.child_start, *cat.edge_token,
                     *cat.edge_key, *cat.leaf_start, *(c for c in cat.child_table if c is not None)])
    parts = {
        "catalog token rows": index._rows.nbytes,
        "catalog ids, popularity, flags": index._ids.nbytes + index._pop.nbytes + index._established.nbytes,
        "SID strings": sid_bytes,
        "stock bits": index._stock.nbytes,
        "catalog trie": trie_bytes,
        "trie node bits": sum(b.numel() for b in trie.node_bits),
        "leaf <-> product maps": trie.leaf_of_pos.nbytes + trie.by_leaf.nbytes + trie.leaf_first.nbytes,
    }
    print(json.dumps({"rss_base_mb": base, "rss_loaded_mb": after_load, "rss_ready_mb": rss("VmRSS"),
                      "rss_peak_mb": rss("VmHWM"), "load_s": load_s, "ready_s": ready_s,
                      "parts_mb": {k: v / 1e6 for k, v in parts.items()}}))
''')


def serving_memory(path: Path) -> dict:
    """A fresh interpreter loads the saved index and builds what decoding walks; its memory and load time."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", SERVE, str(path)], capture_output=True, text=True, env=env,
                         check=True, cwd=REPO)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["index_rss_mb"] = got["rss_ready_mb"] - got["rss_base_mb"]
    return got


# ----- decoding ---------------------------------------------------------------------------------------------


def prompts_and_model(index, vocab_size: int, tokens_per_item: int, hist: list[np.ndarray]):
    """The untrained decoder (seed 0) and the left-padded prompts: ``<bos>`` + the SID tokens of each history."""
    import torch

    from genrec.model.config import DecoderConfig
    from genrec.model.decoder import build_decoder
    from semid.tokenizer import BOS, PAD

    torch.manual_seed(0)
    model = build_decoder(DecoderConfig(), vocab_size, tokens_per_item).eval()
    prompts = [np.r_[BOS, index.rows_of(h)[0].reshape(-1)] for h in hist]
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), PAD, np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    return model, torch.from_numpy(ids), torch.from_numpy(mask)


def decode_batch(index, model, ids, mask, shops: np.ndarray, b: int, beam: int, start_of) -> tuple[float, float, float]:
    """Batch ``b`` of 64 decoded from each query's start (``start_of(shops)`` -> trie, nodes, depth): seconds to
    decode, seconds to map the SIDs to products, share of beams that name a product the retailer stocks."""
    from genrec.model.beam_search import constrained_beam_search

    sl = slice(b * BATCH, (b + 1) * BATCH)
    shop = shops[sl]
    t = time.perf_counter()
    trie, start, depth = start_of(index, shop)
    got, _ = constrained_beam_search(model, ids[sl], mask[sl], trie, beam, beam, start=start, start_depth=depth)
    dt = time.perf_counter() - t
    items = index.decoded_items(got, shop.tolist())
    return dt, time.perf_counter() - t - dt, float((items >= 0).mean())


def stock_trie_start(index, shop: np.ndarray):
    s = index.start_for(shop.tolist())
    return s.trie, s.nodes, s.depth


def decoding(index, tok, hist: list[np.ndarray], shops: np.ndarray, forest, args: argparse.Namespace) -> dict:
    """Constrained beam search at batch 64 and each beam width, every query from its retailer's start."""
    import torch

    from genrec.model.config import DecoderConfig

    cfg = DecoderConfig()
    model, ids, mask = prompts_and_model(index, tok.vocab_size, tok.tokens_per_item, hist)
    out: dict = {"model": f"untrained Llama d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
                          f"d_ff {cfg.d_ff}, float32, history {HISTORY} items",
                 "batches": args.decode_batches, "batch": BATCH}
    n_batches = min(args.decode_batches, len(ids) // BATCH)

    def run(beam: int, start_of) -> tuple[list[float], list[float], float]:
        got = [decode_batch(index, model, ids, mask, shops, b, beam, start_of) for b in range(n_batches + 1)]
        got = got[1:]  # the first batch warms up and is not counted
        return [g[0] for g in got], [g[1] for g in got], float(np.mean([g[2] for g in got]))

    def forest_start(index, shop):
        return forest.trie, torch.from_numpy(forest.slot_nodes[index.slots_for(shop.tolist())]), 1

    with torch.inference_mode():
        for beam in BEAMS:
            times, maps, live = run(beam, stock_trie_start)
            out[f"beam{beam}"] = {"qps": BATCH * len(times) / sum(times), "p50_s": float(np.percentile(times, 50)),
                                  "p99_s": float(np.percentile(times, 99)), "map_ms": 1e3 * float(np.mean(maps)),
                                  "in_stock_share": live}
            if forest is not None and index.item_ids.size <= args.forest_decode_max:
                times, _, _ = run(beam, forest_start)
                out[f"beam{beam}"]["forest_qps"] = BATCH * len(times) / sum(times)
    return out


def decode_compare(sizes: list[int], args: argparse.Namespace) -> dict:
    """Decoding of the saved indexes of ``sizes`` (``--work``), timed batch by batch in turn (size A's batch b,
    then size B's batch b, ...), so that a change in the machine's load falls on every size alike; queries per
    second per size and beam and each size's ratio to the smallest."""
    import torch

    from index.retailer_index import RetailerIndex

    torch.set_num_threads(args.threads)
    setups = {}
    for n in sizes:
        index = RetailerIndex.load(Path(args.work) / f"scale-{n}" / "index")
        index.stock_trie()
        hist, shops = histories(catalog(n, Path(args.data_root), args.events)[0], BATCH * (args.decode_batches + 1))
        setups[n] = (index, *prompts_and_model(index, index.vocab_size, index.tokens_per_item, hist), shops)
        print(f"[{n:,}] index loaded, vocabulary {index.vocab_size:,}", flush=True)
    out: dict = {"sizes": sizes, "batches": args.decode_batches, "batch": BATCH, "threads": args.threads,
                 "load_before": machine_load(), "vocab": {n: int(s[0].vocab_size) for n, s in setups.items()}}
    with torch.inference_mode():
        for beam in BEAMS:
            times = {n: [] for n in sizes}
            for b in range(args.decode_batches + 1):
                for n, (index, model, ids, mask, shops) in setups.items():
                    dt = decode_batch(index, model, ids, mask, shops, b, beam, stock_trie_start)[0]
                    if b:
                        times[n].append(dt)
            qps = {n: BATCH * len(t) / sum(t) for n, t in times.items()}
            out[f"beam{beam}"] = {str(n): {"qps": qps[n], "p50_s": float(np.percentile(times[n], 50)),
                                           "p99_s": float(np.percentile(times[n], 99)),
                                           "ratio": qps[n] / qps[sizes[0]]} for n in sizes}
    out["load_after"] = machine_load()
    return out


def compare_table(result: dict) -> str:
    """The interleaved decoding comparison as a table: one row per size and beam."""
    lines = [f"{'products':>10} {'vocab':>7} {'beam':>5} {'qps':>8} {'p50 s':>7} {'p99 s':>7} {'x smallest':>11}"]
    for beam in BEAMS:
        for n in result["sizes"]:
            r = result[f"beam{beam}"][str(n)]
            lines.append(f"{n:>10,} {result['vocab'][n]:>7,} {beam:>5} {r['qps']:>8.1f} {r['p50_s']:>7.2f} "
                         f"{r['p99_s']:>7.2f} {r['ratio']:>11.2f}")
    return "\n".join(lines)


# ----- faiss -----------------------------------------------------------------------------------------------


def two_tower(x: np.ndarray, ids: np.ndarray, hist: list[np.ndarray], args: argparse.Namespace) -> dict:
    """faiss over the product vectors, queries the mean vector of each history: IVF tuned to recall@100."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    n, dim = x.shape
    pos = [np.searchsorted(ids, h) for h in hist]
    q = np.stack([x[p].mean(0) for p in pos]).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = 100
    t = Timer()
    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    flat_build = t.lap()
    _, truth = flat.search(q, k)
    exact_s = t.lap()
    exact_qps = len(q) / exact_s
    del flat
    nlist = max(16, int(round(2 * np.sqrt(n))))
    train_n = min(n, 50 * nlist)
    t.lap()
    quant = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 10
    sample = np.random.default_rng(0).choice(n, train_n, replace=False)
    ivf.train(x[np.sort(sample)])
    ivf.add(x)
    build_s = t.lap()
    half = len(q) // 2
    tune_q, tune_t, eval_q, eval_t = q[:half], truth[:half], q[half:], truth[half:]

    def recall(found: np.ndarray, want: np.ndarray) -> float:
        return float(np.mean([np.intersect1d(f, w).size / k for f, w in zip(found, want)]))

    nprobe, tuned = 1, None
    while nprobe <= nlist:
        ivf.nprobe = nprobe
        _, got = ivf.search(tune_q, k)
        tuned = recall(got, tune_t)
        if tuned >= 0.95:
            break
        nprobe *= 2
    ivf.nprobe = min(nprobe, nlist)
    times, found = [], []
    for s in range(0, len(eval_q), BATCH):
        t0 = time.perf_counter()
        _, got = ivf.search(eval_q[s:s + BATCH], k)
        times.append(time.perf_counter() - t0)
        found.append(got)
    return {"queries": len(q), "query_rule": f"L2-normalised mean vector of the last {HISTORY} products",
            "index": "IndexIVFFlat (inner product)", "nlist": nlist, "train_points": int(train_n),
            "nprobe": int(ivf.nprobe), "tune_recall": tuned, "recall_at_100": recall(np.concatenate(found), eval_t),
            "build_s": build_s, "index_mb": faiss.serialize_index(ivf).nbytes / 1e6, "qps": len(eval_q) / sum(times),
            "p50_s": float(np.percentile(times, 50)), "p99_s": float(np.percentile(times, 99)),
            "exact_qps": exact_qps, "exact_build_s": flat_build}


# ----- one size, the table ----------------------------------------------------------------------------------


def one_size(n: int, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work) / f"scale-{n}"
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"products": n, "load_before": machine_load(), "threads": args.threads}
    start = time.perf_counter()
    t = Timer()
    folder, synth_s = catalog(n, Path(args.data_root), args.events)
    result["synth_s"] = synth_s
    ids, x = read_vectors(folder)
    result["read_vectors_s"] = t.lap()
    print(f"[{n:,}] catalog ready; semantic IDs ...", flush=True)
    result["semid"], (table, model) = semantic_ids(folder, ids, x, args)
    print(f"[{n:,}] SIDs in {result['semid']['sids_total_s']:.0f}s", flush=True)
    if args.sids_only:
        return _finish(result, f"sids-{n}.json", start, args)
    print(f"[{n:,}] index ...", flush=True)
    index, tok, path, result["index"], forest = build_index(folder, table, model, ids, work, args)
    del table
    result["serve"] = serving_memory(path)
    print(f"[{n:,}] index {result['serve']['index_rss_mb']:.0f} MB in a serving process; decoding ...", flush=True)
    hist, shops = histories(folder, max(args.queries, BATCH * (args.decode_batches + 1)))
    result["decode"] = decoding(index, tok, hist, shops, forest, args)
    del forest, index
    print(f"[{n:,}] faiss ...", flush=True)
    result["faiss"] = two_tower(x, ids, hist[: args.queries], args)
    return _finish(result, f"scale-{n}.json", start, args)


def _finish(result: dict, name: str, start: float, args: argparse.Namespace) -> dict:
    """``result`` with the peak memory, the load and the time, written to ``--out``/``name``."""
    result["peak_rss_mb"] = rss_mb("VmHWM")
    result["load_after"] = machine_load()
    result["total_s"] = time.perf_counter() - start
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    return result


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v))


ROWS = [  # (label, path, format)
    ("RQ-VAE train sample (products)", "semid.sample", "{:,.0f}"),
    ("RQ-VAE batch / taxonomy batch", ("semid.batch_size", "semid.taxonomy_batch_size"), "{:,.0f}/{:,.0f}"),
    ("RQ-VAE train s", "semid.train_s", "{:.1f}"),
    ("RQ-VAE train products/s (x epochs)", "semid.train_products_per_s", "{:,.0f}"),
    ("assign products/s", "semid.assign_products_per_s", "{:,.0f}"),
    ("SIDs for all products, s", "semid.sids_total_s", "{:.1f}"),
    ("dept's usual 1st code (share)", "semid.dept_code1_share", "{:.3f}"),
    ("leaf's usual 2-code prefix (share)", "semid.leaf_prefix2_share", "{:.3f}"),
    ("distinct code tuples", "semid.distinct_codes", "{:,.0f}"),
    ("products alone in their codes", "semid.unique_fraction", "{:.3f}"),
    ("largest group, nearest codewords", "semid.max_group_nearest", "{:,.0f}"),
    ("last-level capacity (0: none)", "semid.last_code_capacity", "{:,.0f}"),
    ("  its reassignment s", "semid.cap_s", "{:.1f}"),
    ("largest collision group", "semid.max_group", "{:,.0f}"),
    ("dedup tokens needed", "semid.dedup_vocab", "{:,.0f}"),
    ("stock pairs", "index.stock_pairs", "{:,.0f}"),
    ("index build s (catalog+stock+trie)", "index.build_s", "{:.1f}"),
    ("  of which stock trie s", "index.stock_trie_s", "{:.1f}"),
    ("pair forest build s", "index.forest_s", "{:.1f}"),
    ("pair forest MB", "index.forest_mb", "{:,.0f}"),
    ("index on disk MB", "index.disk_mb", "{:,.0f}"),
    ("serving: load + trie s", "serve.ready_s", "{:.1f}"),
    ("serving: index RSS MB", "serve.index_rss_mb", "{:,.0f}"),
    ("serving: peak RSS MB", "serve.rss_peak_mb", "{:,.0f}"),
    ("decode qps, beam 20", "decode.beam20.qps", "{:.1f}"),
    ("  p50 / p99 s per batch of 64", ("decode.beam20.p50_s", "decode.beam20.p99_s"), "{:.2f}/{:.2f}"),
    ("  on the pair forest, qps", "decode.beam20.forest_qps", "{:.1f}"),
    ("decode qps, beam 50", "decode.beam50.qps", "{:.1f}"),
    ("  p50 / p99 s per batch of 64", ("decode.beam50.p50_s", "decode.beam50.p99_s"), "{:.2f}/{:.2f}"),
    ("  on the pair forest, qps", "decode.beam50.forest_qps", "{:.1f}"),
    ("  SID -> product ms per batch", "decode.beam50.map_ms", "{:.1f}"),
    ("faiss IVF nlist / nprobe", ("faiss.nlist", "faiss.nprobe"), "{:,.0f}/{:.0f}"),
    ("faiss recall@100 vs exact", "faiss.recall_at_100", "{:.3f}"),
    ("faiss build s", "faiss.build_s", "{:.1f}"),
    ("faiss index MB", "faiss.index_mb", "{:,.0f}"),
    ("faiss qps (batch 64, k 100)", "faiss.qps", "{:,.0f}"),
    ("exact search qps", "faiss.exact_qps", "{:,.0f}"),
    ("benchmark peak RSS MB", "peak_rss_mb", "{:,.0f}"),
]


def _get(result: dict, path: str):
    for part in path.split("."):
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


def table(results: list[dict]) -> str:
    """Every figure per size and its growth from the smallest size (within 100 columns)."""
    results = sorted(results, key=lambda r: r["products"])
    sizes = [f"{r['products'] // 1000:,}k" if r["products"] < 10**6 else f"{r['products'] / 1e6:g}M" for r in results]
    growth = [f"x {s}/{sizes[0]}" for s in sizes[1:]]
    head = f"{'figure':<36}" + "".join(f"{s:>12}" for s in sizes) + "".join(f"{g:>12}" for g in growth)
    lines = [head, "-" * len(head)]
    for label, path, fmt in ROWS:
        paths = path if isinstance(path, tuple) else (path,)
        vals = [[_get(r, p) for p in paths] for r in results]
        cells = [fmt.format(*v) if all(x is not None for x in v) else "-" for v in vals]
        first = vals[0][0]
        ratios = [f"{v[0] / first:.2f}" if v[0] is not None and first else "-" for v in vals[1:]]
        lines.append(f"{label:<36}" + "".join(f"{c:>12}" for c in cells) + "".join(f"{g:>12}" for g in ratios))
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="catalog sizes (products)")
    p.add_argument("--with-5m", action="store_true", help="also run 5,000,000 products (or allow it in --sizes)")
    p.add_argument("--sample", type=int, default=500_000, help="most products the RQ-VAE trains on")
    p.add_argument("--epochs", type=int, default=2, help="RQ-VAE epochs over the sample")
    p.add_argument("--rq-batch", type=int, default=4096, help="RQ-VAE batch size (the config default is 512)")
    p.add_argument("--tax-batch", type=int, default=512,
                   help="products in the taxonomy term's batch (semid.contrastive_batch_size; 0: --rq-batch)")
    p.add_argument("--last-capacity", type=int, default=64,
                   help="semid.last_code_capacity: most products on one code tuple (0: nearest codewords only)")
    p.add_argument("--kmeans-sample", type=int, default=65_536, help="products the codebooks are seeded on")
    p.add_argument("--events", type=int, default=200_000, help="events generated (histories for queries)")
    p.add_argument("--queries", type=int, default=2000, help="two-tower queries (half tune nprobe, half measure)")
    p.add_argument("--decode-batches", type=int, default=10, help="timed batches of 64 per beam width")
    p.add_argument("--forest-max", type=int, default=500_000, help="largest catalog to build the pair forest for")
    p.add_argument("--forest-decode-max", type=int, default=50_000, help="largest catalog to decode on the forest")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default="work/scale-data", help="where generated catalogs are kept")
    p.add_argument("--work", default="work/scale-bench", help="where indexes are saved")
    p.add_argument("--out", default=None, help="folder for scale-N.json")
    p.add_argument("--table", nargs="+", default=None, help="print the table of saved JSONs and stop")
    p.add_argument("--sids-only", action="store_true", help="stop after the SID stage (writes sids-N.json)")
    p.add_argument("--decode-compare", action="store_true",
                   help="only decoding, on the indexes already saved in --work for --sizes, batches timed in turn")
    args = p.parse_args(argv)
    if args.table:
        results = [json.loads(Path(f).read_text()) for f in args.table]
        print(table(results))
        return results
    sizes = sorted(set(args.sizes + ([FIVE_M] if args.with_5m else [])))
    if any(s > 1_000_000 for s in sizes) and not args.with_5m:
        p.error("sizes above 1M need --with-5m")
    if args.decode_compare:
        result = decode_compare(sizes, args)
        print(compare_table(result))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "decode-compare.json").write_text(json.dumps(result, indent=2, default=_plain) + "\n")
        return [result]
    results = [one_size(n, args) for n in sizes]
    if args.sids_only:
        for r in results:
            sid = r["semid"]
            print(f"{r['products']:>11,} products: SIDs {sid['sids_total_s']:,.0f}s (train {sid['train_s']:,.0f}s, "
                  f"assign {sid['assign_s']:,.0f}s, cap {sid['cap_s']:,.0f}s), largest tuple {sid['max_group']:,}")
        return results
    print()
    print(table(results))
    return results


if __name__ == "__main__":
    run()
