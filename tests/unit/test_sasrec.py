"""SASRec baseline: training pairs, padding-free loss, planted-pattern learning, history masking, seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.data.sequences import Examples, SequenceConfig, build_histories, make_splits
from genrec.evaluation.baselines.base import FitContext
from genrec.evaluation.baselines.neural import banned_pairs, left_pad, column_metrics, training_matrices
from genrec.evaluation.baselines.sasrec import SASRec, SASRecConfig, SASRecModel, sample_negatives
from semid.common import DataError
from helpers.cycles import CATALOG, N_ITEMS, cycle_events, expected_next


@pytest.fixture(scope="module")
def cycle_splits():
    return make_splits(build_histories(cycle_events(300, seed=0)), 50, SequenceConfig(split="leave_one_out"))


def tiny(loss: str = "ce", **kw) -> SASRec:
    cfg = dict(loss=loss, dim=32, layers=1, dropout=0.1, max_len=12, batch_size=32, lr=5e-3, max_epochs=40,
               patience=40, eval_every=5)
    return SASRec(**{**cfg, **kw})


def ctx(seed: int = 0, **options) -> FitContext:
    return FitContext(item_ids=CATALOG, seed=seed, k_values=(5,), options=options)


def test_left_pad_keeps_the_latest_items_right_aligned():
    offsets = np.array([0, 3, 3, 8])
    values = np.arange(1, 9)
    assert left_pad(offsets, values, 4).tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8]]


def test_training_matrices_label_only_targets_and_shift_by_one():
    train = Examples(np.array([1, 2]), np.array([0, 2, 3]), CATALOG[[0, 1, 5]], np.array([0, 2, 3]),
                     CATALOG[[2, 3, 6]], np.array([-1, -1]))
    inputs, labels = training_matrices(train, CATALOG, max_len=4)
    # sequence a b | c d -> inputs a b c, labels (b is context) c d; model index = column + 1
    assert inputs.tolist() == [[0, 1, 2, 3], [0, 0, 0, 6]]
    assert labels.tolist() == [[0, 0, 3, 4], [0, 0, 0, 7]]
    short_inputs, short_labels = training_matrices(train, CATALOG, max_len=2)  # window cut on the left
    assert short_inputs.tolist() == [[2, 3], [0, 6]] and short_labels.tolist() == [[3, 4], [0, 7]]


def test_items_outside_the_catalog_never_become_labels():
    train = Examples(np.array([1]), np.array([0, 1]), CATALOG[[0]], np.array([0, 2]), np.array([5, CATALOG[1]]),
                     np.array([-1]))
    inputs, labels = training_matrices(train, CATALOG, max_len=3)
    assert inputs.tolist() == [[0, 1, 0]] and labels.tolist() == [[0, 0, 2]]


def test_padding_and_unlabelled_rows_do_not_change_the_loss():
    torch.manual_seed(0)
    model = SASRecModel(N_ITEMS, SASRecConfig(dim=16, layers=2, max_len=8, dropout=0.0)).eval()
    x = torch.tensor([[3, 4, 5], [0, 7, 8]])
    y = torch.tensor([[4, 5, 6], [0, 8, 9]])
    base = model.loss(x, y, "ce", None)
    wider = model.loss(torch.nn.functional.pad(x, (3, 0)), torch.nn.functional.pad(y, (3, 0)), "ce", None)
    extra_row = model.loss(torch.cat([x, torch.tensor([[1, 2, 3]])]), torch.cat([y, torch.zeros(1, 3).long()]),
                           "ce", None)
    torch.testing.assert_close(base, wider)
    torch.testing.assert_close(base, extra_row)
    # the loss sums the 5 labelled positions: rows scored alone add up to the same value
    per_row = [model.loss(x[i : i + 1], y[i : i + 1], "ce", None) for i in range(2)]
    torch.testing.assert_close(base, per_row[0] + per_row[1])


def test_padding_gets_no_gradient_through_the_loss():
    torch.manual_seed(0)
    model = SASRecModel(N_ITEMS, SASRecConfig(dim=16, layers=1, max_len=6, dropout=0.0))
    model.loss(torch.tensor([[0, 0, 3, 4]]), torch.tensor([[0, 0, 4, 5]]), "ce", None).backward()
    assert model.encoder.items.weight.grad[0].abs().sum() == 0
    assert model.encoder.positions.weight.grad[:4].abs().sum() == 0  # slots of the two pads (and cropped ones)


def test_sampled_negatives_are_uniform_over_the_other_items():
    gen = torch.Generator().manual_seed(0)
    pos = torch.full((20000,), 3)
    neg = sample_negatives(pos, 5, gen)
    assert (neg != 3).all() and set(neg.tolist()) == {0, 1, 2, 4}
    assert np.bincount(neg.numpy(), minlength=5)[[0, 1, 2, 4]].min() > 4500


def test_ranking_metrics_by_hand():
    catalog = np.arange(10)
    examples = Examples(np.arange(3), np.zeros(4, np.int64), np.zeros(0, np.int64), np.array([0, 1, 3, 3]),
                        np.array([4, 1, 2]), np.zeros(3, np.int64))
    ranked = np.array([[7, 4], [2, -1], [0, 1]])
    m = column_metrics(ranked, examples, catalog)
    # row 0: hit at rank 2 -> recall 1, ndcg 1/log2(3); row 1: one of two targets at rank 1 -> recall 0.5,
    # ndcg 1/(1 + 1/log2(3)); row 2 has no targets and is skipped
    assert m["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1 / (1 + 1 / np.log2(3))) / 2)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_learns_a_planted_cycle(cycle_splits, loss):
    model = tiny(loss).fit(cycle_splits.train, cycle_splits.validation, ctx())
    top = model.recommend(cycle_splits.test, 3)
    assert top.shape == (len(cycle_splits.test), 3) and top.dtype == np.int64
    assert (top[:, 0] == expected_next(cycle_splits.test)).mean() > 0.9
    assert model.history[-1]["loss"] < model.history[0]["loss"]
    assert model.best_epoch >= 5


def test_history_is_masked_and_exclusions_respected(cycle_splits):
    model = tiny(max_epochs=5).fit(cycle_splits.train, cycle_splits.validation, ctx())
    test = cycle_splits.test
    k = N_ITEMS
    top = model.recommend(test, k)
    expected = expected_next(test)
    exclude = [np.array([e, 12345]) for e in expected]  # an unknown id is ignored
    top_ex = model.recommend(test, k, exclude=exclude)
    for i in range(len(test)):
        history = set(test.history(i).tolist())
        row = top[i][top[i] >= 0]
        assert not history & set(row.tolist())
        assert row.size == N_ITEMS - len(history)  # every other item is ranked, the rest padded with -1
        assert (top[i][row.size :] == -1).all()
        assert expected[i] not in top_ex[i]
    unmasked = tiny(max_epochs=5, mask_history=False).fit(cycle_splits.train, cycle_splits.validation, ctx())
    assert (unmasked.recommend(test, k) >= 0).all()  # the full catalog, history included


def test_banned_pairs_are_unique_and_sorted():
    queries = Examples(np.arange(2), np.array([0, 2, 3]), CATALOG[[1, 1, 4]], np.zeros(3, np.int64),
                       np.zeros(0, np.int64), np.zeros(2, np.int64))
    rows, cols = banned_pairs(queries, CATALOG, True, [np.array([CATALOG[2]]), np.array([CATALOG[4], 99])])
    assert rows.tolist() == [0, 0, 1] and cols.tolist() == [1, 2, 4]
    with pytest.raises(DataError, match="exclusion lists"):
        banned_pairs(queries, CATALOG, True, [np.array([1])])


def test_same_seed_same_model_other_seed_differs(cycle_splits):
    runs = [tiny(max_epochs=3).fit(cycle_splits.train, cycle_splits.validation, ctx(seed=s)) for s in (7, 7, 8)]
    losses = [[r["loss"] for r in m.history] for m in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    np.testing.assert_array_equal(runs[0].score(cycle_splits.test), runs[1].score(cycle_splits.test))


def test_options_override_and_unknown_options_fail(cycle_splits):
    model = tiny().fit(cycle_splits.train, cycle_splits.validation, ctx(max_epochs=2))
    assert len(model.history) == 2 and model.config.max_epochs == 2
    with pytest.raises(DataError, match="unknown options"):
        tiny().fit(cycle_splits.train, cycle_splits.validation, ctx(epochs=2))
    with pytest.raises(DataError, match="loss"):
        SASRec(loss="hinge")
    with pytest.raises(DataError, match="before fit"):
        SASRec().recommend(cycle_splits.test, 5)



def test_bf16_logits_give_nearly_the_float32_loss():
    torch.manual_seed(0)
    model = SASRecModel(N_ITEMS, SASRecConfig(dim=16, layers=1, max_len=6, dropout=0.0, bf16_logits=False)).eval()
    x, y = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        exact = float(model.loss(x, y, "ce", None))
        model.bf16_logits = True
        assert float(model.loss(x, y, "ce", None)) == pytest.approx(exact, rel=1e-2)


def test_small_item_init_starts_from_near_uniform_scores():
    torch.manual_seed(0)
    n = 2000
    x, y = torch.randint(1, n + 1, (8, 10)), torch.randint(1, n + 1, (8, 10))
    small = SASRecModel(n, SASRecConfig(dim=64, layers=1, dropout=0.0, bf16_logits=False)).eval()
    wide = SASRecModel(n, SASRecConfig(dim=64, layers=1, dropout=0.0, bf16_logits=False, init_std=None)).eval()
    assert float(small.item_table().detach().std()) == pytest.approx(0.02, rel=0.05)
    assert float(wide.item_table().detach().std()) == pytest.approx(64 ** -0.5, rel=0.05)
    with torch.no_grad():
        per_label = [float(m.loss(x, y, "ce", None)) / y.numel() for m in (small, wide)]
    # tied output vectors of std 0.02 give logits near 0: the loss starts at log(n), the wide init well above
    assert per_label[0] == pytest.approx(np.log(n), abs=0.05)
    assert per_label[1] > np.log(n) + 0.2
