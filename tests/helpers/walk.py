"""A world where the next item is a function of the last one (shoppers walk the catalog in steps of 3), and a
tiny decoder trainer on it: what the training recipe's tests train, in one process or under ``accelerate
launch`` (``tests/unit/test_train.py``)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from genrec.data.sequences import SequenceConfig, build_histories, make_splits
from genrec.model.decoder import DecoderConfig, build_decoder
from genrec.model.tokens import ItemTokens, tokenize_examples
from genrec.model.train import DecoderTrainer, TrainConfig
from genrec.model.validation import RecallEvaluator
from semid.tokenizer import BOS, PAD, SIDTokenizer

N_ITEMS = 32


def walk_world(n_users: int = 120, length: int = 7, seed: int = 0):
    """Shoppers who walk the catalog in steps of 3: the next item is a function of the last one."""
    tok = SIDTokenizer([4, 8], dedup_size=1, codebook_version="cb-test")
    ids = np.arange(N_ITEMS)
    items = ItemTokens(ids, tok.encode_batch(np.stack([ids // 8, ids % 8], 1)))
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_ITEMS, n_users)
    user = np.repeat(np.arange(n_users), length)
    t = np.tile(np.arange(length), n_users)
    ev = pa.table({"user_id": user, "session_id": user, "ts": t, "item_id": (start[user] + 3 * t) % N_ITEMS,
                   "position": np.zeros(user.size, np.int32)})
    splits = make_splits(build_histories(ev), max_items=4, cfg=SequenceConfig(split="leave_one_out"))
    return tok, items, splits


def train_config(**kw) -> TrainConfig:
    """A quiet one-thread recipe with a short warm-up; ``kw`` overrides."""
    return TrainConfig(**{"progress": False, "threads": 1, "warmup_steps": 5, **kw})


def walk_trainer(out, cfg: TrainConfig, dropout: float = 0.1, with_eval: bool = True, arch: str = "llama"):
    """A trainer of a one-layer decoder on the walk world, scored by recall@5 on 40 validation shoppers."""
    tok, items, splits = walk_world()
    dcfg = DecoderConfig(arch=arch, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_items=4, dropout=dropout,
                         id_embeddings=arch == "item")
    evaluator = RecallEvaluator(splits.validation.subset(np.arange(40)), items, BOS, PAD, k=5, beam_width=5,
                                vocab_size=tok.vocab_size) if with_eval else None
    levels = [*(tok.level_range(lv)[0] for lv in range(tok.tokens_per_item)), tok.level_range(tok.n_levels)[1]]
    return DecoderTrainer(
        cfg, lambda: build_decoder(dcfg, tok.vocab_size, tok.tokens_per_item, codebook_version="cb-test",
                                   level_offsets=levels, memorised=items.tokens),
        tokenize_examples(splits.train, items, BOS), out, evaluator, pad_id=PAD, model_extra={"retailer_token": False},
    )
