"""``attest-verifier certs``: the fleet's TLS certificates (``verifier.tls.pki``).

    attest-verifier certs init DIR --name verifier.example.internal [--name 10.0.0.5]
    attest-verifier certs issue --ca DIR/ca.pem --ca-key DIR/ca.key --role relying-party \\
        --name update-server-eu --out DIR
    attest-verifier certs server --ca DIR/ca.pem --ca-key DIR/ca.key \\
        --name verifier.example.internal --out DIR/next

``init`` makes the CA, the verifier's server certificate (the names given plus localhost,
127.0.0.1 and ::1) and one client certificate per role, and prints each file with what it is
for. ``issue`` signs a client certificate for one more caller (its role and name go in its
SPIFFE ID, ``spiffe://DOMAIN/fleet-attest/ROLE/NAME``). ``server`` signs a new verifier
certificate for rotation and prints how to put it in place without a restart. Nothing is
ever overwritten; private keys are written 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
from pathlib import Path

from verifier.cli.common import Subparsers
from verifier.tls import pki
from verifier.tls.identity import CERTIFICATE_ROLES, Role


def register(sub: Subparsers[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="make the fleet's TLS certificates")
    csub = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")

    init = csub.add_parser("init", help="a new CA, verifier certificate and client certificates")
    init.add_argument("directory", type=Path, metavar="DIR", help="new or empty directory")
    init.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="HOST",
        help="DNS name or IP address agents and callers use for the verifier (repeatable)",
    )
    init.add_argument(
        "--trust-domain",
        default=pki.DEFAULT_TRUST_DOMAIN,
        help="SPIFFE trust domain of the callers (default %(default)s)",
    )
    init.add_argument("--operator-name", default="operator", help="default %(default)s")
    init.add_argument("--relying-party-name", default="relying-party", help="default %(default)s")
    init.add_argument("--days", type=int, default=pki.LEAF_DAYS, help="leaf validity in days")
    init.set_defaults(func=cmd_init)

    issue = csub.add_parser("issue", help="a client certificate for one more caller")
    _ca_flags(issue)
    issue.add_argument("--role", required=True, choices=sorted(r.value for r in CERTIFICATE_ROLES))
    issue.add_argument("--name", required=True, help="the caller's name (files NAME.pem/.key)")
    issue.add_argument("--out", type=Path, required=True, help="directory for the files")
    issue.add_argument("--days", type=int, default=pki.LEAF_DAYS, help="validity in days")
    issue.set_defaults(func=cmd_issue)

    server = csub.add_parser("server", help="a new verifier certificate (rotation)")
    _ca_flags(server)
    server.add_argument(
        "--name", action="append", default=[], metavar="HOST", help="DNS name or IP (repeatable)"
    )
    server.add_argument("--out", type=Path, required=True, help="directory for the files")
    server.add_argument("--stem", default="verifier", help="file names STEM.pem/.key")
    server.add_argument("--days", type=int, default=pki.LEAF_DAYS, help="validity in days")
    server.set_defaults(func=cmd_server)


def _ca_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", type=Path, required=True, help="the CA certificate (ca.pem)")
    parser.add_argument("--ca-key", type=Path, required=True, help="its private key (ca.key)")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _print(files: list[pki.PkiFile]) -> None:
    width = max(len(str(f.path)) for f in files)
    for f in files:
        print(f"{str(f.path).ljust(width)}  {f.purpose}")


def cmd_init(ns: argparse.Namespace) -> int:
    files = pki.init_pki(
        ns.directory,
        verifier_names=ns.name,
        now=_now(),
        trust_domain=ns.trust_domain,
        operator_name=ns.operator_name,
        relying_party_name=ns.relying_party_name,
        leaf_days=ns.days,
    )
    _print(files)
    print(f"\ntrust domain {ns.trust_domain}; move ca.key off the verifier host once done.")
    return 0


def cmd_issue(ns: argparse.Namespace) -> int:
    files = pki.issue_client(
        ns.ca, ns.ca_key, role=Role(ns.role), name=ns.name, out=ns.out, now=_now(), days=ns.days
    )
    _print(files)
    return 0


def cmd_server(ns: argparse.Namespace) -> int:
    files = pki.issue_server(
        ns.ca, ns.ca_key, names=ns.name, stem=ns.stem, out=ns.out, now=_now(), days=ns.days
    )
    _print(files)
    cert, key = (shlex.quote(str(f.path)) for f in files)
    print(
        "\nto rotate without a restart, replace the served files (each rename is atomic; the "
        "verifier keeps the old pair until both match) and reload:\n"
        f"  mv {key} /etc/fleet-attest/tls/verifier.key && "
        f"mv {cert} /etc/fleet-attest/tls/verifier.pem && systemctl reload attest-verifier"
    )
    return 0
