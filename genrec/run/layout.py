"""Every file and folder name of a run folder, in one place. A leaf of ``genrec`` (it imports only the
``semid`` modules that name the files semid itself reads, because ``semid`` stands alone: the catalog, the
embeddings and the codebook's files), so any layer may read it. README.md, "Run folder" lists the
same names (``tests/unit/test_docs.py`` checks).

    RUN/
      config.yaml             the resolved run config                       CONFIG_FILE
      dataset.json            where the run's dataset lives                 DATASET_FILE
      items.parquet           the catalog the codebook was trained on       ITEMS_FILE (``semid.catalog``)
      embeddings.parquet      what the codebook was trained on              EMBEDDINGS_FILE (``semid.embeddings``)
      text_embeddings.parquet the text part alone, when a collaborative part was added   TEXT_EMBEDDINGS_FILE
      codebook.safetensors, codebook.json, codebook_health.json, codebook_history.json, sids.parquet
                              the codebook (``semid.store``)
      tokenizer.json          the SID tokenizer                             TOKENIZER_FILE
      index/                  the retailer index (``index.persistence``)    INDEX_DIR
      memory.safetensors      the co-purchase memory, when the config weighs one   MEMORY_FILE
      item_head.safetensors   the learned item head, when the config weighs one    HEAD_FILE
      ranker.txt, ranker.json the learned ranker (LightGBM trees) and what it was trained on, with
                              rank.ranker: learned (``genrec.rank``)        RANKER_FILE, RANKER_META_FILE
      item_stats.safetensors  the per-product statistics the ranker reads   ITEM_STATS_FILE
      decoder/                the trainer's folder                          DECODER_DIR
        model/                the best decoder (a transformers folder)      MODEL_DIR
        checkpoint/           the last training state, for resuming         CHECKPOINT_DIR
        history.jsonl         one line per epoch and per validation         HISTORY_FILE
        train_result.json     the result of the last finished training      RESULT_FILE
      semid_eval.json         intrinsic codebook metrics (``genrec demo``)  SEMID_EVAL_FILE
      eval.json               the evaluation tables (``genrec demo``)       EVAL_FILE
      review.sqlite           the audit review decisions (``genrec review``)   REVIEW_DB_FILE
"""
from __future__ import annotations

from pathlib import Path

from semid.catalog import ITEMS_FILE
from semid.embeddings import EMBEDDINGS_FILE
from semid.store import CONFIG_FILE as CODEBOOK_FILE, HEALTH_FILE as CODEBOOK_HEALTH_FILE, SIDS_FILE
from semid.store import HISTORY_FILE as CODEBOOK_HISTORY_FILE, WEIGHTS_FILE as CODEBOOK_WEIGHTS_FILE

CONFIG_FILE = "config.yaml"
DATASET_FILE = "dataset.json"
TEXT_EMBEDDINGS_FILE = "text_embeddings.parquet"
TOKENIZER_FILE = "tokenizer.json"
INDEX_DIR = "index"
MEMORY_FILE = "memory.safetensors"
HEAD_FILE = "item_head.safetensors"
RANKER_FILE = "ranker.txt"
RANKER_META_FILE = "ranker.json"
ITEM_STATS_FILE = "item_stats.safetensors"
SEMID_EVAL_FILE = "semid_eval.json"
EVAL_FILE = "eval.json"
REVIEW_DB_FILE = "review.sqlite"

# the decoder's folder, written by the trainer (``genrec.model.train``); the names below live under it
DECODER_DIR = "decoder"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "history.jsonl"
RESULT_FILE = "train_result.json"

__all__ = [
    "CODEBOOK_FILE", "CODEBOOK_HEALTH_FILE", "CODEBOOK_HISTORY_FILE", "CODEBOOK_WEIGHTS_FILE", "SIDS_FILE",
    "CONFIG_FILE", "DATASET_FILE", "ITEMS_FILE", "EMBEDDINGS_FILE", "TEXT_EMBEDDINGS_FILE", "TOKENIZER_FILE",
    "INDEX_DIR", "MEMORY_FILE", "HEAD_FILE", "RANKER_FILE", "RANKER_META_FILE", "ITEM_STATS_FILE", "SEMID_EVAL_FILE", "EVAL_FILE", "REVIEW_DB_FILE", "DECODER_DIR",
    "MODEL_DIR", "CHECKPOINT_DIR", "HISTORY_FILE", "RESULT_FILE", "decoder_model",
]


def decoder_model(run: str | Path) -> Path:
    """The run's trained decoder: ``RUN/decoder/model``."""
    return Path(run) / DECODER_DIR / MODEL_DIR
