"""Runtime policy: digests, exclusions, ima-sig signatures, ima-buf, modes, section, import, learn.

Signing vectors are generated here with ``cryptography`` (RSA-2048 and ECDSA P-256 keys, a
self-signed certificate with a Subject Key Identifier) and signed as evmctl signs (v2).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from verifier.errors import PolicyViolation
from verifier.ima import write
from verifier.ima.keylime import import_keylime_policy
from verifier.ima.keys import key_id_of, load_signing_key, sign_v2
from verifier.ima.learn import learn_runtime_policy
from verifier.ima.parse import parse_ascii, parse_binary
from verifier.ima.policy import PathPattern, RuntimePolicy
from verifier.ima.section import RuntimeSectionError, parse_runtime_section
from verifier.limits import Limits
from verifier.verdict import Status

DATA = Path(__file__).parent / "data" / "ima"
BASH = hashlib.sha256(b"bash").digest()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _certificate(key: ec.EllipticCurvePrivateKey, skid: bytes) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ima test")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier(skid), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _policy(**extra: Any) -> RuntimePolicy:
    section: dict[str, Any] = {"digests": {"/usr/bin/bash": [f"sha256:{BASH.hex()}"]}}
    section.update(extra)
    return parse_runtime_section(section).policy


def _evaluate(policy: RuntimePolicy, *raw: bytes) -> list[tuple[str, Status, int | None]]:
    boot = write.file_entry("boot_aggregate", bytes(32))
    entries = parse_binary(boot + b"".join(raw)).entries
    return [(r.code, r.severity, r.event_index) for r in policy.evaluate(entries)]


def test_allowed_digest_passes_and_another_digest_is_contraindicated() -> None:
    policy = _policy()
    assert _evaluate(policy, write.file_entry("/usr/bin/bash", BASH)) == []
    other = write.file_entry("/usr/bin/bash", hashlib.sha256(b"trojan").digest())
    assert _evaluate(policy, other) == [("ima_digest_not_allowed", Status.CONTRAINDICATED, 1)]


def test_several_digests_per_path_for_a_rollout() -> None:
    new = hashlib.sha256(b"bash 5.3").digest()
    policy = parse_runtime_section(
        {"digests": {"/usr/bin/bash": [f"sha256:{BASH.hex()}", new.hex()]}}
    ).policy
    assert _evaluate(policy, write.file_entry("/usr/bin/bash", new)) == []


def test_binary_not_in_the_policy_is_contraindicated_and_named() -> None:
    policy = _policy()
    entries = parse_binary(write.file_entry("/tmp/miner", BASH)).entries
    (reason,) = policy.evaluate(entries)
    assert reason.code == "ima_unknown_entry" and reason.severity is Status.CONTRAINDICATED
    assert "'/tmp/miner'" in reason.text and "ima-ng" in reason.text
    assert reason.actual == f"sha256:{BASH.hex()}" and reason.event_index == 0


def test_warning_mode_for_learning_makes_unknown_entries_warnings() -> None:
    policy = _policy(unknown="warning")
    assert _evaluate(policy, write.file_entry("/tmp/x", BASH)) == [
        ("ima_unknown_entry", Status.WARNING, 1)
    ]


def test_violation_entry_is_contraindicated_even_on_an_excluded_path() -> None:
    policy = _policy(exclude=[{"glob": "/var/log/**"}])
    entry = write.file_entry("/var/log/syslog", BASH, violation=True)
    assert _evaluate(policy, entry) == [("ima_violation", Status.CONTRAINDICATED, 1)]


def test_a_violation_carrying_an_allowed_path_and_digest_is_still_a_violation() -> None:
    # Its zero template hash binds none of its fields: an allowed digest proves nothing.
    policy = _policy()
    fields = (write.dng("sha256", BASH), write.nng("/usr/bin/bash"))
    entry = write.entry("ima-ng", fields, violation=True)
    assert _evaluate(policy, entry) == [("ima_violation", Status.CONTRAINDICATED, 1)]
    (parsed,) = parse_binary(entry).entries
    assert policy.judge(parsed)[1] is not None


def test_exclusions_by_glob_and_regex() -> None:
    policy = _policy(exclude=[{"glob": "/tmp/*.sh"}, {"regex": "/var/lib/[a-z]+/.*"}])
    assert _evaluate(policy, write.file_entry("/tmp/a.sh", BASH)) == []
    assert _evaluate(policy, write.file_entry("/var/lib/app/x/y", BASH)) == []
    assert len(_evaluate(policy, write.file_entry("/tmp/sub/a.sh", BASH))) == 1  # * stays in /
    assert len(_evaluate(policy, write.file_entry("/xvar/lib/app/x", BASH))) == 1  # anchored


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["rsa", "ecdsa"])
def test_valid_ima_sig_signature_accepts_an_unlisted_file(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    digest = hashlib.sha256(b"signed tool").digest()
    sig = sign_v2(key, key_id_of(key.public_key()), "sha256", digest)
    policy = _policy(signatures={"keys": [{"name": "vendor", "pem": _pem(key)}]})
    assert _evaluate(policy, write.file_entry("/opt/tool", digest, signature=sig)) == []


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["rsa", "ecdsa"])
def test_bad_ima_sig_signature_is_contraindicated(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    digest = hashlib.sha256(b"signed tool").digest()
    sig = sign_v2(key, key_id_of(key.public_key()), "sha256", hashlib.sha256(b"other").digest())
    policy = _policy(signatures={"keys": [{"name": "vendor", "pem": _pem(key)}]})
    entry = write.file_entry("/usr/bin/bash", digest, signature=sig)
    assert _evaluate(policy, entry) == [("ima_signature_invalid", Status.CONTRAINDICATED, 1)]


def test_signature_by_an_unknown_key_counts_for_nothing() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(b"tool").digest()
    sig = sign_v2(other, key_id_of(other.public_key()), "sha256", digest)
    policy = _policy(signatures={"keys": [{"name": "vendor", "pem": _pem(EC_KEY)}]})
    assert _evaluate(policy, write.file_entry("/opt/tool", digest, signature=sig)) == [
        ("ima_unknown_entry", Status.CONTRAINDICATED, 1)
    ]


def test_required_signature_missing_is_contraindicated_even_for_an_allowed_digest() -> None:
    policy = _policy(
        signatures={"keys": [{"name": "v", "pem": _pem(EC_KEY)}], "require": [{"glob": "/usr/**"}]}
    )
    entry = write.file_entry("/usr/bin/bash", BASH, signature=b"")
    assert _evaluate(policy, entry) == [("ima_signature_required", Status.CONTRAINDICATED, 1)]


def test_certificate_key_id_is_the_last_four_bytes_of_its_skid() -> None:
    skid = bytes(range(20))
    key = load_signing_key("cert", _certificate(EC_KEY, skid).encode())
    assert key.keyid == int.from_bytes(skid[-4:], "big")
    digest = hashlib.sha256(b"tool").digest()
    sig = sign_v2(EC_KEY, skid[-4:], "sha256", digest)
    policy = _policy(signatures={"keys": [{"name": "c", "pem": _certificate(EC_KEY, skid)}]})
    assert _evaluate(policy, write.file_entry("/opt/tool", digest, signature=sig)) == []


def test_bare_key_id_is_sha1_of_the_pkcs1_key() -> None:
    der = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert key_id_of(RSA_KEY.public_key()) == hashlib.sha1(der).digest()[-4:]


def test_ima_buf_rules() -> None:
    cmdline = b"root=/dev/vda1 ro"
    policy = _policy(
        buf={
            "kexec-cmdline": {"values": [cmdline.decode()]},
            ".builtin_trusted_keys": {"ignore": True},
            ".ima": {"digests": [hashlib.sha256(b"key").hexdigest()]},
        }
    )
    assert _evaluate(policy, write.buf_entry("kexec-cmdline", cmdline)) == []
    assert _evaluate(policy, write.buf_entry(".builtin_trusted_keys", b"any")) == []
    assert _evaluate(policy, write.buf_entry(".ima", b"key")) == []
    assert _evaluate(policy, write.buf_entry("kexec-cmdline", b"init=/bin/sh")) == [
        ("ima_buf_not_allowed", Status.CONTRAINDICATED, 1)
    ]
    assert _evaluate(policy, write.buf_entry("dm_table_load", b"x")) == [
        ("ima_unknown_entry", Status.CONTRAINDICATED, 1)
    ]


def test_ima_buf_whose_digest_is_not_its_buffers_is_contraindicated() -> None:
    fields = (
        write.dng("sha256", hashlib.sha256(b"ok").digest()),
        write.nng("kexec-cmdline"),
        b"evil",
    )
    policy = _policy(buf={"kexec-cmdline": {"values": ["evil"]}})
    assert _evaluate(policy, write.entry("ima-buf", fields)) == [
        ("ima_buf_digest_mismatch", Status.CONTRAINDICATED, 1)
    ]


def test_section_errors_are_all_reported_with_where() -> None:
    with pytest.raises(RuntimeSectionError) as info:
        parse_runtime_section(
            {
                "digests": {"/a": ["sha256:zz"], "/b": ["sha256:" + "00" * 20]},
                "exclude": [{"regex": "(?=x)"}, {"glob": ""}],
                "unknown": "maybe",
                "colour": 1,
            }
        )
    where = [p.where for p in info.value.problems]
    assert "runtime.digests['/a'][0]" in where and "runtime.digests['/b'][0]" in where
    assert "runtime.exclude[0]" in where and "runtime.exclude[1]" in where
    assert "runtime.unknown" in where and "runtime.colour" in where


def test_exclusion_that_matches_everything_is_a_lint_warning() -> None:
    parsed = parse_runtime_section(
        {"digests": {"/a": [BASH.hex()]}, "exclude": [{"glob": "/**"}, {"glob": "/tmp/**"}]}
    )
    assert len(parsed.warnings) == 1 and "glob:/**" in parsed.warnings[0]


def test_policy_with_too_many_digests_per_path_is_refused() -> None:
    with pytest.raises(RuntimeSectionError, match="more than 2 digests"):
        parse_runtime_section(
            {"digests": {"/a": [BASH.hex()] * 3}}, limits=Limits(max_ima_digests_per_path=2)
        )


@pytest.mark.parametrize("alg", ["sha1", "sha256", "sha384", "sha512", "sm3_256"])
def test_keylime_corpus_policies_import(alg: str) -> None:
    imported = import_keylime_policy((DATA / f"policy-{alg}").read_bytes())
    parsed = parse_runtime_section(imported.section)
    assert len(parsed.policy.digests) == 1 and parsed.warnings == ()
    assert imported.section["template_hash"] == "sha1"


def test_keylime_policy_with_an_exclude_matching_everything_warns() -> None:
    data = json.loads((DATA / "policy-sha256").read_text())
    data["excludes"] = ["/", "/tmp/.*"]  # Keylime matches at the start: "/" is every path
    imported = import_keylime_policy(json.dumps(data).encode())
    assert len(imported.warnings) == 1 and "excludes[0] '/'" in imported.warnings[0]
    parsed = parse_runtime_section(imported.section)
    assert len(parsed.warnings) == 1
    entries = parse_binary(write.file_entry("/tmp/x/y", BASH)).entries
    assert parsed.policy.evaluate(entries) == ()


def test_keylime_policy_with_keys_keyrings_and_ignored_keyrings_imports() -> None:
    der = EC_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ring = json.dumps({"pubkeys": [base64.b64encode(der).decode()], "keyids": [0x11223344]})
    data = json.loads((DATA / "policy-sha256").read_text())
    data["verification-keys"] = json.dumps({"tenant_keyring": ring})
    data["keyrings"] = {".ima": [hashlib.sha256(b"k").hexdigest()]}
    data["ima"]["ignored_keyrings"] = [".builtin_trusted_keys"]
    policy = parse_runtime_section(import_keylime_policy(json.dumps(data).encode()).section).policy
    assert set(policy.keys) == {0x11223344}
    assert policy.buf[".builtin_trusted_keys"].ignore
    digest = hashlib.sha256(b"tool").digest()
    sig = sign_v2(EC_KEY, (0x11223344).to_bytes(4, "big"), "sha256", digest)
    assert _evaluate(policy, write.file_entry("/opt/tool", digest, signature=sig)) == []


def test_keylime_policy_with_a_dm_policy_is_refused() -> None:
    data = json.loads((DATA / "policy-sha256").read_text())
    data["ima"]["dm_policy"] = {"table_load": {}}
    with pytest.raises(PolicyViolation, match="dm_policy"):
        import_keylime_policy(json.dumps(data).encode())


def test_keylime_exclude_that_re2_cannot_compile_is_refused() -> None:
    data = json.loads((DATA / "policy-sha256").read_text())
    data["excludes"] = ["/(?!usr)"]
    with pytest.raises(PolicyViolation, match="excludes\\[0\\]"):
        import_keylime_policy(json.dumps(data).encode())


def test_learned_policy_accepts_its_log_and_refuses_a_new_binary() -> None:
    raw = (
        write.file_entry("boot_aggregate", bytes(32))
        + write.file_entry("/usr/bin/bash", BASH)
        + write.file_entry("/usr/bin/bash", hashlib.sha256(b"v2").digest())
        + write.buf_entry("kexec-cmdline", b"ro")
        + write.file_entry("/tmp/scratch", BASH)
        + write.file_entry("/var/x", BASH, violation=True)
    )
    log = parse_binary(raw)
    learned = learn_runtime_policy([log], exclude=[PathPattern("glob", "/tmp/**")])
    assert learned.section["digests"]["/usr/bin/bash"] == [
        f"sha256:{BASH.hex()}",
        f"sha256:{hashlib.sha256(b'v2').hexdigest()}",
    ]
    assert any("violation" in n for n in learned.notes)
    policy = parse_runtime_section(learned.section).policy
    assert [r.code for r in policy.evaluate(log.entries)] == ["ima_violation"]
    assert _evaluate(policy, write.file_entry("/usr/bin/new", BASH)) == [
        ("ima_unknown_entry", Status.CONTRAINDICATED, 1)
    ]


def test_learned_from_keylime_ascii_log() -> None:
    log = parse_ascii((DATA / "ima-log-sha256").read_bytes())
    learned = learn_runtime_policy([log])
    assert list(learned.section["digests"]) == ["/data"]
