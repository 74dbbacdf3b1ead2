"""The strict YAML -> dataclass loader: wrong keys and types are errors that name them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from semid.config import ConfigError, from_dict, load_yaml, save_yaml, to_dict


@dataclass
class Inner:
    sizes: list[int] = field(default_factory=lambda: [4, 8])
    lr: float = 1e-3


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_nested_values():
    cfg = from_dict(Outer, {"name": "y", "inner": {"sizes": [1, 2, 3], "lr": 1}})
    assert cfg == Outer(name="y", inner=Inner(sizes=[1, 2, 3], lr=1.0))
    assert isinstance(cfg.inner.lr, float)


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"inner\.sizez: unknown key \(did you mean 'sizes'\?\)"):
        from_dict(Outer, {"inner": {"sizez": [1]}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"sizes": "4,8"}}, r"inner\.sizes: expected a list"),
        ({"inner": {"sizes": [4, "8"]}}, r"inner\.sizes\[1\]: expected int"),
        ({"name": 3}, r"name: expected str"),
        ({"limit": True}, r"limit: expected"),
        ({"mode": "c"}, r"mode: must be one of \['a', 'b'\]"),
        ({"inner": 5}, r"inner: expected a mapping"),
    ],
)
def test_wrong_types_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_scientific_notation_string_reads_as_float():
    assert from_dict(Inner, {"lr": "3e-4"}).lr == pytest.approx(3e-4)


def test_yaml_round_trip(tmp_path):
    cfg = Outer(name="z", limit=5, inner=Inner(sizes=[7]))
    save_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, load_yaml(tmp_path / "c.yaml")) == cfg
    assert to_dict(cfg)["inner"] == {"sizes": [7], "lr": 1e-3}


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
