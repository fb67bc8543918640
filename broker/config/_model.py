"""Typed settings sections without a validation framework: declared like pydantic models, checked the same way.

The sidecar loads its settings on every start and keeps them resident; pydantic and pydantic-settings cost it
about 11 MiB (issue 14, docs/benchmarks.md (d)). The settings need only this much of them:

* a section is a class with annotated fields; ``Field(default=..., gt=..., description=...)`` adds constraints;
* types: ``str``, ``int``, ``float``, ``bool``, ``Path``, ``Literal[...]``, ``X | None``, ``list[X]``,
  ``dict[str, X]`` and nested sections, coerced as pydantic's lax mode does (``"9001"`` is an int, ``"yes"`` a
  bool, an int is a float);
* unknown keys are refused; ``@before("field")`` / ``@after("field")`` validators (static functions that raise
  ``ValueError``) run before / after the type check;
* every problem is reported at once, as a ``(loc, msg)`` pair in pydantic's words ("Input should be greater
  than 0", "Extra inputs are not permitted", "Value error, ..."), so messages did not change when pydantic left.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

__all__ = ["MISSING", "Field", "FieldSpec", "Section", "ValidationError", "after", "before"]

Loc = tuple[str | int, ...]
MISSING: Any = object()
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_INTEGER = re.compile(r"([+-]?[0-9](?:_?[0-9])*)(?:\.0+)?")  # pydantic takes "12", "1_000", "12.0"; not "1e3"
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_BOUNDS = (("gt", "greater than"), ("ge", "greater than or equal to"), ("lt", "less than"),
           ("le", "less than or equal to"))  # fmt: skip


class ValidationError(ValueError):
    """Every problem found in one input: ``errors()`` gives ``{"loc": (...), "msg": "..."}`` for each."""

    def __init__(self, title: str, problems: list[tuple[Loc, str]]) -> None:
        self.title, self.problems = title, problems
        lines = [f"{'.'.join(str(p) for p in loc)}\n  {msg}" for loc, msg in problems]
        super().__init__(f"{len(problems)} validation error(s) for {title}\n" + "\n".join(lines))

    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": loc, "msg": msg} for loc, msg in self.problems]


class _Invalid(Exception):
    def __init__(self, msg: str) -> None:
        self.msg = msg


class FieldSpec:
    """One field: its type, default and constraints (``gt``, ``ge``, ``lt``, ``le``, ``min_length``)."""

    def __init__(self, default: Any = MISSING, description: str | None = None, **constraints: Any) -> None:
        self.default, self.description, self.constraints = default, description, constraints
        self.annotation: Any = None

    def get_default(self) -> Any:
        return copy.deepcopy(self.default)


def Field(default: Any = MISSING, *, description: str | None = None, **constraints: Any) -> Any:
    """pydantic's spelling, so a field reads the same: ``port: int = Field(default=8443, ge=0, le=65535)``."""
    return FieldSpec(default, description, **constraints)


Validator = Callable[[Any], Any]


def before(name: str) -> Callable[[Validator], Any]:
    """Run the function on the raw value of field ``name`` before its type is checked."""
    return lambda function: _marked(function, name, "before")


def after(name: str) -> Callable[[Validator], Any]:
    """Run the function on the checked value of field ``name``."""
    return lambda function: _marked(function, name, "after")


def _marked(function: Validator, name: str, mode: str) -> staticmethod[[Any], Any]:
    function.__validates__ = (name, mode)  # type: ignore[attr-defined]
    return staticmethod(function)


class Section:
    """A settings section: ``Section.model_validate(mapping)`` or ``Section(**values)``; attributes are fields."""

    _fields: ClassVar[dict[str, FieldSpec] | None] = None
    _validators: ClassVar[dict[tuple[str, str], Validator]] = {}
    model_fields_set: set[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = None
        cls._validators = {
            value.__func__.__validates__: value.__func__
            for value in vars(cls).values()
            if isinstance(value, staticmethod) and hasattr(value.__func__, "__validates__")
        }

    @classmethod
    def model_fields(cls) -> dict[str, FieldSpec]:
        """Field name -> spec, in declaration order (types resolved on first use)."""
        if cls.__dict__.get("_fields") is None:
            hints = typing.get_type_hints(cls, localns=dict(vars(cls)))
            fields: dict[str, FieldSpec] = {}
            for name in (n for klass in reversed(cls.__mro__) for n in getattr(klass, "__annotations__", {})):
                if name.startswith("_") or typing.get_origin(hints[name]) is ClassVar or name == "model_fields_set":
                    continue
                value = getattr(cls, name, MISSING)
                spec = value if isinstance(value, FieldSpec) else FieldSpec(value)
                spec.annotation = hints[name]
                fields[name] = spec
            cls._fields = fields
        assert cls._fields is not None
        return cls._fields

    def __init__(self, **values: Any) -> None:
        problems: list[tuple[Loc, str]] = []
        checked = type(self)._check(values, (), problems)
        if problems:
            raise ValidationError(type(self).__name__, problems)
        self.__dict__.update(checked.__dict__)

    @classmethod
    def model_validate(cls, values: Any) -> typing.Self:
        if isinstance(values, cls):
            return values
        problems: list[tuple[Loc, str]] = []
        checked = cls._check(values, (), problems)
        if problems:
            raise ValidationError(cls.__name__, problems)
        return checked

    @classmethod
    def _check(cls, values: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> typing.Self:
        if not isinstance(values, dict):
            raise _Invalid(f"Input should be a valid dictionary or instance of {cls.__name__}")
        fields = cls.model_fields()
        instance = cls.__new__(cls)
        instance.model_fields_set = set()
        for name, spec in fields.items():
            if name in values:
                try:
                    setattr(instance, name, cls._check_field(name, spec, values[name], (*loc, name), problems))
                    instance.model_fields_set.add(name)
                except _Invalid as exc:
                    problems.append(((*loc, name), exc.msg))
            elif spec.default is MISSING:
                problems.append(((*loc, name), "Field required"))
            else:
                setattr(instance, name, spec.get_default())
        problems.extend(((*loc, key), "Extra inputs are not permitted") for key in values if key not in fields)
        return instance

    @classmethod
    def _check_field(cls, name: str, spec: FieldSpec, value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
        for mode in ("before", "after"):
            if mode == "after":
                value = _coerce(spec.annotation, value, loc, problems)
                _constrain(spec.constraints, value)
            validator = cls._validators.get((name, mode))
            if validator is not None:
                try:
                    value = validator(value)
                except ValueError as exc:
                    raise _Invalid(f"Value error, {exc}") from None
        return value

    def model_dump(self, *, exclude_unset: bool = False) -> dict[str, Any]:
        """Field name -> value, sections and lists of sections as dicts (``exclude_unset``: given values only)."""
        names = self.model_fields_set if exclude_unset else self.model_fields()
        return {name: _dump(getattr(self, name), exclude_unset) for name in self.model_fields() if name in names}

    def model_copy(self, *, update: dict[str, Any] | None = None) -> typing.Self:
        """A shallow copy with ``update``'s values set as they are (not checked), as pydantic's ``model_copy``."""
        clone = copy.copy(self)
        clone.model_fields_set = set(self.model_fields_set) | set(update or {})
        clone.__dict__.update(update or {})
        return clone

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.model_fields())})"


