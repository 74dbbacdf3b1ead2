"""genrec report: the payload read from a run (catalog sorted so every SID prefix is one range, neighbours,
the similarity curve, the decoder's history written as training happens), and the command. (The page in
headless Chromium: ``tests/browser/test_report_page.py``.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genrec.model.training_log import append_record, read_training_log
from genrec.run.layout import HISTORY_FILE
from helpers.pages import tiny_report


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    return tiny_report(tiny_run[0], tmp_path_factory.mktemp("report"))


def test_training_writes_its_history_as_it_goes(tiny_run):
    root, cfg = tiny_run
    lines = [json.loads(x) for x in (root / "run" / "decoder" / HISTORY_FILE).read_text().splitlines()]
    epochs = [r for r in lines if "lr" in r]
    evals = [r for r in lines if "recall@10" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, cfg.train.epochs + 1))
    assert all(np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in epochs)
    result = json.loads((root / "run" / "decoder" / "train_result.json").read_text())
    assert [r for r in result["history"] if "recall@10" in r] == evals  # the same records as the result's


def test_read_training_log_keeps_the_latest_training(tmp_path):
    for record in ({"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 3.0}, {"epoch": 2, "step": 20, "lr": 1.0},
                   {"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 2.5},  # --restart: steps go back
                   {"epoch": 1, "step": 10, "recall@10": 0.2}, {"epoch": 1, "step": 10, "recall@10": 0.3}):
        append_record(tmp_path, record)
    (tmp_path / HISTORY_FILE).open("a").write('{"epoch": 2, "st')  # cut short by a kill
    assert read_training_log(tmp_path) == [{"epoch": 1, "step": 10, "lr": 1.0, "train_loss": 2.5},
                                      {"epoch": 1, "step": 10, "recall@10": 0.3}]
    append_record(tmp_path / "nowhere", {"epoch": 1}, enabled=False)  # other processes write nothing
    assert read_training_log(tmp_path / "empty") == []


def test_payload_sorts_the_catalog_by_sid(report, tiny_run):
    _, payload = report
    cat = payload["catalog"]
    levels = len(payload["codebook_sizes"])
    codes = np.asarray(cat["codes"]).reshape(-1, levels)
    n = codes.shape[0]
    keys = [tuple(c) for c in codes.tolist()]
    assert keys == sorted(keys)  # every prefix is one contiguous range
    table = pq.read_table(tiny_run[0] / "run" / "sids.parquet")
    sids = dict(zip(table.column("item_id").to_pylist(), table.column("sid").to_pylist()))
    assert cat["sids"] == [sids[i] for i in cat["ids"]] and len(set(cat["sids"])) == n
    assert all(s.startswith("_".join(map(str, k))) for s, k in zip(cat["sids"], keys))
    nn = np.asarray(cat["nn"]).reshape(n, cat["k_nn"])
    assert cat["k_nn"] == 5 and not (nn == np.arange(n)[:, None]).any()
    assert sum(payload["level1_counts"]) == n
    assert len(cat["path"]) == n and max(cat["path"]) < len(cat["paths"])
    curve = payload["curve"]
    assert curve["mean_depth"][-1] > curve["mean_depth"][0] + 1  # near pairs share far more levels
    assert payload["decoder"]["epochs"] and "train_loss" in payload["decoder"]["epochs"][0]


def test_report_is_self_contained(report):
    path, _ = report
    page = path.read_text()
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page  # scripts and styles inlined
    assert 1e6 < path.stat().st_size < 10e6


def test_report_command(tiny_run, tmp_path, capsys):
    from genrec.cli import main as cli

    assert cli(["report", "--run", str(tiny_run[0] / "run"), "--out", str(tmp_path / "r")]) == 0
    assert f"wrote {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().out
    assert cli(["report", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "r2")]) == 2
    assert "genrec: error:" in capsys.readouterr().err and not (tmp_path / "r2").exists()
