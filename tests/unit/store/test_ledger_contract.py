"""The issuance ledger store contract: batches, idempotent ``jti``, blast radius and pruning, on all three stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from broker.events.revocations import SubjectPattern
from broker.store import Store
from broker.tokens.ledger import BlastRadius, LedgerEntry
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

BINDING = "x5t#S256=" + "A" * 43


def entry(jti: str, *, kid: str = "k1", sub: str = "web", aud: tuple[str, ...] = ("https://api",),
          minutes: int = 5, issued: int = 0) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(
        jti=jti,
        kid=kid,
        subject=f"spiffe://example.org/{sub}",
        audience=aud,
        scope=("read", "write"),
        binding=BINDING,
        issued_at=T0 + timedelta(minutes=issued),
        expires_at=T0 + timedelta(minutes=issued + minutes),
    )


async def test_an_empty_ledger_has_no_blast_radius(store: Store) -> None:
    radius = await store.ledger.blast_radius("k1", T0)
    assert radius == BlastRadius("k1", 0, (), (), None, 0)


async def test_blast_radius_counts_live_tokens_of_the_kid_by_subject_and_audience(store: Store) -> None:
    await store.ledger.record(
        [
            entry("j1", sub="web", aud=("https://api", "https://db")),
            entry("j2", sub="web", minutes=9),
            entry("j3", sub="batch"),
            entry("j4", sub="web", kid="k2"),  # another key
            entry("j5", sub="old", minutes=1),  # expired at T0+2min
        ]
    )
    radius = await store.ledger.blast_radius("k1", T0 + timedelta(minutes=2))
    assert radius.live_tokens == 3
    assert radius.subjects == (("spiffe://example.org/web", 2), ("spiffe://example.org/batch", 1))
    assert radius.audiences == (("https://api", 3), ("https://db", 1))
    assert radius.valid_until == T0 + timedelta(minutes=9)
    assert radius.distinct_subjects == 2


async def test_blast_radius_lists_only_the_top_subjects_but_counts_them_all(store: Store) -> None:
    await store.ledger.record([entry(f"j{i}", sub=f"s{i % 4}") for i in range(10)])
    radius = await store.ledger.blast_radius("k1", T0, top=2)
    assert radius.subjects == (("spiffe://example.org/s0", 3), ("spiffe://example.org/s1", 3))
    assert (radius.distinct_subjects, radius.live_tokens) == (4, 10)


async def test_a_token_expiring_exactly_now_is_not_live(store: Store) -> None:
    await store.ledger.record([entry("j1", minutes=5)])
    assert (await store.ledger.blast_radius("k1", T0 + timedelta(minutes=5))).live_tokens == 0
    assert (await store.ledger.blast_radius("k1", T0 + timedelta(minutes=5, microseconds=-1))).live_tokens == 1


async def test_a_repeated_jti_is_skipped_and_the_first_entry_stands(store: Store) -> None:
    await store.ledger.record([entry("j1", sub="first")])
    await store.ledger.record([entry("j1", sub="second"), entry("j2", sub="second")])  # a retried batch
    radius = await store.ledger.blast_radius("k1", T0)
    assert radius.subjects == (("spiffe://example.org/first", 1), ("spiffe://example.org/second", 1))


async def test_prune_deletes_only_what_expired_before_the_cutoff(store: Store) -> None:
    await store.ledger.record([entry("j1", minutes=1), entry("j2", minutes=2), entry("j3", minutes=3)])
    assert await store.ledger.prune(T0 + timedelta(minutes=2)) == 1
    assert (await store.ledger.blast_radius("k1", T0)).live_tokens == 2
    assert await store.ledger.prune(T0 + timedelta(minutes=2)) == 0


async def test_batches_from_replicas_all_land(open_replica: OpenReplica) -> None:
    replicas = [await open_replica() for _ in range(2)]
    await asyncio.gather(*(replicas[b % 2].ledger.record([entry(f"b{b}-{i}") for i in range(50)]) for b in range(6)))
    assert (await replicas[1].ledger.blast_radius("k1", T0)).live_tokens == 300


async def test_an_empty_batch_is_a_no_op(store: Store) -> None:
    await store.ledger.record([])
    assert (await store.ledger.blast_radius("k1", T0)).live_tokens == 0


async def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.ledger.blast_radius("k1", T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.ledger.prune(T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"jti": ""}, "names its jti"),
        ({"expires_at": T0 - timedelta(seconds=1)}, "expire before"),
        ({"scope": ("a b",)}, "scope-token"),
        ({"issued_at": T0.replace(tzinfo=None)}, "timezone-aware"),
    ],
    ids=["no-jti", "expires-before-issued", "scope-with-space", "naive-time"],
)
def test_a_malformed_entry_is_refused(change: dict[str, object], message: str) -> None:
    fields = {
        "jti": "j", "kid": "k", "subject": "s", "audience": ("a",), "scope": (), "binding": BINDING,
        "issued_at": T0, "expires_at": T0,
    }  # fmt: skip
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        LedgerEntry(**fields)  # type: ignore[arg-type]


async def test_live_tokens_of_an_exact_pattern_are_that_subjects_only(store: Store) -> None:
    await store.ledger.record(
        [entry("j1", sub="a", minutes=9), entry("j2", sub="a", minutes=3), entry("j3", sub="a/b"),
         entry("j4", sub="ab"), entry("j5", sub="a", minutes=1)]
    )  # fmt: skip
    live = await store.ledger.live_tokens(SubjectPattern.parse("spiffe://example.org/a"), T0 + timedelta(minutes=1))
    assert live == [("j2", T0 + timedelta(minutes=3)), ("j1", T0 + timedelta(minutes=9))]  # j5 expires exactly then


async def test_live_tokens_of_a_prefix_are_every_subject_under_it_and_not_the_prefix_itself(store: Store) -> None:
    subjects = ["a", "a/b", "a/b/c", "ab", "ab/c", "a0", "a.b", "b/a/c"]
    await store.ledger.record([entry(f"j-{s}", sub=s) for s in subjects])
    live = await store.ledger.live_tokens(SubjectPattern.parse("spiffe://example.org/a/*"), T0)
    assert sorted(jti for jti, _ in live) == ["j-a/b", "j-a/b/c"]
    everyone = SubjectPattern.parse("spiffe://example.org/*", all_of_trust_domain=True)
    assert len(await store.ledger.live_tokens(everyone, T0)) == len(subjects)


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("spiffe://example.org/a_b/*", "a_b/x", "aXb/x"),
        ("spiffe://example.org/a_b", "a_b", "aXb"),
        ("spiffe://example.org/100%/*", "100%/x", "1000/x"),
        ("spiffe://example.org/back\\slash/*", "back\\slash/x", "backslash/x"),
    ],
    ids=["underscore-prefix", "underscore-exact", "percent-prefix", "backslash-prefix"],
)
async def test_live_tokens_treat_like_wildcards_in_the_pattern_literally(
    store: Store, pattern: str, matching: str, not_matching: str
) -> None:
    await store.ledger.record([entry("yes", sub=matching), entry("no", sub=not_matching)])
    # Built directly: SubjectPattern.parse refuses % and \ (not SPIFFE ID characters), the ledger stores any text.
    live = await store.ledger.live_tokens(SubjectPattern(pattern), T0)
    assert [jti for jti, _ in live] == ["yes"]


async def test_live_tokens_are_ordered_by_expiry_then_jti_and_limited(store: Store) -> None:
    await store.ledger.record([entry(f"j{i}", sub=f"t/{i}", minutes=5 + i % 3) for i in range(9)])
    prefix = SubjectPattern.parse("spiffe://example.org/t/*")
    every = await store.ledger.live_tokens(prefix, T0)
    assert [jti for jti, _ in every] == ["j0", "j3", "j6", "j1", "j4", "j7", "j2", "j5", "j8"]
    assert await store.ledger.live_tokens(prefix, T0, limit=4) == every[:4]
    with pytest.raises(ValueError, match="limit"):
        await store.ledger.live_tokens(prefix, T0, limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.ledger.live_tokens(prefix, T0.replace(tzinfo=None))


def test_an_entry_has_no_field_for_the_token() -> None:
    assert "token" not in LedgerEntry.__dataclass_fields__
