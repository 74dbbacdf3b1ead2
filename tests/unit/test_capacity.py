"""The last-level cap (``semid.capacity``): crowded prefixes spread over the last codebook, by their residuals,
and nothing else moves."""
import numpy as np
import pyarrow as pa
import pytest

from semid.capacity import cap_last_level, kd_cells, place_new
from semid.codebook_config import SemIDConfig
from semid.common import DataError
from semid.train import train_codebook


def crowded(n=6000, k=32, dim=6, seed=0):
    """Codes whose prefix (a, b) decides the last code: prefix (0, 0) crowds 3,000 products onto one tuple,
    prefix (1, 2) holds 20 (under the cap). Residuals are noise around the codebook's own words."""
    rng = np.random.default_rng(seed)
    book = rng.normal(size=(k, dim)).astype(np.float32)
    codes = np.zeros((n, 3), np.int64)
    codes[3000:, 0] = rng.integers(2, 5, n - 3000)
    codes[3000:3020, :2] = (1, 2)
    codes[:, 2] = 7
    res = (book[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    return codes, res, book


def groups_of(codes):
    return np.unique(codes, axis=0, return_counts=True)[1]


def test_no_tuple_holds_more_than_the_cap_and_prefixes_keep_their_codes():
    codes, res, book = crowded()
    out = cap_last_level(codes, lambda rows: res[rows], book, 100)
    assert groups_of(out).max() <= 100
    assert (out[:, :2] == codes[:, :2]).all()
    small = (codes[:, 0] == 1)
    assert (out[small] == codes[small]).all()  # a prefix under the cap keeps its nearest codewords
    assert groups_of(codes).max() > 1000


def test_a_prefix_larger_than_cap_times_codebook_uses_every_codeword_evenly():
    codes, res, book = crowded(k=8)
    out = cap_last_level(codes, lambda rows: res[rows], book, 10)
    first = (codes[:, 0] == 0) & (codes[:, 1] == 0)
    counts = np.bincount(out[first, 2], minlength=8)
    assert counts.max() == -(-first.sum() // 8) and (counts > 0).all()


def test_cells_follow_the_residuals():
    """Each product lands near its codeword: a cap that numbered cells 0..m-1, or any choice blind to the
    residuals, puts products far from the words they are given."""
    codes, res, book = crowded()
    out = cap_last_level(codes, lambda rows: res[rows], book, 200)
    crowd = slice(0, 3000)
    given = ((res[crowd] - book[out[crowd, 2]]) ** 2).sum(1).mean()
    rng = np.random.default_rng(1)
    shuffled = ((res[crowd] - book[rng.permutation(out[crowd, 2])]) ** 2).sum(1).mean()
    assert given < 0.5 * shuffled


def test_only_crowded_rows_are_asked_for_residuals_and_it_is_deterministic():
    codes, res, book = crowded()
    asked = []
    out = cap_last_level(codes, lambda rows: asked.append(rows.copy()) or res[rows], book, 100)
    rows = np.sort(np.concatenate(asked))
    assert np.array_equal(rows, np.setdiff1d(np.arange(len(codes)), np.arange(3000, 3020)))
    again = cap_last_level(codes, lambda r: res[r], book, 100)
    assert (out == again).all()


def test_kd_cells_are_contiguous_balanced_and_exact_in_number():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4)).astype(np.float32)
    starts, sizes, parts = np.array([0, 300, 301]), np.array([300, 1, 699]), np.array([7, 1, 13])
    perm, cell_start = kd_cells(x, starts, sizes, parts)
    assert np.array_equal(np.sort(perm), np.arange(1000))
    cell_sizes = np.diff(np.r_[cell_start, 1000])
    assert cell_start.size == parts.sum()
    assert cell_sizes[:7].sum() == 300 and cell_sizes[:7].max() <= -(-300 // 7)
    assert cell_sizes[8:].max() <= -(-699 // 13) and cell_sizes.min() >= 1
    assert set(perm[:300].tolist()) == set(range(300))  # rows never leave their segment


def test_new_products_take_the_nearest_codeword_with_room():
    codes, res, book = crowded()
    capped = cap_last_level(codes, lambda rows: res[rows], book, 100)
    full_code = np.bincount(capped[:3000, 2]).argmax()
    new = np.array([[0, 0, full_code], [5, 5, 3]])
    new_res = np.stack([book[full_code], book[3]]).astype(np.float32)
    placed = place_new(new, new_res, book, capped, 100)
    assert placed[0, 2] != full_code  # its tuple is full: the next nearest with room
    dist = ((book - book[full_code]) ** 2).sum(1)
    load = np.bincount(capped[:3000, 2], minlength=len(book))
    dist[load >= 100] = np.inf
    assert placed[0, 2] == dist.argmin()
    assert (placed[1] == new[1]).all()  # a new prefix keeps its nearest codewords


def test_bad_capacity_is_refused():
    codes, res, book = crowded(n=3100)
    with pytest.raises(DataError, match="capacity"):
        cap_last_level(codes, lambda rows: res[rows], book, 0)
    with pytest.raises(ValueError, match="last_code_capacity"):
        SemIDConfig(last_code_capacity=-1)


def test_a_trained_codebook_caps_its_own_codes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(1, 16)) + 0.05 * rng.normal(size=(600, 16)),
                        rng.normal(size=(200, 16))]).astype(np.float32)
    paths = [["a", "a/x"]] * 600 + [["b", "b/y"]] * 200
    cfg = SemIDConfig(codebook_sizes=[4, 8, 16], hidden_dims=[32], latent_dim=8, epochs=2, batch_size=128,
                      progress=False, threads=1, last_code_capacity=20)
    model, _ = train_codebook(x, paths, cfg)
    nearest = model.encode(x)
    capped = model.capped(x, nearest)
    assert groups_of(capped).max() <= max(20, -(-600 // 16))
    assert (capped[:, :2] == nearest[:, :2]).all()
    assert groups_of(nearest).max() > groups_of(capped).max()


def test_one_pass_assignment_matches_the_two_pass_cap(monkeypatch):
    """``assign`` takes the residuals in the encoding pass: the codes and residuals of the second pass."""
    import semid.train as train

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(1, 16)) + 0.05 * rng.normal(size=(900, 16)),
                        rng.normal(size=(300, 16))]).astype(np.float32)
    cfg = SemIDConfig(codebook_sizes=[4, 8, 16], hidden_dims=[32], latent_dim=8, epochs=2, batch_size=128,
                      progress=False, threads=1, last_code_capacity=20)
    model, _ = train_codebook(x, None, cfg)
    monkeypatch.setattr(train, "ENCODE_ROWS", 500)  # several slices
    codes, residuals = model.encode_with_residuals(x)
    assert (codes == model.encode(x)).all()
    np.testing.assert_allclose(residuals, model.last_residuals(x, codes), atol=1e-5)
    assigned = model.assign(x)
    assert (assigned == model.capped(x, codes)).all()
    assert groups_of(assigned).max() < groups_of(codes).max()


