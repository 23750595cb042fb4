"""The pure parts of the secured wire: PKI files, identities, listen checks, buckets, slots."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from verifier.limits import Limits
from verifier.service.authz import (
    OPERATOR_SOCKET,
    POLICY,
    Denied,
    authorize,
    resolve_caller,
)
from verifier.service.ratelimit import Bucket, RateLimiter, StreamSlots, TokenBuckets, peer_key
from verifier.tls import pki
from verifier.tls.credentials import TlsConfigError, TlsFiles, check_listen, load_tls_files
from verifier.tls.identity import (
    ANONYMOUS,
    CallerIdentity,
    IdentityError,
    Role,
    identity_from_auth_context,
    identity_from_certificate,
    trust_domain_of,
)

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TD = pki.DEFAULT_TRUST_DOMAIN


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "fleet"
    pki.init_pki(d, verifier_names=["verifier.example", "10.0.0.7"], now=NOW)
    return d


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _leaf_with_sans(
    fleet: Path, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
) -> bytes:
    ca_key, ca_cert, _ = pki.load_ca(fleet / "ca.pem", fleet / "ca.key")
    _, cert = pki._sign_leaf(ca_key, ca_cert, "odd", sans, usage, NOW, 1)
    return pki._cert_pem(cert)


# ------------------------------------------------------------------ pki


def test_init_pki_writes_private_keys_0600_and_says_what_each_file_is(fleet: Path) -> None:
    names = sorted(p.name for p in fleet.iterdir())
    assert names == sorted(
        f"{stem}{ext}"
        for stem in ("ca", "verifier", "operator", "relying-party")
        for ext in (".pem", ".key")
    )
    for key in fleet.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    for cert in fleet.glob("*.pem"):
        assert cert.stat().st_mode & 0o777 == 0o644


def test_init_pki_refuses_to_overwrite_and_leaves_the_files_alone(fleet: Path) -> None:
    before = {p.name: p.read_bytes() for p in fleet.iterdir()}
    with pytest.raises(pki.PkiError, match="refusing to overwrite"):
        pki.init_pki(fleet, verifier_names=[], now=NOW)
    assert {p.name: p.read_bytes() for p in fleet.iterdir()} == before


def test_init_pki_refuses_when_only_one_target_exists(tmp_path: Path) -> None:
    (tmp_path / "operator.key").write_text("someone else's key")
    with pytest.raises(pki.PkiError):
        pki.init_pki(tmp_path, verifier_names=[], now=NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operator.key"]


def test_server_certificate_names_the_verifier_and_loopback(fleet: Path) -> None:
    cert = _cert(fleet / "verifier.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["verifier.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_leaves_chain_to_the_ca_with_p256_sha256(fleet: Path) -> None:
    ca = _cert(fleet / "ca.pem")
    for stem in ("verifier", "operator", "relying-party"):
        leaf = _cert(fleet / f"{stem}.pem")
        leaf.verify_directly_issued_by(ca)
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert trust_domain_of((fleet / "ca.pem").read_bytes()) == TD


def test_a_server_name_with_a_slash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="not a DNS name"):
        pki.init_pki(tmp_path / "x", verifier_names=["evil/../x"], now=NOW)


def test_issue_client_with_a_key_of_another_ca_is_refused(fleet: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_pki(other, verifier_names=[], now=NOW)
    with pytest.raises(pki.PkiError, match="not the private key"):
        pki.issue_client(
            fleet / "ca.pem",
            other / "ca.key",
            role=Role.OPERATOR,
            name="x",
            out=tmp_path,
            now=NOW,
        )


# ------------------------------------------------------------------ identities


def test_client_certificates_name_their_role(fleet: Path) -> None:
    op = identity_from_certificate((fleet / "operator.pem").read_bytes(), TD)
    rp = identity_from_certificate((fleet / "relying-party.pem").read_bytes(), TD)
    assert (op.role, op.name) == (Role.OPERATOR, "operator")
    assert (rp.role, rp.name) == (Role.RELYING_PARTY, "relying-party")
    assert len(op.fingerprint) == 64


def test_server_certificate_is_not_a_caller(fleet: Path) -> None:
    with pytest.raises(IdentityError, match="not for client authentication"):
        identity_from_certificate((fleet / "verifier.pem").read_bytes(), TD)


def test_two_spiffe_ids_in_one_certificate_are_ambiguous(fleet: Path) -> None:
    pem = _leaf_with_sans(
        fleet,
        [
            x509.UniformResourceIdentifier(f"spiffe://{TD}/fleet-attest/relying-party/a"),
            x509.UniformResourceIdentifier(f"spiffe://{TD}/fleet-attest/operator/a"),
        ],
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    with pytest.raises(IdentityError, match="exactly one"):
        identity_from_certificate(pem, TD)


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TD}/fleet-attest/agent/a",  # agents carry no certificate role
        f"spiffe://{TD}/fleet-attest/admin/a",
        f"spiffe://{TD}/fleet-attest/operator/a/b",
        f"spiffe://{TD}/fleet-attest/operator/",
        f"spiffe://{TD}/other/operator/a",
        f"spiffe://{TD}/fleet-attest/operator/a?x=1",
        f"spiffe://{TD}:443/fleet-attest/operator/a",
        f"spiffe://user@{TD}/fleet-attest/operator/a",
        "spiffe://evil.example/fleet-attest/operator/a",
    ],
)
def test_spiffe_id_that_is_not_exactly_ours_names_nobody(fleet: Path, uri: str) -> None:
    pem = _leaf_with_sans(
        fleet, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH
    )
    with pytest.raises(IdentityError):
        identity_from_certificate(pem, TD)


def test_auth_context_without_certificate_is_anonymous(fleet: Path) -> None:
    assert identity_from_auth_context({"transport_security_type": [b"ssl"]}, TD) is None
    insecure = {
        "transport_security_type": [b"insecure"],
        "x509_pem_cert": [(fleet / "operator.pem").read_bytes()],
    }
    assert identity_from_auth_context(insecure, TD) is None


def test_local_transport_counts_as_operator_only_on_a_unix_socket() -> None:
    local = {"transport_security_type": [b"local"]}
    assert resolve_caller(local, "unix:", TD) == (OPERATOR_SOCKET, None)
    assert resolve_caller(local, "ipv4:127.0.0.1:5000", TD) == (ANONYMOUS, None)


def test_every_policy_entry_names_a_real_service() -> None:
    services = {m.split("/")[1] for m in POLICY}
    assert services == {
        "fleetattest.v1.Agent",
        "fleetattest.v1.RelyingParty",
        "fleetattest.v1.Operator",
        "grpc.health.v1.Health",  # the standard health check (verifier.service.health)
    }
    assert all(roles for roles in POLICY.values())


def test_operator_methods_are_for_operators_only() -> None:
    rp = CallerIdentity(Role.RELYING_PARTY, "rp", "f")
    for method in (m for m in POLICY if "/fleetattest.v1.Operator/" in m):
        with pytest.raises(Denied):
            authorize(POLICY, method, rp)
        with pytest.raises(Denied):
            authorize(POLICY, method, ANONYMOUS)


# ------------------------------------------------------------------ server files


def test_mismatched_server_key_is_refused(fleet: Path) -> None:
    files = TlsFiles(fleet / "verifier.pem", fleet / "operator.key", fleet / "ca.pem")
    with pytest.raises(TlsConfigError, match="not the private key"):
        load_tls_files(files, NOW)


def test_expired_server_certificate_is_refused(fleet: Path) -> None:
    files = TlsFiles(fleet / "verifier.pem", fleet / "verifier.key", fleet / "ca.pem")
    with pytest.raises(TlsConfigError, match="not valid now"):
        load_tls_files(files, NOW + dt.timedelta(days=pki.LEAF_DAYS + 1))


def test_client_ca_without_trust_domain_is_refused(fleet: Path) -> None:
    files = TlsFiles(fleet / "verifier.pem", fleet / "verifier.key", fleet / "verifier.pem")
    with pytest.raises(IdentityError, match="trust domain"):
        load_tls_files(files, NOW)


# ------------------------------------------------------------------ listen checks


@pytest.mark.parametrize("address", ["0.0.0.0:50051", "[::]:50051", ":50051", "verifier:1"])
def test_plaintext_on_the_network_is_refused_without_insecure(address: str) -> None:
    check = check_listen(address, tls=False, insecure=False)
    assert not check.ok
    assert check.error is not None and "--insecure" in check.error


def test_plaintext_on_the_network_with_insecure_warns() -> None:
    check = check_listen("0.0.0.0:50051", tls=False, insecure=True)
    assert check.ok and check.warning is not None and "INSECURE" in check.warning


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:9", "localhost:9", "unix:/run/x"])
def test_plaintext_on_loopback_is_allowed(address: str) -> None:
    assert check_listen(address, tls=False, insecure=False).ok


def test_tls_with_insecure_is_contradictory() -> None:
    assert not check_listen("0.0.0.0:1", tls=True, insecure=True).ok
    assert check_listen("0.0.0.0:1", tls=True, insecure=False) == check_listen(
        "[::]:1", tls=True, insecure=False
    )


# ------------------------------------------------------------------ rate limits


def test_refused_call_takes_no_token_from_the_other_bucket() -> None:
    now = [0.0]
    limits = Limits(open_calls_device_burst=1.0, open_calls_peer_burst=3.0)
    limiter = RateLimiter(lambda: now[0], limits)
    assert limiter.take("peer", "dev") is None
    for _ in range(5):
        assert limiter.take("peer", "dev") == pytest.approx(1.0)
    assert limiter.take("peer", "dev2") is None
    assert limiter.take("peer", "dev3") is None
    assert limiter.take("peer", "dev4") is not None  # the peer's burst of 3 is spent


def test_flood_of_fresh_keys_never_grows_the_table() -> None:
    table = TokenBuckets(Bucket(rate=1.0, burst=2.0), max_keys=100)
    for i in range(10_000):
        table.take(f"k{i}", now=0.0)
        assert len(table) <= 100
    assert table.evicted == 10_000 - 100


def test_refilled_buckets_are_dropped_before_live_ones() -> None:
    table = TokenBuckets(Bucket(rate=1.0, burst=2.0), max_keys=2)
    table.take("old", now=0.0)
    table.take("busy", now=9.5)
    table.take("busy", now=9.5)
    table.take("new", now=10.0)  # "old" has refilled: forgetting it loses nothing
    assert table.evicted == 0 and len(table) == 2
    assert table.wait("busy", now=10.0) == pytest.approx(0.5)  # still tracked, not reset


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:192.0.2.1:5555", "ipv4:192.0.2.1"),
        ("ipv6:[2001:db8::1]:5555", "ipv6:2001:db8::/64"),
        ("ipv6:[2001:db8::ffff:1]:1", "ipv6:2001:db8::/64"),
        ("ipv6:[::ffff:192.0.2.1]:5555", "ipv4:192.0.2.1"),
        ("unix:", "unix"),
        ("garbage", "garbage"),
    ],
)
def test_peer_keys_group_an_ipv6_host_by_its_64(peer: str, key: str) -> None:
    assert peer_key(peer) == key


# ------------------------------------------------------------------ stream slots


def test_anonymous_callers_get_no_stream() -> None:
    assert StreamSlots(per_identity=1, total=2).acquire(None) is None


def test_per_identity_cap_must_leave_room_for_another_identity() -> None:
    with pytest.raises(ValueError, match="one identity"):
        StreamSlots(per_identity=2, total=2)


def test_released_slot_is_released_once() -> None:
    slots = StreamSlots(per_identity=1, total=2)
    release = slots.acquire("a")
    assert release is not None and slots.acquire("a") is None
    release()
    release()  # the stream's finally and its RPC callback both call it
    assert slots.in_use() == 0
    assert slots.acquire("a") is not None and slots.acquire("b") is not None
    assert slots.acquire("c") is None


def test_concurrent_acquires_never_exceed_the_caps() -> None:
    slots = StreamSlots(per_identity=3, total=10)
    got: list[object] = []
    lock = threading.Lock()

    def grab(identity: str) -> None:
        for _ in range(50):
            r = slots.acquire(identity)
            if r is not None:
                with lock:
                    got.append(r)

    threads = [threading.Thread(target=grab, args=(f"id{i % 5}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 10 == slots.in_use()
