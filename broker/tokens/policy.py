"""Token policy: which SPIFFE IDs may get tokens for which audiences and scopes, and for how long.

Default deny: a request is granted only if one rule matches the client's SPIFFE ID, lists the requested audience
and lists every requested scope. The file is YAML::

    rules:
      - spiffe_id: spiffe://example.org/ns/shop/sa/web     # exact match, or
      # trust_domain: example.org                          # every ID of a trust domain,
      # path_prefix: /ns/batch                             # optionally under a path (segment boundary)
        audiences: ["https://api.example.org"]
        scopes: ["orders:read"]                            # requested scopes must be a subset
        max_token_lifetime: 300                            # seconds (default 300)
        jwt_svid_reuse: single-use                         # JWT-SVIDs as client assertions (jwt-spiffe):
                                                           #   single-use (default) or sender-bound
        max_assertion_lifetime: 60                         # seconds, for those JWT-SVIDs (default 60)

``jwt_svid_reuse`` and ``max_assertion_lifetime`` govern a JWT-SVID presented as a client assertion
(:mod:`broker.tokens.client_auth.jwt_spiffe`); when several rules match an ID, the strictest wins (``single-use``
if any says so, the smallest lifetime).

Errors name the file, line and field (:class:`~broker.errors.ConfigError`). The parse is bounded: at most
``MAX_POLICY_BYTES``, nesting at most ``broker._yaml.MAX_DEPTH`` levels (YAML 1.1 collections nest without limit, and
PyYAML's composer recurses once per level), no aliases (an alias repeats a subtree: "billion laughs"), and any
failure while parsing is a :class:`ConfigError`. :class:`FilePolicyStore` re-reads the file only when asked
(:meth:`FilePolicyStore.refresh`, called by the token service's background watcher, never on a request); a broken
file is refused and the last good policy stays in force.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from broker import _yaml
from broker._files import Watched
from broker.errors import ConfigError, InvalidScopeError, InvalidTargetError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.oauth.grammar import AUDIENCE, SCOPE_TOKEN

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "SENDER_BOUND",
    "SINGLE_USE",
    "AssertionRules",
    "FilePolicyStore",
    "Grant",
    "InMemoryPolicyStore",
    "Policy",
    "PolicyRule",
    "PolicyStore",
    "load_policy",
    "parse_policy",
    "parse_scope",
]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 300
MAX_TOKEN_LIFETIME = 24 * 3600
MAX_POLICY_BYTES = 1 << 20
MAX_REMEMBERED_GRANTS = 4096  # per policy object: (SPIFFE ID, audience, scopes) decisions that allowed
_RULE_KEYS = frozenset(
    {
        "spiffe_id",
        "trust_domain",
        "path_prefix",
        "audiences",
        "scopes",
        "max_token_lifetime",
        "jwt_svid_reuse",
        "max_assertion_lifetime",
    }
)
SINGLE_USE = "single-use"
SENDER_BOUND = "sender-bound"
DEFAULT_ASSERTION_LIFETIME = 60
MAX_ASSERTION_LIFETIME = 300


def parse_scope(value: str | None) -> frozenset[str]:
    """RFC 6749 §3.3: ``scope = scope-token *( SP scope-token )``; malformed is ``invalid_scope``."""
    if value is None:
        return frozenset()
    tokens = value.split(" ")
    if not all(SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise InvalidScopeError("scope is malformed (RFC 6749 §3.3: scope-tokens separated by single spaces)")
    return frozenset(tokens)


@dataclass(frozen=True)
class Grant:
    """What policy allows for one request: the scopes granted and the maximum lifetime in seconds."""

    audience: str
    scopes: frozenset[str]
    max_lifetime: int


@dataclass(frozen=True)
class AssertionRules:
    """How a SPIFFE ID's JWT-SVIDs are accepted as client assertions: ``reuse`` is :data:`SINGLE_USE` (a fresh
    ``jti`` every time) or :data:`SENDER_BOUND` (a repeat only over mTLS from the same SPIFFE ID)."""

    reuse: str = SINGLE_USE
    max_lifetime: int = DEFAULT_ASSERTION_LIFETIME


@dataclass(frozen=True)
class PolicyRule:
    """One rule: an exact SPIFFE ID, or a trust domain with an optional path prefix, and what it may get."""

    audiences: frozenset[str]
    scopes: frozenset[str]
    max_token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    spiffe_id: SpiffeId | None = None
    trust_domain: TrustDomain | None = None
    path_prefix: str = ""
    line: int = 0
    jwt_svid_reuse: str | None = None
    max_assertion_lifetime: int | None = None

    def matches(self, spiffe_id: SpiffeId) -> bool:
        if self.spiffe_id is not None:
            return spiffe_id == self.spiffe_id
        return (
            self.trust_domain is not None
            and spiffe_id.is_member_of(self.trust_domain)
            and spiffe_id.has_path_prefix(self.path_prefix)
        )


@dataclass(frozen=True)
class Policy:
    """An ordered list of rules; the first matching rule that allows the request decides its lifetime."""

    rules: tuple[PolicyRule, ...]
    source: str = "<memory>"

    _granted: dict[tuple[SpiffeId, str, frozenset[str]], Grant] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def authorize(self, spiffe_id: SpiffeId, audience: str, scopes: frozenset[str]) -> Grant:
        """Grant ``audience`` and ``scopes`` to ``spiffe_id`` or raise.

        No rule for the ID, or no rule listing the audience: ``invalid_target`` (RFC 8693 §2.2.2: the server is
        unwilling to issue a token for the target; the same answer for both so a client learns nothing about
        rules for others). Audience allowed but a scope not: ``invalid_scope`` (RFC 6749 §5.2).

        An allowing decision is remembered on this policy object, keyed on its immutable inputs (at most
        :data:`MAX_REMEMBERED_GRANTS`, then forgotten all at once): a policy is immutable and a reload makes a new
        object, so a changed rule takes effect with the next request. Refusals are decided every time. Quarantine
        is not a policy decision: the endpoint checks it on every request, before this.
        """
        key = (spiffe_id, audience, scopes)
        grant = self._granted.get(key)
        if grant is None:
            grant = self._decide(spiffe_id, audience, scopes)
            if len(self._granted) >= MAX_REMEMBERED_GRANTS:
                self._granted.clear()
            self._granted[key] = grant
        return grant

    def _decide(self, spiffe_id: SpiffeId, audience: str, scopes: frozenset[str]) -> Grant:
        candidates = [rule for rule in self.rules if rule.matches(spiffe_id) and audience in rule.audiences]
        if not candidates:
            raise InvalidTargetError("the requested audience is not allowed for this client")
        for rule in candidates:
            if scopes <= rule.scopes:
                return Grant(audience=audience, scopes=scopes, max_lifetime=rule.max_token_lifetime)
        raise InvalidScopeError("a requested scope is not allowed for this client and audience")

    def assertion_rules(self, spiffe_id: SpiffeId) -> AssertionRules:
        """The strictest assertion settings of the rules matching ``spiffe_id`` (defaults when none sets them)."""
        matching = [rule for rule in self.rules if rule.matches(spiffe_id)]
        modes = {rule.jwt_svid_reuse for rule in matching if rule.jwt_svid_reuse is not None}
        reuse = SENDER_BOUND if modes == {SENDER_BOUND} else SINGLE_USE
        lifetimes = [rule.max_assertion_lifetime for rule in matching if rule.max_assertion_lifetime is not None]
        return AssertionRules(reuse=reuse, max_lifetime=min(lifetimes, default=DEFAULT_ASSERTION_LIFETIME))


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; raise :class:`ConfigError` naming file, line and field."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read policy file: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError(f"{path}: policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: policy file is not UTF-8") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<memory>") -> Policy:
    """Parse policy YAML text (see the module docstring for the format); every failure is a ConfigError."""
    try:
        return _parse(text, source)
    except ConfigError:
        raise
    except Exception as exc:  # defence in depth: PyYAML raises more than YAMLError on hostile input
        raise ConfigError(f"{source}: policy could not be parsed ({type(exc).__name__})") from None


def _parse(text: str, source: str) -> Policy:
    try:
        root = _yaml.compose(text, max_chars=MAX_POLICY_BYTES)
    except _yaml.YamlError as exc:
        where = f":{exc.line}" if exc.line is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {exc.problem}") from None
    rules_node = _mapping(source, root, allowed=frozenset({"rules"}), what="the document").get("rules")
    if rules_node is None:
        raise ConfigError(f"{source}: missing 'rules' (use 'rules: []' to deny everything)")
    if not isinstance(rules_node, yaml.SequenceNode):
        raise ConfigError(f"{_at(source, rules_node)}: 'rules' must be a list")
    return Policy(rules=tuple(_rule(source, node) for node in rules_node.value), source=source)


def _at(source: str, node: yaml.Node) -> str:
    return f"{source}:{node.start_mark.line + 1}"


def _mapping(source: str, node: yaml.Node | None, *, allowed: frozenset[str], what: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise ConfigError(f"{source}{line}: {what} must be a mapping")
    fields: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or key not in allowed:
            raise ConfigError(f"{_at(source, key_node)}: unknown field {key!r} in {what}")
        if key in fields:
            raise ConfigError(f"{_at(source, key_node)}: field {key!r} given twice in {what}")
        fields[key] = value_node
    return fields


def _scalar(source: str, node: yaml.Node, field: str, kind: type) -> object:
    try:  # e.g. a 5,000-digit int, a 13th month, "!!timestamp nope" are all YamlError
        value = _yaml.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    except _yaml.YamlError:
        value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{_at(source, node)}: {field!r} must be a {kind.__name__}")
    return value


def _string_list(source: str, node: yaml.Node, field: str, pattern: re.Pattern[str]) -> frozenset[str]:
    if not isinstance(node, yaml.SequenceNode):
        raise ConfigError(f"{_at(source, node)}: {field!r} must be a list of strings")
    values = [_scalar(source, item, field, str) for item in node.value]
    for item, value in zip(node.value, values, strict=True):
        if not pattern.fullmatch(str(value)):
            raise ConfigError(f"{_at(source, item)}: invalid value in {field!r}")
    return frozenset(str(v) for v in values)


def _rule(source: str, node: yaml.Node) -> PolicyRule:
    fields = _mapping(source, node, allowed=_RULE_KEYS, what="a rule")
    where = _at(source, node)
    if "audiences" not in fields:
        raise ConfigError(f"{where}: a rule needs 'audiences'")
    audiences = _string_list(source, fields["audiences"], "audiences", AUDIENCE)
    if not audiences:
        raise ConfigError(f"{_at(source, fields['audiences'])}: 'audiences' must not be empty")
    scopes = _string_list(source, fields["scopes"], "scopes", SCOPE_TOKEN) if "scopes" in fields else frozenset()
    lifetime = DEFAULT_TOKEN_LIFETIME
    if "max_token_lifetime" in fields:
        lifetime = int(_scalar(source, fields["max_token_lifetime"], "max_token_lifetime", int))  # type: ignore[call-overload]
        if not 1 <= lifetime <= MAX_TOKEN_LIFETIME:
            raise ConfigError(
                f"{_at(source, fields['max_token_lifetime'])}: 'max_token_lifetime' must be 1..{MAX_TOKEN_LIFETIME}"
            )
    spiffe_id, trust_domain, prefix = _subject(source, where, fields)
    reuse, assertion_lifetime = _assertion_fields(source, fields)
    return PolicyRule(
        audiences=audiences,
        scopes=scopes,
        max_token_lifetime=lifetime,
        line=node.start_mark.line + 1,
        spiffe_id=spiffe_id,
        trust_domain=trust_domain,
        path_prefix=prefix,
        jwt_svid_reuse=reuse,
        max_assertion_lifetime=assertion_lifetime,
    )


def _assertion_fields(source: str, fields: dict[str, yaml.Node]) -> tuple[str | None, int | None]:
    reuse = None
    if "jwt_svid_reuse" in fields:
        node = fields["jwt_svid_reuse"]
        reuse = str(_scalar(source, node, "jwt_svid_reuse", str))
        if reuse not in (SINGLE_USE, SENDER_BOUND):
            raise ConfigError(f"{_at(source, node)}: 'jwt_svid_reuse' must be {SINGLE_USE} or {SENDER_BOUND}")
    lifetime = None
    if "max_assertion_lifetime" in fields:
        node = fields["max_assertion_lifetime"]
        lifetime = int(_scalar(source, node, "max_assertion_lifetime", int))  # type: ignore[call-overload]
        if not 1 <= lifetime <= MAX_ASSERTION_LIFETIME:
            raise ConfigError(f"{_at(source, node)}: 'max_assertion_lifetime' must be 1..{MAX_ASSERTION_LIFETIME}")
    return reuse, lifetime


def _subject(source: str, where: str, fields: dict[str, yaml.Node]) -> tuple[SpiffeId | None, TrustDomain | None, str]:
    """Exactly one of ``spiffe_id`` or ``trust_domain`` (``path_prefix`` only with ``trust_domain``)."""
    if ("spiffe_id" in fields) == ("trust_domain" in fields):
        raise ConfigError(f"{where}: a rule needs exactly one of 'spiffe_id' or 'trust_domain'")
    try:
        if "spiffe_id" in fields:
            if "path_prefix" in fields:
                raise ConfigError(f"{where}: 'path_prefix' goes with 'trust_domain', not 'spiffe_id'")
            node = fields["spiffe_id"]
            return SpiffeId.parse(str(_scalar(source, node, "spiffe_id", str))), None, ""
        node = fields["trust_domain"]
        trust_domain = TrustDomain.parse(str(_scalar(source, node, "trust_domain", str)))
        prefix = ""
        if "path_prefix" in fields:
            node = fields["path_prefix"]
            prefix = str(_scalar(source, node, "path_prefix", str)).rstrip("/")
            SpiffeId(trust_domain, prefix)  # the prefix must itself be a valid SPIFFE ID path
        return None, trust_domain, prefix
    except InvalidSpiffeIdError as exc:
        raise ConfigError(f"{_at(source, node)}: {exc.description}") from None


class PolicyStore(Protocol):
    """The seam through which the token service reads the policy in force."""

    def current(self) -> Policy: ...


class InMemoryPolicyStore:
    """A fixed policy (tests, `spiffe-broker dev`); ``policy`` may be replaced."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def current(self) -> Policy:
        return self.policy


