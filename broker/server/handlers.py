"""HTTP handlers of the token service: metadata (RFC 8414), JWKS (RFC 7517), token (RFC 6749/8693/8705), health.

Handlers only translate HTTP to :mod:`broker.tokens` calls and back; they raise errors and never build error JSON
(:mod:`broker.web.errors` renders them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from broker.oauth.constants import AUTH_TLS_CLIENT_AUTH, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE
from broker.oauth.response import NO_STORE
from broker.server.request import read_form, request_context
from broker.server.state import CONFIG, JWKS_KEYS, METADATA_MEMBERS, READINESS, SERVICE
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.keys import jwks
from broker.web.metrics import BINDING_KEY, CLIENT_KEY, GRANT_TYPE_KEY

__all__ = ["advertise", "healthz", "jwks_handler", "metadata", "metadata_document", "readyz", "token"]

log = logging.getLogger(__name__)

PUBLIC_CACHE = {"Cache-Control": "public, max-age=60"}
# What web.json_response sends (its Content-Type), with RFC 6749 §5.1's no-store: the token response's headers.
TOKEN_HEADERS = {"Content-Type": "application/json; charset=utf-8", **NO_STORE}


def metadata_document(issuer: str, endpoint: TokenEndpoint | None = None) -> dict[str, Any]:
    """RFC 8414 §2 authorization server metadata.

    ``response_types_supported`` is REQUIRED by §2 but lists values for the authorization endpoint, which this
    server does not have: the truthful value is the empty list. ``tls_client_certificate_bound_access_tokens``
    is RFC 8705 §3.3; ``tls_client_auth`` is RFC 8705 §2.1. The endpoint's client authentication methods
    (``private_key_jwt``, RFC 7523; ``spiffe_jwt``, draft-ietf-oauth-spiffe-client-auth §4), their signing
    algorithms and ``dpop_signing_alg_values_supported`` (RFC 9449 §5.1) come from ``endpoint``.
    """
    document: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "response_types_supported": [],
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE, GRANT_CLIENT_CREDENTIALS],
        "token_endpoint_auth_methods_supported": [AUTH_TLS_CLIENT_AUTH],
        "tls_client_certificate_bound_access_tokens": True,
    }
    if endpoint is not None:
        document.update(endpoint.metadata())
    return document


def advertise(app: web.Application, members: Mapping[str, Any]) -> None:
    """Add RFC 8414 §2 members to the metadata document, before the app starts: each route mounted beside ``/token``
    advertises itself (RFC 7009 ``revocation_endpoint``, RFC 7662 ``introspection_endpoint``, the revocation
    feed's ``spiffe_broker_revocation_feed_endpoint``). A member already there is a ValueError (never replaced)."""
    advertised = app[METADATA_MEMBERS]
    taken = sorted(set(members) & (set(metadata_document(app[CONFIG].issuer)) | set(advertised)))
    if taken:
        raise ValueError(f"metadata members already advertised: {', '.join(taken)}")
    advertised.update(members)


async def metadata(request: web.Request) -> web.Response:
    document = metadata_document(request.app[CONFIG].issuer, request.app[SERVICE])
    members: dict[str, Any] = request.app[METADATA_MEMBERS]
    document.update(members)
    return web.json_response(document, headers=PUBLIC_CACHE)


async def jwks_handler(request: web.Request) -> web.Response:
    """The published keys (next, active, retiring). ``max-age`` is ``[keyring] jwks_max_age``: the rotation
    schedule publishes a key at least that long before it signs (:mod:`broker.tokens.rotation`)."""
    document = jwks(request.app[JWKS_KEYS].published_keys())
    cache = {"Cache-Control": f"public, max-age={request.app[CONFIG].jwks_max_age}"}
    return web.json_response(document, content_type="application/jwk-set+json", headers=cache)


async def token(request: web.Request) -> web.Response:
    """RFC 6749 §3.2 token endpoint; success per RFC 8693 §2.2.1 with ``Cache-Control: no-store``."""
    config, endpoint = request.app[CONFIG], request.app[SERVICE]
    context = request_context(request)
    transport = endpoint.authenticate(context)  # before the body is read
    form = await read_form(request, max_body=config.max_body)
    request[GRANT_TYPE_KEY] = endpoint.served_grant_type(form)
    response = await endpoint.handle(form, transport, context)
    request[CLIENT_KEY] = response.token.claims["sub"]
    binding = response.token.binding
    request[BINDING_KEY] = "none" if binding is None else binding.member
    log.debug(  # the access log has the request at INFO; the ledger and the audit journal record every token
        "issued token jti=%s to %s for %s (expires in %ss)",
        response.token.jti,
        response.token.claims["sub"],
        response.token.audience,
        response.token.expires_in,
    )
    extra = response.headers
    return web.Response(body=response.body(), headers={**TOKEN_HEADERS, **extra} if extra else TOKEN_HEADERS)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: an X.509-SVID, a policy and a signing key are in place (503 with the reason otherwise)."""
    problem = request.app[READINESS]()
    if problem is not None:
        return web.json_response({"status": "unready", "reason": problem}, status=503, headers=NO_STORE)
    return web.json_response({"status": "ready"}, headers=NO_STORE)
