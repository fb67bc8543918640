"""An admin endpoint as data: method, path, the input it takes, and the operation behind it.

Each concern is one module that returns its :class:`AdminRoute` tuple from its port (``key_routes(keys)`` in
:mod:`broker.admin.keys`; quarantine, revocations, clients and API-key exceptions add theirs the same way), and
:func:`broker.admin.app.build_admin_app` mounts them behind the one gate (:mod:`broker.admin.gate`), which
authenticates, reads and checks the input, audits and answers. An operation never sees an unauthenticated call,
never writes audit records and never builds an error body: it returns a document or raises a
:class:`~broker.errors.BrokerError`.

``GET`` reads and takes query parameters; ``POST`` changes state and takes a JSON object (``params`` lists the
names either accepts). ``describe`` checks the input's values (raising ``invalid_request``) and returns what the
audit records say of it: it must leave out anything secret, so it is written per route, never a dump of the body.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from broker.errors import InvalidRequestError
from broker.identity.spiffeid import SpiffeId

__all__ = ["AdminInput", "AdminOutput", "AdminRoute", "Operation", "describe_path", "optional_reason", "path_value"]

MAX_REASON = 200
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")  # no control characters (a reason is shown in logs and terminals)
_PATH_VALUE = re.compile(r"[\x21-\x7e]{1,200}")  # a kid and its kind: 1 to 200 printable ASCII, no space


@dataclass(frozen=True, slots=True)
class AdminInput:
    """A call that passed the gate: its admin, the path's parameters, and its query or body members."""

    actor: SpiffeId
    path: Mapping[str, str]
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AdminOutput:
    """The JSON document to answer with, and what the audit record of the outcome adds (never a secret)."""

    document: dict[str, Any]
    audit: dict[str, Any] = field(default_factory=dict)


Operation = Callable[[AdminInput], Awaitable[AdminOutput]]


def describe_path(given: AdminInput) -> dict[str, Any]:
    """The default description: the path's parameters, each checked by :func:`path_value`."""
    return {name: path_value(given, name) for name in given.path}


@dataclass(frozen=True, slots=True)
class AdminRoute:
    method: Literal["GET", "POST"]
    path: str  # below /admin/v1, e.g. "/keys/{kid}/revoke"
    operation: Operation
    params: frozenset[str] = frozenset()
    describe: Callable[[AdminInput], dict[str, Any]] = describe_path
    max_body: int | None = None  # a POST body larger than the gate's limit (an inline JWKS); None: the gate's

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.endswith("/"):
            raise ValueError(f"an admin route path starts with / and does not end with one: {self.path!r}")

    @property
    def changes_state(self) -> bool:
        return self.method == "POST"


def path_value(given: AdminInput, name: str) -> str:
    """A path parameter (a kid, a SPIFFE ID's quoted form): 1 to 200 printable ASCII characters, no space."""
    value = given.path[name]
    if not _PATH_VALUE.fullmatch(value):
        raise InvalidRequestError(f"the {name} in the path must be 1 to 200 printable ASCII characters")
    return value


def optional_reason(given: AdminInput) -> str | None:
    """The optional ``reason`` member: why the admin makes the change, kept in the audit journal."""
    reason = given.params.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON or not _PRINTABLE.fullmatch(reason):
        raise InvalidRequestError(f"reason must be a string of 1 to {MAX_REASON} characters without control codes")
    return reason
