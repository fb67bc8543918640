"""The store URL: one setting chooses the store.

* ``sqlite:///abs/path/broker.db`` (RFC 8089 file URI shape: three slashes, then an absolute path) or
  ``sqlite:relative/path.db``: the embedded default, a file in the state directory.
* ``postgresql://user@host:port/db?sslmode=verify-full&...`` (or ``postgres://``): libpq's connection URI
  (PostgreSQL 15 docs, "34.1.1.2 Connection URIs"); query parameters pass through to libpq, except
  ``password_file``, which the broker reads itself. A host that starts with ``/`` (``?host=/run/postgresql``) is
  a Unix socket directory.
* ``memory:``: the in-memory twin, for tests.

A password never appears in :meth:`StoreUrl.redacted`, ``repr`` or an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from broker.errors import StoreUrlError

__all__ = ["StoreKind", "StoreUrl"]

StoreKind = Literal["sqlite", "postgresql", "memory"]
_HINT = "use sqlite:///path/to/broker.db, postgresql://user@host/dbname or memory:"


@dataclass(frozen=True, slots=True)
class StoreUrl:
    kind: StoreKind
    path: Path | None = None  # sqlite
    conninfo: str = field(default="", repr=False)  # postgresql, without password_file (may hold a password)
    password_file: Path | None = None
    display: str = ""  # the URL with any password replaced by "***"

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        text = text.strip()
        if text == "memory:":
            return cls("memory", display="memory:")
        scheme, _, rest = text.partition(":")
        if scheme == "sqlite":
            return cls._sqlite(text, rest)
        if scheme in ("postgresql", "postgres"):
            return cls._postgresql(text)
        raise StoreUrlError(f"unsupported store URL scheme {scheme!r}: {_HINT}")

    @classmethod
    def _sqlite(cls, text: str, rest: str) -> StoreUrl:
        if rest.startswith("///"):
            raw = rest[2:]
        elif rest.startswith("//"):
            raise StoreUrlError(f"a sqlite URL has no host ({text!r}): {_HINT}")
        else:
            raw = rest
        if "?" in raw or "#" in raw:
            raise StoreUrlError(f"a sqlite store URL takes no query or fragment ({text!r})")
        path = unquote(raw)
        if not path or path.endswith("/"):
            raise StoreUrlError(f"a sqlite store URL names a file ({text!r}): {_HINT}")
        return cls("sqlite", path=Path(path), display=f"sqlite://{'' if path.startswith('/') else '/'}{path}")

    @classmethod
    def _postgresql(cls, text: str) -> StoreUrl:
        try:
            parts = urlsplit(text)
            _ = parts.port  # raises ValueError for a bad port
        except ValueError as exc:
            raise StoreUrlError(f"not a PostgreSQL URL: {exc}") from None
        if parts.fragment:
            raise StoreUrlError("a PostgreSQL store URL takes no fragment")
        query = parse_qsl(parts.query, keep_blank_values=True)
        password_file = None
        kept: list[tuple[str, str]] = []
        for key, value in query:
            if key == "password_file":
                password_file = Path(value)
            elif key == "password":
                raise StoreUrlError("put the PostgreSQL password in a file (password_file=) or the environment")
            else:
                kept.append((key, value))
        if not re.fullmatch(r"/[^/]*", parts.path or "/"):
            raise StoreUrlError("a PostgreSQL store URL names one database: postgresql://host/dbname")
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), ""))
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{quote(unquote(userinfo.split(':', 1)[0]))}:***@{hostport}"
        display = urlunsplit(("postgresql", netloc, parts.path, urlencode(kept), ""))
        return cls("postgresql", conninfo=conninfo, password_file=password_file, display=display)

    def redacted(self) -> str:
        return self.display

    def __str__(self) -> str:
        return self.display
