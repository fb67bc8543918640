"""Putting the secret into the request, and keeping it out of the response.

**Injection.** The exception's slot (its header, or its query parameter) ends up holding exactly
:meth:`~broker.apikeys.model.Presentation.render` of the secret, whatever the app sent there: a placeholder
(``Bearer spiffe-broker:exception/stripe``), a credential of its own, or nothing. Every value the app sent in the
slot is removed first, so a request never carries two credentials, and the app cannot build the header around the
secret (the registered template is the only shape it takes).

**Scrubbing.** A target may echo what it received (an error page quoting the request, a redirect to a URL with the
key in it). :class:`SecretScrubber` masks the secret, as injected and percent-encoded, with ``*`` of the same length
in every response header and in the response body, streamed: only a tail that could be the start of the secret is
held back until the next chunk shows whether it is. The body is always uncompressed: the target is asked for
``Accept-Encoding: identity``, and a compressed answer is refused (502), never passed on unmasked
(:mod:`~broker.sidecar.egress.proxy`).
"""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

from multidict import CIMultiDict

from broker.apikeys.model import Presentation

__all__ = ["SecretScrubber", "inject"]


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
    """Masks one secret in what a target sends back (see the module docstring)."""

    __slots__ = ("_tail", "_text", "_variants")

    def __init__(self, secret: str) -> None:
        forms = {secret, quote(secret, safe="")}
        self._text = sorted(forms, key=len, reverse=True)
        self._variants = [form.encode("ascii") for form in self._text]
        self._tail = b""

    def __repr__(self) -> str:
        return "SecretScrubber(...)"

    def header(self, value: str) -> str:
        for form in self._text:
            if form in value:
                value = value.replace(form, "*" * len(form))
        return value

    def feed(self, chunk: bytes) -> bytes:
        """The part of the body so far that can be passed on (masked); a possible start of the secret is held."""
        data = self._tail + chunk if self._tail else chunk
        for form in self._variants:
            if form in data:
                data = data.replace(form, b"*" * len(form))
        held = self._partial(data)
        if held:
            self._tail, data = data[-held:], data[:-held]
        else:
            self._tail = b""
        return data

    def flush(self) -> bytes:
        """What is still held at the end of the body (not the secret: it never completed)."""
        tail, self._tail = self._tail, b""
        return tail

    def _partial(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that is a proper beginning of a form of the secret."""
        longest = 0
        for form in self._variants:
            first = form[:1]
            index = data.find(first, max(len(data) - len(form) + 1, 0))
            while index != -1:
                if form.startswith(data[index:]):
                    longest = max(longest, len(data) - index)
                    break
                index = data.find(first, index + 1)
        return longest
