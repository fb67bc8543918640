""".ci/run installs PostgreSQL without Debian's main cluster on 127.0.0.1:5432 (the tests use their own socket)."""

from __future__ import annotations

from pathlib import Path

CI_RUN = Path(__file__).resolve().parents[3] / ".ci" / "run"


def test_no_main_cluster_and_no_service_start_before_the_install() -> None:
    lines = CI_RUN.read_text(encoding="utf-8").splitlines()
    install = next(i for i, line in enumerate(lines) if "apt-get install" in line and "postgresql" in lines[i + 1])
    before = "\n".join(lines[:install])
    assert 'echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf' in before
    assert "exit 101" in before and "/usr/sbin/policy-rc.d" in before
    assert "--force-confold" in lines[install + 1]  # keeps our createcluster.conf over the package's conffile
