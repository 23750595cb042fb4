"""``attest-verifier eventlog {show,replay,facts}``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from verifier.cli import eventlog as cli

DATA = Path(__file__).parent / "data" / "eventlogs"
SECUREBOOT = DATA / "keylime/binary_bios_measurements-secureboot"


def _own_parser_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="attest-verifier")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    ns = parser.parse_args(argv)
    result = ns.func(ns)
    assert isinstance(result, int)
    return result


def _verifier_main(argv: list[str]) -> int:
    verifier_cli = pytest.importorskip("verifier.cli")
    result = verifier_cli.main(argv)
    assert isinstance(result, int)
    return result


MAINS: list[Callable[[list[str]], int]] = [_own_parser_main, _verifier_main]


@pytest.fixture(params=MAINS, ids=["register", "attest-verifier"])
def main(request: pytest.FixtureRequest) -> Callable[[list[str]], int]:
    func: Callable[[list[str]], int] = request.param
    return func


def test_replay_json(main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "hirs/laptop_default_binary_bios_measurements"
    assert main(["eventlog", "replay", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"sha1", "sha256"}
    assert list(out["sha256"]) == ["0", "1", "2", "3", "4", "5", "6", "7", "14"]
    assert all(len(v) == 64 for v in out["sha256"].values())
    assert all(len(v) == 40 for v in out["sha1"].values())


def test_replay_json_reproduces_recorded_pcrs(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eventlog", "replay", str(DATA / "hirs/TpmLog.bin"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = (DATA / "hirs/TpmLogExpectedPcrs.txt").read_text().split()
    assert out["sha256"] == {str(i): expected[i] for i in range(8)}


@pytest.mark.parametrize(
    "rel", ["keylime/binary_bios_measurements-bogus", "tpm2-tss/sml-ima-sha1.bin", "missing"]
)
def test_replay_of_invalid_input_exits_2_with_one_line(
    rel: str, main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eventlog", "replay", str(DATA / rel), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("eventlog: ")


def test_show_lists_every_event(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eventlog", "show", str(SECUREBOOT)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 + 99
    assert "\\EFI\\redhat\\shimx64.efi" in out
    assert "'edk2-20240524-7.el9'" in out
    assert "SecureBoot (1 bytes)" in out


def test_facts_json(main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eventlog", "facts", str(SECUREBOOT), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["secure_boot"] is True
    assert out["scrtm_version"] == "edk2-20240524-7.el9"
    assert [a["path"] for a in out["boot_apps"]][:2] == [
        "\\EFI\\redhat\\shimx64.efi",
        "\\EFI\\redhat\\grubx64.efi",
    ]
    assert out["problems"] == []


def test_facts_json_reports_problems_and_honours_quirks(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(DATA / "tpm2-tools/event-arch-linux.bin")
    assert main(["eventlog", "facts", path, "--json"]) == 0
    strict = json.loads(capsys.readouterr().out)
    # PCR 8 holds old systemd-boot load options that cannot be bound to their digest.
    assert [p["code"] for p in strict["problems"]] == [
        "secureboot_variable_malformed",
        "unrecognised_event",
    ]
    assert main(["eventlog", "facts", path, "--json", "--quirk", "empty_secureboot_variable"]) == 0
    lenient = json.loads(capsys.readouterr().out)
    assert [p["code"] for p in lenient["problems"]] == ["unrecognised_event"]
    assert lenient["secure_boot"] is False
