"""The Semantic-ID stage of a run folder: embed a dataset's items, train the codebook, assign SIDs, and
the commands that read the result back (eval, assign for new products, audit)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from genrec.data.copurchase import collab_embeddings_from_dataset
from genrec.data.dataset import read_events
from genrec.data.sequences import split_events
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import CONFIG_FILE, DATASET_FILE, EMBEDDINGS_FILE, ITEMS_FILE, SIDS_FILE, TEXT_EMBEDDINGS_FILE
from semid.capacity import place_new
from semid.catalog import catalog_rows, copy_items, items_file, read_items
from semid.churn import carry_over_sids, migration_table, sid_churn
from semid.collab import combine, combine_file, fill_missing, impute_from_text
from semid.common import DataError, write_json
from semid.config import save_yaml
from semid.embeddings import embed_catalog, embed_items, read_embeddings, write_embeddings
from semid.intrinsic import codebook_health, collisions, copurchase_sharing, intrinsic_metrics
from semid.sids import assign_sids, codes_matrix, extend_sids
from semid.store import load_codebook, read_sids, save_codebook, write_sids
from semid.train import SemIDModel, train_codebook

log = logging.getLogger(__name__)



@dataclass
class SemIDStage:
    """What ``build_semids`` produced: the model, the SID table, and where it lies."""

    run: Path
    model: SemIDModel
    sids: pa.Table
    version: str


def build_semids(data: Path, cfg: RunConfig, run: Path, init_run: Path | None = None) -> SemIDStage:
    """Embed ``data``'s items, train the codebook (from ``init_run``'s when given, so most products keep
    their codes), assign SIDs and write everything into ``run``."""
    start = time.perf_counter()
    items = read_items(data, extras=False)  # the contract's columns: a column of vectors is read on its own
    run.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, run / CONFIG_FILE)
    record_dataset(run, data)
    copy_items(data, run / ITEMS_FILE)  # every column, a batch at a time
    item_ids = items.column("item_id").to_numpy()
    paths = items.column("category_path")  # as Arrow: node ids without a Python list per product
    # the co-purchase part before the vectors, so that its SVD's scratch never sits beside them
    collab = collab_part(data, item_ids, cfg) if cfg.embedding.collab_weight > 0 else None
    vectors = embed_catalog(items, items_file(data), cfg.embedding)
    del items
    (run / TEXT_EMBEDDINGS_FILE).unlink(missing_ok=True)  # a rebuild without the collaborative part
    if collab is not None:
        write_embeddings(item_ids, vectors, run / TEXT_EMBEDDINGS_FILE)
        collab = fill_missing(vectors, collab, cfg.embedding.collab_impute, inplace=True)
        del vectors  # the text part is read back from its file a block at a time, beside the joined vectors
        vectors = combine_file(run / TEXT_EMBEDDINGS_FILE, item_ids, collab, cfg.embedding.collab_weight)
        del collab
    write_embeddings(item_ids, vectors, run / EMBEDDINGS_FILE)
    log.info("embeddings: %s products x %d dims (%s), %.1fs", f"{len(item_ids):,}", vectors.shape[1],
             "text and co-purchase" if cfg.embedding.collab_weight > 0 else "text", time.perf_counter() - start)
    init = load_codebook(init_run) if init_run is not None else None
    if init is not None and init.input_dim != vectors.shape[1]:
        raise DataError(f"--init-from {init_run}: its codebook reads {init.input_dim}-d embeddings, this config "
                        f"gives {vectors.shape[1]}-d (embedding model or collab settings differ); retrain fresh")
    model, history = train_codebook(vectors, paths, cfg.semid, init=init)
    codes = model.assign(vectors)
    if init_run is not None:  # products whose codes did not move keep their whole SID, dedup token included
        sids = carry_over_sids(read_sids(init_run), item_ids, codes, model.codebook_version)
    else:
        sids = assign_sids(item_ids, codes, model.codebook_version)
    health = {**codebook_health(codes, model.codebook_sizes), **collisions(codes, None)}
    version = save_codebook(run, model, sids, history, health)
    log.info("codebook %s: %s products, %.1f%% unique before dedup", version, f"{len(item_ids):,}",
             100 * health.get("unique_fraction", float("nan")))
    log.info("codebook %s: codes used per level %s", version,
             " / ".join(f"{u:.0%}" for u in health.get("utilization", [])))
    return SemIDStage(run, model, read_sids(run), version)


def ensure_semids(data: Path, cfg: RunConfig, run: Path) -> None:
    """Build the run's SIDs unless it has them (``genrec train`` calls this before the decoder and ranker
    modules load, about 0.16 GB resident that would otherwise sit beside the catalog's vectors)."""
    if not (run / SIDS_FILE).is_file():
        build_semids(data, cfg, run)


