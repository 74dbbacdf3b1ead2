"""A learned item head on the decoder's query state: the second expert of the LIGER-style hybrid.

The decoder spells the next product's SID and generalises over prefixes; where a product is rare it loses
it to its popular neighbours. The item head memorises: the decoder's hidden state at the end of the history
(the state that predicts the first codeword) is projected and scored against one embedding per catalog
product, ``E[item] = E_id[item] + P(SID embedding of item)``, with a full softmax over the catalog. A
product seen in training has its own ID row; a product new since training has none (its row stays zero,
never a target), so it is scored by its SID part alone and stays reachable. The head only re-scores the
products the decoder's beam decoded (``log p(SID) + weight * log p_head(item)``): results are still
generated SIDs mapped through the index. Trained after the decoder, on its frozen states, from the
training split only (``genrec.run.build.build_item_head``, when the run config's ``item_head.weight`` is
above 0), and applied by ``genrec.retriever.Retriever`` beside the co-purchase memory.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genrec.data.sequences import Examples, query_examples
from genrec.model.tokens import ItemTokens, collate, tokenize_examples
from genrec.rank.config import ItemHeadConfig
from semid.catalog import item_columns
from semid.common import DataError
from semid.config import from_dict
from semid.tokenizer import BOS, PAD


class ItemHead(torch.nn.Module):
    """query state [B, d_model] -> log-probabilities over the catalog [B, n_items]."""

    def __init__(self, sid_emb: torch.Tensor, known: torch.Tensor, cfg: ItemHeadConfig) -> None:
        super().__init__()
        d_model, n = sid_emb.shape[1], sid_emb.shape[0]
        self.register_buffer("sid_emb", sid_emb.float())  # [n, d_model] the decoder's SID embedding per item
        self.register_buffer("known", known.float()[:, None])  # [n, 1] 1 where the item has an ID row
        self.query = torch.nn.Linear(d_model, cfg.dim)
        self.code = torch.nn.Linear(d_model, cfg.dim)
        self.ids = torch.nn.Parameter(torch.zeros(n, cfg.dim))
        self.bias = torch.nn.Parameter(torch.zeros(n))
        self.drop = torch.nn.Dropout(cfg.dropout)

    def item_table(self) -> torch.Tensor:
        return self.code(self.sid_emb) + self.ids * self.known

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        logits = self.query(self.drop(states)) @ self.item_table().T + self.bias * self.known[:, 0]
        return torch.log_softmax(logits, dim=-1)


@torch.inference_mode()
def query_states(model: torch.nn.Module, item_tokens: ItemTokens, histories: list[np.ndarray], max_items: int,
                 batch_size: int = 512) -> torch.Tensor:
    """The decoder's final hidden state after each history (where it predicts the first codeword) [B, d]."""
    _check_token_decoder(model)
    out = []
    for lo in range(0, len(histories), batch_size):
        part = histories[lo : lo + batch_size]
        toks = tokenize_examples(query_examples(part, max_items), item_tokens, BOS, with_targets=False)
        b = collate(toks, np.arange(len(part)), PAD, padding_side="left")
        out.append(prompt_states(model, b["input_ids"], b["attention_mask"]))
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


