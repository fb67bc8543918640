"""Read and validate ``workloads.yaml`` (registration as code).

::

    trust_domain: example.org
    entry_id_prefix: spiffe-broker.                     # optional: marks the entries `apply` owns
    kubernetes: {class_name: spire-mgmt-spire}          # optional: ClusterSPIFFEID spec.className ("" for none)
    node_aliases:                                       # optional: node entries, parent spiffe://<td>/spire/server
      - name: demo-cluster
        spiffe_id: spiffe://example.org/cluster/demo
        selectors: ["k8s_psat:cluster:demo"]            # node selectors every matching agent has
        # parent_id: spiffe://example.org/spire/agent/join_token/...  # optional: alias one agent instead
    defaults: {parent_id: spiffe://example.org/cluster/demo, x509_svid_ttl: 3600, jwt_svid_ttl: 300}
    workloads:
      - name: web
        spiffe_id: spiffe://example.org/ns/shop/sa/web
        parent_id: spiffe://example.org/cluster/demo    # optional when defaults has one: an alias or agent ID
        selectors: ["k8s:ns:shop", "k8s:sa:web"]        # SPIRE workload selectors, type:value
        x509_svid_ttl: 3600                             # optional when defaults has one; 0: server default
        jwt_svid_ttl: 300                               # optional when defaults has one; 0: server default
        jwt_svid_include_jti: false                     # optional: a fresh jti per JWT-SVID
        dns_names: [web.shop.svc]                       # optional
        hint: web                                       # optional; when absent, `apply` leaves the hint alone
        federates_with: [partner.example]               # optional: trust domains whose bundles it receives
        admin: false                                    # optional: may call SPIRE's admin APIs
        downstream: false                               # optional: the entry is a downstream SPIRE server
        policy: {audiences: [https://api.example.org], scopes: [orders:read], max_token_lifetime: 300}
    api_key_exceptions: []                              # optional: see broker.registration.exceptions

Every error names the file, the line and the field. SPIFFE IDs follow the SPIFFE-ID standard §2 and must be
in ``trust_domain``; scopes follow RFC 6749 §3.3; DNS names RFC 1123 §2.1 (a leading ``*.`` allowed, as
SPIRE does). SPIRE keeps one entry per (SPIFFE ID, parent ID, selector set), so duplicates are refused here.
"""

from __future__ import annotations

import re
from pathlib import Path

from broker import _yaml
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.oauth.grammar import AUDIENCE, SCOPE_TOKEN
from broker.registration._yamlnodes import Field, compose_file
from broker.registration.errors import WorkloadsFileError
from broker.registration.exceptions import parse_exceptions
from broker.registration.export import is_class_name
from broker.registration.model import DEFAULT_ENTRY_ID_PREFIX, NodeAlias, Policy, Selector, Workload, WorkloadsFile

__all__ = ["load_workloads", "parse_workloads"]

_TOP_REQUIRED = frozenset({"trust_domain", "workloads"})
_TOP_OPTIONAL = frozenset({"defaults", "node_aliases", "entry_id_prefix", "kubernetes", "api_key_exceptions"})
_DEFAULT_KEYS = frozenset({"parent_id", "x509_svid_ttl", "jwt_svid_ttl", "jwt_svid_include_jti"})
_WORKLOAD_REQUIRED = frozenset({"name", "spiffe_id", "selectors"})
_WORKLOAD_OPTIONAL = _DEFAULT_KEYS | {"dns_names", "policy", "hint", "admin", "downstream", "federates_with"}
_ALIAS_KEYS = frozenset({"name", "spiffe_id", "selectors"})
_ALIAS_OPTIONAL = frozenset({"parent_id"})
_POLICY_REQUIRED = frozenset({"audiences"})
_POLICY_OPTIONAL = frozenset({"scopes", "max_token_lifetime"})

