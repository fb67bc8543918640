"""The client registry: clients that authenticate with a key pair they hold (RFC 7523 §2.2 ``private_key_jwt``)
but have no SPIFFE identity of their own, typical while a service migrates off a client secret.

A :class:`RegisteredClient` names:

* ``client_id`` (RFC 6749 §2.2): printable ASCII without spaces, at most 255 characters;
* its keys: an inline ``jwks`` (public keys only) or a ``jwks_uri`` (``https``; fetched by the server under the
  guards of :mod:`broker.server.client_keys`), never both (RFC 7591 §2: ``jwks`` and ``jwks_uri`` MUST NOT both be
  present);
* ``algorithms``: the asymmetric JWS algorithms its assertions may use (RFC 7518; never ``none`` or HMAC);
* ``max_assertion_lifetime``: the longest ``exp - iat`` accepted (default 60 s, at most 300 s);
* ``spiffe_id``: the identity it acts as. Policy rules match it, a quarantine of it cuts the client off in one
  step like any workload, and the tokens it gets carry it as ``sub`` (``client_id`` is the registered id);
* ``disabled``: a disabled client is refused (``invalid_client``) without being forgotten.

The registry lives in the store (:class:`ClientRegistryStore`, one contract suite on SQLite, PostgreSQL and the
in-memory twin) and every change bumps the ``clients`` change topic, so each replica's cached view follows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from broker.identity.errors import IdentityError
from broker.identity.spiffeid import SpiffeId
from broker.jose import jws
from broker.jose.jwk import PUBLIC_KEY_MEMBERS, jwks_keys
from broker.tokens.keystore import check_instant

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_MAX_ASSERTION_LIFETIME",
    "MAX_ASSERTION_LIFETIME",
    "MAX_INLINE_JWKS_BYTES",
    "ClientRegistryStore",
    "RegisteredClient",
    "check_client",
]

DEFAULT_ALGORITHMS = ("ES256",)
DEFAULT_MAX_ASSERTION_LIFETIME = 60
MAX_ASSERTION_LIFETIME = 300
MAX_INLINE_JWKS_BYTES = 64 * 1024
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,255}")  # RFC 6749 A.1 VSCHAR, without the space
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client_id: str
    spiffe_id: str
    jwks: Mapping[str, Any] | None = field(default=None, compare=False)
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_assertion_lifetime: int = DEFAULT_MAX_ASSERTION_LIFETIME
    disabled: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def jwks_json(self) -> str | None:
        """The inline JWKS as stored (compact JSON), or None."""
        return None if self.jwks is None else json.dumps(self.jwks, separators=(",", ":"), sort_keys=True)


def check_client(client: RegisteredClient) -> RegisteredClient:
    """``client`` if it is a valid registration; ValueError naming the first problem otherwise (never echoing key
    material). Every store runs this before it writes."""
    if not _CLIENT_ID.fullmatch(client.client_id):
        raise ValueError("client_id must be 1-255 printable ASCII characters without spaces (RFC 6749 A.1)")
    try:
        SpiffeId.parse(client.spiffe_id)
    except IdentityError:
        raise ValueError("spiffe_id must be a SPIFFE ID (spiffe://trust-domain/path)") from None
    if (client.jwks is None) == (client.jwks_uri is None):
        raise ValueError("give exactly one of jwks and jwks_uri (RFC 7591 §2)")
    if client.jwks is not None:
        _check_jwks(client.jwks)
    if client.jwks_uri is not None:
        _check_jwks_uri(client.jwks_uri)
    if not client.algorithms or any(alg not in jws.ALGORITHMS for alg in client.algorithms):
        raise ValueError(f"algorithms must be a non-empty subset of {', '.join(sorted(jws.ALGORITHMS))}")
    if len(set(client.algorithms)) != len(client.algorithms):
        raise ValueError("algorithms must not repeat")
    if not 1 <= client.max_assertion_lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError(f"max_assertion_lifetime must be 1-{MAX_ASSERTION_LIFETIME} seconds")
    for stamp in (client.created_at, client.updated_at):
        if stamp is not None:
            check_instant(stamp)
    return client


def _check_jwks(document: Mapping[str, Any]) -> None:
    keys = jwks_keys(document)
    if not keys:
        raise ValueError("jwks must be a JWK Set with at least one key (RFC 7517 §5)")
    if len(json.dumps(document)) > MAX_INLINE_JWKS_BYTES:
        raise ValueError(f"jwks is larger than {MAX_INLINE_JWKS_BYTES} bytes")
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise ValueError("every key in jwks must be a JWK object with a kty")
        if _PRIVATE_MEMBERS & set(key):
            raise ValueError("jwks must hold public keys only (a private or symmetric member is present)")
        if not set(key) & PUBLIC_KEY_MEMBERS - {"kty"}:
            raise ValueError("every key in jwks must carry its public key members")


def _check_jwks_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname or parts.fragment or parts.username or parts.password:
        raise ValueError("jwks_uri must be an https URL with a host, no credentials and no fragment")


class ClientRegistryStore(Protocol):
    async def add(self, client: RegisteredClient, *, at: datetime | None = None) -> RegisteredClient:
        """Register ``client`` as the stored record: checked by :func:`check_client` before anything is written
        (ValueError), ``created_at`` and ``updated_at`` set by the store to ``at`` (timezone-aware) or now, whatever
        ``client`` carried; :class:`~broker.errors.StoreConflictError` if the ``client_id`` is taken."""
        ...

    async def get(self, client_id: str) -> RegisteredClient | None: ...

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        """Every registered client, ordered by ``client_id``."""
        ...

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        """Disable or re-enable; the updated client, or None if there is no such client."""
        ...

    async def remove(self, client_id: str) -> bool:
        """Forget the client; whether it was registered."""
        ...
