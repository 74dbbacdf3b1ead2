"""genrec.cli.heap: freed large blocks go back to the OS, so a training process's resident size follows its live
memory (docs/scaling.md, "Memory"). Each case runs in a fresh interpreter: malloc settings are per process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")

# 50 blocks of 4 MB, each followed by a small block that stays alive, then the big ones freed: the pattern of
# a training step's activations among longer-lived tensors. Prints the MB still resident afterwards.
PROBE = """
import sys, numpy as np, psutil
from genrec.cli import heap
if sys.argv[1] == "on":
    assert heap.return_freed_memory()
rss = lambda: psutil.Process().memory_info().rss
big = np.ones(16 << 20, np.uint8); del big  # a freed mapping: glibc raises its mmap threshold to 16 MB
before, blocks, pins = rss(), [], []
for _ in range(50):
    blocks.append(np.ones(4 << 20, np.uint8)); pins.append(np.ones(64 << 10, np.uint8))
del blocks
print((rss() - before) >> 20)
"""


def _retained_mb(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, "PYTHONPATH": str(REPO), **env}, cwd=REPO)
    return int(out.stdout.strip())


def test_freed_blocks_are_returned_to_the_os():
    assert _retained_mb("off") >= 150  # glibc's default keeps them in the heap
    assert _retained_mb("on") <= 20


def test_a_users_own_malloc_tuning_wins():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    code = "from genrec.cli import heap; print(heap.return_freed_memory())"
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,  # noqa: E731
                                     env={**clean, "PYTHONPATH": str(REPO), **env}).stdout.strip()
    assert run({}) == "True"
    assert run({"MALLOC_MMAP_THRESHOLD_": "1048576"}) == "False"


def test_every_command_sets_it_before_its_work(monkeypatch, tmp_path):
    from genrec import cli

    calls = []
    monkeypatch.setattr(cli.heap, "return_freed_memory", lambda: calls.append("heap"))
    assert cli.main(["data", "stats", str(tmp_path / "missing")]) == 2  # parsed, then failed on the data
    assert calls == ["heap"]


# a 160 MB parquet column read into Arrow and dropped; prints the MB still resident afterwards
ARROW_PROBE = """
import sys, gc, numpy as np, psutil
from genrec.cli import heap
if sys.argv[1] == "on":
    assert heap.return_freed_memory() and heap.arrow_system_pool()
import pyarrow as pa, pyarrow.parquet as pq
rss = lambda: psutil.Process().memory_info().rss
path = sys.argv[2]
pq.write_table(pa.table({"x": np.arange(20_000_000, dtype=np.float64)}), path)
gc.collect()
before = rss()
table = pq.read_table(path)
del table
gc.collect()
print((rss() - before) >> 20)
"""


def test_dropped_arrow_tables_are_returned_to_the_os(tmp_path):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL"))}

    def retained(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", ARROW_PROBE, mode, str(tmp_path / f"{mode}.parquet")],
                             capture_output=True, text=True, check=True, env={**clean, "PYTHONPATH": str(REPO)},
                             cwd=REPO)
        return int(out.stdout.strip())

    kept = retained("off")
    assert kept >= 150  # Arrow's bundled mimalloc keeps the freed buffers (and the reader's), 250 MB here
    assert retained("on") <= kept / 2  # 65 MB here: what the reader's threads keep in glibc's arenas


def test_a_users_own_arrow_pool_wins(monkeypatch):
    from genrec.cli import heap

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    assert heap.arrow_system_pool() is False
