"""The ``bench`` realm, configured through Keycloak's admin REST API (plain ``urllib``, admin-cli password grant).

* An ``ecdsa-generated`` P-256 key provider and ``defaultSignatureAlgorithm = ES256``: Keycloak signs its access
  tokens with ES256 like the broker (its default would be RS256, about ten times the signing cost).
* ``workload-mtls``: confidential, service account only, authenticator ``client-x509`` (RFC 8705
  ``tls_client_auth``), the client certificate's and its CA's subject DNs matched exactly (without the CA's,
  Keycloak logs a deprecation warning on every request), and
  ``tls.client.certificate.bound.access.tokens = true`` (``cnf.x5t#S256`` in the token).
* ``spiffe`` identity provider (``providerId: spiffe``; ``trustDomain``, ``bundleEndpoint``) and
  ``workload-spiffe``: authenticator ``federated-jwt`` with ``jwt.credential.issuer`` = the provider's alias and
  ``jwt.credential.sub`` = the workload's SPIFFE ID; it takes a JWT-SVID as ``client_assertion`` with
  ``client_assertion_type = urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["Admin", "RealmSpec", "configure_realm"]

REALM = "bench"


@dataclass(frozen=True)
class RealmSpec:
    """What the realm needs to know about the workload."""

    subject_dn: str
    ca_subject_dn: str
    spiffe_id: str
    trust_domain: str
    bundle_endpoint: str


@dataclass(frozen=True)
class Admin:
    """An admin session (one access token) against ``base`` (``https://127.0.0.1:PORT``)."""

    base: str
    context: ssl.SSLContext
    token: str

    @classmethod
    def login(cls, base: str, context: ssl.SSLContext, username: str, password: str) -> Admin:
        form = {"grant_type": "password", "client_id": "admin-cli", "username": username, "password": password}
        body = urllib.parse.urlencode(form).encode()
        url = f"{base}/realms/master/protocol/openid-connect/token"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60, context=context) as answer:
            return cls(base, context, json.loads(answer.read())["access_token"])

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.base}/admin/realms{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.context) as answer:
                text = answer.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read()[:500]!r}") from error
        return json.loads(text) if text else None


def _service_client(client_id: str, authenticator: str, attributes: dict[str, str]) -> dict[str, Any]:
    return {"clientId": client_id, "protocol": "openid-connect", "enabled": True, "publicClient": False,
            "serviceAccountsEnabled": True, "standardFlowEnabled": False, "directAccessGrantsEnabled": False,
            "clientAuthenticatorType": authenticator, "attributes": attributes}  # fmt: skip


def _ecdsa_key(admin: Admin, realm_id: str) -> None:
    component = {"name": "ecdsa-p256", "providerId": "ecdsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
                 "parentId": realm_id, "config": {"priority": ["200"], "active": ["true"], "enabled": ["true"],
                                                  "ecdsaEllipticCurveKey": ["P-256"]}}  # fmt: skip
    admin.call("POST", f"/{REALM}/components", component)


def configure_realm(admin: Admin, spec: RealmSpec) -> dict[str, Any]:
    """Create the realm, its ES256 key, the SPIFFE provider and the two clients; return what was created."""
    admin.call("POST", "", {"realm": REALM, "enabled": True, "defaultSignatureAlgorithm": "ES256"})
    realm_id = admin.call("GET", f"/{REALM}")["id"]
    _ecdsa_key(admin, realm_id)
    mtls = {"x509.subjectdn": spec.subject_dn, "x509.casubjectdn": spec.ca_subject_dn,
            "x509.allow.regex.pattern.comparison": "false",
            "tls.client.certificate.bound.access.tokens": "true"}  # fmt: skip
    admin.call("POST", f"/{REALM}/clients", _service_client("workload-mtls", "client-x509", mtls))
    provider = {"alias": "spiffe", "providerId": "spiffe", "enabled": True,
                "config": {"trustDomain": spec.trust_domain, "bundleEndpoint": spec.bundle_endpoint}}  # fmt: skip
    admin.call("POST", f"/{REALM}/identity-provider/instances", provider)
    federated = {"jwt.credential.issuer": "spiffe", "jwt.credential.sub": spec.spiffe_id}
    admin.call("POST", f"/{REALM}/clients", _service_client("workload-spiffe", "federated-jwt", federated))
    features = admin.call("GET", f"/{REALM}/identity-provider/instances/spiffe")
    return {"realm": REALM, "clients": {"workload-mtls": mtls, "workload-spiffe": federated},
            "provider": {key: features[key] for key in ("alias", "providerId", "config")}}  # fmt: skip
