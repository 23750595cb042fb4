"""Command line for relying parties and key custody.

    attest-verifier verdict check DEVICE --max-age 10m --verifier HOST:PORT --ca CA \
        --cert RP.pem --key RP.key [--jwks FILE]
    attest-verifier verdict check DEVICE --max-age 10m --db DB [--golden DIR]
    attest-verifier keys export-jwks --keys DIR FILE
    attest-verifier keys rotate --keys DIR --overlap 2h

``verdict check`` exits 0 only for a current (``verifier.currency``), affirming verdict no older
than ``--max-age``, and prints why not otherwise (exit 1). On the store (``--db``) it decides
with the store's revocations and the golden set of ``--golden DIR``; without ``--golden`` it
cannot know whether the release was revoked and says so (exit 1). Over gRPC (the caller port,
mutual TLS with a relying-party certificate, or the operator socket) it asks for a token bound
to a fresh relying-party nonce and verifies it offline: against the keys pinned with ``--jwks``
(the file ``keys export-jwks`` writes), or, without ``--jwks``, the verifier's own JWKS fetched
on the same connection, and only when that connection is TLS that authenticated the verifier
against ``--ca``. Anything else (the operator socket, whose server nothing authenticates) is
refused before anything is fetched, exit 2: keys fetched from an unauthenticated peer prove
nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import time
from pathlib import Path

import grpc

from fleetattest.v1 import fleetattest_pb2 as pb
from fleetattest.v1 import fleetattest_pb2_grpc as pb_grpc
from verifier.cli.common import UsageError, read_store
from verifier.cli.connect import connect, error_text, is_authenticated_tls
from verifier.cli.judge import LocalJudge, add_golden_flag
from verifier.store import resolve_device
from verifier.token.errors import TokenError
from verifier.token.keys import KeyRing
from verifier.token.verify import PinnedKeys, verify_token
from verifier.verdict import Status

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds (argparse type)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 2h or 1d")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def register_verdict_check(
    verdict_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    check = verdict_sub.add_parser(
        "check", help="exit 0 only for a fresh affirming verdict (for update servers)"
    )
    check.add_argument("device", metavar="DEVICE", help="device id or unique prefix")
    check.add_argument("--max-age", type=duration, required=True, help="e.g. 10m")
    check.add_argument(
        "--verifier",
        help="HOST:PORT of the verifier's caller port, or unix:PATH (token checked offline)",
    )
    check.add_argument("--ca", type=Path, help="the verifier's CA bundle (PEM) to pin")
    check.add_argument("--cert", type=Path, help="relying-party client certificate (PEM)")
    check.add_argument("--key", type=Path, help="its private key (PEM)")
    check.add_argument("--db", help="read the store directly (SQLite file or postgresql:// URL)")
    check.add_argument("--jwks", type=Path, help="pinned verifier keys (keys export-jwks)")
    check.add_argument(
        "--issuer", default="fleet-attest", help="expected iss (default %(default)s)"
    )
    add_golden_flag(check)
    check.set_defaults(func=cmd_verdict_check)


def register_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="the token signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    export = ksub.add_parser("export-jwks", help="write the public keys as a JWKS file")
    export.add_argument("--keys", type=Path, required=True, help="key directory")
    export.add_argument("output", type=Path)
    export.set_defaults(func=cmd_export_jwks)
    rotate = ksub.add_parser("rotate", help="new signing key; the old one verifies until overlap")
    rotate.add_argument("--keys", type=Path, required=True, help="key directory")
    rotate.add_argument("--overlap", type=duration, default=duration("2h"), help="default 2h")
    rotate.set_defaults(func=cmd_rotate)


def cmd_export_jwks(ns: argparse.Namespace) -> int:
    ring = KeyRing.open_existing(ns.keys, time.time())
    ring.export_jwks(ns.output, time.time())
    print(f"wrote {len(ring.jwks(time.time())['keys'])} public keys to {ns.output}")
    return 0


def cmd_rotate(ns: argparse.Namespace) -> int:
    ring = KeyRing.open_existing(ns.keys, time.time())
    old = ring.signing_key.kid
    new = ring.rotate(time.time(), ns.overlap)
    print(f"signing with {new.kid}; {old} verifies for {ns.overlap:.0f} s more")
    return 0


def cmd_verdict_check(ns: argparse.Namespace) -> int:
    if (ns.verifier is None) == (ns.db is None):
        raise UsageError("give one of --verifier and --db")
    if ns.verifier is not None and ns.jwks is None and not is_authenticated_tls(ns):
        raise UsageError(
            "refusing to trust token keys fetched from an unauthenticated verifier: pin them "
            "with --jwks FILE (keys export-jwks), or fetch them over TLS with --ca"
        )
    problems = _check_remote(ns) if ns.verifier else _check_local(ns)
    if problems:
        print(f"NOT TRUSTED: {ns.device}")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    return 0


def _check_local(ns: argparse.Namespace) -> list[str]:
    with read_store(ns.db) as store:
        judge = LocalJudge(store, ns.golden)
        ns.device = resolve_device(store, ns.device)
        device = store.get_device(ns.device)
        verdict = store.latest_verdict(ns.device)
    if verdict is None:
        return ["no verdict for this device"]
    now = judge.now
    current = judge.currency(verdict, device, verdict.boot_epoch)
    problems = []
    if not current.current:
        problems.append(f"verdict is {current.state.value}: {current.why}")
    if verdict.status is not Status.AFFIRMING:
        problems.append(f"verdict is {verdict.status.value}")
        problems += [f"{r.code}: {r.text}" for r in verdict.reasons]
    age = now - verdict.issued_at
    if age > ns.max_age:
        problems.append(f"verdict is {age:.0f} s old; --max-age is {ns.max_age:.0f} s")
    if not problems:
        print(f"TRUSTED: {ns.device} affirming, release {verdict.release}, {age:.0f} s old")
    return problems


def _check_remote(ns: argparse.Namespace) -> list[str]:
    nonce = secrets.token_bytes(16)
    try:
        with connect(ns) as ch:
            stub = pb_grpc.RelyingPartyStub(ch)
            reply = stub.GetVerdict(pb.GetVerdictRequest(device_id=ns.device, nonce=nonce))
            jwks = None if ns.jwks else json.loads(stub.GetJwks(pb.GetJwksRequest()).jwks_json)
    except grpc.RpcError as exc:
        return [error_text(ns.verifier, exc)]
    if not reply.verdict.token:
        freshness = pb.Freshness.Name(reply.verdict.freshness).removeprefix("FRESHNESS_")
        return [f"no token: the verdict can no longer be valid ({freshness.lower()})"]
    keys = PinnedKeys.load(ns.jwks) if ns.jwks else PinnedKeys.from_jwks(jwks or {})
    now = time.time()
    try:
        claims = verify_token(
            reply.verdict.token,
            keys,
            issuer=ns.issuer,
            audience=None,
            subject=ns.device,
            now=now,
            nonce=nonce,
            require_status=None,
        )
    except TokenError as exc:
        return [f"token refused: {type(exc).__name__}: {exc}"]
    problems = []
    if claims.status is not Status.AFFIRMING:
        problems.append(f"verdict is {claims.status.value}")
        problems += [f"{r.code}: {r.text}" for r in claims.reasons]
    age = now - claims.appraised_at
    if age > ns.max_age:
        problems.append(f"verdict is {age:.0f} s old; --max-age is {ns.max_age:.0f} s")
    if not problems:
        pinned = "pinned keys" if ns.jwks else "keys fetched over TLS from the verifier"
        print(
            f"TRUSTED: {ns.device} affirming, release {claims.release}, {age:.0f} s old "
            f"(token verified offline with {pinned})"
        )
    return problems
