"""Strict YAML -> dataclass loading: every component's config is a dataclass, and a wrong key, type or value is
an error that names it (``semid.codebook_sizes: expected list[int], got str``). Each dataclass states its
value rules in ``__post_init__`` with ``Checks``, so a bad value fails where the config is made (loaded from a
file, built from flags or in code), before any work starts. ``add_flags`` / ``from_flags`` turn a dataclass's
fields into command-line flags (``max_wait_ms`` -> ``--max-wait-ms``), so a command and its config cannot drift
apart."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import io
import numbers
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration: an unknown key, a wrong type, a value out of range, a missing or broken file.
    ``section`` (``train``; None at the top level) and ``key`` (``epochs``) say where, ``file`` which file;
    ``str(e)`` is one line, ``FILE: section.key: message``."""

    def __init__(self, message: str, section: str | None = None, key: str | None = None,
                 file: str | Path | None = None) -> None:
        self.message = " ".join(str(message).split())  # one line, even for a YAML parser's multi-line text
        self.section, self.key = section or None, key or None
        self.file = str(file) if file else None
        super().__init__(self.message)

    @property
    def where(self) -> str:
        """``section.key`` (or the part that is known)."""
        return ".".join(p for p in (self.section, self.key) if p)

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.message) if p)

    def __reduce__(self):  # pickles whole (accelerate ships exceptions between processes)
        return type(self), (self.message, self.section, self.key, self.file)


