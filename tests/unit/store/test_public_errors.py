"""A store error reaches a client as a generic description; its details (URL, paths, driver text) stay in the log."""

from __future__ import annotations

import json

import pytest

from broker.errors import (
    BrokerError,
    StoreConflictError,
    StoreCorruptError,
    StoreError,
    StoreSchemaError,
    StoreUnavailableError,
)
from broker.oauth.response import bearer_challenge, error_document, public_error

SECRET_DETAIL = "postgresql://broker@db.internal:5432/broker?host=/run/secret-path: OperationalError"


def test_unavailable_keeps_details_for_the_log_only() -> None:
    exc = StoreUnavailableError(SECRET_DETAIL)
    assert exc.detail == SECRET_DETAIL and SECRET_DETAIL in str(exc)
    assert exc.description == "state store unavailable; retry later"


@pytest.mark.parametrize(
    "exc",
    [
        StoreUnavailableError(SECRET_DETAIL),
        StoreError(SECRET_DETAIL),
        StoreCorruptError(SECRET_DETAIL),
        StoreSchemaError(SECRET_DETAIL),
        StoreConflictError(SECRET_DETAIL),
    ],
    ids=lambda e: type(e).__name__,
)
def test_no_store_detail_reaches_a_client(exc: BrokerError) -> None:
    public = public_error(exc)
    document = error_document(public.error, public.description)
    _, _, body = bearer_challenge(public, realm="broker")
    for shown in (json.dumps(document), body.decode()):
        assert "db.internal" not in shown and "secret-path" not in shown and "OperationalError" not in shown
    if exc.status == 503:
        assert document == {
            "error": "temporarily_unavailable",
            "error_description": "state store unavailable; retry later",
        }
    else:
        assert document["error"] == "server_error"
