"""The Volcengine V4 check: the documented test vector, the official signer, every rejection."""

from __future__ import annotations

import calendar
import dataclasses
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials
from volcengine.util.Util import Util

from sami_gateway.auth.signature import (
    MAX_SKEW_SECONDS,
    Credential,
    Fault,
    SignatureError,
    SignedRequest,
    body_sha256,
    canonical_query,
    canonical_uri,
    parse_authorization,
    sign,
    verify,
)
from sami_gateway.gettoken import OpenApiCode, OpenApiError

# The test vector of SAMI_PROTOCOL.md section 4.
AK = "AKLTexampleAccessKeyId"
SK = "exampleSecretAccessKey=="
X_DATE = "20240102T030405Z"
NOW = float(calendar.timegm(time.strptime(X_DATE, "%Y%m%dT%H%M%SZ")))
QUERY = "Action=GetToken&Version=2021-07-27"
BODY = b'{"token_version":"volc-auth-v1","appkey":"demo_appkey","expiration":3600}'
BODY_SHA256 = "b525aac00d6b472a2e0766357ed2240717145b148ecefd340d268092bae8ad8d"
SIGNATURE = "3afd24de67c0f1770e4e4e9d8b8d5729cd2843406cd379aa5d9811b74cc2ea71"
AUTHORIZATION = (f"HMAC-SHA256 Credential={AK}/20240102/cn-north-1/sami/request, "
                 f"SignedHeaders=content-type;host;x-content-sha256;x-date, Signature={SIGNATURE}")
HEADERS = {"Host": "open.volcengineapi.com", "Content-Type": "application/json", "X-Date": X_DATE,
           "X-Content-Sha256": BODY_SHA256, "Authorization": AUTHORIZATION}
SECRETS = {AK: SK}


def vector(**changes: Any) -> SignedRequest:
    """The test vector's request, with some fields replaced."""
    request = SignedRequest("POST", "/", QUERY, HEADERS, BODY)
    return dataclasses.replace(request, **changes)


def with_headers(**changes: str | None) -> SignedRequest:
    """The vector with headers replaced (`X_Date` for X-Date) or removed (None)."""
    headers = dict(HEADERS)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return vector(headers=headers)


def refused(request: SignedRequest, now: float = NOW, **scope: str) -> OpenApiError:
    """The refusal as GetToken answers it (the fault through GetToken's OpenAPI table)."""
    with pytest.raises(SignatureError) as caught:
        verify(request, SECRETS.get, now, **scope)
    return OpenApiError.of_signature(caught.value)


def official_signature(method: str, path: str, query: dict[str, Any], headers: dict[str, str], body: bytes,
                       monkeypatch: pytest.MonkeyPatch, x_date: str = X_DATE) -> dict[str, str]:
    """The headers the official `volcengine` signer adds to a request signed at `x_date`."""
    monkeypatch.setattr(SignerV4, "get_current_format_date", lambda: x_date)
    request = Request()
    request.set_method(method)
    request.set_path(path)
    request.set_query(OrderedDict(query))
    request.set_headers(OrderedDict(headers))
    request.set_body(body)
    SignerV4.sign(request, Credentials(AK, SK, "sami", "cn-north-1"))
    return dict(request.headers)


def test_vector_verifies_to_the_documented_signature() -> None:
    assert body_sha256(BODY) == BODY_SHA256
    assert verify(vector(), SECRETS.get, NOW) == AK
    unsigned = {k: v for k, v in HEADERS.items() if k != "Authorization"}
    assert sign(vector(headers=unsigned), AK, SK, "cn-north-1", "sami") == AUTHORIZATION


def test_official_signer_gives_the_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = official_signature("POST", "/", {"Action": "GetToken", "Version": "2021-07-27"},
                                 {"Host": "open.volcengineapi.com", "Content-Type": "application/json"},
                                 BODY, monkeypatch)
    assert headers["Authorization"] == AUTHORIZATION
    assert headers["X-Content-Sha256"] == BODY_SHA256
    assert verify(vector(headers=headers), SECRETS.get, NOW, region="cn-north-1", service="sami") == AK


def test_parse_authorization() -> None:
    assert parse_authorization(AUTHORIZATION) == Credential(
        AK, "20240102", "cn-north-1", "sami", ("content-type", "host", "x-content-sha256", "x-date"), SIGNATURE)


