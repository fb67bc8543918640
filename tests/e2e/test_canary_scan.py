"""Canary scan: plant a unique secret in every kind of input of `spiffe-broker dev --log-level DEBUG`, make real
valid requests too (so real access tokens and JWT-SVIDs exist in the run), then grep every log line and every
error response body of the run for the canaries, every token and JWT-SVID, and any private key.

What is planted where, and what the scanner looks for: ``_canary_plant``. The scanner is proved able to find
each kind of leak (``test_the_scanner_finds_each_kind_of_planted_leak``), and the run is proved to have made
real tokens, error responses and DEBUG lines (``test_the_run_is_not_vacuous``), so a clean scan means something.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from broker.identity.spiffetls.context import client_ssl_context
from broker.identity.workloadapi.pb import workload_pb2 as pb
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.devstack_process import DevProcess
from tests.e2e._canary_plant import (
    RUN,
    Harvest,
    canary,
    canary_jwt,
    key_lines,
    malformed_requests,
    raw_send,
    scan,
    split_http,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class Run:
    """One planting run against one dev process: a harvest, plus the clients it needs."""

    def __init__(self, dev: DevProcess, workload: WorkloadApiSvidSource) -> None:
        self.dev, self.workload, self.harvest = dev, workload, Harvest()
        self.mtls: ssl.SSLContext = client_ssl_context(workload, server_id=None)
        self.port = int(dev.issuer.rsplit(":", 1)[1])
        self.demo_port = int(dev.demo_url.rsplit(":", 1)[1])

    async def http(self, what: str, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        connector = aiohttp.UnixConnector(path=self.dev.sidecar_socket) if url.startswith("http://sc") else None
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, url, **kwargs) as response,
        ):
            body = await response.read()
        self.harvest.record(what, response.status, body)
        return response.status, body

    async def raw(self, what: str, data: bytes, **where: Any) -> None:
        self.harvest.record(what, *split_http(await raw_send(data, **where)))

    async def valid_requests(self) -> None:
        """Real tokens and JWT-SVIDs, so that the scan has real secrets to look for."""
        h, dev = self.harvest, self.dev
        params = {"audience": dev.demo_audience, "scope": "hello:read"}
        status, body = await self.http("sidecar token", "GET", "http://sc/v1/token", params=params)
        assert status == 200, body
        h.secrets["sidecar access token"] = json.loads(body)["access_token"]
        jwt_svid = (await self.workload.fetch_jwt_svid(dev.issuer)).token
        h.secrets["JWT-SVID for the token service"] = jwt_svid
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": jwt_svid,
            "subject_token_type": JWT_TYPE,
            "audience": dev.demo_audience,
        }
        status, body = await self.http("token exchange", "POST", f"{dev.issuer}/token", data=form, ssl=self.mtls)
        assert status == 200, body
        h.secrets["exchanged access token"] = json.loads(body)["access_token"]
        headers = {"Authorization": f"Bearer {h.secrets['sidecar access token']}"}
        status, body = await self.http("demo call", "GET", dev.hello_url, headers=headers, ssl=self.mtls)
        assert status == 200, body
        h.secrets["JWT-SVID for the demo API"] = (await self.workload.fetch_jwt_svid(dev.demo_audience)).token

    async def token_service(self) -> None:
        dev, c = self.dev, canary
        real_svid = self.harvest.secrets["JWT-SVID for the token service"]
        wrong_audience_svid = self.harvest.secrets["JWT-SVID for the demo API"]
        exchange = [("grant_type", TOKEN_EXCHANGE), ("subject_token_type", JWT_TYPE), ("audience", dev.demo_audience)]
        forms: list[list[tuple[str, str]]] = [
            [*exchange, ("subject_token", canary_jwt("form-subject"))],
            [*exchange, ("subject_token", wrong_audience_svid)],  # a real JWT-SVID, for another audience
            [
                *exchange,
                ("subject_token", real_svid),
                ("audience", "https://nope.example"),
                (c("form-key"), c("form-value")),
            ],
            [
                ("grant_type", c("form-grant")),
                ("client_assertion", canary_jwt("form-assertion")),
                ("actor_token", canary_jwt("form-actor")),
            ],
            [*exchange, ("subject_token", real_svid), ("subject_token", canary_jwt("form-repeat"))],
            [*exchange, ("subject_token", real_svid), ("actor_token", canary_jwt("form-actor-alone"))],
        ]
        for index, form in enumerate(forms):
            await self.http(f"token form {index}", "POST", f"{dev.issuer}/token", data=form, ssl=self.mtls)
        headers = {
            "Authorization": f"Bearer {canary_jwt('authz')}",
            "DPoP": canary_jwt("dpop"),
            "Cookie": c("cookie"),
            "X-Canary": c("header"),
        }
        await self.http(
            "token headers",
            "POST",
            f"{dev.issuer}/token?access_token={c('query')}",
            data=forms[0],
            headers=headers,
            ssl=self.mtls,
        )
        await self.http(
            "token json body",
            "POST",
            f"{dev.issuer}/token",
            data=f'{{"subject_token": "{c("json")}"}}',
            headers={"Content-Type": "application/json"},
            ssl=self.mtls,
        )
        await self.http(
            "token deflate",
            "POST",
            f"{dev.issuer}/token",
            data=c("deflate").encode(),
            headers={"Content-Encoding": "deflate", "Content-Type": "application/x-www-form-urlencoded"},
            ssl=self.mtls,
        )
        await self.http("token GET", "GET", f"{dev.issuer}/token?subject_token={c('get-query')}", ssl=self.mtls)
        for index, data in enumerate(malformed_requests("token-raw", "127.0.0.1", real_svid)):
            await self.raw(f"token malformed {index}", data.encode("latin-1"), port=self.port, tls=self.mtls)

    async def sidecar(self) -> None:
        c, secret = canary, self.harvest.secrets["sidecar access token"]
        headers = {
            "Authorization": f"Bearer {canary_jwt('sc-authz')}",
            "DPoP": canary_jwt("sc-dpop"),
            "X-Canary": c("sc-header"),
        }
        await self.http(
            "sidecar headers", "GET", f"http://sc/v1/token?audience=x&access_token={c('sc-query')}", headers=headers
        )
        await self.http("sidecar POST", "POST", "http://sc/v1/token", data=c("sc-body"))
        await self.http("sidecar path", "GET", f"http://sc/{c('sc-path')}")
        for index, data in enumerate(malformed_requests("sc-raw", "localhost", secret)):
            await self.raw(f"sidecar malformed {index}", data.encode("latin-1"), unix=self.dev.sidecar_socket)

    async def demo_api(self) -> None:
        c, dev = canary, self.dev
        for index, token in enumerate([canary_jwt("demo-bearer"), self.harvest.secrets["exchanged access token"]]):
            headers = {"Authorization": f"Bearer {token}", "DPoP": canary_jwt("demo-dpop")}
            no_cert = ssl.create_default_context(cadata=dev.ca().x509_bundle().to_pem().decode())
            no_cert.check_hostname = False  # the exchanged token is bound to another audience, or no cert: refused
            await self.http(
                f"demo refused {index}",
                "GET",
                f"{dev.hello_url}?access_token={c('demo-q')}",
                headers=headers,
                ssl=no_cert if index else self.mtls,
            )
        for index, data in enumerate(
            malformed_requests("demo-raw", "127.0.0.1", self.harvest.secrets["exchanged access token"])
        ):
            await self.raw(f"demo malformed {index}", data.encode("latin-1"), port=self.demo_port, tls=self.mtls)

    async def workload_api(self) -> None:
        path = self.dev.workload_api.removeprefix("unix://")
        secret = self.harvest.secrets["JWT-SVID for the demo API"]
        metadata = {
            "authorization": f"Bearer {canary_jwt('wl-authz')}",
            "x-canary": canary("wl-meta"),
            "x-svid": secret,
        }
        calls = [
            (
                "FetchJWTSVID",
                pb.JWTSVIDRequest(audience=["x"]),
                pb.JWTSVIDResponse,
                {**metadata, "workload.spiffe.io": "true"},
            ),
            ("FetchJWTSVID", pb.JWTSVIDRequest(audience=["x"]), pb.JWTSVIDResponse, metadata),  # no security header
            (
                "ValidateJWTSVID",
                pb.ValidateJWTSVIDRequest(audience="x", svid=canary_jwt("wl-validate")),
                pb.ValidateJWTSVIDResponse,
                {"workload.spiffe.io": "true"},
            ),
            (
                "ValidateJWTSVID",
                pb.ValidateJWTSVIDRequest(audience="wrong", svid=secret),
                pb.ValidateJWTSVIDResponse,
                {"workload.spiffe.io": "true"},
            ),
        ]
        for method, request, reply, meta in calls:
            channel = Channel(path=path)
            try:
                async with channel.request(
                    f"/SpiffeWorkloadAPI/{method}", Cardinality.UNARY_UNARY, type(request), reply, metadata=meta
                ) as stream:
                    await stream.send_message(request, end=True)
                    await stream.recv_message()
                self.harvest.record(f"workload {method}", 200, b"")
            except GRPCError as exc:
                self.harvest.record(f"workload {method}", 400, f"{exc.status.name}: {exc.message}".encode())
            finally:
                channel.close()

    async def files(self) -> None:
        """Broken edits of the policy and entries files, with canaries in comments; then the good files again."""
        policy = Path(self.dev.banner.split("policy", 1)[1].split()[0])
        entries = self.dev.state_dir / "example.org" / "workload-api" / "entries.yaml"
        for path, reloaded in ((policy, "policy reloaded"), (entries, "registration entries loaded")):
            good = path.read_text()
            path.write_text(f"# {canary('file-comment')}\n{good}\n  - [[[ broken\n")
            await _log_grows(self.dev, "ERROR", before=self.dev.stderr().count("ERROR"))
            path.write_text(f"# restored {RUN}\n" + good)
            await _log_grows(self.dev, reloaded, before=self.dev.stderr().count(reloaded))


async def _log_grows(dev: DevProcess, needle: str, *, before: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while dev.stderr().count(needle) <= before:
        assert time.monotonic() < deadline, f"{needle!r} never logged"
        await asyncio.sleep(0.05)


async def _plant_everything(dev: DevProcess) -> Harvest:
    async with WorkloadApiSvidSource(address=dev.workload_api) as workload:
        run = Run(dev, workload)
        await run.valid_requests()
        for step in (run.token_service, run.sidecar, run.demo_api, run.workload_api, run.files):
            await step()
    return run.harvest


@pytest.fixture(scope="module")
def harvest(dev: DevProcess) -> Iterator[tuple[Harvest, str, list[str]]]:
    """The whole run; then the log, read once every planted request has been answered and the files reloaded."""
    result = asyncio.run(_plant_everything(dev))
    yield result, dev.stderr(), key_lines(dev.state_dir)


def _leaks_in(text: str, harvest: Harvest, keys: list[str]) -> list[str]:
    return scan(text, harvest.secrets, keys)


def test_the_scanner_finds_each_kind_of_planted_leak() -> None:
    secrets = {"a token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"}
    keys = ["MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"]
    planted = {
        "canary": f"INFO x: saw {canary('self-check')}",
        "whole token": f"DEBUG y: {secrets['a token']}",
        "token signature": "DEBUG y: sig c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "pem": "ERROR z: -----BEGIN EC PRIVATE KEY-----",
        "jwk d": 'DEBUG k: {"kty": "EC", "d": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}',
        "key file line": f"DEBUG k: {keys[0]}",
    }
    for kind, line in planted.items():
        assert scan(line, secrets, keys), f"the scanner missed a planted {kind}"
    assert scan("INFO broker: all good, 1 rule, kid abc", secrets, keys) == []


def test_the_run_is_not_vacuous(harvest: tuple[Harvest, str, list[str]], dev: DevProcess) -> None:
    result, log, keys = harvest
    assert len(result.secrets) == 4 and all(v.count(".") == 2 for v in result.secrets.values())
    assert len(result.error_bodies()) >= 25, result.responses
    assert " DEBUG " in log and keys, "the dev process logs at DEBUG and wrote private keys"
    token_bodies = [body.decode() for what, _, body in result.responses if what in ("sidecar token", "token exchange")]
    assert all(scan(body, result.secrets, keys) for body in token_bodies), "the scanner sees this run's real tokens"
    key_file = next(dev.state_dir.rglob("ca.key"))
    assert scan(key_file.read_text(), {}, keys), f"the scanner sees the private key in {key_file}"
    assert "policy reloaded" in log and "policy not reloaded" in log, "the log covers the broken and the good files"


def test_no_log_line_holds_a_canary_token_jwt_svid_or_key(harvest: tuple[Harvest, str, list[str]]) -> None:
    result, log, keys = harvest
    leaks = [f"{leak}: {line[:160]}" for line in log.splitlines() for leak in _leaks_in(line, result, keys)]
    assert leaks == [], "\n".join(leaks[:40]) + f"\n({len(leaks)} leaks)"


def test_no_error_body_holds_a_canary_token_jwt_svid_or_key(harvest: tuple[Harvest, str, list[str]]) -> None:
    result, _, keys = harvest
    leaks = [
        f"{what}: {leak}"
        for what, body in result.error_bodies()
        for leak in _leaks_in(body.decode("latin-1"), result, keys)
    ]
    assert leaks == [], leaks


def test_no_response_echoes_a_canary(harvest: tuple[Harvest, str, list[str]]) -> None:
    result, _, _ = harvest
    echoed = [what for what, _, body in result.responses if f"CNRY{RUN}".encode() in body]
    assert echoed == [], echoed
