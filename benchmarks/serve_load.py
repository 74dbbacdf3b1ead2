"""Load test of ``genrec serve``: throughput, p50/p95/p99 latency and errors at 1, 8 and 32 concurrent
clients, with dynamic micro-batching on (``--max-batch``) and off (max_batch=1) side by side, and the
throughput ratio. Two servers run the same run on loopback ports in subprocesses; the measurement
alternates between them in short slices so load from elsewhere on the machine hits both alike. Each
simulated client has its own connection and sends its next request when the last one is answered. Each
cell is bounded in time (``--seconds``, in ``--rounds`` alternating slices) and count (``--max-requests``);
the script stops its servers and exits by itself. Requests mix the whole catalog and each retailer.

Bar: zero errors, and at 32 clients micro-batching gives at least 3x the throughput of no batching (exit
status 1 otherwise).

Overload row (``--overload-clients``, 256 by default; 0 skips it): that many clients against one batching
server with admission control on (bounded queue, ``--request-timeout-ms`` deadline: 503 + Retry-After
beyond capacity) and off (unbounded queue, no deadline), one after the other, each bounded in time
(``--overload-seconds``) and count. A client refused with 503 waits what Retry-After says, as a well-behaved
client does. Printed: goodput (answers within the deadline per second), answers per second, shed requests
(503), p50/p99/max latency of the answered requests and the server's RSS before and at its peak, beside
the admission server's throughput at 32 clients measured in the same alternating slices. Bar: goodput with
admission at least that throughput at 32 clients, admitted p99 under the deadline.

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
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SERVER = "import json, sys; from pathlib import Path; from genrec.serve import serve, ServeSettings; " \
         "serve(Path(sys.argv[1]), ServeSettings(**json.loads(sys.argv[2])))"
KEY_ENV = "GENREC_BENCH_API_KEY"


@dataclass
class Cell:
    """One (mode, clients) measurement, summed over its rounds."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
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
            if r.status_code == 503 and "retry-after" in r.headers:
                cell.shed += 1
                return float(r.headers["retry-after"])
            ok = r.status_code == 200 and len(r.json()["items"]) == k
        except httpx.HTTPError:
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


