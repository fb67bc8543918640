"""The one error hierarchy of spiffe-broker, drawn once.

Every failure the broker raises on purpose derives from :class:`BrokerError`. Each class carries the wire
code it renders as (``error``) and the HTTP status it maps to (``status``); one renderer
(:mod:`broker.oauth.response`, served by :mod:`broker.web.errors`) turns any of them into the RFC 6749 §5.2 JSON
body. Messages (``description``) are written for operators and clients and never contain a token, key or secret.
The whole tree, with the module of each class outside this one::

    BrokerError
    ├── IdentityError                      identity.errors: SPIFFE ID, SVID, bundle, Workload API (its own tree)
    │   └── AttestationError, StateDirError, WorkloadApiServerError    (devtools.workload_api)
    ├── ConfigError                        bad configuration or policy file
    │   ├── YamlError                      _yaml: not a YAML document the broker accepts (also a ValueError)
    │   ├── WorkloadsFileError             registration.errors: the workloads file
    │   └── RegistrationEntryError         devtools.workload_api.entries: the dev entries file
    ├── NetworkError                       a peer could not be reached or broke the exchange
    │   ├── JwksFetchError                 verify.jwks: metadata or JWKS not fetched or unusable
    │   ├── FeedUnavailableError           verify.feed_transport: the revocation feed not reached or broken off
    │   └── ServerIdentityError            identity.spiffetls.connector: the server is not the expected SPIFFE ID
    │                                      (also an aiohttp.ClientError)
    ├── MetadataError                      oauth.metadata: RFC 8414 document unusable (also a ValueError)
    ├── JoseError                          jose.errors: a JWS, JWK or JWK Set the JOSE core refuses (its own tree)
    ├── RegistrationError                  registration.errors: the SPIRE Server API refused or failed
    ├── SidecarError                       appclient.sidecar: the sidecar's answer, for apps
    ├── TokenFileError                     sidecar.token_files: a token file could not be written
    ├── BindingMismatchError               appclient.common: token not bound to the presented certificate
    ├── StoreError                         the state store (broker.store) refused or failed; names what to do
    │   ├── StoreUrlError                  not a store URL the broker accepts (also a ConfigError)
    │   ├── StoreCorruptError              not a database, or another program's database: nothing was changed
    │   ├── StoreSchemaError               schema version newer than this broker, or older and not migrated
    │   │   └── StoreSchemaBehindError     older, migrations not allowed here (``current`` says which version)
    │   ├── StoreConflictError             a write the store refuses: duplicate, illegal state change, 2nd active
    │   └── StoreUnavailableError          cannot reach the store now (also TemporarilyUnavailableError, 503)
    ├── SealingError                       _sealing: a sealed record does not open (KEK not configured, changed)
    ├── KeyringError                       the signing keyring refused an operation; nothing changed
    │   └── UnknownKeyError, KeyNotLiveError, RotationTooEarlyError     (tokens.rotation)
    └── OAuthError                         RFC 6749 §5.2 / RFC 8693 §2.2.2 / RFC 6750 §3.1 wire errors
        ├── InvalidRequestError            invalid_request            400
        │   ├── MalformedBearerError       verify.bearer (RFC 6750 §3.1)
        │   └── BodyTooLargeError (413), UnsupportedMediaTypeError (415)   sidecar.errors: POST /v1/dpop-proof
        ├── InvalidClientError             invalid_client             401
        ├── InvalidGrantError              invalid_grant              400
        ├── InvalidTargetError             invalid_target             400 (RFC 8693 §2.2.2)
        ├── InvalidScopeError              invalid_scope              400
        ├── UnauthorizedClientError        unauthorized_client        400
        ├── UnsupportedGrantTypeError      unsupported_grant_type     400
        ├── InvalidTokenError              invalid_token              401 (RFC 6750 §3.1, RFC 8705 §3)
        │   └── MissingTokenError          verify.bearer: no credentials (RFC 6750 §3.1)
        ├── DpopProofError                 RFC 9449: a DPoP proof refused (oauth.dpop: one class per §4.3 check)
        │   ├── InvalidDpopProofError      invalid_dpop_proof         400 (§5; a resource server sends 401, §7.1)
        │   └── UseDpopNonceError          use_dpop_nonce             400 (§8; 401 at a resource server, §9),
        │                                  the fresh nonce in ``nonce`` and the ``DPoP-Nonce`` header
        ├── AccessDeniedError              access_denied              403
        │   └── WorkloadQuarantinedError   sidecar.errors: the feed says this workload is quarantined
        ├── ServerError                    server_error               500
        │   └── DpopKeyError               sidecar.errors: the SVID's key cannot sign a DPoP proof
        ├── TemporarilyUnavailableError    temporarily_unavailable    503
        │   ├── TokenServiceUnavailableError   sidecar.errors
        │   └── RevocationFeedStaleError   verify.feed: stale feed, failing closed (a resource server's 503)
        ├── DpopNotEnabledError            dpop_not_enabled           409 (sidecar.errors: token_binding = "mtls")
        ├── StaleTokenError                stale_token                409 (sidecar.errors: bound to a rotated key)
        └── TokenServiceRefusedError       sidecar.errors: the token service's code passed through (400/403)

Lower layers (aiohttp, grpc, OSError, cryptography) are translated where the broker calls them, each into the
branch above that names the failure (``NetworkError`` for transport, ``IdentityError`` for the Workload API).
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "BrokerError",
    "ConfigError",
    "DpopProofError",
    "InvalidClientError",
    "InvalidDpopProofError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTargetError",
    "InvalidTokenError",
    "KeyringError",
    "NetworkError",
    "OAuthError",
    "SealingError",
    "ServerError",
    "StoreConflictError",
    "StoreCorruptError",
    "StoreError",
    "StoreSchemaBehindError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "StoreUrlError",
    "TemporarilyUnavailableError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UseDpopNonceError",
]


class BrokerError(Exception):
    """Base of every error the broker raises on purpose.

    ``description`` is safe to log and to send to a client: callers must never put a token, a key or any
    other secret into it. ``detail`` is for the log and the operator only (by default the description; an error
    whose description is generic, such as :class:`StoreUnavailableError`, keeps its internal details there).
    """

    error: str = "server_error"
    status: int = 500

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.error)
        self.description = description
        self.detail = description
        self.headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class ConfigError(BrokerError):
    """A configuration or policy file is invalid; the message names the file, line and field."""

    error = "config_error"


class NetworkError(BrokerError):
    """A peer (an API, the sidecar, a server) could not be reached, or broke the exchange; not a config error."""

    error = "network_error"
    status = 502


class OAuthError(BrokerError):
    """An error with an OAuth wire code (RFC 6749 §5.2)."""

    error = "invalid_request"
    status = 400


class InvalidRequestError(OAuthError):
    """RFC 6749 §5.2: missing, repeated or malformed parameter."""

    error = "invalid_request"


class InvalidClientError(OAuthError):
    """RFC 6749 §5.2: client authentication failed (here: no valid X.509-SVID on the connection)."""

    error = "invalid_client"
    status = 401

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.headers["WWW-Authenticate"] = 'TLS realm="spiffe-broker"'


class InvalidGrantError(OAuthError):
    """RFC 6749 §5.2: the grant (here: the subject token) is invalid, expired or not the client's."""

    error = "invalid_grant"


