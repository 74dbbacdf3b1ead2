"""The ad-hoc client of docs/serving.md, "Serving under overload": CLIENTS x PER requests against
``genrec serve`` (the defaults, in a subprocess), all clients started at once on cold connections, with the
client-side latency of answered requests, the statuses, both processes' CPU and a /healthz probe every
50 ms. CLIENT picks the client: ``shared`` (one httpx.AsyncClient, its default pool of 100 connections, for
every client), ``httpx`` (an httpx.AsyncClient per client), ``raw`` (hand-written HTTP/1.1 on asyncio
streams, the cheapest). NEWCONN=1: a new connection per request (raw); NORETRY=1: a refused client retries
at once instead of waiting Retry-After (raw); SWITCH=S: the server's sys.setswitchinterval; SPY=FILE: a
4 s py-spy profile of the server (GIL=1: only the thread holding the GIL).

    CLIENT=shared PYTHONPATH=. .venv/bin/python benchmarks/results/2026-12-07-serve-overload/client_probe.py \
        work/demo/run 256 8
"""
import asyncio, json, secrets, sys, time, re, os
from pathlib import Path
REPO = Path(__file__).resolve().parents[3]; sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
import numpy as np, httpx, ssl
import serve_load as sl

run = Path(sys.argv[1]); clients = int(sys.argv[2]); per = int(sys.argv[3]); settings = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
mode = os.environ.get("CLIENT", "httpx")
key = secrets.token_hex(8)
if os.environ.get("SWITCH"): sl.SERVER = f"import sys; sys.setswitchinterval({os.environ['SWITCH']}); " + sl.SERVER
srv = sl.Server(run, {"max_batch": 32, "max_wait_ms": 5.0, **settings}, key, Path(os.environ.get("TMPDIR", "/tmp")) / "probe-server.log")
srv.wait_ready()
print("server pid", srv.proc.pid, flush=True)
bodies = sl.make_bodies(run, 4096, 10, 20, 0)
payloads = [json.dumps(b).encode() for b in bodies]

NEWCONN = bool(os.environ.get("NEWCONN")); NORETRY = bool(os.environ.get("NORETRY"))
async def raw_one(host, port, payloads, lat, status):
    r, w = await asyncio.open_connection(host, port)
    for i, p in enumerate(payloads):
        t = time.perf_counter()
        if NEWCONN and i:
            w.close(); r, w = await asyncio.open_connection(host, port)
        w.write(b"POST /v1/retrieve HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + key.encode() +
                b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(p)).encode() + b"\r\n\r\n" + p)
        head = await r.readuntil(b"\r\n\r\n")
        n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        await r.readexactly(n)
        code = int(head.split(b" ", 2)[1])
        status.append(code)
        if code == 200: lat.append(time.perf_counter() - t)
        elif code == 503:
            ra = int(re.search(rb"retry-after: (\d+)", head, re.I).group(1)); await asyncio.sleep(0 if NORETRY else ra)
    w.close()

async def httpx_one(url, payloads, lat, status):
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}", "content-type": "application/json"}, timeout=120, verify=TLS) as c:
        for p in payloads:
            t = time.perf_counter()
            resp = await c.post("/v1/retrieve", content=p)
            status.append(resp.status_code)
            if resp.status_code == 200: lat.append(time.perf_counter() - t)
            elif resp.status_code == 503: await asyncio.sleep(int(resp.headers["retry-after"]))

TLS = ssl.create_default_context()
HZ = []
async def pinger(stop):
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    while not stop.is_set():
        t = time.perf_counter()
        w.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await r.readuntil(b"\r\n\r\n")
        n = int(re.search(rb"content-length: (\d+)", head, re.I).group(1)); await r.readexactly(n)
        HZ.append(time.perf_counter() - t)
        await asyncio.sleep(0.05)
    w.close()

async def main():
    stop = asyncio.Event(); pt = asyncio.ensure_future(pinger(stop))
    if os.environ.get("SPY"):
        import subprocess; subprocess.Popen([str(REPO / ".venv/bin/py-spy"), "record", "-d", "4", "-r", "50", "-f", "raw", "-o", os.environ["SPY"], "-p", str(srv.proc.pid)] + (["--gil"] if os.environ.get("GIL") else []) + ["--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lat, status = [], []
    t = time.perf_counter(); c0 = time.process_time(); s0 = sl._process_cpu(srv.proc.pid)
    if mode == "raw":
        await asyncio.gather(*(raw_one("127.0.0.1", srv.port, payloads[i*per:(i+1)*per], lat, status) for i in range(clients)))
    elif mode == "shared":
        async with httpx.AsyncClient(base_url=srv.url, headers={"Authorization": f"Bearer {key}", "content-type": "application/json"}, timeout=120) as c:
            async def seq(ps):
                for p in ps:
                    t0 = time.perf_counter(); resp = await c.post("/v1/retrieve", content=p); status.append(resp.status_code)
                    if resp.status_code == 200: lat.append(time.perf_counter() - t0)
            await asyncio.gather(*(seq(payloads[i*per:(i+1)*per]) for i in range(clients)))
    else:
        await asyncio.gather(*(httpx_one(srv.url, payloads[i*per:(i+1)*per], lat, status) for i in range(clients)))
    took = time.perf_counter() - t
    stop.set(); await pt
    print(f"healthz during load: n {len(HZ)} p50 {np.percentile(HZ,50)*1000:.0f} p99 {np.percentile(HZ,99)*1000:.0f} max {max(HZ)*1000:.0f} ms")
    print(f"client cpu {time.process_time()-c0:.1f}s server cpu {sl._process_cpu(srv.proc.pid)-s0:.1f}s")
    from collections import Counter
    print(f"{mode}: {clients}x{per} in {took:.1f}s; statuses {dict(Counter(status))}; answered p50 {np.percentile(lat,50)*1000:.0f} p99 {np.percentile(lat,99)*1000:.0f} max {max(lat)*1000:.0f} ms")
try:
    asyncio.run(main())
    m = httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    print("\n".join(l for l in m.splitlines() if l.startswith("genrec_request_seconds_bucket") and "retrieve" in l and 'status="200"' in l))
    print("rss MB", sl._memory_mb(srv.proc.pid, "VmRSS"), "peak", sl._memory_mb(srv.proc.pid, "VmHWM"))
finally:
    srv.stop()
