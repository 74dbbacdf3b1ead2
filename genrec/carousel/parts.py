"""Where a carousel job keeps its progress: ``OUT.parts/`` holds one parquet part per finished chunk,
each written to a temporary name and renamed (so a part exists only when complete), plus a manifest of
the job's inputs so a resume with other inputs is refused. The finished parts are merged into ``OUT``
row group by row group, and the folder removed. While a job runs, its main process holds an exclusive lock
on ``.OUT.lock`` (released by the OS if the process dies), so a second live job on the same output is
refused rather than racing the first."""
from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from semid.common import DataError, atomic_write

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("retailer_id", pa.int32()),  # null: recommended from the whole catalog
        pa.field("rank", pa.int32(), nullable=False),  # 1 = best
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("sid", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # SID log-prob (filled products: below all decoded)
    ]
)
MANIFEST = "manifest.json"
STATS_KEY = b"genrec.carousel.stats"  # per-part counts, kept in the part's schema metadata
JOB_KEY = b"genrec.carousel"  # the manifest, kept in the merged output's schema metadata


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


class PartStore:
    """The ``OUT.parts`` folder of a job writing ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")
        self.lock_path = self.out.with_name(f".{self.out.name}.lock")
        self._lock = None  # the open, locked lock file while this process holds it

    def part(self, index: int) -> Path:
        """Path of chunk ``index``'s part."""
        return self.dir / f"part-{index:06d}.parquet"

    def done(self, index: int) -> bool:
        """Whether chunk ``index`` was finished (by this or an earlier attempt)."""
        return self.part(index).is_file()

    def prepare(self, manifest: dict, overwrite: bool) -> int:
        """Start or resume: check ``manifest`` against the one on disk (refusing other inputs), write it if
        new, clear stale temporaries; returns the number of parts already done. Takes the job's lock."""
        self.lock()
        if overwrite:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.out.unlink(missing_ok=True)
        path = self.dir / MANIFEST
        if path.is_file():
            self._check(json.loads(path.read_text()), manifest)
        elif self.out.exists():
            raise DataError(f"{self.out}: output exists (pass overwrite to replace it)")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda p: p.write_text(json.dumps(manifest, indent=2, sort_keys=True)))
        for stale in [*self.dir.glob(".*.tmp*"), *self.out.parent.glob(f".{self.out.name}.tmp*")]:
            stale.unlink(missing_ok=True)  # left by a killed attempt
        return len(list(self.dir.glob("part-*.parquet")))

    def write(self, index: int, table: pa.Table, stats: dict) -> Path:
        """Write chunk ``index``'s rows, with its counts, as one row group; atomic."""
        meta = {STATS_KEY: json.dumps(stats, sort_keys=True).encode()}
        table = table.cast(OUTPUT_SCHEMA).replace_schema_metadata(meta)
        one_group = max(table.num_rows, 1)
        return atomic_write(self.part(index), lambda p: pq.write_table(table, p, row_group_size=one_group))

    def merge(self, n_chunks: int, manifest: dict) -> dict:
        """Concatenate parts 0..n_chunks-1 into ``out`` (streaming, atomic), sum their counts, remove the
        parts folder; returns the summed counts."""
        absent = [i for i in range(n_chunks) if not self.done(i)]
        if absent:
            raise DataError(f"{self.dir}: parts of chunks {absent[:10]} are missing; run the job again to finish")
        totals: dict[str, int] = {}
        examples: list[int] = []
        schema = OUTPUT_SCHEMA.with_metadata({JOB_KEY: json.dumps(manifest, sort_keys=True).encode()})

        def write(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for i in range(n_chunks):
                    part = pq.ParquetFile(self.part(i))
                    stats = json.loads(part.schema_arrow.metadata[STATS_KEY])
                    examples.extend(stats.pop("skipped_examples", [])[: 10 - len(examples)])
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0) + value
                    for g in range(part.num_row_groups):
                        writer.write_table(part.read_row_group(g).cast(schema))

        atomic_write(self.out, write)
        shutil.rmtree(self.dir)
        self.lock_path.unlink(missing_ok=True)
        self.unlock()
        return {**totals, "skipped_examples": examples}

    def lock(self) -> None:
        """Take the job's lock; a DataError if another live job holds it."""
        if self._lock is not None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataError(f"{self.out}: another carousel job is writing this output (it holds {self.lock_path})")
        self._lock = handle

    def unlock(self) -> None:
        """Release the job's lock (a no-op when not held)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _check(self, found: dict, expected: dict) -> None:
        """Refuse to resume a job started with other inputs."""
        differ = sorted(key for key in expected.keys() | found.keys() if found.get(key) != expected.get(key))
        if differ:
            details = "; ".join(f"{key}: was {found.get(key)!r}, now {expected.get(key)!r}" for key in differ)
            raise DataError(
                f"{self.dir}: an unfinished carousel job with other inputs is here ({details}); "
                "pass overwrite to discard it, or rerun with the same inputs to resume"
            )


