"""Records for the store contract suite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.tokens.keystore import KeyRecord, KeyState

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def key(kid: str, state: KeyState = KeyState.NEXT, *, minutes: int = 0) -> KeyRecord:
    return KeyRecord(
        kid=kid,
        algorithm="ES256",
        state=state,
        wrapped_key=b"\x00wrapped:" + kid.encode() + bytes(range(256)),
        kek_id="kek-1",
        public_jwk=f'{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"x","y":"y"}}',
        created_at=T0 + timedelta(minutes=minutes),
        activated_at=T0 if state is KeyState.ACTIVE else None,
    )
