"""``genrec train``: a dataset and a config in, a complete run folder out: Semantic IDs (built first when
the run has none), the tokenizer, the retailer index, and the trained decoder."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset, read_dataset
from genrec.data.sequences import split_events, train_sequences
from genrec.model.decoder import load_decoder, weights_digest
from genrec.rank.item_head import fit_item_head, head_metadata, save_head
from genrec.rank.memory import CoPurchaseMemory
from genrec.model.tokens import ItemTokens
from genrec.model.train import TrainResult, train_decoder
from genrec.run.config import RunConfig
from genrec.model.validation import sample_examples
from genrec.run.layout import DECODER_DIR, HEAD_FILE, INDEX_DIR, MEMORY_FILE, TOKENIZER_FILE, decoder_model
from genrec.run.semids import ensure_semids, record_dataset
from index.retailer_index import RetailerIndex
from semid.common import torch_threads
from semid.store import codebook_version, read_sids
from semid.tokenizer import SIDTokenizer

log = logging.getLogger(__name__)


def dedup_capacity(sids: pa.Table) -> int:
    """Room in the disambiguation range for cold-start products joining collision groups later."""
    needed = int(np.max(sids.column("dedup").to_numpy(), initial=0)) + 1
    return max(2 * needed, needed + 8)


def build_tokenizer(run: Path, ds: Dataset, cfg: RunConfig) -> SIDTokenizer:
    """The run's SID tokenizer: its codebook sizes, a dedup range with room to grow, the retailers."""
    version = codebook_version(run)
    sids = read_sids(run, expected_version=version)
    retailers = ds.events.column("retailer_id").drop_null().unique().to_numpy()
    if ds.assortment is not None:
        retailers = np.union1d(retailers, ds.assortment.column("retailer_id").to_numpy())
    tok = SIDTokenizer.from_sids(sids, cfg.semid.codebook_sizes, capacity=dedup_capacity(sids),
                                 retailer_ids=retailers, codebook_version=version)
    tok.save(run / TOKENIZER_FILE)
    return tok


