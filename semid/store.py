"""The codebook part of a run folder. Weights (standardiser included) go to safetensors, never pickle;
the config and the training record to JSON; SIDs to ``sids.parquet``. Every artifact records the
codebook version (a hash of the weights), and loading checks that they all agree."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import load_file, save_file

from semid.catalog import read_json
from semid.codebook_config import SemIDConfig
from semid.common import DataError, atomic_write, write_json
from semid.config import ConfigError, from_dict, to_dict
from semid.sids import SID_SCHEMA, codebook_version_of

if TYPE_CHECKING:  # semid.train loads torch: imported where a model is saved or built
    from semid.train import SemIDModel

WEIGHTS_FILE = "codebook.safetensors"
CONFIG_FILE = "codebook.json"  # {"codebook_version", "input_dim", "config": SemIDConfig fields}
SIDS_FILE = "sids.parquet"
HEALTH_FILE = "codebook_health.json"  # final utilisation, perplexity, collisions
HISTORY_FILE = "codebook_history.json"  # per-epoch training log
FORMAT = "genrec-semid-codebook"


def save_codebook(
    run: str | Path,
    model: SemIDModel,
    sids: pa.Table | None = None,
    history: list[dict] | None = None,
    health: dict | None = None,
) -> str:
    """Write the model (and optionally its SID table, training history, health report) into ``run``;
    returns the codebook version stamped on every file."""
    from semid.train import weights_version

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    version = weights_version(state)
    meta = {"format": FORMAT, "codebook_version": version, "method": model.cfg.method}
    atomic_write(run / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=meta))
    config = {"format": FORMAT, "codebook_version": version, "input_dim": model.input_dim, "config": to_dict(model.cfg)}
    write_json(config, run / CONFIG_FILE)
    if sids is not None:
        write_sids(run, sids, version)
    if history is not None:
        write_json({"codebook_version": version, "history": history}, run / HISTORY_FILE)
    if health is not None:
        write_json({"codebook_version": version, **health}, run / HEALTH_FILE)
    return version


def load_codebook(run: str | Path) -> SemIDModel:
    """Load the model saved in ``run``; the weights must hash to the version the files record."""
    from semid.train import SemIDModel, weights_version

    run = Path(run)
    config = read_json(run / CONFIG_FILE)
    try:
        cfg = from_dict(SemIDConfig, config["config"], "config")
    except (KeyError, ConfigError) as e:
        raise DataError(f"{run / CONFIG_FILE}: not a codebook config: {e}") from e
    path = run / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    state = load_file(str(path))
    version = weights_version(state)
    if version != config.get("codebook_version"):
        raise DataError(
            f"{path}: weights hash to codebook version {version} but {CONFIG_FILE} records "
            f"{config.get('codebook_version')}: the run folder mixes files from different codebooks"
        )
    try:
        return SemIDModel.from_state_dict(cfg, state)
    except (KeyError, RuntimeError, ValueError) as e:
        raise DataError(f"{path}: weights do not match the config in {CONFIG_FILE}: {e}") from e


def codebook_version(run: str | Path) -> str:
    """The codebook version recorded for ``run`` (without loading the weights)."""
    version = read_json(Path(run) / CONFIG_FILE).get("codebook_version")
    if not version:
        raise DataError(f"{Path(run) / CONFIG_FILE}: no codebook_version recorded")
    return version


def write_sids(run: str | Path, sids: pa.Table, version: str) -> Path:
    """Write ``sids.parquet`` stamped with ``version``."""
    table = sids.cast(SID_SCHEMA).replace_schema_metadata({b"codebook_version": version.encode()})
    path = Path(run) / SIDS_FILE
    atomic_write(path, lambda p: pq.write_table(table, p))
    return path


def read_sids(run: str | Path, expected_version: str | None = None) -> pa.Table:
    """Read ``sids.parquet`` from a run (or a direct path); fail if it belongs to another codebook."""
    path = Path(run)
    if path.is_dir():
        path = path / SIDS_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    table = pq.read_table(path)
    missing = [f.name for f in SID_SCHEMA if f.name not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has: {table.column_names})")
    version = codebook_version_of(table)
    if expected_version is not None and version != expected_version:
        raise DataError(f"{path}: SIDs are from codebook version {version}, expected {expected_version}")
    return table.select([f.name for f in SID_SCHEMA]).cast(SID_SCHEMA).replace_schema_metadata(table.schema.metadata)


