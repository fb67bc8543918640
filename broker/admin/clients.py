"""Admin endpoints of the client registry (issue 11 item 1): clients that authenticate with ``private_key_jwt``
(RFC 7523 §2.2) and act as a SPIFFE ID (:mod:`broker.tokens.clients`).

::

    GET  /admin/v1/clients                      every registered client, ordered by client_id
    GET  /admin/v1/clients/show?client_id=ID    one client
    POST /admin/v1/clients                      {"client_id", "spiffe_id", "jwks" | "jwks_uri",
                                                 "algorithms"?, "max_assertion_lifetime"?}   register
    POST /admin/v1/clients/disable              {"client_id", "reason"?}   refuse it (invalid_client), keep it
    POST /admin/v1/clients/enable               {"client_id", "reason"?}
    POST /admin/v1/clients/remove               {"client_id", "reason"?}   forget it

The ``client_id`` travels in the query or the body, never in the path: RFC 6749 A.1 lets it hold ``/``, ``?``
and ``%``, which a path segment carries only percent-encoded (the reason :mod:`broker.admin.quarantine` gives).

A registration holds exactly one of ``jwks`` (an inline JWK Set, RFC 7517 §5, of public keys only) and
``jwks_uri`` (``https``), as RFC 7591 §2 requires; ``algorithms`` defaults to ``["ES256"]`` and
``max_assertion_lifetime`` to 60 s. Every value is checked by :func:`~broker.tokens.clients.check_client`
before anything is recorded or changed: a bad one is ``invalid_client_metadata`` (400, RFC 7591 §3.2.2) naming
the first problem, never quoting key material. The audit records name the keys by ``kid`` (or the
``jwks_uri``), never give them. Unknown ``client_id``: ``unknown_client`` (404); a taken one on add:
``client_exists`` (409). Disable and enable are idempotent. The add body may be as large as an inline JWKS
(:data:`ADD_MAX_BODY`); the other bodies keep the admin API's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from broker.admin.errors import InvalidClientMetadataError
from broker.admin.ports import ClientAdmin
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute, Operation, optional_reason
from broker.admin.wire import client_document, clients_document
from broker.errors import InvalidRequestError
from broker.jose.jwk import jwks_keys
from broker.tokens.clients import (
    DEFAULT_ALGORITHMS,
    DEFAULT_MAX_ASSERTION_LIFETIME,
    MAX_INLINE_JWKS_BYTES,
    RegisteredClient,
    check_client,
)

__all__ = ["ADD_MAX_BODY", "client_routes", "registration"]

T = TypeVar("T")
ADD_MAX_BODY = MAX_INLINE_JWKS_BYTES + 4096  # the inline JWKS and the other members
_ADD = frozenset({"client_id", "spiffe_id", "jwks", "jwks_uri", "algorithms", "max_assertion_lifetime"})
_CHANGE = frozenset({"client_id", "reason"})
_SHOW = frozenset({"client_id"})


def _member(params: Mapping[str, Any], name: str, kind: type[T], what: str) -> T | None:
    value = params.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)):
        raise InvalidClientMetadataError(f"{name} must be {what}")
    return value


def client_id_of(params: Mapping[str, Any]) -> str:
    """The ``client_id`` member: 1 to 255 printable ASCII characters without spaces (RFC 6749 A.1)."""
    value = params.get("client_id")
    if not isinstance(value, str) or not 0 < len(value) <= 255 or not all("!" <= c <= "~" for c in value):
        raise InvalidRequestError("client_id is required: 1 to 255 printable ASCII characters without spaces")
    return value


def _algorithms(params: Mapping[str, Any]) -> tuple[str, ...]:
    value = _member(params, "algorithms", list, "a list of JWS algorithm names (RFC 7518 §3.1)")
    if value is None:
        return DEFAULT_ALGORITHMS
    if not all(isinstance(alg, str) for alg in value):
        raise InvalidClientMetadataError("algorithms must be a list of JWS algorithm names (RFC 7518 §3.1)")
    return tuple(value)


def registration(given: AdminInput) -> RegisteredClient:
    """The registration in the body, checked (:func:`~broker.tokens.clients.check_client`)."""
    params = given.params
    spiffe_id = _member(params, "spiffe_id", str, "a SPIFFE ID (spiffe://trust-domain/path)")
    lifetime = _member(params, "max_assertion_lifetime", int, "a whole number of seconds")
    client = RegisteredClient(
        client_id=client_id_of(params),
        spiffe_id=spiffe_id or "",
        jwks=_member(params, "jwks", dict, "a JWK Set object (RFC 7517 §5)"),
        jwks_uri=_member(params, "jwks_uri", str, "an https URL (RFC 7591 §2)"),
        algorithms=_algorithms(params),
        max_assertion_lifetime=DEFAULT_MAX_ASSERTION_LIFETIME if lifetime is None else lifetime,
    )
    try:
        return check_client(client)
    except ValueError as exc:  # its words name the problem and never quote key material
        raise InvalidClientMetadataError(str(exc)) from None


def _describe_add(given: AdminInput) -> dict[str, Any]:
    client = registration(given)
    keys = jwks_keys(client.jwks) or []
    detail: dict[str, Any] = {"client_id": client.client_id, "spiffe_id": client.spiffe_id}
    if client.jwks_uri is not None:
        detail["jwks_uri"] = client.jwks_uri
    else:
        detail["kids"] = [key["kid"] for key in keys if isinstance(key.get("kid"), str)]
        detail["inline_keys"] = len(keys)
    return {**detail, "algorithms": list(client.algorithms), "max_assertion_lifetime": client.max_assertion_lifetime}


def _describe_change(given: AdminInput) -> dict[str, Any]:
    detail: dict[str, Any] = {"client_id": client_id_of(given.params)}
    reason = optional_reason(given)
    if reason is not None:
        detail["reason"] = reason
    return detail


def _describe_show(given: AdminInput) -> dict[str, Any]:
    return {"client_id": client_id_of(given.params)}


def client_routes(clients: ClientAdmin) -> tuple[AdminRoute, ...]:
    async def list_clients(given: AdminInput) -> AdminOutput:
        found = list(await clients.list_clients())
        return AdminOutput(clients_document(found), {"clients": len(found)})

    async def show(given: AdminInput) -> AdminOutput:
        return AdminOutput(client_document(await clients.get_client(client_id_of(given.params))))

    async def add(given: AdminInput) -> AdminOutput:
        return AdminOutput(client_document(await clients.add_client(registration(given), str(given.actor))))

    def toggle(disabled: bool) -> Operation:
        async def change(given: AdminInput) -> AdminOutput:
            client = await clients.set_disabled(client_id_of(given.params), disabled, str(given.actor))
            return AdminOutput(client_document(client), {"disabled": client.disabled})

        return change

    async def remove(given: AdminInput) -> AdminOutput:
        return AdminOutput(client_document(await clients.remove_client(client_id_of(given.params), str(given.actor))))

    return (
        AdminRoute("GET", "/clients", list_clients),
        AdminRoute("GET", "/clients/show", show, params=_SHOW, describe=_describe_show),
        AdminRoute("POST", "/clients", add, params=_ADD, describe=_describe_add, max_body=ADD_MAX_BODY),
        AdminRoute("POST", "/clients/disable", toggle(True), params=_CHANGE, describe=_describe_change),
        AdminRoute("POST", "/clients/enable", toggle(False), params=_CHANGE, describe=_describe_change),
        AdminRoute("POST", "/clients/remove", remove, params=_CHANGE, describe=_describe_change),
    )
