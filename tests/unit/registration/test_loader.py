"""workloads.yaml parsing: valid files load; every error names the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.registration import Policy, Selector, WorkloadsFileError, load_workloads, parse_workloads

GOOD = """\
trust_domain: example.org
defaults: {parent_id: spiffe://example.org/agent/test, x509_svid_ttl: 3600, jwt_svid_ttl: 300}
workloads:
  - name: web
    spiffe_id: spiffe://example.org/ns/shop/sa/web
    selectors: ["k8s:sa:web", "k8s:ns:shop"]
    dns_names: [web.shop.svc, "*.web.example.org"]
    policy:
      audiences: ["https://api.example.org"]
      scopes: ["orders:read"]
      max_token_lifetime: 120
  - name: batch
    spiffe_id: spiffe://example.org/batch/nightly
    parent_id: spiffe://example.org/agent/other
    selectors: ["unix:uid:1000"]
    x509_svid_ttl: 600
    jwt_svid_ttl: 60
    jwt_svid_include_jti: true
"""


def test_load_workloads_reads_a_valid_file_with_defaults_applied(tmp_path: Path) -> None:
    path = tmp_path / "workloads.yaml"
    path.write_text(GOOD)
    loaded = load_workloads(path)
    assert loaded.path == str(path)
    assert loaded.trust_domain == TrustDomain("example.org")
    web, batch = loaded.workloads
    assert web.spiffe_id == SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
    assert web.parent_id == SpiffeId.parse("spiffe://example.org/agent/test")
    assert web.selectors == (Selector("k8s", "ns:shop"), Selector("k8s", "sa:web"))
    assert (web.x509_svid_ttl, web.jwt_svid_ttl, web.jwt_svid_include_jti) == (3600, 300, False)
    assert web.dns_names == ("web.shop.svc", "*.web.example.org")
    assert web.policy == Policy(("https://api.example.org",), ("orders:read",), 120)
    assert web.line == 4
    assert batch.parent_id == SpiffeId.parse("spiffe://example.org/agent/other")
    assert (batch.x509_svid_ttl, batch.jwt_svid_ttl, batch.jwt_svid_include_jti) == (600, 60, True)
    assert batch.policy is None


def test_policy_defaults_to_no_scopes_and_300_second_lifetime() -> None:
    text = GOOD.replace('      scopes: ["orders:read"]\n      max_token_lifetime: 120\n', "")
    assert parse_workloads(text).workloads[0].policy == Policy(("https://api.example.org",), (), 300)


def test_empty_workloads_list_is_allowed() -> None:
    assert parse_workloads("trust_domain: example.org\nworkloads: []\n").workloads == ()


def _error(text: str) -> str:
    with pytest.raises(WorkloadsFileError) as info:
        parse_workloads(text, source="workloads.yaml")
    return info.value.description


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "spiffe://example.org/batch/nightly",
            "spiffe://example.org/batch/nightly/",
            "workloads.yaml:13: workloads[1].spiffe_id: not a valid SPIFFE ID (path cannot have a trailing slash)",
            id="trailing-slash",
        ),
        pytest.param(
            "spiffe://example.org/batch/nightly",
            "spiffe://other.org/batch",
            "workloads.yaml:13: workloads[1].spiffe_id: not in trust domain example.org",
            id="foreign-trust-domain",
        ),
        pytest.param(
            "spiffe://example.org/batch/nightly",
            "spiffe://example.org",
            "workloads.yaml:13: workloads[1].spiffe_id: not a valid SPIFFE ID for an entry (it has no path)",
            id="no-path",
        ),
        pytest.param(
            "spiffe://example.org/agent/other",
            "Spiffe://example.org/agent/other",
            "workloads.yaml:14: workloads[1].parent_id: not a valid SPIFFE ID (scheme is missing or invalid",
            id="uppercase-scheme-parent",
        ),
        pytest.param(
            '["unix:uid:1000"]',
            '["unix"]',
            "workloads.yaml:15: workloads[1].selectors[0]: not a valid selector (must be 'type:value')",
            id="selector-without-colon",
        ),
        pytest.param(
            '["unix:uid:1000"]',
            '["unix:uid:1000", "unix:uid:1000"]',
            "workloads.yaml:15: workloads[1].selectors[1]: duplicate selector unix:uid:1000",
            id="duplicate-selector",
        ),
        pytest.param(
            '["unix:uid:1000"]',
            "[]",
            "workloads.yaml:15: workloads[1].selectors: at least one selector is required",
            id="no-selectors",
        ),
        pytest.param(
            "x509_svid_ttl: 600",
            "x509_svid_ttl: -1",
            "workloads.yaml:16: workloads[1].x509_svid_ttl: must be 0 (the server's default) or a positive integer",
            id="negative-ttl",
        ),
        pytest.param(
            "x509_svid_ttl: 600",
            "x509_svid_ttl: 2147483648",
            "workloads.yaml:16: workloads[1].x509_svid_ttl: must be 0 (the server's default) or a positive integer "
            "no larger than 2147483647",
            id="ttl-over-int32",
        ),
        pytest.param(
            "jwt_svid_ttl: 60",
            'jwt_svid_ttl: "60"',
            "workloads.yaml:17: workloads[1].jwt_svid_ttl: expected an integer",
            id="quoted-ttl",
        ),
        pytest.param(
            "jwt_svid_ttl: 60",
            "jwt_svid_ttl: true",
            "workloads.yaml:17: workloads[1].jwt_svid_ttl: expected an integer",
            id="boolean-ttl",
        ),
        pytest.param(
            "jwt_svid_include_jti: true",
            "jwt_svid_include_jti: 1",
            "workloads.yaml:18: workloads[1].jwt_svid_include_jti: expected true or false",
            id="integer-boolean",
        ),
        pytest.param(
            "jwt_svid_include_jti: true",
            "jwt_svid_incldue_jti: true",
            "workloads.yaml:18: workloads[1].jwt_svid_incldue_jti: unknown key (allowed: admin, dns_names,",
            id="misspelt-key",
        ),
        pytest.param(
            "  - name: batch",
            "  - name: Batch_1",
            "workloads.yaml:12: workloads[1].name: must be a lowercase RFC 1123 label",
            id="bad-name",
        ),
        pytest.param(
            "  - name: batch",
            "  - name: web",
            "workloads.yaml:12: workloads[1].name: duplicate name (also workloads[0])",
            id="duplicate-name",
        ),
        pytest.param(
            "web.shop.svc,",
            "web..svc,",
            "workloads.yaml:7: workloads[0].dns_names[0]: not a valid DNS name (RFC 1123)",
            id="bad-dns-name",
        ),
        pytest.param(
            '"orders:read"',
            '"orders read"',
            "workloads.yaml:10: workloads[0].policy.scopes[0]: not a valid scope token (RFC 6749 §3.3)",
            id="scope-with-space",
        ),
        pytest.param(
            '      audiences: ["https://api.example.org"]\n',
            "",
            "workloads.yaml:9: workloads[0].policy.audiences: required key is missing",
            id="policy-without-audiences",
        ),
        pytest.param(
            "trust_domain: example.org",
            "trust_domain: Example.org",
            "workloads.yaml:1: trust_domain: not a valid trust domain (trust domain characters are limited",
            id="uppercase-trust-domain",
        ),
    ],
)
def test_invalid_field_is_reported_with_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert _error(GOOD.replace(old, new, 1)).startswith(expected)


def test_missing_parent_id_without_default_names_the_workload() -> None:
    text = GOOD.replace("parent_id: spiffe://example.org/agent/test, ", "")
    assert _error(text) == (
        "workloads.yaml:4: workloads[0]: parent_id is missing (set it on the workload or in defaults)"
    )


def test_second_workload_with_same_identity_is_rejected() -> None:
    text = GOOD + (
        "  - name: web-again\n"
        "    spiffe_id: spiffe://example.org/ns/shop/sa/web\n"
        '    selectors: ["k8s:ns:shop", "k8s:sa:web"]\n'
    )
    assert _error(text) == (
        "workloads.yaml:20: workloads[2].spiffe_id: same spiffe_id, parent_id and selectors as workloads[0]"
    )


def test_duplicate_mapping_key_is_rejected_not_silently_overridden() -> None:
    text = GOOD.replace("    x509_svid_ttl: 600\n", "    x509_svid_ttl: 600\n    x509_svid_ttl: 60\n")
    assert _error(text) == "workloads.yaml:17: workloads[1].x509_svid_ttl: duplicate key"


def test_missing_top_level_key_is_reported() -> None:
    assert _error("trust_domain: example.org\n") == "workloads.yaml:1: workloads: required key is missing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "workloads.yaml:1: the file is empty", id="empty"),
        pytest.param(
            "trust_domain: example.org\nworkloads: {a: 1}\n",
            "workloads.yaml:2: workloads: expected a list",
            id="workloads-not-a-list",
        ),
        pytest.param(
            "trust_domain: example.org\nworkloads: []\nextra: 1\n",
            "workloads.yaml:3: extra: unknown key (allowed: api_key_exceptions, defaults, entry_id_prefix, "
            "kubernetes, node_aliases, trust_domain, workloads)",
            id="unknown-top-level-key",
        ),
        pytest.param("- a\n- b\n", "workloads.yaml:1: expected a mapping", id="top-level-list"),
        pytest.param("a: [1,\n", "workloads.yaml:2: invalid YAML:", id="syntax-error"),
        pytest.param("a: 1\n---\nb: 2\n", "workloads.yaml:2: invalid YAML:", id="two-documents"),
    ],
)
def test_malformed_yaml_is_reported_with_line(text: str, expected: str) -> None:
    assert _error(text).startswith(expected)


def test_unreadable_file_is_a_workloads_file_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadsFileError, match="cannot read"):
        load_workloads(tmp_path / "missing.yaml")


NEW_KEYS = """\
trust_domain: example.org
entry_id_prefix: team-a.
kubernetes: {class_name: spire-system-spire}
node_aliases:
  - {name: demo, spiffe_id: spiffe://example.org/cluster/demo, selectors: ["k8s_psat:cluster:demo"]}
defaults: {parent_id: spiffe://example.org/cluster/demo, x509_svid_ttl: 0, jwt_svid_ttl: 0}
workloads:
  - name: gw
    spiffe_id: spiffe://example.org/gw
    selectors: ["unix:uid:1"]
    hint: ""
    admin: true
    downstream: true
    federates_with: ["spiffe://partner.example", "other.example"]
"""


def test_node_aliases_hint_federation_admin_downstream_and_default_ttls_are_read() -> None:
    file = parse_workloads(NEW_KEYS)
    (alias,) = file.node_aliases
    assert (alias.name, str(alias.spiffe_id), [str(s) for s in alias.selectors]) == (
        "demo",
        "spiffe://example.org/cluster/demo",
        ["k8s_psat:cluster:demo"],
    )
    (gw,) = file.workloads
    assert (gw.hint, gw.admin, gw.downstream, gw.federates_with) == (
        "",
        True,
        True,
        ("partner.example", "other.example"),
    )
    assert (gw.x509_svid_ttl, gw.jwt_svid_ttl) == (0, 0)
    assert (file.entry_id_prefix, file.k8s_class_name) == ("team-a.", "spire-system-spire")


def test_workload_without_hint_leaves_the_hint_unmanaged() -> None:
    assert parse_workloads(NEW_KEYS.replace('    hint: ""\n', "")).workloads[0].hint is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            '"other.example"]', '"example.org"]', "federates_with[1]: is the file's own trust domain", id="own-td"
        ),
        pytest.param(
            "parent_id: spiffe://example.org/cluster/demo",
            "parent_id: spiffe://example.org/spire/server",
            "declare this entry under node_aliases",
            id="server-parent",
        ),
        pytest.param(
            "spiffe_id: spiffe://example.org/gw",
            "spiffe_id: spiffe://example.org/spire/agent/x",
            "reserved /spire/ path",
            id="reserved-path",
        ),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: .bad", "entry_id_prefix: must be", id="bad-prefix"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: a", "never match", id="uuid-like-0"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: de", "never match", id="uuid-like-1"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: 0f", "never match", id="uuid-like-2"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: 0f-", "never match", id="uuid-like-3"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: deadbeef-", "never match", id="uuid-like-4"),
        pytest.param("entry_id_prefix: team-a.", "entry_id_prefix: spiffe-broker", "never match", id="uuid-like-5"),
        pytest.param("class_name: spire-system-spire", "class_name: Bad_Class", "class_name: must be", id="bad-class"),
        pytest.param('hint: ""', 'hint: "a\\tb"', "hint: must not contain control characters", id="hint-control"),
    ],
)
def test_invalid_new_keys_are_reported_with_the_field(old: str, new: str, expected: str) -> None:
    assert old in NEW_KEYS
    with pytest.raises(WorkloadsFileError, match=re.escape(expected)):
        parse_workloads(NEW_KEYS.replace(old, new))


def _workload_field(field: str) -> str:
    return GOOD.replace('    dns_names: [web.shop.svc, "*.web.example.org"]\n', f"    {field}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[" * 5000 + "]" * 5000, "workloads.yaml:1: invalid YAML: nested deeper than 32", id="deep-flow"),
        pytest.param("a: " + "{a: " * 3000 + "1" + "}" * 3000, "invalid YAML: nested deeper", id="deep-mapping"),
        pytest.param("".join("  " * i + "-\n" for i in range(1200)), "invalid YAML: nested deeper", id="deep-block"),
        pytest.param("a: &x 1\nb: *x\n", "workloads.yaml:2: invalid YAML: aliases are not supported", id="alias"),
        pytest.param("a: " + "x" * (4 * 1024 * 1024), "invalid YAML: the document is longer", id="too-large"),
        pytest.param(_workload_field("x509_svid_ttl: " + "9" * 5000), "x509_svid_ttl: must be 0", id="5000-digits"),
        pytest.param(_workload_field("x509_svid_ttl: !!int ''"), "x509_svid_ttl: must be 0", id="empty-int-tag"),
        pytest.param(_workload_field("x509_svid_ttl: !!int abc"), "x509_svid_ttl: must be 0", id="int-tag-on-text"),
        pytest.param(_workload_field("jwt_svid_include_jti: !!bool abc"), "jwt_svid_include_jti: expected true",
                     id="bool-tag-on-text"),
        pytest.param(_workload_field('hint: "\\ud800"'), "hint: is not valid Unicode", id="lone-surrogate-hint"),
        pytest.param('trust_domain: "\\ud800"\nworkloads: []\n', "trust_domain: is not valid Unicode",
                     id="lone-surrogate-trust-domain"),
    ],
)  # fmt: skip
def test_hostile_text_is_a_workloads_file_error(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_file_larger_than_the_bound_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    with pytest.raises(WorkloadsFileError, match="larger than"):
        load_workloads(path)


@pytest.mark.parametrize("prefix", ["team-a.", "spiffe-broker.", "ab.", "0f:", "cd_", "x-"])
def test_entry_id_prefixes_that_cannot_match_a_spire_uuid_are_accepted(prefix: str) -> None:
    assert (
        parse_workloads(NEW_KEYS.replace("entry_id_prefix: team-a.", f"entry_id_prefix: '{prefix}'")).entry_id_prefix
        == prefix
    )
