"""One cached step of a ``transformers`` causal LM, whatever the transformers version: the one place that knows
what transformers calls its cache argument and its returned cache (``past_key_values`` before 5.2x, ``cache``
since), which cache it can preallocate, and how a cache follows reselected beams. The beam search
(``genrec.model.beam_search``) reads the model through these four functions and nothing else of transformers.

    cache = new_cache(model, length)                      # preallocated, or None: the model grows its own
    out = step(model, ids, attention, positions, cache)   # out.logits, out.hidden [B, keep, ...], out.cache
    reorder(out.cache, parent, shared)                    # row i now holds the history of row parent[i]

The LM head runs on the last ``keep`` positions only (the base model's states, then the output embeddings, as
every causal LM of transformers does), and the step returns those positions' final hidden states beside their
logits, so a caller that also needs the prompt's state (the item head, ``genrec.rank.item_head``) gets it from
the same pass.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from transformers.cache_utils import StaticCache, StaticLayer

from semid.common import DataError


@dataclass
class Step:
    """What one call returns: the last ``keep`` positions' logits [B, keep, V] and final hidden states
    [B, keep, d], and the KV cache to pass to the next call."""

    logits: torch.Tensor
    hidden: torch.Tensor
    cache: object


def new_cache(model: torch.nn.Module, length: int) -> object | None:
    """A preallocated KV cache for ``length`` positions (no copy per step), or None to let the model make
    its own (a DynamicCache) where a static one cannot be built for it."""
    try:
        return StaticCache(config=model.config, max_cache_len=length)
    except (TypeError, ValueError, AttributeError, KeyError):
        return None


def preallocated(cache: object | None) -> bool:
    """Whether ``cache`` has all its positions from the start (its attention spans them all), rather than
    growing with each call."""
    return isinstance(cache, StaticCache)


def step(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
         cache: object | None, keep: int = 1) -> Step:
    """One call of causal LM ``model`` on ``ids`` [B, T] with an explicit attention mask (2-D [B, kv] or a
    4-D additive one) and positions (so padding changes nothing), through ``cache``."""
    base = model.base_model
    out = base(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
               **{_cache_argument(type(base)): cache})
    returned = out["cache"] if "cache" in out.keys() else getattr(out, "past_key_values", None)
    if returned is None:
        raise DataError(f"beam search: {type(model).__name__} returned no KV cache")
    hidden = out.last_hidden_state[:, -keep:]
    return Step(model.get_output_embeddings()(hidden), hidden, returned)


@functools.lru_cache(maxsize=64)
def _cache_argument(cls: type) -> str:
    """The name a model class's forward takes its KV cache under (looked up once per class)."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def reorder(cache: object, parent: torch.Tensor, shared: int | None) -> None:
    """Make cache row i hold the history of row ``parent[i]``. ``shared``: the prompt length where every row's
    first ``shared`` positions are already the same as its parent's (a beam moves only within its query), so
    a preallocated cache copies just the positions after them, in place; None copies everything (the first
    call, which expands each query's row to its beams)."""
    layers = getattr(cache, "layers", None)
    if shared is not None and layers and all(isinstance(layer, StaticLayer) for layer in layers):
        end = int(layers[0].get_seq_length())
        for layer in layers:
            layer.keys[:, :, shared:end] = layer.keys[parent, :, shared:end]
            layer.values[:, :, shared:end] = layer.values[parent, :, shared:end]
        return
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(parent)
        return
    raise DataError(
        f"beam search: the model returned a {type(cache).__name__} cache; a transformers Cache is required"
    )
