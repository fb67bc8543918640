"""Typed application state of the token service (aiohttp ``AppKey``s) and its configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from broker.identity.source import SvidSource
from broker.server.request import ClientAuthenticator
from broker.tokens.exchange import TokenExchangeService
from broker.tokens.keys import KeyStore
from broker.tokens.policy import PolicyStore

__all__ = ["CLIENT_AUTH", "CONFIG", "JWKS_KEYS", "POLICY", "READINESS", "SERVICE", "SOURCE", "TokenAppConfig"]


@dataclass(frozen=True, kw_only=True)
class TokenAppConfig:
    """Settings of one token service app: its issuer URL, request body limit and policy check interval."""

    issuer: str
    max_body: int
    policy_check_interval: float = 1.0


CONFIG = web.AppKey("config", TokenAppConfig)
SOURCE = web.AppKey("source", SvidSource)
CLIENT_AUTH = web.AppKey("client_auth", ClientAuthenticator)
SERVICE = web.AppKey("service", TokenExchangeService)
JWKS_KEYS = web.AppKey("key_store", KeyStore)
POLICY = web.AppKey("policy_store", PolicyStore)
READINESS: web.AppKey[Callable[[], str | None]] = web.AppKey("readiness")
