"""Volcengine V4 (HMAC-SHA256) request signatures, checked server-side (no aiohttp here)."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "HMAC-SHA256"
TERMINATOR = "request"  # the last word of the credential scope and of the key derivation
MAX_SKEW_SECONDS = 900  # Volcengine refuses a request signed more than 15 minutes from its clock
REQUIRED_SIGNED_HEADERS = ("host", "x-date")  # without them a signature could be replayed elsewhere or later
_UNRESERVED = "-_.~"  # with A-Z a-z 0-9: what RFC 3986 encoding keeps as is
_X_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_DEFAULT_PORTS = (":80", ":443")


class Fault(Enum):
    """Why a signature is refused; GetToken answers each with its OpenAPI error."""

    MISSING = "missing or malformed"  # no Authorization header, or not V4's shape
    INCOMPLETE = "incomplete"  # X-Date, or a header the signature must cover, is missing
    STALE = "stale"  # X-Date malformed, or too far from this server's clock
    UNKNOWN_KEY = "unknown access key"
    MISMATCH = "does not match"  # wrong secret, scope, body hash or content


class SignatureError(Exception):
    """The request's signature is missing, malformed, stale, from an unknown key or wrong."""

    def __init__(self, fault: Fault, message: str) -> None:
        super().__init__(message)
        self.fault = fault
        self.message = message


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers: `path` and `query_string` exactly as sent (still percent-encoded)."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Credential:
    """The parsed `Authorization` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


def _missing_signature(detail: str) -> SignatureError:
    return SignatureError(Fault.MISSING, detail)


def _authorization_fields(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _missing_signature(f"Authorization must start with {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, equals, text = part.strip().partition("=")
        if not equals or name in fields:
            raise _missing_signature("Authorization is not Credential=..., SignedHeaders=..., Signature=...")
        fields[name] = text.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise _missing_signature("Authorization needs exactly Credential, SignedHeaders and Signature")
    return fields


def parse_authorization(value: str) -> Credential:
    """`HMAC-SHA256 Credential=AK/date/region/service/request, SignedHeaders=a;b, Signature=hex`."""
    if not value or not value.strip():
        raise _missing_signature("the Authorization header is missing")
    fields = _authorization_fields(value)
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope) or scope[4] != TERMINATOR:
        raise _missing_signature("Credential must be AccessKey/YYYYMMDD/region/service/request")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if not all(signed):
        raise _missing_signature("SignedHeaders must be header names separated by ';'")
    if not _HEX_SIGNATURE.fullmatch(fields["Signature"]):
        raise _missing_signature("Signature must be 64 lowercase hex digits")
    return Credential(scope[0], scope[1], scope[2], scope[3], signed, fields["Signature"])


def _uri_encode(text: str) -> str:
    return quote(text, safe=_UNRESERVED)


def canonical_uri(path: str) -> str:
    """Each segment of the path as sent, decoded once and re-encoded the RFC 3986 way."""
    return "/".join(_uri_encode(unquote(segment)) for segment in path.split("/")) or "/"


def canonical_query(query_string: str) -> str:
    """Form-decode (`+` is a space), sort by key keeping each key's value order, re-encode."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])
    return "&".join(f"{_uri_encode(key)}={_uri_encode(value)}" for key, value in pairs)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """`name:trimmed value\\n` per signed header, in the signed order; `host` drops :80/:443."""
    lowered = _lower_headers(headers)
    lines = []
    for name in signed_headers:
        value = lowered[name.lower()].strip()
        if name.lower() == "host" and value.endswith(_DEFAULT_PORTS):
            value = value.rpartition(":")[0]
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(request: SignedRequest, signed_headers: Sequence[str]) -> str:
    """The six lines the signature is computed over (the headers block ends with its own newline)."""
    return "\n".join([
        request.method.upper(),
        canonical_uri(request.path),
        canonical_query(request.query_string),
        canonical_headers(request.headers, signed_headers),
        ";".join(signed_headers),
        body_sha256(request.body),
    ])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """HMAC(HMAC(HMAC(HMAC(secret, date), region), service), "request")."""
    key = secret.encode()
    for part in (date, region, service, TERMINATOR):
        key = _hmac(key, part)
    return key


def compute_signature(request: SignedRequest, secret: str, x_date: str, region: str, service: str,
                      signed_headers: Sequence[str]) -> str:
    """The lowercase hex signature of `request` under this secret and scope."""
    date = x_date[:8]
    scope = f"{date}/{region}/{service}/{TERMINATOR}"
    digest = hashlib.sha256(canonical_request(request, signed_headers).encode()).hexdigest()
    string_to_sign = "\n".join([ALGORITHM, x_date, scope, digest])
    return _hmac(signing_key(secret, date, region, service), string_to_sign).hex()


