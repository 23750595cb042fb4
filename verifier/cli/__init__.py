"""``attest-verifier``: run the verifier and operate it. Every command's parsing and printing.

    attest-verifier serve --listen HOST:PORT --db DB --ek-ca DIR --golden DIR [--processes N]
                          --tls-cert PEM --tls-key PEM --client-ca PEM [--caller-listen HOST:PORT]
                          [--operator-socket PATH] | --insecure
    attest-verifier devices --db DB [--json]
    attest-verifier verdict show DEVICE --db DB [--history N] [--json]
    attest-verifier verdict check DEVICE --max-age 10m (--verifier ADDR [--jwks FILE] | --db DB)
    attest-verifier approve-ak DEVICE AK_NAME --db DB
    attest-verifier inventory {add,remove,list,import} ... --db DB
    attest-verifier approve-device DEVICE --profile P --db DB
    attest-verifier device {set-profile,history} DEVICE ... --db DB
    attest-verifier decommission DEVICE --reason R --db DB
    attest-verifier ek {deny,undeny} FINGERPRINT --reason R --db DB
    attest-verifier revoke-ak DEVICE AK_NAME --reason R --db DB
    attest-verifier revocations --db DB
    attest-verifier keys export-jwks --keys DIR FILE | keys rotate --keys DIR [--overlap 2h]
    attest-verifier eventlog {show,replay,facts} FILE [--json]
    attest-verifier golden {lint,learn,explain,dry-run} ...
    attest-verifier golden reload --verifier ADDR | status --verifier ADDR
    attest-verifier certs {init,issue,server} ...
    attest-verifier audit {init-key,verify,show,replay,proof,export,checkpoint} ...

Commands that reach a running verifier take ``--verifier HOST:PORT --ca --cert --key`` (the
caller port, mutual TLS) or ``--verifier unix:PATH`` (the operator socket).

One module per command group (``serve``, ``devices``, ``golden``, ``eventlog``, ``token``,
``operator``, ``lifecycle``, ``certs``, ``audit``); ``common`` holds what they share. No package
below ``verifier.cli`` imports it.
DB is a SQLite file or a postgresql:// URL. DEVICE may be a unique prefix of a device id.
Exit codes: 0 success, 1 a check failed, 2 the command could not run (see ``common``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from verifier import config
from verifier.cli import audit, certs, devices, golden, lifecycle, operator, serve, token
from verifier.cli import eventlog as eventlog_cli
from verifier.cli.common import add_common_flags, configure_logging, run

PROGRAM = "attest-verifier"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = config.parse_args(parser, argv)  # --config FILE first, then the flags over it
    configure_logging(ns.log_level, ns.log_format)
    return run(PROGRAM, ns.func, ns)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="fleet-attest: TPM 2.0 remote attestation verifier"
    )
    add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(sub)
    verdict = devices.register(sub)
    token.register_verdict_check(verdict)
    token.register_keys(sub)
    eventlog_cli.register(sub)
    golden_commands = golden.register(sub)
    operator.register(sub, golden_commands)
    certs.register(sub)
    lifecycle.register(sub)
    audit.register(sub)
    config.add_config_option(parser)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
