"""Typed application state of the token service (aiohttp ``AppKey``s) and its configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from broker.identity.source import JwtBundleSource, X509ContextSource
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.keys import KeyStore
from broker.tokens.policy import PolicyStore
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = [
    "CONFIG",
    "JWKS_KEYS",
    "METADATA_MEMBERS",
    "POLICY",
    "READINESS",
    "SERVICE",
    "SOURCE",
    "SVID_MEMO",
    "ServiceSource",
    "TokenAppConfig",
]


class ServiceSource(X509ContextSource, JwtBundleSource, Protocol):
    """What the token service reads: its X.509-SVID and bundles for mTLS, JWT bundles for subject tokens."""


@dataclass(frozen=True, kw_only=True)
class TokenAppConfig:
    """Settings of one token service app: its issuer URL, request body limit and policy check interval."""

    issuer: str
    max_body: int
    policy_check_interval: float = 1.0
    jwks_max_age: int = 60  # Cache-Control max-age of the JWKS, seconds ([keyring] jwks_max_age)


CONFIG = web.AppKey("config", TokenAppConfig)
SOURCE = web.AppKey("source", ServiceSource)
SERVICE = web.AppKey("service", TokenEndpoint)
JWKS_KEYS = web.AppKey("key_store", KeyStore)
POLICY = web.AppKey("policy_store", PolicyStore)
SVID_MEMO = web.AppKey("svid_memo", ValidatedSvidCache)  # validated JWT-SVIDs (its hits and misses are metrics)
READINESS: web.AppKey[Callable[[], str | None]] = web.AppKey("readiness")
# RFC 8414 §2 members that routes mounted beside /token advertise (broker.server.handlers.advertise)
METADATA_MEMBERS: web.AppKey[dict[str, Any]] = web.AppKey("metadata_members")
