"""Compact JWS (RFC 7515) with ES256 only: sign, parse strictly, verify.

A token is ``b64url(header) "." b64url(payload) "." b64url(signature)``: base64url without
padding (RFC 7515 section 2), header ``{"alg":"ES256","typ":"JWT","kid":...}``, and the
signature ECDSA P-256 over SHA-256 of the ASCII of the first two parts, as raw ``r || s``
(32 bytes each, RFC 7518 section 3.4), never DER.

Order of checks in ``parse_compact`` (cheap, key-independent checks before any crypto):
1. the token is ASCII and at most ``MAX_TOKEN_BYTES``;
2. exactly three parts, each canonical base64url (alphabet ``A-Z a-z 0-9 - _``, no padding,
   no non-zero trailing bits: decoding and re-encoding gives the same text);
3. the header is strict JSON (UTF-8, no duplicate keys, no NaN/Infinity) and an object;
4. ``alg`` is exactly ``ES256`` (``none``, HS256, RS256, ... raise ``TokenAlgorithmRefused``);
5. the header has no member beyond ``alg``, ``typ``, ``kid``: ``crit``, ``jwk``, ``jku``,
   ``x5u``, ``x5c`` and the rest are refused, so a key is never taken from the token itself;
6. ``typ``, when present, is ``JWT``; ``kid`` is a non-empty string;
7. the signature is exactly 64 bytes.
``verify_es256`` then checks the signature with a key the caller pinned; the payload is parsed
as JSON only after that (``strict_json_object``), by the caller.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from verifier.token.errors import (
    TokenAlgorithmRefused,
    TokenMalformed,
    TokenSignatureInvalid,
)

ALGORITHM = "ES256"
TYP = "JWT"
MAX_TOKEN_BYTES = 64 * 1024  # a verdict token with many reasons stays far below this
MAX_KID_CHARS = 128
_COORDINATE_BYTES = 32  # P-256
_SIGNATURE_BYTES = 2 * _COORDINATE_BYTES
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_UNUSED_BITS = {2: 0b1111, 3: 0b11}  # low bits of the last character that carry no data

JsonObject = dict[str, object]

# Headers that passed every check, by their exact base64url text (only accepted ones: a header
# that was refused is parsed, and refused, again each time).
_HEADER_CACHE: dict[str, str] = {}
_HEADER_CACHE_SIZE = 64


def b64url_encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode()


def b64url_decode(text: str) -> bytes:
    """Decode canonical unpadded base64url; anything else raises ``TokenMalformed``.

    Refused: padding, the standard alphabet's ``+`` and ``/``, whitespace or any other
    character, a length of 4n+1, and non-zero unused bits in the last character (two texts
    for the same bytes: a signature could otherwise be re-encoded and still verify).
    """
    remainder = len(text) % 4
    if remainder == 1 or "=" in text or "+" in text or "/" in text:
        raise TokenMalformed("not unpadded base64url")
    try:
        padded = (text + "=" * (-len(text) % 4)).encode("ascii").translate(_TO_STANDARD)
        data = binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise TokenMalformed("not unpadded base64url") from exc
    if remainder and _B64URL_ALPHABET.index(text[-1]) & _UNUSED_BITS[remainder]:
        raise TokenMalformed("non-canonical base64url (non-zero trailing bits)")
    return data


def _refuse_constant(name: str) -> object:
    raise TokenMalformed(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, object]]) -> JsonObject:
    obj: JsonObject = {}
    for key, value in pairs:
        if key in obj:
            raise TokenMalformed(f"duplicate JSON member {key!r}")
        obj[key] = value
    return obj


def strict_json_object(data: bytes, what: str) -> JsonObject:
    """Parse UTF-8 JSON that must be an object, refusing duplicate members and NaN/Infinity."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TokenMalformed(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TokenMalformed(f"{what} is not a JSON object")
    return value


def json_bytes(obj: Mapping[str, object]) -> bytes:
    """Compact JSON (no NaN) for headers and claims."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_es256(private_key: ec.EllipticCurvePrivateKey, kid: str, payload: bytes) -> str:
    """A compact JWS of ``payload`` with header ``{"alg":"ES256","typ":"JWT","kid":kid}``."""
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise TokenAlgorithmRefused("ES256 needs a P-256 key")
    header = json_bytes({"alg": ALGORITHM, "typ": TYP, "kid": kid})
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}".encode("ascii")
    der = private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
    return f"{signing_input.decode('ascii')}.{b64url_encode(raw)}"


@dataclass(frozen=True)
class ParsedJws:
    """A compact JWS whose structure and header passed every check; signature not yet verified."""

    kid: str
    payload: bytes
    signing_input: bytes
    signature: bytes


def parse_compact(token: str) -> ParsedJws:
    """Split and check a compact JWS (steps 1-7 of the module docstring)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenMalformed(f"token longer than {MAX_TOKEN_BYTES} bytes")
    if not token.isascii():
        raise TokenMalformed("token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed(f"a compact JWS has 3 parts, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    kid = _header_kid(header_b64)
    payload = b64url_decode(payload_b64)
    signature = b64url_decode(signature_b64)
    if len(signature) != _SIGNATURE_BYTES:
        raise TokenSignatureInvalid(
            f"an ES256 signature is {_SIGNATURE_BYTES} bytes (r||s), got {len(signature)}"
        )
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return ParsedJws(kid=kid, payload=payload, signing_input=signing_input, signature=signature)


def _header_kid(header_b64: str) -> str:
    """Steps 3-6, remembered per exact header text: every token of one key shares its header."""
    kid = _HEADER_CACHE.get(header_b64)
    if kid is None:
        kid = _check_header(strict_json_object(b64url_decode(header_b64), "header"))
        if len(_HEADER_CACHE) < _HEADER_CACHE_SIZE:
            _HEADER_CACHE[header_b64] = kid
    return kid


def _check_header(header: JsonObject) -> str:
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise TokenAlgorithmRefused(f"algorithm {alg!r} refused: only {ALGORITHM} is accepted")
    extra = sorted(set(header) - _ALLOWED_HEADER)
    if extra:
        raise TokenMalformed(f"header parameters not accepted: {', '.join(extra)}")
    if "typ" in header and header["typ"] != TYP:
        raise TokenMalformed(f"header typ must be {TYP!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenMalformed("header has no kid: the signing key must be named")
    if len(kid) > MAX_KID_CHARS:
        raise TokenMalformed(f"kid longer than {MAX_KID_CHARS} characters")
    return kid


def verify_es256(public_key: ec.EllipticCurvePublicKey, parsed: ParsedJws) -> None:
    """Raise ``TokenSignatureInvalid`` unless ``parsed`` is signed by ``public_key``."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise TokenAlgorithmRefused("pinned key is not on P-256")
    r = int.from_bytes(parsed.signature[:_COORDINATE_BYTES], "big")
    s = int.from_bytes(parsed.signature[_COORDINATE_BYTES:], "big")
    if r == 0 or s == 0:
        raise TokenSignatureInvalid("signature does not verify")
    try:
        public_key.verify(
            encode_dss_signature(r, s), parsed.signing_input, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as exc:
        raise TokenSignatureInvalid("signature does not verify") from exc
