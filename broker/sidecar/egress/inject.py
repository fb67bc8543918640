"""Putting the secret into the request, and keeping it out of the response.

**Injection.** The exception's slot (its header, or its query parameter) ends up holding exactly
:meth:`~broker.apikeys.model.Presentation.render` of the secret, whatever the app sent there: a placeholder
(``Bearer spiffe-broker:exception/stripe``), a credential of its own, or nothing. Every value the app sent in the
slot is removed first, so a request never carries two credentials, and the app cannot build the header around the
secret (the registered template is the only shape it takes).

**Scrubbing.** A target may echo what it received (an error page quoting the request, a redirect to a URL with the
key in it). :class:`SecretScrubber` masks the secret in every form a target may echo it (:func:`secret_forms`: as
injected, percent-encoded, JSON- and HTML-escaped; ASCII case ignored) with ``*`` of the same length, in every
response header and in the response body, streamed: only a tail that could be the start of a form is held back
until the next chunk shows whether it is. The status line's reason phrase is never the target's (the standard
phrase of the status is sent, RFC 9112 §4), so nothing the target reflects there reaches the app. The body is
always uncompressed: the target is asked for ``Accept-Encoding: identity``, and a compressed answer is refused
(502), never passed on unmasked (:mod:`~broker.sidecar.egress.proxy`).
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Sequence
from typing import AnyStr
from urllib.parse import quote, quote_plus, unquote_plus

from multidict import CIMultiDict

from broker.apikeys.model import Presentation

__all__ = ["SecretScrubber", "inject", "secret_forms"]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def inject(headers: CIMultiDict[str], query: str, presentation: Presentation, secret: str) -> str:
    """Set the slot of ``presentation`` in ``headers`` (changed in place) or in the raw ``query``; the new query."""
    value = presentation.render(secret)
    if presentation.kind == "header":
        headers.popall(presentation.name, None)
        headers[presentation.name] = value
        return query
    kept = [part for part in query.split("&") if part and unquote_plus(part.partition("=")[0]) != presentation.name]
    kept.append(f"{presentation.name}={quote(value, safe='')}")
    return "&".join(kept)


class SecretScrubber:
    """Masks one secret, in each of its forms, in what a target sends back (see the module docstring)."""

    __slots__ = ("_tail", "_text", "_variants")

    def __init__(self, secret: str) -> None:
        self._text = secret_forms(secret)
        self._variants = [form.encode("ascii") for form in self._text]
        self._tail = b""

    def __repr__(self) -> str:
        return "SecretScrubber(...)"

    def header(self, value: str) -> str:
        spans = _spans(value.translate(_ASCII_LOWER), self._text)
        if not spans:
            return value
        chars = list(value)
        for start, end in spans:
            chars[start:end] = "*" * (end - start)
        return "".join(chars)

    def feed(self, chunk: bytes) -> bytes:
        """The part of the body so far that can be passed on (masked); a possible start of a form is held."""
        data = self._tail + chunk if self._tail else chunk
        lowered = data.lower()  # ASCII only: same length, same offsets
        spans = _spans(lowered, self._variants)
        if spans:
            masked = bytearray(data)
            for start, end in spans:
                masked[start:end] = b"*" * (end - start)
            data = bytes(masked)
        held = self._partial(lowered)
        if held:
            self._tail, data = data[-held:], data[:-held]
        else:
            self._tail = b""
        return data

    def flush(self) -> bytes:
        """What is still held at the end of the body (not the secret: it never completed)."""
        tail, self._tail = self._tail, b""
        return tail

    def _partial(self, lowered: bytes) -> int:
        """The length of the longest end of ``lowered`` that is a proper beginning of a form of the secret."""
        longest = 0
        for form in self._variants:
            first = form[:1]
            index = lowered.find(first, max(len(lowered) - len(form) + 1, 0))
            while index != -1:
                if form.startswith(lowered[index:]):
                    longest = max(longest, len(lowered) - index)
                    break
                index = lowered.find(first, index + 1)
        return longest


def secret_forms(secret: str) -> list[str]:
    """The forms of ``secret`` a target may echo, lower-cased (matching ignores ASCII case), longest first: as it
    is; percent-encoded (any hex case, and with ``+`` for spaces); JSON-escaped (``/`` as it is and as ``\\/``);
    HTML-escaped."""
    json_form = json.dumps(secret)[1:-1]
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json_form, json_form.replace("/", "\\/"),
             html.escape(secret)}  # fmt: skip
    return sorted({form.translate(_ASCII_LOWER) for form in forms}, key=len, reverse=True)


def _spans(lowered: AnyStr, forms: Sequence[AnyStr]) -> list[tuple[int, int]]:
    """Where any of ``forms`` occurs in ``lowered``: (start, end) pairs, overlaps included."""
    spans = []
    for form in forms:
        index = lowered.find(form)
        while index != -1:
            spans.append((index, index + len(form)))
            index = lowered.find(form, index + 1)
    return spans
