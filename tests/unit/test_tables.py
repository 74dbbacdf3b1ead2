"""What the commands print fits 100 columns: the evaluation table and the intrinsic-metrics table split
their columns into blocks (each repeating the row names) instead of running wide, and lose no figure."""
from __future__ import annotations

import re

from genrec.evaluation.harness import format_table
from semid.intrinsic import compare_intrinsic, format_intrinsic
from semid.text_table import WIDTH, column_blocks

MODELS = ("genrec", "popular", "own_popular", "itemknn", "semantic_knn", "sasrec_ce", "two_tower")


def _wide_result() -> dict:
    """An evaluation result with every column the table knows: recall/NDCG at three K, the new-to-shopper
    ones, the list-quality ones, and two slices."""
    ks = (5, 10, 20)
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    cols += [f"new_{c}" for c in cols] + ["brands@20", "categories@20", "coverage@20", "invalid_rate"]
    models = {name: {c: 0.0123 + i / 1000 for i, c in enumerate(cols)} for name in MODELS}
    slices = {s: {name: {**{c: 0.5 for c in cols[:6]}, "count": 1234} for name in MODELS}
              for s in ("cold_start", "popularity: tail")}
    return {"protocol": {"k_values": list(ks)}, "models": models, "slices": slices}


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_column_blocks_pack_left_to_right_within_the_limit():
    assert column_blocks(10, [30, 30, 30], limit=100) == [[0, 1, 2]]
    assert column_blocks(10, [30, 30, 30, 30], limit=100) == [[0, 1, 2], [3]]
    assert column_blocks(10, [120, 5], limit=100) == [[0], [1]]  # too wide for any block: alone
    assert column_blocks(10, [], limit=100) == []


def test_evaluation_table_fits_100_columns_and_keeps_every_figure():
    result = _wide_result()
    text = format_table(result)
    assert max(map(len, _lines(text))) <= WIDTH
    headers = [line for line in _lines(text) if line.startswith(("models", "slice:"))]
    assert len(headers) > 3  # split: more than one block for the models and for each slice
    for col in result["models"]["genrec"]:
        assert re.search(rf"(?<![\w@]){re.escape(col)}\b", text), col
    for name in MODELS:  # every block names every model
        assert sum(line.split()[0] == name for line in _lines(text) if line.strip()) == len(headers)
    assert text.count("0.0123") == len(MODELS) and text.count("1234") == 2 * len(MODELS)


def test_a_narrow_evaluation_table_stays_one_block():
    result = {"protocol": {"k_values": [10]}, "models": {"genrec": {"recall@10": 0.1, "ndcg@10": 0.05}}}
    text = format_table(result)
    assert _lines(text)[0].split() == ["models", "recall@10", "ndcg@10"] and len(_lines(text)) == 3


def test_intrinsic_tables_fit_100_columns():
    one = {"n_items": 49688, "codebook_sizes": [128, 256, 512, 1024], "utilization": [1.0, 0.999, 0.998, 0.97],
           "share_level_at_cos90": [0.975, 0.61, 0.2, 0.05], "taxonomy_alignment_leaf": [0.71, 0.5, 0.3, 0.2],
           "spearman_similarity_depth": 0.8147, "reconstruction_error": 0.232, "collision_rate": 0.1}
    single = format_intrinsic(one)
    assert max(map(len, _lines(single))) <= WIDTH and len(_lines(single)) == 2 + 8
    runs = {f"rqvae-lambda-0.0{i}-seed{i}": one for i in range(6)}
    text = compare_intrinsic(runs)
    assert max(map(len, _lines(text))) <= WIDTH
    heads = [line for line in _lines(text) if line.startswith("metric")]
    assert len(heads) > 1 and sum(len(h.split()) - 1 for h in heads) == len(runs)  # every run, once
    assert text.count("0.8147") == len(runs)


def test_demo_carousels_wrap_to_100_columns(tiny_run, capsys):
    from genrec.run.demo import _say, show_carousels

    root, _ = tiny_run
    show_carousels(root / "data", root / "run", shoppers=2, k=3)
    long = "   shopper 1 recently bought: " + "; ".join(["Harvest Growers Juicy Granny Smith Apples 1kg"] * 4)
    _say(long, 6)
    lines = _lines(capsys.readouterr().out)
    assert len(lines) >= 2 * (1 + 3) + 3 and max(map(len, lines)) <= WIDTH
    wrapped = lines[-3:]
    assert all(line.startswith(" " * 6) and line[6] != " " for line in wrapped[1:])
    assert " ".join(line.strip() for line in wrapped) == long.strip()  # wrapped, nothing cut
