"""Store URLs: sqlite, postgresql, memory; anything else is a StoreUrlError naming the accepted forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError, StoreUrlError
from broker.store import StoreUrl


@pytest.mark.parametrize(
    ("text", "path"),
    [("sqlite:///var/lib/broker/broker.db", "/var/lib/broker/broker.db"), ("sqlite:state/b.db", "state/b.db")],
    ids=["absolute", "relative"],
)
def test_sqlite_urls(text: str, path: str) -> None:
    url = StoreUrl.parse(text)
    assert (url.kind, url.path) == ("sqlite", Path(path))


def test_memory_url() -> None:
    assert StoreUrl.parse("memory:").kind == "memory"


def test_postgresql_url_keeps_libpq_parameters_and_takes_out_the_password_file() -> None:
    url = StoreUrl.parse("postgres://broker@db.example:5433/broker?sslmode=verify-full&password_file=/run/s/pw")
    assert url.kind == "postgresql"
    assert url.password_file == Path("/run/s/pw")
    assert url.conninfo == "postgresql://broker@db.example:5433/broker?sslmode=verify-full"


def test_postgresql_password_never_shows() -> None:
    url = StoreUrl.parse("postgresql://broker:hunter2@db/broker")
    assert "hunter2" not in str(url) and "hunter2" not in repr(url)
    assert str(url) == "postgresql://broker:***@db/broker?sslmode=verify-full"


def test_only_safe_parameters_are_displayed() -> None:
    url = StoreUrl.parse(
        "postgresql://broker@db/broker?sslkey=/k.pem&options=-c%20x%3Dsecret-ish&application_name=b&sslmode=verify-full"
    )
    for shown in (url.redacted(), str(url), repr(url)):
        assert "secret-ish" not in shown and "/k.pem" not in shown
    assert (
        url.redacted() == "postgresql://broker@db/broker?sslkey=***&options=***&application_name=b&sslmode=verify-full"
    )
    assert "secret-ish" in url.conninfo


@pytest.mark.parametrize(
    ("text", "conninfo"),
    [
        ("postgresql://broker@db/broker", "postgresql://broker@db/broker?sslmode=verify-full"),
        ("postgresql://broker@db/broker?sslmode=verify-full", "postgresql://broker@db/broker?sslmode=verify-full"),
        (
            "postgresql://broker@db/broker?sslmode=require&allow_weak_tls=true",
            "postgresql://broker@db/broker?sslmode=require",
        ),
        ("postgresql://broker@/broker?host=/run/postgresql", "postgresql://broker@/broker?host=%2Frun%2Fpostgresql"),
        (
            "postgresql://broker@/broker?host=/run/pg&sslmode=disable",
            "postgresql://broker@/broker?host=%2Frun%2Fpg&sslmode=disable",
        ),
        ("postgresql://broker@%2Frun%2Fpg/broker", "postgresql://broker@%2Frun%2Fpg/broker"),
        ("postgresql:///broker", "postgresql:///broker"),
        ("postgresql:///broker?host=db.example", "postgresql:///broker?host=db.example&sslmode=verify-full"),
    ],
    ids=[
        "tcp-default",
        "tcp-verify-full",
        "tcp-opt-out",
        "socket",
        "socket-disable",
        "socket-netloc",
        "default-socket",
        "tcp-query-host",
    ],
)
def test_tcp_hosts_default_to_verify_full_and_sockets_are_left_alone(text: str, conninfo: str) -> None:
    assert StoreUrl.parse(text).conninfo == conninfo


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mysql://db/broker", "unsupported store URL scheme 'mysql'"),
        ("sqlite://host/path.db", "no host"),
        ("sqlite:///var/lib/", "names a file"),
        ("sqlite:///a.db?mode=ro", "no query"),
        ("postgresql://db/broker?password=x", "password_file"),
        ("postgresql://db/broker?sslpassword=x", "sslpassword"),
        ("postgresql://db/broker?sslmode=require", "sslmode=require does not verify"),
        ("postgresql://db/broker?sslmode=disable", "allow_weak_tls=true"),
        ("postgresql://db/broker?sslmode=verify-ca", "verify-full"),
        ("postgresql:///broker?host=/run/pg,db.example&sslmode=prefer", "does not verify"),
        ("postgresql://db:notaport/broker", "not a PostgreSQL URL"),
        ("postgresql://db/a/b", "one database"),
        ("", "unsupported"),
    ],
    ids=[
        "scheme",
        "sqlite-host",
        "sqlite-dir",
        "sqlite-query",
        "pg-password-param",
        "pg-sslpassword-param",
        "pg-sslmode-require",
        "pg-sslmode-disable",
        "pg-sslmode-verify-ca",
        "pg-mixed-hosts-prefer",
        "pg-port",
        "pg-path",
        "empty",
    ],
)
def test_bad_urls_are_refused(text: str, message: str) -> None:
    with pytest.raises(StoreUrlError, match=message) as caught:
        StoreUrl.parse(text)
    assert isinstance(caught.value, ConfigError)
