"""genrec carousel: the output contract, histories from requests or the dataset, exactly-once resume after a
failure or a SIGKILL, refusal to resume with other inputs, bad inputs, chunking, and 2 processes under
``accelerate launch`` giving the rows of 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.carousel import OUTPUT_SCHEMA, CarouselConfig, run_carousel
from genrec.carousel.parts import PartStore
from genrec.carousel.requests import iter_chunks
from genrec.data.sequences import build_histories
from genrec.retriever import Retriever
from semid.common import DataError
from semid.config import ConfigError
from helpers.launch import launch

REPO = Path(__file__).resolve().parents[2]
K = 5
FAST = dict(k=K, chunk_size=8, progress=False)


class Stop(Exception):
    """Raised from the on_chunk hook to simulate a job dying after some chunks."""


@pytest.fixture(scope="module")
def world(tiny_run):
    """(run folder, dataset folder, {user: history}, retriever) of the tiny trained run."""
    root, _ = tiny_run
    h = build_histories(pq.read_table(root / "data" / "events.parquet"))
    histories = {int(u): h.items[a:b] for u, a, b in zip(h.user_ids, h.offsets[:-1], h.offsets[1:])}
    return root / "run", root / "data", histories, Retriever.from_run(root / "run", dtype=CarouselConfig().dtype)


def write_requests(path: Path, users, retailers, histories=None, history_type=pa.list_(pa.int64())) -> Path:
    """A requests parquet; ``histories`` None leaves the history column out."""
    cols = {"user_id": pa.array(users, pa.int64()), "retailer_id": pa.array(retailers, pa.int32())}
    if histories is not None:
        cols["history"] = pa.array(histories, history_type)
    pq.write_table(pa.table(cols), path, row_group_size=13)
    return path


def mixed_requests(tmp_path: Path, world, n: int = 24, name: str = "req.parquet") -> Path:
    """n requests over the tiny world's users, retailers 0 / 1 / none, half with their last 6 items given,
    half to be read from the dataset."""
    users = sorted(world[2])[:n]
    retailers = [[0, 1, None][i % 3] for i in range(n)]
    histories = [None if i % 2 else world[2][u][-6:].tolist() for i, u in enumerate(users)]
    return write_requests(tmp_path / name, users, retailers, histories)


def test_output_contract_ranks_and_retriever_agreement(tmp_path, world):
    run, data, histories, retriever = world
    req = mixed_requests(tmp_path, world)
    summary = run_carousel(run, req, tmp_path / "out.parquet", data=data, **FAST)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.remove_metadata() == OUTPUT_SCHEMA
    assert not (tmp_path / "out.parquet.parts").exists()
    assert summary["requests"] == summary["carousels"] == 24 and summary["rows"] == out.num_rows == 24 * K
    assert summary["chunks"] == 3 and summary["processes"] == 1
    requests = pq.read_table(req).to_pylist()
    rows = out.to_pylist()
    full = [r["history"] if r["history"] is not None else histories[r["user_id"]].tolist() for r in requests]
    expect = retriever.retrieve(full, [r["retailer_id"] for r in requests], K, exclude_history=True)
    for r, history, expected, i in zip(requests, full, expect, range(len(requests))):
        mine = rows[i * K:(i + 1) * K]  # request order, then rank
        assert [m["rank"] for m in mine] == list(range(1, K + 1))
        assert {(m["user_id"], m["retailer_id"]) for m in mine} == {(r["user_id"], r["retailer_id"])}
        scores = [m["score"] for m in mine]
        assert scores == sorted(scores, reverse=True)
        assert not set(history) & {m["item_id"] for m in mine}  # exclude_history
        if r["retailer_id"] is not None:
            assert np.isin([m["item_id"] for m in mine], retriever.index.stocked(r["retailer_id"])).all()
        assert [(m["item_id"], m["sid"]) for m in mine] == [(c.item_id, c.sid) for c in expected]
        assert np.allclose(scores, [c.score for c in expected], atol=1e-5)


def test_history_from_dataset_equals_history_given(tmp_path, world):
    run, data, histories, _ = world
    users = sorted(histories)[:12]
    retailers = [0, 1] * 6
    given = write_requests(tmp_path / "given.parquet", users, retailers, [histories[u].tolist() for u in users])
    bare = write_requests(tmp_path / "bare.parquet", users, retailers)
    run_carousel(run, given, tmp_path / "a.parquet", **FAST)
    summary = run_carousel(run, bare, tmp_path / "b.parquet", data=data, **FAST)
    assert summary["carousels"] == 12
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_resume_after_failure_gives_every_row_once(tmp_path, world):
    run, data, _, _ = world
    req = mixed_requests(tmp_path, world)
    run_carousel(run, req, tmp_path / "whole.parquet", data=data, **FAST)
    seen: list[int] = []

    def die_after_two(index: int) -> None:
        seen.append(index)
        if len(seen) == 2:
            raise Stop

    out = tmp_path / "out.parquet"
    with pytest.raises(Stop):
        run_carousel(run, req, out, data=data, on_chunk=die_after_two, **FAST)
    assert not out.exists() and len(list((tmp_path / "out.parquet.parts").glob("part-*"))) == 2
    summary = run_carousel(run, req, out, data=data, on_chunk=seen.append, **FAST)
    assert seen == [0, 1, 2]  # the resumed job decoded only the chunk not done
    assert summary["resumed_requests"] == 16 and summary["decoded_requests"] == 8
    assert summary["rows"] == 24 * K
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "whole.parquet"))
    assert not (tmp_path / "out.parquet.parts").exists()


KILLER = """
import os, signal, sys
from genrec.carousel import run_carousel
def kill(index):
    if index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
