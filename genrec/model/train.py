"""The decoder's training recipe (torchtune-style: ``setup``, ``train``, ``save_checkpoint``, ``cleanup``).

Runs through ``accelerate`` (CPU here; ``accelerate launch`` for one or many GPUs, same code): AdamW with
warm-up and a cosine schedule, length-bucketed batches whose order is a pure function of (seed, epoch),
validation recall@10 with the constrained beam search, early stopping, and checkpoints in safetensors +
JSON (model, optimizer, scheduler, RNG, position in the data) from which an interrupted run resumes to
exactly the weights an uninterrupted run reaches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from accelerate.utils import broadcast_object_list, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import PreTrainedModel

from genrec.data.sequences import Examples, SequenceConfig, split_events
from genrec.model.checkpoint import has_checkpoint, read_checkpoint, read_record, write_checkpoint
from genrec.model.config import DecoderConfig, TrainConfig
from genrec.model.decoder import build_decoder, decoder_config, save_decoder, training_loss
from genrec.model.training_log import LossMeter, append_record
from genrec.model.optim import lr_schedule, make_accelerator, param_groups
from genrec.model.tokens import ItemTokens, TokenizedExamples, collate, epoch_batches, tokenize_examples
from genrec.model.validation import EarlyStopping, RecallEvaluator, sample_examples
from genrec.run.layout import CHECKPOINT_DIR, MODEL_DIR, RESULT_FILE
from semid.common import DataError, torch_threads
from semid.config import renamed_keys, to_dict
from semid.progress import progress
from semid.tokenizer import BOS, PAD

log = logging.getLogger(__name__)

# settings that may change between an interrupted run and its resumption without changing the result
RESUMABLE_CHANGES = ("progress", "threads", "checkpoint_every", "log_every", "pass_tokens")


@dataclass
class TrainState:
    """Where training stands: saved with every checkpoint as JSON."""

    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of this epoch already consumed
    step: int = 0  # optimizer steps taken
    best: float | None = None  # best monitored validation metric so far
    best_step: int | None = None  # step of that evaluation
    bad_evals: int = 0  # evaluations since the last improvement
    evaluated_step: int | None = None  # step of the last evaluation
    stopped_early: bool = False
    history: list = field(default_factory=list)  # one record per evaluation and per epoch
    train_tokens: int = 0  # real (non-padding) tokens trained on
    train_seconds: float = 0.0  # wall time spent in training steps


@dataclass
class TrainResult:
    """What a finished training reports."""

    steps: int
    epochs_completed: int
    best: float | None
    best_step: int | None
    monitor: str | None
    stopped_early: bool
    tokens_per_s: float
    train_seconds: float
    history: list


class DecoderTrainer:
    """The recipe. ``setup`` builds (or resumes) everything, ``train`` runs to completion, early stop or
    ``max_steps``; the best decoder lands in ``out/model`` and the last checkpoint in ``out/checkpoint``."""

    def __init__(
        self,
        cfg: TrainConfig,
        build_model: Callable[[], PreTrainedModel],
        train_data: TokenizedExamples,
        out: str | Path,
        evaluator: Callable[[PreTrainedModel], dict[str, float]] | None = None,
        pad_id: int = 0,
        model_extra: dict | None = None,
    ) -> None:
        if len(train_data) == 0 or train_data.n_labels == 0:
            raise DataError("training: no training sequences with a target (histories too short?)")
        self.cfg, self.build_model, self.data, self.out = cfg, build_model, train_data, Path(out)
        self.evaluator, self.pad_id, self.model_extra = evaluator, pad_id, model_extra or {}
        self.monitor = getattr(evaluator, "monitor", None)
        self.state = TrainState()

    # ----- setup --------------------------------------------------------------------------------------

    def setup(self, resume: bool = True) -> None:
        """Seed, build model / optimizer / scheduler under accelerate; load the last checkpoint if any."""
        cfg = self.cfg
        self.accelerator = make_accelerator(cfg.mixed_precision)
        set_seed(cfg.seed)
        model = self.build_model()
        embed_dropout = decoder_config(model).dropout if decoder_config(model).arch == "llama" else 0.0
        wrapper = training_loss(model, embed_dropout)
        optimizer = torch.optim.AdamW(param_groups(wrapper, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
        self.steps_per_epoch = self._batches_per_process(0)
        planned = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(planned, cfg.max_steps) if cfg.max_steps else planned
        factor = lr_schedule(cfg.schedule, cfg.warmup_steps, cfg.min_lr_ratio, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.wrapper, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        self.ema = None
        if cfg.ema_decay > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and has_checkpoint(self.out / CHECKPOINT_DIR):
            self._load_checkpoint(self.out / CHECKPOINT_DIR)
            log.info("resumed from %s at epoch %d, batch %d (step %d)", self.out / CHECKPOINT_DIR,
                     self.state.epoch, self.state.batch_in_epoch, self.state.step)

    @property
    def model(self) -> PreTrainedModel:
        """The bare transformers model being trained."""
        return self.accelerator.unwrap_model(self.wrapper).model

    @property
    def scored_model(self) -> PreTrainedModel:
        """The weights validation scores and the best decoder keeps: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.module

    # ----- training -----------------------------------------------------------------------------------

    def train(self, step_callback: Callable[[int], None] | None = None) -> TrainResult:
        """Run epochs until ``epochs``, max_steps or early stopping; ``step_callback(step)`` runs after every
        optimizer step (and its checkpoint), e.g. to inject a failure in tests."""
        with torch_threads(self.cfg.threads):
            return self._train(step_callback)

    def _train(self, step_callback: Callable[[int], None] | None) -> TrainResult:
        cfg, st = self.cfg, self.state
        bar = progress(self.total_steps, "train", "steps", cfg.progress and self.accelerator.is_main_process,
                       initial=st.step, logger=log, dynamic_ncols=True)
        window_loss, window_tokens, window_time, log_every = 0.0, 0, 0.0, max(cfg.log_every, 1)
        self.loss_meter = LossMeter()  # the epoch's mean loss, for history.jsonl only (not the resumable state)
        while st.epoch < cfg.epochs and not st.stopped_early and not self._out_of_steps():
            batches = self._my_batches(st.epoch)
            for index in batches[st.batch_in_epoch :]:
                t0 = time.perf_counter()
                loss, n_tokens = self._step(index)
                dt = time.perf_counter() - t0
                st.step, st.batch_in_epoch = st.step + 1, st.batch_in_epoch + 1
                st.train_tokens, st.train_seconds = st.train_tokens + n_tokens, st.train_seconds + dt
                window_loss, window_tokens, window_time = window_loss + loss, window_tokens + n_tokens, window_time + dt
                self.loss_meter.add(loss)
                bar.update(1)
                if st.step % log_every == 0:  # the only point where the loss is read back from the device
                    bar.set_postfix(epoch=st.epoch, loss=f"{float(window_loss) / log_every:.3f}",
                                    tok_s=f"{window_tokens / max(window_time, 1e-9):,.0f}")
                    window_loss, window_tokens, window_time = 0.0, 0, 0.0
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if step_callback is not None:
                    step_callback(st.step)
                if self._out_of_steps():
                    break
            if st.batch_in_epoch >= len(batches):  # the epoch ran out (also when max_steps fell on its end)
                self._end_epoch()
        bar.close()
        if self.evaluator is not None and st.evaluated_step != st.step:
            self._evaluate()
        if self.evaluator is None or st.best is None:
            self._save_model()
        self.save_checkpoint()
        return TrainResult(
            steps=st.step, epochs_completed=st.epoch, best=st.best, best_step=st.best_step, monitor=self.monitor,
            stopped_early=st.stopped_early, tokens_per_s=st.train_tokens / max(st.train_seconds, 1e-9),
            train_seconds=st.train_seconds, history=list(st.history),
        )

    def _step(self, index: np.ndarray) -> tuple[torch.Tensor, int]:
        """One optimizer step on the sequences ``index`` -> (loss tensor, real tokens). A batch longer than
        ``pass_tokens`` runs as several passes: each pass's summed loss is back-propagated and the gradients
        are divided by the batch's labelled count once, the step one pass would take."""
        self.wrapper.train()
        passes = split_passes(index, self.data.lengths, self.cfg.pass_tokens)
        total_loss, labelled, n_tokens = 0.0, 0, 0
        for i, part in enumerate(passes):
            batch = collate(self.data, part, self.pad_id, self.cfg.padding_side)
            n_tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(self.accelerator.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(passes) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.wrapper):
                loss, n = self.wrapper(**batch)
                self.accelerator.backward(loss if len(passes) == 1 else loss * n)
            total_loss, labelled = total_loss + loss.detach() * n, labelled + n
        if len(passes) > 1:
            for p in self.wrapper.parameters():
                if p.grad is not None:
                    p.grad.div_(labelled.clamp(min=1))
        if self.cfg.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.wrapper.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return total_loss / labelled.clamp(min=1), n_tokens

    def _end_epoch(self) -> None:
        """Epoch bookkeeping, evaluation when due, early-stopping decision, checkpoint."""
        st = self.state
        st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        st.history.append({"epoch": st.epoch, "step": st.step, "lr": self.scheduler.get_last_lr()[0]})
        append_record(self.out, {**st.history[-1], **self.loss_meter.take()}, self.accelerator.is_main_process)
        if self.evaluator is not None and st.epoch % max(self.cfg.eval_every, 1) == 0:
            st.stopped_early = self._evaluate().exhausted
        self.save_checkpoint()

    def _evaluate(self) -> EarlyStopping:
        """Validation metrics; on improvement the decoder is saved as the best one. Returns the early-stopping
        record (kept in the checkpointed state as best, best_step, bad_evals)."""
        st = self.state
        metrics = [None]
        if self.accelerator.is_main_process:  # one evaluation, shared: every process takes the same decision
            model = self.scored_model
            was_training = model.training
            model.eval()
            with torch.no_grad():
                metrics[0] = self.evaluator(model)
            model.train(was_training)
        metrics = broadcast_object_list(metrics)[0]
        stopper = EarlyStopping(self.cfg.patience, st.best, st.best_step, st.bad_evals)
        improved = stopper.update(metrics[self.monitor], st.step)
        st.best, st.best_step, st.bad_evals = stopper.best, stopper.best_at, stopper.bad
        st.evaluated_step = st.step
        st.history.append({"epoch": st.epoch, "step": st.step, **metrics})
        append_record(self.out, st.history[-1], self.accelerator.is_main_process)
        if improved:
            self._save_model()
        log.info("step %d epoch %d: %s%s", st.step, st.epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), " (best)" if improved else "")
        return stopper

    def _out_of_steps(self) -> bool:
        return self.state.step >= self.total_steps

    # ----- data order ---------------------------------------------------------------------------------

    def _my_batches(self, epoch: int) -> list[np.ndarray]:
        """This process's share of the epoch's batches (equal counts on every process)."""
        batches = epoch_batches(self.data.lengths, self.cfg.batch_size, self.cfg.seed, epoch, self.cfg.bucket)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(batches) < world:
            raise DataError(f"training: {len(batches)} batches per epoch for {world} processes; use a smaller batch")
        return batches[rank : len(batches) - len(batches) % world : world]

    def _batches_per_process(self, epoch: int) -> int:
        return len(self._my_batches(epoch))

    # ----- checkpoints --------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write the last checkpoint atomically: model, optimizer and scheduler state, RNG, trainer state."""
        record = {"state": to_dict(self.state), "config": to_dict(self.cfg)}
        return write_checkpoint(self.out / CHECKPOINT_DIR, self.accelerator, self.model, self.ema, self.optimizer,
                                self.scheduler, record)

    def _load_checkpoint(self, path: Path) -> None:
        saved = read_record(path)
        mine, defaults = to_dict(self.cfg), to_dict(TrainConfig())
        theirs = renamed_keys(TrainConfig, saved["config"])
        # a setting the checkpoint does not name (added since) was at its default
        changed = [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k, defaults[k])]
        if changed:
            raise DataError(
                f"{path}: checkpoint was written with other training settings ({', '.join(changed)}); resuming "
                "would not reproduce the run. Use the same config or a new output folder."
            )
        read_checkpoint(path, self.accelerator, self.model, self.ema, self.optimizer, self.scheduler)
        self.state = TrainState(**saved["state"])

    def _save_model(self) -> None:
        if self.accelerator.is_main_process:
            save_decoder(self.scored_model, self.out / MODEL_DIR, {**self.model_extra, "trained_steps": self.state.step})
        self.accelerator.wait_for_everyone()

    def cleanup(self) -> None:
        """Release the accelerator's references (the output folder is kept)."""
        self.accelerator.free_memory()


