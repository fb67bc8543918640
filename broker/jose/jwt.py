"""JWT claims (RFC 7519): the public facade."""

from __future__ import annotations

from broker.jose._rfc7519 import finite_number

__all__ = ["finite_number"]
