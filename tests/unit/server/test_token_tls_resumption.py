"""The token service over resumed TLS sessions: RFC 8705 client authentication and certificate binding still hold.

A blocking ``ssl`` client in a thread, because asyncio's TLS layer cannot offer a saved session. Each request is
one connection (``Connection: close``), so the second request's connection is a resumed one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from broker.devtools.devca import DevCA
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS
from tests.unit.identity.spiffetls.test_resumption import present
from tests.unit.server.test_token_app import verify_token
from tests.unit.server.token_service_helpers import API, CLIENT_ID, Broker, client_context


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    resumed: bool
    session: ssl.SSLSession


def _post_token(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None) -> Answer:
    form = urlencode({"grant_type": GRANT_CLIENT_CREDENTIALS, "client_id": str(CLIENT_ID), "resource": API}).encode()
    head = (
        f"POST /token HTTP/1.1\r\nHost: broker\r\nConnection: close\r\nContent-Length: {len(form)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="broker", session=session) as tls,
    ):
        tls.sendall(head + form)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        assert tls.session is not None
        status_line, _, rest = reply.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return Answer(int(status_line.split()[1]), json.loads(body), bool(tls.session_reused), tls.session)


async def post_token(broker: Broker, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Answer:
    return await asyncio.to_thread(_post_token, broker.service.port, context, session)


async def test_a_resumed_session_gets_a_token_bound_to_the_certificate_of_that_session(
    broker: Broker, ca: DevCA
) -> None:
    """RFC 8705 §3: the certificate of the mutual-TLS session; resuming after a rotation keeps the old one bound."""
    before, after = ca.issue_x509_svid(CLIENT_ID, ttl=3600), ca.issue_x509_svid(CLIENT_ID, ttl=3600)
    client = client_context(before, ca)
    first = await post_token(broker, client)
    present(client, after)
    resumed = await post_token(broker, client, first.session)
    fresh = await post_token(broker, client)
    assert (first.resumed, resumed.resumed, fresh.resumed) == (False, True, False)
    assert {first.status, resumed.status, fresh.status} == {200}
    bound = [
        (await verify_token(broker, a.body["access_token"]))[1]["cnf"]["x5t#S256"] for a in (first, resumed, fresh)
    ]
    assert bound == [before.x5t_s256(), before.x5t_s256(), after.x5t_s256()]


async def test_a_resumed_session_whose_certificate_expired_is_refused(broker: Broker, ca: DevCA) -> None:
    """The SPIFFE checks run again on a resumed connection: the leaf's validity period is one of them."""
    client = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=2), ca)
    first = await post_token(broker, client)
    assert first.status == 200
    await asyncio.sleep(2.5)
    resumed = await post_token(broker, client, first.session)
    assert resumed.resumed
    assert resumed.status == 401 and resumed.body["error"] == "invalid_client"
