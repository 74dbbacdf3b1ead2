"""A learned item head on the decoder's query state: the second expert of the LIGER-style hybrid.

The decoder spells the next product's SID and generalises over prefixes; where a product is rare it loses
it to its popular neighbours. The item head memorises: the decoder's hidden state at the end of the history
(the state that predicts the first codeword) is projected and scored against one embedding per catalog
product, ``E[item] = E_id[item] + P(SID embedding of item)``, with a full softmax over the catalog. A
product seen in training has its own ID row; a product new since training has none (its row stays zero,
never a target), so it is scored by its SID part alone and stays reachable. The head only re-scores the
products the decoder's beam decoded (``log p(SID) + weight * log p_head(item)``): results are still
generated SIDs mapped through the index. Trained after the decoder, on its frozen states, from the
training split only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genrec.data.sequences import Examples, query_examples
from genrec.model.tokens import ItemTokens, collate, tokenize_examples
from semid.common import DataError
from semid.config import Checks
from semid.tokenizer import BOS, PAD


@dataclass
class ItemHeadConfig:
    """Run config section ``item_head``: the head's size, its training, and its weight against the decoder."""

    weight: float = 0.0  # exponent of the head's probability in the product of experts; 0: off (not trained)
    dim: int = 64
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 0.003
    weight_decay: float = 0.0
    dropout: float = 0.3
    patience: int = 3
    max_items: int = 20  # history items per training pair (the decoder's context)
    seed: int = 0

    def __post_init__(self) -> None:
        c = Checks(self, "item_head")
        c.at_least(0, "weight", "weight_decay", "seed")
        c.at_least(1, "dim", "epochs", "batch_size", "patience", "max_items")
        c.above(0, "lr")
        c.within(0, 1, "dropout", open_high=True)


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
        pos = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=pos)
        out.append(h.last_hidden_state[:, -1].float())
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


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


def save_head(head: ItemHead, catalog: np.ndarray, cfg: ItemHeadConfig, path: str | Path) -> Path:
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    tensors["catalog"] = torch.from_numpy(np.asarray(catalog, np.int64))
    save_file(tensors, str(path), metadata={"config": json.dumps(asdict(cfg))})
    return path
