"""``golden import-keylime`` and ``golden learn --ima-log``: sections that load, warnings shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from imadevice import Device

from verifier.cli import main
from verifier.ima.parse import parse_binary
from verifier.ima.section import parse_runtime_section

DATA = Path(__file__).parent / "data" / "ima"


def keylime_policy(tmp_path: Path, excludes: list[str]) -> Path:
    policy = {
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": {"/usr/bin/bash": ["11" * 32]},
        "excludes": excludes,
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {},
        "verification-keys": "",
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


def test_keylime_import_with_an_everything_exclude_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = keylime_policy(tmp_path, ["/var/log/.*", ".*"])
    assert main(["golden", "import-keylime", str(path)]) == 0
    out, err = capsys.readouterr()
    section = yaml.safe_load(out)["runtime"]
    assert section["digests"] == {"/usr/bin/bash": ["11" * 32]}
    assert "warning: excludes[1] '.*' matches every path" in err
    assert parse_runtime_section(section).warnings  # the loader warns about it too


def test_keylime_import_of_a_corpus_policy_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["golden", "import-keylime", str(DATA / "policy-sha256")]) == 0
    out, _ = capsys.readouterr()
    parse_runtime_section(yaml.safe_load(out)["runtime"])


def test_keylime_import_refuses_a_file_that_is_no_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"digests": {}}')
    assert main(["golden", "import-keylime", str(path)]) == 2
    assert "version 1" in capsys.readouterr().err


def test_learned_runtime_section_accepts_the_log_it_was_learned_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = Device()
    for name in ("/usr/bin/bash", "/usr/bin/ls", "/tmp/build/x"):
        device.run(name)
    (tmp_path / "list").write_bytes(device.log)
    argv = ["golden", "learn", "--ima-log", str(tmp_path / "list"), "--exclude", "/tmp/**"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    section = yaml.safe_load(out)["runtime"]
    assert set(section["digests"]) == {"/usr/bin/bash", "/usr/bin/ls"}
    policy = parse_runtime_section(section).policy
    assert policy.evaluate(parse_binary(device.log).entries) == ()
    device.run("/usr/bin/miner")
    (reason,) = policy.evaluate(parse_binary(device.log).entries)
    assert reason.code == "ima_unknown_entry" and "/usr/bin/miner" in reason.text


def test_learn_with_an_ima_log_and_a_release_source_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "list").write_bytes(Device().log)
    argv = ["golden", "learn", "--ima-log", str(tmp_path / "list"), "--db", "x.db"]
    assert main(argv) == 2
    assert "--ima-log" in capsys.readouterr().err
