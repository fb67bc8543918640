"""One request per side before measuring: it must succeed, and what came back is described in the results.

The description is the response size, the access token's size, its JOSE header (``alg``, ``typ``) and its claim
names (no values: nothing secret, and enough to show how the two servers' tokens differ).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["describe_token", "post_form"]


def post_form(url: str, body: bytes, *, ca: Path, cert: Path, key: Path) -> tuple[int, bytes]:
    """POST a form over mutual TLS (server verified against ``ca``, no host name check)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(str(cert), str(key))
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:  # loopback servers under test
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _segment(part: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return found


def describe_token(status: int, body: bytes, *, what: str) -> dict[str, Any]:
    """The response's shape; raises if the request failed (the scenario would measure errors)."""
    if status != 200:
        raise RuntimeError(f"{what}: the first request answered {status}: {body[:400]!r}")
    document = json.loads(body)
    token = document["access_token"]
    header, claims = (_segment(part) for part in token.split(".")[:2])
    return {
        "response_bytes": len(body),
        "token_bytes": len(token),
        "alg": header.get("alg"),
        "typ": header.get("typ"),
        "claims": sorted(claims),
        "cnf": sorted(claims.get("cnf", {})),
        "client_id": claims.get("client_id"),
        "scope": claims.get("scope"),
    }
