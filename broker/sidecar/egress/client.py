"""The egress proxy's client of the token service: the catalog, grants and reports of API-key exceptions.

The three calls of :mod:`broker.apikeys.grant`, at the issuer URL plus their path, over mTLS with the workload's
X.509-SVID, the token service authenticated by SPIFFE ID before any byte is sent
(:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector`, as for the token exchange):

* ``GET /v1/apikeys`` -> :class:`~broker.apikeys.grant.Catalog`;
* ``POST /v1/apikeys/{name}/grant`` -> :class:`~broker.apikeys.grant.Grant` (the secret: the body is never logged
  and a malformed one is refused without quoting it);
* ``POST /v1/apikeys/report`` <- :class:`~broker.apikeys.grant.EgressReport`, answered 204.

A JSON refusal (403 ``access_denied``, 404 ``not_found``) is :class:`ApiKeyRefusedError`, its code and description
kept (sanitised); a transport failure, a timeout, a 5xx or an answer that is not the wire form is
:class:`ApiKeyServiceUnavailableError`. When the X.509-SVID rotates, the keep-alive session is replaced so new
calls present the new certificate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from broker.apikeys.grant import (
    CATALOG_PATH,
    GRANT_PATH,
    REPORT_PATH,
    Catalog,
    EgressReport,
    Grant,
    catalog_from_wire,
    grant_from_wire,
    report_to_wire,
)
from broker.errors import NetworkError
from broker.identity.errors import IdentityError
from broker.identity.source import X509ContextSource
from broker.identity.spiffetls.connector import map_network_errors
from broker.identity.spiffetls.context import ServerIdMatcher
from broker.identity.spiffetls.session import SvidSession
from broker.oauth.metadata import check_issuer
from broker.sidecar.errors import safe_description

__all__ = ["ApiKeyClient", "ApiKeyLink", "ApiKeyRefusedError", "ApiKeyServiceUnavailableError"]

_T = TypeVar("_T")
_MAX_BODY = 4 * 1024 * 1024  # a catalog of thousands of exceptions fits; a grant is a few KiB


class ApiKeyServiceUnavailableError(NetworkError):
    """The token service could not be reached, failed (5xx), or answered something that is not the wire form."""


class ApiKeyRefusedError(NetworkError):
    """The token service refused (403, 404): ``error`` and ``description`` are its own, sanitised."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"the token service refused (HTTP {status}, {error}): {description}")
        self.status = status
        self.error_code = error
        self.refusal = description


class ApiKeyLink(Protocol):
    """What the egress proxy needs from the token service (the seam tests replace)."""

    async def catalog(self) -> Catalog: ...

    async def grant(self, name: str) -> Grant: ...

    async def report(self, report: EgressReport) -> None: ...

    async def aclose(self) -> None: ...


def _refusal(status: int, raw: bytes) -> ApiKeyRefusedError:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    return ApiKeyRefusedError(
        status,
        safe_description(error)[:64] if isinstance(error, str) and error else "access_denied",
        safe_description(description) if isinstance(description, str) else "",
    )


class ApiKeyClient:
    """The real :class:`ApiKeyLink` (see the module docstring)."""

    def __init__(
        self, *, source: X509ContextSource, issuer: str, server_id: ServerIdMatcher, timeout: float = 5.0
    ) -> None:
        self._source = source
        self._base = check_issuer(issuer).rstrip("/")
        self._session = SvidSession(source, server_id, timeout)

    async def catalog(self) -> Catalog:
        raw = await self._call("GET", CATALOG_PATH, None, expect=200)
        return self._parse(raw, catalog_from_wire, "catalog")

    async def grant(self, name: str) -> Grant:
        raw = await self._call("POST", GRANT_PATH.format(name=quote(name, safe="")), None, expect=200)
        grant = self._parse(raw, grant_from_wire, "grant")
        if grant.name != name:
            raise ApiKeyServiceUnavailableError(f"the token service granted {grant.name!r} when asked for {name!r}")
        return grant

    async def report(self, report: EgressReport) -> None:
        await self._call("POST", REPORT_PATH, report_to_wire(report), expect=204)

    async def aclose(self) -> None:
        await self._session.aclose()

    @staticmethod
    def _parse(raw: bytes, parse: Callable[[Any], _T], what: str) -> _T:
        try:
            return parse(json.loads(raw))
        except ValueError as exc:  # grant_from_wire never quotes the secret; json's errors quote a position only
            message = str(exc) if what != "grant" else "not the grant wire form"
            raise ApiKeyServiceUnavailableError(f"the token service sent an unusable {what}: {message}") from None

    async def _call(self, method: str, path: str, body: object, *, expect: int) -> bytes:
        url = self._base + path

        def failed(exc: Exception) -> ApiKeyServiceUnavailableError:
            return ApiKeyServiceUnavailableError(f"{method} {url}: {type(exc).__name__}")

        try:
            session = self._session.get()
        except IdentityError as exc:  # no X.509-SVID yet: nothing to connect with
            raise ApiKeyServiceUnavailableError(exc.description) from None
        with map_network_errors(failed):
            async with session.request(method, url, json=body, allow_redirects=False) as response:
                status = response.status
                raw = await response.content.read(_MAX_BODY + 1)
        if status == expect and len(raw) <= _MAX_BODY:
            return raw
        if status in (400, 401, 403, 404, 409):
            raise _refusal(status, raw[:_MAX_BODY])
        raise ApiKeyServiceUnavailableError(f"{method} {url}: HTTP {status}")
