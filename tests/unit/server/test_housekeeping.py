"""The housekeeper prunes the replay cache with the ledger, every PRUNE_INTERVAL, at the clock's now."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.oauth.replay import ReplayKind, replay_key
from broker.server.housekeeping import PRUNE_INTERVAL, Housekeeper
from broker.server.stateful import open_state
from broker.testing import WEB_POLICY, ManualClock
from broker.tokens.policy import FilePolicyStore


def _rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM replay_cache").fetchone()[0])


async def test_expired_replay_entries_are_pruned_every_prune_interval(tmp_path: Path) -> None:
    generate_kek_file(tmp_path / "kek")
    (tmp_path / "policy.yaml").write_text(WEB_POLICY)
    policy = FilePolicyStore(tmp_path / "policy.yaml")
    settings = load_settings(None, {"state_dir": tmp_path / "state", "keyring": {"kek_file": tmp_path / "kek"}})
    clock = ManualClock(time.time())
    state = await open_state(settings, policy_store=policy, clock=clock)
    try:
        replay = state.store.replay
        keeper = Housekeeper(state.keyring, state.recorder, state.store.ledger, policy, clock, replay=replay)
        now = datetime.fromtimestamp(clock(), UTC)
        soon, later = (replay_key(ReplayKind.CLIENT_ASSERTION, "billing", jti) for jti in ("a", "b"))
        assert await replay.add(soon, now=now, expires_at=now + timedelta(seconds=30))
        assert await replay.add(later, now=now, expires_at=now + timedelta(hours=1))
        clock.advance(60)
        await keeper.tick()
        assert _rows(tmp_path / "state" / "broker.db") == 2  # not yet: the prune interval has not passed
        clock.advance(PRUNE_INTERVAL)
        await keeper.tick()
        assert _rows(tmp_path / "state" / "broker.db") == 1
        now = datetime.fromtimestamp(clock(), UTC)
        assert not await replay.add(later, now=now, expires_at=now + timedelta(hours=1))  # the live one stayed
    finally:
        await state.aclose()
