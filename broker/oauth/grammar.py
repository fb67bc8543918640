"""The character rules of OAuth parameters, written once.

* RFC 6749 §3.3: ``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``; a scope string is scope-tokens separated by
  single spaces.
* Audience (RFC 8693 §2.1, a logical name): here printable ASCII without spaces, ``%x21-7E``.
* RFC 6749 §5.2: ``error_description`` is ``%x20-21 / %x23-5B / %x5D-7E``. §5.2 allows the same set for
  ``error``; the broker accepts codes without the space (a code is one word), that is scope-token characters.

Callers add their own length limits (``len(value) <= n``) to these patterns.
"""

from __future__ import annotations

import re

__all__ = ["AUDIENCE", "ERROR_CODE", "ERROR_DESCRIPTION", "SCOPE", "SCOPE_TOKEN", "normalize_scope"]

_NQCHAR = r"\x21\x23-\x5b\x5d-\x7e"  # RFC 6749 Appendix A: NQCHAR without space

SCOPE_TOKEN = re.compile(rf"[{_NQCHAR}]+")
SCOPE = re.compile(rf"[{_NQCHAR}]+(?: [{_NQCHAR}]+)*")
AUDIENCE = re.compile(r"[\x21-\x7e]+")
ERROR_CODE = SCOPE_TOKEN
ERROR_DESCRIPTION = re.compile(rf"[\x20{_NQCHAR}]*")


def normalize_scope(scope: str) -> str:
    """One spelling per set of scopes (RFC 6749 §3.3: order and repetition carry no meaning): sorted, unique."""
    return " ".join(sorted(set(scope.split())))