@pytest.mark.parametrize("query", [
    {"b": "2", "a": ["1", "0"]},
    {"q": "a b+c/d", "é": "ü", "e": ""},
    {"t": "a~b_c.d-e*f'(!)", "Action": "GetToken"},
])
def test_canonical_query_matches_the_official_signer(query: dict[str, Any]) -> None:
    for raw in (urlencode(query, doseq=True), urlencode(query, doseq=True, quote_via=_quote_rfc3986)):
        assert canonical_query(raw) == Util.norm_query(query)


def _quote_rfc3986(text: str, safe: str = "", encoding: str | None = None, errors: str | None = None) -> str:
    """`quote_via` for urlencode: spaces as %20 instead of '+'."""
    return quote(text, safe="-_.~")


@pytest.mark.parametrize(("raw", "expected"), [
    ("", "/"),
    ("/", "/"),
    ("/a%20b/c~d", "/a%20b/c~d"),
    ("/a+b/%7Euser", "/a%2Bb/~user"),
    ("/%E4%BD%A0/x*y", "/%E4%BD%A0/x%2Ay"),
])
def test_canonical_uri(raw: str, expected: str) -> None:
    assert canonical_uri(raw) == expected
    assert canonical_uri(raw) == Util.norm_uri(unquote(raw) or "/").replace("*", "%2A")


def test_other_paths_and_queries_verify_with_the_official_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    query = {"Action": "GetToken", "Version": "2021-07-27", "note": "a b/c+d é"}
    headers = official_signature("POST", "/some path/x", query, {"Host": "h.example:8443"}, b"", monkeypatch)
    for raw_query in (urlencode(query), urlencode(query, quote_via=_quote_rfc3986)):
        request = SignedRequest("POST", "/some%20path/x", raw_query, headers, b"")
        assert verify(request, SECRETS.get, NOW) == AK


