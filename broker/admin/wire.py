"""The admin API's JSON documents: one encoder and one decoder per result, shared by server and client.

Times are RFC 3339 in UTC (``2025-01-31T12:00:00.123456Z``); hashes are lowercase hex. An audit record's ``body``
is its canonical JSON, parsed (``null`` with ``"body_unparsed": true`` if it is not JSON: ``audit verify`` names
such a record). A change's document says whether its outcome reached the audit journal (``"audited"``; see
:mod:`broker.admin.gate`). The decoders refuse a document of another shape (:class:`WireError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from broker.admin.ports import BlastRadius, KeyInfo, KeyRevocation, KeyRotation, StoreStatus, SubjectCount
from broker.audit.journal import AuditRecord
from broker.events.revocations import SubjectPattern, SubjectQuarantined
from broker.identity.errors import InvalidSpiffeIdError
from broker.tokens.clients import RegisteredClient
from broker.tokens.keystore import KeyState
from broker.tokens.quarantine import Quarantined, Released

__all__ = [
    "AuditEntry",
    "AuditPage",
    "WireError",
    "audit_page_document",
    "client_document",
    "client_registration",
    "clients_document",
    "decode_audit_page",
    "decode_client",
    "decode_clients",
    "decode_keys",
    "decode_quarantine_added",
    "decode_quarantine_released",
    "decode_quarantines",
    "decode_revocation",
    "decode_rotation",
    "decode_store_status",
    "encode_time",
    "keys_document",
    "quarantine_added_document",
    "quarantine_released_document",
    "quarantines_document",
    "revocation_document",
    "rotation_document",
    "store_status_document",
]

T = TypeVar("T")


class WireError(ValueError):
    """A document that is not the shape this version of the admin API sends."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record as the admin API shows it."""

    seq: int
    at: datetime
    event: str
    body: Any
    hash: str
    prev_hash: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Records in ``seq`` order; ``next_after`` is the ``since`` for the following page (the last seq, or the
    query's own ``since`` when there were none)."""

    records: tuple[AuditEntry, ...]
    next_after: int


# -- encoding (server) -----------------------------------------------------------------------------------------


def encode_time(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _key(info: KeyInfo) -> dict[str, Any]:
    return {
        "kid": info.kid,
        "algorithm": info.algorithm,
        "state": str(info.state),
        "kek_id": info.kek_id,
        "created_at": encode_time(info.created_at),
        "activated_at": encode_time(info.activated_at),
        "retiring_at": encode_time(info.retiring_at),
        "retired_at": encode_time(info.retired_at),
    }


def keys_document(keys: list[KeyInfo]) -> dict[str, Any]:
    return {"keys": [_key(info) for info in keys]}


def rotation_document(rotation: KeyRotation) -> dict[str, Any]:
    return {
        "active_kid": rotation.active_kid,
        "previous_kid": rotation.previous_kid,
        "next_kid": rotation.next_kid,
        "retired_kids": list(rotation.retired_kids),
    }


def revocation_document(revocation: KeyRevocation) -> dict[str, Any]:
    radius = revocation.blast_radius
    return {
        "revoked_kid": revocation.revoked_kid,
        "active_kid": revocation.active_kid,
        "blast_radius": {
            "live_tokens": radius.live_tokens,
            "subjects": [{"spiffe_id": s.spiffe_id, "tokens": s.tokens} for s in radius.subjects],
            "audiences": list(radius.audiences),
            "valid_until": encode_time(radius.valid_until),
            "error": radius.error,
        },
    }


def store_status_document(status: StoreStatus) -> dict[str, Any]:
    return {
        "engine": status.engine,
        "url": status.redacted_url,
        "schema_version": status.schema_version,
        "latest_version": status.latest_version,
    }


def _quarantine(quarantine: SubjectQuarantined) -> dict[str, Any]:
    return {
        "pattern": quarantine.pattern.text,
        "reason": quarantine.reason,
        "since": encode_time(quarantine.at),
        "until": encode_time(quarantine.until),
        "cutoff_until": encode_time(quarantine.cutoff_until),
    }


def quarantines_document(quarantines: list[SubjectQuarantined]) -> dict[str, Any]:
    return {"quarantines": [_quarantine(q) for q in quarantines]}


def quarantine_added_document(added: Quarantined) -> dict[str, Any]:
    return {
        "quarantine": _quarantine(added.quarantine),
        "seq": added.seq,
        "live_tokens": added.live_tokens,
        "truncated": added.truncated,
        "ledger_error": added.ledger_error,
    }


def quarantine_released_document(released: Released) -> dict[str, Any]:
    return {
        "quarantine": _quarantine(released.quarantine),
        "released_at": encode_time(released.at),
        "seq": released.seq,
    }


def client_registration(client: RegisteredClient) -> dict[str, Any]:
    """The body of ``POST /clients``: RFC 7591 §2's ``jwks`` or ``jwks_uri`` (never both), and the broker's own."""
    body: dict[str, Any] = {"client_id": client.client_id, "spiffe_id": client.spiffe_id}
    if client.jwks is not None:
        body["jwks"] = dict(client.jwks)
    if client.jwks_uri is not None:
        body["jwks_uri"] = client.jwks_uri
    return {**body, "algorithms": list(client.algorithms), "max_assertion_lifetime": client.max_assertion_lifetime}


def client_document(client: RegisteredClient) -> dict[str, Any]:
    """A registered client: its registration (the inline ``jwks`` holds public keys only), state and times."""
    return {
        **client_registration(client),
        "jwks": None if client.jwks is None else dict(client.jwks),
        "jwks_uri": client.jwks_uri,
        "disabled": client.disabled,
        "created_at": encode_time(client.created_at),
        "updated_at": encode_time(client.updated_at),
    }


def clients_document(clients: list[RegisteredClient]) -> dict[str, Any]:
    return {"clients": [client_document(client) for client in clients]}


def _record(record: AuditRecord) -> dict[str, Any]:
    document: dict[str, Any] = {"seq": record.seq, "at": encode_time(record.at), "event": record.event}
    try:
        document["body"] = json.loads(record.body)
    except ValueError:  # UnicodeDecodeError too
        document["body"], document["body_unparsed"] = None, True
    document["hash"], document["prev_hash"] = record.hash.hex(), record.prev_hash.hex()
    return document


def audit_page_document(records: list[AuditRecord], after: int) -> dict[str, Any]:
    return {"records": [_record(r) for r in records], "next_since": records[-1].seq if records else after}


# -- decoding (client) -----------------------------------------------------------------------------------------


def _field(document: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError(f"member {name!r} is missing or not a {kind.__name__}")
    return value


def _optional(document: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    return None if document.get(name) is None else _field(document, name, kind)


def _time(document: Mapping[str, Any], name: str) -> datetime | None:
    text = _optional(document, name, str)
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise WireError(f"member {name!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise WireError(f"member {name!r} has no time zone")
    return at


def _required_time(document: Mapping[str, Any], name: str) -> datetime:
    at = _time(document, name)
    if at is None:
        raise WireError(f"member {name!r} is missing")
    return at


def _objects(document: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    items = _field(document, name, list)
    if not all(isinstance(item, dict) for item in items):
        raise WireError(f"member {name!r} is not a list of objects")
    return items


def _strings(document: Mapping[str, Any], name: str) -> tuple[str, ...]:
    items = _field(document, name, list)
    if not all(isinstance(item, str) for item in items):
        raise WireError(f"member {name!r} is not a list of strings")
    return tuple(items)


def _decode_key(item: Mapping[str, Any]) -> KeyInfo:
    try:
        state = KeyState(_field(item, "state", str))
    except ValueError:
        raise WireError("member 'state' is not a key state") from None
    return KeyInfo(
        kid=_field(item, "kid", str),
        algorithm=_field(item, "algorithm", str),
        state=state,
        kek_id=_field(item, "kek_id", str),
        created_at=_required_time(item, "created_at"),
        activated_at=_time(item, "activated_at"),
        retiring_at=_time(item, "retiring_at"),
        retired_at=_time(item, "retired_at"),
    )


def decode_keys(document: Mapping[str, Any]) -> list[KeyInfo]:
    return [_decode_key(item) for item in _objects(document, "keys")]


def decode_rotation(document: Mapping[str, Any]) -> KeyRotation:
    return KeyRotation(
        active_kid=_field(document, "active_kid", str),
        previous_kid=_optional(document, "previous_kid", str),
        next_kid=_optional(document, "next_kid", str),
        retired_kids=_strings(document, "retired_kids"),
    )


def decode_revocation(document: Mapping[str, Any]) -> KeyRevocation:
    radius = _field(document, "blast_radius", dict)
    subjects = tuple(
        SubjectCount(spiffe_id=_field(s, "spiffe_id", str), tokens=_field(s, "tokens", int))
        for s in _objects(radius, "subjects")
    )
    return KeyRevocation(
        revoked_kid=_field(document, "revoked_kid", str),
        active_kid=_field(document, "active_kid", str),
        blast_radius=BlastRadius(
            live_tokens=None if radius.get("live_tokens") is None else _field(radius, "live_tokens", int),
            subjects=subjects,
            audiences=_strings(radius, "audiences"),
            valid_until=_time(radius, "valid_until"),
            error=None if radius.get("error") is None else _field(radius, "error", str),
        ),
    )


def _decode_quarantine(item: Mapping[str, Any]) -> SubjectQuarantined:
    try:
        pattern = SubjectPattern.parse(_field(item, "pattern", str), all_of_trust_domain=True)
    except (InvalidSpiffeIdError, ValueError):
        raise WireError("member 'pattern' is not a SPIFFE ID pattern") from None
    return SubjectQuarantined(
        pattern,
        at=_required_time(item, "since"),
        until=_time(item, "until"),
        cutoff_until=_required_time(item, "cutoff_until"),
        reason=_field(item, "reason", str),
    )


def decode_quarantines(document: Mapping[str, Any]) -> list[SubjectQuarantined]:
    return [_decode_quarantine(item) for item in _objects(document, "quarantines")]


def decode_quarantine_added(document: Mapping[str, Any]) -> Quarantined:
    return Quarantined(
        quarantine=_decode_quarantine(_field(document, "quarantine", dict)),
        seq=_field(document, "seq", int),
        live_tokens=_optional(document, "live_tokens", int),
        truncated=_field(document, "truncated", bool),
        ledger_error=_optional(document, "ledger_error", str),
    )


def decode_quarantine_released(document: Mapping[str, Any]) -> Released:
    return Released(
        quarantine=_decode_quarantine(_field(document, "quarantine", dict)),
        at=_required_time(document, "released_at"),
        seq=_field(document, "seq", int),
    )


def decode_client(document: Mapping[str, Any]) -> RegisteredClient:
    return RegisteredClient(
        client_id=_field(document, "client_id", str),
        spiffe_id=_field(document, "spiffe_id", str),
        jwks=_optional(document, "jwks", dict),
        jwks_uri=_optional(document, "jwks_uri", str),
        algorithms=_strings(document, "algorithms"),
        max_assertion_lifetime=_field(document, "max_assertion_lifetime", int),
        disabled=_field(document, "disabled", bool),
        created_at=_time(document, "created_at"),
        updated_at=_time(document, "updated_at"),
    )


def decode_clients(document: Mapping[str, Any]) -> list[RegisteredClient]:
    return [decode_client(item) for item in _objects(document, "clients")]


def decode_store_status(document: Mapping[str, Any]) -> StoreStatus:
    return StoreStatus(
        engine=_field(document, "engine", str),
        redacted_url=_field(document, "url", str),
        schema_version=_field(document, "schema_version", int),
        latest_version=_field(document, "latest_version", int),
    )


def decode_audit_page(document: Mapping[str, Any]) -> AuditPage:
    records = tuple(
        AuditEntry(
            seq=_field(item, "seq", int),
            at=_required_time(item, "at"),
            event=_field(item, "event", str),
            body=item.get("body"),
            hash=_field(item, "hash", str),
            prev_hash=_field(item, "prev_hash", str),
        )
        for item in _objects(document, "records")
    )
    return AuditPage(records=records, next_after=_field(document, "next_since", int))
