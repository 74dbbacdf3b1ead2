"""Which number format the decoder trains and decodes in, chosen by what the device multiplies natively.

bfloat16 halves memory traffic and runs on CUDA and on CPUs with native bf16 matrix units (``avx512_bf16`` or
``amx_bf16`` in the CPU flags). Elsewhere a CPU emulates it and autocast training runs about 8x slower than
float32 (docs/scaling.md, "Training precision"), so ``auto`` picks float32 there.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matmul
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")  # train.mixed_precision settings


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether a CPU with these flags (default: this one) multiplies bfloat16 natively."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_mixed_precision(setting: str, device: str | torch.device = "cpu", flags: set[str] | None = None) -> str:
    """accelerate's autocast mode for a ``train.mixed_precision`` setting: ``auto`` is ``bf16`` on CUDA and on
    CPUs with native bf16, ``no`` (float32) elsewhere; an explicit ``bf16`` on a CPU that emulates it is kept,
    with one warning saying what it costs."""
    if setting not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}; got {setting!r}")
    native = torch.device(device).type == "cuda" or native_bf16(flags)
    if setting == "auto":
        return "bf16" if native else "no"
    if setting == "bf16" and not native:
        log.warning("train.mixed_precision bf16 on a CPU without avx512_bf16/amx_bf16: bf16 is emulated and "
                    "training runs about 8x slower than float32; `auto` would train in float32 here")
    return setting
