"""The /metrics listener: loopback by default, TLS (1.2 at least) for anything else."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from verifier.metrics import VerifierMetrics
from verifier.metrics_http import (
    MetricsListenRefused,
    MetricsServer,
    check_listen,
    is_loopback,
    parse_listen,
    start_metrics_server,
)
from verifier.verdict import Status


@pytest.fixture
def servers() -> Iterator[list[MetricsServer]]:
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metrics.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "metrics.crt", directory / "metrics.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_loopback_listener_serves_the_registry(servers: list[MetricsServer]) -> None:
    m = VerifierMetrics()
    m.attestation(Status.AFFIRMING)
    server = start_metrics_server("127.0.0.1:0", m.registry)
    servers.append(server)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30) as r:
        text = r.read().decode()
    assert 'fleetattest_attestations_total{outcome="affirming"} 1.0' in text


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464", "metrics:1"])
def test_plaintext_on_a_non_loopback_address_is_refused(listen: str) -> None:
    with pytest.raises(MetricsListenRefused, match="loopback"):
        start_metrics_server(listen, VerifierMetrics().registry)


def test_plaintext_elsewhere_needs_an_explicit_choice(servers: list[MetricsServer]) -> None:
    server = start_metrics_server("0.0.0.0:0", VerifierMetrics().registry, allow_plaintext=True)
    servers.append(server)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=30) as r:
        assert b"fleetattest_build_info" in r.read()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path)
    with pytest.raises(MetricsListenRefused, match="both"):
        start_metrics_server("0.0.0.0:0", VerifierMetrics().registry, certfile=cert)


def test_tls_listener_serves_over_tls_1_2_or_later(
    tmp_path: Path, servers: list[MetricsServer]
) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_metrics_server("127.0.0.1:0", VerifierMetrics().registry, cert, key)
    servers.append(server)
    server_context = server.server.socket.context  # type: ignore[attr-defined]
    assert server_context.minimum_version >= ssl.TLSVersion.TLSv1_2
    client = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=30, context=client) as r:
        assert b"fleetattest_build_info" in r.read()
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext gets nothing
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30)
    with urllib.request.urlopen(url, timeout=30, context=client) as r:  # and kills nothing
        assert r.status == 200


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0))],
)
def test_listen_addresses_parse(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:", ":9464", "127.0.0.1:99999", "h:x"])
def test_malformed_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(MetricsListenRefused):
        parse_listen(listen)


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.8.9.10")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("localhost.evil.example")


def test_a_bad_address_is_refused_before_anything_binds() -> None:
    with pytest.raises(MetricsListenRefused, match="loopback"):
        check_listen("0.0.0.0:9464")
    assert check_listen("0.0.0.0:9464", allow_plaintext=True) == ("0.0.0.0", 9464)
