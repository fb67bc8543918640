"""Tests for broker.tokens.endpoint.TokenResponse.body: the bytes json.dumps writes for to_json(), made directly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.oauth.binding import Binding, Jkt, X5tS256
from broker.oauth.constants import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT
from broker.tokens.endpoint import TokenResponse
from broker.tokens.issuer import IssuedToken


def _response(token: str, expires_in: int, scopes: tuple[str, ...], binding: Binding | None,
              issued_token_type: str | None) -> TokenResponse:  # fmt: skip
    issued = IssuedToken(token, "jti", expires_in, "https://api", scopes, {}, kid="k", binding=binding)
    return TokenResponse(issued, issued_token_type)


@pytest.mark.parametrize(
    ("scopes", "binding", "issued_token_type"),
    [
        (("orders:read",), X5tS256("v"), TOKEN_TYPE_JWT),
        ((), X5tS256("v"), None),
        (("a", "b"), Jkt("v"), TOKEN_TYPE_ACCESS_TOKEN),
        (("a",), None, None),
    ],
    ids=["exchange", "client-credentials-no-scope", "dpop-two-scopes", "bearer"],
)
def test_body_is_the_bytes_json_dumps_writes_for_to_json(
    scopes: tuple[str, ...], binding: Binding | None, issued_token_type: str | None
) -> None:
    response = _response("eyJh.eyJp.c2ln", 1800, scopes, binding, issued_token_type)
    assert response.body() == json.dumps(response.to_json()).encode()


@given(
    token=st.text(),
    expires_in=st.integers(min_value=-(2**70), max_value=2**70),
    scopes=st.lists(st.text(min_size=1), max_size=3).map(tuple),
    issued_token_type=st.none() | st.text(),
)
def test_body_matches_json_dumps_for_any_text(
    token: str, expires_in: int, scopes: tuple[str, ...], issued_token_type: str | None
) -> None:
    response = _response(token, expires_in, scopes, X5tS256("v"), issued_token_type)
    assert response.body() == json.dumps(response.to_json()).encode()
