"""benchmarks/scale.py end to end on a tiny generated catalog: every stage runs, the JSON and the table come out,
every decoded SID names a product the query's retailer stocks, and faiss is tuned to its recall bar."""
from __future__ import annotations

import json


def test_scale_benchmark_runs_every_stage_on_a_tiny_catalog(tmp_path, capsys, load_script):
    bench = load_script("benchmarks/scale.py")
    argv = ["--sizes", "1500", "--sample", "1200", "--epochs", "1", "--events", "20000", "--queries", "130",
            "--decode-batches", "1", "--threads", "1", "--data-root", str(tmp_path / "data"),
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    (got,) = bench.run(argv)
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "scale-1500.json").read_text())
    assert saved["products"] == 1500 and saved["semid"]["sample"] == 1200
    assert got["semid"]["full_sid_unique"] and got["semid"]["dedup_vocab"] == got["semid"]["max_group"]
    assert got["index"]["stock_pairs"] > 1500 and got["serve"]["index_rss_mb"] > 0
    for beam in (20, 50):  # the retailer constraint: every beam is a product its query's retailer stocks
        assert got["decode"][f"beam{beam}"]["in_stock_share"] == 1.0
        assert got["decode"][f"beam{beam}"]["forest_qps"] > 0
    assert got["faiss"]["tune_recall"] >= 0.95
    lines = out.splitlines()
    assert any(line.startswith("decode qps, beam 50") for line in lines)
    assert max(len(line) for line in lines) <= 100
    assert bench.run(["--table", str(tmp_path / "out" / "scale-1500.json")])[0]["products"] == 1500


def test_taxonomy_alignment_counts_products_on_their_groups_usual_codes(load_script):
    """The share of products whose first code is their department's most common, and whose first two codes are
    their leaf's most common pair, on a hand-made sample."""
    import numpy as np

    bench = load_script("benchmarks/scale.py")
    paths = [["a", "x"]] * 4 + [["a", "y"]] * 2 + [["b", "z"]] * 4
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 1],  # a/x: 3 of 4 on (0, 1)
                      [0, 2], [0, 3],  # a/y: 1 of 2 on either pair
                      [2, 0], [2, 0], [2, 5], [3, 0]])  # b/z: 2 of 4 on (2, 0)
    got = bench.taxonomy_alignment(codes, paths)
    assert got["dept_code1_share"] == (5 + 3) / 10  # a: 5 of 6 on code 0; b: 3 of 4 on code 2
    assert got["leaf_prefix2_share"] == (3 + 1 + 2) / 10