@torch.inference_mode()
def prompt_states(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state of left-padded prompts [B, d] (float32 whatever the weights' dtype)."""
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    h = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
    return h.last_hidden_state[:, -1].float()


@torch.inference_mode()
def training_pairs(model: torch.nn.Module, item_tokens: ItemTokens, sequences: Examples, max_items: int,
                   batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """(state before item j, item j) for every item after the first of each training sequence, from one
    forward pass per sequence (the last ``max_items + 1`` items: the decoder's context)."""
    _check_token_decoder(model)
    seqs = [sequences.history(i) for i in range(len(sequences))]
    seqs = [s[-(max_items + 1):] for s in seqs if s.size > 1]
    width = item_tokens.tokens_per_item
    states, targets = [], []
    for lo in range(0, len(seqs), batch_size):
        part = seqs[lo : lo + batch_size]
        toks = tokenize_examples(query_examples(part, max_items + 1), item_tokens, BOS, with_targets=False)
        b = collate(toks, np.arange(len(part)), PAD, padding_side="right")
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        position_ids=b["position_ids"]).last_hidden_state
        for row, s in enumerate(part):
            at = width * np.arange(1, s.size)  # last token of items 1..n-1 (the BOS is at 0)
            states.append(h[row, at].float())
            targets.append(s[1:])
    if not states:
        raise DataError("item head: no training sequence has two items")
    return torch.cat(states), np.concatenate(targets)


def _check_token_decoder(model: torch.nn.Module) -> None:
    if getattr(model, "is_item_decoder", False) or not hasattr(model, "model"):
        raise DataError("item head: only the token-level decoder (decoder.arch llama/gpt2) is supported")


def sid_embeddings(model: torch.nn.Module, item_tokens: ItemTokens, catalog: np.ndarray) -> torch.Tensor:
    """Each catalog product's SID embedding: the mean of the decoder's input embeddings of its tokens."""
    emb = model.get_input_embeddings().weight.detach().float()
    rows = item_tokens.rows(catalog, "catalog")
    return emb[torch.from_numpy(item_tokens.tokens[rows])].mean(1)


def train_item_head(head: ItemHead, states: torch.Tensor, targets: torch.Tensor, val_states: torch.Tensor,
                    val_targets: torch.Tensor, cfg: ItemHeadConfig, log=print) -> dict:
    """Full-softmax cross-entropy over the catalog, early-stopped on validation NDCG@10; keeps the best."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, bad, history = -1.0, None, 0, []
    for epoch in range(cfg.epochs):
        head.train()
        perm = torch.randperm(states.shape[0], generator=gen)
        total = 0.0
        for lo in range(0, perm.numel(), cfg.batch_size):
            idx = perm[lo : lo + cfg.batch_size]
            loss = F.nll_loss(head(states[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        ndcg = head_ndcg(head, val_states, val_targets)
        history.append({"epoch": epoch + 1, "loss": total / perm.numel(), "ndcg@10": ndcg})
        log(f"item head epoch {epoch + 1}: loss {total / perm.numel():.4f}  validation NDCG@10 {ndcg:.4f}")
        if ndcg > best:
            best, bad = ndcg, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return {"best_ndcg@10": best, "history": history}


@torch.inference_mode()
def head_ndcg(head: ItemHead, states: torch.Tensor, targets: torch.Tensor, k: int = 10) -> float:
    """NDCG@k of the head alone, ranking the whole catalog."""
    head.eval()
    logp = head(states)
    target_score = logp.gather(1, targets[:, None])
    rank = (logp > target_score).sum(1)
    return float(torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros(())).mean())


def fit_item_head(model: torch.nn.Module, item_tokens: ItemTokens, sequences: Examples, validation: Examples,
                  catalog: np.ndarray, cfg: ItemHeadConfig, log=print) -> tuple[ItemHead, dict]:
    """The head on a frozen token-level decoder: training pairs from each shopper's whole training sequence
    (``genrec.data.sequences.train_sequences``: no held-out item), early-stopped on ``validation``'s first
    targets. ``catalog``: the products it scores (ascending); those never a training target keep no ID row,
    so new products are scored by their SID alone."""
    start = time.perf_counter()
    states, targets = training_pairs(model, item_tokens, sequences, cfg.max_items)
    cols = item_columns(catalog, targets)
    val_h = [validation.history(i) for i in range(len(validation))]
    val_states = query_states(model, item_tokens, val_h, cfg.max_items)
    val_cols = item_columns(catalog, np.array([validation.targets(i)[0] for i in range(len(validation))], np.int64))
    keep, val_keep = cols >= 0, val_cols >= 0
    log(f"item head: {int(keep.sum()):,} training pairs, {int(val_keep.sum()):,} validation examples "
        f"({time.perf_counter() - start:.0f}s)")
    known = torch.zeros(catalog.size)
    known[torch.from_numpy(np.unique(cols[keep]))] = 1.0
    torch.manual_seed(cfg.seed)
    head = ItemHead(sid_embeddings(model, item_tokens, catalog), known, cfg)
    start = time.perf_counter()
    info = train_item_head(head, states[torch.from_numpy(keep)], torch.from_numpy(cols[keep]),
                           val_states[torch.from_numpy(val_keep)], torch.from_numpy(val_cols[val_keep]), cfg, log=log)
    info["train_s"] = round(time.perf_counter() - start, 1)
    return head, info


def save_head(head: ItemHead, catalog: np.ndarray, cfg: ItemHeadConfig, path: str | Path,
              decoder_version: str | None = None) -> Path:
    """The head's weights, its catalog and config, and the decoder weights it was trained on (a digest)."""
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    tensors["catalog"] = torch.from_numpy(np.asarray(catalog, np.int64))
    meta = {"config": json.dumps(asdict(cfg)), "decoder_version": decoder_version or ""}
    save_file(tensors, str(path), metadata=meta)
    return path


def head_metadata(path: str | Path) -> dict[str, str]:
    """A saved head's metadata (``config`` JSON, ``decoder_version``) without loading its weights."""
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


# log p_head of a decoded product the head has no row for (not in its catalog): far below any real one
NO_ROW_LOGP = -50.0


class HeadExpert:
    """A saved item head as the retriever's second expert: re-scores decoded products from query states."""

    def __init__(self, head: ItemHead, catalog: np.ndarray, cfg: ItemHeadConfig) -> None:
        self.head, self.catalog, self.cfg = head.eval(), np.asarray(catalog, np.int64), cfg

    @classmethod
    def load(cls, path: str | Path, weight: float | None = None) -> "HeadExpert":
        """Read ``save_head``'s file (``weight``: another weight than the saved config's, e.g. to tune)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no item head (train the run with item_head.weight > 0)")
        cfg = from_dict(ItemHeadConfig, json.loads(head_metadata(path)["config"]), "item_head")
        if weight is not None:
            cfg = replace(cfg, weight=float(weight))
        t = load_file(str(path))
        head = ItemHead(t["sid_emb"], t["known"][:, 0], cfg)
        head.load_state_dict({k: v for k, v in t.items() if k != "catalog"})
        return cls(head, t["catalog"].numpy(), cfg)

    @torch.inference_mode()
    def log_probs(self, states: torch.Tensor, items: np.ndarray) -> np.ndarray:
        """log p_head(item | state) [B, W] for decoded item ids [B, W] (``NO_ROW_LOGP`` where it has no row)."""
        logp = self.head(states.float()).numpy()
        cols = item_columns(self.catalog, items.reshape(-1)).reshape(items.shape)
        return np.where(cols >= 0, np.take_along_axis(logp, np.maximum(cols, 0), 1), NO_ROW_LOGP)

    def rescore(self, states: torch.Tensor, items: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
        """The product of experts' log-scores [B, W] (dead candidates stay -inf)."""
        return log_probs + self.cfg.weight * self.log_probs(states, items)