def training_popularity(ds: Dataset, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """Interactions per product in the training part of the split only (held-out items never count)."""
    train = split_events(ds.events, cfg.decoder.max_items, cfg.sequence)[0].train
    ids, counts = np.unique(train.target_items, return_counts=True)
    return ids, counts.astype(np.float64)


def established_items(ds: Dataset, ids: np.ndarray) -> np.ndarray:
    """Per product of ``ids``: whether the catalog lists it from the start of the interaction log
    (``first_seen`` at or before the earliest event). One of those with no training interactions is
    unpopular, not new, so it stays out of the cold-start pool; an unknown ``first_seen`` says nothing."""
    first_seen = ds.items.column("first_seen")
    if first_seen.null_count == len(first_seen) or ds.events.num_rows == 0:
        return np.zeros(ids.size, bool)
    start = pc.min(ds.events.column("ts")).as_py()
    listed = pc.fill_null(pc.less_equal(first_seen, start), False).to_numpy(zero_copy_only=False)
    catalog = ds.items.column("item_id").to_numpy()
    order = np.argsort(catalog)
    at = order[np.minimum(np.searchsorted(catalog, ids, sorter=order), catalog.size - 1)]
    return listed[at] & (catalog[at] == ids)


def build_index(run: Path, ds: Dataset, cfg: RunConfig, item_tokens: ItemTokens, tok: SIDTokenizer) -> RetailerIndex:
    """Every product with its token row, SID string and training popularity, plus who stocks what."""
    sids = read_sids(run, expected_version=tok.codebook_version)
    index = RetailerIndex(tok.tokens_per_item, tok.vocab_size, tok.codebook_version)
    pop_ids, pop = training_popularity(ds, cfg)
    ids = item_tokens.item_ids
    popularity = np.zeros(ids.size)
    where = np.searchsorted(pop_ids, ids)
    hit = (where < pop_ids.size) & (pop_ids[np.minimum(where, pop_ids.size - 1)] == ids)
    popularity[hit] = pop[where[hit]]
    index.add(ids, item_tokens.tokens, popularity=popularity, sids=sids.column("sid").to_numpy(zero_copy_only=False),
              established=established_items(ds, ids))
    if ds.assortment is not None:
        index.add(ds.assortment.column("item_id").to_numpy(), retailer_ids=ds.assortment.column("retailer_id").to_numpy())
    index.save(run / INDEX_DIR)
    return index


def build_serving_parts(data: Path, cfg: RunConfig, run: Path) -> tuple[Dataset, SIDTokenizer, ItemTokens]:
    """The run's tokenizer and retailer index from its SIDs and ``data`` (written into the run), with the
    dataset and item tokens they were built from; cheap, so a change to the index needs no retraining."""
    # what the index and the cold-start pool read of the catalog: no titles, texts or precomputed vectors,
    # which would stay in memory through the decoder's training
    ds = read_dataset(data, item_columns=("item_id", "first_seen"))
    tok = build_tokenizer(run, ds, cfg)
    item_tokens = ItemTokens.from_sids(read_sids(run, expected_version=tok.codebook_version), tok)
    build_index(run, ds, cfg, item_tokens, tok)
    build_memory(run, ds, cfg, item_tokens)
    return ds, tok, item_tokens


def build_memory(run: Path, ds: Dataset, cfg: RunConfig, item_tokens: ItemTokens) -> Path | None:
    """The co-purchase memory (``genrec.rank.memory``) from the training split, when the config weighs it or
    the learned ranker reads it (its ``co`` source and features)."""
    path = run / MEMORY_FILE
    if cfg.memory.weight <= 0 and cfg.rank.ranker != "learned":
        path.unlink(missing_ok=True)
        return None
    train = split_events(ds.events, cfg.decoder.max_items, cfg.sequence)[0].train
    return CoPurchaseMemory.build(train, item_tokens.item_ids, cfg.memory).save(path)


def train_run(data: Path, cfg: RunConfig, run: Path, resume: bool = True) -> TrainResult:
    """Build whatever the run folder lacks, then train (or resume training) the decoder."""
    ensure_semids(data, cfg, run)
    record_dataset(run, data)
    ds, tok, item_tokens = build_serving_parts(data, cfg, run)
    result = train_decoder(ds.events, item_tokens, tok, cfg.decoder, cfg.train, run / DECODER_DIR,
                           seq_cfg=cfg.sequence, resume=resume)
    build_item_head(run, ds, cfg, item_tokens)
    return result


def build_item_head(run: Path, ds: Dataset, cfg: RunConfig, item_tokens: ItemTokens) -> Path | None:
    """The learned item head (``genrec.rank.item_head``) on the run's trained decoder, from the training
    split, when the config weighs it. Kept when it was trained on these decoder weights with this config (a
    resumed or rescored run does not train it again)."""
    path = run / HEAD_FILE
    if cfg.item_head.weight <= 0:
        path.unlink(missing_ok=True)
        return None
    version = weights_digest(decoder_model(run))
    if path.is_file():
        meta = head_metadata(path)
        same = json.loads(meta.get("config", "{}")) == dataclasses.asdict(cfg.item_head)
        if same and meta.get("decoder_version") == version:
            return path
    splits = split_events(ds.events, cfg.decoder.max_items, cfg.sequence)[0]
    model = load_decoder(decoder_model(run), codebook_version=codebook_version(run)).float().eval()
    validation = sample_examples(splits.validation, cfg.item_head.eval_examples, cfg.item_head.seed)
    with torch_threads(cfg.train.threads):  # the decoder's thread budget
        head, info = fit_item_head(model, item_tokens, train_sequences(splits.train), validation, item_tokens.item_ids,
                                   cfg.item_head, log=log.info)
    log.info("item head: best validation NDCG@10 %.4f (head alone) in %.0fs", info["best_ndcg@10"], info["train_s"])
    return save_head(head, item_tokens.item_ids, cfg.item_head, path, decoder_version=version)
