"""Config fields with declared bounds, checked where a config is built.

Every config in Shakedown is a frozen dataclass. A numeric field that has a physical
range declares it with `bounded(...)`; `check_bounds(self)` in `__post_init__` then
rejects a value outside it with an error that names the field. The randomization
mechanism reads the same bounds, so a randomization range can never leave the range
a field is valid in.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config value or spec is invalid; the message names the field and the fix."""


def bounded(default: Any, low: float, high: float) -> Any:
    """A dataclass field whose value (or each element of a tuple value) lies in [low, high]."""
    return dataclasses.field(default=default, metadata={"bounds": (float(low), float(high))})


def field_bounds(cls: type, name: str) -> tuple[float, float] | None:
    """The declared (low, high) of a dataclass field, or None when it has none."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("bounds")
    raise ConfigError(f"{cls.__name__} has no field {name!r}")


def _values(value: Any) -> tuple[float, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(float(v) for v in value)
    return (float(value),)


def check_bounds(config: Any) -> None:
    """Raise ConfigError naming the first field whose value is NaN or out of its bounds."""
    for f in dataclasses.fields(config):
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        low, high = bounds
        for v in _values(getattr(config, f.name)):
            if not math.isfinite(v) or v < low or v > high:
                raise ConfigError(
                    f"{type(config).__name__}.{f.name} = {getattr(config, f.name)!r} is outside "
                    f"its valid range [{low}, {high}]; pass a value inside it"
                )


def get_path(root: Any, path: str) -> Any:
    """The value at a dotted path such as 'vehicle.mu' inside nested dataclasses."""
    value = root
    for part in path.split("."):
        if not dataclasses.is_dataclass(value) or not hasattr(value, part):
            raise ConfigError(f"unknown config field {path!r} (no {part!r} in {type(value).__name__})")
        value = getattr(value, part)
    return value


def path_bounds(root: Any, path: str) -> tuple[float, float] | None:
    """The declared bounds of the field at a dotted path."""
    *parents, leaf = path.split(".")
    owner = get_path(root, ".".join(parents)) if parents else root
    get_path(root, path)  # raises a clear error for an unknown leaf
    return field_bounds(type(owner), leaf)


def replace_path(root: Any, path: str, value: Any) -> Any:
    """A copy of nested frozen dataclasses with the field at `path` set to `value`."""
    head, _, rest = path.partition(".")
    if not rest:
        get_path(root, head)
        return dataclasses.replace(root, **{head: value})
    return dataclasses.replace(root, **{head: replace_path(getattr(root, head), rest, value)})


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a (nested) config."""
    return dataclasses.asdict(config)


def from_mapping(cls: type, data: Any, converters: dict[str, Any] | None = None) -> Any:
    """A config built strictly from plain data (a spec file): unknown keys and non-numbers for
    numeric fields raise ConfigError naming the field; `converters` build nested fields."""
    from collections.abc import Mapping

    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__name__} must be a mapping of field -> value, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(known)}")
    values = dict(data)
    for key, value in data.items():
        if converters and key in converters:
            values[key] = converters[key](value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{cls.__name__}.{key} = {value!r} must be a number")
    return cls(**values)


def parse_config(cls: type, argv: Sequence[str] | None, description: str | None = None, prog: str | None = None,
                 default: Any = None) -> Any:
    """A config built from command-line flags, one per field (CleanRL's `Args` with tyro):
    `--help` shows each field's docstring and default, taken from the dataclass itself, so
    no command line repeats a default. A value the config rejects raises its ConfigError."""
    import tyro  # only command lines need it

    return tyro.cli(cls, args=list(argv) if argv is not None else None, prog=prog,
                    description=inspect.cleandoc(description or cls.__doc__ or ""), default=default)
