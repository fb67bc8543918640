"""The settings sections: one class per TOML table (``[sidecar]``, ``[server]``, ...), each command reads its own.

Declared with :mod:`broker.config._model` (pydantic's spelling, none of its weight); loaded by
:func:`broker.config.load_settings`. ``scripts/gen-config-docs.py`` renders docs/configuration.md from these
classes: a field's ``description`` is its documentation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from broker.config._model import Field, Section, after, before

__all__ = [
    "AdminSettings",
    "ApiKeySettings",
    "AssertionSettings",
    "BrokerSettings",
    "DemoApiSettings",
    "DpopSettings",
    "EgressSettings",
    "FeedSettings",
    "IntrospectionSettings",
    "KeyringSettings",
    "LedgerSettings",
    "MetricsSettings",
    "ServerSettings",
    "SidecarSettings",
    "StoreSettings",
    "WorkloadApiSettings",
]

UNIX_ADDRESS = re.compile(r"unix://(/[^?#]*)")


class WorkloadApiSettings(Section):
    socket: Path | None = None
    x509_svid_ttl: float = Field(default=3600.0, gt=0)
    jwt_svid_ttl: float = Field(default=300.0, gt=0)


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    health_port: int | None = Field(default=None, ge=0, le=65535)
    issuer: str | None = None
    policy: Path | None = None
    tls_read_buffer: int = Field(
        default=17 * 1024,
        description="bytes of asyncio's read buffer per TLS connection to the token service (one TLS record is "
        "enough; see docs/architecture.md, the revocation feed); 0: Python's default, 256 KiB; else 4096-1048576",
    )

    @after("tls_read_buffer")
    def _read_buffer(value: int) -> int:
        if value != 0 and not 4096 <= value <= 1024 * 1024:
            raise ValueError("must be 0 (Python's default) or 4096-1048576 bytes")
        return value


class SidecarSettings(Section):
    class TokenFile(Section):
        """One token kept in a file (``[[sidecar.token_files]]``): ``audience`` (and ``scope``) -> ``path``."""

        path: Path
        audience: str = Field(min_length=1)
        scope: str | None = None
        mode: int = 0o600
        uid: int | None = Field(default=None, ge=0)
        gid: int | None = Field(default=None, ge=0)

        @before("mode")
        def _octal(value: object) -> object:
            value = int(value, 8) if isinstance(value, str) else value
            if isinstance(value, int) and not 0 <= value <= 0o777:
                raise ValueError("must be permission bits in octal, as a string: '0640' (not 640)")
            if isinstance(value, int) and value & 0o006:
                raise ValueError(
                    "must not let other users read or write the file (o+r, o+w): it holds a credential, a bearer "
                    "access token; use '0600', or '0640' with a gid"
                )
            return value

    socket: Path | None = None
    socket_mode: int = 0o600
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # Seconds without a successful contact with the token service before its metadata is probed.
    probe_interval: float = Field(default=30.0, gt=0)
    token_files: list[TokenFile] = []
    once: bool = False  # write the token files, then exit
    follow_revocations: bool = Field(
        default=True,
        description="follow the token service's revocation feed: drop revoked tokens, serve none while quarantined",
    )
    once_timeout: float = Field(default=60.0, gt=0)
    token_binding: Literal["mtls", "dpop"] = Field(
        default="mtls",
        description=(
            "what the tokens are bound to: the X.509-SVID certificate (mtls, RFC 8705) or the SVID key with DPoP "
            "proofs (dpop, RFC 9449; apps get proofs from POST /v1/dpop-proof, so a socket or HTTP port is needed)"
        ),
    )

    @before("socket_mode")
    def _octal(value: object) -> object:
        """File modes are written in octal (``0600``) in files and the environment, as for chmod."""
        return int(value, 8) if isinstance(value, str) else value

    @before("socket")
    def _unix_url(value: object) -> object:
        """A path, or a ``unix:///absolute/path`` URL as SPIRE and SPIFFE tools write socket addresses."""
        if isinstance(value, str) and value.startswith("unix:"):
            match = UNIX_ADDRESS.fullmatch(value)
            if match is None:
                raise ValueError("must be a path or unix:///absolute/path")
            return match[1]
        return value


class DemoApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8444, ge=0, le=65535)
    audience: str | None = None


class StoreSettings(Section):
    """``[store]``: the store URL (:mod:`broker.store.url`); None means ``sqlite:///<state_dir>/broker.db``."""

    url: str | None = None


