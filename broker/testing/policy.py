"""The broker policy file for tests: one builder instead of a YAML literal per test module.

:func:`policy_rule` writes one rule of the policy file (docs/policy.md); :func:`policy_yaml` joins rules into a
document; :data:`WEB_POLICY` is the policy most tests share: the shop's web workload may ask for ``orders:read``
and ``orders:write`` at ``https://api.example.org``, for at most 120 seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["API", "WEB_ID", "WEB_POLICY", "WEB_SCOPES", "policy_rule", "policy_yaml"]

WEB_ID = "spiffe://example.org/ns/shop/sa/web"
API = "https://api.example.org"
WEB_SCOPES = ("orders:read", "orders:write")


def policy_rule(
    *,
    spiffe_id: object | None = None,
    trust_domain: str | None = None,
    path_prefix: str | None = None,
    audiences: Iterable[str] = (API,),
    scopes: Iterable[str] = WEB_SCOPES,
    max_token_lifetime: int | None = None,
) -> str:
    """One rule, as a YAML list item: the subject (``spiffe_id``, or ``trust_domain`` with ``path_prefix``)."""
    lines = [f"spiffe_id: {spiffe_id}" if spiffe_id is not None else f"trust_domain: {trust_domain}"]
    if path_prefix is not None:
        lines.append(f"path_prefix: {path_prefix}")
    lines += [f"audiences: {json.dumps(list(audiences))}", f"scopes: {json.dumps(list(scopes))}"]
    if max_token_lifetime is not None:
        lines.append(f"max_token_lifetime: {max_token_lifetime}")
    return "  - " + "\n    ".join(lines) + "\n"


def policy_yaml(*rules: str) -> str:
    """A policy document holding ``rules`` (each from :func:`policy_rule`)."""
    return "rules:\n" + "".join(rules)


WEB_POLICY = policy_yaml(policy_rule(spiffe_id=WEB_ID, max_token_lifetime=120))
