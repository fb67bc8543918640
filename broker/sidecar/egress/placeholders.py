"""Placeholders in an app's request, and which exception's secret the request gets.

An app is configured with ``spiffe-broker:exception/<name>`` (:func:`~broker.apikeys.model.placeholder`) where it
would otherwise hold the key. The rules, in the order :func:`choose_exception` applies them:

1. Every placeholder in the request is found: in the path, the query, and every header name and value (as sent, and
   percent-decoded up to three times, so ``%3A`` or ``%253A`` hides nothing). The prefix is matched ignoring case.
2. A placeholder of an exception that does not cover this target (an unknown name included) refuses the request:
   403 ``placeholder_to_other_target``, reported as a possible exfiltration attempt. The secret of that exception
   would not have been sent anyway; the point is that someone is trying, and the owner hears about it.
3. Of the exceptions that cover the target, the one whose placeholder sits in its own slot (its header, or its query
   parameter) is used; otherwise the one with the longest ``path_prefix`` (then the first by name). A placeholder
   of a covering exception elsewhere in the request is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, unquote_plus

from multidict import CIMultiDictProxy

from broker.apikeys.grant import CatalogEntry
from broker.apikeys.model import PLACEHOLDER_PREFIX
from broker.sidecar.egress.errors import PlaceholderToOtherTargetError
from broker.sidecar.egress.routing import Destination

__all__ = ["choose_exception", "placeholders_in", "request_texts"]

_PLACEHOLDER = re.compile(re.escape(PLACEHOLDER_PREFIX) + r"([a-z0-9-]{0,63})", re.IGNORECASE)
_DECODE_ROUNDS = 3


def _decoded(text: str) -> Iterator[str]:
    yield text
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(text)
        if decoded == text:
            return
        yield decoded
        text = decoded


def request_texts(destination: Destination, headers: CIMultiDictProxy[str]) -> Iterator[str]:
    """Every text of the request a placeholder may hide in, each as sent and percent-decoded."""
    for part in (destination.path, destination.query):
        yield from _decoded(part)
    for name, value in headers.items():
        yield from _decoded(name)
        yield from _decoded(value)


def placeholders_in(texts: Iterable[str]) -> set[str]:
    """The exception names of every placeholder in ``texts`` (lower-cased)."""
    return {match[1].lower() for text in texts for match in _PLACEHOLDER.finditer(text)}


def _in_own_slot(entry: CatalogEntry, destination: Destination, headers: CIMultiDictProxy[str]) -> bool:
    mark = entry.placeholder
    slot = entry.presentation
    if slot.kind == "header":
        return any(mark in value for value in headers.getall(slot.name, ()))
    return any(key == slot.name and mark in value for key, value in parse_qsl(destination.query, True))


def choose_exception(
    covering: Sequence[CatalogEntry], destination: Destination, headers: CIMultiDictProxy[str]
) -> CatalogEntry | None:
    """The exception whose secret this request gets (None: no exception covers it); see the module docstring."""
    names = {entry.name for entry in covering}
    for found in sorted(placeholders_in(request_texts(destination, headers))):
        if found not in names:
            raise PlaceholderToOtherTargetError(
                f"the request carries the placeholder of exception {found or '(no name)'}, which does not cover "
                f"{destination.origin}: refused and reported as a possible exfiltration attempt",
                name=found or None,
            )
    if not covering:
        return None
    for entry in sorted(covering, key=lambda e: e.name):
        if _in_own_slot(entry, destination, headers):
            return entry
    return min(covering, key=lambda e: (-len(e.target.path_prefix), e.name))
