"""The agent's TPM access (agent.tpm) and state directory (agent.state), against swtpm."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import TPM2_CAP, TPM2_HC
from tpm2_pytss.types import TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from agent.state import AgentState, StateError
from agent.tpm import AK_ATTRIBUTES, Tpm, TpmError
from simulator.ca import LocalCa
from simulator.swtpm import SwtpmFactory, SwtpmInstance, public_key_from_tpm2b

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
TPMA_OBJECT_DECRYPT = 0x00020000
NONCE = bytes(range(32))


@dataclass(frozen=True)
class Attest:
    magic: int
    type: int
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: int
    pcr_select: bytes  # TPML_PCR_SELECTION as marshalled
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    """TPMS_ATTEST of a quote, parsed by hand (independently of tpm2-pytss)."""
    magic, kind = struct.unpack_from(">IH", data, 0)
    offset = 6
    (size,) = struct.unpack_from(">H", data, offset)
    offset += 2 + size  # qualifiedSigner
    (size,) = struct.unpack_from(">H", data, offset)
    extra = data[offset + 2 : offset + 2 + size]
    offset += 2 + size
    clock, reset, restart, safe = struct.unpack_from(">QIIB", data, offset)
    offset += 17 + 8  # clockInfo, firmwareVersion
    start = offset
    (count,) = struct.unpack_from(">I", data, offset)
    offset += 4
    for _ in range(count):
        offset += 3 + data[offset + 2]
    pcr_select = data[start:offset]
    (size,) = struct.unpack_from(">H", data, offset)
    digest = data[offset + 2 : offset + 2 + size]
    assert offset + 2 + size == len(data)
    return Attest(magic, kind, extra, clock, reset, restart, safe, pcr_select, digest)


def verify_signature(ak_public: bytes, attest: bytes, signature: bytes) -> None:
    key = public_key_from_tpm2b(ak_public)
    alg, hash_alg = struct.unpack_from(">HH", signature, 0)
    assert hash_alg == 0x000B  # sha256
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert alg == 0x0018  # ECDSA
        (r_size,) = struct.unpack_from(">H", signature, 4)
        r = int.from_bytes(signature[6 : 6 + r_size], "big")
        (s_size,) = struct.unpack_from(">H", signature, 6 + r_size)
        s = int.from_bytes(signature[8 + r_size : 8 + r_size + s_size], "big")
        key.verify(encode_dss_signature(r, s), attest, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert alg == 0x0014  # RSASSA
        (size,) = struct.unpack_from(">H", signature, 4)
        key.verify(signature[6 : 6 + size], attest, padding.PKCS1v15(), hashes.SHA256())


# -- EK certificate -------------------------------------------------------------------


@pytest.mark.swtpm
def test_ek_certificate_round_trips_through_nv(swtpm: SwtpmInstance, local_ca: LocalCa) -> None:
    ecc_der = swtpm.provision_ek_certificate(local_ca, "ecc")
    with Tpm.open(swtpm.tcti) as tpm:
        rsa_der = tpm.read_ek_certificate("rsa")
        assert tpm.read_ek_certificate("ecc") == ecc_der
        rsa_ek = tpm.create_ek("rsa")
        ecc_ek = tpm.create_ek("ecc")
    for der, ek in ((rsa_der, rsa_ek), (ecc_der, ecc_ek)):
        cert = x509.load_der_x509_certificate(der)
        assert cert.public_key() == public_key_from_tpm2b(ek.public)


@pytest.mark.swtpm
def test_ek_certificate_longer_than_one_nv_read_is_read_whole(swtpm: SwtpmInstance) -> None:
    blob = os.urandom(1900)  # swtpm's MAX_NV_BUFFER_SIZE is 1024: needs two reads
    swtpm.write_ek_certificate(blob, "rsa")
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.read_ek_certificate("rsa") == blob


@pytest.mark.swtpm
def test_tpm_without_ek_certificate_reads_empty(swtpm: SwtpmInstance) -> None:
    swtpm.remove_ek_certificate("rsa")
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.read_ek_certificate("rsa") == b""
        assert tpm.read_ek_certificate("ecc") == b""
        with pytest.raises(TpmError):
            tpm.read_ek_certificate("dsa")


@pytest.mark.swtpm
def test_ek_is_the_same_key_after_restart(swtpm: SwtpmInstance) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        first = tpm.create_ek("rsa").public
    swtpm.stop()
    swtpm.start()
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.create_ek("rsa").public == first


# -- attestation key ------------------------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_agent_restart_reloads_the_same_ak(swtpm: SwtpmInstance, tmp_path: Path, alg: str) -> None:
    state = AgentState(tmp_path / "agent")
    with Tpm.open(swtpm.tcti) as tpm:
        first = tpm.load_or_create_ak(state, alg)
    swtpm.power_cycle()
    with Tpm.open(swtpm.tcti) as tpm:
        again = tpm.load_or_create_ak(AgentState(tmp_path / "agent"), alg)
    assert again.name == first.name
    assert again.public == first.public
    assert first.name[:2] == b"\x00\x0b" and len(first.name) == 34


@pytest.mark.swtpm
@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_ak_is_a_restricted_signing_key_that_cannot_decrypt(
    swtpm: SwtpmInstance, tmp_path: Path, alg: str
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), alg)
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    attributes = int(public.publicArea.objectAttributes)
    assert attributes & AK_ATTRIBUTES == AK_ATTRIBUTES
    assert not attributes & TPMA_OBJECT_DECRYPT
    assert bytes(public.get_name()) == ak.name


@pytest.mark.swtpm
def test_corrupt_ak_state_is_an_error_not_a_new_identity(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    state = AgentState(tmp_path)
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.load_or_create_ak(state, "ecc")
    ak_file = tmp_path / "ak.json"
    ak_file.write_bytes(ak_file.read_bytes()[:-20])
    corrupted = ak_file.read_bytes()
    with Tpm.open(swtpm.tcti) as tpm, pytest.raises(StateError, match=r"ak\.json"):
        tpm.load_or_create_ak(state, "ecc")
    assert ak_file.read_bytes() == corrupted


@pytest.mark.swtpm
def test_tampered_ak_private_blob_is_an_error_not_a_new_identity(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    state = AgentState(tmp_path)
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.load_or_create_ak(state, "ecc")
    data = json.loads((tmp_path / "ak.json").read_text())
    private = bytearray.fromhex(data["private"])
    private[40] ^= 0x01
    data["private"] = private.hex()
    (tmp_path / "ak.json").write_text(json.dumps(data))
    with Tpm.open(swtpm.tcti) as tpm, pytest.raises(TpmError, match="does not load"):
        tpm.load_or_create_ak(state, "ecc")
    assert json.loads((tmp_path / "ak.json").read_text()) == data


@pytest.mark.swtpm
def test_ak_state_from_another_tpm_makes_a_new_ak(
    swtpm_factory: SwtpmFactory, tmp_path: Path
) -> None:
    first, second = swtpm_factory.create("a"), swtpm_factory.create("b")
    state = AgentState(tmp_path / "agent")
    with Tpm.open(first.tcti) as tpm:
        old = tpm.load_or_create_ak(state, "ecc")
    state.save_enrollment("dev-1", "verifier:1", old.name.hex())
    with Tpm.open(second.tcti) as tpm:
        new = tpm.load_or_create_ak(state, "ecc")
    assert new.name != old.name
    assert state.enrollment() is None  # the old enrollment belonged to the other TPM
    with Tpm.open(second.tcti) as tpm:
        assert tpm.load_or_create_ak(state, "ecc").name == new.name


@pytest.mark.swtpm
def test_ak_algorithm_switch_is_refused(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.load_or_create_ak(state, "ecc")
        with pytest.raises(TpmError, match="holds an ecc AK"):
            tpm.load_or_create_ak(state, "rsa")
        with pytest.raises(TpmError, match="unknown AK algorithm"):
            tpm.load_or_create_ak(state, "dsa")


# -- credential activation --------------------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("ek_alg", ["rsa", "ecc"])
def test_activate_credential_recovers_the_secret(
    swtpm: SwtpmInstance, tmp_path: Path, ek_alg: str
) -> None:
    secret = os.urandom(32)
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        ek = tpm.create_ek(ek_alg)
        ek_public, _ = TPM2B_PUBLIC.unmarshal(ek.public)
        blob, encrypted = make_credential(ek_public, secret, ak.name)
        assert tpm.activate_credential(ak, ek, blob.marshal(), encrypted.marshal()) == secret


@pytest.mark.swtpm
def test_credential_bound_to_another_key_name_is_not_activated(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        ek = tpm.create_ek("rsa")
        ek_public, _ = TPM2B_PUBLIC.unmarshal(ek.public)
        other_name = b"\x00\x0b" + hashlib.sha256(b"an unrestricted key").digest()
        blob, encrypted = make_credential(ek_public, os.urandom(32), other_name)
        with pytest.raises(TpmError, match="ActivateCredential"):
            tpm.activate_credential(ak, ek, blob.marshal(), encrypted.marshal())
        with pytest.raises(TpmError, match="trailing"):
            tpm.activate_credential(ak, ek, blob.marshal() + b"x", encrypted.marshal())


# -- quotes and PCRs ----------------------------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_quote_binds_nonce_selection_and_pcr_values(
    swtpm: SwtpmInstance, tmp_path: Path, alg: str
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), alg)
        tpm.extend(7, {"sha256": hashlib.sha256(b"secure boot").digest()})
        quote = tpm.quote(ak, NONCE, "sha256", [7, 0, 1])
    attest = parse_attest(quote.attest)
    assert attest.magic == TPM_GENERATED
    assert attest.type == ST_ATTEST_QUOTE
    assert attest.extra_data == NONCE
    assert attest.pcr_select == bytes.fromhex("00000001000b03830000")
    assert sorted(quote.pcr_values) == [0, 1, 7]
    assert quote.pcr_values[7] != bytes(32)
    joined = b"".join(quote.pcr_values[i] for i in (0, 1, 7))
    assert attest.pcr_digest == hashlib.sha256(joined).digest()
    verify_signature(ak.public, quote.attest, quote.signature)


@pytest.mark.swtpm
def test_quote_of_more_than_eight_pcrs_reads_every_value(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        for pcr in (3, 12, 23):
            tpm.extend(pcr, {"sha256": hashlib.sha256(bytes([pcr])).digest()})
        quote = tpm.quote(ak, NONCE, "sha256", list(range(24)))
        direct = tpm.read_pcrs("sha256", range(24))
    assert quote.pcr_values == direct
    assert len(quote.pcr_values) == 24
    joined = b"".join(quote.pcr_values[i] for i in range(24))
    assert parse_attest(quote.attest).pcr_digest == hashlib.sha256(joined).digest()


@pytest.mark.swtpm
def test_quote_is_retaken_when_a_pcr_changes_between_quote_and_read(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        real_quote = tpm.esapi.quote
        calls: list[int] = []

        def racing_quote(*args: object, **kwargs: object) -> object:
            result = real_quote(*args, **kwargs)
            calls.append(1)
            if len(calls) == 1:  # firmware extends right after the first quote
                tpm.extend(7, {"sha256": hashlib.sha256(b"late event").digest()})
            return result

        tpm.esapi.quote = racing_quote
        quote = tpm.quote(ak, NONCE, "sha256", [0, 7])
        assert len(calls) == 2
        assert quote.pcr_values == tpm.read_pcrs("sha256", [0, 7])
    joined = quote.pcr_values[0] + quote.pcr_values[7]
    assert parse_attest(quote.attest).pcr_digest == hashlib.sha256(joined).digest()


@pytest.mark.swtpm
def test_quote_gives_up_when_pcrs_keep_changing(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        real_quote = tpm.esapi.quote

        def racing_quote(*args: object, **kwargs: object) -> object:
            result = real_quote(*args, **kwargs)
            tpm.extend(7, {"sha256": os.urandom(32)})
            return result

        tpm.esapi.quote = racing_quote
        with pytest.raises(TpmError, match="kept changing"):
            tpm.quote(ak, NONCE, "sha256", [7])


@pytest.mark.swtpm
def test_extend_changes_the_pcr_in_each_bank(swtpm: SwtpmInstance) -> None:
    event = {
        "sha1": hashlib.sha1(b"event").digest(),
        "sha256": hashlib.sha256(b"event").digest(),
        "sha384": hashlib.sha384(b"event").digest(),
    }
    with Tpm.open(swtpm.tcti) as tpm:
        before = {bank: tpm.read_pcrs(bank, [10])[10] for bank in event}
        tpm.extend(10, event)
        after = {bank: tpm.read_pcrs(bank, [10])[10] for bank in event}
    for bank, digest in event.items():
        assert after[bank] == hashlib.new(bank, before[bank] + digest).digest()


@pytest.mark.swtpm
def test_malformed_quote_and_extend_requests_are_refused(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        with pytest.raises(TpmError, match="bank"):
            tpm.quote(ak, NONCE, "md5", [0])
        with pytest.raises(TpmError, match="PCR indices"):
            tpm.quote(ak, NONCE, "sha256", [24])
        with pytest.raises(TpmError, match="empty"):
            tpm.quote(ak, NONCE, "sha256", [])
        with pytest.raises(TpmError, match="32 bytes"):
            tpm.extend(7, {"sha256": b"short"})


@pytest.mark.swtpm
def test_oversized_nonce_is_refused_before_the_tpm(swtpm: SwtpmInstance, tmp_path: Path) -> None:
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), "ecc")
        with pytest.raises(TpmError, match="nonce"):
            tpm.quote(ak, bytes(65), "sha256", [0])
        assert parse_attest(tpm.quote(ak, bytes(64), "sha256", [0]).attest).extra_data == bytes(64)


def loaded_handles(device: SwtpmInstance) -> list[int]:
    """Transient objects and sessions currently held by the TPM."""
    handles = []
    with ESAPI(device.tcti) as esapi:
        for first in (TPM2_HC.TRANSIENT_FIRST, TPM2_HC.LOADED_SESSION_FIRST):
            _, data = esapi.get_capability(TPM2_CAP.HANDLES, first, 64)
            handles += [int(h) for h in data.data.handles if int(h) >> 24 == first >> 24]
    return handles


@pytest.mark.swtpm
def test_every_transient_object_and_session_is_flushed(
    swtpm: SwtpmInstance, tmp_path: Path
) -> None:
    state = AgentState(tmp_path)
    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(state, "ecc")
        assert tpm.load_or_create_ak(state, "ecc") is ak  # loaded once per connection
        ek = tpm.create_ek("rsa")
        blob, encrypted = make_credential(TPM2B_PUBLIC.unmarshal(ek.public)[0], b"s", ak.name)
        tpm.activate_credential(ak, ek, blob.marshal(), encrypted.marshal())
        tpm.quote(ak, NONCE, "sha256", [0, 1, 7])
        assert len(tpm.read_pcrs("sha256", [0])) == 1
    assert loaded_handles(swtpm) == []
    with Tpm.open(swtpm.tcti) as tpm:
        tpm.load_or_create_ak(state, "ecc")
        with pytest.raises(TpmError):
            tpm.quote(ak, NONCE, "sha256", [99])
    assert loaded_handles(swtpm) == []


@pytest.mark.swtpm
@pytest.mark.parametrize(("ak_alg", "ek_alg"), [("ecc", "rsa"), ("ecc", "ecc"), ("rsa", "rsa")])
def test_verifier_credential_activates_on_the_tpm(
    swtpm: SwtpmInstance, tmp_path: Path, ak_alg: str, ek_alg: str
) -> None:
    """Cross-check with the verifier's own MakeCredential and AK checks (no tpm2-pytss there)."""
    from verifier.enrollment import credential, tpmpublic  # noqa: PLC0415 (only this test)

    with Tpm.open(swtpm.tcti) as tpm:
        ak = tpm.load_or_create_ak(AgentState(tmp_path), ak_alg)
        ek = tpm.create_ek(ek_alg)
        ak_public = tpmpublic.parse_tpm2b_public(ak.public)
        tpmpublic.check_ak(ak_public)
        assert ak_public.name == ak.name
        secret = credential.new_secret()
        blob, encrypted = credential.make_credential(
            tpmpublic.parse_tpm2b_public(ek.public), ak.name, secret
        )
        assert tpm.activate_credential(ak, ek, blob, encrypted) == secret


