"""Sealing an exception's secret at rest, and opening it for a grant or a reveal (:mod:`broker._sealing`).

Each version is sealed on its own (AES-256-GCM under a fresh data key wrapped by the primary KEK, NIST SP 800-38D)
with :func:`~broker.apikeys.model.secret_aad` ``(name, version)`` as associated data: a sealed version copied to
another exception or another version number does not open. A version that does not open here (its KEK is not
configured on this replica, or the row was changed) is :class:`~broker.apikeys.errors.SecretUnavailableError`
naming the KEK id, and nothing is revealed or changed.

:func:`secret_text` is the input rule for a new secret: the model's (:func:`~broker.apikeys.model.check_secret`:
at most 4096 bytes, printable ASCII, so no CR, LF or NUL to break out of a header or query parameter) plus no
leading or trailing space, which an HTTP field value would lose (RFC 9110 §5.5).
"""

from __future__ import annotations

from broker._sealing import KekRing
from broker.apikeys.errors import InvalidExceptionError, SecretUnavailableError
from broker.apikeys.model import SealedVersion, check_secret, secret_aad
from broker.errors import SealingError

__all__ = ["open_version", "seal_secret", "secret_text"]


def secret_text(secret: bytes) -> str:
    """``secret`` as the text to inject; InvalidExceptionError (never quoting it) otherwise."""
    try:
        text = check_secret(secret)
    except ValueError as exc:
        raise InvalidExceptionError(str(exc)) from None
    if text != text.strip(" "):
        raise InvalidExceptionError("the secret has a leading or trailing space, which HTTP would strip")
    return text


def seal_secret(keks: KekRing, name: str, version: int, text: str) -> tuple[bytes, str]:
    """``text`` sealed for ``(name, version)`` under the primary KEK; the blob and the KEK id."""
    return keks.seal(text.encode("ascii"), secret_aad(name, version)), keks.primary.kek_id


def open_version(keks: KekRing, version: SealedVersion) -> str:
    """The secret of ``version``; :class:`SecretUnavailableError` if it does not open or is not a valid secret."""
    try:
        plain = keks.unseal(version.sealed, secret_aad(version.name, version.version), version.kek_id)
    except SealingError as exc:  # its words name the KEK id and what to do, never key material
        raise SecretUnavailableError(
            f"version {version.version} of {version.name!r} does not open: {exc.description}"
        ) from None
    try:
        return check_secret(plain)
    except ValueError:
        raise SecretUnavailableError(f"version {version.version} of {version.name!r} is not a valid secret") from None