@pytest.mark.parametrize(("signed_host", "sent_host", "ok"), [
    ("open.volcengineapi.com", "open.volcengineapi.com:443", True),
    ("open.volcengineapi.com:80", "open.volcengineapi.com", True),
    ("127.0.0.1:8080", "127.0.0.1:8080", True),
    ("127.0.0.1:8080", "127.0.0.1:8081", False),
    ("127.0.0.1", "127.0.0.1:8080", False),
])
def test_host_default_ports(signed_host: str, sent_host: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = official_signature("POST", "/", {"Action": "GetToken"}, {"Host": signed_host}, b"{}", monkeypatch)
    request = SignedRequest("POST", "/", "Action=GetToken", {**headers, "Host": sent_host}, b"{}")
    if ok:
        assert verify(request, SECRETS.get, NOW) == AK
    else:
        assert refused(request).kind is OpenApiCode.SIGNATURE_DOES_NOT_MATCH


def test_header_names_and_values_are_normalised() -> None:
    headers = {name.lower(): f"  {value} " if name != "Authorization" else value for name, value in HEADERS.items()}
    assert verify(vector(headers=headers), SECRETS.get, NOW) == AK


@pytest.mark.parametrize("request_", [
    vector(body=BODY.replace(b"3600", b"86400")),  # X-Content-Sha256 left as signed
    vector(body=BODY.replace(b"3600", b"86400"),
           headers={**HEADERS, "X-Content-Sha256": body_sha256(BODY.replace(b"3600", b"86400"))}),
    vector(query_string=QUERY + "&x=1"),
    vector(query_string="Action=GetToken&Version=2021-07-28"),
    vector(path="/other"),
    vector(method="PUT"),
    with_headers(Content_Type="text/plain"),
    with_headers(Host="evil.example"),
    with_headers(X_Date="20240102T030406Z"),  # one second later: within the skew, but signed
    with_headers(Authorization=AUTHORIZATION.replace(SIGNATURE, "0" * 64)),
    with_headers(Authorization=AUTHORIZATION.replace("content-type;", "")),  # fewer headers claimed
], ids=["body", "body-and-hash", "query-added", "query-changed", "path", "method", "content-type", "host",
        "x-date", "signature", "signed-headers"])
def test_tampering_is_a_signature_mismatch(request_: SignedRequest) -> None:
    error = refused(request_)
    assert (error.http_status, error.code_n, error.code) == (401, 100010, "SignatureDoesNotMatch")


def test_unsigned_headers_may_change() -> None:
    assert verify(with_headers(User_Agent="curl/8", Accept="*/*"), SECRETS.get, NOW) == AK


def test_wrong_secret_and_unknown_access_key() -> None:
    with pytest.raises(SignatureError) as caught:
        verify(vector(), {AK: SK + "x"}.get, NOW)
    assert caught.value.fault is Fault.MISMATCH
    assert OpenApiError.of_signature(caught.value).kind is OpenApiCode.SIGNATURE_DOES_NOT_MATCH
    with pytest.raises(SignatureError) as caught:
        verify(vector(), {}.get, NOW)
    assert caught.value.fault is Fault.UNKNOWN_KEY
    answer = OpenApiError.of_signature(caught.value)
    assert (answer.http_status, answer.code_n, answer.code) == (401, 100009, "InvalidAccessKey")


def test_scope_must_be_the_services() -> None:
    assert verify(vector(), SECRETS.get, NOW, region="cn-north-1", service="sami") == AK
    assert refused(vector(), region="cn-beijing").kind is OpenApiCode.SIGNATURE_DOES_NOT_MATCH
    assert refused(vector(), service="iam").kind is OpenApiCode.SIGNATURE_DOES_NOT_MATCH


@pytest.mark.parametrize("offset", [MAX_SKEW_SECONDS + 1, -MAX_SKEW_SECONDS - 1, 86400 * 365])
def test_clock_skew_beyond_the_limit(offset: float) -> None:
    error = refused(vector(), now=NOW + offset)
    assert (error.http_status, error.code_n, error.code) == (400, 100006, "InvalidTimestamp")


@pytest.mark.parametrize("offset", [MAX_SKEW_SECONDS, -MAX_SKEW_SECONDS, 0.5])
def test_clock_skew_within_the_limit(offset: float) -> None:
    assert verify(vector(), SECRETS.get, NOW + offset) == AK


@pytest.mark.parametrize("request_", [
    with_headers(X_Date="2024-01-02T03:04:05Z"),
    with_headers(X_Date="20241302T030405Z"),  # month 13
    with_headers(Authorization=AUTHORIZATION.replace("/20240102/", "/20240103/")),  # credential date
], ids=["format", "calendar", "credential-date"])
def test_invalid_timestamps(request_: SignedRequest) -> None:
    error = refused(request_)
    assert (error.http_status, error.code_n, error.code) == (400, 100006, "InvalidTimestamp")


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "   ",
    AUTHORIZATION.replace("HMAC-SHA256", "AWS4-HMAC-SHA256"),
    AUTHORIZATION.replace("Credential=", "Cred="),
    AUTHORIZATION.replace(", Signature=" + SIGNATURE, ""),
    AUTHORIZATION + ", Signature=" + SIGNATURE,
    AUTHORIZATION.replace("/request,", "/aws4_request,"),
    AUTHORIZATION.replace(f"{AK}/", ""),
    AUTHORIZATION.replace(SIGNATURE, SIGNATURE.upper()),
    AUTHORIZATION.replace(SIGNATURE, SIGNATURE[:-1]),
    AUTHORIZATION.replace("content-type;host", "content-type;;host"),
])
def test_missing_or_malformed_authorization(authorization: str | None) -> None:
    error = refused(with_headers(Authorization=authorization))
    assert (error.http_status, error.code_n, error.code) == (401, 100005, "MissingSignature")
    assert error.message


@pytest.mark.parametrize(("request_", "missing"), [
    (with_headers(X_Date=None), "X-Date"),
    (with_headers(Host=None), "host"),
    (with_headers(Content_Type=None), "content-type"),
    (with_headers(Authorization=AUTHORIZATION.replace(";host;", ";")), "host"),
    (with_headers(Authorization=AUTHORIZATION.replace(";x-date,", ",")), "x-date"),
])
def test_missing_request_info(request_: SignedRequest, missing: str) -> None:
    error = refused(request_)
    assert (error.http_status, error.code_n, error.code) == (400, 100004, "MissingRequestInfo")
    assert missing in error.message


def test_x_content_sha256_is_optional_when_unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = official_signature("POST", "/", {}, {"Host": "h"}, BODY, monkeypatch)
    del headers["X-Content-Sha256"]
    authorization = headers.pop("Authorization")
    headers["Authorization"] = sign(SignedRequest("POST", "/", "", headers, BODY), AK, SK, "cn-north-1", "sami")
    assert "x-content-sha256" not in headers["Authorization"] and authorization != headers["Authorization"]
    assert verify(SignedRequest("POST", "/", "", headers, BODY), SECRETS.get, NOW) == AK
