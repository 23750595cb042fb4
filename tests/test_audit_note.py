"""C2SP signed notes and checkpoints (verifier/audit/note.py, checkpoint.py).

Known-answer vectors: the C2SP signed-note spec example and Go's sumdb/note tests (see
tests/data/NOTICE-audit.md). Ed25519 is deterministic, so signing Go's text with Go's key must
give Go's note byte for byte.
"""

from __future__ import annotations

import base64

import pytest

from verifier.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from verifier.audit.errors import AuditError, AuditMalformed, AuditSignatureInvalid
from verifier.audit.merkle import EMPTY_ROOT, leaf_hash
from verifier.audit.note import SignerKey, VerifierKey, open_note, parse_note, sign_note
from verifier.errors import AttestationError
from verifier.limits import Limits

SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZX"
    "sYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZS"
    "NXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()

ORIGIN = "verifier.example/audit"


def test_spec_example_note_verifies_with_the_spec_key() -> None:
    key = VerifierKey.parse(SPEC_VKEY)
    assert key.encode() == SPEC_VKEY
    opened = open_note(SPEC_NOTE, [key])
    assert opened.text == "This is an example message.\n"
    assert opened.verified_by == (key,)


def test_go_signer_key_signs_exactly_the_go_note() -> None:
    signer = SignerKey.parse(GO_SKEY)
    assert signer.encode() == GO_SKEY
    assert signer.verifier().encode() == GO_VKEY
    assert signer.key_id == 0xC74F20A3
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    assert open_note(GO_NOTE, [VerifierKey.parse(GO_VKEY)]).text == GO_TEXT


def test_signer_key_repr_does_not_show_the_seed() -> None:
    signer = SignerKey.parse(GO_SKEY)
    assert signer.seed.hex() not in repr(signer)
    assert base64.b64encode(signer.seed).decode() not in repr(signer)


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # key ID of another key
        GO_VKEY.replace("c74f20a3", "C74F20A3"),  # not lowercase hex
        GO_VKEY.replace("PeterNeumann", "PeterNeuman"),  # name does not match the key ID
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # length
        GO_VKEY[:-1],  # truncated base64
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
    ],
)
def test_mangled_verifier_key_is_rejected(vkey: str) -> None:
    with pytest.raises(AuditMalformed):
        VerifierKey.parse(vkey)


def test_every_single_byte_change_of_the_verifier_key_is_rejected() -> None:
    for i in range(len(GO_VKEY)):
        mangled = GO_VKEY[:i] + chr(ord(GO_VKEY[i]) + 1) + GO_VKEY[i + 1 :]
        with pytest.raises(AuditMalformed):
            VerifierKey.parse(mangled)


def test_signer_key_with_a_wrong_key_id_is_rejected() -> None:
    with pytest.raises(AuditMalformed):
        SignerKey.parse(GO_SKEY.replace("c74f20a3", "c74f20a4"))


def test_note_signed_by_another_key_with_the_same_name_is_rejected() -> None:
    impostor = SignerKey.generate("PeterNeumann")
    forged = sign_note(GO_TEXT, [impostor])
    with pytest.raises(AuditSignatureInvalid, match="no trusted key"):
        open_note(forged, [VerifierKey.parse(GO_VKEY)])


def test_note_with_a_forged_signature_under_the_trusted_key_id_is_rejected() -> None:
    """Same name and key ID as the trusted key, signature of another key: must be verified."""
    impostor = SignerKey.generate("PeterNeumann")
    signature = impostor.sign(GO_TEXT).signature
    blob = (0xC74F20A3).to_bytes(4, "big") + signature
    forged = (GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(blob).decode() + "\n").encode()
    with pytest.raises(AuditSignatureInvalid, match="does not verify"):
        open_note(forged, [VerifierKey.parse(GO_VKEY)])


def test_note_with_edited_text_is_rejected() -> None:
    edited = GO_NOTE.replace(b"answer", b"ANSWER")
    with pytest.raises(AuditSignatureInvalid):
        open_note(edited, [VerifierKey.parse(GO_VKEY)])


def test_unknown_cosignature_is_ignored_and_reported() -> None:
    cosigner = SignerKey.generate("witness.example")
    note = sign_note(GO_TEXT, [SignerKey.parse(GO_SKEY), cosigner])
    opened = open_note(note, [VerifierKey.parse(GO_VKEY)])
    assert [s.name for s in opened.ignored] == ["witness.example"]


