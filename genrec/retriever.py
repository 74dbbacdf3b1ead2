"""The one way to get recommendations out of a run: histories in, K products per history out. Evaluation,
serving, carousels and the ranker's training all call ``Retriever``.

A batch runs decode -> sources -> features -> ranker -> stock and de-duplication: the trained decoder's
constrained beam search, the candidate sources beside it (``genrec.rank.sources``), their feature columns
(``genrec.rank.features``) and the run's ranker (``genrec.rank.rankers``); the retailer index keeps what the
query's retailer stocks and opens the cold-start slots. A run whose ranker is ``weighted`` (every run made
before the rank stage) re-scores the beam alone, as it always did."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genrec.data.sequences import NO_RETAILER, query_examples
from genrec.model.beam_search import constrained_beam_search
from genrec.model.decoder import decoder_meta, inference_dtype, load_decoder, weights_digest
from genrec.model.item_decoder import pack_rows
from genrec.rank.item_head import HeadExpert
from genrec.rank.memory import CoPurchaseMemory
from genrec.model.tokens import ItemTokens, TokenizedExamples, collate, tokenize_examples
from genrec.rank import features
from genrec.rank.candidates import SOURCE_BITS, CandidateSet, pair_index, source_label, source_names, union
from genrec.rank.config import RankConfig
from genrec.rank.item_stats import ItemStats
from genrec.rank.rankers import LearnedRanker, best_first, ranked_slots
from genrec.rank.sources import again_source, beam_source, co_source, row_ranks
from genrec.run.config import RunConfig, load_run_config
from genrec.run.layout import (CONFIG_FILE, HEAD_FILE, INDEX_DIR, ITEM_STATS_FILE, MEMORY_FILE, RANKER_FILE,
                               RANKER_META_FILE, TOKENIZER_FILE, decoder_model)
from index.candidates import banned_keys, cold_slots, empty_candidates, mix_cold
from index.cold import ColdRanker, ColdStartConfig
from index.retailer_index import Candidates, RetailerIndex
from semid.common import DataError
from semid.store import codebook_version, load_codebook
from semid.tokenizer import BOS, PAD, SIDTokenizer


# TIGER's epsilon (run config ``cold_start.share``): the last 20% of each list (at least one slot) is open
# to products never interacted with in training; each open slot keeps its listed product unless a new one
# lies nearer the query's SID point (index.cold; measured in docs/cold-start.md, "Cold-start mixing by SID point");
# 0 turns it off.
DEFAULT_COLD_SHARE = ColdStartConfig().share


@dataclass(frozen=True)
class Candidate:
    """One recommended product: its id, its Semantic ID, its score, the source that proposed it ("generated",
    "buy again", "co-purchase", "new product", "similar"; ``genrec.rank.candidates``) and, with ``explain``,
    its feature values and every source that proposed it."""

    item_id: int
    sid: str
    # the ranker's score, higher first, comparable within one list only (not a probability): the learned
    # ranker's output (``rank.ranker: learned``), or the weighted ranker's product of experts in log space,
    # log p(SID) + memory.weight * log(floor + co-purchase) + item_head.weight * log p_head (the decoder's
    # log-probability alone where the run weighs no expert); a new product in a cold-start slot, or one filled
    # in where the beam ran short, scores below the list's others
    score: float
    source: str = "generated"
    features: dict | None = None


class Retriever:
    """A loaded run: decoder, tokenizer and retailer index, ready to decode batches of histories."""

    def __init__(self, model, tokenizer: SIDTokenizer, index: RetailerIndex, beam_width: int = 20,
                 model_version: str | None = None, cold_share: float = DEFAULT_COLD_SHARE,
                 cold_ranker: ColdRanker | None = None, memory: CoPurchaseMemory | None = None,
                 head: HeadExpert | None = None, ranker: LearnedRanker | None = None,
                 rank: RankConfig | None = None, item_stats: ItemStats | None = None) -> None:
        meta = decoder_meta(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.beam_width = beam_width
        cold_slots(1, cold_share)  # a DataError unless 0 <= cold_share < 1
        self.cold_share = cold_share
        self.cold_ranker = cold_ranker  # None: new products by SID prefix only (index.candidates.mix_cold)
        self.max_items = int(meta["decoder"]["max_items"])
        self.retailer_token = bool(meta.get("retailer_token", False))
        self.codebook_version = tokenizer.codebook_version
        self.model_version = model_version or str(meta.get("codebook_version"))
        ids = index.item_ids
        self.item_tokens = ItemTokens(ids, index.rows_of(ids)[0])
        self.memory = memory  # None: no co-purchase expert
        self.head = head  # None: no learned item head
        self.ranker = ranker  # None: the weighted product of experts over the beam
        self.rank = rank or RankConfig()
        self.item_stats = item_stats  # None: the ranker's features leave the per-product statistics out
        if ranker is not None and memory is None and "co" in self.rank.sources:
            raise DataError("the learned ranker reads the co-purchase memory, which the run lacks (retrain it)")
        if memory is not None or head is not None:
            keys = pack_rows(self.item_tokens.tokens, tokenizer.vocab_size)
            order = np.argsort(keys)
            self._row_keys, self._row_items = keys[order], self.item_tokens.item_ids[order]

    @classmethod
    def from_run(cls, run: str | Path, beam_width: int = 20, device: str = "cpu",
                 cold_share: float | None = None, dtype: str | None = None,
                 memory_weight: float | None = None, head_weight: float | None = None,
                 ranker: str | None = None) -> "Retriever":
        """Load a run folder written by ``genrec train``; every part must share one codebook version.
        ``cold_share``: the share of each list open to products never interacted with in training, those
        whose SIDs' codebook points lie nearest the query's (TIGER's cold-start mixing, ``index.cold``);
        None: the run config's ``cold_start.share``.
        ``dtype``: the decoder's weights, ``float32``, ``bfloat16`` or ``auto``
        (``genrec.model.decoder.inference_dtype``); None: the run config's ``rank.dtype`` (float32 unless set),
        the type its learned ranker's features were decoded in.
        ``memory_weight``: the co-purchase memory's weight (``genrec.rank.memory``); None: as the run saved it,
        0: off. ``head_weight``: the same for the learned item head (``genrec.rank.item_head``).
        ``ranker``: ``weighted``, ``learned`` or ``none`` (candidate sets only, for training a ranker); None:
        the run config's ``rank.ranker``."""
        run = Path(run)
        version = codebook_version(run)
        tokenizer = SIDTokenizer.load(run / TOKENIZER_FILE, codebook_version=version)
        index = RetailerIndex.load(run / INDEX_DIR, codebook_version=version)
        cfg = _run_config(run)
        dtype = inference_dtype(cfg.rank.dtype if dtype is None else dtype, device)
        model = load_decoder(decoder_model(run), codebook_version=version).to(device, dtype)
        model_version = weights_digest(decoder_model(run))
        cold = cfg.cold_start
        ranker_cold = ColdRanker.from_codewords(load_codebook(run).codewords(),
                                           [tokenizer.level_range(lv)[0] for lv in range(tokenizer.n_levels)],
                                           tokenizer.vocab_size, cold.history_weight)
        share = cold.share if cold_share is None else cold_share
        memory = None  # the run's co-purchase memory, written by training when its config weighs one
        if (run / MEMORY_FILE).is_file() and memory_weight != 0:
            memory = CoPurchaseMemory.load(run / MEMORY_FILE, weight=memory_weight)
        head = None  # the run's item head, written by training when its config weighs one
        if (run / HEAD_FILE).is_file() and head_weight != 0:
            head = HeadExpert.load(run / HEAD_FILE, weight=head_weight)
        learned, memory, stats = _rank_parts(run, ranker or cfg.rank.ranker, memory)
        out = cls(model, tokenizer, index, beam_width, model_version, share, ranker_cold, memory, head, learned,
                  cfg.rank, stats)
        out.check_ranker()
        return out

    def known(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Which item ids the run has SIDs for."""
        return self.item_tokens.known(np.asarray(item_ids, dtype=np.int64))

    def retrieve(
        self,
        histories: Sequence[Sequence[int]],
        retailer_id: int | Sequence[int | None] | None = None,
        k: int = 10,
        exclude_history: bool = False,
        explain: bool = False,
    ) -> list[list[Candidate]]:
        """Per history (item ids, oldest first; unknown ids are skipped), its top ``k`` products, each with
        the source that proposed it; ``explain``: with its feature values too (the learned ranker's)."""
        out = self.retrieve_lists(histories, retailer_id, [k], exclude_history, explain=explain)[k]
        feats = out.explained
        return [
            [Candidate(int(i), str(s), float(sc), source_label(src), None if feats is None else feats[b][j])
             for j, (i, s, sc, src) in enumerate(zip(ids, sids, scores, srcs)) if i >= 0]
            for b, (ids, sids, scores, srcs) in enumerate(zip(out.item_ids, out.sids, out.scores, out.sources))
        ]

    def retrieve_arrays(
        self,
        histories: Sequence[Sequence[int]],
        retailer_id: int | Sequence[int | None] | None = None,
        k: int = 10,
        exclude_history: bool | Sequence[bool] = False,
        explain: bool = False,
    ) -> Candidates:
        """Like ``retrieve`` but as [B, K] arrays (item -1 where fewer than K exist), for batch jobs. The
        whole batch is one beam search whatever its retailers: each query decodes under its retailer's
        slot of the index's stock trie, so it only gets products that retailer stocks.
        ``exclude_history``: for all queries or one flag per query; ``explain``: see ``retrieve_lists``."""
        return self.retrieve_lists(histories, retailer_id, [k], exclude_history, explain)[k]

    def retrieve_lists(
        self,
        histories: Sequence[Sequence[int]],
        retailer_id: int | Sequence[int | None] | None = None,
        ks: Sequence[int] = (10,),
        exclude_history: bool | Sequence[bool] = False,
        explain: bool = False,
    ) -> dict[int, Candidates]:
        """``retrieve_arrays`` for several list lengths from one beam search: each K's list has its own
        cold-start slots, so the top K is what a K-slot carousel shows (not the first K of a longer list).
        ``explain``: each list also carries ``explained``, per query and slot a dict of its feature values
        and sources (empty for the weighted ranker, which reads no features)."""
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise DataError(f"k must be >= 1, got {ks}")
        histories = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        retailers = self._retailers(retailer_id, len(histories))
        if not histories:
            return {k: empty_candidates(0, k) for k in ks}
        exclude = _per_query(exclude_history, len(histories))
        known = self.known_parts(histories)
        if self.ranker is None:
            lists = self._decode(known, retailers, ks, exclude)
            if explain:
                for c in lists.values():
                    c.explained = [[{"sources": source_names(b)} if b else {} for b in row] for row in c.sources]
            return lists
        return self._ranked(known, retailers, ks, exclude, explain)

    def known_parts(self, histories: list[np.ndarray]) -> list[np.ndarray]:
        """Each history without the items the run has no SID for (one lookup for the whole batch)."""
        flat = np.concatenate(histories)
        keep = self.known(flat)
        owner = np.repeat(np.arange(len(histories)), [h.size for h in histories])
        counts = np.bincount(owner[keep], minlength=len(histories))
        return np.split(flat[keep], np.cumsum(counts)[:-1])

    def _retailers(self, retailer_id, n: int) -> list[int | None]:
        """One retailer id (None: the whole catalog) per history."""
        if retailer_id is None or np.isscalar(retailer_id):
            values = [retailer_id] * n
        else:
            values = list(retailer_id)
            if len(values) != n:
                raise DataError(f"{n} histories but {len(values)} retailer ids")
        return [None if v is None or int(v) == NO_RETAILER else int(v) for v in values]

    @torch.inference_mode()
    def _decode(self, histories: list[np.ndarray], retailers: list[int | None], ks: list[int],
                exclude: np.ndarray) -> dict[int, Candidates]:
        """One constrained beam search over the batch, each query from its retailer's stock-trie node, then
        each K's list from its beams."""
        start = self.index.start_for(retailers)  # raises DataError for an unknown retailer
        batch = collate(self._queries(histories, retailers), np.arange(len(histories)), PAD, padding_side="left")
        device = next(self.model.parameters()).device
        experts = [e for e in (self.memory, self.head) if e is not None and e.cfg.weight > 0]
        width = max(self.beam_width, ks[-1], *(e.cfg.beam_width for e in experts))
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        decoded = constrained_beam_search(self.model, ids, mask, start.trie, width, width,
                                          start=start.nodes.to(device), start_depth=start.depth,
                                          with_prompt_state=self.head in experts)  # the head reads the prompt's state
        rows, scores = decoded[0].cpu(), decoded[1].cpu()
        if experts:
            states = decoded[2].cpu() if self.head in experts else None
            rows, scores = self._rescore(histories, states, rows, scores)
        banned = [h if e else None for h, e in zip(histories, exclude.tolist())] if exclude.any() else None
        last = self._last_rows(histories) if self.cold_share > 0 and self.cold_ranker is not None else None
        return {k: self.index.candidates(rows, scores, k, retailers, exclude_items=banned, cold_share=self.cold_share,
                                         cold_ranker=self.cold_ranker, last_rows=last) for k in ks}

    def _rescore(self, histories: list[np.ndarray], states: torch.Tensor | None, rows: torch.Tensor,
                 scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded rows re-ranked by the product of experts: the decoder, the co-purchase memory and the
        item head (those the run has), each to its weight."""
        keys = pack_rows(rows.numpy(), self.tokenizer.vocab_size)
        pos = np.minimum(np.searchsorted(self._row_keys, keys), self._row_keys.size - 1)
        items = np.where((self._row_keys[pos] == keys) & (rows[..., 0].numpy() >= 0), self._row_items[pos], -1)
        new = scores.numpy().astype(np.float64)
        if self.memory is not None and self.memory.cfg.weight > 0:
            new = self.memory.rescore(histories, items, new)
        if self.head is not None and self.head.cfg.weight > 0:
            new = self.head.rescore(states, items, new)
        order = torch.from_numpy(np.argsort(-new, axis=1, kind="stable"))
        return rows.gather(1, order[..., None].expand_as(rows)), torch.from_numpy(new).float().gather(1, order)

    def check_ranker(self) -> None:
        """A DataError unless this retriever computes every feature its learned ranker reads (a run whose
        item head or statistics went missing, or a ranker trained with other feature groups)."""
        if self.ranker is None:
            return
        have = self.candidate_set([np.zeros(0, np.int64)], [None])[0].names
        missing = [n for n in self.ranker.names if n not in have]
        if missing:
            raise DataError(f"the learned ranker reads features this run cannot compute: {missing} "
                            "(retrain the ranker: genrec train)")

    @torch.inference_mode()
    def candidate_set(self, histories: list[np.ndarray], retailers: list[int | None],
                      width: int | None = None) -> tuple[CandidateSet, np.ndarray, np.ndarray]:
        """Decode -> sources -> features for a batch of known-item histories: (the candidates with their
        feature columns, the beam's token rows [B, W, D], their log-probs [B, W]). The one code path of the
        ranker's training examples, evaluation and serving."""
        start = self.index.start_for(retailers)
        batch = collate(self._queries(histories, retailers), np.arange(len(histories)), PAD, padding_side="left")
        device = next(self.model.parameters()).device
        width = max(self.rank.beam_width, width or 1)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        rows, scores, levels, states = constrained_beam_search(self.model, ids, mask, start.trie, width, width,
                                                               start=start.nodes.to(device), start_depth=start.depth,
                                                               with_levels=True, with_prompt_state=True)
        rows, scores, levels = rows.cpu().numpy(), scores.cpu().double().numpy(), levels.cpu().double().numpy()
        view, slots = self.index.catalog_view(), self.index.slots_for(retailers)
        parts = [(*beam_source(view, rows, slots)[:2], SOURCE_BITS["beam"])]
        if "again" in self.rank.sources:
            parts.append((*again_source(view, histories, slots, self.rank.again_top), SOURCE_BITS["again"]))
        reach = self.memory.reach(histories) if self.memory is not None else None
        ranks = row_ranks(reach) if reach is not None else None  # once, for the co source and its features
        if "co" in self.rank.sources and reach is not None:
            parts.append((*co_source(view, reach, ranks, self.memory.item_ids, slots, self.rank.co_top),
                          SOURCE_BITS["co"]))
        cs = union(parts, view.item_ids, len(histories), view.item_ids.size)
        head_logp = None
        if self.head is not None:
            head_logp = self.head.head(states.cpu()).numpy()
        ctx = features.QueryContext(histories, rows, levels, reach,
                                    None if self.memory is None else self.memory.item_ids, ranks, head_logp,
                                    None if self.head is None else self.head.catalog, self.item_stats)
        return features.compute(cs, ctx, view, tuple(self.rank.drop_features)), rows, scores

    def _ranked(self, histories: list[np.ndarray], retailers: list[int | None], ks: list[int],
                exclude: np.ndarray, explain: bool) -> dict[int, Candidates]:
        """The learned ranker's lists: every source's candidates by its score, the history removed where
        asked, then each K's cold-start slots (``index.candidates.mix_cold``)."""
        cs, rows, beam_scores = self.candidate_set(histories, retailers, ks[-1])
        score = self.ranker.score(cs)
        banned_lists = [h if e else None for h, e in zip(histories, exclude.tolist())]
        keep = ~_in_lists(cs, banned_lists) if exclude.any() else np.ones(len(cs), bool)
        order = best_first(cs, score, keep)
        view, slots = self.index.catalog_view(), self.index.slots_for(retailers)
        last = self._last_rows(histories) if self.cold_share > 0 and self.cold_ranker is not None else None
        banned = banned_keys(view, slots, banned_lists, len(histories)) if exclude.any() else np.zeros(0, np.int64)
        out = {}
        for k in ks:
            sel, at = ranked_slots(cs, order, k, self.rank.discover_share)
            c = empty_candidates(len(histories), k)
            q = cs.query[sel]
            c.item_ids[q, at], c.scores[q, at], c.sids[q, at] = cs.item_ids[sel], score[sel], view.sids[cs.pos[sel]]
            c.sources[q, at] = cs.sources[sel]
            c.from_beam[q, at] = (cs.sources[sel] & SOURCE_BITS["beam"]) > 0
            if last is not None:  # new products never displace the shopper's own re-buys
                mix_cold(c, view, rows, beam_scores, slots, banned, self.cold_share, self.cold_ranker, last,
                         keep=(c.sources & SOURCE_BITS["again"]) > 0)
            if explain:
                c.explained = _explanations(cs, c)
            out[k] = c
        return out

    def _last_rows(self, histories: list[np.ndarray]) -> np.ndarray:
        """Each history's latest item as its SID token row [B, D]; -1 rows for empty histories."""
        out = np.full((len(histories), self.item_tokens.tokens_per_item), -1, np.int64)
        has = np.array([h.size > 0 for h in histories], bool)
        if has.any():
            last = np.array([h[-1] for h in histories if h.size], np.int64)
            out[has] = self.item_tokens.tokens[self.item_tokens.rows(last)]
        return out

    def _queries(self, histories: list[np.ndarray], retailers: list[int | None]) -> TokenizedExamples:
        """The prompts: ``<bos> [retailer token] history``, the retailer token only for retailers the
        decoder was trained with (when it reads one at all)."""
        ids = np.array([NO_RETAILER if r is None else r for r in retailers], np.int64)
        use = self.retailer_token & np.isin(ids, self.tokenizer.retailer_ids) & (ids != NO_RETAILER)
        ids = np.where(use, ids, NO_RETAILER)
        return tokenize_examples(
            query_examples(histories, self.max_items, ids if use.any() else None),
            self.item_tokens, BOS, self.tokenizer.encode_retailer if use.any() else None, with_targets=False,
        )


def _rank_parts(run: Path, which: str, memory: CoPurchaseMemory | None
                ) -> tuple[LearnedRanker | None, CoPurchaseMemory | None, ItemStats | None]:
    """What ranker ``which`` reads from the run: the learned ranker's trees (``learned``), and for it or for
    candidate sets alone (``none``) the co-purchase memory (even at weight 0) and the item statistics."""
    if which not in ("weighted", "learned", "none"):
        raise DataError(f"ranker must be weighted, learned or none, got {which!r}")
    if which == "weighted":
        return None, memory, None
    learned = LearnedRanker.load(run / RANKER_FILE, run / RANKER_META_FILE) if which == "learned" else None
    if memory is None and (run / MEMORY_FILE).is_file():
        memory = CoPurchaseMemory.load(run / MEMORY_FILE)
    stats = ItemStats.load(run / ITEM_STATS_FILE) if (run / ITEM_STATS_FILE).is_file() else None
    return learned, memory, stats


def _run_config(run: Path) -> RunConfig:
    """The run's config (the defaults for a run folder without one)."""
    path = run / CONFIG_FILE
    return load_run_config(path) if path.is_file() else RunConfig()


def _in_lists(cs: CandidateSet, lists: list[np.ndarray | None]) -> np.ndarray:
    """Per candidate: whether its item is in its query's list (None: an empty list)."""
    sizes = [0 if h is None else len(h) for h in lists]
    items = np.concatenate([h for h in lists if h is not None] or [np.zeros(0, np.int64)])
    return pair_index(np.repeat(np.arange(len(lists)), sizes), items, cs.query, cs.item_ids) >= 0


def _explanations(cs: CandidateSet, lists: Candidates) -> list[list[dict]]:
    """Per query and slot of ``lists``: the candidate's feature values (None where not applicable) and the
    sources that proposed it; a product placed by the cold-start slots only says so."""
    batch, k = lists.item_ids.shape
    row = pair_index(cs.query, cs.item_ids, np.repeat(np.arange(batch), k), lists.item_ids.reshape(-1))
    out = []
    for b in range(batch):
        slots = []
        for j in range(k):
            at, item = row[b * k + j], lists.item_ids[b, j]
            feats = {n: (None if np.isnan(v) else float(v)) for n, v in zip(cs.names, cs.features[at])} if at >= 0 else {}
            slots.append({**feats, "sources": source_names(lists.sources[b, j])} if item >= 0 else {})
        out.append(slots)
    return out


def _per_query(flag: bool | Sequence[bool], n: int) -> np.ndarray:
    """One bool per query from one flag for all or a sequence of them."""
    flags = np.asarray(flag, dtype=bool)
    if flags.ndim == 0:
        return np.full(n, bool(flags))
    if flags.shape != (n,):
        raise DataError(f"{n} histories but {flags.size} exclude_history flags")
    return flags