class Checks:
    """The value rules of one config section, a line each in its dataclass's ``__post_init__``::

        c = Checks(self, "train")
        c.at_least(1, "batch_size", "epochs")
        c.within(0, 1, "min_lr_ratio")

    A broken rule raises a ConfigError naming ``section.key``. A value of None (an optional setting left
    unset) passes every rule; the loader has checked the types already."""

    def __init__(self, cfg: Any, section: str) -> None:
        self.cfg, self.section = cfg, section

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise ConfigError(message, self.section, key)

    def rule(self, ok: bool, key: str, message: str) -> Checks:
        """A rule of its own (across settings, say); ``message`` says what ``key`` must be."""
        if not ok:
            self.fail(key, message)
        return self

    def at_least(self, low: float, *keys: str) -> Checks:
        for key, value in self._numbers(keys):
            self.rule(value >= low, key, f"must be >= {low}, got {value!r}")
        return self

    def above(self, low: float, *keys: str) -> Checks:
        for key, value in self._numbers(keys):
            self.rule(value > low, key, f"must be > {low}, got {value!r}")
        return self

    def within(self, low: float, high: float, *keys: str, open_high: bool = False) -> Checks:
        """``low <= value <= high`` (``< high`` with ``open_high``): shares, probabilities, ratios."""
        for key, value in self._numbers(keys):
            ok = low <= value < high if open_high else low <= value <= high
            self.rule(ok, key, f"must lie in [{low}, {high}{')' if open_high else ']'}, got {value!r}")
        return self

    def one_of(self, key: str, options: typing.Iterable) -> Checks:
        value, options = getattr(self.cfg, key), list(options)
        return self.rule(value is None or value in options, key, f"must be one of {options}, got {value!r}")

    def literals(self) -> Checks:
        """Every ``Literal[...]`` setting (optional ones too) holds one of its values."""
        for key, options in _literal_fields(type(self.cfg)).items():
            self.one_of(key, options)
        return self

    def sizes(self, *keys: str, empty: bool = False) -> Checks:
        """Lists of whole numbers >= 1 (codebook sizes, layer widths), non-empty unless ``empty``."""
        for key in keys:
            value = getattr(self.cfg, key)
            ok = isinstance(value, (list, tuple)) and (empty or len(value) > 0) and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
            self.rule(ok, key, f"must be a {'' if empty else 'non-empty '}list of whole numbers >= 1, got {value!r}")
        return self

    def _numbers(self, keys: tuple[str, ...]) -> typing.Iterator[tuple[str, Any]]:
        for key in keys:
            value = getattr(self.cfg, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                self.fail(key, f"expected a number, got {type(value).__name__} ({value!r})")
            yield key, value


@functools.lru_cache(maxsize=None)
def _literal_fields(cls: type) -> dict[str, tuple]:
    """Field name -> allowed values, for the fields typed ``Literal[...]`` or ``Literal[...] | None``."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        for arg in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,):
            if typing.get_origin(arg) is typing.Literal:
                out[name] = typing.get_args(arg)
    return out


def renamed_keys(cls: type, data: dict, where: str = "") -> dict:
    """``data`` with old spellings of ``cls``'s keys (its ``OLD_KEYS``, old -> new) under their new names, so a
    config saved in an old run folder still loads; a mapping that gives both spellings is a ConfigError."""
    old_keys = getattr(cls, "OLD_KEYS", {})
    if not any(key in old_keys for key in data):
        return data
    out = {}
    for key, value in data.items():
        new = old_keys.get(key, key)
        if new != key and new in data:
            raise ConfigError(f"old spelling of {new!r}, which is given too: keep one", *_at(_join(where, key)))
        out[new] = value
    return out


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _at(path: str) -> tuple[str | None, str | None]:
    """A dotted path as (section, key): ``semid.codebook_sizes[1]`` -> (``semid``, ``codebook_sizes[1]``)."""
    section, _, key = path.rpartition(".")
    return section or None, key or None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping top level is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", file=path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", file=path) from e
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", file=path)
    return data


def load(cls: type[T], path: str | Path) -> T:
    """Read and check a YAML config file into dataclass ``cls``; an error names the file and the key."""
    try:
        return from_dict(cls, load_yaml(path))
    except ConfigError as e:
        e.file = e.file or str(path)
        raise


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and value type recursively, then its value
    rules (``__post_init__``). Old spellings of renamed keys (``cls.OLD_KEYS``) are read as the new ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", *_at(where))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in renamed_keys(cls, data, where).items():
        path = _join(where, key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key{hint}; allowed: {', '.join(sorted(fields))}", *_at(path))
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a value rule: it names its own section, the mapping's place is where it is
        e.section = where or e.section
        raise
    except TypeError as e:  # a required field is missing
        raise ConfigError(str(e), *_at(where)) from e


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for saving the resolved config with a run)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass (or mapping) as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, path)
            except ConfigError:
                pass
        raise ConfigError(f"expected {_type_name(tp)}, got {type(value).__name__} ({value!r})", *_at(path))
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"must be one of {list(args)}, got {value!r}", *_at(path))
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {type(value).__name__} ({value!r})", *_at(path))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {type(value).__name__}", *_at(path))
        return {k: _coerce(args[1] if args else Any, v, f"{path}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(tp, type):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(f"expected {tp.__name__}, got bool ({value!r})", *_at(path))
        if not isinstance(value, tp):
            raise ConfigError(f"expected {tp.__name__}, got {type(value).__name__} ({value!r})", *_at(path))
        return value
    return value


def add_flags(parser: argparse.ArgumentParser, cls: type, only: Sequence[str] | None = None,
              names: dict[str, str] | None = None) -> None:
    """One flag per field of dataclass ``cls`` (those in ``only``, when given): ``max_wait_ms`` ->
    ``--max-wait-ms`` (or ``names[field]``), with the field's default, type (``Literal`` values as choices)
    and help (``field_help``); booleans as ``--x`` / ``--no-x``. The parsed value keeps the field's name."""
    hints, helps, names = typing.get_type_hints(cls), field_help(cls), names or {}
    for f in _flag_fields(cls, only):
        flag = names.get(f.name, "--" + f.name.replace("_", "-"))
        help_text = f"{helps.get(f.name, '')} (default: {f.default})".lstrip().replace("%", "%%")
        tp = hints[f.name]  # Optional[X] flags as X; a Literal's arguments are its values, not types
        kind = [tp] if typing.get_origin(tp) is typing.Literal else [a for a in typing.get_args(tp) or (tp,)
                                                                      if a is not type(None)]
        if kind == [bool]:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        elif len(kind) == 1 and typing.get_origin(kind[0]) is typing.Literal:
            choices = typing.get_args(kind[0])
            parser.add_argument(flag, dest=f.name, type=type(choices[0]), choices=choices, default=f.default,
                                help=help_text)
        elif len(kind) == 1 and kind[0] in (int, float, str):
            parser.add_argument(flag, dest=f.name, type=kind[0], default=f.default, help=help_text,
                                metavar=flag.lstrip("-").replace("-", "_").upper())
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for a field of type {_type_name(hints[f.name])}")


def from_flags(cls: type[T], args: argparse.Namespace, only: Sequence[str] | None = None, **fixed: Any) -> T:
    """The ``cls`` that the flags of ``add_flags(parser, cls, only)`` ask for; ``fixed`` sets the other fields."""
    return cls(**{f.name: getattr(args, f.name) for f in _flag_fields(cls, only)}, **fixed)


def _flag_fields(cls: type, only: Sequence[str] | None) -> list[dataclasses.Field]:
    fields = [f for f in dataclasses.fields(cls) if f.init and f.default is not dataclasses.MISSING]
    if only is None:
        return fields
    missing = set(only) - {f.name for f in fields}
    if missing:
        raise TypeError(f"{cls.__name__} has no field(s) with a default named {sorted(missing)}")
    return [f for f in fields if f.name in only]


@functools.lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Field name -> its one-line explanation: the field's ``help`` metadata, else the comment on its line in
    the class source (``k: int = 50  # products per request``), else the comment lines just above it."""
    out = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    source = textwrap.dedent(source)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name) or node.target.id in out:
            continue
        own = [comments[row] for row in range(node.lineno, node.end_lineno + 1) if row in comments]
        above, row = [], node.lineno - 1
        while row in comments and not any(row in range(n.lineno, n.end_lineno + 1) for n in body):
            above.insert(0, comments[row])
            row -= 1
        text = " ".join(own or above)
        if text:
            out[node.target.id] = text
    return out
