"""The training recipe: it learns a learnable pattern, stops early, and a run interrupted mid-epoch and
resumed from its last checkpoint ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from genrec.model.decoder import decoder_meta, load_decoder
from genrec.model.tokens import ItemTokens, tokenize_examples
from genrec.model.optim import lr_schedule
from genrec.model.train import DecoderTrainer, TrainConfig
from genrec.run.layout import CHECKPOINT_DIR, MODEL_DIR
from semid.common import DataError
from semid.config import ConfigError
from semid.tokenizer import BOS, SIDTokenizer
from helpers.launch import launch
from helpers.walk import N_ITEMS, train_config, walk_trainer, walk_world


class Interrupt(RuntimeError):
    """Injected failure."""


def _weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("arch", ["llama", "item"])
def test_training_learns_the_pattern_and_saves_the_best_decoder(tmp_path, arch):
    cfg = train_config(lr=5e-3, batch_size=16, epochs=6, patience=20, checkpoint_every=0)
    tr = walk_trainer(tmp_path, cfg, dropout=0.0, arch=arch)
    tr.setup()
    result = tr.train()
    tr.cleanup()
    evals = [h for h in result.history if "recall@5" in h]
    assert result.monitor == "recall@5" and len(evals) == 6
    assert evals[0]["recall@5"] < 0.6 and result.best >= 0.9  # from guessing to knowing the next item
    assert result.tokens_per_s > 0 and result.steps == 6 * tr.steps_per_epoch and result.epochs_completed == 6
    model = load_decoder(tmp_path / MODEL_DIR, codebook_version="cb-test")
    assert decoder_meta(model)["trained_steps"] == result.best_step
    assert decoder_meta(model)["retailer_token"] is False


@pytest.mark.parametrize("arch", ["llama", "item"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, arch):
    cfg = train_config(lr=5e-3, warmup_steps=3, batch_size=48, epochs=3, checkpoint_every=3)
    full = walk_trainer(tmp_path / "full", cfg, arch=arch)
    full.setup()
    reference = full.train()

    def crash(step: int) -> None:
        if step == 8:  # mid-epoch 1 (5 batches per epoch), two steps after the checkpoint at step 6
            raise Interrupt("power cut")

    first = walk_trainer(tmp_path / "cut", cfg, arch=arch)
    first.setup()
    with pytest.raises(Interrupt):
        first.train(step_callback=crash)
    state = json.loads((tmp_path / "cut" / CHECKPOINT_DIR / "trainer_state.json").read_text())["state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 1)

    second = walk_trainer(tmp_path / "cut", cfg, arch=arch)
    second.setup(resume=True)
    resumed = second.train()
    assert resumed.steps == reference.steps and resumed.history == reference.history
    for name in (CHECKPOINT_DIR, MODEL_DIR):
        a, b = _weights(tmp_path / "full" / name), _weights(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = load_file(str(tmp_path / "full" / CHECKPOINT_DIR / "optimizer.safetensors"))
    opt_b = load_file(str(tmp_path / "cut" / CHECKPOINT_DIR / "optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)


def test_resume_refuses_other_settings(tmp_path):
    cfg = train_config(batch_size=16, max_steps=3, checkpoint_every=2)
    tr = walk_trainer(tmp_path, cfg, with_eval=False)
    tr.setup()
    tr.train()
    other = walk_trainer(tmp_path, train_config(batch_size=8, max_steps=3, checkpoint_every=2), with_eval=False)
    with pytest.raises(DataError, match="batch_size"):
        other.setup(resume=True)


def test_resume_accepts_a_checkpoint_from_before_a_new_setting(tmp_path):
    """A checkpoint written before a setting existed resumes when that setting is at its default, and one
    written under a key's old spelling (max_epochs, num_threads) reads it as the new key."""
    cfg = train_config(batch_size=16, max_steps=3, checkpoint_every=2, epochs=7)
    tr = walk_trainer(tmp_path, cfg, with_eval=False)
    tr.setup()
    tr.train()
    state_file = tmp_path / CHECKPOINT_DIR / "trainer_state.json"
    saved = json.loads(state_file.read_text())
    del saved["config"]["ema_decay"]
    saved["config"]["max_epochs"] = saved["config"].pop("epochs")
    saved["config"]["num_threads"] = saved["config"].pop("threads")
    state_file.write_text(json.dumps(saved))
    walk_trainer(tmp_path, cfg, with_eval=False).setup(resume=True)
    with pytest.raises(DataError, match="ema_decay"):
        walk_trainer(tmp_path, train_config(batch_size=16, max_steps=3, checkpoint_every=2, epochs=7, ema_decay=0.9),
                 with_eval=False).setup(resume=True)


def test_early_stopping_and_max_steps(tmp_path):
    cfg = train_config(lr=0.0, warmup_steps=0, batch_size=64, epochs=20, patience=2)
    tr = walk_trainer(tmp_path / "a", cfg, arch="gpt2")  # lr 0: the metric never improves after the first eval
    tr.setup()
    result = tr.train()
    assert result.stopped_early and result.epochs_completed == 3
    tr = walk_trainer(tmp_path / "b", train_config(batch_size=16, max_steps=5), with_eval=False)
    tr.setup()
    assert tr.train().steps == 5 and (tmp_path / "b" / MODEL_DIR / "model.safetensors").is_file()


