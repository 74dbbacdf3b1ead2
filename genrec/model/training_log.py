"""The decoder's training log as it happens: one JSON line per epoch end (with the mean training loss of
the epoch's steps) and per validation, appended to ``history.jsonl`` in the trainer's output folder, so a
report or a person can follow a run that is still training (``tail -f``)."""
from __future__ import annotations

import json
from pathlib import Path

from genrec.run.layout import HISTORY_FILE, RESULT_FILE


class LossMeter:
    """Sums the training loss of the steps since the last ``take`` without reading it back from the device
    on every step (one read per epoch)."""

    def __init__(self) -> None:
        self.total, self.steps = 0.0, 0

    def add(self, loss) -> None:
        self.total, self.steps = self.total + loss, self.steps + 1

    def take(self) -> dict:
        """``{"train_loss": mean}`` of the steps since the last call (empty when there were none)."""
        out = {"train_loss": float(self.total) / self.steps} if self.steps else {}
        self.total, self.steps = 0.0, 0
        return out


def append_record(out: str | Path, record: dict, enabled: bool = True) -> None:
    """Append ``record`` as one JSON line to ``out/history.jsonl`` (only where ``enabled``: the main process)."""
    if not enabled:
        return
    with open(Path(out) / HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_training_log(decoder_dir: str | Path) -> list[dict]:
    """The records of the latest training in ``decoder_dir``: ``history.jsonl`` (records before a restart,
    where the step count goes back, are dropped; a resumed epoch's record replaces its earlier copy), else
    the history in ``train_result.json`` of runs trained before the file existed; [] when neither is there."""
    path = Path(decoder_dir) / HISTORY_FILE
    if path.is_file():
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        start = 0
        for i in range(1, len(records)):
            if records[i].get("step", 0) < records[i - 1].get("step", 0):
                start = i
        latest: dict = {}
        for r in records[start:]:
            latest[(r.get("epoch"), r.get("step"), "lr" in r)] = r
        return list(latest.values())
    result = Path(decoder_dir) / RESULT_FILE
    if result.is_file():
        return list(json.loads(result.read_text(encoding="utf-8")).get("history", []))
    return []
