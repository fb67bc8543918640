"""Decoding an ``application/x-www-form-urlencoded`` body (RFC 6749 §3.2, Appendix B; WHATWG URL §5.1).

:func:`parse_form` gives exactly what ``urllib.parse.parse_qs(text, keep_blank_values=True,
strict_parsing=False, encoding="utf-8", errors="strict", max_num_fields=...)`` gives for ASCII ``text`` (the
token endpoint decodes the body as ASCII first: UTF-8 appears percent-encoded), without its generic machinery
(argument coercion, a regular expression per value with a ``%``, a list of pairs then a dict):

* fields are separated by ``&``; an empty field is skipped; a field without ``=`` has the empty value
  (RFC 6749 §3.1: a parameter without a value is then treated as omitted, by :mod:`broker.oauth.form`);
* ``+`` is a space, then ``%XX`` escapes are decoded and the result must be UTF-8 (else ``UnicodeDecodeError``,
  a ``ValueError``); a ``%`` not followed by two hex digits stays as it is;
* more than ``max_fields`` fields is a ``ValueError`` (a bound on the work a body can ask for).

``tests/unit/oauth/test_urlencoded.py`` holds it to ``parse_qs`` on generated input.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

__all__ = ["parse_form"]


def _decode(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    return text if "%" not in text else unquote_to_bytes(text).decode("utf-8")


def parse_form(text: str, *, max_fields: int) -> dict[str, list[str]]:
    """The form's parameters, name -> every value in order (see the module docstring); ASCII ``text`` only."""
    if not text:
        return {}
    if text.count("&") >= max_fields:
        raise ValueError("too many form fields")
    parsed: dict[str, list[str]] = {}
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        name, value = _decode(name), _decode(value)
        values = parsed.get(name)
        if values is None:
            parsed[name] = [value]
        else:
            values.append(value)
    return parsed
