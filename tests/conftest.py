"""Shared fixtures: where the real data lives (skip when absent), the real imports done once per test
session, a writer for small csv / text files, plain or gzip, the repository's scripts as modules, a gate on
a server's decodes; and the slow tier's per-test timeout. Helpers that are not fixtures: ``tests/helpers``."""
from __future__ import annotations

import gzip
import importlib.util
import sys
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
SLOW_TIMEOUT_S = 1800  # per slow test (pytest-timeout); the fast tier's 300 s is set in pyproject.toml


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests get ``SLOW_TIMEOUT_S`` instead of the fast tier's timeout, unless they set their own."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def load_script():
    """``load_script("benchmarks/quality.py")``: a repository script imported as a module (registered in
    sys.modules under its own name, so its dataclasses resolve)."""
    def load(relative: str):
        path = REPO / relative
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other work for the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data from the repo root); tests needing it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def write_file(folder: Path, name: str, text: str, gz: bool) -> Path:
    """Write ``text`` to ``folder/name`` (``name.gz`` gzip-compressed when ``gz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if gz:
        path = folder / f"{name}.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path = folder / name
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_file():
    """``write_file`` as a fixture, for tests that build small raw data sets in tmp_path."""
    return write_file


@pytest.fixture(scope="session")
def instacart_import(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real Instacart data imported once (no retailers): (dataset, output folder, seconds taken)."""
    from genrec.data.importers.instacart import import_instacart

    out = tmp_path_factory.mktemp("instacart") / "ds"
    start = time.perf_counter()
    ds = import_instacart(shared_data / "instacart", out)
    return ds, out, time.perf_counter() - start


@pytest.fixture(scope="session")
def beauty_import(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real Amazon Beauty data imported once: (dataset, output folder, seconds taken)."""
    from genrec.data.importers.amazon import import_amazon

    out = tmp_path_factory.mktemp("beauty") / "ds"
    start = time.perf_counter()
    ds = import_amazon(shared_data / "amazon-beauty", out)
    return ds, out, time.perf_counter() - start


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run (SIDs, tokenizer, index, decoder) trained in seconds on a tiny synthetic world with 2
    retailers; returns (root, cfg) with root/"data" the dataset and root/"run" the run folder."""
    from genrec.run.build import train_run
    from genrec.run.tiny import tiny_config, tiny_world

    root = tmp_path_factory.mktemp("tiny")
    tiny_world().write(root / "data")
    cfg = tiny_config("tiny")
    train_run(root / "data", cfg, root / "run")
    return root, cfg


@pytest.fixture
def gate(monkeypatch):
    """The served app's decodes held on a ``helpers.serving.Gate`` until ``gate.release.set()``; released at
    the end whatever happened, so no server's decode thread stays stuck."""
    import genrec.serve.batcher as batcher_module
    from helpers.serving import Gate

    g = Gate()
    monkeypatch.setattr(batcher_module, "_decode", g)
    yield g
    g.release.set()
