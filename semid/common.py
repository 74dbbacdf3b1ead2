"""Plumbing every package borrows (a leaf: it imports nothing of ours): the error for input data that breaks
a contract, atomic writes of files and folders (one temporary-name scheme), JSON conversion, torch's CPU
thread count for a block of work, and the row index of ragged arrays."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


class DataError(ValueError):
    """Input data that breaks a contract; the message names the file and the problem."""


# ----- atomic writes: write under a temporary sibling name, then rename into place -----------------------------

TEMP_MARK = ".tmp"  # every temporary sibling is ``.{name}.tmp...``: a crash leaves only hidden, recognisable litter


def temp_sibling(path: Path, shared: bool = False) -> Path:
    """The temporary name ``path`` is written under: ``.{name}.tmp-{pid}`` (one writer per process), or
    ``.{name}.tmp`` when ``shared`` (several processes write into it, one renames it)."""
    return path.with_name(f".{path.name}{TEMP_MARK}" if shared else f".{path.name}{TEMP_MARK}-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary sibling of ``path``, then rename it into place, so a crash never leaves
    a half-written file."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_dir(tmp: Path, path: Path) -> Path:
    """Put the finished folder ``tmp`` where ``path`` is (removing what was there)."""
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def atomic_dir(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a fresh temporary folder beside ``path``, then put it in place of ``path``; on any
    failure the temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}-", dir=path.parent))
    try:
        write(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ----- JSON --------------------------------------------------------------------------------------------------


def jsonable(value):
    """Numbers, strings, lists and dicts only: numpy scalars and arrays, torch tensors and tuples converted,
    dict keys made strings, callables in dicts (a scheduler's lambdas, rebuilt from config) dropped."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return value.tolist()
    return value


def write_json(obj, path: str | Path, indent: int | None = 2, sort_keys: bool = False, newline: bool = False) -> Path:
    """Write ``obj`` as JSON atomically (``jsonable`` first; anything else left is written as its str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, default=str) + ("\n" if newline else "")
    return atomic_write(path, lambda p: p.write_text(text))


# ----- compute -----------------------------------------------------------------------------------------------


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0 or None: unchanged), restoring the previous count afterwards; one
    thread is often fastest on a small, busy machine."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ragged_rows(offsets: np.ndarray) -> np.ndarray:
    """Row index of every flat element of a ragged array."""
    return np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