class KeyringSettings(Section):
    """``[keyring]``: the key-encryption key and the rotation schedule (:mod:`broker.tokens.rotation`).

    The KEK comes from ``kek_file`` or, instead, from the ``SPIFFE_BROKER_KEK`` environment variable
    (:func:`kek_from_environment`); ``previous_kek_files`` are accepted for unwrapping only, during a KEK rotation.
    """

    kek_file: Path | None = None
    previous_kek_files: list[Path] = []
    rotation_period: float = Field(default=86400.0, gt=0)
    jwks_max_age: float = Field(default=300.0, ge=0)
    leeway: float = Field(default=60.0, ge=0)
    # A replica that cannot read the store this long stops signing (it cannot see a revoke made elsewhere).
    max_unconfirmed: float = Field(default=60.0, gt=0)


class AdminSettings(Section):
    """``[admin]``: the SPIFFE IDs the admin API (``/admin/v1``) is open to; empty: open to nobody."""

    spiffe_ids: list[str] = []


class IntrospectionSettings(Section):
    """``[introspection]``: who may call ``/introspect`` (RFC 7662 §2.1, §4), by the SPIFFE ID of its X.509-SVID.

    ``audiences`` restricts a caller to tokens for some audiences (a token for another one is ``active: false``,
    RFC 7662 §2.3); a caller not named there may introspect any token of this issuer.
    """

    spiffe_ids: list[str] = Field(
        default=[], description="SPIFFE ID of a resource server allowed to call /introspect; empty: nobody"
    )
    audiences: dict[str, list[str]] = Field(
        default={},
        description="SPIFFE ID (one of spiffe_ids) -> the token audiences it may introspect; absent: any",
    )


class LedgerSettings(Section):
    """``[ledger]``: group commit of the issuance ledger and the audit trail (a crash loses at most one window)."""

    # Off: no ledger rows and no token.* audit records (no blast radius for keys revoke); for benchmarks only.
    record_tokens: bool = True
    batch_window: float = Field(default=0.05, gt=0, le=5)
    batch_max: int = Field(default=512, ge=1, le=100_000)


class FeedSettings(Section):
    """``[feed]``: the revocation feed, ``GET /v1/revocations`` (:mod:`broker.server.feed`)."""

    spiffe_ids: list[str] = Field(
        default=[],
        description="who may follow the feed: SPIFFE IDs or spiffe://td/path/* prefixes; empty: any client with an "
        "X.509-SVID of a trust domain the server trusts",
    )
    heartbeat: float = Field(default=10.0, gt=0, le=300, description="seconds between heartbeat comments")
    max_followers: int = Field(default=10_000, ge=1, description="followers per replica; beyond: 503, Retry-After")
    max_followers_per_id: int = Field(
        default=2_000,
        ge=0,
        description="followers per replica with one SPIFFE ID (pods of one workload share it); 0: no limit",
    )
    retry_after: int = Field(default=5, ge=1, le=3600, description="seconds, in Retry-After of the feed's 503s")
    max_buffer: int = Field(
        default=1024 * 1024, ge=4096, description="unsent bytes after which a slow follower is dropped (it resumes)"
    )
    ring_size: int = Field(
        default=4096, ge=16, le=1_000_000, description="recent entries kept in memory to resume followers"
    )


class AssertionSettings(Section):
    """``[assertions]``: client assertions at ``/token`` (RFC 7523 ``private_key_jwt`` for registered clients,
    draft-ietf-oauth-spiffe-client-auth ``jwt-spiffe``) and the binding of the tokens they get."""

    enabled: bool = Field(default=True, description="serve client assertions (private_key_jwt, jwt-spiffe)")
    leeway: float = Field(
        default=10.0, ge=0, le=60, description="seconds of clock skew allowed on exp/nbf/iat of assertions and proofs"
    )
    allow_bearer_tokens: bool = Field(
        default=False,
        description="issue unbound tokens to clients with neither a client certificate nor a DPoP proof",
    )
    jwks_uri_allowed_networks: list[str] = Field(
        default=[], description="CIDRs a registered client's jwks_uri may resolve to besides public addresses"
    )
    jwks_uri_ca_file: Path | None = Field(
        default=None, description="extra CA certificates (PEM) for fetching jwks_uri; default: the system store"
    )


class DpopSettings(Section):
    """``[dpop]``: DPoP-bound tokens (RFC 9449) at ``/token``."""

    enabled: bool = Field(default=True, description="accept DPoP proofs and issue DPoP-bound tokens")
    algorithms: list[str] = Field(
        default=["ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"],
        description="dpop_signing_alg_values_supported (asymmetric JWS algorithms only)",
    )
    max_age: float = Field(default=60.0, gt=0, le=300, description="seconds a proof's iat may lie in the past")
    require_nonce: bool = Field(default=False, description="require server nonces in proofs (RFC 9449 §8)")
    nonce_lifetime: float = Field(default=300.0, ge=10, le=3600, description="seconds a server nonce stays valid")


