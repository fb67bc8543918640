"""``spiffe-broker keys revoke`` (local, on SQLite) puts the kid on the revocation feed before it revokes it
(issue 10 item 5); an unknown or already revoked kid is not published."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.keys import keys
from broker.events.revocations import KeyRevoked
from broker.store import open_store
from broker.tokens.keystore import KeyState
from broker.tokens.policy import MAX_TOKEN_LIFETIME
from tests.unit.cli.state_helpers import key_states, seed

LEEWAY = MAX_UNCONFIRMED = 60  # the config's defaults


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG", "SPIFFE_BROKER_KEK",
                 "SPIFFE_BROKER_KEYRING__KEK_FILE", "SPIFFE_BROKER_KEYRING__LEEWAY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def _revocation_log(url: str) -> list[object]:
    async def read() -> list[object]:
        store = await open_store(url, migrate=False)
        try:
            return [e.event for e in (await store.revocations.read(0)).entries]
        finally:
            await store.close()

    return asyncio.run(read())


def test_revoke_publishes_the_kid_until_no_token_it_signed_can_be_valid(tmp_path: Path) -> None:
    seeded = seed(f"sqlite://{tmp_path}/broker.db", tmp_path)
    started = time.time()
    for kid in ("no-such-kid", seeded.active, seeded.active):  # unknown, live, already revoked
        CliRunner().invoke(keys, ["revoke", kid, "--store", seeded.url, "--kek-file", str(seeded.kek_file)])
    assert key_states(seeded.url)[seeded.active][0] is KeyState.REVOKED
    [published] = _revocation_log(seeded.url)
    assert isinstance(published, KeyRevoked) and published.kid == seeded.active
    assert published.expires_at.timestamp() >= int(started) + MAX_TOKEN_LIFETIME + LEEWAY + MAX_UNCONFIRMED
