"""Shared fixtures: where the real data lives, the real imports done once per test session, a writer for small
csv / text files, plain or gzip, the repository's scripts as modules, a gate on a server's decodes; the tiers
(each test gets its folder's marker) and the slow tier's per-test timeout. Helpers that are not fixtures:
``tests/helpers``.

Tiers, by folder: ``tests/unit`` (generated data, seconds), ``tests/integration`` (the real data in
``../shared/data``, through the ``shared_data`` fixture), ``tests/browser`` (pages in headless Chromium).
``slow`` is a marker across tiers; the default run (``pyproject.toml``'s addopts) leaves it out. Select a tier by
folder (``pytest tests/unit``) or marker (``pytest -m unit``, ``-m "integration or slow"``)."""
from __future__ import annotations

import gzip
import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the real data folder: ../shared/data from the repository root, or $GENREC_SHARED_DATA
SHARED_DATA = Path(os.environ.get("GENREC_SHARED_DATA") or REPO.parent / "shared" / "data")
REAL_DATASETS = ("instacart", "amazon-beauty")  # the folders the integration tier reads
REQUIRE_DATA_ENV = "GENREC_REQUIRE_DATA"  # "1": a real-data test without its data fails instead of skipping (CI)
TIERS = ("unit", "integration", "browser")  # tests/<tier>/...: the folder names the tier
SLOW_TIMEOUT_S = 1800  # per slow test (pytest-timeout); the fast tier's 300 s is set in pyproject.toml


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects, so the tier markers count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets its folder's tier marker (``tests/unit/test_layout.py`` checks every test file is in a
    tier folder); slow tests get ``SLOW_TIMEOUT_S`` instead of the fast tier's timeout, unless they set their
    own."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)
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
    """The real data folder (``SHARED_DATA``) holding ``REAL_DATASETS``. Without it a test skips, saying why;
    with ``GENREC_REQUIRE_DATA=1`` (``.ci/run``) it fails instead, so CI cannot pass with the real-data tests
    silently skipped."""
    missing = [name for name in REAL_DATASETS if not (SHARED_DATA / name).is_dir()]
    if missing:
        why = f"real data {', '.join(str(SHARED_DATA / m) for m in missing)} not found"
        if os.environ.get(REQUIRE_DATA_ENV) == "1":
            pytest.fail(f"{why}, and {REQUIRE_DATA_ENV}=1 requires it (set GENREC_SHARED_DATA to where it is)",
                        pytrace=False)
        pytest.skip(why)
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