def measure(server: Server, key: str, bodies: list[dict], clients: int, seconds: float, max_requests: int,
            pool: ProcessPoolExecutor, max_procs: int, deadline_s: float = float("inf")) -> Cell:
    """One round: the clients spread over the pool's processes (so the load generator is not what limits
    throughput), plus the server's batch sizes and CPU time over it."""
    procs = min(clients, max_procs)
    shares = [len(part) for part in np.array_split(np.arange(clients), procs)]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        before, cpu = _batch_totals(c), _process_cpu(server.proc.pid)
        futures = [pool.submit(_load_part, server.url, key, bodies[i::procs], n, seconds,
                               max(1, max_requests // procs), deadline_s) for i, n in enumerate(shares)]
        parts = [f.result() for f in futures]
        after, cpu = _batch_totals(c), _process_cpu(server.proc.pid) - cpu
    cell = Cell()
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


def _row(clients: int, on: Cell, off: Cell) -> str:
    def part(c: Cell) -> str:
        return (f"{c.throughput:7.1f} {c.percentile(50):7.1f} {c.percentile(95):7.1f} {c.percentile(99):7.1f} "
                f"{c.errors:6d} {c.mean_batch:5.1f} {c.cpu_ms('server'):6.2f} {c.cpu_ms('client'):6.2f}")
    ratio = on.throughput / off.throughput if off.throughput else float("inf")
    return f"{clients:7d} | {part(on)} | {part(off)} | {ratio:6.2f}x"


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


def run_overload(run: Path, args: argparse.Namespace, workdir: Path) -> dict[str, tuple[Cell, float, float]]:
    """``--overload-clients`` clients against a batching server with admission control on and off, and 32
    clients against the one with admission (its capacity at ordinary load), in alternating slices so that
    load from elsewhere on the machine hits all three alike: per row the cell, the server's RSS before (MB)
    and its peak RSS after."""
    bodies = make_bodies(run, 4096, args.k, args.history, args.seed + 1, per_retailer=not args.catalog_only)
    key = secrets.token_hex(16)
    batching = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "dtype": args.dtype}
    modes = {"on": {**batching, "request_timeout_ms": args.request_timeout_ms},  # max_queue: its default
             "off": {**batching, "max_queue": 10**9, "request_timeout_ms": 0}}
    servers = {m: Server(run, s, key, workdir / f"server-overload-{m}.log") for m, s in modes.items()}
    cells: dict[str, Cell] = {}
    procs = max(1, args.client_procs)
    pool = ProcessPoolExecutor(max_workers=procs)
    deadline_s = args.request_timeout_ms / 1000.0
    try:
        for srv in servers.values():
            srv.wait_ready()
        rss = {m: _memory_mb(srv.proc.pid, "VmRSS") for m, srv in servers.items()}
        rows = {"on": ("on", args.overload_clients), "off": ("off", args.overload_clients), "32": ("on", 32)}
        for r in range(args.rounds):
            for row in (("on", "off", "32") if r % 2 == 0 else ("32", "off", "on")):
                mode, clients = rows[row]
                cells.setdefault(row, Cell()).add(measure(
                    servers[mode], key, bodies, clients, args.overload_seconds / args.rounds,
                    max(1, args.max_requests * 4 // args.rounds), pool, procs, deadline_s))
        peak = {m: _memory_mb(srv.proc.pid, "VmHWM") for m, srv in servers.items()}
    finally:
        pool.shutdown()
        for srv in servers.values():
            srv.stop()
    return {row: (cells[row], rss[mode], peak[mode]) for row, (mode, _) in rows.items()}


def print_overload(args: argparse.Namespace, rows: dict[str, tuple[Cell, float, float]]) -> bool:
    """The overload table and its bar; whether the bar is met."""
    print(f"\noverload: {args.overload_clients} clients, {args.overload_seconds:.0f}s per mode in {args.rounds} "
          f"alternating slices; deadline {args.request_timeout_ms:.0f} ms; a client refused with 503 waits "
          f"Retry-After")
    head = (f"{'clients':>7} {'admission':>9} | {'goodput/s':>9} {'answered/s':>10} {'shed':>6} {'errors':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'batch':>5} {'RSS MB':>7} {'peak MB':>7}")
    print(head)
    for row, clients, label in (("32", 32, "on"), ("on", args.overload_clients, "on"),
                                ("off", args.overload_clients, "off")):
        c, rss, peak = rows[row]
        top = max(c.latencies) * 1000 if c.latencies else float("nan")
        print(f"{clients:7d} {label:>9} | {c.goodput:9.1f} {c.throughput:10.1f} {c.shed:6d} {c.errors:6d} "
              f"{c.percentile(50):7.0f} {c.percentile(99):7.0f} {top:7.0f} {c.mean_batch:5.1f} {rss:7.0f} {peak:7.0f}")
    print("goodput: answers within the deadline per second; p50/p99/max: of the answered (admitted) requests; "
          "RSS: the server's before the rows, peak: its high-water mark after (the 32-client row shares the "
          "admission server)")
    on, baseline = rows["on"][0], rows["32"][0].throughput
    ok = on.percentile(99) < args.request_timeout_ms and on.errors == 0 and on.goodput >= baseline
    print(f"bar: goodput with admission at {args.overload_clients} clients {on.goodput:.1f}/s >= throughput at 32 "
          f"clients {baseline:.1f}/s, admitted p99 {on.percentile(99):.0f} ms < {args.request_timeout_ms:.0f} ms, "
          f"zero errors: {'PASS' if ok else 'FAIL'}")
    return ok


def print_table(run: Path, args: argparse.Namespace, cells: dict[tuple[str, int], Cell]) -> None:
    scope = "the whole catalog" if args.catalog_only else "the whole catalog and each retailer"
    print(f"\nrun {run}: requests for {scope}, k={args.k}, histories 1..{args.history} items")
    print(f"{args.seconds:.0f}s per cell in {args.rounds} alternating slices; micro-batching "
          f"max_batch={args.max_batch}, max_wait={args.max_wait_ms}ms; decoder dtype {args.dtype}")
    head = (f"{'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'batch':>5} "
            f"{'srv ms':>6} {'cli ms':>6}")
    print(f"{'':7} | {'micro-batching on':^{len(head)}} | {'micro-batching off (max_batch=1)':^{len(head)}} |")
    print(f"{'clients':>7} | {head} | {head} | {'on/off':>7}")
    for clients in args.levels:
        print(_row(clients, cells["on", clients], cells["off", clients]))
    print("batch: requests per batched retrieval call (one beam search whatever the retailers); "
          "srv ms / cli ms: CPU time")
    print(f"per request of the server / of the clients ({args.client_procs} processes); all share this "
          f"machine's {os.cpu_count()} cores")


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
        ok = print_overload(args, overload) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
