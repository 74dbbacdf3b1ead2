"""benchmarks/quality.py: one quick seed end to end (training copy, run, harness JSON), and the merge of
seeds into mean +- standard deviation with ratios and the quoted TIGER row."""
from __future__ import annotations

import copy
import json

import pytest


@pytest.fixture(scope="module")
def quality(load_script):
    return load_script("benchmarks/quality.py")


@pytest.fixture(scope="module")
def quick_seed(quality, tmp_path_factory):
    """One ``--quick`` seed: (its JSON, the work folder)."""
    work = tmp_path_factory.mktemp("quality")
    assert quality.main(["--quick", "--seed", "0", "--workdir", str(work)]) == 0
    return json.loads((work / "quick-seed0.json").read_text()), work


def test_quick_seed_trains_on_the_held_out_copy_and_scores_every_model(quick_seed):
    result, work = quick_seed
    assert set(result["models"]) == {"genrec", "popular", "itemknn", "semantic_knn"}
    assert result["models"]["genrec"]["invalid_rate"] == 0.0
    cold = result["protocol"]["cold_start_items"]
    assert cold > 0 and "cold_start" in result["slices"]
    assert 0 < result["timings"]["genrec"]["train_s"] <= result["timings"]["seed_total_s"]
    # the run never saw a cold-start item before its shopper's test basket: the training copy lacks them
    import pyarrow.parquet as pq

    full = pq.read_table(work / "quick-data" / "events.parquet").num_rows
    copy_rows = pq.read_table(work / "quick-seed0" / "data" / "events.parquet").num_rows
    assert copy_rows < full


