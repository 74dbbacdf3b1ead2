"""Resident memory of what a ``Retriever`` builds over a large saved index, old against new: the pair forest
(``index.forest.StockForest``, one trie row per (retailer, product) pair, what candidates, cold-start mixing
and the rank stage read until now) against the catalog view (``index.catalog_view.CatalogView``, the
catalog's products once plus the stock bits the index holds anyway). Both sit beside the stock trie that
decoding walks (``index.stock_trie``).

Each structure is measured in a fresh interpreter: RSS after the imports, after ``RetailerIndex.load``, after
the stock trie and the view (or the forest) are built, and the peak (VmHWM); the bytes of their arrays; and
one batch of candidates (64 queries of 20 beams over random catalog rows, retailers mixed with the whole
catalog, 5 excluded products each, K 10 with cold-start slots by SID prefix and by SID point), timed as the
fastest of 3, with a digest of the lists, which must be equal for both. The pair forest is built up to
``--forest-max`` products (500k: 3 GB; at 5M it would be about 30 GB). ``--modes both`` builds both in one
interpreter and times the batch through each in turn, so the machine's load falls on both alike.

    PYTHONPATH=. .venv/bin/python benchmarks/index_memory.py \\
        --index work/scale-bench/scale-500000/index work/scale-bench/scale-5000000/index \\
        --out benchmarks/results/2026-12-07-index-view
    PYTHONPATH=. .venv/bin/python benchmarks/index_memory.py --modes both \
        --index work/scale-bench/scale-500000/index --out benchmarks/results/2026-12-07-index-view
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODES = ("view", "forest")  # one structure per interpreter: its memory
BOTH = "both"  # both in one interpreter: candidates through each, timed in turn (no memory figures)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident (VmRSS) or peak resident (VmHWM) memory in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def available_mb() -> float:
    """The machine's MemAvailable in MB (other jobs share it)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def trie_bytes(trie) -> int:
    """Bytes of a ``PrefixTrie``'s tensors."""
    tensors = [trie.leaf_rows, *trie.child_start, *trie.edge_token, *trie.edge_key, *trie.leaf_start,
               *(t for t in trie.child_table if t is not None)]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def forest_bytes(forest) -> int:
    """Bytes of the pair forest's arrays and trie tensors (SID strings counted as pointers)."""
    arrays = [v for v in vars(forest).values() if isinstance(v, np.ndarray)]
    return trie_bytes(forest.trie) + sum(a.nbytes for a in arrays)


def measure(mode: str, path: Path, point: bool = True, batch: int = 64, width: int = 20, repeats: int = 3) -> dict:
    """In this process: load the index at ``path``, build the stock trie and the ``mode`` structure, time a
    batch of candidates through it (cold-start slots by SID point too where ``point``); ``both``: both
    structures, candidates through each in turn."""
    from index.retailer_index import RetailerIndex

    out = {"mode": mode, "rss_base_mb": rss_mb()}
    t = time.perf_counter()
    index = RetailerIndex.load(path)
    out.update(load_s=time.perf_counter() - t, rss_loaded_mb=rss_mb(), products=len(index),
               retailers=int(index.retailers.size), stock_pairs=index._stock.n_pairs,
               stock_bits_mb=index._stock.nbytes / 1e6)
    t = time.perf_counter()
    trie = index.stock_trie()
    out.update(stock_trie_s=time.perf_counter() - t, stock_trie_mb=trie.nbytes / 1e6, rss_trie_mb=rss_mb())
    structures = {}
    for name in MODES if mode == BOTH else (mode,):
        t = time.perf_counter()
        structures[name] = index.catalog_view() if name == "view" else index.stock_forest()
        out["structure_s" if mode != BOTH else f"{name}_s"] = time.perf_counter() - t
    if mode != BOTH:
        lists = structures[mode]
        out["structure_mb"] = (lists.nbytes if mode == "view" else forest_bytes(lists)) / 1e6
    out.update(rss_ready_mb=rss_mb(), rss_peak_mb=rss_mb("VmHWM"))
    out.update(time_candidates(index, structures, point, batch, width, repeats))
    out.update(rss_end_mb=rss_mb(), rss_peak_end_mb=rss_mb("VmHWM"))
    return out


