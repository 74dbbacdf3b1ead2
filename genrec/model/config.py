"""The run config sections of the model: ``decoder`` (``DecoderConfig``: the transformer's size and shape)
and ``train`` (``TrainConfig``: the decoder's training recipe). A module of its own, free of torch, so a
config is read and checked before the model stack loads (``genrec.model.decoder`` builds the decoder,
``genrec.model.train`` trains it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from semid.config import Checks


@dataclass
class DecoderConfig:
    """Size and shape of the decoder; ``max_items`` is the history cap the model is trained and served with."""

    # token level: LlamaForCausalLM (RoPE, RMSNorm, SwiGLU) or GPT2LMHeadModel over the flattened SID tokens;
    # item: one position per history item and a depth decoder for the codewords (genrec.model.item_decoder)
    arch: Literal["llama", "gpt2", "item"] = "llama"
    d_model: int = 128  # hidden size
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (d_model must divide by it)
    d_ff: int = 512  # feed-forward inner size
    dropout: float = 0.1  # gpt2: residual/embedding/attention dropout; llama: attention + input-embedding dropout
    max_items: int = 20  # history cap in items (most recent kept), training and serving
    tie_embeddings: bool = True  # share input embedding and LM head weights (fewer parameters for a small vocab)
    rope_theta: float = 10000.0  # llama rotary base
    depth_layers: int = 2  # item: layers of the codeword (depth) decoder
    id_embeddings: bool = False  # item: an embedding per item seen in training, added to its input (new ones have none)
    depth_cross_attention: bool = False  # item: the depth decoder also cross-attends to every item state so far

    # old spelling -> key, read from old run folders and decoders
    OLD_KEYS = {"memorize": "id_embeddings", "depth_memory": "depth_cross_attention"}

    def __post_init__(self) -> None:
        c = Checks(self, "decoder")
        c.literals()
        c.at_least(1, "d_model", "n_layers", "n_heads", "d_ff", "max_items", "depth_layers")
        c.rule(self.d_model % self.n_heads == 0, "n_heads", f"must divide d_model ({self.d_model}), got {self.n_heads}")
        c.above(0, "rope_theta")
        c.within(0, 1, "dropout", open_high=True)

    def max_positions(self, tokens_per_item: int) -> int:
        """Longest sequence: <bos>, a retailer token, ``max_items`` history items and one item to predict."""
        return 2 + (self.max_items + 1) * tokens_per_item


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and checkpointing of the decoder."""

    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.1  # decoupled weight decay on matrices (not on norms and biases)
    beta2: float = 0.98  # AdamW second-moment decay
    warmup_steps: int = 200  # linear warm-up from 0 to lr
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # decay after warm-up, over all planned steps
    min_lr_ratio: float = 0.05  # floor of the decay, as a fraction of lr
    batch_size: int = 256  # sequences per optimizer step (per process)
    epochs: int = 50  # planned epochs (the schedule spans them; early stopping may end sooner)
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule then spans these)
    eval_every: int = 1  # evaluate on validation every N epochs
    patience: int = 5  # stop after this many evaluations without a better validation metric
    eval_examples: int | None = 2000  # validation examples evaluated (a fixed random sample); None: all
    eval_k: int = 10  # the K of the monitored recall@K
    eval_beam_width: int = 20  # beam width of validation decoding
    eval_batch_size: int = 256  # queries per beam search call
    seed: int = 0  # seeds initial weights, dropout and the data order
    grad_clip: float = 1.0  # max gradient norm (0: off)
    # exponential moving average of the weights after every step (e.g. 0.999: a horizon of ~1,000 steps);
    # validation scores and the saved decoder are the average's. 0: off, the raw weights
    ema_decay: float = 0.0
    # accelerate's autocast mode; auto: bf16 where the device multiplies it natively, else float32
    # (genrec.model.precision)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    checkpoint_every: int = 500  # optimizer steps between mid-epoch checkpoints (0: only at epoch ends)
    bucket: int = 50  # length bucketing: sort chunks of batch_size * bucket sequences by length
    # most padded tokens one forward/backward pass holds: a bigger batch is cut into passes whose gradients add
    # up to the same optimizer step (up to float rounding and dropout draws), so the longest batches' activations
    # stay bounded (docs/scaling.md, "Memory"). None: every batch in one pass
    pass_tokens: int | None = None
    padding_side: Literal["right", "left"] = "right"  # where training batches are padded
    threads: int = 0  # torch CPU threads while training (0: torch's default; 1 is fastest on a busy small machine)
    log_every: int = 20  # steps between progress-bar updates of loss and tokens/s
    progress: bool = True  # progress over steps (a bar on a terminal, else a few log lines)

    OLD_KEYS = {"max_epochs": "epochs", "num_threads": "threads"}  # old spelling -> key, read from old run folders

    def __post_init__(self) -> None:
        c = Checks(self, "train")
        c.literals()
        c.at_least(0, "lr", "weight_decay", "warmup_steps", "seed", "grad_clip", "checkpoint_every", "threads")
        c.at_least(1, "batch_size", "epochs", "max_steps", "eval_every", "patience", "eval_examples", "eval_k",
                   "eval_beam_width", "eval_batch_size", "bucket", "log_every", "pass_tokens")
        c.within(0, 1, "min_lr_ratio")
        c.within(0, 1, "beta2", "ema_decay", open_high=True)
