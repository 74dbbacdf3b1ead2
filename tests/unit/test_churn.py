"""SID churn between codebook versions: exact metrics on hand-made tables, the migration table, errors,
stable retraining from a previous codebook on a grown catalog, and the ``genrec semid churn`` command."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.cli import main
from semid.churn import MIGRATION_SCHEMA, carry_over_sids, format_churn, migration_table, sid_churn
from semid.common import DataError
from semid.sids import assign_sids, codebook_version_of, collision_summary, sid_table
from semid.store import write_sids
from semid.train import SemIDConfig, train_codebook


def table(rows: list[tuple[int, list[int], int, bool]], version: str = "v") -> pa.Table:
    """SID table from (item_id, codes, dedup, shared) rows."""
    ids = np.array([r[0] for r in rows])
    codes = np.array([r[1] for r in rows])
    return sid_table(ids, codes, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]), version)


# old -> new: 1 kept; 2 moves at level 2; 3 keeps codes + dedup but loses its "_0" suffix (4 left its
# group); 4 moves at level 1; 7 and 8 swap dedup indices; 5 removed; 6 added
OLD = table([(4, [5, 6, 7], 1, True), (1, [1, 2, 3], 0, False), (2, [1, 2, 4], 0, False),
             (3, [5, 6, 7], 0, True), (5, [9, 9, 9], 0, False), (7, [3, 3, 3], 1, True),
             (8, [3, 3, 3], 0, True)], "old1")
NEW = table([(1, [1, 2, 3], 0, False), (2, [1, 3, 4], 0, False), (3, [5, 6, 7], 0, False),
             (4, [8, 6, 7], 0, False), (6, [0, 0, 0], 0, False), (7, [3, 3, 3], 0, True),
             (8, [3, 3, 3], 1, True)], "new2")


def test_churn_metrics_exact():
    r = sid_churn(OLD, NEW)
    assert (r["common"], r["only_old"], r["only_new"], r["levels"]) == (6, 1, 1, 3)
    assert r["prefix_changed"] == pytest.approx([1 / 6, 2 / 6, 2 / 6])  # 4 at level 1; 2 and 4 by level 2
    assert r["full_sid_changed"] == pytest.approx(4 / 6)  # 2, 4 (codes), 7, 8 (dedup)
    assert r["sid_unchanged"] == pytest.approx(1 / 6)  # only 1: 3's string lost its suffix
    assert (r["old_version"], r["new_version"]) == ("old1", "new2")
    same = sid_churn(OLD, OLD)
    assert same["prefix_changed"] == [0.0] * 3 and same["full_sid_changed"] == 0.0 and same["sid_unchanged"] == 1.0


def test_migration_table_statuses():
    m = migration_table(OLD, NEW)
    assert m.schema.equals(MIGRATION_SCHEMA)
    rows = {r["item_id"]: r for r in m.to_pylist()}
    assert m.column("item_id").to_pylist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {i: r["status"] for i, r in rows.items()} == {
        1: "kept", 2: "moved", 3: "moved", 4: "moved", 5: "removed", 6: "added", 7: "moved", 8: "moved"}
    assert [rows[i]["changed"] for i in range(1, 9)] == [False] + [True] * 7
    assert (rows[3]["old_sid"], rows[3]["new_sid"]) == ("5_6_7_0", "5_6_7")
    assert (rows[5]["old_sid"], rows[5]["new_sid"]) == ("9_9_9", None)
    assert (rows[6]["old_sid"], rows[6]["new_sid"]) == (None, "0_0_0")


def test_format_churn_lists_every_level():
    text = format_churn(sid_churn(OLD, NEW))
    assert "old1 -> new2" in text and "6 in both, 1 only old, 1 only new" in text
    assert [line.split()[:2] for line in text.splitlines()[3:6]] == [["1", "16.67%"], ["2", "33.33%"], ["3", "33.33%"]]
    assert "66.67%" in text and "16.67%" in text.splitlines()[-1]


def test_churn_errors():
    two_levels = table([(1, [1, 2], 0, False)])
    with pytest.raises(DataError, match="3 levels, new SIDs have 2"):
        sid_churn(OLD, two_levels)
    with pytest.raises(DataError, match="no product is in both"):
        sid_churn(OLD, table([(99, [1, 2, 3], 0, False)]))
    repeated = pa.concat_tables([NEW, NEW.slice(0, 1)])
    with pytest.raises(DataError, match="repeats item_id"):
        sid_churn(OLD, repeated)
    with pytest.raises(DataError, match="lacks columns"):
        migration_table(OLD.drop_columns(["sid"]), NEW)


def test_carry_over_keeps_unchanged_products_sids():
    """Products whose codes survive keep their SID string and dedup index; newcomers and movers take the next
    free index of their group; every full SID stays unique."""
    ids = np.array([1, 2, 3, 4, 6, 7, 8, 9])
    codes = np.array([[1, 2, 3], [5, 6, 7], [5, 6, 7], [8, 6, 7], [1, 2, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])
    t = carry_over_sids(OLD, ids, codes, "v2")
    assert codebook_version_of(t) == "v2" and t.column("item_id").to_pylist() == ids.tolist()
    rows = {r["item_id"]: (r["sid"], r["dedup"]) for r in t.to_pylist()}
    assert rows[1] == ("1_2_3", 0)  # kept, alone before: no suffix even though 6 joins its codes
    assert rows[6] == ("1_2_3_1", 1)  # added into 1's group
    assert rows[3] == ("5_6_7_0", 0) and rows[4] == ("8_6_7", 0)  # 3 kept; 4 moved alone
    assert rows[2] == ("5_6_7_1", 1)  # moved into 3's group (4 left it): next index after the kept ones
    assert rows[7] == ("3_3_3_1", 1) and rows[8] == ("3_3_3_0", 0) and rows[9] == ("3_3_3_2", 2)
    assert collision_summary(t)["full_sid_unique"]
    r = sid_churn(OLD, t)
    assert r["full_sid_changed"] == pytest.approx(2 / 6) and r["sid_unchanged"] == pytest.approx(4 / 6)
    fresh = carry_over_sids(OLD.slice(0, 0), ids, codes)
    assert fresh.equals(assign_sids(ids, codes))  # nothing to carry over: plain assignment
    with pytest.raises(DataError, match="levels"):
        carry_over_sids(OLD, ids, codes[:, :2])
    with pytest.raises(DataError, match="repeat"):
        carry_over_sids(OLD, np.array([1, 1]), codes[:2])


def clustered(n_clusters=12, per=110, dim=24, seed=0):
    """Products around cluster centres, each cluster its own category."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(n_clusters, dim))
    x = np.repeat(centres, per, axis=0) + rng.normal(size=(n_clusters * per, dim))
    paths = [[f"c{k}"] for k in np.repeat(np.arange(n_clusters), per)]
    return x.astype(np.float32), paths