def test_merge_gives_mean_and_std_over_seeds(quality, quick_seed, capsys):
    result, work = quick_seed
    other = copy.deepcopy(result)
    other["config"]["seed"] = 1
    for metrics in other["models"].values():
        metrics["recall@10"] = metrics["recall@10"] + 0.1
    merged = quality.merge([result, other])
    r10 = merged["models"]["itemknn"]["recall@10"]
    assert r10["mean"] == pytest.approx(result["models"]["itemknn"]["recall@10"] + 0.05)
    assert r10["std"] == pytest.approx(0.05) and r10["n"] == 2
    assert merged["seeds"] == [0, 1]
    paths = [work / "a.json", work / "b.json"]
    for p, r in zip(paths, (result, other)):
        p.write_text(json.dumps(r))
    assert quality.main(["--merge", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "+-" in out and "ours/this" in out and "TIGER" not in out  # quoted only for Amazon Beauty


def test_merge_keeps_a_model_some_seeds_lack_and_says_how_many_seeds_it_has(quality, quick_seed):
    result, _ = quick_seed
    other = copy.deepcopy(result)
    other["config"]["seed"] = 1
    for table in (other["models"], other["timings"], *other["slices"].values()):
        table.pop("itemknn", None)
    merged = quality.merge([other, result])  # the seed with the row second: its models still count
    assert merged["models"]["itemknn"]["recall@10"]["n"] == 1
    assert merged["models"]["genrec"]["recall@10"]["n"] == 2
    assert "itemknn" in merged["timings"] and "itemknn" in merged["slices"]["cold_start"]
    text = quality.format_merged(merged, None)
    row = next(line for line in text.splitlines() if line.startswith("itemknn"))
    assert "(n=1)" in row and "+-" not in row


def test_merge_shows_new_to_shopper_recall_where_the_harness_scored_it(quality, quick_seed):
    result, _ = quick_seed
    assert "new_recall@10" in result["models"]["genrec"]  # the quick world is basket data
    text = quality.format_merged(quality.merge([result, result]), None)
    assert "new to the shopper" in text and "new_recall@10" in text


def test_tiger_row_is_quoted_for_beauty(quality, quick_seed):
    merged = quality.merge([quick_seed[0]])
    text = quality.format_merged(merged, "amazon-beauty")
    assert "TIGER (quoted)" in text and "0.0648" in text


@pytest.mark.slow
def test_trained_baselines_fit_in_a_worker_while_the_decoder_trains(quality, tmp_path):
    """--jobs 2: SASRec fits in a spawned worker; its row joins the main result in the listed order, scored
    on the same split as the in-process rows. Slow (about 2 minutes on 2 loaded cores): it trains the quick
    decoder twice and starts a fresh interpreter for the worker."""
    work = tmp_path / "q"
    args = ["--quick", "--seed", "0", "--workdir", str(work), "--baselines", "popular,sasrec_ce"]
    assert quality.main(args + ["--jobs", "2"]) == 0
    result = json.loads((work / "quick-seed0.json").read_text())
    assert list(result["models"]) == ["genrec", "popular", "sasrec_ce"]
    assert result["config"]["jobs"] == 2 and result["timings"]["sasrec_ce"]["fit_s"] > 0
    assert list(result["slices"]["cold_start"]) == ["genrec", "popular", "sasrec_ce"]
    serial = tmp_path / "serial.json"
    assert quality.main(args + ["--jobs", "1", "--out", str(serial)]) == 0
    alone = json.loads(serial.read_text())
    assert alone["models"]["popular"] == result["models"]["popular"]
    assert alone["slices"]["cold_start"]["sasrec_ce"]["count"] == result["slices"]["cold_start"]["sasrec_ce"]["count"]


def test_a_failed_worker_costs_its_row_only(quality):
    from concurrent.futures import Future

    done, broken = Future(), Future()
    done.set_result({"models": {"two_tower": {"recall@10": 0.1}}, "choices": {"two_tower": {}},
                     "timings": {"two_tower": {"fit_s": 1.0}}, "slices": {"cold_start": {"two_tower": {"count": 3}}}})
    broken.set_exception(RuntimeError("killed"))
    result = {"models": {"genrec": {"recall@10": 0.2}, "popular": {"recall@10": 0.01}}, "choices": {},
              "timings": {}, "slices": {"cold_start": {"genrec": {"count": 3}}}}
    out = quality._absorb(result, {"sasrec_ce": broken, "two_tower": done},
                          ["genrec", "popular", "sasrec_ce", "two_tower"])
    assert list(out["models"]) == ["genrec", "popular", "two_tower"]
    assert "killed" in out["failed"]["sasrec_ce"] and list(out["slices"]["cold_start"]) == ["genrec", "two_tower"]


def test_rescore_replaces_only_our_rows(quality, quick_seed, tmp_path):
    result, work = quick_seed
    out = tmp_path / "seed0.json"
    stale = copy.deepcopy(result)
    stale["models"]["genrec"]["recall@10"] = -1.0
    stale["slices"]["cold_start"]["genrec"]["recall@10"] = -1.0
    stale["models"]["itemknn"]["recall@10"] = 0.123  # a baseline row must stay as it was
    out.write_text(json.dumps(stale))
    assert quality.main(["--quick", "--seed", "0", "--workdir", str(work), "--out", str(out), "--rescore"]) == 0
    again = json.loads(out.read_text())
    assert again["models"]["genrec"]["recall@10"] == pytest.approx(result["models"]["genrec"]["recall@10"])
    assert again["slices"]["cold_start"]["genrec"] == pytest.approx(result["slices"]["cold_start"]["genrec"])
    assert again["models"]["itemknn"]["recall@10"] == 0.123
    assert again["timings"]["genrec"]["train_s"] == result["timings"]["genrec"]["train_s"]
    assert "rescored" in again["config"]
    with pytest.raises(SystemExit, match="needs a finished seed"):
        quality.main(["--quick", "--seed", "5", "--workdir", str(work), "--rescore"])


def test_rescore_fills_a_failed_workers_row(quality, quick_seed, tmp_path):
    """``--rescore --baselines NAME`` scores only that baseline and puts its row where a worker lost it."""
    result, work = quick_seed
    out = tmp_path / "seed0.json"
    lost = copy.deepcopy(result)
    for table in [lost["models"], lost["choices"], lost["timings"], *lost["slices"].values()]:
        table.pop("itemknn", None)
    lost["failed"] = {"itemknn": "BrokenProcessPool('killed')"}
    lost["models"]["genrec"]["recall@10"] = 0.5  # ours must stay as it was
    out.write_text(json.dumps(lost))
    argv = ["--quick", "--seed", "0", "--workdir", str(work), "--out", str(out), "--rescore", "--baselines", "itemknn"]
    assert quality.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["models"]["itemknn"] == pytest.approx(result["models"]["itemknn"])
    assert list(again["models"]) == list(result["models"])  # the refilled row back in its place
    assert again["models"]["genrec"]["recall@10"] == 0.5
    assert "failed" not in again and "itemknn" in again["slices"]["cold_start"]
