"""The grant decision: every check in order, each refusal with its code, the hold time's caps, and an audit record
for every grant and every refusal, never holding the secret."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from broker.apikeys.decision import GrantDecider, hold_until
from broker.apikeys.errors import ExceptionNotFoundError, GrantRefusedError
from broker.apikeys.model import SealedVersion
from broker.errors import TemporarilyUnavailableError
from broker.events.revocations import SubjectPattern
from tests.unit.apikeys.conftest import ADMIN, CANARY, CANARY_2, SHOP_PREFIX, WEB, World, sample

OTHER = "spiffe://example.org/ns/billing/sa/api"


async def test_a_grant_hands_the_current_version_until_the_hold_time(world: World) -> None:
    await world.add()
    grant = await world.decider.grant(WEB, "stripe")
    assert (grant.name, grant.version, grant.secret) == ("stripe", 1, CANARY.decode())
    assert grant.granted_at == world.now() and grant.hold_until == world.now() + world.rules.hold_time
    assert grant.header_or_query_value() == f"Bearer {CANARY.decode()}"
    assert CANARY.decode() not in repr(grant)
    [body] = [body for event, body in await world.events() if event == "apikey.granted"]
    assert body == {"spiffe_id": WEB, "name": "stripe", "version": 1,
                    "hold_until": int(grant.hold_until.timestamp())}  # fmt: skip
    assert CANARY not in await world.journal_bytes()


async def _refused(world: World, spiffe_id: str, name: str = "stripe") -> GrantRefusedError:
    with pytest.raises(GrantRefusedError) as refused:
        await world.decider.grant(spiffe_id, name)
    return refused.value


async def _last_refusal(world: World) -> dict[str, object]:
    return [body for event, body in await world.events() if event == "apikey.refused"][-1]


async def test_an_unknown_name_is_not_found_and_audited(world: World) -> None:
    with pytest.raises(ExceptionNotFoundError) as refused:
        await world.decider.grant(WEB, "nope")
    assert (refused.value.status, refused.value.error) == (404, "not_found")
    assert await _last_refusal(world) == {"spiffe_id": WEB, "name": "nope", "reason": "not_found", "version": None}


async def test_a_name_that_is_no_dns_label_is_not_found_and_not_copied_to_the_journal(world: World) -> None:
    with pytest.raises(ExceptionNotFoundError):
        await world.decider.grant(WEB, "../../admin%00")
    assert (await _last_refusal(world))["name"] == ""


async def test_a_spiffe_id_not_allowed_is_refused(world: World) -> None:
    await world.add()
    refused = await _refused(world, OTHER)
    assert (refused.status, refused.error, refused.reason) == (403, "access_denied", "not_allowed")
    assert "SPIFFE ID not allowed" in refused.description
    assert await _last_refusal(world) == {"spiffe_id": OTHER, "name": "stripe", "reason": "not_allowed",
                                          "version": None}  # fmt: skip


@pytest.mark.parametrize(
    ("caller", "granted"),
    [
        ("spiffe://example.org/ns/shop/sa/web", True),
        ("spiffe://example.org/ns/shop/sa/worker/x", True),
        ("spiffe://example.org/ns/shop", False),
        ("spiffe://example.org/ns/shopping/sa/web", False),
        ("spiffe://other.org/ns/shop/sa/web", False),
    ],
    ids=["under the prefix", "deeper under it", "the prefix itself", "a sibling sharing letters", "other domain"],
)
async def test_a_prefix_pattern_allows_the_ids_under_its_path_only(world: World, caller: str, granted: bool) -> None:
    await world.add(sample(allowed=(SubjectPattern.parse(SHOP_PREFIX),)))
    if granted:
        assert (await world.decider.grant(caller, "stripe")).version == 1
    else:
        assert (await _refused(world, caller)).reason == "not_allowed"


@pytest.mark.parametrize("action", ["suspend", "revoke"])
async def test_a_suspended_or_revoked_exception_is_refused_with_its_status(world: World, action: str) -> None:
    await world.add()
    await getattr(world.registry, action)("stripe", "incident", ADMIN)
    refused = await _refused(world, WEB)
    status = "suspended" if action == "suspend" else "revoked"
    assert refused.reason == status and f"the exception is {status}" in refused.description


async def test_an_expired_exception_is_refused(world: World) -> None:
    await world.add(sample(expires_at=world.now() + timedelta(days=1)))
    world.clock.advance(86400)
    assert (await _refused(world, WEB)).reason == "expired"


async def test_an_overdue_review_is_tolerated_within_the_grace_then_refused(world: World) -> None:
    await world.add(sample(review_interval=timedelta(days=10)))
    due = world.now() + timedelta(days=10)
    world.clock.advance(timedelta(days=10 + 6).total_seconds())
    assert (await world.decider.grant(WEB, "stripe")).version == 1  # overdue by 6 days, grace 7
    world.clock.advance(timedelta(days=1, seconds=1).total_seconds())
    refused = await _refused(world, WEB)
    assert refused.reason == "review_overdue"
    assert refused.description == f"review overdue since {due.isoformat().replace('+00:00', 'Z')}"
    await world.registry.review("stripe", ADMIN, "reviewed, still needed")
    assert (await world.decider.grant(WEB, "stripe")).version == 1


@pytest.mark.parametrize("pattern", [WEB, SHOP_PREFIX], ids=["exact", "prefix"])
async def test_a_quarantined_caller_is_refused_and_gets_no_catalog(world: World, pattern: str) -> None:
    await world.add()
    world.quarantine(pattern)
    assert (await _refused(world, WEB)).reason == "quarantined"
    with pytest.raises(GrantRefusedError, match="quarantined"):
        await world.decider.catalog(WEB)


async def test_a_quarantine_view_that_cannot_vouch_for_itself_fails_closed(world: World) -> None:
    await world.add()

    class Stale:
        def quarantine_of(self, subject: str, now: object) -> None:
            raise TemporarilyUnavailableError("the revocation log has not been confirmed")

    decider = GrantDecider(world.store.apikeys, world.keks, world.rules, Stale(), world.trail, clock=world.clock)
    with pytest.raises(TemporarilyUnavailableError):
        await decider.grant(WEB, "stripe")
    assert (await _last_refusal(world))["reason"] == "unavailable"


async def test_the_hold_never_outlasts_the_expiry(world: World) -> None:
    await world.add(sample(expires_at=world.now() + timedelta(seconds=20)))
    assert (await world.decider.grant(WEB, "stripe")).hold_until == world.now() + timedelta(seconds=20)


async def test_a_superseded_version_is_held_no_longer_than_its_rotation_grace(world: World) -> None:
    record = await world.add()
    now = world.now()
    superseded = SealedVersion("stripe", 1, b"", "kek", now, superseded_at=now - timedelta(minutes=59, seconds=30))
    assert hold_until(now, record, superseded, world.rules) == now + timedelta(seconds=30)
    current = replace(superseded, superseded_at=None)
    assert hold_until(now, record, current, world.rules) == now + world.rules.hold_time


async def test_after_a_rotation_every_grant_hands_the_new_version(world: World) -> None:
    await world.add()
    await world.registry.rotate("stripe", CANARY_2, ADMIN)
    grant = await world.decider.grant(WEB, "stripe")
    assert (grant.version, grant.secret) == (2, CANARY_2.decode())


async def test_a_full_audit_trail_refuses_the_grant_so_no_secret_leaves_unrecorded(world: World) -> None:
    await world.add()

    class Full:
        def record(self, event: object) -> bool:
            return False

    decider = GrantDecider(world.store.apikeys, world.keks, world.rules, world.quarantines, Full(), clock=world.clock)
    with pytest.raises(TemporarilyUnavailableError, match="audit journal"):
        await decider.grant(WEB, "stripe")


async def test_the_catalog_lists_what_the_caller_may_use_now_and_no_secret(world: World) -> None:
    await world.add()
    await world.add(sample(name="maps", target=replace(sample().target, host="maps.example.com")))
    await world.add(sample(name="billing", allowed=(SubjectPattern.parse(OTHER),)))
    await world.registry.suspend("maps", "incident", ADMIN)
    catalog = await world.decider.catalog(WEB)
    assert [entry.name for entry in catalog.entries] == ["stripe"]
    assert catalog.entries[0].placeholder == "spiffe-broker:exception/stripe"
    assert CANARY.decode() not in repr(catalog)


async def test_no_secret_reaches_a_log_line_or_an_error_at_debug(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await world.add()
    await world.decider.grant(WEB, "stripe")
    descriptions = []
    for caller in (OTHER, WEB):
        if caller == WEB:
            await world.registry.suspend("stripe", "incident", ADMIN)
        with pytest.raises(GrantRefusedError) as refused:
            await world.decider.grant(caller, "stripe")
        descriptions.append(refused.value.description)
    await world.registry.reveal("stripe", ADMIN, "check")
    assert CANARY.decode() not in caplog.text and not any(CANARY.decode() in d for d in descriptions)
    assert CANARY not in await world.journal_bytes()