def test_schedule_warms_up_then_decays_to_the_floor():
    f = lr_schedule("cosine", warmup_steps=10, min_lr_ratio=0.1, total=110)
    values = [f(s) for s in range(111)]
    assert values[0] < values[5] < values[9] <= 1.0 and values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:])) and values[110] == pytest.approx(0.1)
    assert lr_schedule("constant", 0, 0.05, 50)(40) == 1.0


def test_no_training_targets_is_an_error(tmp_path):
    tok, items, splits = walk_world(n_users=5, length=2)
    with pytest.raises(DataError, match="no training sequences"):
        DecoderTrainer(TrainConfig(), lambda: None, tokenize_examples(splits.train, items, BOS), tmp_path)


@pytest.mark.parametrize("arch", ["llama", "item"])
def test_train_decoder_end_to_end_with_retailer_tokens(tmp_path, arch):
    from semid.sids import assign_sids

    from genrec.model.train import train_decoder
    from genrec.run.layout import RESULT_FILE
    from genrec.model.decoder import DecoderConfig as DC

    rng = np.random.default_rng(1)
    n_users, length = 60, 6
    user = np.repeat(np.arange(n_users), length)
    t = np.tile(np.arange(length), n_users)
    ev = pa.table({"user_id": user, "session_id": user * 10 + t // 2, "ts": t // 2, "item_id": (user + t) % N_ITEMS,
                   "position": (t % 2).astype(np.int32), "retailer_id": (user % 3).astype(np.int32)})
    sids = assign_sids(np.arange(N_ITEMS), rng.integers(0, 4, (N_ITEMS, 2)), codebook_version="cb-e2e")
    tok = SIDTokenizer.from_sids(sids, [4, 4], retailer_ids=[0, 1, 2], codebook_version="cb-e2e")
    items = ItemTokens.from_sids(sids, tok)
    cfg = train_config(batch_size=16, epochs=2, eval_k=5, eval_beam_width=5)
    dcfg = DC(arch=arch, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_items=3, id_embeddings=arch == "item")
    result = train_decoder(ev, items, tok, dcfg, cfg, tmp_path)
    assert result.monitor == "recall@5" and result.epochs_completed == 2 and not result.stopped_early
    assert result.steps > 0 and result.steps % 2 == 0 and 0 < result.best_step <= result.steps  # 2 equal epochs
    meta = decoder_meta(tmp_path / MODEL_DIR)
    assert meta["retailer_token"] is True and meta["sequence"]["split"] == "last_basket"
    assert meta["codebook_version"] == "cb-e2e"
    assert json.loads((tmp_path / RESULT_FILE).read_text())["steps"] == result.steps
    again = train_decoder(ev, items, tok, dcfg, cfg, tmp_path)
    assert again.steps == result.steps and again.history == result.history  # finished run: resume is a no-op


def test_bf16_mixed_precision_trains_after_a_full_precision_run(tmp_path):
    for precision in ("no", "bf16"):  # accelerate's per-process state must not get in the way
        tr = walk_trainer(tmp_path / precision, train_config(batch_size=32, max_steps=4, mixed_precision=precision),
                      with_eval=False)
        tr.setup()
        assert tr.accelerator.mixed_precision == precision
        result = tr.train()
        assert result.steps == 4 and np.isfinite(result.tokens_per_s)


def test_weight_average_is_scored_saved_and_resumed_exactly(tmp_path):
    """ema_decay: the saved decoder is the moving average (not the raw weights), it still learns the pattern,
    and an interrupted run resumes to the same average bit for bit."""
    cfg = train_config(lr=5e-3, warmup_steps=3, batch_size=48, epochs=3, checkpoint_every=3, ema_decay=0.8)
    full = walk_trainer(tmp_path / "full", cfg, with_eval=False)
    full.setup()
    full.train()

    def crash(step: int) -> None:
        if step == 8:
            raise Interrupt("power cut")

    first = walk_trainer(tmp_path / "cut", cfg, with_eval=False)
    first.setup()
    with pytest.raises(Interrupt):
        first.train(step_callback=crash)
    second = walk_trainer(tmp_path / "cut", cfg, with_eval=False)
    second.setup(resume=True)
    second.train()
    raw = _weights(tmp_path / "full" / CHECKPOINT_DIR)
    ema = load_file(str(tmp_path / "full" / CHECKPOINT_DIR / "ema.safetensors"))
    saved = _weights(tmp_path / "full" / MODEL_DIR)
    shared = saved.keys() & ema.keys()  # tied embeddings may be stored under either name
    assert len(shared) >= len(saved) - 1 and all(torch.equal(saved[k], ema[k]) for k in shared)  # the average is kept
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    resumed = load_file(str(tmp_path / "cut" / CHECKPOINT_DIR / "ema.safetensors"))
    assert all(torch.equal(ema[k], resumed[k]) for k in ema)

    learner = walk_trainer(tmp_path / "learn", train_config(lr=5e-3, batch_size=16, epochs=6, patience=20,
                                                   checkpoint_every=0, ema_decay=0.9), dropout=0.0)
    learner.setup()
    assert learner.train().best >= 0.9
    with pytest.raises(ConfigError, match=r"train\.ema_decay: must lie in \[0, 1\), got 1.0"):
        train_config(ema_decay=1.0)


