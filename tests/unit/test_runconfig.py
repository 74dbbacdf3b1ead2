"""Every shipped config loads into typed dataclasses; a wrong key or type names the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from genrec.run.config import RunConfig, load_run_config
from semid.config import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_three_named_configs_exist():
    assert {"demo", "instacart", "amazon-beauty"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_and_starts_with_its_command(path):
    cfg = load_run_config(path)
    assert isinstance(cfg, RunConfig) and cfg.name == path.stem
    assert path.read_text().startswith("# genrec "), "a config starts with the command that runs it"


def test_wrong_key_and_type_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("semid:\n  codebook_size: [8, 8]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: semid\.codebook_size: unknown key \(did you mean 'codebook_sizes'\?\)"):
        load_run_config(bad)
    bad.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.lr: expected float"):
        load_run_config(bad)
