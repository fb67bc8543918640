"""`spiffe-broker entries export --k8s`: the controller class flag and stdout (broker/cli/entries.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from broker.cli.main import main

EXAMPLE = Path(__file__).parents[3] / "examples" / "workloads.yaml"


def _export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["entries", "export", str(EXAMPLE), *args])
    return result.exit_code, result.output


def _classes(text: str) -> set[object]:
    return {d["spec"].get("className") for d in yaml.safe_load_all(text) if d is not None}


def test_k8s_dash_writes_cluster_spiffe_ids_to_stdout_with_the_files_class() -> None:
    code, out = _export("--k8s", "-")
    assert code == 0, out
    assert _classes(out) == {"spire-mgmt-spire"}
    assert not Path("-").exists()


def test_k8s_class_name_flag_overrides_the_file_and_empty_means_classless() -> None:
    assert _classes(_export("--k8s", "-", "--k8s-class-name", "spire-system-spire")[1]) == {"spire-system-spire"}
    assert _classes(_export("--k8s", "-", "--k8s-class-name", "")[1]) == {None}


def test_invalid_k8s_class_name_is_a_usage_error() -> None:
    code, out = _export("--k8s", "-", "--k8s-class-name", "Not A Class")
    assert code == 2
    assert "--k8s-class-name" in out and "Traceback" not in out
