"""Envelope encryption at rest: AES-256-GCM data keys wrapped by a key-encryption key (KEK)."""
