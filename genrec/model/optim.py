"""The decoder's optimisation pieces, pure and stateless: the accelerator, AdamW's parameter groups and the
learning-rate schedule (linear warm-up, then cosine / linear decay to a floor, or flat)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from genrec.model.precision import resolve_mixed_precision


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for a ``train.mixed_precision`` setting (``auto`` resolved by the device,
    ``genrec.model.precision``). Without CUDA it is a CPU one, so ``accelerate launch`` of N processes trains
    with DDP over gloo. accelerate keeps one state per process, so a second training in the same process
    with another precision (the demo, tests) starts from a fresh state (the process group is kept)."""
    cuda = torch.cuda.is_available()
    mixed_precision = resolve_mixed_precision(mixed_precision, "cuda" if cuda else "cpu")
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda)


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (incl. embeddings), not vectors (norms, biases) — as nanoGPT does."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_schedule(schedule: str, warmup_steps: int, min_lr_ratio: float, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step over ``total`` steps: linear warm-up, then ``schedule`` ("cosine" /
    "linear" decay to ``min_lr_ratio``, or "constant")."""
    warm = max(0, min(warmup_steps, total - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return factor