def _dump(value: Any, exclude_unset: bool) -> Any:
    if isinstance(value, Section):
        return value.model_dump(exclude_unset=exclude_unset)
    if isinstance(value, list):
        return [_dump(item, exclude_unset) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item, exclude_unset) for key, item in value.items()}
    return value


def _constrain(constraints: dict[str, Any], value: Any) -> None:
    for name, words in _BOUNDS:
        limit = constraints.get(name)
        if limit is None:
            continue
        ok = {"gt": value > limit, "ge": value >= limit, "lt": value < limit, "le": value <= limit}[name]
        if not ok:
            raise _Invalid(f"Input should be {words} {limit}")
    least = constraints.get("min_length")
    if least is not None and len(value) < least:
        unit = "character" if isinstance(value, str) else "item"
        raise _Invalid(f"{'String' if isinstance(value, str) else 'List'} should have at least {least} {unit}"
                       f"{'' if least == 1 else 's'}")  # fmt: skip


def _coerce(annotation: Any, value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    """``value`` as ``annotation``, as pydantic's lax mode takes Python input; raises :class:`_Invalid`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        others = [arg for arg in args if arg is not type(None)]
        if len(others) != 1:
            raise TypeError(f"settings field type {annotation!r}: only X | None unions are supported")
        return _coerce(others[0], value, loc, problems)
    if origin is Literal:
        if value in args and type(value) in {type(arg) for arg in args}:
            return value
        names = [repr(arg) for arg in args]
        raise _Invalid("Input should be " + (" or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1
                                              else names[0]))  # fmt: skip
    if origin is list:
        return _list(args[0], value, loc, problems)
    if origin is dict:
        return _dict(args[1], value, loc, problems)
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return value if isinstance(value, annotation) else annotation._check(value, loc, problems)
    scalar = _SCALARS.get(annotation)
    if scalar is None:
        raise TypeError(f"settings field type {annotation!r} is not supported")
    return scalar(value)


def _list(item: Any, value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> list[Any]:
    if not isinstance(value, list | tuple | set | frozenset):
        raise _Invalid("Input should be a valid list")
    found = []
    for index, element in enumerate(value):
        try:
            found.append(_coerce(item, element, (*loc, index), problems))
        except _Invalid as exc:
            problems.append(((*loc, index), exc.msg))
    return found


def _dict(item: Any, value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid("Input should be a valid dictionary")
    found = {}
    for key, element in value.items():
        if not isinstance(key, str):
            problems.append(((*loc, key, "[key]"), "Input should be a valid string"))
            continue
        try:
            found[key] = _coerce(item, element, (*loc, key), problems)
        except _Invalid as exc:
            problems.append(((*loc, key), exc.msg))
    return found


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("Input should be a valid string")


def _int(value: Any) -> int:
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Invalid("Input should be a valid integer, got a number with a fractional part")
    if isinstance(value, str):
        match = _INTEGER.fullmatch(value.strip())
        if match is None:
            raise _Invalid("Input should be a valid integer, unable to parse string as an integer")
        return int(match[1].replace("_", ""))
    raise _Invalid("Input should be a valid integer")


def _float(value: Any) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _Invalid("Input should be a valid number, unable to parse string as a number") from None
    raise _Invalid("Input should be a valid number")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    if isinstance(value, str | int | float):
        raise _Invalid("Input should be a valid boolean, unable to interpret input")
    raise _Invalid("Input should be a valid boolean")


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise _Invalid("Input is not a valid path for <class 'pathlib.Path'>")


_SCALARS: dict[Any, Callable[[Any], Any]] = {str: _str, int: _int, float: _float, bool: _bool, Path: _path}
