"""What the HTML report shows, gathered from a run folder into one JSON-ready dict: codebook health, the
similarity-depth curve, taxonomy and co-purchase figures, the catalog sorted by SID (so every prefix is a
contiguous range the page can expand without an index), each product's nearest neighbours, the decoder's
training history and, where the run was evaluated, its comparison table."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from genrec.model.training_log import read_training_log
from genrec.run.layout import DECODER_DIR, EVAL_FILE, SEMID_EVAL_FILE, SIDS_FILE
from genrec.run.semids import evaluate_semids, load_run_items
from semid.common import DataError
from semid.intrinsic import PairProtocol, nearest_neighbours, normalize, sample_pairs, shared_depth
from semid.sids import codes_matrix
from semid.store import load_codebook, read_sids

log = logging.getLogger(__name__)

COSINE_BINS = np.round(np.arange(-0.2, 1.0001, 0.05), 2)  # edges of the similarity-depth curve


def run_metrics(run: Path, seed: int = 0) -> dict:
    """The run's intrinsic metrics: ``semid_eval.json`` when it is newer than ``sids.parquet``, else computed."""
    cached, sids = run / SEMID_EVAL_FILE, run / SIDS_FILE
    if cached.is_file() and cached.stat().st_mtime >= sids.stat().st_mtime:
        return json.loads(cached.read_text())
    return evaluate_semids(run, seed=seed)


def similarity_curve(unit: np.ndarray, codes: np.ndarray, seed: int = 0) -> dict:
    """Mean number of shared SID levels of product pairs against their embedding cosine, in bins of 0.05,
    over the same seeded pair sample as the Spearman figure (nearest-neighbour and random pairs)."""
    pairs = sample_pairs(unit, seed, PairProtocol())
    depth = shared_depth(codes, pairs.left, pairs.right)
    which = np.clip(np.digitize(pairs.cosine, COSINE_BINS) - 1, 0, COSINE_BINS.size - 2)
    count = np.bincount(which, minlength=COSINE_BINS.size - 1)
    total = np.bincount(which, weights=depth, minlength=COSINE_BINS.size - 1)
    keep = count > 0
    centres = (COSINE_BINS[:-1] + COSINE_BINS[1:]) / 2
    return {"cosine": np.round(centres[keep], 3).tolist(),
            "mean_depth": np.round(total[keep] / count[keep], 4).tolist(), "pairs": count[keep].tolist()}


def catalog_payload(run: Path, neighbours: int = 5) -> tuple[dict, np.ndarray, np.ndarray]:
    """The catalog sorted by (codes, dedup): ids, names, category path ids (into ``paths``), flat codes, SID
    strings, and each product's ``neighbours`` nearest by embedding cosine (rows of the sorted catalog).
    Also returns the sorted unit embeddings and codes for the other figures."""
    model = load_codebook(run)
    items, vectors = load_run_items(run)
    sids = read_sids(run, expected_version=model.codebook_version)
    sid_ids, item_ids = sids.column("item_id").to_numpy(), items.column("item_id").to_numpy()
    by_id = np.argsort(sid_ids, kind="stable")
    pos = by_id[np.minimum(np.searchsorted(sid_ids[by_id], item_ids), len(by_id) - 1)]
    if not np.array_equal(sid_ids[pos], item_ids):
        raise DataError(f"{run}: some products of the catalog have no SID")
    sids = sids.take(pos)
    codes = codes_matrix(sids)
    dedup = sids.column("dedup").to_numpy().astype(np.int64)
    order = np.lexsort((dedup, *codes.T[::-1]))
    sid_text = sids.column("sid").take(order).to_pylist()
    codes, dedup, unit = codes[order], dedup[order], normalize(vectors[order])
    items = items.take(order)
    path_text = pc.fill_null(pc.binary_join(items.column("category_path"), " > "), "")
    encoded = pc.dictionary_encode(path_text).combine_chunks()
    start = time.perf_counter()
    nn = nearest_neighbours(unit, np.arange(len(unit)), neighbours)
    log.info("report: %d nearest neighbours of %d products (%.1fs)", nn.shape[1], len(unit), time.perf_counter() - start)
    catalog = {
        "ids": items.column("item_id").to_pylist(),
        "names": items.column("title").to_pylist(),
        "paths": encoded.dictionary.to_pylist(),
        "path": encoded.indices.to_numpy().astype(np.int64).tolist(),
        "codes": codes.ravel().tolist(),
        "sids": sid_text,
        "nn": nn.ravel().tolist(),
        "k_nn": int(nn.shape[1]),
    }
    return catalog, unit, codes


def decoder_payload(run: Path) -> dict:
    """Training loss and validation metrics by epoch, and the evaluation result where there is one."""
    history = read_training_log(run / DECODER_DIR)
    epochs = [h for h in history if "lr" in h]
    evals = [h for h in history if "lr" not in h]
    out: dict = {"epochs": epochs, "evals": evals, "eval": None}
    if (run / EVAL_FILE).is_file():
        result = json.loads((run / EVAL_FILE).read_text())
        out["eval"] = {"models": result.get("models", {}), "slices": result.get("slices", {}),
                       "protocol": result.get("protocol", {})}
    return out


def report_payload(run: str | Path, seed: int = 0, neighbours: int = 5) -> dict:
    """Everything the report page draws, from the run folder ``run``."""
    run = Path(run)
    model = load_codebook(run)
    catalog, unit, codes = catalog_payload(run, neighbours)
    metrics = run_metrics(run, seed)
    level1 = np.bincount(codes[:, 0], minlength=model.codebook_sizes[0])
    return {
        "run": str(run.resolve()),
        "codebook_version": model.codebook_version,
        "codebook_sizes": model.codebook_sizes,
        "metrics": metrics,
        "level1_counts": level1.tolist(),
        "curve": similarity_curve(unit, codes, seed),
        "catalog": catalog,
        "decoder": decoder_payload(run),
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
