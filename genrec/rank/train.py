"""Train a run's learned ranker (``rank.ranker: learned``) after its decoder, on the run's own validation
split: each sampled shopper's history before the validation unit as the query, the validation item (or
basket) as the targets.

Why this never leaks the test: the decoder, the co-purchase memory and the popularity counts are built from
the training part of every shopper's sequence (``genrec.data.sequences.make_splits``), which ends before the
validation unit; the test unit comes after it and nothing here reads it. (The decoder's early stopping reads
validation examples too, so the ranker sees a decoder chosen on them: a selection effect, not a leak of
test targets.) The candidates and features come from ``Retriever.candidate_set``, the code path serving
uses. Kept on resume when ``ranker.json`` names the same decoder weights and rank config."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from genrec.data.dataset import read_events
from genrec.data.sequences import NO_RETAILER, Examples, Splits, split_events, train_sequences
from genrec.model.decoder import weights_digest
from genrec.rank.candidates import CandidateSet
from genrec.rank.config import RankConfig
from genrec.rank.item_stats import ItemStats
from genrec.rank.rankers import fit, labels
from genrec.retriever import Retriever
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import CONFIG_FILE, ITEM_STATS_FILE, RANKER_FILE, RANKER_META_FILE, decoder_model
from genrec.run.semids import run_dataset
from semid.common import DataError, atomic_write, torch_threads
from semid.config import save_yaml
from semid.progress import progress

log = logging.getLogger(__name__)

UNCAPPED = 1 << 30  # the again features read whole histories; the retriever caps the decoder's prompt itself
BATCH = 256  # queries per beam search


def train_ranker(run: Path, cfg: RunConfig, data: Path | None = None, show_progress: bool = True) -> Path | None:
    """Train and save the learned ranker when the config asks for one and the saved one is not up to date
    with the decoder and the rank config; remove a stale one when it does not ask."""
    run = Path(run)
    model_path, meta_path = run / RANKER_FILE, run / RANKER_META_FILE
    record_rank(run, cfg)
    if cfg.rank.ranker != "learned":
        for path in (model_path, meta_path, run / ITEM_STATS_FILE):
            path.unlink(missing_ok=True)
        return None
    version = weights_digest(decoder_model(run))
    if up_to_date(run, cfg, version):
        return model_path
    t0 = time.perf_counter()
    splits = run_splits(run_dataset(run, data), cfg)
    queries = validation_queries(splits, cfg)
    retriever = Retriever.from_run(run, ranker="none", dtype=cfg.rank.dtype)
    retriever.item_stats = ItemStats.build(train_sequences(splits.train), retriever.item_tokens.item_ids)
    retriever.item_stats.save(run / ITEM_STATS_FILE)
    with torch_threads(cfg.train.threads):
        cs = candidate_sets(retriever, queries, show_progress)
        decode_s = time.perf_counter() - t0
        ranker = fit(cs, labels(cs, queries.target_offsets, queries.target_items), cfg.rank, cfg.train.threads)
    ranker.meta.update(decoder_version=version, dtype=str(next(retriever.model.parameters()).dtype).removeprefix("torch."),
                       decode_s=round(decode_s, 1),
                       train_s=round(time.perf_counter() - t0, 1))
    holdout = ranker.meta["holdout_ndcg@10"]
    log.info("ranker: %d trees from %d queries (%.0f%% reachable), %s, %.0fs", ranker.meta["best_iteration"],
             ranker.meta["queries"], 100 * ranker.meta["target_in_candidates"],
             "no holdout" if holdout is None else f"holdout NDCG@10 {holdout:.4f}", ranker.meta["train_s"])
    return ranker.save(model_path, meta_path)


def record_rank(run: Path, cfg: RunConfig) -> None:
    """Write ``cfg``'s rank section into the run's config.yaml (what ``Retriever.from_run`` reads), when it
    differs: a run trained before it asked for a ranker then serves the one it has now."""
    path = run / CONFIG_FILE
    if not path.is_file():
        return
    saved = load_run_config(path)
    if saved.rank != cfg.rank:
        atomic_write(path, lambda tmp: save_yaml(dataclasses.replace(saved, rank=cfg.rank), tmp))


def up_to_date(run: Path, cfg: RunConfig, decoder_version: str) -> bool:
    """Whether the saved ranker was trained on these decoder weights with this rank config (a setting added
    since it was saved counts at its default)."""
    path = run / RANKER_META_FILE
    if not all(p.is_file() for p in (path, run / RANKER_FILE, run / ITEM_STATS_FILE)):
        return False
    meta = json.loads(path.read_text())
    saved = {**dataclasses.asdict(RankConfig()), **meta.get("config", {})}
    return meta.get("decoder_version") == decoder_version and saved == dataclasses.asdict(cfg.rank)


def run_splits(data: Path, cfg: RunConfig) -> Splits:
    """The run's dataset cut as its decoder's was, with whole histories."""
    return split_events(read_events(data), UNCAPPED, cfg.sequence)[0]


def validation_queries(splits: Splits, cfg: RunConfig) -> Examples:
    """A seeded sample of ``rank.train_queries`` validation examples with whole histories."""
    val = splits.validation
    if not len(val):
        raise DataError("no validation examples to train the ranker on (every shopper too short?)")
    n = cfg.rank.train_queries
    if n is not None and n < len(val):
        val = val.subset(np.sort(np.random.default_rng(cfg.rank.seed).choice(len(val), n, replace=False)))
    return val


def candidate_sets(retriever: Retriever, queries: Examples, show_progress: bool = True) -> CandidateSet:
    """The candidates with features of every query, as one set (query numbers as in ``queries``)."""
    parts = []
    with progress(len(queries), "ranker examples", "queries", show_progress, logger=log) as bar:
        for start in range(0, len(queries), BATCH):
            index = np.arange(start, min(start + BATCH, len(queries)))
            histories = retriever.known_parts([queries.history(i) for i in index])
            retailers = [None if r == NO_RETAILER else int(r) for r in queries.retailer_ids[index]]
            cs, _, _ = retriever.candidate_set(histories, retailers)
            cs.query = cs.query + start
            parts.append(cs)
            bar.update(index.size)
    return concat(parts, len(queries))


def concat(parts: list[CandidateSet], n_queries: int) -> CandidateSet:
    """Candidate sets of consecutive query ranges as one."""
    if not parts:
        raise DataError("rank: no candidates")
    return CandidateSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("query", "pos", "item_ids", "sources")),
                        n_queries, np.concatenate([p.features for p in parts]), parts[0].names)
