"""Just enough DER to validate real EK certificates that strict X.509 parsers refuse.

Real TPM certificates break DER rules that ``cryptography`` enforces: Nuvoton's roots and the
EK certificates they issue put several attributes in one RDN without sorting the SET, and EK
certificates carry TCG extensions (subjectAltName with a directoryName of TPM attributes) that
may be encoded just as loosely. This module reads a certificate's outer structure itself so that:

- signatures are always verified over the *original* ``tbsCertificate`` bytes (``CertParts.tbs``);
- names are compared as DER with every SET sorted (``canonical``), as bytes;
- extensions are listed as (OID, critical, value) without parsing the ones nobody checks, and
  the two the path check needs (basicConstraints, keyUsage) are decoded here;
- ``canonical`` gives a copy with every SET OF sorted, which ``cryptography`` can load for the
  fields it is good at (validity dates, signature algorithm, display names). Sorting only
  permutes children, so every length, and so every offset outside the sets, is unchanged.

Invariants: every read is bounds-checked; indefinite lengths, high tag numbers, lengths over
four octets and nesting deeper than ``MAX_DEPTH`` raise ``DerError``; nothing else escapes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 32
TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_SEQUENCE = 0x30
TAG_SET = 0x31
TAG_EXPLICIT_0 = 0xA0
TAG_EXPLICIT_3 = 0xA3

OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
KEY_USAGE_KEY_CERT_SIGN = 5  # bit number in the KeyUsage BIT STRING


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True)
class Element:
    tag: int
    start: int  # first byte of the header
    body: int  # first byte of the content
    end: int  # one past the last content byte


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes


@dataclass(frozen=True)
class CertParts:
    tbs: bytes  # the signed bytes, exactly as received
    signature: bytes  # the BIT STRING content without the unused-bits octet
    issuer: bytes  # canonical DER of the issuer Name
    subject: bytes  # canonical DER of the subject Name
    spki: bytes  # SubjectPublicKeyInfo DER, as received
    extensions: tuple[Extension, ...]


def read_element(data: bytes, pos: int, end: int) -> Element:
    if pos + 2 > end:
        raise DerError("truncated header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not used in certificates")
    first = data[pos + 1]
    body = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError("indefinite or oversized length")
        if body + count > end:
            raise DerError("truncated length")
        length = int.from_bytes(data[body : body + count], "big")
        body += count
    if body + length > end:
        raise DerError("element runs past its parent")
    return Element(tag, pos, body, body + length)


def children(data: bytes, parent: Element) -> list[Element]:
    out = []
    pos = parent.body
    while pos < parent.end:
        child = read_element(data, pos, parent.end)
        out.append(child)
        pos = child.end
    return out


def top(data: bytes) -> Element:
    element = read_element(data, 0, len(data))
    if element.end != len(data):
        raise DerError(f"{len(data) - element.end} trailing bytes")
    return element


def canonical(data: bytes) -> bytes:
    """``data`` with the children of every SET in ascending order of their encodings."""
    root = top(data)
    return _canonical(data, root, 0)


def _canonical(data: bytes, element: Element, depth: int) -> bytes:
    header = data[element.start : element.body]
    if not element.tag & 0x20:
        return data[element.start : element.end]
    if depth > MAX_DEPTH:
        raise DerError("nested too deeply")
    parts = [_canonical(data, child, depth + 1) for child in children(data, element)]
    if element.tag == TAG_SET:
        parts.sort()
    return header + b"".join(parts)


def _expect(element: Element, tag: int, what: str) -> Element:
    if element.tag != tag:
        raise DerError(f"{what}: expected tag {tag:#04x}, found {element.tag:#04x}")
    return element


def split_certificate(data: bytes) -> CertParts:
    cert = _expect(top(data), TAG_SEQUENCE, "Certificate")
    parts = children(data, cert)
    if len(parts) != 3:
        raise DerError("Certificate must have 3 elements")
    tbs = _expect(parts[0], TAG_SEQUENCE, "tbsCertificate")
    signature = _expect(parts[2], TAG_BIT_STRING, "signatureValue")
    if signature.body == signature.end or data[signature.body] != 0:
        raise DerError("signatureValue must have no unused bits")
    fields = children(data, tbs)
    if fields and fields[0].tag == TAG_EXPLICIT_0:
        fields = fields[1:]
    if len(fields) < 6:
        raise DerError("tbsCertificate is missing fields")
    issuer = _expect(fields[2], TAG_SEQUENCE, "issuer")
    subject = _expect(fields[4], TAG_SEQUENCE, "subject")
    spki = _expect(fields[5], TAG_SEQUENCE, "subjectPublicKeyInfo")
    extensions: tuple[Extension, ...] = ()
    for extra in fields[6:]:
        if extra.tag == TAG_EXPLICIT_3:
            extensions = _extensions(data, extra)
    return CertParts(
        tbs=data[tbs.start : tbs.end],
        signature=data[signature.body + 1 : signature.end],
        issuer=_canonical(data, issuer, 0),
        subject=_canonical(data, subject, 0),
        spki=data[spki.start : spki.end],
        extensions=extensions,
    )


def _extensions(data: bytes, wrapper: Element) -> tuple[Extension, ...]:
    inner = children(data, wrapper)
    if len(inner) != 1:
        raise DerError("extensions: expected one SEQUENCE")
    out = []
    for ext in children(data, _expect(inner[0], TAG_SEQUENCE, "extensions")):
        fields = children(data, _expect(ext, TAG_SEQUENCE, "Extension"))
        if len(fields) not in (2, 3):
            raise DerError("Extension must have 2 or 3 elements")
        oid = decode_oid(data[fields[0].body : fields[0].end])
        critical = False
        if len(fields) == 3:
            flag = _expect(fields[1], TAG_BOOLEAN, "Extension.critical")
            critical = data[flag.body : flag.end] != b"\x00"
        value = _expect(fields[-1], TAG_OCTET_STRING, "Extension.extnValue")
        out.append(Extension(oid, critical, data[value.body : value.end]))
    oids = [ext.oid for ext in out]
    if len(set(oids)) != len(oids):
        raise DerError("an extension appears twice")
    return tuple(out)


def decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise DerError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for octet in body:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def basic_constraints(value: bytes) -> tuple[bool, int | None]:
    """(cA, pathLenConstraint) from a basicConstraints extension value."""
    seq = _expect(top(value), TAG_SEQUENCE, "BasicConstraints")
    ca = False
    path_len: int | None = None
    for field in children(value, seq):
        body = value[field.body : field.end]
        if field.tag == TAG_BOOLEAN:
            ca = body != b"\x00"
        elif field.tag == TAG_INTEGER:
            if not body or body[0] & 0x80 or len(body) > 4:
                raise DerError("pathLenConstraint must be a small non-negative integer")
            path_len = int.from_bytes(body, "big")
        else:
            raise DerError("unexpected field in BasicConstraints")
    return ca, path_len


def key_usage_has(value: bytes, bit: int) -> bool:
    bits = _expect(top(value), TAG_BIT_STRING, "KeyUsage")
    body = value[bits.body : bits.end]
    if not body:
        raise DerError("empty KeyUsage")
    octet = 1 + bit // 8
    return len(body) > octet and bool(body[octet] & (0x80 >> (bit % 8)))
