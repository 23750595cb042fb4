"""Path validation on real manufacturer CA certificates (tests/data/ekca, see NOTICE-ekca.md).

Each intermediate must chain to its vendor's anchor, at a time inside the validity of every
certificate on the path (some are expired today). What the corpus lacks is asserted, not
skipped: four vendor CAs are anchors only because their own roots are not in the corpus.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from verifier.enrollment import der
from verifier.enrollment.ekchain import (
    Certificate,
    TrustStore,
    parse_certificate,
    read_certificates,
    verify_path,
)
from verifier.errors import UntrustedEndorsement

EKCA = Path(__file__).parent / "data" / "ekca"
DAY = 86400.0
TODAY = datetime.datetime(2026, 11, 24, tzinfo=datetime.UTC).timestamp()


@pytest.fixture(scope="module")
def store() -> TrustStore:
    return TrustStore.load(EKCA)


def _certs(name: str) -> list[Certificate]:
    return read_certificates((EKCA / name).read_bytes(), name)


def _window(cert: Certificate, store: TrustStore) -> tuple[float, float]:
    """The time span in which ``cert`` and every certificate above it (by name) are valid."""
    start, end = cert.not_before, cert.not_after
    seen = {cert.fingerprint}
    while not store.is_anchor(cert):
        issuers = [c for c in store.issuers_of(cert) if c.fingerprint not in seen]
        assert len(issuers) == 1, f"{cert.subject}: {len(issuers)} issuers"
        cert = issuers[0]
        seen.add(cert.fingerprint)
        start, end = max(start, cert.not_before), min(end, cert.not_after)
    return start, end


def test_every_corpus_file_loads(store: TrustStore) -> None:
    files = sorted(EKCA.glob("*.pem"))
    assert len(files) == 51
    parsed = [cert for path in files for cert in _certs(path.name)]
    assert len(parsed) == 51
    unique = {cert.fingerprint for cert in parsed}
    assert len(store.anchors) + len(store.intermediates) == len(unique)


def test_every_intermediate_chains_to_its_vendor_anchor(store: TrustStore) -> None:
    assert len(store.intermediates) >= 25
    for cert in store.intermediates:
        start, end = _window(cert, store)
        assert start < end, f"{cert.subject}: no time when the whole path is valid"
        path = verify_path(cert, store, start + DAY)
        assert store.is_anchor(path[-1]) and len(path) >= 2
        vendor = path[-1].subject
        assert any(word in vendor for word in ("IFX", "Infineon", "STM", "GlobalSign", "intel"))


def test_anchors_that_are_not_self_signed_are_the_ones_whose_roots_are_missing(
    store: TrustStore,
) -> None:
    not_self_signed = sorted(
        cert.subject.split(",")[0] for cert in store.anchors if cert.subject != cert.issuer
    )
    assert not_self_signed == [
        "CN=Aliyun TPM EKMF CA",  # its Aliyun TPM Root CA is not in the corpus
        "CN=IFX TPM EK Root CA",  # cross-signed by the retired VeriSign TPM root
        "CN=Nationz TPM Manufacturing CA 001",  # its Nationz TPM Root CA is not in the corpus
        "CN=STM TPM ECC Root CA 01",  # its GlobalSign TPM ECC root is not in the corpus
    ]


def test_stm_rsa_chain_runs_through_two_cas_to_globalsign(store: TrustStore) -> None:
    (cert,) = _certs("STM_RSA_05I.pem")
    path = verify_path(cert, store, TODAY)
    assert [c.subject.split(",")[0] for c in path] == [
        "CN=STM TPM EK Intermediate CA 05",
        "CN=STM TPM EK Root CA",
        "CN=GlobalSign Trusted Platform Module Root CA",
    ]


def test_nuvoton_roots_with_unsorted_rdns_are_self_signed_anchors(store: TrustStore) -> None:
    for name in ("NTC1.pem", "NTC2.pem", "NUVO_0100.pem", "NUVO_1110.pem", "NUVO_2111.pem"):
        raw = der.split_certificate(_read_der(name))
        with pytest.raises(ValueError):
            x509.load_der_x509_certificate(_read_der(name))  # strict DER: SET not sorted
        (cert,) = _certs(name)
        assert cert.parts.tbs == raw.tbs
        assert store.is_anchor(cert) and cert.parts.subject == cert.parts.issuer
        assert verify_path(cert, store, cert.not_before + DAY) == (cert,)


def _read_der(name: str) -> bytes:
    return _certs(name)[0].raw


def test_expired_infineon_intermediate_is_rejected_today(store: TrustStore) -> None:
    (cert,) = _certs("IFX_RSA_01I.pem")
    assert cert.not_after < TODAY
    with pytest.raises(UntrustedEndorsement, match=r"IFX TPM EK Intermediate CA 01.*expired"):
        verify_path(cert, store, TODAY)
    assert verify_path(cert, store, cert.not_after - DAY)[-1].subject.startswith(
        "CN=IFX TPM EK Root CA"
    )


def test_intermediate_does_not_chain_to_another_vendors_root() -> None:
    intel_only = TrustStore.from_certificates(_certs("INTEL_RT.pem"))
    (infineon,) = _certs("INF_RSA_011.pem")
    with pytest.raises(UntrustedEndorsement, match="no trusted issuer"):
        verify_path(infineon, intel_only, TODAY)


def test_corpus_root_is_not_trusted_before_it_was_valid(store: TrustStore) -> None:
    (cert,) = _certs("IFX_ECC_042.pem")
    path = verify_path(cert, store, TODAY)
    root = path[-1]
    assert root.subject.startswith("CN=Infineon OPTIGA(TM) ECC Root CA")
    with pytest.raises(UntrustedEndorsement, match=r"ECC Root CA.*not valid before 2013"):
        verify_path(root, store, root.not_before - DAY)


def test_parse_certificate_rejects_a_corrupted_corpus_certificate() -> None:
    raw = bytearray(_read_der("INTEL_I.pem"))
    raw[1] ^= 0x7F
    with pytest.raises(UntrustedEndorsement, match="cannot parse"):
        parse_certificate(bytes(raw), "a corrupted certificate")
