"""Typed reads from a composed YAML node tree, every error naming ``<file>:<line>: <field>``.

``yaml.compose`` keeps each node's start mark, which ``yaml.safe_load`` throws away; reading the nodes here
lets an error point at the line of the offending value (or of the unknown key). Duplicate mapping keys, which
PyYAML silently collapses to the last one, are rejected. The text is composed by :mod:`broker._yaml`, which bounds
size and depth and refuses aliases; every failure of the parse, or of reading one scalar's value, is a
:class:`WorkloadsFileError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from broker import _yaml
from broker.registration.errors import WorkloadsFileError

__all__ = ["Field", "compose_file"]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_INT32_MAX = 2**31 - 1


def compose_file(text: str, source: str) -> Field:
    """Compose one YAML document into a root :class:`Field`; syntax errors name the line."""
    try:
        node = _yaml.compose(text)
    except _yaml.YamlError as exc:
        where = f"{source}:{exc.line}" if exc.line is not None else source
        raise WorkloadsFileError(f"{where}: invalid YAML: {exc.problem}") from None
    if node is None:
        raise WorkloadsFileError(f"{source}:1: the file is empty")
    return Field(node=node, where="", source=source)


def _construct(node: yaml.ScalarNode) -> object:
    """The Python value PyYAML's safe loader gives a resolved scalar (YAML 1.1 ints and booleans); ``None`` when
    the text does not construct (``!!int abc``, ``!!bool abc``, an integer of more than 4300 digits)."""
    try:
        return _yaml.construct_scalar(node)
    except _yaml.YamlError:
        return None


@dataclass(frozen=True, slots=True)
class Field:
    """A node plus where it sits (``workloads[1].spiffe_id``) and which file it came from."""

    node: yaml.Node
    where: str
    source: str

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def error(self, message: str) -> WorkloadsFileError:
        prefix = f"{self.source}:{self.line}: "
        return WorkloadsFileError(prefix + (f"{self.where}: {message}" if self.where else message))

    def _child(self, node: yaml.Node, name: str) -> Field:
        where = f"{self.where}{name}" if name.startswith("[") or not self.where else f"{self.where}.{name}"
        return Field(node=node, where=where, source=self.source)

    def mapping(self, *, required: frozenset[str], optional: frozenset[str]) -> dict[str, Field]:
        """Read a mapping with exactly these keys allowed; unknown, duplicate or missing keys are errors."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error("expected a mapping")
        out: dict[str, Field] = {}
        for key_node, value_node in self.node.value:
            key = Field(node=key_node, where=self.where, source=self.source)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                raise key.error("mapping keys must be strings")
            name = str(key_node.value)
            if name not in required and name not in optional:
                allowed = ", ".join(sorted(required | optional))
                raise self._child(key_node, name).error(f"unknown key (allowed: {allowed})")
            if name in out:
                raise self._child(key_node, name).error("duplicate key")
            out[name] = self._child(value_node, name)
        missing = sorted(required - out.keys())
        if missing:
            raise self._child(self.node, missing[0]).error("required key is missing")
        return out

    def items(self) -> Iterator[Field]:
        """The elements of a sequence, each with its ``[i]`` position."""
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error("expected a list")
        for index, node in enumerate(self.node.value):
            yield self._child(node, f"[{index}]")

    def _scalar(self, tag: str, kind: str) -> yaml.ScalarNode:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != tag:
            raise self.error(f"expected {kind}")
        return self.node

    def string(self, *, allow_empty: bool = False) -> str:
        value = str(self._scalar(_STR, "a string").value)
        if not value and not allow_empty:
            raise self.error("must not be empty")
        if not _yaml.is_unicode(value):
            raise self.error("is not valid Unicode (a lone surrogate, from a \\uD800-\\uDFFF escape)")
        return value

    def strings(self) -> list[str]:
        return [item.string() for item in self.items()]

    def positive_int(self) -> int:
        """A positive integer that fits SPIRE's int32 TTL fields."""
        value = _construct(self._scalar(_INT, "an integer"))
        if not isinstance(value, int) or not 0 < value <= _INT32_MAX:
            raise self.error(f"must be a positive integer no larger than {_INT32_MAX}")
        return value

    def ttl(self) -> int:
        """A SPIRE entry TTL in seconds (int32); 0 means the server's default TTL for that SVID type."""
        value = _construct(self._scalar(_INT, "an integer"))
        if not isinstance(value, int) or not 0 <= value <= _INT32_MAX:
            raise self.error(f"must be 0 (the server's default) or a positive integer no larger than {_INT32_MAX}")
        return value

    def boolean(self) -> bool:
        value = _construct(self._scalar(_BOOL, "true or false"))
        if not isinstance(value, bool):
            raise self.error("expected true or false")
        return value

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL
