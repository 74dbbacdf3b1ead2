"""genrec serve over real HTTP: uvicorn on a free loopback port serving the tiny trained run. Every kind of
bad input gets its 4xx with a JSON error, the API key guards all but /healthz, micro-batching batches,
a reload under traffic drops nothing, and shutdown finishes requests in flight. Orderings are made by events
(a gate on the decodes, counts of answered requests, states of the server), never by sleeping or by reading
the wall clock, and no request here has a deadline, so a loaded machine only makes the tests slower."""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shutil
import socket
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from genrec.retriever import Retriever
from genrec.serve import ServerThread, ServeSettings, add_arguments, create_app, from_arguments
from genrec.serve.batcher import MicroBatcher, Query, ShuttingDown
from genrec.serve.metrics import ServeMetrics
from helpers.serving import WAIT_S, until
from index.retailer_index import Candidates
from semid.config import ConfigError

KEY_ENV = "GENREC_SERVE_TEST_KEY"
KEY = "test-key-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}
LIMITS = dict(max_history=50, max_k=40, max_body_bytes=8192)
NO_DEADLINE = dict(request_timeout_ms=0)  # deadlines have their tests (test_serve_admission, on a fake clock)


def _perturbed_copy(run: Path, dest: Path) -> Path:
    """The run with slightly different decoder weights: same catalog, another model_version."""
    shutil.copytree(run, dest)
    weights = dest / "decoder" / "model" / "model.safetensors"
    with safe_open(weights, "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        meta = f.metadata()
    tensors = {name: (t + 0.01 * (t.std() + 1e-3)).contiguous() for name, t in tensors.items()}
    save_file(tensors, weights, metadata=meta)
    return dest


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    root, _ = tiny_run
    return root / "run", _perturbed_copy(root / "run", tmp_path_factory.mktemp("serve") / "run_b")


@pytest.fixture(scope="module")
def retriever(runs) -> Retriever:
    return Retriever.from_run(runs[0], dtype=ServeSettings().dtype)  # the server's numerics


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """The folder both runs lie under: the server's --runs-root."""
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def server(runs, runs_root):
    """The tiny run served with an API key, small limits, a 30 ms batching window and reloads allowed."""
    os.environ[KEY_ENV] = KEY
    try:
        settings = ServeSettings(api_key_env=KEY_ENV, max_wait_ms=30, log_level="warning", allow_reload=True,
                                 runs_root=str(runs_root), **LIMITS, **NO_DEADLINE)
        with ServerThread(create_app(runs[0], settings)) as srv:
            yield srv
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
        yield c


def _history(retriever: Retriever, n: int, seed: int) -> list[int]:
    ids = retriever.index.item_ids
    return ids[np.random.default_rng(seed).integers(0, ids.size, n)].tolist()


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST every body to /v1/retrieve at once."""
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as c:
        return await asyncio.gather(*(c.post("/v1/retrieve", json=b) for b in bodies))


def _metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text (0 when absent); ``labels`` in any order."""
    pairs = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    want = dict(pairs.findall(labels))
    for line in text.splitlines():
        found = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if found and found.group(1) == name and dict(pairs.findall(found.group(2) or "")) == want:
            return float(found.group(3))
    return 0.0


# ----- retrieval ---------------------------------------------------------------------------------------------


def test_retrieve_matches_the_retriever(client, retriever):
    history = _history(retriever, 5, seed=1)
    r = client.post("/v1/retrieve", json={"history": history, "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["codebook_version"] == retriever.codebook_version
    assert body["model_version"] == retriever.model_version
    assert body["skipped"] == []
    direct = retriever.retrieve([history], k=7)[0]
    assert [i["item_id"] for i in body["items"]] == [c.item_id for c in direct]
    assert [i["sid"] for i in body["items"]] == [c.sid for c in direct]
    assert np.allclose([i["score"] for i in body["items"]], [c.score for c in direct], atol=1e-4)


def test_retailer_and_exclude_history(client, retriever):
    retailer = int(retriever.index.retailers[-1])
    history = retriever.index.stocked(retailer)[:6].tolist()
    r = client.post("/v1/retrieve", json={"history": history, "k": 20, "retailer_id": retailer,
                                          "exclude_history": True})
    assert r.status_code == 200, r.text
    got = [i["item_id"] for i in r.json()["items"]]
    assert len(got) == 20
    assert set(got) <= set(retriever.index.stocked(retailer).tolist())
    assert not set(got) & set(history)


def test_unknown_items_mixed_are_skipped_and_reported(client, retriever):
    history = _history(retriever, 4, seed=2)
    unknown = int(retriever.index.item_ids.max()) + 1000
    mixed = client.post("/v1/retrieve", json={"history": [unknown, *history, unknown], "k": 5}).json()
    clean = client.post("/v1/retrieve", json={"history": history, "k": 5}).json()
    assert mixed["skipped"] == [unknown]
    assert [i["item_id"] for i in mixed["items"]] == [i["item_id"] for i in clean["items"]]


def test_empty_history_is_a_cold_start(client):
    r = client.post("/v1/retrieve", json={"history": [], "k": 4})
    assert r.status_code == 200 and len(r.json()["items"]) == 4


# ----- bad input ---------------------------------------------------------------------------------------------

UNKNOWN = 10**12
BAD_BODIES = [
    # (case, raw body, status, error code, text the message must hold)
    ("malformed json", b'{"history": [1,', 400, "malformed_json", "not valid JSON"),
    ("not json at all", b"history=1&k=3", 400, "malformed_json", "not valid JSON"),
    ("too deeply nested", b"[" * 3000 + b"]" * 3000, 400, "bad_request", "parsing the body"),
    ("body not an object", b"[1, 2]", 422, "invalid_request", "body"),
    ("k as a string", b'{"history": [1], "k": "3"}', 422, "invalid_request", "body.k"),
    ("k as a float", b'{"history": [1], "k": 3.0}', 422, "invalid_request", "body.k"),
    ("k missing", b'{"history": [1]}', 422, "invalid_request", "body.k: Field required"),
    ("history a string", b'{"history": "1,2", "k": 3}', 422, "invalid_request", "body.history"),
    ("history item a float", b'{"history": [1.5], "k": 3}', 422, "invalid_request", "body.history.0"),
    ("history item a bool", b'{"history": [true], "k": 3}', 422, "invalid_request", "body.history.0"),
    ("history item beyond int64", b'{"history": [%d], "k": 3}' % 2**64, 422, "invalid_request", "body.history.0"),
    ("retailer as a string", b'{"history": [1], "k": 3, "retailer_id": "1"}', 422, "invalid_request",
     "body.retailer_id"),
    ("exclude not a bool", b'{"history": [1], "k": 3, "exclude_history": 1}', 422, "invalid_request",
     "body.exclude_history"),
    ("unknown field", b'{"history": [1], "k": 3, "retailer": 1}', 422, "invalid_request", "body.retailer"),
    ("k zero", b'{"history": [1], "k": 0}', 422, "k_out_of_range", "between 1 and 40"),
    ("k too large", b'{"history": [1], "k": 41}', 422, "k_out_of_range", "got 41"),
    ("history too long", b'{"history": [%s], "k": 3}' % b",".join([b"1"] * 51), 422, "history_too_long",
     "51 items; at most 50"),
    ("only unknown items", b'{"history": [%d, %d], "k": 3}' % (UNKNOWN, UNKNOWN + 1), 422, "unknown_items",
     str(UNKNOWN)),
    ("unknown retailer", b'{"history": [1], "k": 3, "retailer_id": 999}', 422, "unknown_retailer",
     "unknown retailer 999"),
    ("oversized body", b'{"history": [%s], "k": 3}' % b",".join([b"1"] * 5000), 413, "body_too_large", "8192"),
]


@pytest.mark.parametrize("case,body,status,code,text", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_input_gets_a_json_4xx(client, case, body, status, code, text):
    r = client.post("/v1/retrieve", content=body, headers=JSON)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert err["error"] == code and text in err["message"], err
    if code == "unknown_items":
        assert err["unknown"] == [UNKNOWN, UNKNOWN + 1]


def test_oversized_chunked_body_without_length_is_refused(client):
    def chunks():
        for _ in range(20):
            yield b" " * 1024

    r = client.post("/v1/retrieve", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def test_wrong_content_type_and_unknown_routes(client):
    r = client.post("/v1/retrieve", content=b'{"history": [1], "k": 3}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert client.get("/v1/nothing").json()["error"] == "not_found"
    r = client.get("/v1/retrieve")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_server_survives_the_bad_input(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/v1/retrieve", json={"history": [1], "k": 2}).status_code == 200


def test_a_failing_decode_is_a_json_500_and_the_server_goes_on(client, monkeypatch):
    import genrec.serve.batcher as batcher

    def broken(jobs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(batcher, "_decode", broken)
    r = client.post("/v1/retrieve", json={"history": [1], "k": 3})
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    monkeypatch.undo()
    assert client.post("/v1/retrieve", json={"history": [1], "k": 3}).status_code == 200


# ----- items and SIDs ----------------------------------------------------------------------------------------


def test_item_and_sid_routes(client, retriever):
    item = int(retriever.index.item_ids[0])
    r = client.get(f"/v1/items/{item}")
    assert r.status_code == 200, r.text
    sid = r.json()["sid"]
    products = client.get(f"/v1/sids/{sid}").json()
    assert products["sid"] == sid and item in products["items"]
    assert products["items"] == retriever.index.lookup([sid])[0].tolist()
    retailer = int(retriever.index.retailers[0])
    stocked = client.get(f"/v1/sids/{sid}", params={"retailer_id": retailer})
    if item in retriever.index.stocked(retailer):
        assert item in stocked.json()["items"]
    else:
        assert stocked.status_code == 404 and stocked.json()["error"] == "unknown_sid"


@pytest.mark.parametrize("path,status,code", [
    ("/v1/items/999999999", 404, "unknown_item"),
    ("/v1/items/abc", 422, "invalid_request"),
    ("/v1/items/99999999999999999999999", 422, "invalid_request"),
    ("/v1/sids/not-a-sid", 422, "invalid_sid"),
    ("/v1/sids/7_7_7_7_9999", 404, "unknown_sid"),  # SID-shaped: a SID no product has, whatever the codebook
    ("/v1/sids/007", 422, "invalid_sid"),  # leading zeros: not how the schema spells a SID
    ("/v1/sids/0_0_0?retailer_id=999", 422, "unknown_retailer"),
])
def test_item_and_sid_errors(client, path, status, code):
    r = client.get(path)
    assert r.status_code == status and r.json()["error"] == code, r.text


# ----- API key -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}])
def test_api_key_guards_everything_but_health(server, headers):
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        for method, path in [("POST", "/v1/retrieve"), ("GET", "/v1/items/1"), ("GET", "/v1/sids/0_0_0"),
                             ("GET", "/metrics"), ("POST", "/admin/reload")]:
            r = c.request(method, path, json={"history": [1], "k": 3} if method == "POST" else None)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/healthz").status_code == 200


# ----- batching, metrics, reload -----------------------------------------------------------------------------


def test_micro_batching_batches_and_cuts_each_row_to_its_k(server, client, retriever, gate):
    """The first batch's decode is held on the gate until every other request waits in the queue: those go
    out together, in one batch (one decode: the beam width covers every k), each cut to its own k. Whether
    the first batch gathered one request or all of them (the 30 ms window), 13 requests take at most 2."""
    before = client.get("/metrics").text
    history = _history(retriever, 6, seed=3)
    retailer = int(retriever.index.retailers[0])
    bodies = [{"history": _history(retriever, 1 + i % 7, seed=10 + i), "k": 5} for i in range(10)]
    bodies += [{"history": history, "k": 3}, {"history": history, "k": 9},
               {"history": history, "k": 4, "retailer_id": retailer}]
    batcher = server.app.state.batcher

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            sent = [asyncio.ensure_future(c.post("/v1/retrieve", json=b)) for b in bodies]
            assert await asyncio.to_thread(gate.entered.wait, WAIT_S)
            await asyncio.to_thread(until, lambda: batcher.queued == len(bodies) - gate.sizes[0])
            gate.release.set()
            return await asyncio.gather(*sent)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert sum(gate.sizes) == len(bodies) and len(gate.sizes) <= 2, gate.sizes  # the held batch, then the rest
    short, long = (r.json()["items"] for r in responses[-3:-1])
    assert len(short) == 3 and len(long) == 9 and short == long[:3]
    stocked = set(retriever.index.stocked(retailer).tolist())
    assert {i["item_id"] for i in responses[-1].json()["items"]} <= stocked
    after = client.get("/metrics").text
    batches = _metric(after, "genrec_batch_size_count") - _metric(before, "genrec_batch_size_count")
    decoded = _metric(after, "genrec_batch_size_sum") - _metric(before, "genrec_batch_size_sum")
    assert (batches, decoded) == (len(gate.sizes), len(bodies))


def test_metrics_exposition(client):
    client.post("/v1/retrieve", json={"history": [1], "k": 0})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert _metric(text, "genrec_requests_total", 'route="/v1/retrieve",method="POST",status="200"') >= 1
    assert _metric(text, "genrec_request_errors_total", 'route="/v1/retrieve",code="k_out_of_range"') >= 1
    assert _metric(text, "genrec_request_errors_total", 'route="/v1/retrieve",code="body_too_large"') >= 1
    assert _metric(text, "genrec_request_duration_seconds_count", 'route="/v1/retrieve"') >= 1
    assert _metric(text, "genrec_request_duration_seconds_bucket", 'route="/v1/retrieve",le="+Inf"') == \
        _metric(text, "genrec_request_duration_seconds_count", 'route="/v1/retrieve"')
    assert "# TYPE genrec_batch_size histogram" in text and "# TYPE genrec_requests_total counter" in text
    assert re.search(r'^genrec_model_info\{codebook_version="\w+",model_version="\w+",run=".+"\} 1.0$', text, re.M)


def test_reload_under_traffic_drops_nothing(server, runs, runs_root, retriever):
    """Six shoppers send requests back to back; once 12 were answered a bad reload is refused and a good one
    swaps the model; once 12 sent after the swap was answered were answered too, the shoppers stop. Every
    request succeeds: those answered before the reload by the old model, those sent after it by the new."""
    old = retriever.model_version
    new = Retriever.from_run(runs[1]).model_version
    assert new != old
    BEFORE, DURING, AFTER = range(3)  # where the reload stood: not sent, in progress, answered
    enough = 12

    async def scenario() -> tuple[list, list, dict]:
        outcomes: list[tuple[int, int, int, int, str]] = []  # (order sent, phase sent, phase done, status, version)
        phase, order = [BEFORE], itertools.count()
        warm, swapped, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            async def shopper(seed: int) -> None:
                rng = np.random.default_rng(seed)
                ids = retriever.index.item_ids
                while not stop.is_set():
                    sent, at = next(order), phase[0]
                    history = ids[rng.integers(0, ids.size, 4)].tolist()
                    r = await c.post("/v1/retrieve", json={"history": history, "k": 5})
                    outcomes.append((sent, at, phase[0], r.status_code, r.json().get("model_version", r.text)))
                    if len(outcomes) >= enough:
                        warm.set()
                    if sum(o[1] == AFTER for o in outcomes) >= enough:
                        swapped.set()

            async def reloader() -> tuple[list, dict]:
                await warm.wait()
                phase[0] = DURING
                failed = await c.post("/admin/reload", json={"run": "definitely/not/a/run"})
                r = await c.post("/admin/reload", json={"run": str(runs[1].relative_to(runs_root))})
                phase[0] = AFTER
                await swapped.wait()
                stop.set()
                return [failed.status_code, failed.json()["error"], r.status_code], r.json()

            results = await asyncio.wait_for(asyncio.gather(reloader(), *(shopper(s) for s in range(6))), WAIT_S)
        return outcomes, *results[0]

    outcomes, failed, reload = asyncio.run(scenario())
    try:
        assert failed == [422, "reload_failed", 200]
        assert reload["run"] == str(runs[1].relative_to(runs_root))  # no host path
        assert reload["model_version"] == new and reload["previous_model_version"] == old
        assert [o for o in outcomes if o[3] != 200] == []
        assert {v for _, _, done, _, v in outcomes if done == BEFORE} == {old}
        assert {v for _, at, _, _, v in outcomes if at == AFTER} == {new}
        assert sum(done == BEFORE for _, _, done, _, _ in outcomes) >= enough
        assert sum(at == AFTER for _, at, _, _, _ in outcomes) >= enough
    finally:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
            back = c.post("/admin/reload", json={"run": str(runs[0].relative_to(runs_root))})
            assert back.json()["model_version"] == old


def test_graceful_shutdown_finishes_requests_in_flight(runs, retriever, gate):
    """Requests decoding (held on the gate) and queued behind them when the shutdown begins are all answered:
    the gate opens only once the server refuses new connections, so every answer comes after that."""
    settings = ServeSettings(api_key_env="GENREC_SERVE_TEST_NO_KEY", max_batch=64, log_level="error", **NO_DEADLINE)
    app = create_app(runs[0], settings)
    srv = ServerThread(app).start()
    bodies = [{"history": _history(retriever, 3, seed=i), "k": 3} for i in range(6)]

    def refuses_connections() -> bool:
        try:
            httpx.get(srv.url + "/healthz", timeout=5)
        except httpx.ConnectError:
            return True
        return False

    async def scenario() -> list[tuple[bool, httpx.Response]]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            async def one(body: dict) -> tuple[bool, httpx.Response]:
                r = await c.post("/v1/retrieve", json=body)
                return closed.is_set(), r

            sent = [asyncio.ensure_future(one(b)) for b in bodies]
            assert await asyncio.to_thread(gate.entered.wait, WAIT_S)
            await asyncio.to_thread(until, lambda: app.state.batcher.queued == len(bodies) - gate.sizes[0])
            stopper.start()  # stop() returns once the server thread ended: after every answer
            await asyncio.to_thread(until, refuses_connections)
            closed.set()
            gate.release.set()
            return await asyncio.gather(*sent)

    closed = threading.Event()
    stopper = threading.Thread(target=srv.stop)
    finished = asyncio.run(scenario())
    stopper.join()
    assert [r.status_code for _, r in finished] == [200] * len(bodies)
    assert all(len(r.json()["items"]) == 3 for _, r in finished)
    assert all(after for after, _ in finished)  # all answered after the listener closed
    assert sum(gate.sizes) == len(bodies)
    assert refuses_connections()


@pytest.mark.slow
def test_serve_process_reloads_on_sighup_and_stops_on_sigterm(runs, tmp_path):
    """``serve`` as the CLI runs it, in its own process: SIGHUP reloads the run folder (here: retrained
    weights dropped in), SIGTERM drains (/readyz 503, requests still served; --drain-s 600 here) and a second
    SIGTERM ends the drain and shuts down gracefully. Slow: a fresh interpreter imports torch."""
    run = shutil.copytree(runs[0], tmp_path / "run")
    old, new = Retriever.from_run(runs[0]).model_version, Retriever.from_run(runs[1]).model_version
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from pathlib import Path; from genrec.serve import serve, ServeSettings; "
            f"serve(Path(sys.argv[1]), ServeSettings(port={port}, log_level='warning', "
            "api_key_env='GENREC_NO_KEY_SET', allow_reload=True, drain_s=600))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        until(_answers(lambda: httpx.get(url, timeout=2).json()["model_version"], old, proc))
        weights = Path("decoder") / "model" / "model.safetensors"
        shutil.copyfile(runs[1] / weights, run / weights)
        proc.send_signal(signal.SIGHUP)
        until(_answers(lambda: httpx.get(url, timeout=2).json()["model_version"], new, proc))
        proc.send_signal(signal.SIGTERM)
        base = f"http://127.0.0.1:{port}"
        until(_answers(lambda: httpx.get(base + "/readyz", timeout=2).json()["status"], "draining", proc))
        assert httpx.post(base + "/v1/retrieve", json={"history": [], "k": 2}, timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), proc.stdout.read().decode()


def _answers(read, want, proc):
    """A state of the server process for ``until``: ``read()`` returns ``want`` (a refused connection: not yet);
    the process ending first fails at once, with what it printed."""
    def condition() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {proc.stdout.read().decode()}")
        try:
            return read() == want
        except httpx.TransportError:
            return False

    return condition


# ----- pieces ------------------------------------------------------------------------------------------------


class _FakeRetriever:
    """Stands in for a Retriever, recording its decode calls; the products of a history are 100 * its first
    item + rank, so a mixed-up batch shows."""

    beam_width = 4

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.args: list[tuple[list, list]] = []  # per call: retailer ids and exclude flags, one per query

    def retrieve_arrays(self, histories, retailer_id, k, exclude_history):
        self.calls.append(len(histories))
        self.args.append((list(retailer_id), list(exclude_history)))
        first = np.array([h[0] for h in histories])
        ids = 100 * first[:, None] + np.arange(k)[None, :]
        return Candidates(ids, -np.ones(ids.shape), np.full(ids.shape, "0_0_0", object), np.ones(ids.shape, bool))


def _query(item: int, k: int) -> Query:
    return Query(np.array([item]), None, k, False)


async def _warm_batcher(fake: _FakeRetriever) -> MicroBatcher:
    """A started batcher after a little traffic (so the gaps it sees are short), with the fake's log cleared."""
    batcher = MicroBatcher(max_batch=8, max_wait_s=0.05)
    batcher.start()
    await asyncio.gather(*(batcher.submit(fake, _query(i, 2)) for i in range(3)))
    fake.calls.clear()
    fake.args.clear()
    return batcher


def test_batcher_gathers_concurrent_requests_and_cuts_each_to_its_k():
    async def scenario():
        fake = _FakeRetriever()
        batcher = await _warm_batcher(fake)
        results = await asyncio.gather(*(batcher.submit(fake, _query(i, 1 + i % 3)) for i in range(1, 13)))
        await batcher.close()
        return fake.calls, results

    calls, results = asyncio.run(scenario())
    assert calls == [8, 4]  # all 12 queue at once: a full batch, then the rest
    for i, found in enumerate(results, start=1):
        assert [c.item_id for c in found] == [100 * i + r for r in range(1 + i % 3)]


def test_batcher_decodes_mixed_retailers_and_exclude_flags_in_one_call():
    async def scenario():
        fake = _FakeRetriever()
        batcher = await _warm_batcher(fake)
        queries = [Query(np.array([i]), [None, 1, 2][i % 3], 3, i % 2 == 0) for i in range(1, 7)]
        results = await asyncio.gather(*(batcher.submit(fake, q) for q in queries))
        await batcher.close()
        return fake, queries, results

    fake, queries, results = asyncio.run(scenario())
    assert fake.calls == [6]  # one decode for the whole batch, whatever the retailers and exclude flags
    assert fake.args == [([q.retailer_id for q in queries], [q.exclude_history for q in queries])]
    assert [[c.item_id for c in r] for r in results] == [[100 * i + j for j in range(3)] for i in range(1, 7)]


def test_batcher_does_not_hold_a_lone_request_and_drains_on_close():
    """With an hour-long window, a lone request is answered at once (no company is coming) and close()
    decodes what waits in the window instead of waiting it out: each would otherwise hit the timeout."""
    async def scenario():
        fake = _FakeRetriever()
        batcher = MicroBatcher(max_batch=8, max_wait_s=3600.0)
        batcher.start()
        await asyncio.wait_for(batcher.submit(fake, _query(1, 1)), WAIT_S)
        await asyncio.wait_for(batcher.submit(fake, _query(2, 1)), WAIT_S)
        pending = [asyncio.ensure_future(batcher.submit(fake, _query(3 + i, 1))) for i in range(4)]
        # the four queue, and stay in the window: arrivals came far closer together than an hour
        await asyncio.to_thread(until, lambda: batcher.queued == 4)
        waiting = batcher.queued
        await asyncio.wait_for(batcher.close(), WAIT_S)
        with pytest.raises(ShuttingDown):
            await batcher.submit(fake, _query(9, 1))
        return waiting, fake.calls, [p.result()[0].item_id for p in pending]

    waiting, calls, drained = asyncio.run(scenario())
    assert waiting == 4 and calls == [1, 1, 4]
    assert drained == [300, 400, 500, 600]


def test_histogram_buckets_are_cumulative():
    m = ServeMetrics()
    for size in (1, 3, 3, 40):
        m.observe_batch(size, 0.01)
    text = m.render()
    bounds = ("1.0", "2.0", "4.0", "32.0", "64.0", "+Inf")  # prometheus_client spells bucket bounds as floats
    assert [_metric(text, "genrec_batch_size_bucket", f'le="{b}"') for b in bounds] == \
        [1, 1, 3, 3, 4, 4]
    assert _metric(text, "genrec_batch_size_sum") == 47 and _metric(text, "genrec_batch_size_count") == 4


def test_settings_are_checked_and_become_flags():
    with pytest.raises(ConfigError, match="serve.max_batch: must be >= 1"):
        ServeSettings(max_batch=0)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args([])) == ServeSettings()
    args = parser.parse_args(["--port", "9001", "--max-batch", "1", "--max-wait-ms", "2.5", "--access-log"])
    assert from_arguments(args) == ServeSettings(port=9001, max_batch=1, max_wait_ms=2.5, access_log=True)
    assert ServeSettings().host == "127.0.0.1"