def default_signed_headers(headers: Mapping[str, str]) -> tuple[str, ...]:
    """What the official signers cover: content-type, content-md5, host and every x-* header."""
    names = {name.lower() for name in headers}
    return tuple(sorted(n for n in names if n in ("content-type", "content-md5", "host") or n.startswith("x-")))


def sign(request: SignedRequest, access_key: str, secret: str, region: str, service: str,
         signed_headers: Sequence[str] | None = None) -> str:
    """The `Authorization` value for a request that already carries its X-Date (for tests and tools)."""
    names = tuple(signed_headers) if signed_headers is not None else default_signed_headers(request.headers)
    x_date = _lower_headers(request.headers)["x-date"]
    signature = compute_signature(request, secret, x_date, region, service, names)
    return (f"{ALGORITHM} Credential={access_key}/{x_date[:8]}/{region}/{service}/{TERMINATOR}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}")


def _check_signed_headers(credential: Credential, headers: Mapping[str, str]) -> None:
    lowered = {name.lower() for name in credential.signed_headers}
    for name in REQUIRED_SIGNED_HEADERS:
        if name not in lowered:
            raise SignatureError(Fault.INCOMPLETE, f"SignedHeaders must include {name}")
    absent = sorted(lowered - set(headers))
    if absent:
        raise SignatureError(Fault.INCOMPLETE, f"signed header {absent[0]} is not in the request")


def _check_timestamp(credential: Credential, x_date: str, now: float) -> None:
    def invalid(detail: str) -> SignatureError:
        return SignatureError(Fault.STALE, detail)

    if not _X_DATE.fullmatch(x_date):
        raise invalid("X-Date must be YYYYMMDDTHHMMSSZ (UTC)")
    try:
        signed_at = calendar.timegm(time.strptime(x_date, "%Y%m%dT%H%M%SZ"))
    except ValueError as exc:
        raise invalid("X-Date is not a valid date") from exc
    if credential.date != x_date[:8]:
        raise invalid("the Credential date differs from the date of X-Date")
    if abs(now - signed_at) > MAX_SKEW_SECONDS:
        raise invalid(f"X-Date is more than {MAX_SKEW_SECONDS} seconds from the server's clock")


def _check_scope(credential: Credential, region: str | None, service: str | None) -> None:
    expected_region = credential.region if region is None else region
    expected_service = credential.service if service is None else service
    if (credential.region, credential.service) != (expected_region, expected_service):
        raise SignatureError(Fault.MISMATCH,
                             f"the credential scope must be date/{expected_region}/{expected_service}/request")


def _check_body_hash(headers: Mapping[str, str], body: bytes) -> None:
    claimed = headers.get("x-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed.strip().lower().encode(), body_sha256(body).encode()):
        raise SignatureError(Fault.MISMATCH, "X-Content-Sha256 differs from the body's sha256")


def verify(request: SignedRequest, secret_for: Callable[[str], str | None], now: float,
           *, region: str | None = None, service: str | None = None) -> str:
    """The access key that signed `request`; SignatureError unless the signature is valid now.

    `region`/`service`, when given, are the only scope accepted. Checks run in this order:
    Authorization present and well formed (MissingSignature), X-Date and the signed headers
    present (MissingRequestInfo), X-Date valid, matching the credential date and within
    MAX_SKEW_SECONDS (InvalidTimestamp), access key known (InvalidAccessKey), scope, body hash
    and signature (SignatureDoesNotMatch).
    """
    headers = _lower_headers(request.headers)
    credential = parse_authorization(headers.get("authorization", ""))
    x_date = headers.get("x-date", "").strip()
    if not x_date:
        raise SignatureError(Fault.INCOMPLETE, "the X-Date header is missing")
    _check_signed_headers(credential, headers)
    _check_timestamp(credential, x_date, now)
    secret = secret_for(credential.access_key)
    if secret is None:
        raise SignatureError(Fault.UNKNOWN_KEY, "the access key is not valid")
    _check_scope(credential, region, service)
    _check_body_hash(headers, request.body)
    expected = compute_signature(request, secret, x_date, credential.region, credential.service,
                                 credential.signed_headers)
    if not hmac.compare_digest(expected.encode(), credential.signature.encode()):
        raise SignatureError(Fault.MISMATCH,
                             "the signature does not match the request; check the secret key and signing method")
    return credential.access_key
