"""Decoder training steps per second under each ``train.mixed_precision`` setting, on the CPU it runs on.

For each shipped config named, the config's decoder is built over its SID vocabulary and trained for a few
optimizer steps (AdamW, accelerate's autocast, the config's batch size and thread count) on random token
batches of the longest history the config allows, every item position labelled. The table gives steps/s for
``no`` (float32) and ``bf16``, their ratio, and what ``auto`` resolves to here; the header names the CPU model
and its bf16 flags, so a figure always says which machine made it (docs/scaling.md, "Training precision").

    .venv/bin/python benchmarks/train_precision.py --configs configs/amazon-beauty.yaml configs/instacart.yaml
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from genrec.cli import configure_logging
from genrec.model.decoder import IGNORE, build_decoder, training_loss
from genrec.model.optim import make_accelerator, param_groups
from genrec.model.precision import NATIVE_BF16_FLAGS, cpu_flags, resolve_mixed_precision
from genrec.run.config import RunConfig, load_run_config
from semid.common import torch_threads

SETTINGS = ("no", "bf16")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def random_batch(cfg: RunConfig, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One batch of the config's size at its longest length: SID tokens, every item position labelled."""
    levels = len(cfg.semid.codebook_sizes) + 1  # + the disambiguation token
    length = cfg.decoder.max_positions(levels)
    ids = torch.randint(2, vocab, (cfg.train.batch_size, length), generator=gen)
    labels = ids.clone()
    labels[:, : levels + 1] = IGNORE  # <bos>, retailer and the first item are context only
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "position_ids": torch.arange(length).expand_as(ids), "labels": labels}


def steps_per_second(cfg: RunConfig, setting: str, steps: int, warmup: int) -> float:
    """Optimizer steps per second of the config's decoder under one autocast setting."""
    vocab = sum(cfg.semid.codebook_sizes) + 1024 + 2  # codewords, room for the disambiguation level, pad, bos
    torch.manual_seed(0)
    accelerator = make_accelerator(setting)
    model = build_decoder(cfg.decoder, vocab, len(cfg.semid.codebook_sizes) + 1)
    wrapper = training_loss(model, cfg.decoder.dropout)
    optimizer = torch.optim.AdamW(param_groups(wrapper, cfg.train.weight_decay), lr=cfg.train.lr)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    batch = random_batch(cfg, vocab, torch.Generator().manual_seed(0))
    wrapper.train()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss, _ = wrapper(**batch)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["configs/amazon-beauty.yaml", "configs/instacart.yaml"])
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--out", default=None, help="JSON of every row")
    args = ap.parse_args(argv)
    configure_logging()
    flags = cpu_flags()
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    print(f"CPU: {cpu_name()}; native bf16 flags: {', '.join(native) or 'none'}; "
          f"auto resolves to {resolve_mixed_precision('auto', 'cpu', flags)!r}")
    print(f"{'config':<22} {'setting':<8} {'steps/s':>8} {'vs no':>6}")
    rows = []
    for path in args.configs:
        cfg = load_run_config(path)
        with torch_threads(cfg.train.threads):
            rates = {s: steps_per_second(cfg, s, args.steps, args.warmup) for s in SETTINGS}
        for setting, rate in rates.items():
            print(f"{Path(path).name:<22} {setting:<8} {rate:>8.2f} {rate / rates['no']:>5.2f}x")
            rows.append({"config": path, "setting": setting, "steps_per_s": rate})
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "native_bf16_flags": native, "rows": rows},
                                             indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