def test_retrain_from_init_keeps_sids_on_a_grown_catalog():
    """Catalog + 10% new products, new seed: starting from the old codebook keeps far more SIDs than a
    fresh retrain, whose codes are an arbitrary relabelling."""
    x, paths = clustered()
    ids = np.arange(len(x)) + 100
    first = np.sort(np.random.default_rng(0).permutation(len(x))[: int(0.9 * len(x))])
    cfg = SemIDConfig(codebook_sizes=[8, 16, 32], hidden_dims=[32], latent_dim=8, epochs=6, batch_size=128,
                      progress=False, threads=1, seed=0)
    base, _ = train_codebook(x[first], [paths[i] for i in first], cfg)
    old = assign_sids(ids[first], base.encode(x[first]))
    retrain = SemIDConfig(**{**cfg.__dict__, "seed": 1})
    fresh, _ = train_codebook(x, paths, retrain)
    warm, history = train_codebook(x, paths, retrain, init=base)
    assert len(history) == retrain.init_epochs  # continuing: the short schedule, not epochs
    fresh_churn = sid_churn(old, assign_sids(ids, fresh.encode(x)))
    warm_churn = sid_churn(old, assign_sids(ids, warm.encode(x)))
    assert warm_churn["common"] == len(first) and warm_churn["only_new"] == len(x) - len(first)
    assert warm_churn["prefix_changed"][0] < 0.05 < 0.5 < fresh_churn["prefix_changed"][0]
    assert all(w < f for w, f in zip(warm_churn["prefix_changed"], fresh_churn["prefix_changed"]))
    assert warm_churn["sid_unchanged"] > fresh_churn["sid_unchanged"]
    carried = sid_churn(old, carry_over_sids(old, ids, warm.encode(x)))
    assert carried["prefix_changed"] == warm_churn["prefix_changed"]
    assert carried["full_sid_changed"] == pytest.approx(carried["prefix_changed"][-1])  # no dedup reshuffle
    assert carried["full_sid_changed"] < warm_churn["full_sid_changed"]


