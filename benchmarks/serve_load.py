"""Load test of ``genrec serve``: throughput, p50/p95/p99 latency and errors at 1, 8 and 32 concurrent
clients, with dynamic micro-batching on (``--max-batch``) and off (max_batch=1) side by side, and the
throughput ratio. Two servers run the same run on loopback ports in subprocesses; the measurement
alternates between them in short slices so load from elsewhere on the machine hits both alike. Each
simulated client has its own connection and sends its next request when the last one is answered. Each
cell is bounded in time (``--seconds``, in ``--rounds`` alternating slices) and count (``--max-requests``);
the script stops its servers and exits by itself. Requests mix the whole catalog and each retailer.

Bar: zero errors, and at 32 clients micro-batching gives at least 3x the throughput of no batching (exit
status 1 otherwise).

Overload rows (``--overload-clients``, 256 by default; 0 skips them): the server's defaults (bounded queue,
``--request-timeout-ms`` deadline: 503 + Retry-After beyond capacity) at 32 clients (its capacity at
ordinary load) and at that many clients, and the same many clients against a server without admission
control (unbounded queue, no deadline), each row on a server of its own, in alternating slices, each bounded
in time (``--overload-seconds``) and count. A client refused with 503 waits what Retry-After says, as a well-behaved client does. Every
latency is measured by the client, from sending a request to reading its whole answer, each client on its
own connection. Printed per row: answers and goodput (answers within the deadline) per second, the share
shed (503 with Retry-After), errors (any other answer: another status, a 503 without Retry-After, a broken
connection), p50/p99/max of the answered requests, the p99 of a /healthz probe sent every 50 ms during the
load (how late the event loop reads a request while the model decodes) and the server's RSS after each
round of slices and its peak. Bar (issue 24): with admission, at both client counts, the client-side p99
of answered requests at most 2x the deadline and no errors; under the overload the server's RSS flat
(after the last round at most 10% above after the first).

    PYTHONPATH=. .venv/bin/python benchmarks/serve_load.py                 # builds a tiny run first
    PYTHONPATH=. .venv/bin/python benchmarks/serve_load.py --run runs/beauty
    PYTHONPATH=. .venv/bin/python benchmarks/serve_load.py --catalog-only   # no per-retailer requests
    PYTHONPATH=. .venv/bin/python benchmarks/serve_load.py --clients 32     # a short batching table, then overload
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# the server as `genrec serve` starts it: malloc thresholds fixed first (genrec.cli.heap), then the app
SERVER = "import json, sys; from pathlib import Path; from genrec.cli.heap import return_freed_memory; " \
         "return_freed_memory(); from genrec.serve import serve, ServeSettings; " \
         "serve(Path(sys.argv[1]), ServeSettings(**json.loads(sys.argv[2])))"
KEY_ENV = "GENREC_BENCH_API_KEY"


@dataclass
class Cell:
    """One (mode, clients) measurement, summed over its rounds."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    probes: list[float] = field(default_factory=list)  # seconds, /healthz probes sent during the load
    errors: int = 0
    shed: int = 0  # refused with 503 + Retry-After (admission control): not errors
    good: int = 0  # answered within the deadline
    seconds: float = 0.0  # measured wall time
    served: int = 0  # requests answered, warm-up rounds included (what the CPU times are divided by)
    decoded: float = 0.0  # requests the server decoded, from its metrics
    decodes: float = 0.0  # decode calls it made
    server_cpu: float = 0.0  # server process CPU seconds (Linux /proc)
    client_cpu: float = 0.0  # this process's CPU seconds

    def add(self, other: "Cell") -> None:
        self.latencies += other.latencies
        self.probes += other.probes
        for name in ("errors", "shed", "good", "seconds", "served", "decoded", "decodes", "server_cpu",
                     "client_cpu"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def goodput(self) -> float:
        return self.good / self.seconds if self.seconds else 0.0

    @property
    def mean_batch(self) -> float:
        return self.decoded / self.decodes if self.decodes else float("nan")

    def cpu_ms(self, which: str) -> float:
        """CPU milliseconds per request of the server or the clients."""
        return 1000 * getattr(self, f"{which}_cpu") / self.served if self.served else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    @property
    def shed_share(self) -> float:
        """Share of the requests sent that were refused with 503 + Retry-After."""
        sent = len(self.latencies) + self.errors + self.shed
        return self.shed / sent if sent else float("nan")


class Server:
    """``genrec serve`` in a subprocess on a free loopback port."""

    def __init__(self, run: Path, settings: dict, key: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, KEY_ENV: key, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        settings = {**settings, "host": "127.0.0.1", "port": self.port, "api_key_env": KEY_ENV, "log_level": "warning"}
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(run), json.dumps(settings)],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 900.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server on {self.url} not ready after {timeout_s}s")

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), then kill if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (NaN where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batch_totals(client: httpx.Client) -> tuple[float, float]:
    """(requests decoded, decode calls) so far, from /metrics."""
    text = client.get("/metrics").text
    found = [re.search(rf"^genrec_batch_size_{name} (\S+)$", text, re.M) for name in ("sum", "count")]
    return tuple(float(m.group(1)) if m else 0.0 for m in found)


def make_bodies(run: Path, n: int, k: int, max_history: int, seed: int, per_retailer: bool = True) -> list[dict]:
    """Random requests: histories of 1..max_history catalog products, each for the whole catalog or (with
    ``per_retailer``) one of the retailers, drawn evenly."""
    from genrec.run.layout import INDEX_DIR
    from index.retailer_index import RetailerIndex

    index = RetailerIndex.load(run / INDEX_DIR)
    ids, retailers = index.item_ids, [None, *(index.retailers.tolist() if per_retailer else [])]
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        body = {"history": ids[rng.integers(0, ids.size, rng.integers(1, max_history + 1))].tolist(), "k": k}
        retailer = retailers[rng.integers(len(retailers))]
        if retailer is not None:
            body["retailer_id"] = retailer
        bodies.append(body)
    return bodies


async def load(url: str, key: str, bodies: list[dict], clients: int, seconds: float, max_requests: int,
               deadline_s: float = float("inf")) -> Cell:
    """``clients`` shoppers, each with its own connection, sending requests back to back until ``seconds``
    pass or ``max_requests`` were started; requests in flight at the deadline finish and count. A shopper
    refused with 503 waits what Retry-After says (never past the end); answers within ``deadline_s`` count
    as good."""
    cell = Cell()
    started = 0
    payloads = [(json.dumps(b).encode(), b["k"]) for b in bodies]
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    # one client per shopper: a shared httpx pool costs several times more CPU per request at 32 connections;
    # one TLS context for all (plain HTTP here, but each client would otherwise load the CA bundle, ~25 ms)
    tls = ssl.create_default_context()
    pool = [httpx.AsyncClient(base_url=url, headers=headers, timeout=120, verify=tls) for _ in range(clients)]

    async def one(client: httpx.AsyncClient, payload: bytes, k: int) -> float:
        """Send one request; the seconds to wait before the next (Retry-After of a 503, else 0)."""
        start = time.perf_counter()
        try:
            r = await client.post("/v1/retrieve", content=payload)
            if r.status_code == 503 and r.headers.get("retry-after", "").isdigit():
                cell.shed += 1
                return float(r.headers["retry-after"])
            ok = r.status_code == 200 and len(r.json()["items"]) == k
        except httpx.HTTPError:  # an error: a broken connection, a timeout
            ok = False
        if ok:
            took = time.perf_counter() - start
            cell.latencies.append(took)
            cell.good += took <= deadline_s
        else:
            cell.errors += 1
        return 0.0

    async def shopper(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal started
        while time.perf_counter() < deadline and started < max_requests:
            payload, k = payloads[started % len(payloads)]
            started += 1
            wait = await one(client, payload, k)
            if wait:
                await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

    try:
        await asyncio.gather(*(one(c, *payloads[i % len(payloads)]) for i, c in enumerate(pool)))  # warm:
        cell.latencies.clear()  # connections open
        cell.errors = cell.shed = cell.good = 0
        begin = time.perf_counter()
        await asyncio.gather(*(shopper(c, begin + seconds) for c in pool))
        cell.seconds = time.perf_counter() - begin
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))
    return cell


