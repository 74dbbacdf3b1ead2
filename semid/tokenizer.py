"""SID <-> token ids. The vocabulary is laid out in ranges so that a token id says what it is: special
tokens first, then each level's codewords in its own range, then the disambiguation range, then retailer
tokens. Every item is exactly L+1 tokens (codes, then its dedup token, 0 where the SID is unique), so the
decoder always generates an item in a fixed number of steps. Levels are 0-based here: level ``L`` is the
disambiguation level."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.catalog import read_json
from semid.common import DataError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")
PAD, BOS, EOS, SEP, UNK = range(len(SPECIAL_TOKENS))
SPECIAL_LEVEL = -1  # level_of() for special tokens
RETAILER_LEVEL = -2  # level_of() for retailer tokens
FORMAT = "genrec-sid-tokenizer"
FORMAT_VERSION = 1


class SIDTokenizer:
    """Maps (codes, dedup) to L+1 token ids and back; vectorised over batches; saved as JSON."""

    def __init__(
        self,
        codebook_sizes: Sequence[int],
        dedup_size: int,
        retailer_ids: Iterable[int] = (),
        codebook_version: str | None = None,
    ) -> None:
        sizes = [int(s) for s in codebook_sizes]
        if not sizes or min(sizes) < 1:
            raise DataError(f"tokenizer: codebook_sizes must be non-empty positive ints, got {sizes}")
        if int(dedup_size) < 1:
            raise DataError(f"tokenizer: dedup_size must be >= 1 (0 marks a unique SID), got {dedup_size}")
        retailers = np.asarray(sorted({int(r) for r in retailer_ids}), dtype=np.int64)
        self.codebook_sizes = sizes
        self.dedup_size = int(dedup_size)
        self.retailer_ids = retailers
        self.codebook_version = codebook_version
        # offsets[l] is the first id of level l (0..L-1 codes, L dedup, L+1 retailers); offsets[-1] = vocab
        widths = [len(SPECIAL_TOKENS), *sizes, self.dedup_size, retailers.size]
        self._offsets = np.cumsum(widths)  # level l starts at _offsets[l]
        self._sizes = np.asarray([*sizes, self.dedup_size], dtype=np.int64)

    @classmethod
    def from_sids(
        cls,
        sids: pa.Table,
        codebook_sizes: Sequence[int],
        capacity: int | None = None,
        retailer_ids: Iterable[int] = (),
        codebook_version: str | None = None,
    ) -> "SIDTokenizer":
        """Build from a SID table (columns codes, dedup): dedup range = max dedup + 1, or ``capacity``."""
        if "dedup" not in sids.column_names:
            raise DataError(f"sids table: missing column 'dedup' (has: {sids.column_names})")
        needed = int(pc.max(sids.column("dedup")).as_py() or 0) + 1
        if capacity is not None and capacity < needed:
            raise DataError(f"sids table: dedup capacity {capacity} is smaller than the {needed} needed")
        return cls(codebook_sizes, capacity or needed, retailer_ids, codebook_version)

    # ----- layout -------------------------------------------------------------------------------------

    @property
    def n_levels(self) -> int:
        """Number of codeword levels L (the disambiguation level is not counted)."""
        return len(self.codebook_sizes)

    @property
    def tokens_per_item(self) -> int:
        """Every item is L codeword tokens plus one disambiguation token."""
        return self.n_levels + 1

    @property
    def vocab_size(self) -> int:
        """Total number of token ids (special + codewords + disambiguation + retailers)."""
        return int(self._offsets[-1])

    @property
    def sid_vocab_size(self) -> int:
        """Token ids that spell SIDs (codewords of every level plus the disambiguation range)."""
        return int(self._sizes.sum())

    def level_range(self, level: int) -> tuple[int, int]:
        """Half-open id range [start, stop) of ``level`` (0..L-1 codewords, L disambiguation)."""
        if not 0 <= level <= self.n_levels:
            raise DataError(f"tokenizer: level {level} out of range 0..{self.n_levels}")
        return int(self._offsets[level]), int(self._offsets[level + 1])

    def retailer_range(self) -> tuple[int, int]:
        """Half-open id range of the retailer tokens (empty when built without retailers)."""
        return int(self._offsets[-2]), int(self._offsets[-1])

    def level_of(self, token_ids: int | np.ndarray) -> int | np.ndarray:
        """Level of each token (0..L); SPECIAL_LEVEL for special tokens, RETAILER_LEVEL for retailers."""
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise DataError(f"tokenizer: token ids must lie in 0..{self.vocab_size - 1}")
        level = np.searchsorted(self._offsets, ids, side="right") - 1
        level = np.where(level > self.n_levels, RETAILER_LEVEL, level)
        return int(level) if level.ndim == 0 else level

    # ----- codes <-> tokens ---------------------------------------------------------------------------

    def encode(self, codes: Sequence[int], dedup: int = 0) -> np.ndarray:
        """One item's codes (length L) and dedup index -> its L+1 token ids."""
        return self.encode_batch(np.asarray(codes)[None, :], np.asarray([dedup]))[0]

    def encode_batch(self, codes: np.ndarray, dedup: np.ndarray | None = None) -> np.ndarray:
        """codes (n, L) and dedup (n,) -> token ids (n, L+1), int64."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.n_levels:
            raise DataError(f"tokenizer: codes must have shape (n, {self.n_levels}), got {codes.shape}")
        dedup = np.zeros(len(codes), np.int64) if dedup is None else np.asarray(dedup).reshape(-1)
        if dedup.shape[0] != codes.shape[0]:
            raise DataError(f"tokenizer: {codes.shape[0]} code rows but {dedup.shape[0]} dedup values")
        full = np.concatenate([codes.astype(np.int64), dedup.astype(np.int64)[:, None]], axis=1)
        self._check_range(full)
        return full + self._offsets[: self.n_levels + 1]

    def decode(self, tokens: Sequence[int]) -> tuple[tuple[int, ...], int]:
        """One item's L+1 token ids -> (codes, dedup)."""
        codes, dedup = self.decode_batch(np.asarray(tokens)[None, :])
        return tuple(int(c) for c in codes[0]), int(dedup[0])

    def decode_batch(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (n, L+1) -> codes (n, L) and dedup (n,), int32; a token at the wrong level raises."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[1] != self.tokens_per_item:
            width = self.tokens_per_item
            raise DataError(f"tokenizer: tokens must have shape (n, {width}), got {tokens.shape}")
        full = tokens - self._offsets[: self.n_levels + 1]
        bad = (full < 0) | (full >= self._sizes)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(
                f"tokenizer: token {tokens[row, col]} at position {col} of item {row} is not a level-{col} "
                f"token (level {col} spans {tuple(self.level_range(int(col)))})"
            )
        return full[:, :-1].astype(np.int32), full[:, -1].astype(np.int32)

    def encode_retailer(self, retailer_ids: int | np.ndarray) -> int | np.ndarray:
        """Retailer id(s) -> retailer token id(s); an unknown retailer raises."""
        ids = np.asarray(retailer_ids, dtype=np.int64)
        pos = np.searchsorted(self.retailer_ids, ids)
        known = np.isin(ids, self.retailer_ids)
        if not np.all(known):
            missing = np.atleast_1d(ids)[~np.atleast_1d(known)]
            raise DataError(f"tokenizer: unknown retailer id(s) {missing[:5].tolist()}")
        out = pos + self._offsets[-2]
        return int(out) if out.ndim == 0 else out

    def decode_retailer(self, token_ids: int | np.ndarray) -> int | np.ndarray:
        """Retailer token id(s) -> retailer id(s)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        start, stop = self.retailer_range()
        if ids.size and (ids.min() < start or ids.max() >= stop):
            raise DataError(f"tokenizer: retailer tokens lie in [{start}, {stop}), got {ids.ravel()[:5]}")
        out = self.retailer_ids[ids - start]
        return int(out) if out.ndim == 0 else out

    def _check_range(self, full: np.ndarray) -> None:
        bad = (full < 0) | (full >= self._sizes)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            what = "dedup index" if col == self.n_levels else f"level-{col} code"
            raise DataError(
                f"tokenizer: {what} {full[row, col]} of item {row} is out of range 0..{self._sizes[col] - 1}"
            )

    # ----- SID strings --------------------------------------------------------------------------------

    def parse_sid(self, sid: str) -> tuple[tuple[int, ...], int]:
        """``"6_19_32_63"`` -> (codes, 0); ``"6_19_32_63_2"`` -> (codes, 2)."""
        codes, dedup = self.parse_sids([sid])
        return tuple(int(c) for c in codes[0]), int(dedup[0])

    def parse_sids(self, sids: Sequence[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Many SID strings -> codes (n, L) int32 and dedup (n,) int32, range-checked."""
        arr = pa.array(sids, type=pa.string()) if not isinstance(sids, (pa.Array, pa.ChunkedArray)) else sids
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            raise DataError(f"tokenizer: {arr.null_count} empty SID strings")
        parts = pc.split_pattern(arr, "_")
        lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        bad = (lengths != self.n_levels) & (lengths != self.n_levels + 1)
        if bad.any():
            raise DataError(
                f"tokenizer: SID {arr[int(np.argmax(bad))].as_py()!r} has {lengths[bad][0]} parts; expected "
                f"{self.n_levels} (unique SID) or {self.n_levels + 1} (with disambiguation index)"
            )
        values = self._parse_ints(parts.flatten(), arr, lengths)
        full = np.zeros((len(arr), self.n_levels + 1), np.int64)
        rows = np.repeat(np.arange(len(arr)), lengths)
        cols = np.arange(values.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        full[rows, cols] = values
        try:
            self._check_range(full)
        except DataError as e:
            row = int(np.argwhere((full < 0) | (full >= self._sizes))[0, 0])
            raise DataError(f"{e} (SID {arr[row].as_py()!r})") from None
        return full[:, :-1].astype(np.int32), full[:, -1].astype(np.int32)

    @staticmethod
    def _parse_ints(flat: pa.Array, arr: pa.Array, lengths: np.ndarray) -> np.ndarray:
        ok = pc.match_substring_regex(flat, r"^[0-9]{1,9}$").to_numpy(zero_copy_only=False)
        if not ok.all():
            row = int(np.searchsorted(np.cumsum(lengths), int(np.argmin(ok)), side="right"))
            raise DataError(f"tokenizer: malformed SID {arr[row].as_py()!r}: parts must be non-negative ints")
        return pc.cast(flat, pa.int64()).to_numpy()

    def format_sid(self, codes: Sequence[int], dedup: int = 0, show_dedup: bool | None = None) -> str:
        """(codes, dedup) -> ``"6_19_32_63"``; the dedup part is shown when non-zero or ``show_dedup``."""
        show = None if show_dedup is None else np.asarray([show_dedup])
        return self.format_sids(np.asarray(codes)[None, :], np.asarray([dedup]), show)[0]

    def format_sids(
        self, codes: np.ndarray, dedup: np.ndarray | None = None, show_dedup: np.ndarray | None = None
    ) -> list[str]:
        """Vectorised format_sid; ``show_dedup`` (bool per row, e.g. "its group has >1 product") forces the
        dedup part, which is otherwise shown only where it is non-zero."""
        codes = np.asarray(codes)
        dedup = np.zeros(len(codes), np.int64) if dedup is None else np.asarray(dedup).reshape(-1)
        self.encode_batch(codes, dedup)  # range and shape checks
        show = dedup > 0 if show_dedup is None else np.asarray(show_dedup, bool) | (dedup > 0)
        return format_codes(codes, np.where(show, dedup, -1))

    def tokens_to_sid(self, tokens: Sequence[int], show_dedup: bool | None = None) -> str:
        """L+1 token ids -> SID string."""
        codes, dedup = self.decode(tokens)
        return self.format_sid(codes, dedup, show_dedup)

    def sid_to_tokens(self, sid: str) -> np.ndarray:
        """SID string -> its L+1 token ids."""
        codes, dedup = self.parse_sid(sid)
        return self.encode(codes, dedup)

    # ----- persistence --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain-JSON description: everything needed to rebuild the same ids."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "codebook_version": self.codebook_version,
            "codebook_sizes": self.codebook_sizes,
            "dedup_size": self.dedup_size,
            "retailer_ids": self.retailer_ids.tolist(),
            "special_tokens": list(SPECIAL_TOKENS),
            "vocab_size": self.vocab_size,
        }

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, codebook_version: str | None = None) -> "SIDTokenizer":
        """Read a tokenizer JSON; if ``codebook_version`` is given it must match the recorded one."""
        path = Path(path)
        data = read_json(path, "tokenizer file")
        if data.get("format") != FORMAT:
            raise DataError(f"{path}: not a {FORMAT} file")
        if data.get("format_version") != FORMAT_VERSION or data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise DataError(f"{path}: tokenizer layout version {data.get('format_version')} is not supported")
        if codebook_version is not None and data.get("codebook_version") != codebook_version:
            raise DataError(
                f"{path}: tokenizer was built for codebook version {data.get('codebook_version')!r}, "
                f"not {codebook_version!r}"
            )
        try:
            tok = cls(
                data["codebook_sizes"], data["dedup_size"], data["retailer_ids"], data["codebook_version"]
            )
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: incomplete tokenizer description: {e}") from e
        if tok.vocab_size != data.get("vocab_size"):
            recorded = data.get("vocab_size")
            raise DataError(f"{path}: recorded vocab_size {recorded} != {tok.vocab_size} rebuilt")
        return tok

    def __repr__(self) -> str:
        return (
            f"SIDTokenizer(codebook_sizes={self.codebook_sizes}, dedup_size={self.dedup_size}, "
            f"retailers={self.retailer_ids.size}, vocab_size={self.vocab_size})"
        )


def in_collision_group(codes: np.ndarray) -> np.ndarray:
    """True where a product's L codes are shared with another product (its SID shows the dedup part)."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return np.zeros(0, bool)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] > 1


def format_codes(codes: np.ndarray, extra: np.ndarray | None = None) -> list[str]:
    """Join integer code rows with ``_``; ``extra`` appends one more part per row where it is >= 0."""
    codes = np.asarray(codes, dtype=np.int64)
    cols = [pa.array(codes[:, j]).cast(pa.string()) for j in range(codes.shape[1])]
    if extra is not None:
        extra = np.asarray(extra, dtype=np.int64)
        text = pa.array(extra).cast(pa.string())
        tail = pc.if_else(pa.array(extra >= 0), text, pa.scalar(None, pa.string()))
        joined = pc.binary_join_element_wise(*cols, tail, "_", null_handling="skip")
    else:
        joined = pc.binary_join_element_wise(*cols, "_")
    return joined.to_pylist()
