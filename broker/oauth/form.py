"""Token request parameters: the repeated-parameter rule and target selection.

* RFC 6749 §3.2: request parameters must not repeat (``invalid_request``); §3.1: a parameter sent without a value
  is treated as omitted.
* RFC 8693 §2.1 lets ``audience`` and ``resource`` repeat; this service issues a token for exactly one target, so
  more than one distinct target is ``invalid_target`` and none is ``invalid_request``. A ``resource`` must be an
  absolute URI without a fragment (RFC 8707 §2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from broker.errors import InvalidRequestError, InvalidTargetError

__all__ = ["KNOWN_PARAMETERS", "MULTI_VALUED", "select_target", "single_values"]

MULTI_VALUED = frozenset({"audience", "resource"})
# Parameters of RFC 6749 §4.4 / RFC 8693 §2.1 / RFC 7521 §4.2 (and client_id, RFC 8705 §2): the only names an
# error may quote.
KNOWN_PARAMETERS = (
    frozenset(
        {
            "grant_type",
            "scope",
            "client_id",
            "subject_token",
            "subject_token_type",
            "actor_token",
            "actor_token_type",
            "requested_token_type",
            "client_assertion",
            "client_assertion_type",
        }
    )
    | MULTI_VALUED
)
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^#\s]+")  # RFC 8707 §2: absolute URI, no fragment


def single_values(form: Mapping[str, Sequence[str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Split a parsed form into single-valued parameters and the multi-valued targets.

    RFC 6749 §3.2: parameters must not repeat (``invalid_request``); §3.1: an empty value counts as omitted.
    """
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in MULTI_VALUED}
    for name, values in form.items():
        present = [value for value in values if value != ""]
        if name in MULTI_VALUED:
            multi[name] = present
        elif len(values) > 1:
            # A name the client made up is never echoed: it could carry anything, a secret included.
            shown = repr(name) if name in KNOWN_PARAMETERS else "(unknown)"
            raise InvalidRequestError(f"parameter {shown} is repeated")
        elif present:
            single[name] = present[0]
    return single, multi


def select_target(targets: Mapping[str, Sequence[str]]) -> str:
    """The one target from ``audience`` and/or ``resource`` (RFC 8693 §2.1, RFC 8707 §2)."""
    for resource in targets.get("resource", ()):
        if not _ABSOLUTE_URI.fullmatch(resource):
            raise InvalidTargetError("resource must be an absolute URI without a fragment (RFC 8707 §2)")
    distinct = set(targets.get("audience", ())) | set(targets.get("resource", ()))
    if not distinct:
        raise InvalidRequestError("missing target: send 'audience' or 'resource'")
    if len(distinct) > 1:
        raise InvalidTargetError("exactly one target (audience or resource) per token")
    return distinct.pop()
