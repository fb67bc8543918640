"""The ``spiffe-broker`` group: --version, -h everywhere, shell completion, log levels, the error seam."""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from broker.cli.main import SUBCOMMANDS, cli_errors, describe_os_error, main
from broker.errors import ConfigError
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.devstack_process import DevProcess, running_dev
from tests.unit.cli.cli_helpers import WORKLOAD_ID, run_cli, running_workload_api, short_dir


def test_version_comes_from_the_package_metadata() -> None:
    result = run_cli(["--version"])
    assert (result.returncode, result.stdout) == (0, f"spiffe-broker {importlib.metadata.version('spiffe-broker')}\n")


@pytest.mark.parametrize(
    "command", [[name] for name, _, _ in SUBCOMMANDS] + [["entries", sub] for sub in ("plan", "apply", "export")]
)
def test_dash_h_is_help_on_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: spiffe-broker {' '.join(command)} ")


def test_help_documents_levels_and_completion() -> None:
    result = CliRunner().invoke(main, ["-h"])
    text = " ".join(result.output.split())
    assert "--log-level-for LOGGER=LEVEL" in text and "SPIFFE_BROKER_LOG_LEVELS" in text
    assert 'eval "$(_SPIFFE_BROKER_COMPLETE=bash_source spiffe-broker)"' in text


def test_bash_completion_script_is_emitted_for_python_dash_m_too() -> None:
    result = run_cli([], env={"_SPIFFE_BROKER_COMPLETE": "bash_source"})
    assert result.returncode == 0, result.stderr
    assert "_spiffe_broker_completion()" in result.stdout and "complete -o nosort -F" in result.stdout


def test_completion_lists_the_lazy_subcommands_and_their_options() -> None:
    env = {"_SPIFFE_BROKER_COMPLETE": "bash_complete", "COMP_WORDS": "spiffe-broker to", "COMP_CWORD": "1"}
    assert run_cli([], env=env).stdout.split() == ["plain,token"]
    env |= {"COMP_WORDS": "spiffe-broker token --aud", "COMP_CWORD": "2"}
    assert run_cli([], env=env).stdout.split() == ["plain,--audience"]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        pytest.param(errno.EROFS, "read-only", id="read-only"),
        pytest.param(errno.EACCES, "choose a path this user can write", id="permission"),
        pytest.param(errno.ENOSPC, "disk is full", id="disk-full"),
        pytest.param(errno.EADDRINUSE, "stop it or choose another port", id="address-in-use"),
        pytest.param(errno.ELOOP, "--log-level DEBUG", id="anything-else"),
    ],
)
def test_os_errors_say_where_what_and_what_to_do(code: int, hint: str) -> None:
    message = describe_os_error(OSError(code, "the OS's words", "/var/lib/spiffe-broker"))
    assert message.startswith("/var/lib/spiffe-broker: the OS's words; ") and hint in message


def test_the_seam_turns_bugs_into_one_line_without_their_message() -> None:
    with pytest.raises(click.ClickException) as caught, cli_errors():
        raise KeyError("secret-value")
    assert "KeyError" in caught.value.message and "secret-value" not in caught.value.message
    with pytest.raises(click.ClickException, match="config_error: pass --x"), cli_errors():
        raise ConfigError("pass --x")


@pytest.fixture
def directory() -> Iterator[Path]:
    with short_dir() as path:
        yield path


async def _fetch_svid(address: str) -> None:
    async with WorkloadApiSvidSource(address=address) as source:
        await source.wait_ready(20)
        assert str(source.x509_svid().spiffe_id) == WORKLOAD_ID


def test_debug_is_for_the_broker_and_leaves_hpack_at_warning(directory: Path) -> None:
    """hpack at DEBUG logs every decoded header (gRPC metadata, authorization included): never by default."""
    with running_workload_api(directory, "--log-level", "DEBUG") as api:
        asyncio.run(_fetch_svid(api.address))
    log = api.stop()
    assert re.search(r" DEBUG broker\.devtools\.workload_api\.handlers: attested caller", log), log
    assert not re.search(r" (hpack|h2|grpclib|asyncio)[.:]", log), log


def test_a_third_party_logger_is_opened_only_by_name(directory: Path) -> None:
    with running_workload_api(directory, "--log-level", "WARNING", "--log-level-for", "hpack=DEBUG") as api:
        asyncio.run(_fetch_svid(api.address))
    log = api.stop()
    assert re.search(r" DEBUG hpack[.\w]*: ", log), log
    assert " INFO broker." not in log


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("--server-port", "0", "--demo-port", "0") as process:
        yield process


def test_token_takes_the_sidecar_socket_as_a_unix_url(dev: DevProcess) -> None:
    result = run_cli(["token", "--audience", dev.demo_audience, "--socket", f"unix://{dev.sidecar_socket}"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # a JWS compact serialisation


def test_call_labels_an_unreachable_api_as_a_network_error(dev: DevProcess) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once the probe is closed
    args = [
        "call",
        f"https://127.0.0.1:{closed}/hello",
        "--audience",
        dev.demo_audience,
        "--socket",
        dev.sidecar_socket,
    ]
    result = run_cli(args, env={"SPIFFE_ENDPOINT_SOCKET": dev.workload_api})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"Error: network_error: request to https://127.0.0.1:{closed}/hello failed: ")
    assert "config_error" not in result.stderr