def test_opening_an_absent_tpm_is_a_clear_error() -> None:
    with pytest.raises(TpmError, match="cannot open"):
        Tpm.open("swtpm:host=127.0.0.1,port=1")


# -- agent state --------------------------------------------------------------------------


def test_state_directory_and_files_are_private(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir(mode=0o755)
    state = AgentState(tmp_path / "agent")
    state.save_enrollment("dev-1", "verifier:4433", "000b" + "aa" * 32)
    assert stat.S_IMODE((tmp_path / "agent").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "agent" / "enrollment.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["enrollment.json"]
    record = AgentState(tmp_path / "agent").enrollment()
    assert record is not None
    assert (record.device_id, record.verifier, record.ak_name) == (
        "dev-1",
        "verifier:4433",
        "000b" + "aa" * 32,
    )


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"version": 1, "device_id": "d", "verifier": "v"}',
        b'{"version": 2, "device_id": "d", "verifier": "v", "ak_name": "00"}',
        b'{"version": 1, "device_id": "d", "verifier": "v", "ak_name": "zz"}',
        b'{"version": 1, "device_id": 7, "verifier": "v", "ak_name": "00"}',
        b'{"version": 1, "device_id": "d", "verifier": "v", "ak_name": "00", "x": 1}',
    ],
)
def test_corrupt_enrollment_record_is_an_error(tmp_path: Path, content: bytes) -> None:
    state = AgentState(tmp_path)
    (tmp_path / "enrollment.json").write_bytes(content)
    with pytest.raises(StateError, match=r"enrollment\.json"):
        state.enrollment()


def test_oversized_state_file_is_refused(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    (tmp_path / "ak.json").write_bytes(b" " * (65 * 1024))
    with pytest.raises(StateError, match="larger"):
        state.ak_blobs()


def test_no_state_means_no_record(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "new")
    assert state.enrollment() is None
    assert state.ak_blobs() is None
