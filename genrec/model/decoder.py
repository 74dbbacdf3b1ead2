"""The decoder: a small causal transformer from ``transformers`` (Llama or GPT-2 layout) over the SID
vocabulary, saved as a transformers folder (safetensors) that records the codebook version it was trained
with, and the training loss that runs the LM head only where there is a label.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from genrec.model import precision
from genrec.model.config import DecoderConfig
from genrec.model.item_decoder import ItemDecoder, ItemDecoderConfig
from semid.common import DataError, atomic_dir
from semid.config import from_dict, to_dict

META_KEY = "genrec"  # the block of config.json that holds what genrec needs besides the weights
IGNORE = -100


class CodebookMismatchError(DataError):
    """A decoder trained on one codebook is loaded against another: its token ids would mean other SIDs."""


def build_decoder(
    cfg: DecoderConfig,
    vocab_size: int,
    tokens_per_item: int,
    pad_id: int = 0,
    bos_id: int = 1,
    codebook_version: str | None = None,
    level_offsets: Sequence[int] | None = None,
    memorised: np.ndarray | None = None,
) -> PreTrainedModel:
    """A freshly initialised decoder over the SID vocabulary (seed torch first for reproducible weights).
    The item arch also needs ``level_offsets`` (first token id of each SID level, then the end of the last:
    ``SIDTokenizer.level_range``) and, with ``id_embeddings``, the token rows of the items seen in training."""
    meta = {
        "codebook_version": codebook_version,
        "decoder": to_dict(cfg),
        "tokens_per_item": int(tokens_per_item),
    }
    common = dict(vocab_size=int(vocab_size), pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=None,
                  tie_word_embeddings=cfg.tie_embeddings)
    if cfg.arch == "llama":
        config = LlamaConfig(
            hidden_size=cfg.d_model, intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
            max_position_embeddings=cfg.max_positions(tokens_per_item), attention_dropout=cfg.dropout,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, **common,
        )
        model = LlamaForCausalLM(config)
    elif cfg.arch == "gpt2":
        config = GPT2Config(
            n_embd=cfg.d_model, n_inner=cfg.d_ff, n_layer=cfg.n_layers, n_head=cfg.n_heads,
            n_positions=cfg.max_positions(tokens_per_item), resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, **common,
        )
        model = GPT2LMHeadModel(config)
    else:
        model = _build_item_decoder(cfg, vocab_size, tokens_per_item, level_offsets, memorised)
    setattr(model.config, META_KEY, meta)
    return model


def _build_item_decoder(cfg: DecoderConfig, vocab_size: int, tokens_per_item: int,
                        level_offsets: Sequence[int] | None, memorised: np.ndarray | None) -> ItemDecoder:
    if level_offsets is None or len(level_offsets) != tokens_per_item + 1:
        raise DataError(f"decoder: the item arch needs {tokens_per_item + 1} level offsets, got {level_offsets}")
    rows = np.zeros((0, tokens_per_item), np.int64) if memorised is None else np.asarray(memorised, np.int64)
    memo = np.unique(rows, axis=0) if cfg.id_embeddings else rows[:0]
    config = ItemDecoderConfig(
        vocab_size=vocab_size, level_offsets=level_offsets, d_model=cfg.d_model, n_layers=cfg.n_layers,
        n_heads=cfg.n_heads, d_ff=cfg.d_ff, depth_layers=cfg.depth_layers, dropout=cfg.dropout,
        max_items=cfg.max_items, memo_size=len(memo), depth_cross_attention=cfg.depth_cross_attention,
    )
    model = ItemDecoder(config)
    if len(memo):
        model.set_memorised(memo)
    return model


def decoder_meta(model_or_path: PreTrainedModel | str | Path) -> dict:
    """The genrec block of a model's config: codebook_version, decoder (DecoderConfig dict), tokens_per_item, ..."""
    if isinstance(model_or_path, PreTrainedModel):
        return dict(getattr(model_or_path.config, META_KEY, None) or {})
    path = Path(model_or_path) / "config.json"
    if not path.is_file():
        raise DataError(f"{path.parent}: not a decoder folder (no config.json)")
    meta = json.loads(path.read_text()).get(META_KEY)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: no {META_KEY!r} block; not a genrec decoder")
    return meta


