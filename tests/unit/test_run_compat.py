"""A run folder made by older code (``tests/fixtures/run-v1``, trained before ``genrec/`` was regrouped)
still loads, retrieves, serves and evaluates, with the results pinned in ``expected.json``.

The pinned lists may change only with an intended change of the ``weighted`` ranker's lists, and only through
``GENREC_REGENERATE_GOLDEN=1 .venv/bin/python tests/fixtures/run-v1/regenerate_expected.py`` (its docstring says
what may and may not move them); the old run itself is never rebuilt."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run-v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A copy of the fixture (nothing may write into the repository); its data beside the run."""
    root = tmp_path_factory.mktemp("run-v1")
    shutil.copytree(FIXTURE / "data", root / "data")
    shutil.copytree(FIXTURE / "run", root / "run")
    return root


@pytest.fixture(scope="module")
def regenerate(load_script):
    """``tests/fixtures/run-v1/regenerate_expected.py`` as a module: what rewrites ``expected.json``."""
    return load_script("tests/fixtures/run-v1/regenerate_expected.py")


@pytest.fixture(scope="module")
def regenerated(regenerate, old_run) -> dict:
    """What the regeneration command would write with the code as it is (nothing is written)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return regenerate.expected(old_run)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def retriever(old_run):
    from genrec import Retriever

    return Retriever.from_run(old_run / "run")


def _same_lists(got: list[list], want: list[list]) -> None:
    """The same products and SIDs in the same order, scores to 1e-4 (a change here that is meant: see the
    module docstring)."""
    for g, w in zip(got, want, strict=True):
        assert [c[:2] for c in g] == [c[:2] for c in w]
        assert np.allclose([c[2] for c in g], [c[2] for c in w], atol=1e-4)


def test_old_run_loads_with_its_versions(retriever):
    assert retriever.codebook_version == EXPECTED["codebook_version"]
    assert retriever.model_version == EXPECTED["model_version"]
    assert retriever.memory is not None  # the run's co-purchase memory was read
    assert retriever.ranker is None  # a run from before the rank stage ranks with ``weighted``


@pytest.mark.parametrize("case", range(len(EXPECTED["retrieve"])))
def test_old_run_retrieves_what_it_did(retriever, case, one_thread):
    want = EXPECTED["retrieve"][case]
    lists = retriever.retrieve(want["histories"], retailer_id=want["retailer_id"], k=10,
                               exclude_history=want["exclude_history"])
    _same_lists([[[c.item_id, c.sid, c.score] for c in row] for row in lists], want["items"])
    assert {c.source for row in lists for c in row} <= {"generated", "similar", "new product"}


def test_old_run_serves(old_run, retriever, one_thread):
    from fastapi.testclient import TestClient

    from genrec.serve.app import create_app
    from genrec.serve.settings import ServeSettings

    want = EXPECTED["retrieve"][1]
    with TestClient(create_app(old_run / "run", ServeSettings(log_level="warning", dtype="float32"))) as client:
        assert client.get("/healthz").status_code == 200
        for history in want["histories"]:
            r = client.post("/v1/retrieve", json={"history": history, "retailer_id": want["retailer_id"], "k": 10,
                                                  "exclude_history": want["exclude_history"]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["codebook_version"] == EXPECTED["codebook_version"]
            # one history alone (the expected lists were decoded as a padded batch of four, whose scores
            # differ in the third decimal): what the retriever gives for it alone
            alone = retriever.retrieve([history], retailer_id=want["retailer_id"], k=10,
                                       exclude_history=want["exclude_history"])[0]
            _same_lists([[[i["item_id"], i["sid"], i["score"]] for i in body["items"]]],
                        [[[c.item_id, c.sid, c.score] for c in alone]])


def test_old_run_evaluates_as_it_did(regenerated):
    _close(regenerated["eval"], EXPECTED["eval"])


def test_the_pinned_lists_change_only_through_their_command(regenerate, regenerated, monkeypatch, capsys):
    """Without ``GENREC_REGENERATE_GOLDEN=1`` the regeneration command refuses and writes nothing; with the code
    as it is, it would write what is pinned (so the command and these tests read the same results)."""
    monkeypatch.delenv(regenerate.GUARD, raising=False)
    before = (FIXTURE / "expected.json").read_bytes()
    assert regenerate.main() == 2
    assert "refusing" in capsys.readouterr().err
    assert (FIXTURE / "expected.json").read_bytes() == before
    assert (regenerated["codebook_version"], regenerated["model_version"]) == (
        EXPECTED["codebook_version"], EXPECTED["model_version"])
    for got, want in zip(regenerated["retrieve"], EXPECTED["retrieve"], strict=True):
        assert {k: got[k] for k in ("histories", "retailer_id", "exclude_history")} == {
            k: want[k] for k in ("histories", "retailer_id", "exclude_history")}
        _same_lists(got["items"], want["items"])


def _close(got, want, where: str = "") -> None:
    """Nested dicts equal, floats to 1e-6."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _close(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-6, nan_ok=True), where
    else:
        assert got == want, where