@pytest.mark.parametrize(
    "data",
    [
        GO_NOTE.replace(b"\n\n", b"\n"),  # no blank line
        GO_NOTE[:-1],  # no final newline
        GO_NOTE.replace("\u2014".encode(), b"-"),  # hyphen for em dash
        GO_NOTE.replace(b"PeterNeumann x08", b"PeterNeumann  x08"),  # two spaces
        GO_NOTE.replace(b"JnAM=", b"JnAN="),  # non-canonical base64 (padding bits set)
        GO_NOTE.replace(b"JnAM=", b"JnAM"),  # unpadded base64
        GO_NOTE.replace(b"answer", b"ans\twer"),  # control character
        GO_NOTE.replace(b"answer", b"ans\rwer"),
        GO_NOTE.replace(b"answer", b"ans\xffwer"),  # not UTF-8
        (GO_TEXT + "\n\u2014 PeterNeumann AAAA\n").encode(),  # a 3-byte signature blob
        GO_TEXT.encode() + b"\n",  # no signature line
    ],
)
def test_malformed_note_is_rejected(data: bytes) -> None:
    with pytest.raises(AuditMalformed):
        parse_note(data)


def test_note_over_the_limits_is_rejected() -> None:
    signer = SignerKey.parse(GO_SKEY)
    with pytest.raises(AuditMalformed, match="exceeds"):
        parse_note(GO_NOTE, Limits(max_note_bytes=len(GO_NOTE) - 1))
    many = sign_note(GO_TEXT, [signer] * 3)
    assert len(parse_note(many, Limits(max_note_signatures=3)).signatures) == 3
    with pytest.raises(AuditMalformed, match="more than 2 signatures"):
        parse_note(many, Limits(max_note_signatures=2))


def test_audit_errors_are_attestation_errors() -> None:
    assert issubclass(AuditError, AttestationError)


# --- checkpoints ---


def test_checkpoint_round_trip_with_extensions() -> None:
    signer = SignerKey.generate(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, 20852163, leaf_hash(b"x"), ("ext one",))
    data = sign_checkpoint(checkpoint, signer)
    assert data.decode().startswith(f"{ORIGIN}\n20852163\n")
    assert open_checkpoint(data, signer.verifier()) == checkpoint


def test_spec_checkpoint_text_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.parse(text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.text() == text


def test_empty_tree_checkpoint() -> None:
    checkpoint = Checkpoint.parse(f"{ORIGIN}\n0\n{base64.b64encode(EMPTY_ROOT).decode()}\n")
    assert checkpoint.size == 0


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n007\n{base64.b64encode(EMPTY_ROOT).decode()}\n",  # leading zeroes
        f"{ORIGIN}\n+7\n{base64.b64encode(EMPTY_ROOT).decode()}\n",
        f"{ORIGIN}\n-1\n{base64.b64encode(EMPTY_ROOT).decode()}\n",
        f"{ORIGIN}\n9223372036854775808\n{base64.b64encode(EMPTY_ROOT).decode()}\n",  # 2**63
        f"{ORIGIN}\n7\n{base64.b64encode(EMPTY_ROOT[:31]).decode()}\n",  # short root
        f"{ORIGIN}\n7\n",  # no root
        f"\n7\n{base64.b64encode(EMPTY_ROOT).decode()}\n",  # empty origin
        f"{ORIGIN}\n7\n{base64.b64encode(EMPTY_ROOT).decode()}",  # no final newline
    ],
)
def test_malformed_checkpoint_is_rejected(text: str) -> None:
    with pytest.raises(AuditMalformed):
        Checkpoint.parse(text)


def test_checkpoint_with_too_many_extension_lines_is_rejected() -> None:
    text = Checkpoint(ORIGIN, 1, EMPTY_ROOT, ("a", "b", "c")).text()
    with pytest.raises(AuditMalformed, match="extension"):
        Checkpoint.parse(text, Limits(max_checkpoint_extensions=2))


def test_checkpoint_signed_by_another_key_is_rejected() -> None:
    log_key = SignerKey.generate(ORIGIN)
    other_key = SignerKey.generate(ORIGIN)
    data = sign_checkpoint(Checkpoint(ORIGIN, 3, leaf_hash(b"x")), other_key)
    with pytest.raises(AuditSignatureInvalid):
        open_checkpoint(data, log_key.verifier())


def test_checkpoint_of_another_origin_with_the_same_key_is_rejected() -> None:
    signer = SignerKey.generate(ORIGIN)
    data = sign_checkpoint(Checkpoint("other.example/log", 3, leaf_hash(b"x")), signer)
    with pytest.raises(AuditMalformed, match="expected"):
        open_checkpoint(data, signer.verifier())


def test_checkpoint_with_an_edited_size_is_rejected() -> None:
    signer = SignerKey.generate(ORIGIN)
    data = sign_checkpoint(Checkpoint(ORIGIN, 30, leaf_hash(b"x")), signer)
    with pytest.raises(AuditSignatureInvalid):
        open_checkpoint(data.replace(b"\n30\n", b"\n29\n"), signer.verifier())
