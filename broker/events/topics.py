"""The change topics, one per kind of shared state: the names every replica and every engine agree on."""

from __future__ import annotations

__all__ = ["KEYRING", "REVOCATIONS"]

KEYRING = "keyring"  # the signing keyring (broker.tokens.keystore): bumped by every successful apply
REVOCATIONS = "revocations"  # the revocation log (broker.tokens.revocation): bumped by every append