class InvalidTargetError(OAuthError):
    """RFC 8693 §2.2.2: the requested audience or resource is unacceptable."""

    error = "invalid_target"


class InvalidScopeError(OAuthError):
    """RFC 6749 §5.2: the requested scope is invalid or exceeds what policy grants."""

    error = "invalid_scope"


class UnauthorizedClientError(OAuthError):
    """RFC 6749 §5.2: the client may not use this grant type."""

    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    """RFC 6749 §5.2: the grant type is not supported."""

    error = "unsupported_grant_type"


class InvalidTokenError(OAuthError):
    """RFC 6750 §3.1 / RFC 8705 §3: the access token is invalid or not bound to this connection."""

    error = "invalid_token"
    status = 401

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.headers["WWW-Authenticate"] = f'Bearer error="{self.error}"'


class DpopProofError(OAuthError):
    """RFC 9449: a DPoP proof was refused; catch this for either code below. Each §4.3 check has its own subclass
    in :mod:`broker.oauth.dpop` (``reason`` names it); the description never quotes the proof, token or key."""

    error = "invalid_dpop_proof"
    reason = "invalid_dpop_proof"


class InvalidDpopProofError(DpopProofError):
    """RFC 9449 §5 (token endpoint, 400) and §7.1 (resource server, which answers 401): the proof is invalid."""

    error = "invalid_dpop_proof"


class UseDpopNonceError(DpopProofError):
    """RFC 9449 §8 (token endpoint, 400) and §9 (resource server, 401): send a proof with this server nonce.

    ``nonce`` is the fresh nonce; it also goes out as the ``DPoP-Nonce`` response header (§8.1)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str = "", *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce
        self.headers["DPoP-Nonce"] = nonce


class AccessDeniedError(OAuthError):
    """The request was understood and refused by policy."""

    error = "access_denied"
    status = 403


class ServerError(OAuthError):
    """RFC 6749 §5.2 (via §4.1.2.1): an unexpected condition; details stay in the server log."""

    error = "server_error"
    status = 500


class TemporarilyUnavailableError(OAuthError):
    """The service cannot handle the request now (dependency down); retry later."""

    error = "temporarily_unavailable"
    status = 503


class StoreError(BrokerError):
    """The state store refused or failed; the message names the store (never its password) and what to do."""

    error = "store_error"


class StoreUrlError(StoreError, ConfigError):
    """The store URL is not one the broker accepts (``sqlite:///path``, ``postgresql://...``, ``memory:``)."""

    error = "config_error"


class StoreCorruptError(StoreError):
    """The store is not a database, or is another program's database; the broker changed nothing in it."""


class StoreSchemaError(StoreError):
    """The store's schema version is newer than this broker knows, or older and migrations are not allowed."""


class StoreSchemaBehindError(StoreSchemaError):
    """The store's schema is older than this broker's and the caller did not allow migrations."""

    def __init__(self, description: str, *, current: int) -> None:
        super().__init__(description)
        self.current = current


class StoreConflictError(StoreError):
    """A write the store refuses: a duplicate key, an illegal state change, a second active signing key."""


class StoreUnavailableError(StoreError, TemporarilyUnavailableError):
    """The store cannot be reached now (connection refused, timeout, pool exhausted); retry later.

    The message (the store URL redacted, a path, the driver's words) is kept in ``detail`` and ``str()`` for the
    log; the client-facing ``description`` is the generic :data:`PUBLIC_DESCRIPTION`.
    """

    error = "temporarily_unavailable"
    status = 503
    PUBLIC_DESCRIPTION = "state store unavailable; retry later"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.description = self.PUBLIC_DESCRIPTION


class SealingError(BrokerError):
    """A sealed record (a wrapped signing key, an API-key secret) does not open: its KEK is not configured, or the
    record or its associated data changed. Nothing was changed; the message says which KEK to configure."""

    error = "sealing_error"


class KeyringError(BrokerError):
    """The signing keyring refused an operation (unknown or no longer live kid, a rotation too early); nothing
    changed."""

    error = "keyring_error"
    status = 409
