"""Audit event bodies: canonical JSON, stable names, and never a token, a JWT, a key or a secret."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import fields

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit._event import Event, _plain
from broker.audit.apikey_events import (
    ApiKeyAdded,
    ApiKeyEgressRefused,
    ApiKeyGranted,
    ApiKeyRefused,
    ApiKeyResumed,
    ApiKeyRevealed,
    ApiKeyReviewed,
    ApiKeyRevokedRecorded,
    ApiKeyRotated,
    ApiKeySuspended,
    ApiKeyUpdated,
    ApiKeyUsed,
)
from broker.audit.events import (
    EVENT_TYPES,
    REDACTED,
    AdminCall,
    AuditEvent,
    ClientDisabled,
    ClientEnabled,
    ClientRegistered,
    ClientRemoved,
    KekRotated,
    KeyCreated,
    KeyRetired,
    KeyRevoked,
    KeyRotated,
    PolicyRefused,
    PolicyReloaded,
    StoreMigrated,
    SubjectQuarantinedRecorded,
    SubjectReleasedRecorded,
    TokenIssued,
    TokenRefused,
    TokenRevocationRecorded,
    canonical_json,
    scrub,
    token_issued_body,
)

JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93ZWIifQ.c2lnbmF0dXJl"
PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode()
)
TOKEN_SHAPES = re.compile(r"eyJ[A-Za-z0-9_-]+\.|-----BEGIN|PRIVATE KEY")

EXAMPLES: list[AuditEvent] = [
    TokenIssued("jti-1", "k1", "spiffe://example.org/web", "spiffe://example.org/web", ("https://api",),
                ("read",), "x5t#S256=abc", "tls_client_auth", 1_800_000_000),
    TokenRefused("invalid_grant", "spiffe://example.org/web", "urn:ietf:params:oauth:grant-type:token-exchange", 400),
    KeyRotated("k2", "k1", "k3"),
    KeyCreated("k9", "next", "generated"),
    KeyRetired("k0"),
    KeyRevoked("k1", "k2", 12, "spiffe://example.org/admin"),
    KekRotated("kek-1", "kek-2", 3),
    PolicyReloaded("/etc/broker/policy.yaml", "ab" * 32),
    PolicyRefused("/etc/broker/policy.yaml", "line 3: audience must be a URL"),
    StoreMigrated("postgresql://broker@db/broker?sslmode=verify-full", 1, 2),
    AdminCall("spiffe://example.org/admin", "POST", "/admin/v1/keys/k1/revoke", "ok", 200, {"reason": "drill"}),
    TokenRevocationRecorded("0190-jti", "spiffe://example.org/app", 1_800_000_000, "client", "spiffe://example.org/app"),
    SubjectQuarantinedRecorded("spiffe://example.org/app/*", "incident-42", None, 3, "spiffe://example.org/admin"),
    SubjectReleasedRecorded("spiffe://example.org/app/*", "spiffe://example.org/admin"),
    ClientRegistered("billing", "spiffe://example.org/legacy/billing", None, ("k1",), 1, ("ES256",), 60,
                     "spiffe://example.org/admin"),
    ClientDisabled("billing", "spiffe://example.org/admin"),
    ClientEnabled("billing", None),
    ClientRemoved("billing", "spiffe://example.org/legacy/billing", "spiffe://example.org/admin"),
    ApiKeyAdded("stripe", "spiffe://example.org/admin", after={"owner": "payments", "current_version": 1}),
    ApiKeyUpdated("stripe", "spiffe://example.org/admin", {"owner": "payments"}, {"owner": "billing"}, "handover"),
    ApiKeyRotated("stripe", "spiffe://example.org/admin", {"current_version": 1}, {"current_version": 2}),
    ApiKeySuspended("stripe", "spiffe://example.org/admin", {"state": "active"}, {"state": "suspended"}, "SEC-1"),
    ApiKeyResumed("stripe", "spiffe://example.org/admin", {"state": "suspended"}, {"state": "active"}),
    ApiKeyRevokedRecorded("stripe", "spiffe://example.org/admin", {"state": "active"}, {"state": "revoked"}, "leak"),
    ApiKeyReviewed("stripe", "spiffe://example.org/admin", {"last_review_by": ""},
                   {"last_review_by": "spiffe://example.org/admin"}, "still-needed"),
    ApiKeyRevealed("stripe", "spiffe://example.org/admin", after={"version": 2}, reason="migration"),
    ApiKeyGranted("spiffe://example.org/web", "stripe", 2, 1_800_000_060),
    ApiKeyRefused("spiffe://example.org/web", "stripe", "review_overdue"),
    ApiKeyEgressRefused("spiffe://example.org/web", "stripe", "https://paste.example.net:443/",
                        "placeholder_to_other_target", 2, 1_800_000_000, 1_800_000_003, True),
    ApiKeyUsed("spiffe://example.org/web", "stripe", 2, "https://api.stripe.com:443", 17, 1_800_000_003),
]  # fmt: skip


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event)
def test_a_body_is_canonical_json(event: AuditEvent) -> None:
    body = event.body()
    assert body == canonical_json(json.loads(body))
    assert b" " not in body.replace(b"line 3: audience must be a URL", b"")


def test_every_event_type_has_a_distinct_stable_name() -> None:
    assert sorted(EVENT_TYPES) == [
        "admin.call", "apikey.added", "apikey.egress_refused", "apikey.granted", "apikey.refused", "apikey.resumed",
        "apikey.revealed", "apikey.reviewed", "apikey.revoked", "apikey.rotated", "apikey.suspended",
        "apikey.updated", "apikey.used", "client.disabled", "client.enabled", "client.registered", "client.removed",
        "key.created",
        "key.kek_rotated", "key.retired", "key.revoked", "key.rotated", "policy.refused", "policy.reloaded",
        "store.migrated", "subject.quarantined", "subject.released", "token.issued", "token.refused", "token.revoked",
    ]  # fmt: skip
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES.values())


def test_token_issued_body_names_the_token_by_its_claims() -> None:
    body = json.loads(EXAMPLES[0].body())
    assert body == {
        "aud": ["https://api"], "auth_method": "tls_client_auth", "binding": "x5t#S256=abc",
        "client_id": "spiffe://example.org/web", "exp": 1_800_000_000, "jti": "jti-1", "kid": "k1",
        "scope": ["read"], "sub": "spiffe://example.org/web",
    }  # fmt: skip


@pytest.mark.parametrize("secret", [JWT, PEM, PEM[:60]], ids=["jwt", "pem-private-key", "cut-pem"])
@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES), ids=str)
def test_no_body_holds_a_token_or_a_key_even_when_a_field_is_given_one(event_type: str, secret: str) -> None:
    """Every string field of every event type, filled with a JWT or a PEM private key, comes out redacted."""
    cls = EVENT_TYPES[event_type]
    example = next(e for e in EXAMPLES if type(e) is cls)
    values = {f.name: _poisoned(getattr(example, f.name), secret) for f in fields(cls)}
    body = cls(**values).body().decode()
    assert TOKEN_SHAPES.search(body) is None
    assert base64.b64encode(secret.encode()).decode() not in body
    assert REDACTED in body


def _poisoned(value: object, secret: str) -> object:
    if isinstance(value, str):
        return f"x {secret} y"
    if isinstance(value, tuple):
        return (f"x {secret} y",)
    if isinstance(value, dict):
        return {key: f"x {secret} y" for key in value}
    return value


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES), ids=str)
def test_no_event_has_a_field_for_a_secret(event_type: str) -> None:
    names = {f.name for f in fields(EVENT_TYPES[event_type])}
    assert not names & {"token", "access_token", "assertion", "subject_token", "key", "private_key", "secret", "kek"}


def test_an_admin_call_keeps_the_path_without_its_query() -> None:
    call = AdminCall("spiffe://example.org/admin", "GET", "/admin/v1/keys?secret=hunter2", "ok", 200)
    assert json.loads(call.body())["path"] == "/admin/v1/keys"


def test_long_free_text_is_cut() -> None:
    assert len(scrub("x" * 1000)) == 300


def test_a_value_of_an_unexpected_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not float"):
        StoreMigrated("memory:", 1.5, 2).body()  # type: ignore[arg-type]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event)
def test_the_fast_body_is_byte_for_byte_the_scrubbed_one(event: AuditEvent) -> None:
    """The hot path skips per-field scrubbing only when it would change nothing."""
    assert isinstance(event, Event)
    slow = canonical_json({f.name: _plain(getattr(event, f.name)) for f in fields(event)})
    assert event.body() == slow


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from([JWT, PEM[:80], "x" * 301, 'a"\\b\n'])


@settings(max_examples=300, deadline=None)
@given(
    strings=st.lists(_TEXT, min_size=6, max_size=6),
    aud=st.lists(_TEXT, min_size=1, max_size=3).map(tuple),
    scope=st.lists(_TEXT, max_size=3).map(tuple),
    exp=st.integers(min_value=0, max_value=2**40),
)
def test_the_token_issued_body_made_per_batch_is_the_events_own(
    strings: list[str], aud: tuple[str, ...], scope: tuple[str, ...], exp: int
) -> None:
    """The recorder's direct path (:func:`token_issued_body`) writes the bytes the generic one writes, scrubbing
    and cutting included: quotes, control characters, non-ASCII, a JWT, a PEM block, a long string."""
    jti, kid, sub, client_id, binding, auth_method = strings
    event = TokenIssued(jti, kid, sub, client_id, aud, scope, binding, auth_method, exp)
    slow = canonical_json({f.name: _plain(getattr(event, f.name)) for f in fields(event)})
    assert token_issued_body(jti, kid, sub, client_id, aud, scope, binding, auth_method, exp) == slow
    assert event.body() == slow
