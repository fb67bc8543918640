"""The ``api_key_exceptions`` section of ``workloads.yaml``: governed API-key exceptions declared next to the SPIRE
entries of the workloads that use them, so a platform team reviews both in one file (issue 12, item 7).

::

    api_key_exceptions:
      - name: stripe
        target: https://api.stripe.com/v1/            # https only; exact host; optional port; path prefix
        owner: payments
        contact: payments-oncall@example.org
        justification: Stripe offers no workload identity federation for its API
        ticket: SEC-1234                               # must match [apikeys] ticket_pattern
        expires_at: 2027-03-01T00:00:00Z               # capped by [apikeys] max_lifetime_days
        review_interval_days: 30                       # optional: [apikeys] default_review_days
        header: {name: Authorization, template: "Bearer {secret}"}   # or query: {name: api_key}
        delivery: inject                               # optional: inject (default) or reveal
        wildcard_host: false                           # optional: *.example.com targets, if [apikeys] allows
        workloads: [web]                               # names of workloads in this file
        allowed: [spiffe://example.org/ns/shop/*]      # optional: more SPIFFE IDs or prefixes

The secret never goes in this file: ``spiffe-broker exceptions sync`` creates nothing without one; it tells the
owner to load it with ``exceptions add --from-workloads FILE --name NAME --secret-stdin``, and brings the metadata
of exceptions that exist in line with the file. This module checks the file's shape and its references (every
named workload exists; every SPIFFE ID is in the file's trust domain); the governance rules (the ticket pattern,
the lifetime cap, the contact's form) are the registry's, applied when the declaration is synced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from broker.events.revocations import SubjectPattern
from broker.identity.spiffeid import TrustDomain
from broker.registration._yamlnodes import Field
from broker.registration.model import Workload

__all__ = ["DeclaredException", "parse_exceptions"]

_REQUIRED = frozenset({"name", "target", "owner", "contact", "justification", "ticket", "expires_at"})
_OPTIONAL = frozenset({"review_interval_days", "header", "query", "delivery", "wildcard_host", "workloads", "allowed"})
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class DeclaredException:
    """One declared exception: plain values, checked for shape; ``where`` is ``file:line`` for later errors."""

    where: str
    name: str
    scheme: str
    host: str
    port: int
    path_prefix: str
    owner: str
    contact: str
    justification: str
    ticket: str
    expires_at: datetime
    review_interval_days: int | None
    presentation_kind: str
    presentation_name: str
    template: str
    delivery: str
    wildcard_host: bool
    allowed: tuple[str, ...]


def parse_exceptions(field: Field, workloads: tuple[Workload, ...], trust_domain: TrustDomain) -> tuple[
    DeclaredException, ...
]:  # fmt: skip
    """The ``api_key_exceptions`` list; WorkloadsFileError naming the file, line and field of the first problem."""
    by_name = {workload.name: str(workload.spiffe_id) for workload in workloads}
    declared: list[DeclaredException] = []
    seen: set[str] = set()
    for item in field.items():
        exception = _declared(item, by_name, trust_domain)
        if exception.name in seen:
            raise item.error(f"duplicate exception name {exception.name}")
        seen.add(exception.name)
        declared.append(exception)
    return tuple(declared)


def _declared(item: Field, workloads: dict[str, str], trust_domain: TrustDomain) -> DeclaredException:
    keys = item.mapping(required=_REQUIRED, optional=_OPTIONAL)
    name = keys["name"].string()
    if not _NAME.fullmatch(name):
        raise keys["name"].error("must be a DNS label: 1-63 lower-case letters, digits and inner hyphens")
    scheme, host, port, path = _target(keys["target"])
    kind, header_name, template = _presentation(item, keys)
    delivery = keys["delivery"].string() if "delivery" in keys else "inject"
    if delivery not in ("inject", "reveal"):
        raise keys["delivery"].error("must be inject or reveal")
    allowed = _allowed(keys, workloads, trust_domain)
    if not allowed:
        raise item.error("name at least one workload (workloads) or SPIFFE ID (allowed) that may use it")
    return DeclaredException(
        where=f"{item.source}:{item.line}",
        name=name,
        scheme=scheme,
        host=host,
        port=port,
        path_prefix=path,
        owner=keys["owner"].string(),
        contact=keys["contact"].string(),
        justification=keys["justification"].string(),
        ticket=keys["ticket"].string(),
        expires_at=_instant(keys["expires_at"]),
        review_interval_days=keys["review_interval_days"].positive_int() if "review_interval_days" in keys else None,
        presentation_kind=kind,
        presentation_name=header_name,
        template=template,
        delivery=delivery,
        wildcard_host=keys["wildcard_host"].boolean() if "wildcard_host" in keys else False,
        allowed=allowed,
    )


def _target(field: Field) -> tuple[str, str, int, str]:
    text = field.string()
    try:
        parts = urlsplit(text)
        port = parts.port or 443
    except ValueError:
        raise field.error("not a URL: https://host[:port]/path-prefix") from None
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise field.error("must be an https URL with a host and no credentials: a key never travels in clear text")
    if parts.query or parts.fragment:
        raise field.error("must not have a query or fragment: it names a host and a path prefix")
    return parts.scheme, parts.hostname, port, parts.path or "/"


def _presentation(item: Field, keys: dict[str, Field]) -> tuple[str, str, str]:
    if ("header" in keys) == ("query" in keys):
        raise item.error("give exactly one of header and query: how the secret is presented")
    kind = "header" if "header" in keys else "query"
    shape = keys[kind].mapping(required=frozenset({"name"}), optional=frozenset({"template"}))
    template = shape["template"].string() if "template" in shape else "{secret}"
    return kind, shape["name"].string(), template


def _allowed(keys: dict[str, Field], workloads: dict[str, str], trust_domain: TrustDomain) -> tuple[str, ...]:
    allowed: list[str] = []
    if "workloads" in keys:
        for entry in keys["workloads"].items():
            name = entry.string()
            if name not in workloads:
                raise entry.error(f"no workload named {name} in this file")
            allowed.append(workloads[name])
    if "allowed" in keys:
        for entry in keys["allowed"].items():
            try:
                pattern = SubjectPattern.parse(entry.string())
            except ValueError as exc:
                raise entry.error(str(exc)) from None
            if not pattern.text.startswith(f"spiffe://{trust_domain}/"):
                raise entry.error(f"must be in trust domain {trust_domain}")
            allowed.append(pattern.text)
    return tuple(dict.fromkeys(allowed))


def _instant(field: Field) -> datetime:
    text = field.string() if not _is_timestamp(field) else str(getattr(field.node, "value", ""))
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise field.error("must be an RFC 3339 time with a zone, e.g. 2027-03-01T00:00:00Z") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise field.error("must carry a time zone (Z or +hh:mm)")
    return value


def _is_timestamp(field: Field) -> bool:
    return getattr(field.node, "tag", "") == "tag:yaml.org,2002:timestamp"