def time_candidates(index, structures: dict, point: bool, batch: int, width: int, repeats: int) -> dict:
    """One batch of candidates through each structure, ``repeats`` times in turn, the fastest counted: ms
    per cold-start mode and a digest of the lists (``structure`` suffixed where several are timed)."""
    from index.candidates import rank_candidates
    from index.cold import ColdRanker

    rng = np.random.default_rng(0)
    decoded = index._rows[rng.integers(0, len(index), (batch, width))]
    scores = -np.sort(rng.random((batch, width)) * 5, axis=1)
    retailers = [None if b % 4 == 0 else int(index.retailers[b % index.retailers.size]) for b in range(batch)]
    slots = index.slots_for(retailers)
    exclude = [index._ids[rng.integers(0, len(index), 5)] for _ in range(batch)]
    ranker = ColdRanker(rng.normal(size=(int(index._rows.max()) + 1, 32)).astype(np.float32))
    suffix = {name: "" if len(structures) == 1 else f"_{name}" for name in structures}
    digests = {name: hashlib.sha256() for name in structures}
    out = {}
    for cold_name, cold in (("prefix", None), ("point", ranker))[: 2 if point else 1]:
        best, got = dict.fromkeys(structures, float("inf")), {}
        for _ in range(repeats):
            for name, lists in structures.items():
                t = time.perf_counter()
                got[name] = rank_candidates(lists, decoded, scores, slots, 10, exclude, 0.2, cold, index._rows[:batch])
                best[name] = min(best[name], time.perf_counter() - t)
        for name in structures:
            digests[name].update(got[name].item_ids.tobytes())
            out[f"candidates_{cold_name}_ms{suffix[name]}"] = 1000 * best[name]
    out.update({f"lists_sha256{suffix[n]}": d.hexdigest()[:16] for n, d in digests.items()})
    return out


def child(mode: str, path: Path, point: bool) -> dict:
    """``measure`` in a fresh interpreter, so one structure's peak never counts against the other."""
    argv = [sys.executable, __file__, "--child", mode, "--index", str(path)] + ([] if point else ["--point-max", "0"])
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        return {"mode": mode, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = (("products", "products", "{:,}"), ("stock pairs", "stock_pairs", "{:,}"),
        ("RSS after imports MB", "rss_base_mb", "{:,.0f}"), ("RSS after load MB", "rss_loaded_mb", "{:,.0f}"),
        ("RSS + stock trie MB", "rss_trie_mb", "{:,.0f}"), ("RSS + view / forest MB", "rss_ready_mb", "{:,.0f}"),
        ("view / forest growth MB", "growth_mb", "{:,.0f}"), ("trie + view / forest over load MB", "built_mb", "{:,.0f}"), ("view / forest arrays MB", "structure_mb", "{:,.0f}"),
        ("peak RSS while building MB", "rss_peak_mb", "{:,.0f}"), ("stock trie arrays MB", "stock_trie_mb", "{:,.0f}"),
        ("view / forest build s", "structure_s", "{:.2f}"),
        ("candidates, cold by prefix, ms", "candidates_prefix_ms", "{:.0f}"),
        ("candidates, cold by SID point, ms", "candidates_point_ms", "{:.0f}"), ("lists digest", "lists_sha256", "{}"),
        *((f"in turn: {s}, cold by {c}, ms", f"candidates_{c}_ms_{s}", "{:.0f}") for c in ("prefix", "point")
          for s in MODES), *((f"in turn: {s} lists digest", f"lists_sha256_{s}", "{}") for s in MODES))


def table(results: list[dict]) -> str:
    """One column per (index, structure)."""
    heads = [f"{r['products'] // 1000:,}k {r['mode']}" if "products" in r else r["mode"] for r in results]
    lines = [f"{'':36}" + "".join(f"{h:>18}" for h in heads)]
    for label, key, fmt in ROWS:
        cells = [fmt.format(r[key]) if key in r and (r["mode"] != BOTH or not key.startswith(("rss", "growth", "built")))
                 else "-" for r in results]
        lines.append(f"{label:36}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, nargs="+", required=True, help="saved RetailerIndex folders")
    parser.add_argument("--forest-max", type=int, default=500_000, help="build the pair forest up to this many products")
    parser.add_argument("--point-max", type=int, default=500_000,
                        help="time cold-start slots by SID point up to this many products (every new product's "
                             "point is compared with every query's: minutes per batch beyond)")
    parser.add_argument("--forest-headroom", type=float, default=8000,
                        help="build the pair forest only while the machine has this many MB available (it peaks "
                             "at 6.4 GB at 500k; an out-of-memory kill could strike another job)")
    parser.add_argument("--modes", nargs="+", choices=[*MODES, BOTH], default=list(MODES),
                        help="view, forest: one interpreter each (memory); both: candidates timed in turn")
    parser.add_argument("--out", type=Path, help="folder for index-memory.json")
    parser.add_argument("--child", choices=[*MODES, BOTH], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n = json.loads((args.index[0] / "index.json").read_text())["n_items"]
        print(json.dumps(measure(args.child, args.index[0], point=n <= args.point_max)))
        return []
    results = []
    for path in args.index:
        n = json.loads((path / "index.json").read_text())["n_items"]
        for mode in args.modes:
            if mode != "view" and n > args.forest_max:
                continue
            if mode != "view" and available_mb() < args.forest_headroom:
                print(f"{path}: pair forest skipped, {available_mb():,.0f} MB available", flush=True)
                continue
            got = child(mode, path, point=n <= args.point_max)
            got["index"] = str(path)
            if "rss_ready_mb" in got:
                got["growth_mb"] = got["rss_ready_mb"] - got["rss_trie_mb"]
                got["built_mb"] = got["rss_ready_mb"] - got["rss_loaded_mb"]
            print(json.dumps(got), flush=True)
            results.append(got)
    print(table(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "index-memory.json" if args.modes == list(MODES) else f"index-memory-{'-'.join(args.modes)}.json"
        (args.out / name).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