def test_init_schedule_is_checked():
    x, paths = clustered(n_clusters=4, per=20)
    with pytest.raises(ValueError, match="semid.init_epochs: must be >= 1, got 0"):
        train_codebook(x, paths, SemIDConfig(codebook_sizes=[4, 4], init_epochs=0, progress=False))


def test_cli_churn(tmp_path, capsys):
    for name, t in (("old", OLD), ("new", NEW)):
        (tmp_path / name).mkdir()
        write_sids(tmp_path / name, t, f"{name}-version")
    out, report = tmp_path / "m" / "migration.parquet", tmp_path / "churn.json"
    rc = main(["semid", "churn", "--old", str(tmp_path / "old"), "--new", str(tmp_path / "new"),
               "--out", str(out), "--json", str(report)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "old-version -> new-version" in printed and "1 kept, 5 moved, 1 added, 1 removed" in printed
    assert pq.read_table(out).equals(migration_table(OLD, NEW))
    saved = json.loads(report.read_text())
    assert saved["prefix_changed"] == pytest.approx([1 / 6, 2 / 6, 2 / 6])
    assert saved["old"] == str(tmp_path / "old") and saved["common"] == 6
    assert main(["semid", "churn", "--old", str(tmp_path / "missing"), "--new", str(tmp_path / "new")]) == 2
    assert "missing" in capsys.readouterr().err


def test_semid_train_from_an_earlier_run_keeps_most_sids(tiny_run, tmp_path):
    """build_semids(init_run=...) (what `genrec semid train --init-from` runs) keeps most products' whole
    SID under a new seed, where a fresh retrain with that seed keeps almost none."""
    import dataclasses

    from genrec.run.semids import build_semids, churn_between

    root, cfg = tiny_run
    reseeded = dataclasses.replace(cfg, semid=dataclasses.replace(cfg.semid, seed=1))
    build_semids(root / "data", reseeded, tmp_path / "warm", init_run=root / "run")
    build_semids(root / "data", reseeded, tmp_path / "fresh")
    warm, table = churn_between(root / "run", tmp_path / "warm")
    fresh, _ = churn_between(root / "run", tmp_path / "fresh")
    assert warm["sid_unchanged"] >= 0.8 > fresh["sid_unchanged"]
    assert set(table.column("status").to_pylist()) <= {"kept", "moved"}


def test_init_from_a_run_with_other_embeddings_is_a_clear_error(tiny_run, tmp_path):
    import dataclasses

    from genrec.run.semids import build_semids
    from semid.common import DataError

    root, cfg = tiny_run
    wider = dataclasses.replace(cfg, embedding=dataclasses.replace(cfg.embedding, collab_weight=0.3, collab_dim=4))
    with pytest.raises(DataError, match="init-from .* retrain fresh"):
        build_semids(root / "data", wider, tmp_path / "run", init_run=root / "run")
