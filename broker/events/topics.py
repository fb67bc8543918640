"""The change topics, one per kind of shared state: the names every replica and every engine agree on."""

from __future__ import annotations

__all__ = ["KEYRING"]

KEYRING = "keyring"  # the signing keyring (broker.tokens.keystore): bumped by every successful apply