def decoder_config(model_or_path: PreTrainedModel | str | Path) -> DecoderConfig:
    """The DecoderConfig a saved (or built) decoder was made with."""
    return from_dict(DecoderConfig, decoder_meta(model_or_path)["decoder"], "decoder")


def save_decoder(model: PreTrainedModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` as a transformers folder (safetensors) atomically; ``extra`` is merged into its genrec
    block (e.g. the sequence settings a Retriever needs)."""
    path = Path(path)
    meta = decoder_meta(model)
    if "codebook_version" not in meta:
        raise DataError("decoder: model has no genrec block; build it with build_decoder")
    setattr(model.config, META_KEY, {**meta, **(extra or {})})

    def write(tmp: Path) -> None:
        with _quiet():
            model.save_pretrained(tmp, safe_serialization=True)

    return atomic_dir(path, write)


def weights_digest(path: str | Path) -> str | None:
    """A short digest of a saved decoder's weights (its model version); None for a folder without them."""
    weights = Path(path) / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else None


def load_decoder(path: str | Path, codebook_version: str | None = None) -> PreTrainedModel:
    """Load a saved decoder (eval mode); with ``codebook_version`` given, a different recorded version fails
    before any weight is read."""
    path = Path(path)
    meta = decoder_meta(path)
    saved = meta.get("codebook_version")
    if codebook_version is not None and saved != codebook_version:
        raise CodebookMismatchError(
            f"{path}: decoder was trained on codebook version {saved!r} but the run's SIDs are version "
            f"{codebook_version!r}; its token ids would name other products. Retrain the decoder on these SIDs."
        )
    arch = from_dict(DecoderConfig, meta["decoder"], "decoder").arch
    cls = {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel, "item": ItemDecoder}[arch]
    with _quiet():
        model = cls.from_pretrained(path)
    model.eval()
    return model


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide transformers' per-shard progress bars (they would interleave with the training bar)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class LabelledLoss(nn.Module):
    """Wraps a causal LM for training: mean next-token cross-entropy over labelled positions only, with the
    LM head applied to those positions alone (no logits for history or padding)."""

    def __init__(self, model: PreTrainedModel, embed_dropout: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.embed_dropout = embed_dropout  # llama has no embedding dropout of its own

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean loss, number of labelled tokens)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        if self.embed_dropout:
            embeds = F.dropout(embeds, self.embed_dropout, self.training)
        hidden = self.model.base_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        target = labels[:, 1:]
        keep = target != IGNORE
        logits = self.model.get_output_embeddings()(hidden[:, :-1][keep])
        n = keep.sum()
        return F.cross_entropy(logits.float(), target[keep], reduction="sum") / n.clamp(min=1), n


def training_loss(model: PreTrainedModel, embed_dropout: float = 0.0) -> nn.Module:
    """The module the trainer optimises: (input_ids, attention_mask, position_ids, labels) -> (loss, n).
    The item decoder computes its own loss; a causal LM is wrapped in ``LabelledLoss``."""
    if getattr(model, "is_item_decoder", False):
        return ItemLoss(model)
    return LabelledLoss(model, embed_dropout)


class ItemLoss(nn.Module):
    """The item decoder under the trainer's interface (``model`` attribute, loss and labelled count)."""

    def __init__(self, model: ItemDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(input_ids, attention_mask, labels)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def inference_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The decoder's weight type for retrieval: ``float32``, ``bfloat16``, or ``auto``: bfloat16 on CUDA and on
    CPUs with native bf16 matrix units (avx512_bf16 / amx), where batched beam search runs faster at equal recall
    (docs/serving.md, "Serving throughput"); float32 elsewhere, where bf16 is emulated."""
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16
        return torch.bfloat16 if precision.native_bf16() else torch.float32
    if name not in DTYPES:
        raise DataError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]
