"""Bounded, strict YAML reading for the broker's configuration files (YAML 1.1 as PyYAML's safe loader reads it).

PyYAML's safe loader is safe from code execution, not from hostile or careless text. On its own it

* recurses once per nesting level while composing and constructing, so ``[[[[...`` or a deep block list raises
  ``RecursionError`` (and may exhaust the C stack first);
* expands aliases, so a few lines of anchors describe billions of nodes ("billion laughs");
* keeps the last of two equal mapping keys, so a repeated key silently replaces the first (YAML 1.2 §3.2.1.1
  requires keys to be unique);
* raises ``ValueError``, ``IndexError``, ``KeyError`` or ``AttributeError`` from its constructors when an
  explicit tag meets other text (``!!int abc``, ``!!int ''``, ``!!bool abc``, ``!!timestamp abc``), and
  ``ValueError`` for an integer of more than 4300 digits (CPython's int-from-string limit).

:class:`YamlError` is the one failure of this module: every problem above, and anything else the parser raises,
arrives as it, with the line when one is known. Documents are limited to ``max_chars`` characters, collections
to :data:`MAX_DEPTH` levels, and aliases are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import yaml

from broker.errors import ConfigError

__all__ = ["MAX_DEPTH", "YamlError", "compose", "construct_scalar", "is_unicode", "load"]

MAX_DEPTH = 32  # our files nest at most about 6 levels; this leaves room and keeps far from the recursion limit
MAX_CHARS = 4 * 1024 * 1024


class YamlError(ConfigError, ValueError):
    """The text is not a YAML document this module accepts; ``line`` is 1-based when known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases, duplicate keys and nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases are not supported", mark)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception:  # PyYAML's constructors raise ValueError, KeyError, IndexError, AttributeError ...
            raise yaml.constructor.ConstructorError(None, None, _not_a(node), node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    problem = f"duplicate key {_shown(key_node.value)}"
                    raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _not_a(node: yaml.Node) -> str:
    kind = node.tag.rsplit(":", 1)[-1]
    return f"not a valid {kind}: {_shown(node.value)}" if isinstance(node, yaml.ScalarNode) else f"not a valid {kind}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _error(exc: BaseException) -> YamlError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return YamlError(exc.problem or exc.context or "syntax error", mark.line + 1 if mark is not None else None)
    if isinstance(exc, yaml.YAMLError):
        return YamlError(str(exc).splitlines()[0] if str(exc) else "syntax error")
    return YamlError(f"could not be parsed ({type(exc).__name__})")


def _run(text: str, max_chars: int, read: Callable[[_StrictLoader], object]) -> object:
    if len(text) > max_chars:
        raise YamlError(f"the document is longer than {max_chars} characters")
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # the reader checks for unprintable characters here already
        return read(loader)
    except Exception as exc:  # PyYAML raises more than YAMLError on hostile input: every failure is ours
        raise _error(exc) from None
    finally:
        if loader is not None:
            loader.dispose()


def compose(text: str, *, max_chars: int = MAX_CHARS) -> yaml.Node | None:
    """Compose one YAML document into its node tree (``None`` for an empty document); raise :class:`YamlError`."""
    node = _run(text, max_chars, lambda loader: loader.get_single_node())
    return cast("yaml.Node | None", node)


def load(text: str, *, max_chars: int = MAX_CHARS) -> object:
    """Compose and construct one document into Python values (``None`` when empty); raise :class:`YamlError`."""
    return _run(text, max_chars, lambda loader: loader.get_single_data())


def construct_scalar(node: yaml.ScalarNode) -> object:
    """The Python value of one resolved scalar (YAML 1.1 ints, floats, booleans); raise :class:`YamlError`."""
    return _run("", MAX_CHARS, lambda loader: loader.construct_object(node, deep=True))


def is_unicode(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (a ``"\\ud800"`` YAML escape): it has no UTF-8 form, so no
    UTF-8 consumer (protobuf, SPIRE, a file) can carry it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
