"""``train.mixed_precision: auto`` resolves by the device's flags: bf16 only where it is native."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

import genrec

from genrec.model.precision import cpu_flags, native_bf16, resolve_mixed_precision
from genrec.model.train import TrainConfig
from genrec.run.config import load_run_config

EPYC_AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # an ordinary server CPU: bf16 emulated
SAPPHIRE = EPYC_AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_auto_is_float32_where_bf16_is_emulated_and_bf16_where_native():
    assert resolve_mixed_precision("auto", "cpu", EPYC_AVX2) == "no"
    assert resolve_mixed_precision("auto", "cpu", SAPPHIRE) == "bf16"
    assert resolve_mixed_precision("auto", "cpu", {"avx512_bf16"}) == "bf16"
    assert resolve_mixed_precision("auto", "cuda", set()) == "bf16"
    assert resolve_mixed_precision("no", "cpu", SAPPHIRE) == "no"
    assert native_bf16(SAPPHIRE) and not native_bf16(EPYC_AVX2)


def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="genrec.model.precision"):
        assert resolve_mixed_precision("bf16", "cpu", EPYC_AVX2) == "bf16"
        assert resolve_mixed_precision("bf16", "cpu", SAPPHIRE) == "bf16"
    assert len(caplog.records) == 1 and "emulated" in caplog.records[0].message
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve_mixed_precision("fp8", "cpu", SAPPHIRE)


def test_auto_is_the_default_and_every_shipped_config_uses_it():
    assert TrainConfig().mixed_precision == "auto"
    configs = sorted((Path(genrec.__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        setting = load_run_config(path).train.mixed_precision
        assert setting == "auto", f"{path.name}: train.mixed_precision {setting!r}; ship `auto`"


def test_this_machines_flags_are_read():
    flags = cpu_flags()
    assert native_bf16() == native_bf16(flags)
