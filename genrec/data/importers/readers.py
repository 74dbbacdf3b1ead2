"""Reading the public data sets' raw files (csv or text, plain or gzip) into typed columns, with every
failure turned into a DataError that names the file and the problem."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from semid.common import DataError

_READ_ERRORS = (pa.ArrowException, OSError, EOFError, UnicodeDecodeError)


def find_file(src: Path, name: str, required: bool = True) -> Path | None:
    """``src/name`` or ``src/name.gz`` (the plain file wins when both exist); None when optional and absent."""
    for candidate in (src / name, src / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise DataError(f"{src / name}: file not found (neither {name} nor {name}.gz in {src})")
    return None


def csv_header(path: Path) -> list[str]:
    """Column names of a csv(.gz) file, read from its first block only."""
    try:
        reader = pacsv.open_csv(str(path))
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read as csv: {e}") from e
    names = reader.schema.names
    reader.close()
    return names


def read_csv(path: Path, ints: list[str], strings: list[str] = ()) -> pa.Table:
    """Read the named columns of a csv(.gz): ``ints`` as int64 (integral floats such as "1.0" accepted),
    ``strings`` as text. A missing column, an unparsable or empty value is a DataError."""
    wanted = list(ints) + list(strings)
    names = csv_header(path)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} (has: {[n for n in names if n]})")
    convert = pacsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: pa.string() for c in strings},
        strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(str(path), convert_options=convert)
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read as csv: {e}") from e
    columns = [as_int64(table.column(c), path, c) for c in ints]
    columns += [table.column(c).combine_chunks() for c in strings]
    return pa.table(columns, names=wanted)


def as_int64(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.Array:
    """A required integer column: ints pass, integral floats are cast, anything else is a DataError."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        raise DataError(f"{path}: column {name!r} has {column.null_count} empty values")
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    if pa.types.is_floating(column.type):
        values = column.to_numpy()
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise DataError(f"{path}: column {name!r} has non-integer values, e.g. {values[bad][:3].tolist()}")
        return pa.array(values.astype(np.int64))
    if pa.types.is_null(column.type):  # a header with no rows under it
        return pa.array([], pa.int64())
    raise DataError(f"{path}: column {name!r} is not numeric (read as {column.type})")


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text(.gz) file, stripped."""
    try:
        with open_text(path) as f:
            text = f.read()
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read as text: {e}") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def open_text(path: Path) -> TextIO:
    """Open a text file for reading, gunzipping ``.gz``."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def check_unique(values: np.ndarray, path: Path, name: str) -> None:
    """Raise a DataError naming the file if ``values`` (ids) has duplicates."""
    uniq, counts = np.unique(values, return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        raise DataError(f"{path}: {dup.size} duplicate {name} values, e.g. {dup[:5].tolist()}")


def check_known(values: pa.Array | np.ndarray, known: np.ndarray, path: Path, name: str, what: str) -> None:
    """Raise a DataError naming the file if some of ``values`` are not among ``known``."""
    values = np.asarray(values)
    unknown = ~np.isin(values, known)
    if unknown.any():
        bad = np.unique(values[unknown])
        raise DataError(
            f"{path}: {int(unknown.sum())} rows name {bad.size} {name} values not in {what}, e.g. {bad[:5].tolist()}"
        )


def lookup(keys: pa.Array, table_keys: pa.Array) -> np.ndarray:
    """Row index of each key in ``table_keys`` (-1 where absent), vectorised."""
    return pc.fill_null(pc.index_in(keys, value_set=table_keys), -1).to_numpy()