class ApiKeySettings(Section):
    """``[apikeys]``: the rules governed API-key exceptions are held to (issue 12; docs/exceptions.md)."""

    max_lifetime_days: int = Field(default=90, ge=1, le=366, description="longest expires_at from now, in days")
    default_review_days: int = Field(default=30, ge=1, le=366, description="review interval when add names none")
    review_grace_days: int = Field(
        default=7, ge=0, le=90, description="days an overdue exception stays usable before it is refused"
    )
    rotation_grace: float = Field(
        default=3600.0, ge=0, le=30 * 86400, description="seconds a rotated-out secret version stays usable"
    )
    hold_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="seconds a sidecar may hold a granted secret in memory"
    )
    ticket_pattern: str = Field(
        default=r"[A-Z][A-Z0-9]{1,15}-[0-9]{1,9}", description="regular expression every ticket reference must match"
    )
    allow_wildcard_hosts: bool = Field(default=False, description="allow *.example.com targets (opt-in per record)")
    allow_reveal: bool = Field(default=False, description="allow delivery = reveal (the app receives the secret)")


class EgressSettings(Section):
    """``[egress]``: the sidecar's egress proxy that injects API-key exceptions (issue 12)."""

    socket: Path | None = Field(default=None, description="Unix socket of the egress proxy (HTTP/1.1, plain)")
    port: int | None = Field(default=None, ge=0, le=65535, description="loopback port of the egress proxy")
    ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) for the targets; default: the system store"
    )
    connect_timeout: float = Field(default=10.0, gt=0, le=120, description="seconds to connect to a target")
    catalog_refresh: float = Field(
        default=30.0, ge=1, le=3600, description="seconds between refreshes of the usable exceptions"
    )
    report_interval: float = Field(
        default=5.0, ge=0.1, le=300, description="seconds between reports of uses and refusals to the token service"
    )

    @before("socket")
    def _unix_url(value: object) -> object:
        """A path, or a ``unix:///absolute/path`` URL, as ``[sidecar] socket`` takes."""
        return SidecarSettings._unix_url(value)


class MetricsSettings(Section):
    """``[metrics]``: Prometheus ``GET /metrics`` of the token service, the sidecar and the dev Workload API."""

    enabled: bool = Field(default=True, description="keep metrics (off: no per-request instruments at all)")
    host: str = Field(default="127.0.0.1", description="address of the metrics port")
    port: int | None = Field(default=None, ge=0, le=65535, description="plain-HTTP port serving /metrics (0: any)")
    socket: Path | None = Field(default=None, description="Unix socket serving /metrics (mode 0600)")
    on_app_socket: bool = Field(default=False, description="sidecar: also serve /metrics on the app's socket")
    spiffe_id_labels: bool = Field(
        default=False, description="token service: count requests per client SPIFFE ID (a label; capped)"
    )
    max_spiffe_id_labels: int = Field(default=100, ge=1, le=10_000, description="SPIFFE IDs kept as labels")
    max_audience_labels: int = Field(default=50, ge=1, le=10_000, description="sidecar: audiences kept as labels")

    @property
    def listens(self) -> bool:
        return self.enabled and (self.port is not None or self.socket is not None)


class BrokerSettings(Section):
    """All settings of ``spiffe-broker``; each command reads the sections it needs."""

    trust_domain: str = "example.org"
    state_dir: Path = Path(".spiffe-broker")
    workload_api: WorkloadApiSettings = WorkloadApiSettings()
    server: ServerSettings = ServerSettings()
    sidecar: SidecarSettings = SidecarSettings()
    demo_api: DemoApiSettings = DemoApiSettings()
    store: StoreSettings = StoreSettings()
    keyring: KeyringSettings = KeyringSettings()
    admin: AdminSettings = AdminSettings()
    ledger: LedgerSettings = LedgerSettings()
    feed: FeedSettings = FeedSettings()
    introspection: IntrospectionSettings = IntrospectionSettings()
    assertions: AssertionSettings = AssertionSettings()
    dpop: DpopSettings = DpopSettings()
    apikeys: ApiKeySettings = ApiKeySettings()
    egress: EgressSettings = EgressSettings()
    metrics: MetricsSettings = MetricsSettings()

    def store_url(self) -> str:
        """The configured store URL, or the embedded default: ``sqlite:///<state_dir>/broker.db``."""
        return self.store.url or f"sqlite://{self.state_dir.resolve() / 'broker.db'}"