TRAIN_LAUNCHED = """
import dataclasses, json, sys
from pathlib import Path
from accelerate import PartialState
sys.path.insert(0, sys.argv[3])  # tests/ (helpers)
from helpers.walk import train_config, walk_trainer
trainer = walk_trainer(Path(sys.argv[1]), train_config(**json.loads(sys.argv[2])), dropout=0.0)
trainer.setup()
result = trainer.train()
record = {"processes": trainer.accelerator.num_processes, "steps_per_epoch": trainer.steps_per_epoch,
          **dataclasses.asdict(result)}
Path(sys.argv[1], f"result{PartialState().process_index}.json").write_text(json.dumps(record))
trainer.cleanup()
PartialState().wait_for_everyone()
PartialState().destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_under_accelerate_train_to_the_validation_of_one(tmp_path):
    """DDP over gloo on CPU: each process takes every other batch, so at half the per-process batch the
    optimizer steps see the same sequences per step; both processes end in one decision and one saved model,
    and the validation reached matches one process's within noise."""
    kw = dict(lr=5e-3, epochs=6, patience=20, checkpoint_every=0)
    one = walk_trainer(tmp_path / "one", train_config(batch_size=16, **kw), dropout=0.0)
    one.setup()
    single = one.train()
    one.cleanup()
    script = tmp_path / "launched.py"
    script.write_text(TRAIN_LAUNCHED)
    out = tmp_path / "two"
    out.mkdir()
    proc = launch(script, str(out), json.dumps({"batch_size": 8, **kw}), str(Path(__file__).parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [json.loads((out / f"result{rank}.json").read_text()) for rank in range(2)]
    assert all(r["processes"] == 2 for r in two)
    assert two[0]["steps_per_epoch"] == two[1]["steps_per_epoch"] == one.steps_per_epoch
    assert two[0]["best"] == two[1]["best"] and two[0]["best_step"] == two[1]["best_step"]  # one decision
    assert single.best >= 0.8 and two[0]["best"] >= 0.8  # both learn the walk (chance: 5 of 32 items)
    assert abs(two[0]["best"] - single.best) <= 0.1  # within noise: 40 validation shoppers, 0.025 each
    assert decoder_meta(load_decoder(out / MODEL_DIR, codebook_version="cb-test"))["trained_steps"] == two[0]["best_step"]



def test_split_passes_keeps_each_pass_within_its_token_budget():
    from genrec.model.train import split_passes

    lengths = np.array([10, 12, 12, 9, 12, 11, 12, 12])
    index = np.arange(8)
    assert [p.tolist() for p in split_passes(index, lengths, None)] == [index.tolist()]
    assert [p.tolist() for p in split_passes(index, lengths, 96)] == [index.tolist()]  # 8 x 12 fits
    parts = split_passes(index, lengths, 40)
    assert np.concatenate(parts).tolist() == index.tolist()
    assert len(parts) == 3 and all(len(p) * lengths[p].max() <= 40 for p in parts)


@pytest.mark.parametrize("arch", ["llama", "item"])
def test_a_batch_cut_into_passes_takes_the_step_of_one_pass(tmp_path, arch):
    """Gradients of several passes add up to the whole batch's: the optimizer sees the same gradient and the
    same loss is logged (float32, no dropout, so the passes draw nothing at random)."""
    seen = {}
    for name, pass_tokens in (("one", None), ("passes", 150)):
        cfg = train_config(batch_size=48, max_steps=1, checkpoint_every=0, pass_tokens=pass_tokens,
                           mixed_precision="no", grad_clip=0.0)
        tr = walk_trainer(tmp_path / name, cfg, dropout=0.0, with_eval=False, arch=arch)
        tr.setup()
        index = tr._my_batches(0)[0]
        grads = []
        step = tr.optimizer.step
        tr.optimizer.step = lambda *a, **k: (grads.append([p.grad.clone() for p in tr.wrapper.parameters()
                                                           if p.grad is not None]), step(*a, **k))[1]
        loss, tokens = tr._step(index)
        seen[name] = (float(loss), tokens, grads[0])
        tr.cleanup()
    lengths = walk_trainer(tmp_path / "probe", train_config(), with_eval=False, arch=arch).data.lengths
    assert len(index) * int(lengths[index].max()) > 150  # the budget does cut this batch
    (loss_a, tok_a, g_a), (loss_b, tok_b, g_b) = seen["one"], seen["passes"]
    assert tok_a == tok_b and loss_a == pytest.approx(loss_b, rel=1e-5)
    assert len(g_a) == len(g_b) and all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(g_a, g_b))
