"""Every ``/metrics`` endpoint, scraped after a known sequence of requests, counts exactly those (issue 13).

The parts are the dev stack's: the dev Workload API, the stateful token service (SQLite store) and a sidecar, each
with its own ``/metrics`` listener (``[metrics] port = 0``: each a free port). The app asks the sidecar three times
for a token for the demo API (one exchange, then two cache hits) and once for an audience the policy does not
name (one exchange, refused with ``invalid_target``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.devtools.stack import DevStack
from tests.unit.dev_stack_helpers import ask_sidecar, dev_stack, token_of

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NOT_IN_POLICY = "spiffe://example.org/not-in-policy"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path, metrics={"port": 0}) as running:
        yield running


async def scrape(url: str) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def known_sequence(stack: DevStack) -> list[str]:
    """Three asks for the demo API's audience, one for an audience outside the policy; the tokens given."""
    tokens = []
    for _ in range(3):
        status, body = await ask_sidecar(stack, stack.demo_audience)
        assert status == 200, body
        tokens.append(body)
    status, body = await ask_sidecar(stack, NOT_IN_POLICY)
    assert status == 403 and "invalid_target" in body
    return tokens


async def test_each_part_serves_metrics_on_its_own_listener(stack: DevStack) -> None:
    assert sorted(stack.metrics) == ["sidecar", "token_service", "workload_api"]
    for part, url in stack.metrics.items():
        _, samples = await scrape(url)
        assert value(samples, "spiffe_broker_build_info", version=_version(samples), part=part) == 1


def _version(samples: Samples) -> str:
    return next(dict(labels)["version"] for name, labels in samples if name == "spiffe_broker_build_info")


async def test_the_token_service_counts_each_exchange_by_grant_type_and_outcome(stack: DevStack) -> None:
    await known_sequence(stack)

    _, samples = await scrape(stack.metrics["token_service"])

    requests = "spiffe_broker_requests_total"
    assert value(samples, requests, endpoint="/token", grant_type="token_exchange", outcome="ok") == 1
    assert value(samples, requests, endpoint="/token", grant_type="token_exchange", outcome="invalid_target") == 1
    assert sum(v for (name, labels), v in samples.items() if name == requests and ("endpoint", "/token") in labels) == 2
    issued = "spiffe_broker_tokens_issued_total"
    assert value(samples, issued, grant_type="token_exchange", binding="x5t#S256") == 1
    assert value(samples, "spiffe_broker_exchange_duration_seconds_count", grant_type="token_exchange") == 1
    assert value(samples, "spiffe_broker_request_duration_seconds_count", endpoint="/token") == 2
    # the same JWT-SVID twice: validated once, then found in the memo
    assert value(samples, "spiffe_broker_jwt_svid_cache_total", result="miss") == 1
    assert value(samples, "spiffe_broker_jwt_svid_cache_total", result="hit") == 1
    assert value(samples, "spiffe_broker_signing_key_age_seconds") >= 0
    assert value(samples, "spiffe_broker_signing_key_next_rotation_seconds") > 0
    assert value(samples, "spiffe_broker_quarantined_subjects") == 0


async def test_the_sidecar_counts_hits_misses_errors_and_exchanges(stack: DevStack) -> None:
    await known_sequence(stack)

    _, samples = await scrape(stack.metrics["sidecar"])

    requests = "spiffe_broker_sidecar_token_requests_total"
    assert value(samples, requests, result="hit") == 2
    assert value(samples, requests, result="miss") == 1  # one per request: the refused one is an error only
    assert value(samples, requests, result="error") == 1
    assert value(samples, "spiffe_broker_sidecar_refreshes_total", outcome="ok") == 1
    assert value(samples, "spiffe_broker_sidecar_refreshes_total", outcome="error") == 1
    assert value(samples, "spiffe_broker_sidecar_exchange_duration_seconds_count") == 2  # the refused one too
    svid_left = value(samples, "spiffe_broker_sidecar_svid_expiry_seconds")
    assert 0 < svid_left <= 3600
    token_left = value(samples, "spiffe_broker_sidecar_token_expiry_seconds", audience=stack.demo_audience)
    assert 0 < token_left <= 300
    assert ("spiffe_broker_sidecar_token_expiry_seconds", frozenset({("audience", NOT_IN_POLICY)})) not in samples


async def test_the_workload_api_counts_calls_by_method(stack: DevStack) -> None:
    await known_sequence(stack)

    _, samples = await scrape(stack.metrics["workload_api"])

    calls = "spiffe_broker_workload_api_requests_total"
    # two exchanges, one JWT-SVID: the sidecar's source keeps it until half its lifetime, as a SPIRE agent does
    assert value(samples, calls, method="FetchJWTSVID", outcome="ok") == 1
    assert not any(name == calls and ("outcome", "PERMISSION_DENIED") in labels for name, labels in samples)


TOKENISH = [
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}"),  # a JWT or JWS header
    re.compile(r"[A-Za-z0-9_-]{40,}"),  # a long base64url run: a key, a thumbprint, a secret
    re.compile(r"[0-9a-fA-F]{32,}"),  # a long hex run: a digest, a jti
    re.compile(r"-----BEGIN"),
]


async def test_no_label_value_looks_like_a_token_jwt_or_secret(stack: DevStack) -> None:
    tokens = await known_sequence(stack)
    secrets = [token_of(body) for body in tokens]

    for url in stack.metrics.values():
        text, samples = await scrape(url)
        assert not any(secret in text for secret in secrets)
        for _, labels in samples:
            assert not {"jti", "token", "kid", "secret"} & {name for name, _ in labels}
            for _, label_value in labels:
                assert not any(pattern.search(label_value) for pattern in TOKENISH), label_value


CONTRACT = Path(__file__).parents[2] / "deploy" / "monitoring" / "metrics.txt"
# Exported only when configured or used: per-client labels, the egress proxy, and series no sample has filled yet.
CONDITIONAL = {
    "spiffe_broker_client_requests_total",
    "spiffe_broker_egress_requests_total",
    "spiffe_broker_egress_bytes_total",
    "spiffe_broker_sidecar_feed_lag_seconds",
}


def contract() -> dict[str, tuple[str, frozenset[str]]]:
    """deploy/monitoring/metrics.txt, the names the alerts and the dashboard may use: name -> (type, labels)."""
    entries = {}
    for line in CONTRACT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, *labels = line.split()
            entries[name] = (kind, frozenset(labels))
    return entries


def exported(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """The spiffe_broker_* families a scrape shows: name (as the contract writes it) -> (type, labels)."""
    families = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("spiffe_broker_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        families[name] = (family.type, frozenset(labels))
    return families


async def test_what_the_parts_export_is_the_metrics_contract_the_alerts_use(stack: DevStack) -> None:
    await known_sequence(stack)
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for url in stack.metrics.values():
        found.update(exported((await scrape(url))[0]))

    promised = contract()
    assert set(found) <= set(promised), "exported but not in the contract"
    for name, (kind, labels) in found.items():
        promised_kind, promised_labels = promised[name]
        assert kind == promised_kind, name
        assert labels == promised_labels or not labels, name  # a family with no sample yet shows no labels
    assert set(promised) - set(found) <= CONDITIONAL