def collab_part(data: Path, item_ids: np.ndarray, cfg: RunConfig) -> np.ndarray:
    """Co-purchase vectors of ``item_ids`` learned from the training part of ``data``'s sequences
    (``semid.collab``), zero rows for products with none. ``build_semids`` joins them to the text vectors,
    ``[sqrt(1-w) * text, sqrt(w) * collab]``, after products with none borrow their text neighbours'
    (``embedding.collab_impute``; 0: text only)."""
    emb = cfg.embedding
    start = time.perf_counter()
    collab, read = collab_embeddings_from_dataset(data, item_ids, cfg.sequence, emb.collab_dim, emb.collab_window,
                                                  cfg.semid.seed)
    warm = int(np.count_nonzero(np.any(collab != 0, axis=1)))
    log.info("collaborative part: %d dims from co-purchases within %d positions (%d events counted in %s, %.1fs), "
             "weight %.2f; %d of %d products have one, %d get the text part only", emb.collab_dim, emb.collab_window,
             read["events"], read["engine"], time.perf_counter() - start, emb.collab_weight, warm, item_ids.size,
             item_ids.size - warm)
    return collab


def embed_new_items(items: pa.Table, cfg: RunConfig, run: Path | None = None) -> np.ndarray:
    """Vectors for products outside the run's training data, shaped like the run's: the text vector, plus,
    when the run has a collaborative part, one borrowed from the text neighbours among ``run``'s products
    with purchases (no purchases yet), exactly as cold products in training (zero without ``run``)."""
    vectors = embed_items(items, cfg.embedding)
    emb = cfg.embedding
    if emb.collab_weight > 0:
        collab = np.zeros((vectors.shape[0], emb.collab_dim), dtype=np.float32)
        if run is not None and emb.collab_impute > 0:
            ref_text, ref_collab = run_collab_parts(run, emb.collab_weight)
            warm = np.any(ref_collab != 0, axis=1)
            collab = impute_from_text(vectors, ref_text[warm], ref_collab[warm], emb.collab_impute)
        vectors = combine(vectors, collab, emb.collab_weight)
    return vectors