class FilePolicyStore:
    """A policy file, re-read by :meth:`refresh` when its stat signature changed.

    :meth:`current` never touches the file: the request path only reads memory. The token service calls
    :meth:`refresh` periodically in a worker thread (``broker.server.app``). The constructor raises
    :class:`ConfigError` if the file is broken (fail closed at start). Later, a broken file is logged (file, line,
    field; a policy holds no secrets) and kept in ``last_error``; the last good policy stays in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = Watched((path,), lambda: load_policy(path))
        self._policy = self._file.reload()
        self.last_error: ConfigError | None = None
        self.generation = 1

    def current(self) -> Policy:
        return self._policy

    def refresh(self) -> bool:
        """Re-read the file if it changed; True if a new policy is now in force. Never raises."""
        try:
            if not self._file.refresh():
                return False
        except Exception as exc:  # anything from a broken file keeps the last good policy
            error = exc if isinstance(exc, ConfigError) else ConfigError(f"{self.path}: {type(exc).__name__}")
            log.error("policy not reloaded, keeping the last good one: %s", error.description)
            self.last_error = error
            return False
        policy = self._file.value
        self._policy, self.last_error = policy, None
        self.generation += 1
        log.info("policy reloaded from %s: %d rules", self.path, len(policy.rules))
        return True
