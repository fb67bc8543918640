"""The registry: every change checked before anything is written, sealed per version, compare-and-set, withdrawn on
the revocation log when it narrows, and audited with the admin, before and after, never the secret."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from broker._sealing import Kek, KekRing
from broker.apikeys.errors import (
    ExceptionConflictError,
    ExceptionExistsError,
    InvalidExceptionError,
    SecretUnavailableError,
    UnknownExceptionError,
)
from broker.apikeys.model import MAX_SECRET_BYTES, Delivery, Presentation, State, Target, secret_aad
from broker.apikeys.registry import Amendment, ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.events.revocations import ExceptionWithdrawn, SubjectPattern
from tests.unit.apikeys.conftest import ADMIN, CANARY, CANARY_2, SHOP_PREFIX, WEB, World, sample


async def test_add_seals_version_one_under_the_primary_kek_bound_to_name_and_version(world: World) -> None:
    stored = await world.add()
    assert (stored.state, stored.current_version, stored.revision) == (State.ACTIVE, 1, 1)
    assert stored.created_at == world.now() and stored.last_review_at is None
    [version] = await world.store.apikeys.versions("stripe")
    assert version.kek_id == world.keks.primary.kek_id and CANARY not in version.sealed
    assert world.keks.unseal(version.sealed, secret_aad("stripe", 1), version.kek_id) == CANARY


async def test_add_is_audited_with_the_admin_and_the_record_after_but_never_the_secret(world: World) -> None:
    await world.add()
    [(event, body)] = await world.events()
    assert event == "apikey.added" and body["actor"] == ADMIN and body["name"] == "stripe"
    assert body["before"] == {} and body["after"]["owner"] == "payments"
    assert body["after"]["allowed"] == [WEB] and body["after"]["kek_id"] == world.keks.primary.kek_id
    assert body["after"]["presentation"] == "header Authorization: Bearer {secret}"
    assert CANARY not in await world.journal_bytes()


async def test_the_submitted_state_review_and_version_fields_are_the_registrys_not_the_callers(world: World) -> None:
    forged = sample(state=State.SUSPENDED, last_review_by="spiffe://evil", current_version=7, revision=9)
    stored = await world.add(forged)
    assert (stored.state, stored.last_review_by, stored.current_version, stored.revision) == (State.ACTIVE, "", 1, 1)


BAD_SECRETS = [
    ("empty", b"", "empty"),
    ("too large", b"k" * (MAX_SECRET_BYTES + 1), "larger than 4096"),
    ("CR LF", b"sk_live_abc\r\nX-Injected: 1", "CR, LF"),
    ("LF", b"sk_live_abc\nmore", "CR, LF"),
    ("NUL", b"sk\x00live", "CR, LF, NUL"),
    ("not ASCII", "sk_lïve".encode(), "printable ASCII"),
    ("a placeholder", b"spiffe-broker:exception/stripe", "placeholder"),
    ("leading space", b" sk_live_abc", "leading or trailing space"),
]


@pytest.mark.parametrize(("secret", "says"), [b[1:] for b in BAD_SECRETS], ids=[b[0] for b in BAD_SECRETS])
async def test_a_bad_secret_is_refused_without_echoing_it_and_nothing_is_stored(
    world: World, secret: bytes, says: str
) -> None:
    with pytest.raises(InvalidExceptionError, match=says) as refused:
        await world.add(secret=secret)
    if len(secret) > 3:
        assert secret.decode("latin-1") not in refused.value.description
    assert await world.store.apikeys.list_all() == () and await world.events() == []


BAD_RECORDS = [
    ("ticket not matching the pattern", {"ticket": "sec-1234"}, "ticket must match"),
    ("ticket only starting well", {"ticket": "SEC-1234; drop"}, "ticket must match"),
    ("expiry past the lifetime cap", {"expires_at_days": 91}, "more than 90 days ahead"),
    ("expiry in the past", {"expires_at_days": -1}, "in the future"),
    ("wildcard host not allowed", {"target": Target("*.stripe.com", wildcard_host=True)}, "allow_wildcard_hosts"),
    ("reveal not allowed", {"delivery": Delivery.REVEAL}, "allow_reveal"),
    ("CR LF in the template", {"presentation": Presentation("header", "Authorization", "Bearer {secret}\r\nX: y")},
     "no CR or LF"),
    ("no secret slot", {"presentation": Presentation("header", "Authorization", "Bearer")}, "{secret} exactly once"),
    ("a hop-by-hop header", {"presentation": Presentation("header", "Connection")}, "hop-by-hop"),
    ("http target", {"target": Target("api.stripe.com", scheme="http")}, "https"),
    ("nobody allowed", {"allowed": ()}, "at least one SPIFFE ID"),
    ("no owner", {"owner": ""}, "owner"),
    ("not an e-mail contact", {"contact": "payments"}, "e-mail"),
    ("short justification", {"justification": "because"}, "justification"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "says"), [b[1:] for b in BAD_RECORDS], ids=[b[0] for b in BAD_RECORDS])
async def test_a_record_the_rules_refuse_is_invalid_and_nothing_is_stored(
    world: World, changes: dict[str, object], says: str
) -> None:
    if "expires_at_days" in changes:
        changes = {"expires_at": world.now() + timedelta(days=int(str(changes.pop("expires_at_days"))))}
    with pytest.raises(InvalidExceptionError, match=says):
        await world.add(sample(**changes))
    assert await world.store.apikeys.list_all() == () and await world.events() == []


async def test_wildcard_hosts_and_reveal_pass_when_the_rules_opt_in(world: World) -> None:
    world.registry.rules = replace(world.rules, allow_wildcard_hosts=True, allow_reveal=True)
    stored = await world.add(sample(target=Target("*.stripe.com", wildcard_host=True), delivery=Delivery.REVEAL))
    assert stored.target.wildcard_host and stored.delivery is Delivery.REVEAL


async def test_a_taken_name_is_refused_even_after_a_revocation(world: World) -> None:
    await world.add()
    await world.registry.revoke("stripe", "key leaked", ADMIN)
    with pytest.raises(ExceptionExistsError, match="never reused"):
        await world.add()


async def test_rotate_adds_the_next_version_and_the_old_one_stays_usable_for_the_grace(world: World) -> None:
    await world.add()
    rotated = await world.registry.rotate("stripe", CANARY_2, ADMIN)
    assert (rotated.version, rotated.superseded, rotated.withdrawn) == (2, 1, False)
    assert rotated.superseded_usable_until == world.now() + world.rules.rotation_grace
    old, new = await world.store.apikeys.versions("stripe")
    assert old.superseded_at == world.now() and new.superseded_at is None
    assert world.keks.unseal(new.sealed, secret_aad("stripe", 2), new.kek_id) == CANARY_2
    event, body = (await world.events())[-1]
    assert event == "apikey.rotated" and body["before"] == {"current_version": 1}
    assert body["after"]["current_version"] == 2
    journal = await world.journal_bytes()
    assert CANARY not in journal and CANARY_2 not in journal
    assert await world.withdrawals() == []


async def test_rotating_to_the_current_secret_is_refused(world: World) -> None:
    await world.add()
    with pytest.raises(InvalidExceptionError, match="the current one"):
        await world.registry.rotate("stripe", CANARY, ADMIN)
    assert len(await world.store.apikeys.versions("stripe")) == 1


async def test_a_rotation_grace_shorter_than_the_hold_time_withdraws_the_old_version_at_once(world: World) -> None:
    world.registry.rules = replace(world.rules, rotation_grace=timedelta(0))
    await world.add()
    rotated = await world.registry.rotate("stripe", CANARY_2, ADMIN)
    assert rotated.withdrawn and [w.name for w in await world.withdrawals()] == ["stripe"]


async def test_a_wrong_kek_is_a_clear_error_and_nothing_changes(world: World) -> None:
    await world.add()
    other = ApiKeyRegistry(world.store.apikeys, world.revocations, world.trail, KekRing(Kek.generate()),
                           world.rules, clock=world.clock)  # fmt: skip
    for attempt in (other.rotate("stripe", CANARY_2, ADMIN), other.reveal("stripe", ADMIN, "check the key")):
        with pytest.raises(SecretUnavailableError, match=f"KEK {world.keks.primary.kek_id}, which is not configured"):
            await attempt
    assert (await world.registry.get("stripe")).current_version == 1
    assert [event for event, _ in await world.events()] == ["apikey.added"]


@pytest.mark.parametrize("action", ["suspend", "revoke"])
async def test_suspend_and_revoke_append_a_withdrawal_after_the_write_and_audit_before_and_after(
    world: World, action: str
) -> None:
    await world.add()
    world.clock.advance(10)
    changed = await getattr(world.registry, action)("stripe", "investigating SEC-1301", ADMIN)
    state = State.SUSPENDED if action == "suspend" else State.REVOKED
    assert changed.state is state and changed.state_reason == "investigating SEC-1301"
    [withdrawal] = await world.withdrawals()
    hold = world.rules.hold_time + world.rules.leeway
    assert withdrawal == ExceptionWithdrawn("stripe", at=world.now(), until=world.now() + hold)
    event, body = (await world.events())[-1]
    assert event == f"apikey.{'suspended' if action == 'suspend' else 'revoked'}" and body["actor"] == ADMIN
    assert body["before"] == {"state": "active", "state_reason": ""} and body["reason"] == "investigating SEC-1301"
    assert body["after"]["state"] == state.value and body["after"]["withdrawal_seq"] == 1


async def test_suspend_again_appends_the_withdrawal_again_to_finish_one_that_did_not_reach_the_log(
    world: World,
) -> None:
    await world.add()
    await world.registry.suspend("stripe", "incident", ADMIN)
    again = await world.registry.suspend("stripe", "incident", ADMIN)
    assert again.revision == 2 and len(await world.withdrawals()) == 2


async def test_revocation_is_final(world: World) -> None:
    await world.add()
    await world.registry.revoke("stripe", "key leaked", ADMIN)
    for change in (
        world.registry.suspend("stripe", "x", ADMIN),
        world.registry.resume("stripe", ADMIN),
        world.registry.rotate("stripe", CANARY_2, ADMIN),
        world.registry.review("stripe", ADMIN, "fine"),
        world.registry.update("stripe", Amendment(owner="billing"), ADMIN),
    ):
        with pytest.raises(ExceptionConflictError, match="revoked"):
            await change
    again = await world.registry.revoke("stripe", "again", ADMIN)  # idempotent: the withdrawal appended again
    assert again.state is State.REVOKED and len(await world.withdrawals()) == 2


async def test_resume_needs_a_suspended_exception(world: World) -> None:
    await world.add()
    with pytest.raises(ExceptionConflictError, match="not suspended"):
        await world.registry.resume("stripe", ADMIN)
    await world.registry.suspend("stripe", "incident", ADMIN)
    resumed = await world.registry.resume("stripe", ADMIN, "resolved")
    assert resumed.state is State.ACTIVE and resumed.state_reason == ""
    event, body = (await world.events())[-1]
    assert event == "apikey.resumed" and body["after"] == {"state": "active", "state_reason": ""}


async def test_review_records_the_reviewer_and_the_time(world: World) -> None:
    await world.add()
    world.clock.advance(86400)
    reviewed = await world.registry.review("stripe", ADMIN, "still needed: no OAuth for payouts")
    assert reviewed.last_review_at == world.now() and reviewed.last_review_by == ADMIN
    event, body = (await world.events())[-1]
    assert event == "apikey.reviewed" and body["reason"] == "still needed: no OAuth for payouts"
    assert body["before"] == {"last_review_at": None, "last_review_by": ""}
    assert body["after"]["last_review_by"] == ADMIN


@pytest.mark.parametrize("note", ["", "   ", "x" * 201, "line\nbreak"], ids=["empty", "spaces", "long", "newline"])
async def test_a_reason_or_note_must_be_printable_text(world: World, note: str) -> None:
    await world.add()
    with pytest.raises(InvalidExceptionError, match="printable"):
        await world.registry.review("stripe", ADMIN, note)
    with pytest.raises(InvalidExceptionError, match="printable"):
        await world.registry.suspend("stripe", note, ADMIN)
    assert (await world.registry.get("stripe")).revision == 1


async def test_an_expiry_extension_is_capped_from_now(world: World) -> None:
    await world.add(sample(expires_at=world.now() + timedelta(days=10)))
    world.clock.advance(5 * 86400)
    extended = await world.registry.update("stripe", Amendment(expires_at=world.now() + timedelta(days=90)), ADMIN)
    assert extended.expires_at == world.now() + timedelta(days=90)
    with pytest.raises(InvalidExceptionError, match="more than 90 days ahead"):
        await world.registry.update("stripe", Amendment(expires_at=world.now() + timedelta(days=91)), ADMIN)
    assert await world.withdrawals() == []


async def test_an_update_that_narrows_who_may_use_it_withdraws_the_secret(world: World) -> None:
    await world.add(sample(allowed=(SubjectPattern.parse(SHOP_PREFIX),)))
    widened = await world.registry.update("stripe", Amendment(allowed=(SubjectPattern.parse(SHOP_PREFIX),
                                                                       SubjectPattern.parse(WEB))), ADMIN)  # fmt: skip
    assert len(widened.allowed) == 2 and await world.withdrawals() == []
    await world.registry.update("stripe", Amendment(allowed=(SubjectPattern.parse(WEB),)), ADMIN, "narrowed")
    assert [w.name for w in await world.withdrawals()] == ["stripe"]
    event, body = (await world.events())[-1]
    assert event == "apikey.updated" and body["before"] == {"allowed": [SHOP_PREFIX, WEB]}
    assert body["after"] == {"allowed": [WEB]} and body["reason"] == "narrowed"


async def test_an_update_that_changes_nothing_is_refused(world: World) -> None:
    await world.add()
    with pytest.raises(InvalidExceptionError, match="nothing to change"):
        await world.registry.update("stripe", Amendment(owner="payments"), ADMIN)


async def test_a_concurrent_change_is_a_conflict_not_a_lost_update(world: World) -> None:
    await world.add()
    stale = await world.registry.get("stripe")
    await world.registry.review("stripe", ADMIN, "reviewed first")
    with pytest.raises(ExceptionConflictError, match="changed meanwhile"):
        await world.registry._write(replace(stale, owner="billing"), world.now())


async def test_an_unknown_name_is_unknown_for_every_change(world: World) -> None:
    registry = world.registry
    changes = (registry.get("nope"), registry.suspend("nope", "x", ADMIN), registry.rotate("nope", CANARY, ADMIN),
               registry.reveal("nope", ADMIN, "x"))  # fmt: skip
    for change in changes:
        with pytest.raises(UnknownExceptionError, match="no API-key exception named 'nope'"):
            await change


async def test_reveal_returns_the_current_secret_after_its_audit_record(world: World) -> None:
    await world.add()
    await world.registry.rotate("stripe", CANARY_2, ADMIN)
    revealed = await world.registry.reveal("stripe", ADMIN, "migrating to the vendor's new SDK")
    assert (revealed.version, revealed.secret) == (2, CANARY_2.decode())
    assert CANARY_2.decode() not in repr(revealed)
    event, body = (await world.events())[-1]
    assert event == "apikey.revealed" and body["after"]["version"] == 2 and body["actor"] == ADMIN
    assert CANARY_2 not in await world.journal_bytes()


async def test_reveal_reveals_nothing_when_the_journal_refuses_its_record(world: World) -> None:
    await world.add()

    class Refusing:
        async def record_now(self, event: object) -> object:
            raise RuntimeError("journal down")

    registry = ApiKeyRegistry(world.store.apikeys, world.revocations, Refusing(), world.keks, world.rules,
                              clock=world.clock)  # fmt: skip
    with pytest.raises(RuntimeError):
        await registry.reveal("stripe", ADMIN, "check")


async def test_the_rules_come_from_the_configuration() -> None:
    from broker.config import ApiKeySettings

    rules = GovernanceRules.from_settings(ApiKeySettings(max_lifetime_days=30, ticket_pattern=r"OPS-\d+"), leeway=5)
    assert rules.max_lifetime == timedelta(days=30) and rules.ticket_pattern.fullmatch("OPS-12")
    assert rules.leeway == timedelta(seconds=5) and not rules.allow_reveal