def run_collab_parts(run: Path, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """A collaborative run's products as (text vectors, collaborative vectors), rows aligned."""
    ids, joined = read_embeddings(run / EMBEDDINGS_FILE)
    text_ids, text = read_embeddings(run / TEXT_EMBEDDINGS_FILE)
    if not np.array_equal(ids, text_ids):
        raise DataError(f"{run}: {EMBEDDINGS_FILE} and {TEXT_EMBEDDINGS_FILE} list different products")
    return text, joined[:, text.shape[1]:] / np.sqrt(weight)


def record_dataset(run: Path, data: Path) -> None:
    """Remember which dataset the run was built from."""
    write_json({"path": str(Path(data).resolve())}, run / DATASET_FILE, indent=None)


def run_dataset(run: Path, data: Path | None = None) -> Path:
    """The dataset to use with ``run``: ``data`` when given, else the one the run was built from."""
    if data is not None:
        return Path(data)
    path = Path(run) / DATASET_FILE
    if not path.is_file():
        raise DataError(f"{path}: the run does not record its dataset; pass --data DIR")
    return Path(json.loads(path.read_text())["path"])


def load_run_items(run: Path) -> tuple[pa.Table, np.ndarray]:
    """The catalog and its embeddings as the run saw them, rows aligned."""
    items = read_items(run / ITEMS_FILE)
    ids, vectors = read_embeddings(run / EMBEDDINGS_FILE)
    if not np.array_equal(ids, items.column("item_id").to_numpy()):
        raise DataError(f"{run}: {EMBEDDINGS_FILE} and {ITEMS_FILE} do not list the same items in order")
    return items, vectors


def evaluate_semids(run: Path, seed: int = 0, data: Path | None = None) -> dict:
    """Intrinsic metrics of the run's codebook over its own catalog and, where the run's dataset (or
    ``data``) can be read, how often its held-out next purchases share a prefix with the one before."""
    model = load_codebook(run)
    items, vectors = load_run_items(run)
    sids = _aligned_sids(run, model, items)
    codes = codes_matrix(sids)
    metrics = intrinsic_metrics(
        vectors,
        codes,
        sids.column("dedup").to_numpy(),
        items.column("category_path"),
        model.codebook_sizes,
        reconstruction_error=model.reconstruction_error(vectors),
        seed=seed,
    )
    source = _events_source(run, data)
    if source is not None:
        start = time.perf_counter()
        cfg = load_run_config(run / CONFIG_FILE)
        rows = catalog_rows(items.column("item_id").to_numpy(),
                            np.stack(heldout_pairs(read_events(source), cfg)))
        left, right = rows
        known = (left >= 0) & (right >= 0)
        metrics.update(copurchase_sharing(codes, left[known], right[known], seed))
        log.info("co-purchase sharing over %d held-out purchases (%.1fs, dataset %s)", metrics["n_copurchase_pairs"],
                 time.perf_counter() - start, source.name)
    return metrics


def heldout_pairs(events: pa.Table, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """(last product of the history, product bought next) item ids of every validation target: purchases
    the codebook's co-purchase part never saw, and that picking a codebook on them does not touch the test."""
    splits, _ = split_events(events, cfg.decoder.max_items, cfg.sequence)
    val = splits.validation
    last = val.history_items[val.history_offsets[1:] - 1]
    return np.repeat(last, np.diff(val.target_offsets)), val.target_items


def _events_source(run: Path, data: Path | None) -> Path | None:
    """``data``, else the run's recorded dataset when it is still there (None: no co-purchase metrics)."""
    if data is not None:
        return Path(data)
    try:
        source = run_dataset(run)
    except DataError:
        return None
    if not (source / "events.parquet").is_file():
        log.warning("%s: its dataset %s is gone; co-purchase sharing left out (pass --data)", run, source)
        return None
    return source


def _aligned_sids(run: Path, model: SemIDModel, items: pa.Table) -> pa.Table:
    sids = read_sids(run, expected_version=model.codebook_version)
    order = {int(i): k for k, i in enumerate(sids.column("item_id").to_numpy())}
    try:
        rows = [order[int(i)] for i in items.column("item_id").to_numpy()]
    except KeyError as e:
        raise DataError(f"{run}: item {e.args[0]} of the catalog has no SID") from e
    return sids.take(pa.array(rows))


def assign_new_items(run: Path, items_file: Path, cfg: RunConfig | None = None) -> pa.Table:
    """Cold start: SIDs for products the codebook never saw, from the trained encoder without retraining;
    no new product reuses an existing full SID. The run's SID table is extended in place."""
    model = load_codebook(run)
    existing = read_sids(run, expected_version=model.codebook_version)
    new_items = read_items(items_file)
    if cfg is None:
        from genrec.run.config import load_run_config

        cfg = load_run_config(run / CONFIG_FILE)
    vectors = embed_new_items(new_items, cfg, run)
    if vectors.shape[1] != model.input_dim:
        raise DataError(f"{items_file}: embeddings have dim {vectors.shape[1]}, the codebook expects {model.input_dim}")
    ids = new_items.column("item_id").to_numpy()
    known = np.isin(ids, existing.column("item_id").to_numpy())
    if known.all():
        raise DataError(f"{items_file}: every product already has an SID in {run}")
    if known.any():
        log.warning("%d products already have SIDs; keeping their SIDs", int(known.sum()))
    ids, vectors = ids[~known], vectors[~known]
    table = extend_sids(existing, ids, new_codes(model, vectors, existing))
    write_sids(run, table, model.codebook_version)
    return table.filter(pa.compute.is_in(table.column("item_id"), value_set=pa.array(ids)))


def new_codes(model: SemIDModel, vectors: np.ndarray, existing: pa.Table) -> np.ndarray:
    """Codes for new products; with ``semid.last_code_capacity`` a new product whose tuple is full takes the
    nearest last-level codeword with room (``semid.capacity.place_new``)."""
    codes = model.encode(vectors)
    cap = model.cfg.last_code_capacity
    if not cap:
        return codes
    return place_new(codes, model.last_residuals(vectors, codes), model.codewords()[-1], codes_matrix(existing), cap)


def audit_run(run: Path, min_support: int = 5, top: int | None = None) -> pa.Table:
    """Catalog audit queue: products whose SID neighbourhood disagrees with their category label."""
    from semid.audit import audit_catalog

    model = load_codebook(run)
    items, vectors = load_run_items(run)
    sids = _aligned_sids(run, model, items)
    return audit_catalog(
        items.column("item_id").to_numpy(),
        items.column("title").to_pylist(),
        items.column("category_path"),
        codes_matrix(sids),
        embeddings=vectors,
        min_support=min_support,
        top=top,
        sids=sids.column("sid").to_pylist(),
        unlabelled=("missing",),  # Instacart files unplaced products under department/aisle "missing"
    )


def churn_between(old_run: Path, new_run: Path) -> tuple[dict, pa.Table]:
    """SID churn and the old SID -> new SID migration table between two runs (or ``sids.parquet`` files),
    e.g. a run and its retrain with ``--init-from``."""
    old, new = read_sids(old_run), read_sids(new_run)
    try:
        report = sid_churn(old, new)
    except DataError as e:
        raise DataError(f"{old_run} -> {new_run}: {e}") from e
    report = {"old": str(old_run), "new": str(new_run), **report}
    return report, migration_table(old, new)