def _load_part(url: str, key: str, bodies: list[dict], clients: int, seconds: float, max_requests: int,
               deadline_s: float = float("inf")) -> Cell:
    """``load`` in a client process, with that process's CPU time."""
    own = time.process_time()
    cell = asyncio.run(load(url, key, bodies, clients, seconds, max_requests, deadline_s))
    cell.client_cpu = time.process_time() - own
    return cell


def _probe(url: str, stop: threading.Event, took: list[float], every_s: float = 0.05) -> None:
    """GET /healthz every ``every_s`` on its own connection until ``stop``: how late the event loop answers a
    request that needs no decode (open without the key)."""
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                c.get("/healthz")
                took.append(time.perf_counter() - start)
            except httpx.HTTPError:
                took.append(float("inf"))
            stop.wait(every_s)


def measure(server: Server, key: str, bodies: list[dict], clients: int, seconds: float, max_requests: int,
            pool: ProcessPoolExecutor, max_procs: int, deadline_s: float = float("inf"), probe: bool = False) -> Cell:
    """One round: the clients spread over the pool's processes (so the load generator is not what limits
    throughput), plus the server's batch sizes and CPU time over it, and (``probe``) /healthz probes."""
    procs = min(clients, max_procs)
    shares = [len(part) for part in np.array_split(np.arange(clients), procs)]
    probes: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(server.url, stop, probes), daemon=True)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        before, cpu = _batch_totals(c), _process_cpu(server.proc.pid)
        futures = [pool.submit(_load_part, server.url, key, bodies[i::procs], n, seconds,
                               max(1, max_requests // procs), deadline_s) for i, n in enumerate(shares)]
        if probe:
            prober.start()
        parts = [f.result() for f in futures]
        stop.set()
        if probe:
            prober.join()
        after, cpu = _batch_totals(c), _process_cpu(server.proc.pid) - cpu
    cell = Cell(probes=probes)
    for part in parts:
        cell.add(part)
    cell.seconds = max(part.seconds for part in parts)  # they ran side by side
    cell.server_cpu = cpu
    cell.served = len(cell.latencies) + cell.errors + cell.shed + clients  # the warm-up round included
    cell.decoded, cell.decodes = after[0] - before[0], after[1] - before[1]
    return cell


def build_small_run(workdir: Path) -> Path:
    """A tiny trained run (synthetic world, 300 products, 2 retailers, a 1-layer decoder) in seconds;
    embeddings are cheap stand-ins with the taxonomy planted (``genrec.run.tiny``)."""
    from genrec.run.build import train_run
    from genrec.run.tiny import tiny_config, tiny_world

    run = workdir / "run"
    if (run / "decoder" / "model").is_dir():
        return run
    tiny_world().write(workdir / "data", overwrite=True)
    train_run(workdir / "data", tiny_config("serve-bench"), run)
    return run


def _row(clients: int, mode: str, c: Cell, ratio: str = "") -> str:
    return (f"{clients:7d} {mode:>4} | {c.throughput:7.1f} {c.percentile(50):7.1f} {c.percentile(95):7.1f} "
            f"{c.percentile(99):7.1f} {c.errors:6d} {c.mean_batch:5.1f} {c.cpu_ms('server'):6.2f} "
            f"{c.cpu_ms('client'):6.2f} | {ratio:>6}")


def run_cells(run: Path, args: argparse.Namespace, workdir: Path) -> dict[tuple[str, int], Cell]:
    """Both servers up, every (mode, clients) cell measured in alternating slices, both servers stopped."""
    bodies = make_bodies(run, 4096, args.k, args.history, args.seed, per_retailer=not args.catalog_only)
    key = secrets.token_hex(16)
    no_admission = {"max_queue": 10**9, "request_timeout_ms": 0}  # what this table compares is batching alone
    modes = {"on": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "dtype": args.dtype, **no_admission},
             "off": {"max_batch": 1, "dtype": args.dtype, **no_admission}}
    servers = {m: Server(run, s, key, workdir / f"server-{m}.log") for m, s in modes.items()}
    cells: dict[tuple[str, int], Cell] = {}
    procs = max(1, args.client_procs)
    pool = ProcessPoolExecutor(max_workers=procs)
    try:
        for s in servers.values():
            s.wait_ready()
        for clients in args.levels:
            for r in range(args.rounds):
                for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    cells.setdefault((mode, clients), Cell()).add(measure(
                        servers[mode], key, bodies, clients, args.seconds / args.rounds,
                        max(1, args.max_requests // args.rounds), pool, procs))
            print(f"  {clients:2d} clients: {cells['on', clients].throughput:.1f} req/s with micro-batching, "
                  f"{cells['off', clients].throughput:.1f} without", flush=True)
    finally:
        pool.shutdown()
        for s in servers.values():
            s.stop()
    return cells


def _memory_mb(pid: int, field_name: str) -> float:
    """A memory figure of a process from /proc (VmRSS: now, VmHWM: its peak), in MB; NaN where missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Memory:
    """A server's RSS (MB) after each round of slices, and its peak."""

    rounds: list[float] = field(default_factory=list)
    peak: float = float("nan")

    @property
    def first(self) -> float:
        return self.rounds[0] if self.rounds else float("nan")

    @property
    def last(self) -> float:
        return self.rounds[-1] if self.rounds else float("nan")

    @property
    def flat(self) -> bool:
        """Whether the RSS stopped growing: after the last round at most 10% above after the first."""
        return self.last <= 1.1 * self.first


def run_overload(run: Path, args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Cell], dict[str, Memory]]:
    """The overload rows in alternating slices, so that load from elsewhere on the machine hits them alike,
    each row against its own server: "32" and "on" (``--overload-clients``) with the defaults' admission
    control, "off" without; per row its cell and its server's RSS."""
    bodies = make_bodies(run, 4096, args.k, args.history, args.seed + 1, per_retailer=not args.catalog_only)
    key = secrets.token_hex(16)
    batching = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "dtype": args.dtype}
    admission = {**batching, "request_timeout_ms": args.request_timeout_ms}  # max_queue: its default
    modes = {"32": admission, "on": admission, "off": {**batching, "max_queue": 10**9, "request_timeout_ms": 0}}
    servers = {m: Server(run, s, key, workdir / f"server-overload-{m}.log") for m, s in modes.items()}
    cells: dict[str, Cell] = {}
    memory = {m: Memory() for m in servers}
    procs = max(1, args.client_procs)
    pool = ProcessPoolExecutor(max_workers=procs)
    deadline_s = args.request_timeout_ms / 1000.0
    try:
        for srv in servers.values():
            srv.wait_ready()
        rows = {"on": args.overload_clients, "off": args.overload_clients, "32": 32}
        for r in range(args.rounds):
            for row in (("on", "off", "32") if r % 2 == 0 else ("32", "off", "on")):
                cells.setdefault(row, Cell()).add(measure(
                    servers[row], key, bodies, rows[row], args.overload_seconds / args.rounds,
                    max(1, args.max_requests * 4 // args.rounds), pool, procs, deadline_s, probe=True))
            for mode, srv in servers.items():
                memory[mode].rounds.append(_memory_mb(srv.proc.pid, "VmRSS"))
        for mode, srv in servers.items():
            memory[mode].peak = _memory_mb(srv.proc.pid, "VmHWM")
    finally:
        pool.shutdown()
        for srv in servers.values():
            srv.stop()
    return cells, memory


def print_overload(args: argparse.Namespace, cells: dict[str, Cell], memory: dict[str, Memory]) -> bool:
    """The overload table and its bar; whether the bar is met."""
    deadline = args.request_timeout_ms
    print(f"\noverload: {args.overload_seconds:.0f}s per row in {args.rounds} alternating slices; deadline "
          f"{deadline:.0f} ms; a client\nrefused with 503 waits Retry-After; latencies as the clients measured "
          f"them")
    print(f"{'clients':>7} {'adm':>3} | {'answer/s':>8} {'good/s':>7} {'shed':>6} {'errors':>6} | {'p50 ms':>6} "
          f"{'p99 ms':>6} {'max ms':>6} | {'probe':>5} | {'RSS first':>9} {'last':>5} {'peak':>5}")
    order = (("32", 32, "on"), ("on", args.overload_clients, "on"), ("off", args.overload_clients, "off"))
    for row, clients, mode in order:
        c, m = cells[row], memory[row]
        top = max(c.latencies) * 1000 if c.latencies else float("nan")
        probe = float(np.percentile(c.probes, 99)) * 1000 if c.probes else float("nan")
        print(f"{clients:7d} {mode:>3} | {c.throughput:8.1f} {c.goodput:7.1f} {c.shed_share:6.1%} {c.errors:6d} | "
              f"{c.percentile(50):6.0f} {c.percentile(99):6.0f} {top:6.0f} | {probe:5.0f} | "
              f"{m.first:9.0f} {m.last:5.0f} {m.peak:5.0f}")
    print("good/s: answers within the deadline; shed: share of requests refused with 503 + Retry-After;")
    print("errors: any other answer; p50/p99/max: of the answered requests; probe: p99 ms of GET /healthz")
    print("every 50 ms during the row; RSS MB of the row's own server after the first and the last round")
    print("of slices, and its peak")
    ok = True
    for row, clients, _ in order[:2]:
        c = cells[row]
        met = c.percentile(99) <= 2 * deadline and c.errors == 0
        ok = ok and met
        print(f"bar at {clients} clients: client p99 of "
              f"answered {c.percentile(99):.0f} ms <= 2 x {deadline:.0f} ms, {c.errors} errors: "
              f"{'PASS' if met else 'FAIL'}")
    flat = memory["on"].flat
    rounds = ", ".join(f"{mb:.0f}" for mb in memory["on"].rounds)
    print(f"bar: RSS flat at {args.overload_clients} clients (MB after each round: {rounds}; the last <= +10% "
          f"of the first): {'PASS' if flat else 'FAIL'}")
    return ok and flat


def print_table(run: Path, args: argparse.Namespace, cells: dict[tuple[str, int], Cell]) -> None:
    scope = "the whole catalog" if args.catalog_only else "the whole catalog and each retailer"
    print(f"\nrun {run}:\nrequests for {scope}, k={args.k}, histories 1..{args.history} items")
    print(f"{args.seconds:.0f}s per cell in {args.rounds} alternating slices; dtype {args.dtype}; micro-batching "
          f"on: max_batch={args.max_batch},\nmax_wait={args.max_wait_ms}ms; off: max_batch=1")
    print(f"{'clients':>7} {'mode':>4} | {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'batch':>5} {'srv ms':>6} {'cli ms':>6} | {'on/off':>6}")
    for clients in args.levels:
        on, off = cells["on", clients], cells["off", clients]
        print(_row(clients, "on", on))
        print(_row(clients, "off", off, f"{on.throughput / off.throughput if off.throughput else float('inf'):5.2f}x"))
    print("batch: requests per batched retrieval call (one beam search whatever the retailers);")
    print(f"srv ms / cli ms: CPU time per request of the server / of the clients ({args.client_procs} "
          f"processes);\nall share this machine's {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run folder to serve (default: build a tiny one in --workdir)")
    p.add_argument("--workdir", type=Path,
                   help="where to build the tiny run and keep server logs (default: a temp dir)")
    p.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--seconds", type=float, default=6.0, help="measured time per cell (mode, clients)")
    p.add_argument("--rounds", type=int, default=3,
                   help="each cell is measured in this many slices, alternating with the other mode's, so "
                        "load from elsewhere on the machine hits both modes alike")
    p.add_argument("--max-requests", type=int, default=3000, help="most requests started per cell")
    p.add_argument("--client-procs", type=int, default=2, help="processes the simulated clients are spread over")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--history", type=int, default=20, help="longest random history (items)")
    p.add_argument("--max-batch", type=int, default=32, help="micro-batch size of the batching server")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="batching window of the batching server")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="decoder weights of both servers (auto: bf16 where the CPU multiplies it natively)")
    p.add_argument("--catalog-only", action="store_true",
                   help="every request for the whole catalog (default: spread evenly over the catalog and each "
                        "retailer; a batch of mixed retailers still decodes once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overload-clients", type=int, default=256, help="clients of the overload row (0: no row)")
    p.add_argument("--overload-seconds", type=float, default=12.0, help="measured time per mode of the overload row")
    p.add_argument("--request-timeout-ms", type=float, default=2000.0,
                   help="deadline of the admission-controlled server in the overload row (goodput counts answers "
                        "within it, for both modes)")
    args = p.parse_args(argv)
    args.levels = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        run = args.run or build_small_run(workdir)
        if args.run is None:
            print(f"built a tiny run in {workdir} ({time.perf_counter() - t:.0f}s)")
        cells = run_cells(run, args, workdir)
        overload = run_overload(run, args, workdir) if args.overload_clients > 0 else None
    print_table(run, args, cells)
    errors = sum(c.errors for c in cells.values())
    top = max(args.levels)
    ratio = cells["on", top].throughput / max(cells["off", top].throughput, 1e-9)
    ok = errors == 0 and ratio >= 3.0
    print(f"\nbar: zero errors ({errors}) and >= 3x throughput at {top} clients ({ratio:.2f}x): "
          f"{'PASS' if ok else 'FAIL'}")
    if overload is not None:
        ok = print_overload(args, *overload) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
