"""The egress proxy's side towards the targets: HTTPS only, the certificate verified, nothing added or kept.

* **TLS.** Every target is reached with TLS (SNI and the certificate's name checked against the target host),
  verified against the system CA store, or against ``[egress] ca_file`` only when one is configured. The request,
  with its secret, is written only after the handshake verified the target: a certificate that does not verify is
  :class:`~broker.sidecar.egress.errors.TargetCertificateError` (502) and the secret never leaves the sidecar.
* **Pass-through.** The session adds no header of its own (no ``User-Agent``, ``Accept`` or ``Accept-Encoding``: the
  proxy sets ``Accept-Encoding: identity`` itself, :mod:`~broker.sidecar.egress.headers`),
  keeps no cookies (a target's ``Set-Cookie`` goes to the app, never into a jar shared by every app of the pod),
  ignores ``HTTP_PROXY`` in its own environment, follows no redirect (the app decides), and does not decompress.
* **Failures before the response** map to one error each: certificate -> 502 ``target_certificate``, other TLS or
  connection failures -> 502 ``bad_gateway``, timeouts -> 504 ``gateway_timeout``. Their descriptions name the
  target's origin and the kind of failure, never the URL (its query may hold an injected secret). A failure once
  the connection is up (TLS verified: the request, key included, may have been written) is marked ``key_sent``:
  the proxy counts it as a use of the key although no response came back.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from broker.sidecar.egress.errors import BadGatewayError, GatewayTimeoutError, TargetCertificateError
from broker.sidecar.egress.routing import Destination

__all__ = ["READ_TIMEOUT", "Upstream", "target_tls_context"]

READ_TIMEOUT = 300.0  # seconds without a byte from a target before the exchange is given up
_SKIP = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_SENT = ": the request, with the key, may have reached it"


def target_tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify targets against ``ca_file`` if given, else the system store; host names checked; TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Upstream:
    """Opens requests to targets over one connection pool (see the module docstring)."""

    def __init__(
        self,
        *,
        ca_file: Path | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = READ_TIMEOUT,
        resolver: AbstractResolver | None = None,
        limit: int = 100,
    ) -> None:
        self._context = target_tls_context(ca_file)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._resolver = resolver
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def open(
        self, method: str, destination: Destination, url: str, headers: CIMultiDict[str], body: object | None
    ) -> aiohttp.ClientResponse:
        """Send the request and return the response once its headers are in (the caller reads and releases it)."""
        try:
            return await self._open_session().request(
                method, URL(url, encoded=True), headers=headers, data=body, allow_redirects=False,
                skip_auto_headers=_SKIP, ssl=self._context,
            )  # fmt: skip
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", "") or type(exc.certificate_error).__name__
            raise TargetCertificateError(
                f"the TLS certificate of {destination.origin} did not verify ({why}): nothing was sent to it"
            ) from None
        except aiohttp.ConnectionTimeoutError:
            raise GatewayTimeoutError(f"{destination.origin} could not be reached in time") from None
        except aiohttp.ClientSSLError as exc:
            raise BadGatewayError(f"TLS with {destination.origin} failed ({type(exc).__name__})") from None
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise BadGatewayError(f"{destination.origin} could not be reached ({type(exc).__name__})") from None
        except TimeoutError:
            raise GatewayTimeoutError(f"{destination.origin} did not answer in time{_SENT}", key_sent=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BadGatewayError(
                f"{destination.origin} did not answer ({type(exc).__name__}){_SENT}", key_sent=True
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._context, resolver=self._resolver, limit=self._limit)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=_SKIP,
            )  # fmt: skip
        return self._session
