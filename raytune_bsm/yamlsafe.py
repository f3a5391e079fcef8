"""The one YAML loader bsm uses (recipes, search spaces, `--set` values): PyYAML's safe loader, minus what a
config file never needs and an attacker would use.

- Anchors and aliases (`&a` / `*a`) are refused: nine aliases of nine aliases ("billion laughs") are a few hundred
  bytes that expand to 10^9 values, which `dataclasses.asdict` and `copy.deepcopy` would then copy for minutes
  and gigabytes. A recipe writes its values out.
- Nesting is bounded (MAX_DEPTH): PyYAML composes nodes recursively, so 3,000 `[` end in a RecursionError.
- A key given twice in one mapping is refused, naming the key and both places: PyYAML silently keeps the last.

`load(text, where)` raises a ConfigError that starts with `where` for those; bad syntax stays a `yaml.YAMLError`
(the caller says how: "not valid YAML", or `--set` takes the text as a plain string).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from raytune_bsm.errors import ConfigError

MAX_DEPTH = 50  # a recipe nests 3 levels (model.encoder_config.key); 50 stays far below Python's recursion limit


class _Refused(Exception):
    """What the loader will not read; `load` prefixes where it came from."""


@functools.cache
def _loader_class() -> type:
    import yaml  # not on `bsm --help`'s path
    from yaml.events import AliasEvent
    from yaml.nodes import MappingNode, ScalarNode

    class Loader(yaml.SafeLoader):
        def __init__(self, text: str) -> None:
            super().__init__(text)
            self.one_line = "\n" not in text.strip()  # a `--set` value: places are columns
            self.path: list[str] = []  # the keys down to the node being composed: ["model", "lr"]

        def place(self, mark: Any) -> tuple[str, int]:
            return ("column", mark.column + 1) if self.one_line else ("line", mark.line + 1)

        def at(self, mark: Any) -> str:
            return "{} {}".format(*self.place(mark))

        def fetch_flow_collection_start(self, token_class: Any) -> None:
            # Bounded while scanning too: the scanner keeps a possible key per open bracket and checks them all at
            # each token, so 3,000 `[` cost seconds before the first node is composed.
            if self.flow_level >= MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels at {self.at(self.get_mark())}")
            super().fetch_flow_collection_start(token_class)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
                sign = "*" if isinstance(event, AliasEvent) else "&"
                raise _Refused(
                    f"YAML anchors and aliases are not accepted ({sign}{event.anchor} at {self.at(event.start_mark)}); "
                    "write the values out"
                )
            if len(self.path) >= MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels at {self.at(event.start_mark)}")
            key = index.value if isinstance(index, ScalarNode) else f"[{index}]" if isinstance(index, int) else ""
            self.path.append(str(key))
            try:
                node = super().compose_node(parent, index)
                if isinstance(node, MappingNode):
                    self._check_unique(node)
            finally:
                self.path.pop()
            return node

        def _check_unique(self, node: Any) -> None:
            seen: dict[str, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                if key_node.value in seen:
                    name = ".".join(p for p in [*self.path, key_node.value] if p).replace(".[", "[")
                    unit, first = self.place(seen[key_node.value].start_mark)
                    second = self.place(key_node.start_mark)[1]
                    raise _Refused(f"key {name} is given twice ({unit}s {first} and {second}); keep one")
                seen[key_node.value] = key_node

    return Loader


def load(text: str, where: str) -> Any:
    """`text` as YAML (one document), refusing anchors, aliases, deep nesting and repeated keys with a ConfigError
    that starts with `where` ("--config r.yaml", "--set encoder_config"). Bad syntax raises yaml.YAMLError."""
    loader = _loader_class()(text)
    try:
        return loader.get_single_data()
    except _Refused as e:
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:  # never at MAX_DEPTH; kept so no input can print a thousand-line traceback
        raise ConfigError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def parse_value(text: str, where: str = "--set") -> Any:
    """--set key=value: the value as YAML (numbers, booleans, lists), else the string; no aliases (yamlsafe)."""
    import yaml

    try:
        return load(text, where)
    except yaml.YAMLError:
        return text


def load_yaml(path: str | Path, flag: str = "--config") -> dict[str, Any]:
    """A YAML file holding a mapping (no aliases, no repeated keys: yamlsafe); errors name `flag` and the file."""
    import yaml

    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{flag} {path}: no such file")
    if not p.is_file():
        raise ConfigError(f"{flag} {path}: is a directory, not a YAML file")
    try:
        d = load(p.read_text(encoding="utf-8"), f"{flag} {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {path}: not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it ({e.strerror})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{flag} {path}: expected a mapping at the top level, got {type(d).__name__}")
    return d