def test_a_run_built_with_a_cap_keeps_its_tuples_under_it(tiny_run, tmp_path):
    """``semid.last_code_capacity`` reaches the run's SID table (what the tokenizer and decoder read)."""
    import dataclasses

    from genrec.run.semids import build_semids
    from semid.sids import codes_matrix

    root, cfg = tiny_run
    capped = dataclasses.replace(cfg, semid=dataclasses.replace(cfg.semid, last_code_capacity=1))
    stage = build_semids(root / "data", capped, tmp_path / "capped")
    plain = build_semids(root / "data", cfg, tmp_path / "plain")
    k = cfg.semid.codebook_sizes[-1]
    prefix = np.unique(codes_matrix(plain.sids)[:, :-1], axis=0, return_counts=True)[1]
    assert groups_of(codes_matrix(plain.sids)).max() > 1
    assert groups_of(codes_matrix(stage.sids)).max() <= max(1, -(-prefix.max() // k))
    assert stage.sids.column("dedup").to_numpy().max() < plain.sids.column("dedup").to_numpy().max()


def test_new_products_of_a_capped_run_go_where_there_is_room(tiny_run, tmp_path):
    """``genrec sids assign`` on a capped run: copies of crowded products (their twins' tuples are full at
    capacity 1) take other last-level codewords, where the uncapped run stacks them on their twins."""
    import dataclasses

    import pyarrow.parquet as pq

    from genrec.run.semids import assign_new_items, build_semids
    from semid.sids import codes_matrix

    root, cfg = tiny_run
    capped = dataclasses.replace(cfg, semid=dataclasses.replace(cfg.semid, last_code_capacity=1))
    build_semids(root / "data", capped, tmp_path / "capped")
    build_semids(root / "data", cfg, tmp_path / "plain")
    items = pq.read_table(root / "data" / "items.parquet").slice(0, 40)
    ids = items.column("item_id").to_numpy()
    twins = items.set_column(0, "item_id", pa.array(ids + 10_000_000, pa.int64()))
    pq.write_table(twins, tmp_path / "new.parquet")
    for name in ("capped", "plain"):
        run = tmp_path / name
        before = {tuple(c) for c in codes_matrix(pq.read_table(run / "sids.parquet")).tolist()}
        added = codes_matrix(assign_new_items(run, tmp_path / "new.parquet", capped if name == "capped" else cfg))
        stacked = np.mean([tuple(c) in before for c in added.tolist()])
        if name == "capped":
            assert stacked < 0.5
        else:
            assert stacked == 1.0
