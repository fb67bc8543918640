"""A client of the admin API (what the keys, store, audit, quarantine, clients, exceptions and status commands
call), over mTLS.

::

    context = client_ssl_context(source, server_id=SpiffeId.parse("spiffe://example.org/broker"))
    async with AdminClient("https://broker.example.org:8443", context) as admin:
        change = await admin.revoke("k-2025-01", reason="key leaked in a CI log")

The connection presents the caller's X.509-SVID from ``ssl_context`` (a
:func:`~broker.identity.spiffetls.context.client_ssl_context`), and
:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector` checks the server's SPIFFE ID (the context's
``server_id``, when given) before a request byte is sent. An error body becomes the class of its code
(:data:`broker.admin.errors.ADMIN_ERRORS`; an unknown code :class:`~broker.admin.errors.AdminError`), with the
server's description; an unreachable server or an answer of another shape is a
:class:`~broker.errors.NetworkError`. Changes return :class:`AdminChange`: the result, and whether the audit
journal recorded its outcome.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from broker.admin.apikeys_wire import (
    ExceptionView,
    RotatedView,
    amendment_body,
    decode_exception,
    decode_exceptions,
    decode_report,
    decode_revealed,
    decode_rotated,
    exception_body,
)
from broker.admin.clock_drift import DEFAULT_LIMIT, ClockDrift, decode_clock_drift
from broker.admin.errors import ADMIN_ERRORS, AdminError
from broker.admin.ports import AuditQuery, KeyInfo, KeyRevocation, KeyRotation, StoreStatus
from broker.admin.wire import (
    AuditPage,
    WireError,
    client_registration,
    decode_audit_page,
    decode_client,
    decode_clients,
    decode_keys,
    decode_quarantine_added,
    decode_quarantine_released,
    decode_quarantines,
    decode_revocation,
    decode_rotation,
    decode_store_status,
)
from broker.apikeys.model import ApiKeyException
from broker.apikeys.registry import Amendment, Revealed
from broker.apikeys.report import Report
from broker.errors import BrokerError, NetworkError
from broker.events.revocations import SubjectQuarantined
from broker.identity.spiffetls.connector import ServerIdentityError, SpiffeTLSConnector, map_network_errors
from broker.identity.spiffetls.context import SourceSSLContext
from broker.tokens.clients import RegisteredClient
from broker.tokens.quarantine import Quarantined, Released

__all__ = ["AdminChange", "AdminClient"]

T = TypeVar("T")
_PREFIX = "/admin/v1"


@dataclass(frozen=True, slots=True)
class AdminChange(Generic[T]):
    """A change the server made; ``audited`` is False if its outcome did not reach the audit journal (the
    request did): tell the operator."""

    result: T
    audited: bool


class AdminClient:
    """Async client of ``/admin/v1`` at ``base_url`` (the token service's ``https://host:port``)."""

    def __init__(self, base_url: str, ssl_context: SourceSSLContext, *, timeout: float = 30.0) -> None:
        if not base_url.startswith("https://"):
            raise ValueError("the admin API is served over mTLS only: base_url must be https://")
        self._base = base_url.rstrip("/")
        self._context = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def list_keys(self) -> list[KeyInfo]:
        return _decoded(decode_keys, await self._call("GET", "/keys"))

    async def rotate(self, *, reason: str | None = None) -> AdminChange[KeyRotation]:
        document = await self._call("POST", "/keys/rotate", body=_reason(reason))
        return AdminChange(_decoded(decode_rotation, document), _audited(document))

    async def revoke(self, kid: str, *, reason: str | None = None) -> AdminChange[KeyRevocation]:
        document = await self._call("POST", f"/keys/{quote(kid, safe='')}/revoke", body=_reason(reason))
        return AdminChange(_decoded(decode_revocation, document), _audited(document))

    async def store_status(self) -> StoreStatus:
        return _decoded(decode_store_status, await self._call("GET", "/store"))

    async def audit(self, query: AuditQuery | None = None) -> AuditPage:
        query = query or AuditQuery()
        params = {"since": str(query.after), "limit": str(query.limit)}
        if query.event is not None:
            params["event"] = query.event
        if query.spiffe_id is not None:
            params["spiffe_id"] = str(query.spiffe_id)
        return _decoded(decode_audit_page, await self._call("GET", "/audit", params=params))

    async def quarantines(self) -> list[SubjectQuarantined]:
        """The quarantines in force (``quarantine list``)."""
        return _decoded(decode_quarantines, await self._call("GET", "/quarantines"))

    async def quarantine(
        self, pattern: str, *, reason: str, until: str | None = None, all_of_trust_domain: bool = False
    ) -> AdminChange[Quarantined]:
        """Quarantine ``pattern`` (``until``: RFC 3339 or a duration such as ``30m``, counted by the server)."""
        body: dict[str, Any] = {"pattern": pattern, "reason": reason}
        if until is not None:
            body["until"] = until
        if all_of_trust_domain:
            body["all_of_trust_domain"] = True
        document = await self._call("POST", "/quarantines", body=body)
        return AdminChange(_decoded(decode_quarantine_added, document), _audited(document))

    async def release_quarantine(self, pattern: str, *, reason: str | None = None) -> AdminChange[Released]:
        """End the quarantine of exactly ``pattern``; the tokens it revoked stay revoked."""
        document = await self._call("POST", "/quarantines/release", body={"pattern": pattern, **_reason(reason)})
        return AdminChange(_decoded(decode_quarantine_released, document), _audited(document))

    async def clients(self) -> list[RegisteredClient]:
        """Every registered client (``clients list``)."""
        return _decoded(decode_clients, await self._call("GET", "/clients"))

    async def client(self, client_id: str) -> RegisteredClient:
        """One registered client; :class:`~broker.admin.errors.ClientNotFoundError`."""
        return _decoded(decode_client, await self._call("GET", "/clients/show", params={"client_id": client_id}))

    async def add_client(self, client: RegisteredClient) -> AdminChange[RegisteredClient]:
        """Register ``client`` (its ``disabled`` and timestamps are the server's); the client as stored."""
        document = await self._call("POST", "/clients", body=client_registration(client))
        return AdminChange(_decoded(decode_client, document), _audited(document))

    async def set_client_disabled(
        self, client_id: str, disabled: bool, *, reason: str | None = None
    ) -> AdminChange[RegisteredClient]:
        path = "/clients/disable" if disabled else "/clients/enable"
        document = await self._call("POST", path, body={"client_id": client_id, **_reason(reason)})
        return AdminChange(_decoded(decode_client, document), _audited(document))

    async def remove_client(self, client_id: str, *, reason: str | None = None) -> AdminChange[RegisteredClient]:
        """Forget the client; what it was."""
        document = await self._call("POST", "/clients/remove", body={"client_id": client_id, **_reason(reason)})
        return AdminChange(_decoded(decode_client, document), _audited(document))

    async def apikeys(self) -> list[ExceptionView]:
        """Every API-key exception, revoked ones too (``exceptions list``)."""
        return _decoded(decode_exceptions, await self._call("GET", "/apikeys"))

    async def apikey(self, name: str) -> ExceptionView:
        """One exception with its versions; :class:`~broker.apikeys.errors.UnknownExceptionError`."""
        return _decoded(decode_exception, await self._call("GET", f"/apikeys/{quote(name, safe='')}"))

    async def add_apikey(
        self, record: ApiKeyException, secret: bytes, *, server_default_review: bool = False
    ) -> AdminChange[ExceptionView]:
        """Register ``record`` with ``secret`` as version 1 (sent in the body, base64; never in the URL);
        ``server_default_review``: the service's ``[apikeys] default_review_days``, not the record's interval."""
        body = {**exception_body(record), "secret_b64": base64.b64encode(secret).decode("ascii")}
        if server_default_review:
            del body["review_interval_days"]
        return self._change(decode_exception, await self._call("POST", "/apikeys", body=body))

    async def update_apikey(
        self, name: str, amendment: Amendment, *, reason: str | None = None
    ) -> AdminChange[ExceptionView]:
        body = {**amendment_body(amendment), **_reason(reason)}
        return self._change(decode_exception, await self._call("POST", _apikey(name, "update"), body=body))

    async def rotate_apikey(self, name: str, secret: bytes) -> AdminChange[RotatedView]:
        body = {"secret_b64": base64.b64encode(secret).decode("ascii")}
        return self._change(decode_rotated, await self._call("POST", _apikey(name, "rotate"), body=body))

    async def change_apikey(self, name: str, action: str, note: str | None = None) -> AdminChange[ExceptionView]:
        """``suspend``, ``resume`` or ``revoke`` (``note``: the reason) or ``review`` (``note``: the review note)."""
        if action not in ("suspend", "resume", "revoke", "review"):
            raise ValueError(f"not an exception state change: {action}")
        body = {} if note is None else {"note" if action == "review" else "reason": note}
        return self._change(decode_exception, await self._call("POST", _apikey(name, action), body=body))

    async def reveal_apikey(self, name: str, reason: str) -> AdminChange[Revealed]:
        """The current secret (audited by the service before it answers)."""
        document = await self._call("POST", _apikey(name, "reveal"), body={"reason": reason})
        return self._change(decode_revealed, document)

    async def apikeys_report(self, unused_days: int | None = None) -> Report:
        params = None if unused_days is None else {"unused_days": str(unused_days)}
        return _decoded(decode_report, await self._call("GET", "/apikeys-report", params=params))

    @staticmethod
    def _change(decode: Callable[[dict[str, Any]], T], document: dict[str, Any]) -> AdminChange[T]:
        return AdminChange(_decoded(decode, document), _audited(document))

    async def clock_drift(self, limit: int = DEFAULT_LIMIT) -> ClockDrift:
        """The ``limit`` worst client clock drifts seen by the replica that answers (``status``)."""
        return _decoded(decode_clock_drift, await self._call("GET", "/clock-drift", params={"limit": str(limit)}))

    async def _call(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        query = "" if not params else f"?{urlencode(params)}"  # every reserved character escaped, '%' too
        url = URL(f"{self._base}{_PREFIX}{path}{query}", encoded=True)

        def unreachable(exc: Exception) -> BrokerError:
            if isinstance(exc, ServerIdentityError):
                return exc
            return NetworkError(f"cannot reach the admin API at {self._base}: {str(exc) or type(exc).__name__}")

        with map_network_errors(unreachable):
            session = self._open()
            async with session.request(method, url, json=body, allow_redirects=False) as response:
                status, raw = response.status, await response.read()
        document = _json_object(raw, status, f"{method} {_PREFIX}{path}")
        if status != 200:
            raise _error(status, document, f"{method} {_PREFIX}{path}")
        return document

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = SpiffeTLSConnector(self._context)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session


def _apikey(name: str, action: str) -> str:
    return f"/apikeys/{quote(name, safe='')}/{action}"


def _reason(reason: str | None) -> dict[str, Any]:
    return {} if reason is None else {"reason": reason}


def _json_object(raw: bytes, status: int, call: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise NetworkError(f"admin API answered {call} with HTTP {status} and no JSON object: is it a token service?")
    return document


def _error(status: int, document: dict[str, Any], call: str) -> BrokerError:
    code = document.get("error")
    description = document.get("error_description")
    text = description if isinstance(description, str) and description else f"HTTP {status}"
    cls = ADMIN_ERRORS.get(code, AdminError) if isinstance(code, str) else AdminError
    error = cls(f"admin API refused {call}: {text}")
    if cls is AdminError:
        error.status = status
        error.error = code if isinstance(code, str) else AdminError.error
    return error


def _audited(document: dict[str, Any]) -> bool:
    return document.get("audited") is True


def _decoded(decode: Callable[[dict[str, Any]], T], document: dict[str, Any]) -> T:
    try:
        return decode(document)
    except WireError as exc:
        raise NetworkError(f"admin API answer not understood ({exc}): is the server the same version?") from None
