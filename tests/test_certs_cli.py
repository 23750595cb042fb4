"""``attest-verifier certs``: the files it writes, their modes, and that they serve together."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from verifier import cli
from verifier.tls.credentials import TlsFiles, load_tls_files
from verifier.tls.identity import Role, identity_from_certificate, trust_domain_of


def test_certs_init_prints_every_file_with_its_purpose_and_keeps_keys_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "pki"
    assert (
        cli.main(["certs", "init", str(d), "--name", "verifier.example", "--name", "10.0.0.5"]) == 0
    )
    out = capsys.readouterr().out
    names = ("ca", "verifier", "operator", "relying-party")
    for stem in names:
        for ext in (".pem", ".key"):
            assert str(d / f"{stem}{ext}") in out
            mode = (d / f"{stem}{ext}").stat().st_mode & 0o777
            assert mode == (0o600 if ext == ".key" else 0o644)
    server = x509.load_pem_x509_certificate((d / "verifier.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "verifier.example" in sans.get_values_for_type(x509.DNSName)
    load_tls_files(
        TlsFiles(d / "verifier.pem", d / "verifier.key", d / "ca.pem"), dt.datetime.now(dt.UTC)
    )


def test_certs_init_refuses_to_overwrite_an_existing_pki(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "pki"
    assert cli.main(["certs", "init", str(d)]) == 0
    before = (d / "ca.key").read_bytes()
    assert cli.main(["certs", "init", str(d)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (d / "ca.key").read_bytes() == before


def test_certs_issue_names_the_role_and_caller_in_the_spiffe_id(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert cli.main(["certs", "init", str(d), "--trust-domain", "fleet.example"]) == 0
    ca = ["--ca", str(d / "ca.pem"), "--ca-key", str(d / "ca.key")]
    argv = ["certs", "issue", *ca, "--role", "relying-party", "--name", "updates-eu"]
    assert cli.main([*argv, "--out", str(tmp_path / "callers")]) == 0
    cert = (tmp_path / "callers" / "updates-eu.pem").read_bytes()
    identity = identity_from_certificate(cert, trust_domain_of((d / "ca.pem").read_bytes()))
    assert (identity.role, identity.name) == (Role.RELYING_PARTY, "updates-eu")


def test_certs_server_makes_a_pair_that_serves_with_the_same_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "pki"
    assert cli.main(["certs", "init", str(d)]) == 0
    ca = ["--ca", str(d / "ca.pem"), "--ca-key", str(d / "ca.key")]
    assert (
        cli.main(["certs", "server", *ca, "--name", "v2.example", "--out", str(tmp_path / "n")])
        == 0
    )
    assert "systemctl reload" in capsys.readouterr().out
    n = tmp_path / "n"
    load_tls_files(
        TlsFiles(n / "verifier.pem", n / "verifier.key", d / "ca.pem"), dt.datetime.now(dt.UTC)
    )
