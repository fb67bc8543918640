"""The egress proxy's rules without a network: request targets, placeholders, injection, masking, hop-by-hop."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from broker.apikeys.grant import CatalogEntry
from broker.apikeys.model import Delivery, Presentation, Target, placeholder
from broker.sidecar.egress.errors import EgressRequestError, PlaceholderToOtherTargetError, TargetNotCoveredError
from broker.sidecar.egress.headers import forwarded_request_headers, forwarded_response_headers
from broker.sidecar.egress.inject import SecretScrubber, inject
from broker.sidecar.egress.placeholders import choose_exception
from broker.sidecar.egress.routing import Destination, forward_destination, route_destination

SECRET = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.mark.parametrize(
    ("target", "expected"),
    [("http://api.example.com/v1/x?a=1", ("api.example.com", 443, "/v1/x", "a=1")),
     ("http://API.Example.com.:80/v1/x", ("api.example.com", 443, "/v1/x", "")),
     ("http://api.example.com:8443/v1/x", ("api.example.com", 8443, "/v1/x", "")),
     ("https://api.example.com/v1/x", ("api.example.com", 443, "/v1/x", "")),
     ("http://api.example.com?q=1", ("api.example.com", 443, "/", "q=1")),
     ("http://api.example.com/a%20b?x=%3A", ("api.example.com", 443, "/a%20b", "x=%3A"))],
    ids=["http-means-443", "case-trailing-dot-port-80", "explicit-port", "https", "no-path", "raw-encoding-kept"],
)  # fmt: skip
def test_an_absolute_form_target_names_an_https_destination(target: str, expected: tuple[str, int, str, str]) -> None:
    d = forward_destination(target)
    assert (d.host, d.port, d.path, d.query) == expected


@pytest.mark.parametrize(
    "target",
    ["http://u:p@api.example.com/x", "ftp://api.example.com/x", "http:///x", "http://api.example.com/v1/../admin",
     "http://api.example.com/v1/./x", "http://api.example.com/v1/%2E%2E/admin", "http://api.example.com/v1%2Fx",
     "http://api.example.com/v1%5cx", "http://api.example.com/v1\\x", "http://api.example.com/x#frag",
     "http://api.example.com:99999/x"],
    ids=["userinfo", "ftp", "no-host", "dot-dot", "dot", "encoded-dots", "encoded-slash", "encoded-backslash",
         "backslash", "fragment", "bad-port"],
)  # fmt: skip
def test_a_target_a_server_could_read_otherwise_is_refused(target: str) -> None:
    with pytest.raises(EgressRequestError):
        forward_destination(target)


@pytest.mark.parametrize(
    "path",
    ["/v1/..;/admin", "/v1/..;jsessionid=x/admin", "/v1/.;x/admin", "/v1/..%3bx/admin", "/v1/%252e%252e/admin",
     "/v1/%252fadmin", "/v1/%%32%65%%32%65/admin", "/v1/%%35%63admin"],
    ids=["dot-dot-matrix", "dot-dot-matrix-param", "dot-matrix", "encoded-semicolon", "double-encoded-dots",
         "double-encoded-slash", "double-encoded-without-25", "double-encoded-backslash"],
)  # fmt: skip
def test_a_path_with_matrix_dot_segments_or_double_encoding_is_refused(path: str) -> None:
    with pytest.raises(EgressRequestError):
        forward_destination("http://api.example.com" + path)
    with pytest.raises(EgressRequestError):
        route_destination("/stripe" + path, Target("api.example.com", 443, "/v1/"))


def test_semicolons_and_dots_inside_a_segment_are_not_dot_segments() -> None:
    for path in ("/v1/a;b/c", "/v1/.../x", "/v1/..x/y", "/v1/x.;/y", "/v1/a%3Bb"):
        assert forward_destination("http://api.example.com" + path).path == path


def test_a_local_route_maps_the_rest_of_the_path_to_the_exceptions_target() -> None:
    d = route_destination("/stripe/v1/charges?limit=3", Target("api.stripe.com", 443, "/v1/"))
    root = route_destination("/stripe", Target("api.stripe.com"))

    assert d == Destination("api.stripe.com", 443, "/v1/charges", "limit=3", route="stripe")
    assert d.url("limit=3&key=x") == "https://api.stripe.com:443/v1/charges?limit=3&key=x"
    assert d.where() == "https://api.stripe.com:443/v1/charges"
    assert root.path == "/"


def test_a_local_route_to_no_usable_exception_or_a_wildcard_one_is_refused() -> None:
    with pytest.raises(TargetNotCoveredError):
        route_destination("/nope/x", None)
    with pytest.raises(EgressRequestError, match="forward proxy"):
        route_destination("/wild/x", Target("*.example.com", wildcard_host=True))


def _entry(name: str, host: str, prefix: str = "/", kind: str = "header", slot: str = "Authorization") -> CatalogEntry:
    return CatalogEntry(name, Target(host, 443, prefix), Presentation(kind, slot, "Bearer {secret}"), Delivery.INJECT)


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


STRIPE, STRIPE_V2 = _entry("stripe", "api.stripe.com", "/v1/"), _entry("stripe-v2", "api.stripe.com", "/v1/x/")
DEST = Destination("api.stripe.com", 443, "/v1/x/y", "")


def test_without_a_placeholder_the_longest_covering_prefix_wins() -> None:
    assert choose_exception([STRIPE, STRIPE_V2], DEST, _headers()) is STRIPE_V2
    assert choose_exception([], DEST, _headers()) is None


def test_a_placeholder_in_its_own_slot_picks_its_exception() -> None:
    headers = _headers(Authorization=f"Bearer {placeholder('stripe')}")
    assert choose_exception([STRIPE, STRIPE_V2], DEST, headers) is STRIPE


@pytest.mark.parametrize(
    "where",
    ["header-value", "header-name", "query", "upper-case", "unknown-name"],
)
def test_a_placeholder_of_an_exception_that_does_not_cover_the_target_is_refused(where: str) -> None:
    mark = placeholder("maps")
    dest, headers = DEST, _headers()
    if where == "header-value":
        headers = _headers(X_Trace=f"a {mark} b")
    elif where == "header-name":
        headers = _headers(**{f"X-{mark}": "1"})
    elif where == "query":
        dest = Destination("api.stripe.com", 443, "/v1/x", "k=" + quote(quote(mark, safe=""), safe=""))
    elif where == "upper-case":
        headers = _headers(X_Trace=mark.upper())
    else:
        headers = _headers(X_Trace=placeholder("never-registered"))
    with pytest.raises(PlaceholderToOtherTargetError, match="possible exfiltration attempt") as caught:
        choose_exception([STRIPE], dest, headers)
    assert caught.value.reason == "placeholder_to_other_target"


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_a_percent_encoded_placeholder_in_a_header_value_is_found_and_refused(rounds: int) -> None:
    mark = placeholder("maps")
    for _ in range(rounds):
        mark = quote(mark, safe="")
    with pytest.raises(PlaceholderToOtherTargetError, match="exception maps"):
        choose_exception([STRIPE], DEST, _headers(X_K=mark))


def test_injection_leaves_exactly_the_rendered_secret_in_the_header_slot() -> None:
    headers = CIMultiDict([("authorization", "Bearer mine"), ("Authorization", "Basic x"), ("X-Other", "1")])
    query = inject(headers, "a=1", Presentation("header", "Authorization", "Bearer {secret}"), SECRET)

    assert headers.getall("Authorization") == [f"Bearer {SECRET}"]
    assert headers["X-Other"] == "1" and query == "a=1"


def test_injection_leaves_exactly_the_rendered_secret_in_the_query_slot() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    query = inject(headers, "key=mine&a=%3A&k%65y=encoded&key", Presentation("query", "key", "{secret}"), "a b/c")

    assert query == "a=%3A&key=a%20b%2Fc"
    assert not headers


@pytest.mark.parametrize("cut", [1, 5, len(SECRET) - 1, len(SECRET), len(SECRET) + 3])
def test_the_scrubber_masks_the_secret_across_chunk_boundaries(cut: int) -> None:
    body = b'{"echo": "Bearer ' + SECRET.encode() + b'", "again": "' + quote(SECRET).encode() + b'"}'
    scrubber = SecretScrubber(SECRET)
    out = scrubber.feed(body[: 17 + cut]) + scrubber.feed(body[17 + cut :]) + scrubber.flush()

    assert SECRET.encode() not in out
    assert len(out) == len(body)
    assert out.count(b"*" * len(SECRET)) == 2


def test_the_scrubber_holds_back_only_what_could_start_the_secret() -> None:
    scrubber = SecretScrubber(SECRET)

    assert scrubber.feed(b"data: hello\n\n") == b"data: hello\n\n"  # nothing held: streams stay live
    assert scrubber.feed(b"x sk_te") == b"x "
    assert scrubber.feed(b"a") == b"sk_tea"
    assert scrubber.header(f"Bearer {SECRET}") == "Bearer " + "*" * len(SECRET)
    assert SECRET not in repr(scrubber)


ODD = "sk/Te st+a=b&c<d>\"e'f%g"  # every escaping changes it somehow
ODD_FORMS = {
    "raw": ODD,
    "percent-upper-hex": quote(ODD, safe=""),
    "percent-lower-hex": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(ODD, safe="")),
    "percent-plus": quote_plus(ODD),
    "json": json.dumps(ODD)[1:-1],
    "json-escaped-slash": json.dumps(ODD)[1:-1].replace("/", "\\/"),
    "html": html.escape(ODD),
    "lower-case": quote(ODD, safe="").lower(),
}


@pytest.mark.parametrize("form", ODD_FORMS.values(), ids=ODD_FORMS.keys())
def test_the_scrubber_masks_every_form_of_the_secret_in_headers_and_across_any_chunk_boundary(form: str) -> None:
    body = f"<p>{form}</p>".encode()
    masked = b"<p>" + b"*" * len(form) + b"</p>"
    for cut in range(len(body) + 1):
        scrubber = SecretScrubber(ODD)
        assert scrubber.feed(body[:cut]) + scrubber.feed(body[cut:]) + scrubber.flush() == masked, cut
    assert SecretScrubber(ODD).header(f"k={form};") == "k=" + "*" * len(form) + ";"


def test_headers_that_rewrite_the_path_or_method_at_the_target_are_not_forwarded() -> None:
    request = _headers(X_Original_URL="/admin", X_Rewrite_URL="/admin", X_HTTP_Method_Override="DELETE",
                       X_HTTP_Method="DELETE", X_Method_Override="DELETE", X_Kept="y")  # fmt: skip

    assert sorted(forwarded_request_headers(request).items()) == [("Via", "1.1 spiffe-broker-sidecar"), ("X-Kept", "y")]


def test_hop_by_hop_fields_and_the_ones_connection_names_are_not_forwarded() -> None:
    request = _headers(Connection="keep-alive, X-Hop", X_Hop="1", Keep_Alive="5", TE="trailers", Host="a",
                       Proxy_Authorization="x", Expect="100-continue", Content_Length="3", X_Kept="y")  # fmt: skip
    response = _headers(Transfer_Encoding="chunked", Proxy_Authenticate="x", Content_Length="3", X_Kept="y")

    assert sorted(forwarded_request_headers(request).items()) == [
        ("Content-Length", "3"), ("Via", "1.1 spiffe-broker-sidecar"), ("X-Kept", "y")]  # fmt: skip
    assert sorted(forwarded_response_headers(response).items()) == [
        ("Via", "1.1 spiffe-broker-sidecar"),
        ("X-Kept", "y"),
    ]
