"""params.yaml read the way DVC reads it: duplicate keys refused, `1e3` a number.

PyYAML keeps the last of two equal keys without a word, so a repeated `finetune:` section
silently replaced the first one, while `dvc` (ruamel.yaml) refuses the same file. And
PyYAML follows YAML 1.1, where `1e3` (no dot) is a string; DVC's YAML 1.2 reads a number.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_Base = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader   # C parser: ~10x faster
MAP_TAG = "tag:yaml.org,2002:map"
MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice; `problem_mark` points at the second one."""

    def __init__(self, key: str, line: int, first_line: int, mark: Any) -> None:
        super().__init__(f"duplicate key '{key}' (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line
        self.problem = str(self)
        self.problem_mark = mark


class ParamsLoader(_Base):  # type: ignore[misc, valid-type]
    """A safe loader that refuses duplicate keys and reads YAML 1.2 exponent floats."""


def _construct_map(loader: ParamsLoader, node: yaml.MappingNode):
    _refuse_duplicates(node)
    data: dict = {}
    yield data                       # as PyYAML does: lets anchors refer back to this mapping
    data.update(loader.construct_mapping(node))


def _refuse_duplicates(node: yaml.MappingNode) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
            continue                 # `<<` merges are allowed to repeat keys: that is their purpose
        ident = (key_node.tag, key_node.value)
        line = key_node.start_mark.line + 1
        if ident in seen:
            raise DuplicateKey(key_node.value, line, seen[ident], key_node.start_mark)
        seen[ident] = line


ParamsLoader.add_constructor(MAP_TAG, _construct_map)
# YAML 1.2 floats without a dot (1e3, -2.5E-4 already matches YAML 1.1): `epochs: 1e3` is 1000.
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """Parse params text; raises yaml.YAMLError (DuplicateKey included) on a mistake."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 (a SafeLoader subclass)
