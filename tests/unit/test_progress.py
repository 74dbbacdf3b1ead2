"""Progress and logging as a user sees them: off a terminal a loop's progress is a few INFO lines (one per
quarter and one at the end), never carriage returns; on one it is a tqdm bar; the CLI shows other
libraries' INFO records only with -v."""
from __future__ import annotations

import logging

import pytest
from tqdm import tqdm

import semid.progress as progress_module
from semid.progress import LogProgress, progress


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_off_a_terminal_progress_is_a_line_per_quarter_and_one_at_the_end(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, "test.progress")
    with progress(348, "train", "steps", logger=logging.getLogger("test.progress")) as bar:
        assert isinstance(bar, LogProgress)
        for step in range(348):
            bar.update(1)
            if step == 100:
                bar.set_postfix(loss="2.836")
    lines = _messages(caplog)
    assert [line.split(",")[0] for line in lines] == [
        "train: 87/348 steps (25%)", "train: 174/348 steps (50%)", "train: 261/348 steps (75%)",
        "train: 348/348 steps (100%)"]
    assert lines[0].endswith("s") and lines[1].endswith("loss=2.836")


def test_a_resumed_or_cut_short_loop_says_where_it_stands(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, "test.progress")
    bar = progress(100, "train", "steps", initial=60, logger=logging.getLogger("test.progress"))
    bar.update(5)  # 65: no quarter crossed since 60
    bar.update(10)  # 75: the third quarter
    bar.close()  # stopped early at 75
    bar.close()  # closing twice says nothing more
    assert [line.split(",")[0] for line in _messages(caplog)] == ["train: 75/100 steps (75%)"] * 2


def test_on_a_terminal_a_bar_and_disabled_nothing(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    with progress(10, "train", "steps", logger=logging.getLogger("test.progress")) as bar:
        assert isinstance(bar, tqdm) and not bar.disable
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    quiet = progress(10, "train", "steps", enabled=False)
    assert isinstance(quiet, tqdm) and quiet.disable
    quiet.update(10)
    quiet.close()
    assert _messages(caplog) == []


@pytest.fixture
def fresh_logging(monkeypatch):
    """configure_logging on a clean root logger, restored afterwards (with what it may switch off off a
    terminal: Hugging Face's progress bars)."""
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = ("genrec", "semid", "index", "sentence_transformers")
    levels = {n: logging.getLogger(n).level for n in names}
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    root.handlers = []
    yield
    root.handlers, root.level = saved
    if bars:
        hf_logging.enable_progress_bar()
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_cli_logging_shows_other_libraries_info_only_when_verbose(fresh_logging):
    from genrec.cli import configure_logging

    configure_logging(verbose=False)
    assert logging.getLogger("genrec.model.train").isEnabledFor(logging.INFO)
    assert logging.getLogger("semid.embeddings").isEnabledFor(logging.INFO)
    assert not logging.getLogger("genrec.model.train").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("sentence_transformers.base.model").isEnabledFor(logging.INFO)
    assert logging.getLogger("sentence_transformers.base.model").isEnabledFor(logging.WARNING)
    logging.getLogger().handlers = []
    configure_logging(verbose=True)
    assert logging.getLogger("genrec.model.train").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("sentence_transformers.base.model").isEnabledFor(logging.INFO)
