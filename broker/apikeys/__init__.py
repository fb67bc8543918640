"""Governed API-key exceptions (milestone 2): model, registry, sealing, review rules. Empty for now."""

__all__: list[str] = []
