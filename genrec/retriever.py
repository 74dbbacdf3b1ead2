"""The one way to get recommendations out of a run: histories in, K products per history out, through the
trained decoder's constrained beam search and the retailer index. Evaluation, serving and carousels all
call ``Retriever``."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genrec.beam_search import constrained_beam_search
from genrec.decoder import decoder_meta, load_decoder
from genrec.pipeline import INDEX_DIR, MODEL_DIR, TOKENIZER_FILE
from genrec.sequences import NO_RETAILER, query_examples
from genrec.tokens import ItemTokens, collate, tokenize_examples
from index.retailer_index import Candidates, RetailerIndex
from semid.catalog import DataError
from semid.store import codebook_version
from semid.tokenizer import BOS, PAD, SIDTokenizer


@dataclass(frozen=True)
class Candidate:
    """One recommended product: its id, its Semantic ID, and the decoder's log-probability of that SID."""

    item_id: int
    sid: str
    score: float


class Retriever:
    """A loaded run: decoder, tokenizer and retailer index, ready to decode batches of histories."""

    def __init__(self, model, tokenizer: SIDTokenizer, index: RetailerIndex, beam_width: int = 20,
                 model_version: str | None = None) -> None:
        meta = decoder_meta(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.beam_width = beam_width
        self.max_items = int(meta["decoder"]["max_items"])
        self.retailer_token = bool(meta.get("retailer_token", False))
        self.codebook_version = tokenizer.codebook_version
        self.model_version = model_version or str(meta.get("codebook_version"))
        ids = index.item_ids
        self.item_tokens = ItemTokens(ids, index.rows_of(ids)[0])

    @classmethod
    def from_run(cls, run: str | Path, beam_width: int = 20, device: str = "cpu") -> "Retriever":
        """Load a run folder written by ``genrec train``; every part must share one codebook version."""
        run = Path(run)
        version = codebook_version(run)
        tokenizer = SIDTokenizer.load(run / TOKENIZER_FILE, codebook_version=version)
        index = RetailerIndex.load(run / INDEX_DIR, codebook_version=version)
        model = load_decoder(run / MODEL_DIR, codebook_version=version).to(device)
        weights = run / MODEL_DIR / "model.safetensors"
        model_version = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else None
        return cls(model, tokenizer, index, beam_width, model_version)

    def known(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Which item ids the run has SIDs for."""
        return self.item_tokens.known(np.asarray(item_ids, dtype=np.int64))

    def retrieve(
        self,
        histories: Sequence[Sequence[int]],
        retailer_id: int | Sequence[int | None] | None = None,
        k: int = 10,
        exclude_history: bool = False,
    ) -> list[list[Candidate]]:
        """Per history (item ids, oldest first; unknown ids are skipped), its top ``k`` products."""
        out = self.retrieve_arrays(histories, retailer_id, k, exclude_history)
        return [
            [Candidate(int(i), str(s), float(sc)) for i, s, sc in zip(ids, sids, scores) if i >= 0]
            for ids, sids, scores in zip(out.item_ids, out.sids, out.scores)
        ]

    def retrieve_arrays(
        self,
        histories: Sequence[Sequence[int]],
        retailer_id: int | Sequence[int | None] | None = None,
        k: int = 10,
        exclude_history: bool = False,
    ) -> Candidates:
        """Like ``retrieve`` but as [B, K] arrays (item -1 where fewer than K exist), for batch jobs."""
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}")
        histories = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        retailers = self._retailers(retailer_id, len(histories))
        known = [h[self.known(h)] for h in histories]
        result = _empty(len(histories), k)
        for r in np.unique(retailers):
            rows = np.flatnonzero(retailers == r)
            part = self._decode([known[i] for i in rows], None if r == NO_RETAILER else int(r), k, exclude_history)
            for name in ("item_ids", "scores", "sids", "from_beam"):
                getattr(result, name)[rows] = getattr(part, name)
        return result

    def _retailers(self, retailer_id, n: int) -> np.ndarray:
        if retailer_id is None or np.isscalar(retailer_id):
            values = [retailer_id] * n
        else:
            values = list(retailer_id)
            if len(values) != n:
                raise DataError(f"{n} histories but {len(values)} retailer ids")
        return np.array([NO_RETAILER if v is None else int(v) for v in values], dtype=np.int64)

    @torch.inference_mode()
    def _decode(self, histories: list[np.ndarray], retailer: int | None, k: int, exclude: bool) -> Candidates:
        trie = self.index.trie_for(retailer)  # raises DataError for an unknown retailer
        retailer_ids = np.full(len(histories), NO_RETAILER if retailer is None else retailer, np.int64)
        use_token = self.retailer_token and retailer is not None and retailer in set(self.tokenizer.retailer_ids.tolist())
        queries = tokenize_examples(
            query_examples(histories, self.max_items, retailer_ids if use_token else None),
            self.item_tokens, BOS, self.tokenizer.encode_retailer if use_token else None, with_targets=False,
        )
        batch = collate(queries, np.arange(len(histories)), PAD, padding_side="left")
        device = next(self.model.parameters()).device
        width = max(self.beam_width, k)
        rows, scores = constrained_beam_search(
            self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device), trie, width, width,
        )
        return self.index.candidates(rows.cpu(), scores.cpu(), k, retailer,
                                     exclude_items=histories if exclude else None)


def _empty(batch: int, k: int) -> Candidates:
    return Candidates(
        item_ids=np.full((batch, k), -1, np.int64),
        scores=np.full((batch, k), -np.inf),
        sids=np.full((batch, k), "", dtype=object),
        from_beam=np.zeros((batch, k), bool),
    )
