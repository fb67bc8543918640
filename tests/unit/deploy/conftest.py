"""Fixtures for the deployment-file tests: the manifest checker module and the SPIRE binaries."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.deploy.deploy_helpers import CHECKER_PATH, POLICY_CHECKER_PATH, spire_bin_dir


def _import_script(path: Path) -> ModuleType:
    """A file of scripts/ imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def checker() -> ModuleType:
    """scripts/check_k8s_manifests.py."""
    return _import_script(CHECKER_PATH)


@pytest.fixture(scope="session")
def policy_checker() -> ModuleType:
    """scripts/check_deploy_policy.py."""
    return _import_script(POLICY_CHECKER_PATH)


@pytest.fixture(scope="session")
def spire_bins() -> Path:
    """Directory holding spire-server and spire-agent; skip locally, fail under CI when missing."""
    bin_dir = spire_bin_dir()
    if all(os.access(bin_dir / name, os.X_OK) for name in ("spire-server", "spire-agent")):
        return bin_dir
    message = f"SPIRE binaries not found in {bin_dir}: build them with scripts/build-spire.sh"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
