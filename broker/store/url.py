"""The store URL: one setting chooses the store.

* ``sqlite:///abs/path/broker.db`` (RFC 8089 file URI shape: three slashes, then an absolute path) or
  ``sqlite:relative/path.db``: the embedded default, a file in the state directory.
* ``postgresql://user@host:port/db?sslmode=verify-full&...`` (or ``postgres://``): libpq's connection URI
  (PostgreSQL 15 docs, "34.1.1.2 Connection URIs"); query parameters pass through to libpq, except
  ``password_file``, which the broker reads itself. A host that starts with ``/`` (``?host=/run/postgresql``) is
  a Unix socket directory.
* ``memory:``: the in-memory twin, for tests.

A password never appears in :meth:`StoreUrl.redacted`, ``repr`` or an error message: ``password`` and
``sslpassword`` are refused in the URL, and only parameters on an explicit safe list are displayed with their
values (any other shows ``***``). Over TCP the connection is TLS with ``sslmode=verify-full`` unless the URL says
otherwise; a weaker ``sslmode`` is refused without ``allow_weak_tls=true``. A Unix-socket host is left as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from broker.errors import StoreUrlError

__all__ = ["StoreKind", "StoreUrl"]

StoreKind = Literal["sqlite", "postgresql", "memory"]
_HINT = "use sqlite:///path/to/broker.db, postgresql://user@host/dbname or memory:"
# libpq parameters that hold a secret: refused in the URL (the password comes from password_file or the environment).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
# Shown as they are by redacted()/str(); any other parameter's value is shown as "***".
_DISPLAY_SAFE = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslcrl", "sslcrldir",
        "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version", "connect_timeout",
        "application_name", "target_session_attrs", "load_balance_hosts", "gssencmode", "channel_binding",
    }
)  # fmt: skip
_WEAK_TLS_PARAM = "allow_weak_tls"  # the explicit opt-out from sslmode=verify-full on a TCP host; not sent to libpq
_STRONG_SSLMODE = "verify-full"


def _pg_uri(netloc: str, path: str, query: str) -> str:
    """``postgresql://netloc/path?query``; unlike ``urlunsplit``, keeps ``//`` when the netloc is empty."""
    return f"postgresql://{netloc}{path}" + (f"?{query}" if query else "")


def _is_socket(host: str) -> bool:
    return unquote(host).startswith("/")


def _tls(netloc_host: str | None, kept: list[tuple[str, str]], *, weak_tls: bool) -> list[tuple[str, str]]:
    """TCP hosts default to ``sslmode=verify-full``; a weaker mode needs ``allow_weak_tls=true``; sockets: as given."""
    hosts = [h for k, v in kept if k in ("host", "hostaddr") for h in v.split(",") if h]
    if netloc_host:
        hosts.append(netloc_host)
    tcp = any(not _is_socket(h) for h in hosts)  # no host at all: libpq's default Unix socket
    if not tcp:
        return kept
    modes = [v for k, v in kept if k == "sslmode"]
    if not modes:
        return [*kept, ("sslmode", _STRONG_SSLMODE)]
    if any(m != _STRONG_SSLMODE for m in modes) and not weak_tls:
        raise StoreUrlError(
            f"sslmode={modes[-1]} does not verify the PostgreSQL server over TCP: use sslmode=verify-full (the "
            f"default) with sslrootcert=, or add {_WEAK_TLS_PARAM}=true to accept it knowingly"
        )
    return kept


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
        weak_tls = False
        kept: list[tuple[str, str]] = []
        for key, value in query:
            if key == "password_file":
                password_file = Path(value)
            elif key in _SECRET_PARAMS:
                raise StoreUrlError(
                    f"put the PostgreSQL {key} in a file (password_file= for the password) or the environment, "
                    "never in the store URL"
                )
            elif key == _WEAK_TLS_PARAM:
                weak_tls = value.lower() in ("1", "true", "yes")
            else:
                kept.append((key, value))
        if not re.fullmatch(r"/[^/]*", parts.path or "/"):
            raise StoreUrlError("a PostgreSQL store URL names one database: postgresql://host/dbname")
        kept = _tls(parts.hostname, kept, weak_tls=weak_tls)
        conninfo = _pg_uri(parts.netloc, parts.path, urlencode(kept))
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{quote(unquote(userinfo.split(':', 1)[0]))}:***@{hostport}"
        shown = [(k, v if k in _DISPLAY_SAFE else "***") for k, v in kept]
        display = _pg_uri(netloc, parts.path, urlencode(shown, safe="*/"))
        return cls("postgresql", conninfo=conninfo, password_file=password_file, display=display)

    def redacted(self) -> str:
        return self.display

    def __str__(self) -> str:
        return self.display
