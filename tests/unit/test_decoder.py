"""The decoder: both layouts build, save / load round-trips, the codebook version is enforced, and the
labelled-positions loss equals transformers' own loss whatever the padding side."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.model.decoder import (
    CodebookMismatchError,
    DecoderConfig,
    LabelledLoss,
    build_decoder,
    decoder_config,
    decoder_meta,
    load_decoder,
    save_decoder,
)
from genrec.model.tokens import TokenizedExamples, collate
from semid.common import DataError
from semid.config import ConfigError

VOCAB, TPI = 60, 3


def _tiny(arch: str, **kw) -> DecoderConfig:
    return DecoderConfig(arch=arch, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_items=4, **kw)


def _seqs() -> TokenizedExamples:
    rng = np.random.default_rng(0)
    lengths = np.array([13, 7, 10])
    tokens = rng.integers(5, VOCAB, lengths.sum())
    tokens[np.r_[0, np.cumsum(lengths)[:-1]]] = 1  # <bos>
    return TokenizedExamples(tokens, np.r_[0, np.cumsum(lengths)], np.array([4, 1, 7]))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_save_load_round_trip_keeps_outputs_and_config(arch, tmp_path):
    torch.manual_seed(0)
    cfg = _tiny(arch)
    model = build_decoder(cfg, VOCAB, TPI, codebook_version="cb-1").eval()
    save_decoder(model, tmp_path / "dec", extra={"retailer_token": True})
    assert (tmp_path / "dec" / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list((tmp_path / "dec").glob("*.bin"))
    back = load_decoder(tmp_path / "dec", codebook_version="cb-1")
    batch = collate(_seqs(), np.arange(3), pad_id=0)
    kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        assert torch.equal(model(**kwargs).logits, back(**kwargs).logits)
    assert decoder_config(back) == cfg
    meta = decoder_meta(tmp_path / "dec")
    assert meta["codebook_version"] == "cb-1" and meta["retailer_token"] is True and meta["tokens_per_item"] == TPI
    assert back.config.vocab_size == VOCAB
    assert back.config.to_dict().get("max_position_embeddings", back.config.to_dict().get("n_positions")) == 2 + 5 * TPI


def test_loading_against_another_codebook_version_fails_clearly(tmp_path):
    save_decoder(build_decoder(_tiny("llama"), VOCAB, TPI, codebook_version="cb-1"), tmp_path / "dec")
    with pytest.raises(CodebookMismatchError, match="codebook version 'cb-1'.*'cb-2'"):
        load_decoder(tmp_path / "dec", codebook_version="cb-2")
    load_decoder(tmp_path / "dec")  # no version asked: loads


def test_not_a_decoder_folder(tmp_path):
    with pytest.raises(DataError, match="no config.json"):
        load_decoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DataError, match="not a genrec decoder"):
        load_decoder(tmp_path)


def test_bad_configs_are_errors():
    with pytest.raises(ConfigError, match=r"decoder\.n_heads: must divide d_model \(10\), got 3"):
        DecoderConfig(d_model=10, n_heads=3)
    with pytest.raises(ConfigError, match=r"decoder\.arch: must be one of \['llama', 'gpt2', 'item'\], got 'rnn'"):
        build_decoder(DecoderConfig(arch="rnn"), VOCAB, TPI)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_labelled_loss_matches_transformers_loss_on_either_padding_side(arch):
    torch.manual_seed(0)
    model = build_decoder(_tiny(arch, dropout=0.0), VOCAB, TPI).eval()
    seqs = _seqs()
    right = collate(seqs, np.arange(3), pad_id=0, padding_side="right")
    left = collate(seqs, np.arange(3), pad_id=0, padding_side="left")
    wrapper = LabelledLoss(model).eval()
    with torch.no_grad():
        ours, n = wrapper(**right)
        ours_left, _ = wrapper(**left)
        theirs = model(**right).loss
    assert int(n) == int((seqs.lengths - seqs.n_context).sum())  # every labelled token counted once
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_left, theirs, rtol=1e-5, atol=1e-5)