run_carousel(sys.argv[1], sys.argv[2], sys.argv[3], data=sys.argv[4], k=5, chunk_size=8, progress=False,
             on_chunk=kill)
"""


@pytest.mark.slow
def test_resume_after_sigkill_gives_every_row_once(tmp_path, world):
    run, data, _, _ = world
    req = mixed_requests(tmp_path, world)
    out = tmp_path / "out.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(run), str(req), str(out), str(data)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out.parquet.parts").glob("part-*")) == [
        "part-000000.parquet", "part-000001.parquet"]
    summary = run_carousel(run, req, out, data=data, **FAST)
    assert summary["resumed_requests"] == 16
    whole = run_carousel(run, req, tmp_path / "whole.parquet", data=data, **FAST)
    assert summary["rows"] == whole["rows"] == 24 * K
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "whole.parquet"))


def test_resume_with_other_inputs_is_refused(tmp_path, world):
    run, data, _, _ = world
    req = mixed_requests(tmp_path, world)
    out = tmp_path / "out.parquet"

    def die(index: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        run_carousel(run, req, out, data=data, on_chunk=die, **FAST)
    with pytest.raises(DataError, match=r"other inputs.*\bk: was 5, now 6"):
        run_carousel(run, req, out, data=data, **{**FAST, "k": 6})
    mixed_requests(tmp_path, world, n=16)  # same path, other content
    with pytest.raises(DataError, match="requests_sha256"):
        run_carousel(run, req, out, data=data, **FAST)
    summary = run_carousel(run, req, out, data=data, overwrite=True, **FAST)
    assert summary["resumed_requests"] == 0 and summary["rows"] == 16 * K
    with pytest.raises(DataError, match="output exists"):
        run_carousel(run, req, out, data=data, **FAST)


def test_a_second_live_job_on_the_same_output_is_refused(tmp_path, world):
    run, data, _, _ = world
    req = mixed_requests(tmp_path, world, n=8)
    out = tmp_path / "out.parquet"
    live = PartStore(out)
    live.lock()  # another job, still running
    with pytest.raises(DataError, match="another carousel job is writing this output"):
        run_carousel(run, req, out, data=data, **FAST)
    live.unlock()
    assert run_carousel(run, req, out, data=data, **FAST)["rows"] == 8 * K
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "req.parquet"]


def test_users_without_history_are_skipped_and_counted_or_refused(tmp_path, world):
    run, data, histories, _ = world
    ghost = max(histories) + 1000
    users = [ghost, sorted(histories)[0], ghost + 1, sorted(histories)[1]]
    req = write_requests(tmp_path / "req.parquet", users, [0, 0, None, 1], [None, None, None, [10**9, 10**9 + 1]])
    summary = run_carousel(run, req, tmp_path / "out.parquet", data=data, **FAST)
    assert summary["skipped_not_in_dataset"] == 2 and summary["skipped_no_known_items"] == 1
    assert summary["skipped_examples"] == [ghost, ghost + 1, users[3]]
    assert summary["unknown_items"] == 2 and summary["carousels"] == 1
    assert pq.read_table(tmp_path / "out.parquet").column("user_id").to_pylist() == [users[1]] * K
    with pytest.raises(DataError, match=rf"2 requests name users with no events.*\[{ghost}, {ghost + 1}\]"):
        run_carousel(run, req, tmp_path / "strict.parquet", data=data, on_missing="error", **FAST)
    only_unknown = write_requests(tmp_path / "unknown.parquet", [users[3]], [1], [[10**9]])
    with pytest.raises(DataError, match=rf"no product the run knows.*\[{users[3]}\]"):
        run_carousel(run, only_unknown, tmp_path / "strict.parquet", on_missing="error", **FAST)


def test_bad_inputs_say_what_is_wrong(tmp_path, world):
    run, data, histories, _ = world
    user = sorted(histories)[0]
    out = tmp_path / "out.parquet"
    cases = {
        "no_user.parquet": (pa.table({"retailer_id": pa.array([0], pa.int32())}), "missing required column 'user_id'"),
        "no_retailer.parquet": (pa.table({"user_id": [user]}), "missing required column 'retailer_id'"),
        "text_user.parquet": (pa.table({"user_id": ["a"], "retailer_id": pa.array([0], pa.int32())}),
                              "'user_id' must be integers"),
        "text_history.parquet": (pa.table({"user_id": [user], "retailer_id": pa.array([0], pa.int32()),
                                           "history": [["x"]]}), "'history' must be a list of item ids"),
        "null_item.parquet": (pa.table({"user_id": [user], "retailer_id": pa.array([0], pa.int32()),
                                        "history": pa.array([[1, None]], pa.list_(pa.int64()))}), "null item ids"),
        "null_user.parquet": (pa.table({"user_id": pa.array([None, user], pa.int64()),
                                        "retailer_id": pa.array([0, 0], pa.int32())}), "user_id has 1 null"),
        "bad_retailer.parquet": (pa.table({"user_id": [user, user], "retailer_id": pa.array([1, 7], pa.int32())}),
                                 r"unknown retailer_id \[7\]"),
    }
    for name, (table, message) in cases.items():
        pq.write_table(table, tmp_path / name)
        with pytest.raises(DataError, match=message):
            run_carousel(run, tmp_path / name, out, data=data, **FAST)
    with pytest.raises(DataError, match="pass the dataset"):
        run_carousel(run, write_requests(tmp_path / "bare.parquet", [user], [0]), out, **FAST)
    with pytest.raises(DataError, match="requests file not found"):
        run_carousel(run, tmp_path / "absent.parquet", out, **FAST)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a parquet file"):
        run_carousel(run, tmp_path / "junk.parquet", out, **FAST)
    with pytest.raises(DataError, match="events.parquet: file not found"):
        run_carousel(run, tmp_path / "bare.parquet", out, data=tmp_path, **FAST)
    with pytest.raises(ConfigError, match="carousel.k: must be >= 1"):
        run_carousel(run, tmp_path / "bare.parquet", out, data=data, **{**FAST, "k": 0})
    assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()


def test_empty_requests_give_an_empty_output(tmp_path, world):
    run, _, _, _ = world
    req = write_requests(tmp_path / "req.parquet", [], [], [])
    summary = run_carousel(run, req, tmp_path / "out.parquet", **FAST)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 0 and out.schema.remove_metadata() == OUTPUT_SCHEMA and summary["chunks"] == 0


def test_chunks_are_fixed_row_ranges_whatever_the_row_groups(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": np.arange(53)}), path, row_group_size=7)
    chunks = list(iter_chunks(path, 10, ["x"]))
    assert [i for i, _ in chunks] == [0, 1, 2, 3, 4, 5]
    assert [t.column("x").to_pylist() for _, t in chunks] == [list(range(a, min(a + 10, 53))) for a in range(0, 53, 10)]


LAUNCHED = """
import json, sys
from pathlib import Path
from accelerate import PartialState
from genrec.carousel import run_carousel
summary = run_carousel(**json.loads(sys.argv[1]))
# one file per process: two processes printing to one pipe can interleave their lines
Path(sys.argv[2], f"summary{PartialState().process_index}.json").write_text(json.dumps(summary))
PartialState().wait_for_everyone()
PartialState().destroy_process_group()  # as any script run under accelerate launch should
"""


@pytest.mark.slow
def test_two_processes_under_accelerate_give_the_rows_of_one(tmp_path, world):
    run, data, _, _ = world
    req = mixed_requests(tmp_path, world)
    run_carousel(run, req, tmp_path / "one.parquet", data=data, **FAST)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    args = json.dumps(dict(run=str(run), requests=str(req), out=str(tmp_path / "two.parquet"), data=str(data), **FAST))
    proc = launch(script, args, str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"summary{rank}.json").read_text()) for rank in range(2)]
    assert len(summaries) == 2 and all(s["processes"] == 2 and s["rows"] == 24 * K for s in summaries)
    assert pq.read_table(tmp_path / "two.parquet").equals(pq.read_table(tmp_path / "one.parquet"))
