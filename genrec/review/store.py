"""The review queue's database (SQLite, stdlib ``sqlite3``): the audit cases of the current codebook and the
reviewers' decisions, which outlive both a server restart and a new codebook.

A case is what a reviewer judges: a product, its category label and the majority label of its SID
neighbourhood. Loading the audit of a new codebook replaces the cases; a decision stays current for a product
whose (label, majority label) did not change and is kept, marked not current, for one whose case changed or
left the queue. Every write is its own ``BEGIN IMMEDIATE`` transaction and is also appended to
``decision_log``, so two reviewers never lose a decision; a reviewer who sends the ``base_version`` they saw
is refused (``Conflict``) when someone decided the same product since."""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa

DECISIONS = ("label_wrong", "code_wrong", "ambiguous")
MAX_NOTE = 2000  # characters of a note
MAX_CATEGORY = 300  # characters of a proposed category

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
  item_id INTEGER PRIMARY KEY, rank INTEGER NOT NULL, title TEXT NOT NULL, label TEXT NOT NULL,
  majority_label TEXT NOT NULL, confidence REAL NOT NULL, n_neighbours INTEGER NOT NULL,
  example_neighbours TEXT NOT NULL, sid TEXT NOT NULL, case_key TEXT NOT NULL, codebook_version TEXT
);
CREATE TABLE IF NOT EXISTS decisions (
  item_id INTEGER PRIMARY KEY, decision TEXT NOT NULL, proposed_category TEXT, note TEXT NOT NULL DEFAULT '',
  reviewer TEXT NOT NULL DEFAULT '', case_key TEXT NOT NULL, title TEXT NOT NULL, label TEXT NOT NULL,
  majority_label TEXT NOT NULL, sid TEXT NOT NULL, codebook_version TEXT, decided_at REAL NOT NULL,
  version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS decision_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER NOT NULL, decision TEXT NOT NULL,
  proposed_category TEXT, note TEXT NOT NULL, reviewer TEXT NOT NULL, case_key TEXT NOT NULL,
  decided_at REAL NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ReviewError(Exception):
    """A request the store refuses: ``status`` (HTTP-like), machine-readable ``code``, message."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def case_key(label: str, majority_label: str) -> str:
    """What a decision is about: the product's label against its neighbourhood's majority label."""
    return f"{label}\x1f{majority_label}"


@dataclass
class Decision:
    decision: str
    proposed_category: str | None = None
    note: str = ""
    reviewer: str = ""
    base_version: int | None = None  # the decision version the reviewer saw (0: none); None: no check

    def check(self) -> None:
        if self.decision not in DECISIONS:
            raise ReviewError(422, "unknown_decision", f"decision must be one of {list(DECISIONS)}, got {self.decision!r}")
        if len(self.note) > MAX_NOTE:
            raise ReviewError(422, "note_too_long", f"note has {len(self.note)} characters; at most {MAX_NOTE}")
        if self.decision == "label_wrong" and not (self.proposed_category or "").strip():
            raise ReviewError(422, "category_required", "a 'label_wrong' decision needs the proposed category")
        if self.proposed_category is not None and len(self.proposed_category) > MAX_CATEGORY:
            raise ReviewError(422, "category_too_long", f"proposed category over {MAX_CATEGORY} characters")


class ReviewStore:
    """The SQLite file at ``path``; a fresh connection per call, so threads share nothing but the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            if write:
                db.execute("BEGIN IMMEDIATE")  # one writer at a time; others wait (busy timeout), none is lost
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            else:
                yield db
        finally:
            db.close()

    # ----- the queue ----------------------------------------------------------------------------------

    def load_audit(self, audit: pa.Table, codebook_version: str | None) -> dict:
        """Replace the cases by ``audit`` (``semid.audit`` rows, ranked); returns how many decisions stay
        current (their case is unchanged) and how many no longer apply."""
        rows = audit.to_pylist()
        with self._connect(write=True) as db:
            db.execute("DELETE FROM cases")
            db.executemany(
                "INSERT INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(r["item_id"], rank, r["title"], r["label"], r["majority_label"], float(r["confidence"]),
                  int(r["n_neighbours"]), json.dumps(r["example_neighbours"] or []), r["sid"],
                  case_key(r["label"], r["majority_label"]), codebook_version) for rank, r in enumerate(rows)])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('codebook_version', ?)", (codebook_version or "",))
            kept = db.execute("SELECT COUNT(*) FROM decisions d JOIN cases c ON c.item_id = d.item_id "
                              "AND c.case_key = d.case_key").fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        return {"cases": len(rows), "decisions_current": kept, "decisions_stale": total - kept}

    def cases(self, offset: int = 0, limit: int = 50, status: str = "all") -> dict:
        """A page of the queue in rank order, each case with its current decision (or None)."""
        where = {"all": "", "open": "WHERE d.item_id IS NULL", "decided": "WHERE d.item_id IS NOT NULL"}[status]
        join = ("FROM cases c LEFT JOIN decisions d ON d.item_id = c.item_id AND d.case_key = c.case_key " + where)
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) {join}").fetchone()[0]
            rows = db.execute(f"SELECT c.*, d.decision, d.proposed_category, d.note, d.reviewer, d.decided_at, "
                              f"d.version {join} ORDER BY c.rank LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            decided = db.execute("SELECT COUNT(*) FROM cases c JOIN decisions d ON d.item_id = c.item_id "
                                 "AND d.case_key = c.case_key").fetchone()[0]
            n_cases = db.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        return {"total": total, "cases_total": n_cases, "decided": decided, "offset": offset,
                "cases": [_case(r) for r in rows]}

    def case(self, item_id: int) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT c.*, d.decision, d.proposed_category, d.note, d.reviewer, d.decided_at, "
                             "d.version FROM cases c LEFT JOIN decisions d ON d.item_id = c.item_id "
                             "AND d.case_key = c.case_key WHERE c.item_id = ?", (item_id,)).fetchone()
        if row is None:
            raise ReviewError(404, "unknown_item", f"product {item_id} is not in the review queue", item_id=item_id)
        return _case(row)

    def categories(self) -> list[str]:
        """Every label seen in the queue (what a proposed category is usually picked from)."""
        with self._connect() as db:
            rows = db.execute("SELECT label FROM cases UNION SELECT majority_label FROM cases ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    # ----- decisions ----------------------------------------------------------------------------------

    def decide(self, item_id: int, d: Decision) -> dict:
        """Record ``d`` for the product's current case (ReviewError 404 unknown product, 422 bad decision,
        409 when ``base_version`` is stale); returns the case with its decision."""
        d.check()
        now = time.time()
        with self._connect(write=True) as db:
            case = db.execute("SELECT * FROM cases WHERE item_id = ?", (item_id,)).fetchone()
            if case is None:
                raise ReviewError(404, "unknown_item", f"product {item_id} is not in the review queue", item_id=item_id)
            old = db.execute("SELECT version, case_key FROM decisions WHERE item_id = ?", (item_id,)).fetchone()
            seen = old["version"] if old is not None and old["case_key"] == case["case_key"] else 0
            if d.base_version is not None and d.base_version != seen:
                raise ReviewError(409, "conflict", f"product {item_id} was decided by someone else since you "
                                  f"loaded it (version {seen}, you saw {d.base_version}); reload and decide again",
                                  current_version=seen)
            version = (old["version"] if old is not None else 0) + 1
            category = d.proposed_category.strip() if d.proposed_category else None
            db.execute("INSERT OR REPLACE INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (item_id, d.decision, category, d.note, d.reviewer, case["case_key"], case["title"],
                        case["label"], case["majority_label"], case["sid"], case["codebook_version"], now, version))
            db.execute("INSERT INTO decision_log (item_id, decision, proposed_category, note, reviewer, case_key, "
                       "decided_at, version) VALUES (?,?,?,?,?,?,?,?)",
                       (item_id, d.decision, category, d.note, d.reviewer, case["case_key"], now, version))
        return self.case(item_id)

    def log(self) -> list[dict]:
        """Every decision ever written, oldest first."""
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM decision_log ORDER BY id")]

    def export(self) -> pa.Table:
        """Every product's latest decision, with whether it still applies to the current queue."""
        with self._connect() as db:
            rows = db.execute("SELECT d.*, (c.item_id IS NOT NULL) AS current FROM decisions d LEFT JOIN cases c "
                              "ON c.item_id = d.item_id AND c.case_key = d.case_key ORDER BY d.item_id").fetchall()
        cols = {
            "item_id": pa.int64(), "title": pa.string(), "label": pa.string(), "majority_label": pa.string(),
            "sid": pa.string(), "decision": pa.string(), "proposed_category": pa.string(), "note": pa.string(),
            "reviewer": pa.string(), "codebook_version": pa.string(), "decided_at": pa.timestamp("s", tz="UTC"),
            "version": pa.int32(), "current": pa.bool_(),
        }
        data = {name: [r[name] for r in rows] for name in cols}
        data["decided_at"] = [int(t) for t in data["decided_at"]]
        data["current"] = [bool(v) for v in data["current"]]
        return pa.table({name: pa.array(data[name], type=t) for name, t in cols.items()})


def _case(row: sqlite3.Row) -> dict:
    decision = None
    if row["decision"] is not None:
        decision = {"decision": row["decision"], "proposed_category": row["proposed_category"], "note": row["note"],
                    "reviewer": row["reviewer"], "decided_at": row["decided_at"], "version": row["version"]}
    return {"item_id": row["item_id"], "rank": row["rank"] + 1, "title": row["title"], "label": row["label"],
            "majority_label": row["majority_label"], "confidence": row["confidence"],
            "n_neighbours": row["n_neighbours"], "example_neighbours": json.loads(row["example_neighbours"]),
            "sid": row["sid"], "decision": decision}
