"""Everything the anchors compare, started once and stopped on exit (also on Ctrl-C or a failure).

* The broker (:class:`bench.stack.BrokerStack`): its token service for scenarios 1 and 2; the dev Workload API and
  the sidecar too for scenario 3. Trust domain ``bench.example``.
* Keycloak (:mod:`bench.anchors.keycloak`) with the ``bench`` realm (:mod:`bench.anchors.realm`) and the bundle
  endpoint (:mod:`bench.anchors.bundle_endpoint`) for scenarios 1 and 2.
* spire-server + spire-agent (:mod:`bench.anchors.spire_agent`) for scenario 3. Trust domain ``example.org``.

Every wait is bounded (the modules' own timeouts). The measured processes are pinned to the first CPU and the
load generator runs on the last one, when there are two or more.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509.oid import NameOID

from bench.anchors import keycloak
from bench.anchors.bundle_endpoint import BundleEndpoint
from bench.anchors.realm import Admin, RealmSpec, configure_realm
from bench.anchors.spire_agent import BenchSpire, start_spire
from bench.anchors.tlsfiles import TestCa, write_test_ca
from bench.procs import Child, cpu_count, pin
from bench.stack import AUDIENCE, WORKLOAD_ID, BrokerStack

__all__ = ["Bed", "everything", "measured", "started"]


@dataclass
class Bed:
    stack: BrokerStack
    ca: TestCa
    keycloak: keycloak.KeycloakProcess | None = None
    spire: BenchSpire | None = None
    spire_agent: Child | None = None
    bundle: BundleEndpoint | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def _start_keycloak(bed: Bed, stop: contextlib.ExitStack) -> None:
    stack = bed.stack
    bundle = stop.enter_context(BundleEndpoint(stack.ca.jwks(), bed.ca))
    bed.keycloak = keycloak.start(bed.ca, stack.files.bundle, stack.files.logs)
    stop.callback(bed.keycloak.stop)
    context = ssl.create_default_context(cafile=str(bed.ca.root))
    context.check_hostname = False
    admin = Admin.login(f"https://127.0.0.1:{bed.keycloak.port}", context, *keycloak.ADMIN)
    domain = WORKLOAD_ID.trust_domain.id_string()
    names = {NameOID.SERIAL_NUMBER: "SERIALNUMBER"}  # Java's keyword for 2.5.4.5
    ca_dn = stack.ca.ca_cert.subject.rfc4514_string(names)
    spec = RealmSpec(subject_dn="O=SPIRE", ca_subject_dn=ca_dn, spiffe_id=str(WORKLOAD_ID), trust_domain=domain,
                     bundle_endpoint=bundle.url)  # fmt: skip
    bed.facts["keycloak"] = {
        "version": keycloak.KEYCLOAK_VERSION,
        "java": keycloak.java_version(),
        "java_home": str(keycloak.JAVA_HOME),
        "heap": keycloak.HEAP,
        "build_options": list(keycloak.BUILD_OPTIONS),
        "mode": "kc.sh start --optimized (production mode)",
        "realm": configure_realm(admin, spec),
    }
    bed.bundle = bundle


def _start_spire(bed: Bed, stop: contextlib.ExitStack) -> None:
    bed.spire, version = start_spire(AUDIENCE)
    stop.callback(bed.spire.close)
    bed.spire_agent = bed.spire.agent_child()
    bed.facts["spire"] = {"version": version, "agent_pid": bed.spire.agent_pid}


def _server_cpus() -> set[int] | None:
    return {0} if cpu_count() >= 2 else None


@contextlib.contextmanager
def started(parts: set[str], *, keep: bool) -> Iterator[Bed]:
    """Start what ``parts`` (a subset of ``{"1", "2", "3"}``) need; stop it all on the way out."""
    with contextlib.ExitStack() as stop:
        stack = stop.enter_context(BrokerStack.create(keep=keep))
        bed = Bed(stack=stack, ca=write_test_ca(stack.files.root))
        stack.start_server()
        if "3" in parts:
            stack.start_workload_api()
            stack.start_sidecar()
            _start_spire(bed, stop)
        if parts & {"1", "2"}:
            _start_keycloak(bed, stop)
        for child in measured(bed):
            pin(child.pid, _server_cpus())
        yield bed


def measured(bed: Bed) -> list[Child]:
    """The processes whose CPU is measured (for pinning and for the machine-load split)."""
    found = [bed.stack.children[name] for name in ("server", "sidecar") if name in bed.stack.children]
    if bed.keycloak is not None:
        found.append(bed.keycloak)
    if bed.spire_agent is not None:
        found.append(bed.spire_agent)
    return found


def everything(bed: Bed) -> list[Child]:
    """Every long-running process the harness started (what ``machine_load`` counts as the benchmark's own)."""
    found = list(bed.stack.children.values())
    if bed.keycloak is not None:
        found.append(bed.keycloak)
    if bed.spire is not None:
        found += [bed.spire.server_child(), bed.spire.agent_child()]
    return found
