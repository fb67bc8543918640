"""The change topics, one per kind of shared state: the names every replica and every engine agree on."""

from __future__ import annotations

__all__ = ["APIKEYS", "CLIENTS", "KEYRING", "REPLAY", "REVOCATIONS"]

KEYRING = "keyring"  # the signing keyring (broker.tokens.keystore): bumped by every successful apply
REVOCATIONS = "revocations"  # the revocation log (broker.tokens.revocation): bumped by every append
CLIENTS = "clients"  # the client registry (broker.tokens.clients): bumped by every change
REPLAY = "replay"  # reserved: the replay cache bumps no topic (every check goes to the store)
APIKEYS = "apikeys"  # the API-key exception registry (broker.apikeys.store): bumped by every change