def split_passes(index: np.ndarray, lengths: np.ndarray, pass_tokens: int | None) -> list[np.ndarray]:
    """``index`` cut into as few equal passes as keep each one's padded size (rows x longest) within
    ``pass_tokens``; one pass when None or already within it."""
    padded = len(index) * int(lengths[index].max())
    if pass_tokens is None or padded <= pass_tokens:
        return [index]
    return np.array_split(index, min(len(index), -(-padded // pass_tokens)))


def retailer_token_fn(tokenizer, enabled: bool) -> Callable[[np.ndarray], np.ndarray] | None:
    """The retailer-token mapping to use: the tokenizer's, or None when disabled or it knows no retailers."""
    if not enabled or tokenizer.retailer_ids.size == 0:
        return None
    return tokenizer.encode_retailer


def build_evaluator(
    cfg: TrainConfig,
    validation: Examples,
    item_tokens: ItemTokens,
    vocab_size: int,
    retailer_token: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RecallEvaluator:
    """The validation recall@K evaluator that ``cfg`` asks for (fixed sample of ``eval_examples``)."""
    return RecallEvaluator(
        sample_examples(validation, cfg.eval_examples, cfg.seed), item_tokens, BOS, PAD, retailer_token,
        k=cfg.eval_k, beam_width=cfg.eval_beam_width, batch_size=cfg.eval_batch_size, vocab_size=vocab_size,
    )


def train_decoder(
    events: pa.Table,
    item_tokens: ItemTokens,
    tokenizer,
    decoder_cfg: DecoderConfig,
    train_cfg: TrainConfig,
    out: str | Path,
    seq_cfg: SequenceConfig | None = None,
    resume: bool = True,
) -> TrainResult:
    """Events + item SIDs -> the trained decoder in ``out/model`` (best on validation), the last checkpoint in
    ``out/checkpoint`` (resumed from when present and ``resume``), the result in ``out/train_result.json``.

    ``tokenizer`` is the run's ``semid.tokenizer.SIDTokenizer`` (vocabulary, retailer tokens, codebook
    version). The saved decoder records the sequence settings (split, retailer token) a Retriever needs."""
    seq_cfg = seq_cfg or SequenceConfig()
    if decoder_cfg.arch == "item" and seq_cfg.train_stride is None:  # loss at every position: one window per cap
        seq_cfg = dataclasses.replace(seq_cfg, train_stride=decoder_cfg.max_items)
    splits, seq_cfg = split_events(events, decoder_cfg.max_items, seq_cfg)
    retailer = retailer_token_fn(tokenizer, seq_cfg.retailer_token)
    train = tokenize_examples(splits.train, item_tokens, BOS, retailer)
    evaluator = (build_evaluator(train_cfg, splits.validation, item_tokens, tokenizer.vocab_size, retailer)
                 if len(splits.validation) else None)
    log.info("decoder training: %s sequences, %s tokens, %s labelled", f"{len(train):,}", f"{train.tokens.size:,}",
             f"{train.n_labels:,}")
    log.info("decoder validation: %s examples, split %s", f"{len(splits.validation):,}", seq_cfg.split)

    seen = np.unique(np.r_[splits.train.history_items, splits.train.target_items])
    levels = [tokenizer.level_range(lv)[0] for lv in range(tokenizer.tokens_per_item)]

    def build() -> PreTrainedModel:
        return build_decoder(decoder_cfg, tokenizer.vocab_size, tokenizer.tokens_per_item, PAD, BOS,
                             tokenizer.codebook_version, [*levels, tokenizer.level_range(tokenizer.n_levels)[1]],
                             item_tokens.tokens[item_tokens.rows(seen, "training")])

    extra = {"sequence": to_dict(seq_cfg), "retailer_token": retailer is not None}
    trainer = DecoderTrainer(train_cfg, build, train, out, evaluator, PAD, extra)
    trainer.setup(resume=resume)
    try:
        result = trainer.train()
    finally:
        trainer.cleanup()
    if trainer.accelerator.is_main_process:
        (Path(out) / RESULT_FILE).write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return result
