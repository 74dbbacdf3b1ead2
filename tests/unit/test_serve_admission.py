"""genrec serve under overload, on a real uvicorn on loopback: a flood beyond the queue gets 503 with
Retry-After (never a hang, never a 500) and the server answers normally right after; queued requests whose
deadline passes are dropped without being decoded; /readyz flips during a reload and a drain; reloads are
refused unless allowed, outside --runs-root, and without the key. Decodes are held on a gate (an Event) and
deadlines read from a fake clock, so nothing here depends on timing."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from genrec.serve import ServerThread, ServeSettings, create_app
from genrec.serve.batcher import MicroBatcher, Query, Unavailable
from genrec.serve.model import ServedModel
from helpers.serving import FakeClock, SlowModel, until
from index.retailer_index import Candidates

NO_KEY = "GENREC_SERVE_ADMISSION_NO_KEY"  # an env var nobody sets: no API key
KEY_ENV, KEY = "GENREC_SERVE_ADMISSION_KEY", "admission-key-51c2"
BODY = {"history": [], "k": 3}  # a cold start: valid for any run
QUIET = dict(log_level="warning", api_key_env=NO_KEY)
TIMEOUT = "X-Request-Timeout-Ms"


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    return tiny_run[0] / "run"


@pytest.fixture
def slow_model(monkeypatch):
    """The served app's decodes replaced by a ``helpers.serving.SlowModel`` (busy in Python, holding the GIL,
    until ``slow_model.release.set()``); released at the end whatever happened."""
    import genrec.serve.batcher as batcher_module

    model = SlowModel()
    monkeypatch.setattr(batcher_module, "_decode", model)
    yield model
    model.release.set()


async def _first(tasks: set, n: int) -> tuple[list[httpx.Response], set]:
    """The first ``n`` responses among ``tasks`` (in completion order) and the tasks still running."""
    got: list[httpx.Response] = []
    while len(got) < n:
        done, tasks = await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"only {len(got)} of {n} answered: hanging"
        got += [t.result() for t in done]
    return got, tasks


def _metric(text: str, line_start: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


# ----- the queue bound ---------------------------------------------------------------------------------------


def test_a_flood_beyond_the_queue_gets_503_and_the_server_answers_right_after(run, gate):
    app = create_app(run, ServeSettings(max_batch=2, max_queue=4, max_wait_ms=0, request_timeout_ms=0, **QUIET))
    with ServerThread(app) as srv:
        async def scenario():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/retrieve", json=BODY))
                assert await asyncio.to_thread(gate.entered.wait, 30)  # decoding, held: the queue fills
                flood = {asyncio.ensure_future(c.post("/v1/retrieve", json=BODY)) for _ in range(12)}
                refused, queued = await _first(flood, 8)  # 4 wait in the queue, the other 8 are refused now
                during = [await c.get("/healthz"), await c.get("/readyz"), app.state.batcher.queued]
                gate.release.set()
                admitted = await asyncio.gather(first, *queued)
                after = await c.post("/v1/retrieve", json=BODY)
                return refused, during, admitted, after, (await c.get("/metrics")).text

        refused, (health, ready, waiting), admitted, after, metrics = asyncio.run(scenario())
    assert [r.status_code for r in refused] == [503] * 8
    for r in refused:
        assert r.headers["content-type"] == "application/json" and r.json()["error"] == "queue_full", r.text
        assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_s"] == int(r.headers["retry-after"])
    assert health.status_code == 200 and ready.status_code == 200 and waiting == 4
    assert [r.status_code for r in admitted] == [200] * 5 and all(len(r.json()["items"]) == 3 for r in admitted)
    assert after.status_code == 200
    assert gate.sizes == [1, 2, 2, 1]  # the held one, the queue in full batches, the one after: no refused decoded
    assert _metric(metrics, 'genrec_shed_requests_total{reason="queue_full"}') == 8
    assert _metric(metrics, "genrec_queue_limit") == 4 and _metric(metrics, "genrec_queue_depth") == 0
    assert _metric(metrics, "process_resident_memory_bytes") > 0


def test_beyond_capacity_is_refused_while_a_slow_model_still_decodes(run, slow_model):
    """Capacity: one request decoding and a queue of 4. The model computes (holding the GIL) until released;
    every request beyond capacity must get its 503 + Retry-After from the handler's admission while that
    decode still runs (not wait before the handler for the model to finish), and the probes still answer.
    Nothing is released until all of them are in, so a server that cannot read requests while its model
    decodes hangs here (and fails on the wait's bound) rather than passing late. No deadline: the queue bound
    alone decides, whatever the machine's speed."""
    app = create_app(run, ServeSettings(max_batch=2, max_queue=4, max_wait_ms=0, request_timeout_ms=0, **QUIET))
    with ServerThread(app) as srv:
        async def scenario():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/retrieve", json=BODY))
                assert await asyncio.to_thread(slow_model.entered.wait, 30)  # the model is computing now
                flood = {asyncio.ensure_future(c.post("/v1/retrieve", json=BODY)) for _ in range(12)}
                refused, queued = await _first(flood, 8)
                probes = [await c.get("/healthz"), await c.get("/readyz")]
                still_decoding = not first.done() and slow_model.sizes == [1]
                metrics = (await c.get("/metrics")).text
                slow_model.release.set()
                return refused, probes, still_decoding, metrics, await asyncio.gather(first, *queued)

        refused, probes, still_decoding, metrics, admitted = asyncio.run(scenario())
    assert still_decoding  # every refusal and probe answered during the one slow decode
    assert [r.status_code for r in refused] == [503] * 8
    assert all(r.json()["error"] == "queue_full" and int(r.headers["retry-after"]) >= 1 for r in refused)
    assert [r.status_code for r in probes] == [200, 200]
    assert _metric(metrics, 'genrec_shed_requests_total{reason="queue_full"}') == 8  # seen by admission
    assert [r.status_code for r in admitted] == [200] * 5
    assert slow_model.sizes == [1, 2, 2]  # the refused were never decoded


# ----- deadlines ---------------------------------------------------------------------------------------------


def test_queued_requests_past_their_deadline_are_dropped_without_decoding(run, gate):
    clock = FakeClock()
    app = create_app(run, ServeSettings(max_batch=8, max_wait_ms=0, request_timeout_ms=600_000, **QUIET),
                     clock=clock)
    with ServerThread(app) as srv:
        async def scenario():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/retrieve", json=BODY))
                assert await asyncio.to_thread(gate.entered.wait, 30)
                late = [asyncio.ensure_future(c.post("/v1/retrieve", json=BODY, headers={TIMEOUT: ms}))
                        for ms in ("30000", "60000")]  # the client's own deadlines, shorter than the server's
                await asyncio.to_thread(until, lambda: app.state.batcher.queued == 2)
                clock.now += 61.0  # both have passed
                fresh = asyncio.ensure_future(c.post("/v1/retrieve", json=BODY))  # arrives now: 600 s to go
                await asyncio.to_thread(until, lambda: app.state.batcher.queued == 3)
                gate.release.set()
                return await first, await asyncio.gather(*late), await fresh, (await c.get("/metrics")).text

        first, late, fresh, metrics = asyncio.run(scenario())
    assert first.status_code == 200 and fresh.status_code == 200
    assert [r.status_code for r in late] == [503] * 2
    assert all(r.json()["error"] == "deadline_exceeded" and int(r.headers["retry-after"]) >= 1 for r in late)
    assert gate.sizes == [1, 1]  # the held request, then the fresh one alone: the late ones never decoded
    assert _metric(metrics, "genrec_deadline_drops_total") == 2


def test_a_bad_deadline_header_is_a_422(run):
    app = create_app(run, ServeSettings(**QUIET))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for value in ("0", "-5", "soon", "1.5"):
            r = c.post("/v1/retrieve", json=BODY, headers={TIMEOUT: value})
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", (value, r.text)


class _ClockedRetriever:
    """Stands in for a Retriever: each decode call takes one second of the fake clock."""

    beam_width = 4

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.calls = clock, []

    def retrieve_arrays(self, histories, retailer_id, k, exclude_history):
        self.calls.append(len(histories))
        self.clock.now += 1.0
        ids = np.arange(len(histories) * k).reshape(len(histories), k)
        return Candidates(ids, -np.ones(ids.shape), np.full(ids.shape, "0_0_0", object), np.ones(ids.shape, bool))


def test_requests_that_could_not_finish_in_time_are_refused_before_queuing():
    """At one second per batch of 2 and a 1.5 s deadline, only the first batch's two requests can finish: the
    other four are refused at once (deadline_unreachable), without waiting or decoding."""
    clock = FakeClock()
    shed: list[str] = []

    async def scenario():
        fake = _ClockedRetriever(clock)
        batcher = MicroBatcher(2, 0.0, max_queue=100, timeout_s=1.5, clock=clock, on_shed=shed.append)
        batcher.start()
        await batcher.submit(fake, Query(np.array([1]), None, 2, False), batcher.deadline())  # learns: 1 s a batch
        fake.calls.clear()
        results = await asyncio.gather(*(batcher.submit(fake, Query(np.array([1]), None, 2, False),
                                                        batcher.deadline()) for _ in range(6)),
                                       return_exceptions=True)
        await batcher.close()
        return fake.calls, results

    calls, results = asyncio.run(scenario())
    assert calls == [2]
    assert [type(r).__name__ for r in results] == ["list"] * 2 + ["Unavailable"] * 4
    assert {r.code for r in results[2:]} == {"deadline_unreachable"} and shed == ["deadline_unreachable"] * 4
    assert all(isinstance(r, Unavailable) and r.retry_after_s >= 1 for r in results[2:])


def test_deadline_takes_the_shorter_of_server_and_client():
    clock = FakeClock()
    batcher = MicroBatcher(4, 0.0, timeout_s=2.0, clock=clock)
    assert batcher.deadline() == clock.now + 2.0
    assert batcher.deadline(500) == clock.now + 0.5
    assert batcher.deadline(10**9) == clock.now + 2.0
    assert batcher.deadline(500, waited_s=0.2) == pytest.approx(clock.now + 0.3)  # counted from the request's arrival
    assert MicroBatcher(4, 0.0, clock=clock).deadline() is None
    assert MicroBatcher(4, 0.0, clock=clock).deadline(250) == clock.now + 0.25
    kept = MicroBatcher(4, 0.0, timeout_s=2.0, headroom=0.25, clock=clock)  # a share kept for the network
    assert kept.deadline() == clock.now + 1.5 and kept.deadline(400) == pytest.approx(clock.now + 0.3)


# ----- readiness ---------------------------------------------------------------------------------------------


def test_readyz_flips_during_a_reload_and_a_drain(run, monkeypatch):
    app = create_app(run, ServeSettings(allow_reload=True, **QUIET))
    real_load, entered, release = ServedModel.load, threading.Event(), threading.Event()

    def held_load(*args):
        entered.set()
        assert release.wait(60)
        return real_load(*args)

    monkeypatch.setattr(ServedModel, "load", held_load)
    srv = ServerThread(app).start()
    try:
        async def scenario():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                before = await c.get("/readyz")
                reload = asyncio.ensure_future(c.post("/admin/reload"))
                assert await asyncio.to_thread(entered.wait, 30)
                during = [await c.get("/readyz"), await c.get("/healthz"), await c.post("/v1/retrieve", json=BODY)]
                release.set()
                return before, during, await reload, await c.get("/readyz")

        before, (ready, health, served), reloaded, after = asyncio.run(scenario())
        assert before.status_code == 200 and before.json()["status"] == "ready"
        assert ready.status_code == 503 and ready.json() == {"ready": False, "status": "reloading", "queued": 0,
                                                             "max_queue": 256}
        assert health.status_code == 200 and served.status_code == 200  # the old model serves meanwhile
        assert reloaded.status_code == 200 and after.status_code == 200
        srv.drain()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            draining = c.get("/readyz")
            assert draining.status_code == 503 and draining.json()["status"] == "draining"
            assert c.get("/healthz").status_code == 200
            assert c.post("/v1/retrieve", json=BODY).status_code == 200  # still served while draining
    finally:
        release.set()
        srv.stop()


# ----- reload: closed by default -----------------------------------------------------------------------------


def test_reload_is_refused_unless_allowed(run):
    app = create_app(run, ServeSettings(**QUIET))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for body in (None, {"run": "run"}):
            r = c.post("/admin/reload", json=body)
            assert r.status_code == 403 and r.json()["error"] == "reload_disabled", r.text
        assert _metric(c.get("/metrics").text, 'genrec_reloads_total{outcome="refused"}') == 2


def test_reload_loads_only_runs_under_the_root_with_the_key(run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(run, root / "v2")
    (root / "empty").mkdir()
    (root / "escape").symlink_to(run, target_is_directory=True)  # a link inside the root to a run outside it
    monkeypatch.setenv(KEY_ENV, KEY)
    app = create_app(run, ServeSettings(allow_reload=True, runs_root=str(root), log_level="warning",
                                        api_key_env=KEY_ENV))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.post("/admin/reload", json={"run": "v2"}).status_code == 401  # no key
        auth = {"Authorization": f"Bearer {KEY}"}
        cases = [("escape", 403, "outside_runs_root"), ("../" + run.name, 422, "invalid_request"),
                 (str(run), 422, "invalid_request"), ("/etc", 422, "invalid_request"),
                 ("empty", 422, "reload_failed"), ("missing", 422, "reload_failed")]
        for name, status, code in cases:
            r = c.post("/admin/reload", json={"run": name}, headers=auth)
            assert r.status_code == status and r.json()["error"] == code, (name, r.text)
            assert str(tmp_path) not in r.text and str(run.parent) not in r.text, r.text  # no host paths
        ok = c.post("/admin/reload", json={"run": "v2"}, headers=auth)
        assert ok.status_code == 200 and ok.json()["run"] == "v2"
        assert c.post("/admin/reload", headers=auth).json()["run"] == "v2"  # the served run again


def test_sighup_without_allow_reload_is_logged_not_fatal(run):
    """Without --allow-reload SIGHUP is refused (and counted) instead of ending the process."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    app = create_app(run, ServeSettings(**QUIET))

    async def scenario() -> str:
        async with app.router.lifespan_context(app):
            refused, observe = asyncio.Event(), app.state.metrics.observe_reload
            app.state.metrics.observe_reload = lambda outcome: (observe(outcome), refused.set())
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(refused.wait(), 30)
            return app.state.metrics.render()

    text = asyncio.run(scenario())
    assert _metric(text, 'genrec_reloads_total{outcome="refused"}') == 1
