"""Registration entries: the YAML format, strict validation, and the re-reading file store."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from broker._files import write_private_file
from broker.devtools.workload_api.entries import (
    FileEntryStore,
    InMemoryEntryStore,
    RegistrationEntry,
    RegistrationEntryError,
    Selector,
    dump_entries,
    parse_entries,
)

EXAMPLE = b"""
entries:
  - spiffe_id: spiffe://example.org/ns/shop/sa/web
    selectors: [unix:uid:1000]
    x509_svid_ttl: 60
    jwt_svid_ttl: 300
    dns_names: []
  - spiffe_id: spiffe://example.org/batch
    selectors: [unix:uid:1001, unix:gid:50]
    dns_names: [batch.example.org]
    hint: internal
"""


def test_parse_reads_the_documented_format() -> None:
    web, batch = parse_entries(EXAMPLE)
    assert str(web.spiffe_id) == "spiffe://example.org/ns/shop/sa/web"
    assert web.selectors == frozenset({Selector("uid", 1000)})
    assert (web.x509_svid_ttl, web.jwt_svid_ttl, web.dns_names) == (60.0, 300.0, ())
    assert batch.selectors == frozenset({Selector("uid", 1001), Selector("gid", 50)})
    assert (batch.x509_svid_ttl, batch.jwt_svid_ttl) == (None, 300.0)
    assert (batch.dns_names, batch.hint) == (("batch.example.org",), "internal")


def test_dump_then_parse_round_trips() -> None:
    entries = parse_entries(EXAMPLE)
    assert parse_entries(dump_entries(entries)) == entries


@pytest.mark.parametrize("document", [b"", b"entries: []", b"entries:"], ids=["empty", "empty-list", "null-list"])
def test_parse_of_empty_document_has_no_entries(document: bytes) -> None:
    assert parse_entries(document) == ()


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"entries: [", id="not-yaml"),
        pytest.param(b"- a", id="not-a-mapping"),
        pytest.param(b"entries: []\nextra: 1", id="unknown-top-level-key"),
        pytest.param(b"entries: {}", id="entries-not-a-list"),
        pytest.param(b"entries: [x]", id="entry-not-a-mapping"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1], ttl: 5}]", id="unknown-key"),
        pytest.param(b"entries: [{selectors: [unix:uid:1]}]", id="no-spiffe-id"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a}]", id="no-selectors"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: []}]", id="empty-selectors"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: unix:uid:1}]", id="selectors-not-list"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [k8s:ns:x]}]", id="unsupported-selector"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:-1]}]", id="negative-uid"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:01]}]", id="leading-zero"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:4294967296]}]", id="uid-too-big"),
        pytest.param(b"entries: [{spiffe_id: 'spiffe://td/a', selectors: ['unix:uid:1\\n']}]", id="selector-newline"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td, selectors: [unix:uid:1]}]", id="id-without-path"),
        pytest.param(b"entries: [{spiffe_id: spiffe://TD/a, selectors: [unix:uid:1]}]", id="invalid-id"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1], x509_svid_ttl: 0}]",
                     id="zero-ttl"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1], jwt_svid_ttl: true}]",
                     id="bool-ttl"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1], dns_names: [-bad-]}]",
                     id="bad-dns-name"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1], hint: " + b"h" * 1025 + b"}]",
                     id="hint-too-long"),
        pytest.param(b"entries: [{spiffe_id: spiffe://td/a, selectors: [unix:uid:1, unix:gid:2]},"
                     b" {spiffe_id: spiffe://td/a, selectors: [unix:gid:2, unix:uid:1], hint: x}]", id="duplicate"),
    ],
)  # fmt: skip
def test_parse_rejects_invalid_entries(document: bytes) -> None:
    with pytest.raises(RegistrationEntryError):
        parse_entries(document)


@pytest.mark.parametrize(
    ("entry_selectors", "matches"),
    [
        pytest.param(["unix:uid:1000"], True, id="uid"),
        pytest.param(["unix:gid:100"], True, id="gid"),
        pytest.param(["unix:uid:1000", "unix:gid:100"], True, id="uid-and-gid"),
        pytest.param(["unix:uid:1000", "unix:gid:101"], False, id="one-of-two"),
        pytest.param(["unix:uid:1001"], False, id="other-uid"),
        pytest.param(["unix:gid:1000"], False, id="uid-value-as-gid"),
    ],
)
def test_entry_matches_only_when_all_selectors_match(entry_selectors: list[str], matches: bool) -> None:
    entry = RegistrationEntry.of("spiffe://td/a", entry_selectors)
    assert entry.matches(frozenset({Selector("uid", 1000), Selector("gid", 100)})) is matches


def test_in_memory_store_set_and_add() -> None:
    a = RegistrationEntry.of("spiffe://td/a", ["unix:uid:1"])
    b = RegistrationEntry.of("spiffe://td/b", ["unix:uid:2"])
    store = InMemoryEntryStore([a])
    store.add(b)
    assert store.entries() == (a, b)
    store.set([b])
    assert store.entries() == (b,)


def test_file_store_rereads_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "entries.yaml"
    path.write_bytes(EXAMPLE)
    store = FileEntryStore(path)
    assert len(store.entries()) == 2
    write_private_file(path, b"entries: []")
    assert store.entries() == ()


def test_file_store_serves_nothing_while_file_is_invalid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "entries.yaml"
    path.write_bytes(EXAMPLE)
    store = FileEntryStore(path)
    write_private_file(path, b"entries: [{spiffe_id: spiffe://td/a}]")
    with caplog.at_level(logging.ERROR):
        assert store.entries() == ()
    assert "serving no entries" in caplog.text
    write_private_file(path, EXAMPLE)
    assert len(store.entries()) == 2


def test_file_store_missing_file_means_no_entries(tmp_path: Path) -> None:
    store = FileEntryStore(tmp_path / "absent.yaml")
    assert store.entries() == ()


def test_file_store_refuses_invalid_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "entries.yaml"
    path.write_bytes(b"entries: 5")
    with pytest.raises(RegistrationEntryError, match=r"entries\.yaml"):
        FileEntryStore(path)


def test_upsert_replaces_in_place_and_writes_0600(tmp_path: Path) -> None:
    path = tmp_path / "entries.yaml"
    path.write_bytes(EXAMPLE)
    os.chmod(path, 0o644)
    store = FileEntryStore(path)
    replacement = RegistrationEntry.of("spiffe://example.org/ns/shop/sa/web", ["unix:uid:1000"], x509_svid_ttl=5)
    store.upsert(replacement)
    added = RegistrationEntry.of("spiffe://example.org/new", ["unix:uid:7"])
    store.upsert(added)
    assert [e.x509_svid_ttl for e in store.entries()] == [5.0, None, None]
    assert store.entries()[2] == added
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _entry_with(field: str) -> str:
    return f"entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [unix:uid:1]\n    {field}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[" * 5000 + "]" * 5000, "e.yaml:1: not valid YAML: nested deeper than 32", id="deep-flow"),
        pytest.param("a: " + "{a: " * 3000 + "1" + "}" * 3000, "nested deeper", id="deep-mapping"),
        pytest.param("".join("  " * i + "-\n" for i in range(200)), "nested deeper", id="deep-block"),
        pytest.param("entries: &e [*e]\n", "aliases are not supported", id="alias"),
        pytest.param(_entry_with("jwt_svid_ttl: " + "9" * 5000), "e.yaml:4: not valid YAML: not a valid int",
                     id="5000-digit-ttl"),
        pytest.param(_entry_with("jwt_svid_ttl: " + "9" * 400), "'jwt_svid_ttl' must be a positive number of seconds",
                     id="400-digit-ttl"),
        pytest.param(_entry_with("x509_svid_ttl: .inf"), "'x509_svid_ttl' must be", id="infinite-ttl"),
        pytest.param(_entry_with("jwt_svid_ttl: .nan"), "'jwt_svid_ttl' must be", id="nan-ttl"),
        pytest.param(_entry_with("jwt_svid_ttl: 1.0e+300"), "up to 2147483647", id="1e300-ttl"),
        pytest.param(_entry_with("jwt_svid_ttl: 2147483648"), "up to 2147483647", id="int32-overflow-ttl"),
        pytest.param(_entry_with("jwt_svid_ttl: !!int ''"), "e.yaml:4: not valid YAML: not a valid int",
                     id="empty-int-tag"),
        pytest.param(_entry_with("jwt_svid_ttl: !!int abc"), "not a valid int: 'abc'", id="int-tag"),
        pytest.param(_entry_with("jwt_svid_ttl: !!float abc"), "not a valid float: 'abc'", id="float-tag"),
        pytest.param(_entry_with("jwt_svid_ttl: !!bool abc"), "not a valid bool: 'abc'", id="bool-tag"),
        pytest.param(_entry_with("jwt_svid_ttl: !!timestamp abc"), "not a valid timestamp", id="timestamp-tag"),
        pytest.param(_entry_with('hint: "\\ud800"'), "hint is not valid Unicode", id="lone-surrogate-hint"),
        pytest.param(_entry_with('dns_names: ["\\ud800"]'), "'dns_names' must be a list of strings",
                     id="lone-surrogate-dns-name"),
        pytest.param(_entry_with("spiffe_id: spiffe://example.org/b"), "e.yaml:4: not valid YAML: duplicate key",
                     id="duplicate-key"),
    ],
)  # fmt: skip
def test_hostile_entries_text_is_a_registration_entry_error(text: str, expected: str) -> None:
    with pytest.raises(RegistrationEntryError) as info:
        parse_entries(text, source="e.yaml")
    assert expected in info.value.description


def test_ttl_at_the_int32_limit_is_accepted() -> None:
    (entry,) = parse_entries(_entry_with("jwt_svid_ttl: 2147483647"))
    assert entry.jwt_svid_ttl == 2147483647.0


def test_entry_built_in_code_refuses_a_lone_surrogate_hint_and_an_infinite_ttl() -> None:
    with pytest.raises(RegistrationEntryError, match="hint is not valid Unicode"):
        RegistrationEntry.of("spiffe://td/a", ["unix:uid:1"], hint="\ud800")
    with pytest.raises(RegistrationEntryError, match="jwt_svid_ttl"):
        RegistrationEntry.of("spiffe://td/a", ["unix:uid:1"], jwt_svid_ttl=float("inf"))


def test_file_store_serves_nothing_after_an_edit_into_deep_nesting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.yaml"
    write_private_file(path, EXAMPLE)
    store = FileEntryStore(path)
    assert len(store.entries()) == 2
    write_private_file(path, b"[" * 5000 + b"]" * 5000)
    with caplog.at_level(logging.ERROR):
        assert store.entries() == ()  # fail closed, and no RecursionError into the Workload API
    assert "nested deeper" in caplog.text


def test_file_store_refuses_a_file_over_the_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(RegistrationEntryError, match="larger than"):
        FileEntryStore(path)
