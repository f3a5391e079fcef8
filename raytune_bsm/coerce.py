"""Type-checking a config value where it enters (a flag, `--set`, a YAML recipe, a stored record).

`coerce(float, "1e-5", "--set lr")` is 1e-05 (PyYAML reads `1e-5` as a string); `coerce(float, "abc", "--set lr")`
raises `ConfigError("--set lr: expected a number, got 'abc'")`. pydantic's TypeAdapter does the conversion; the
messages are bsm's. `check_fields` does it for every field of a config dataclass.
"""

from __future__ import annotations

import functools
import math
import typing
from types import UnionType
from typing import Any, Literal

from raytune_bsm.errors import ConfigError


@functools.cache
def _adapter(tp: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter  # ~0.2 s to import: kept off `bsm --help`'s path

    return TypeAdapter(tp, config=ConfigDict(coerce_numbers_to_str=True))


def _kinds(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, UnionType) else (tp,)


def describe(tp: Any) -> str:
    """What a value of type `tp` is, in words: "a number", "an integer or null", "one of max, min"."""
    kinds = [k for k in _kinds(tp) if k is not type(None)]
    if int in kinds and float in kinds:
        kinds.remove(int)
    words = []
    for k in kinds:
        origin = typing.get_origin(k) or k
        if origin is Literal:
            words.append("one of " + ", ".join(map(str, typing.get_args(k))))
        else:
            words.append(
                {
                    int: "an integer",
                    float: "a number",
                    bool: "true or false",
                    str: "a string",
                    list: "a list",
                    dict: "a mapping",
                }.get(origin, str(k))
            )
    return " or ".join(words) + (" or null" if type(None) in _kinds(tp) else "")


def coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` as type `tp`: strings that read as numbers or booleans become them; a bool is no number; floats
    are finite. A ConfigError names `where` and the value otherwise."""
    from pydantic import ValidationError

    kinds = _kinds(tp)
    bad = isinstance(value, bool) and bool not in kinds and not any(typing.get_origin(k) is Literal for k in kinds)
    try:
        out = None if bad else _adapter(tp).validate_python(value)
    except ValidationError:
        bad = True
    if bad or (isinstance(out, float) and not math.isfinite(out)):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ConfigError(f"{where}: expected {describe(tp)}{' (finite)' if not bad else ''}, got {shown}")
    return out


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A config dataclass's {field: type}."""
    return typing.get_type_hints(cls)


def check_fields(cls: type, values: Any, where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`values` for the dataclass `cls`, each coerced to its field's type (keys in `skip` pass as they are).
    Errors name `where` (e.g. "--config r.yaml: model.") plus the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('. ')}: expected a mapping of keys to values, got {values!r}")
    types = field_types(cls)
    unknown = sorted(map(str, set(values) - set(types)))
    if unknown:
        raise ConfigError(
            f"{where.rstrip('. ')}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(types))})"
        )
    return {k: v if k in skip else coerce(types[k], v, f"{where}{k}") for k, v in values.items()}