# Workload names become Kubernetes object names (RFC 1123 label).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Ends with a separator and holds a character SPIRE's own entry IDs (lowercase UUIDs) never have, so no prefix
# can match an entry the broker did not create (``a``, ``de``, ``0f-`` would: ``apply`` would delete them).
_ENTRY_ID_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}[._:-]")
_UUID_CHARS = re.compile(r"[0-9a-f-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def load_workloads(path: str | Path) -> WorkloadsFile:
    """Read ``path`` and return the validated workloads; raise :class:`WorkloadsFileError`."""
    source = str(path)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_yaml.MAX_CHARS + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadsFileError(f"{source}: cannot read: {exc}") from None
    if len(data) > _yaml.MAX_CHARS:
        raise WorkloadsFileError(f"{source}: cannot read: larger than {_yaml.MAX_CHARS} bytes")
    return parse_workloads(text, source=source)


def parse_workloads(text: str, *, source: str = "workloads.yaml") -> WorkloadsFile:
    """Parse the text of a ``workloads.yaml``; ``source`` names it in errors. Every failure is a
    :class:`WorkloadsFileError`."""
    try:
        return _parse_workloads(text, source)
    except WorkloadsFileError:
        raise
    except Exception as exc:  # defence in depth: the reads below are bounded, but no foreign error may escape
        raise WorkloadsFileError(f"{source}: workloads file could not be parsed ({type(exc).__name__})") from None


def _parse_workloads(text: str, source: str) -> WorkloadsFile:
    top = compose_file(text, source).mapping(required=_TOP_REQUIRED, optional=_TOP_OPTIONAL)
    trust_domain = _trust_domain(top["trust_domain"])
    defaults = _read_defaults(top["defaults"]) if "defaults" in top else {}
    aliases = _node_aliases(top["node_aliases"], trust_domain) if "node_aliases" in top else ()
    workloads = tuple(_workload(item, trust_domain, defaults) for item in top["workloads"].items())
    _check_unique(workloads, top["workloads"])
    declared = (
        parse_exceptions(top["api_key_exceptions"], workloads, trust_domain) if "api_key_exceptions" in top else ()
    )
    return WorkloadsFile(
        path=source,
        trust_domain=trust_domain,
        workloads=workloads,
        node_aliases=aliases,
        entry_id_prefix=_entry_id_prefix(top["entry_id_prefix"])
        if "entry_id_prefix" in top
        else DEFAULT_ENTRY_ID_PREFIX,
        k8s_class_name=_class_name(top["kubernetes"]) if "kubernetes" in top else None,
        api_key_exceptions=declared,
    )


def _entry_id_prefix(field: Field) -> str:
    value = field.string()
    if not _ENTRY_ID_PREFIX.fullmatch(value) or _UUID_CHARS.fullmatch(value):
        raise field.error(
            "must be 2 to 64 of A-Z, a-z, 0-9, '.', '_', ':', '-', starting with a letter or digit, ending with "
            "'.', '_', ':' or '-', with a character other than 0-9, a-f and '-' (so that it can never match "
            "the UUID entry IDs SPIRE itself assigns), e.g. 'spiffe-broker.'"
        )
    return value


def _class_name(field: Field) -> str:
    """``kubernetes.class_name``: spire-controller-manager's ``className``; "" exports classless resources."""
    keys = field.mapping(required=frozenset({"class_name"}), optional=frozenset())
    value = keys["class_name"].string(allow_empty=True)
    if not is_class_name(value):
        raise keys["class_name"].error("must be empty or lowercase letters, digits, '-' and '.' (as Helm names)")
    return value


def _node_aliases(field: Field, trust_domain: TrustDomain) -> tuple[NodeAlias, ...]:
    aliases: list[NodeAlias] = []
    for item in field.items():
        keys = item.mapping(required=_ALIAS_KEYS, optional=_ALIAS_OPTIONAL)
        alias = NodeAlias(
            name=_name(keys["name"]),
            spiffe_id=_entry_spiffe_id(keys["spiffe_id"], trust_domain),
            selectors=_selectors(keys["selectors"]),
            line=item.line,
            parent_id=_agent_id(keys["parent_id"], trust_domain) if "parent_id" in keys else None,
        )
        for other in aliases:
            if other.name == alias.name or other.spiffe_id == alias.spiffe_id:
                raise keys["name"].error(f"same name or spiffe_id as node alias {other.name!r}")
        aliases.append(alias)
    return tuple(aliases)


def _agent_id(field: Field, trust_domain: TrustDomain) -> SpiffeId:
    """A node alias's optional parent: one agent's ID (SPIRE puts every agent under ``/spire/agent/``)."""
    agent = _spiffe_id(field, trust_domain)
    if not agent.path.startswith("/spire/agent/"):
        raise field.error("a node alias's parent_id is an agent ID (spiffe://<td>/spire/agent/...)")
    return agent


def _name(field: Field) -> str:
    name = field.string()
    if not _NAME.fullmatch(name):
        raise field.error("must be a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63)")
    return name


def _trust_domain(field: Field) -> TrustDomain:
    try:
        return TrustDomain.parse(field.string())
    except InvalidSpiffeIdError as exc:
        raise field.error(f"not a valid trust domain ({exc.description})") from None


def _spiffe_id(field: Field, trust_domain: TrustDomain) -> SpiffeId:
    """SPIFFE-ID §2; an entry's ID has a path and belongs to the server's trust domain."""
    try:
        spiffe_id = SpiffeId.parse(field.string())
    except InvalidSpiffeIdError as exc:
        raise field.error(f"not a valid SPIFFE ID ({exc.description})") from None
    if not spiffe_id.path:
        raise field.error("not a valid SPIFFE ID for an entry (it has no path)")
    if not spiffe_id.is_member_of(trust_domain):
        raise field.error(f"not in trust domain {trust_domain}")
    return spiffe_id


def _read_defaults(field: Field) -> dict[str, Field]:
    return field.mapping(required=frozenset(), optional=_DEFAULT_KEYS)


def _inherited(key: str, own: dict[str, Field], defaults: dict[str, Field], where: Field) -> Field:
    if key in own:
        return own[key]
    if key in defaults:
        return defaults[key]
    raise where.error(f"{key} is missing (set it on the workload or in defaults)")


def _entry_spiffe_id(field: Field, trust_domain: TrustDomain) -> SpiffeId:
    """An entry's own ID: never in SPIRE's reserved ``/spire/`` namespace (agents and the server live there)."""
    spiffe_id = _spiffe_id(field, trust_domain)
    if spiffe_id.path.startswith("/spire/"):
        raise field.error("is in SPIRE's reserved /spire/ path (agent and server IDs)")
    return spiffe_id


def _parent_id(field: Field, trust_domain: TrustDomain) -> SpiffeId:
    parent = _spiffe_id(field, trust_domain)
    if parent.path == "/spire/server":
        raise field.error("the server is the parent of node entries: declare this entry under node_aliases")
    return parent


def _workload(item: Field, trust_domain: TrustDomain, defaults: dict[str, Field]) -> Workload:
    keys = item.mapping(required=_WORKLOAD_REQUIRED, optional=_WORKLOAD_OPTIONAL)
    jti = keys.get("jwt_svid_include_jti", defaults.get("jwt_svid_include_jti"))
    return Workload(
        name=_name(keys["name"]),
        spiffe_id=_entry_spiffe_id(keys["spiffe_id"], trust_domain),
        parent_id=_parent_id(_inherited("parent_id", keys, defaults, item), trust_domain),
        selectors=_selectors(keys["selectors"]),
        x509_svid_ttl=_inherited("x509_svid_ttl", keys, defaults, item).ttl(),
        jwt_svid_ttl=_inherited("jwt_svid_ttl", keys, defaults, item).ttl(),
        dns_names=_dns_names(keys["dns_names"]) if "dns_names" in keys else (),
        jwt_svid_include_jti=jti.boolean() if jti is not None else False,
        policy=_policy(keys["policy"]) if "policy" in keys else None,
        line=item.line,
        hint=_hint(keys["hint"]) if "hint" in keys else None,
        admin=keys["admin"].boolean() if "admin" in keys else False,
        downstream=keys["downstream"].boolean() if "downstream" in keys else False,
        federates_with=_federates_with(keys["federates_with"], trust_domain) if "federates_with" in keys else (),
    )


def _hint(field: Field) -> str:
    """``hint``: free text for workloads choosing among SVIDs; "" clears it. No control characters."""
    value = field.string(allow_empty=True)
    if _CONTROL.search(value):
        raise field.error("must not contain control characters")
    return value


def _federates_with(field: Field, trust_domain: TrustDomain) -> tuple[str, ...]:
    """Trust domain names (``partner.example`` or ``spiffe://partner.example``), never the entry's own."""
    names: list[str] = []
    for item in field.items():
        try:
            name = TrustDomain.parse(item.string()).name
        except InvalidSpiffeIdError as exc:
            raise item.error(f"not a valid trust domain ({exc.description})") from None
        if name == trust_domain.name:
            raise item.error("is the file's own trust domain (federates_with names other trust domains)")
        if name in names:
            raise item.error(f"duplicate trust domain {name}")
        names.append(name)
    return tuple(names)


def _selectors(field: Field) -> tuple[Selector, ...]:
    selectors: list[Selector] = []
    for item in field.items():
        try:
            selector = Selector.parse(item.string())
        except ValueError as exc:
            raise item.error(f"not a valid selector ({exc})") from None
        if selector in selectors:
            raise item.error(f"duplicate selector {selector}")
        selectors.append(selector)
    if not selectors:
        raise field.error("at least one selector is required")
    return tuple(selectors)


def _dns_names(field: Field) -> tuple[str, ...]:
    names: list[str] = []
    for item in field.items():
        name = item.string()
        labels = name.split(".")
        if labels[0] == "*" and len(labels) > 1:
            labels = labels[1:]
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise item.error("not a valid DNS name (RFC 1123)")
        if name in names:
            raise item.error(f"duplicate DNS name {name}")
        names.append(name)
    return tuple(names)


def _policy(field: Field) -> Policy:
    keys = field.mapping(required=_POLICY_REQUIRED, optional=_POLICY_OPTIONAL)
    audiences = _tokens(keys["audiences"], AUDIENCE, "audience (printable, no spaces)")
    if not audiences:
        raise keys["audiences"].error("at least one audience is required")
    scopes = _tokens(keys["scopes"], SCOPE_TOKEN, "scope token (RFC 6749 §3.3)") if "scopes" in keys else ()
    lifetime = keys["max_token_lifetime"].positive_int() if "max_token_lifetime" in keys else 300
    return Policy(audiences=audiences, scopes=scopes, max_token_lifetime=lifetime)


def _tokens(field: Field, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    values: list[str] = []
    for item in field.items():
        value = item.string()
        if not pattern.fullmatch(value):
            raise item.error(f"not a valid {what}")
        if value in values:
            raise item.error(f"duplicate value {value}")
        values.append(value)
    return tuple(values)


def _check_unique(workloads: tuple[Workload, ...], field: Field) -> None:
    """Names are unique; so is (spiffe_id, parent_id, selectors), SPIRE's "similar entry" key."""
    names: dict[str, int] = {}
    identities: dict[tuple[str, str, tuple[str, ...]], int] = {}
    for index, (workload, item) in enumerate(zip(workloads, field.items(), strict=True)):
        if workload.name in names:
            raise _at(item, "name").error(f"duplicate name (also workloads[{names[workload.name]}])")
        if workload.identity in identities:
            first = identities[workload.identity]
            raise _at(item, "spiffe_id").error(f"same spiffe_id, parent_id and selectors as workloads[{first}]")
        names[workload.name] = index
        identities[workload.identity] = index


def _at(item: Field, key: str) -> Field:
    keys = item.mapping(required=_WORKLOAD_REQUIRED, optional=_WORKLOAD_OPTIONAL)
    return keys[key]
