"""``POST /v1/dpop-proof``: a DPoP proof (RFC 9449 §4.2) signed with the workload's X.509-SVID key, for its apps.

Request: ``Content-Type: application/json``, a body of at most :data:`MAX_BODY` bytes holding one JSON object::

    {"method": "GET", "url": "https://api.example.org/orders?page=2", "access_token": "...", "nonce": "..."}

Answer: ``{"proof": "<JWT>"}`` with ``Cache-Control: no-store``; the app sends it as the ``DPoP`` header next to
``Authorization: DPoP <access_token>`` (RFC 9449 §7.1). The checks, in the order :func:`parse_proof_request` runs
them (each failure is ``invalid_request``, 400, unless said otherwise):

1. the media type is ``application/json`` (415), the body at most :data:`MAX_BODY` bytes (413);
2. the body is a JSON object without duplicate members, holding only ``method``, ``url``, ``access_token`` and
   ``nonce``, each a string when present; ``method`` and ``url`` are required;
3. ``method`` is an HTTP method name: an RFC 9110 §9.1 / §5.6.2 ``token`` (at most 32 characters), kept as given
   (method names are case-sensitive, RFC 9110 §9.1);
4. ``url`` is an absolute ``http`` or ``https`` URI without userinfo (RFC 9110 §4.2.4) or fragment, at most 4096
   characters, that RFC 3986 normalisation accepts (:mod:`broker.oauth._rfc3986`); ``htu`` is that URI without
   its query (RFC 9449 §4.2: "without query and fragment parts");
5. ``access_token``, when given, is an RFC 9449 §7.1 / RFC 7235 §2.1 ``token68`` of at most 16384 characters; the
   proof then carries ``ath`` = base64url(SHA-256(token)) (§4.2). A token bound to a key other than the current
   SVID key (``cnf.jkt``, read without verification; §6.1) is 409 ``stale_token``: the SVID rotated, fetch a new
   token;
6. ``nonce``, when given, is an RFC 9449 §8.1 ``1*NQCHAR`` of at most 512 characters (a resource server's
   ``DPoP-Nonce``, §9).

Neither the token nor the proof is ever logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from broker.errors import InvalidRequestError
from broker.jose.errors import JoseError
from broker.jose.jws import read_unverified
from broker.oauth._rfc3986 import MAX_URI_LENGTH, normalize_http_uri
from broker.oauth.binding import Jkt
from broker.sidecar.dpop import NONCE, SvidProofSigner
from broker.sidecar.errors import BodyTooLargeError, StaleTokenError, UnsupportedMediaTypeError

__all__ = ["MAX_BODY", "ProofRequest", "parse_proof_request", "proof_body"]

MAX_BODY = 20480
MAX_TOKEN_LENGTH = 16384
_MEMBERS = frozenset({"method", "url", "access_token", "nonce"})
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")  # RFC 9110 §5.6.2 token
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 7235 §2.1


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """A checked request for a proof: ``htm``, ``htu`` (no query, no fragment), the token and nonce if any."""

    htm: str
    htu: str
    access_token: str | None = field(default=None, repr=False)
    nonce: str | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise InvalidRequestError("the request body repeats a member")
    return members


def _document(raw: bytes) -> dict[str, Any]:
    """Item 2: the JSON object, its member names and their types."""
    try:
        document = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise InvalidRequestError("the request body is not JSON (UTF-8)") from None
    if not isinstance(document, dict):
        raise InvalidRequestError('the request body must be a JSON object: {"method": ..., "url": ...}')
    unknown = sorted(set(document) - _MEMBERS)
    if unknown:
        raise InvalidRequestError(f"unknown member(s) in the request body; allowed: {', '.join(sorted(_MEMBERS))}")
    if any(not isinstance(value, str) for value in document.values()):
        raise InvalidRequestError("method, url, access_token and nonce must be strings")
    if "method" not in document or "url" not in document:
        raise InvalidRequestError("method and url are required")
    return document


def _htu(url: str) -> str:
    """Item 4: the target URI without its query."""
    if len(url) > MAX_URI_LENGTH or "#" in url or normalize_http_uri(url) is None:
        raise InvalidRequestError(
            "url must be an absolute http(s) URL without userinfo or fragment (RFC 9110 §4.2, RFC 9449 §4.2)"
        )
    return url.split("?", 1)[0]


def parse_proof_request(content_type: str, raw: bytes) -> ProofRequest:
    """Items 1-4 and the syntax of items 5-6 (the module docstring); ``raw`` is the body as received."""
    if content_type != "application/json":
        raise UnsupportedMediaTypeError("send the request as application/json")
    if len(raw) > MAX_BODY:
        raise BodyTooLargeError(f"the request body is larger than {MAX_BODY} bytes")
    document = _document(raw)
    method, url = document["method"], document["url"]
    if not _METHOD.fullmatch(method):
        raise InvalidRequestError("method must be an HTTP method name such as GET (RFC 9110 §9.1)")
    token, nonce = document.get("access_token"), document.get("nonce")
    if token is not None and (len(token) > MAX_TOKEN_LENGTH or not _TOKEN68.fullmatch(token)):
        raise InvalidRequestError("access_token must be a token68 of at most 16384 characters (RFC 9449 §7.1)")
    if nonce is not None and not NONCE.fullmatch(nonce):
        raise InvalidRequestError("nonce must be 1 to 512 printable characters without quote or backslash (§8.1)")
    return ProofRequest(method, _htu(url), token, nonce)


def _check_token_key(access_token: str, jkt: str) -> None:
    """Item 5, the binding: a token bound (``cnf.jkt``, read without verification) to another key is stale."""
    try:
        claims = read_unverified(access_token, canonical=False).payload
    except JoseError:
        return  # not a JWT the sidecar can read: the resource server decides
    bound = Jkt.bound_in(claims)
    if isinstance(bound, str) and not Jkt(jkt).matches(bound):
        raise StaleTokenError()


def proof_body(wanted: ProofRequest, signer: SvidProofSigner) -> bytes:
    """The ``{"proof": ...}`` answer for ``wanted``, signed with the current SVID key."""
    if wanted.access_token is not None:
        _check_token_key(wanted.access_token, signer.jkt())
    signed = signer.sign(htm=wanted.htm, htu=wanted.htu, access_token=wanted.access_token, nonce=wanted.nonce)
    return json.dumps({"proof": signed.proof}, separators=(",", ":")).encode()
