"""``golden import-keylime`` and ``golden learn --ima-log``: sections that load, warnings shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from imadevice import Device

from verifier.cli import main
from verifier.golden.load import load_golden_dir
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


PROFILE_HEAD = """\
profile: imported
match: {model: imported}
verdict_lifetime: 1h
pcrs: [0, 7]
releases:
  - name: r1
    pcrs:
      0: "%s"
""" % ("00" * 32)


def big_keylime_policy(tmp_path: Path, count: int) -> Path:
    digests = {f"/usr/lib/pkg {i}/lib{i}.so": [f"{i:064x}"] for i in range(count)}
    digests["relative-name"] = ["ab" * 32]
    policy = {
        "meta": {"version": 1, "generator": 3},
        "digests": digests,
        "excludes": ["/tmp/"],
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


def test_a_keylime_policy_too_big_for_a_golden_file_is_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = big_keylime_policy(tmp_path, 12_000)  # ~1.1 MiB of YAML
    assert main(["golden", "import-keylime", str(path), "--output", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "more than a golden file may hold (1048576): give --digests-file FILE" in err
    assert not (tmp_path / "s").exists()


def test_keylime_import_writes_a_digests_file_the_loader_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = big_keylime_policy(tmp_path, 12_000)
    golden = tmp_path / "golden"
    golden.mkdir()
    argv = ["golden", "import-keylime", str(path), "--digests-file", str(golden / "kl.sums")]
    assert main([*argv, "--output", str(tmp_path / "section.yaml")]) == 0
    _, err = capsys.readouterr()
    assert "wrote 12000 digests to" in err
    assert "note: 1 paths a digests file cannot hold" in err  # kept inline
    section_text = (tmp_path / "section.yaml").read_text()
    section = yaml.safe_load(section_text)["runtime"]
    assert section["digests_file"] == "kl.sums"
    assert section["digests"] == {"relative-name": ["ab" * 32]}
    (golden / "imported.yaml").write_text(PROFILE_HEAD + section_text)
    (profile,) = load_golden_dir(golden).profiles
    assert profile.runtime is not None
    assert profile.runtime.digests["/usr/lib/pkg 7/lib7.so"] == (bytes.fromhex(f"{7:064x}"),)
    assert len(profile.runtime.digests) == 12_001
    assert main([*argv, "--output", str(tmp_path / "again.yaml")]) == 2  # never overwritten
    assert not (tmp_path / "again.yaml").exists()


def test_learn_writes_a_digests_file_the_loader_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = Device()
    for name in ("/usr/bin/bash", "/usr/bin/ls"):
        device.run(name)
    (tmp_path / "list").write_bytes(device.log)
    golden = tmp_path / "golden"
    golden.mkdir()
    argv = ["golden", "learn", "--ima-log", str(tmp_path / "list")]
    assert main([*argv, "--digests-file", str(golden / "learned.sums")]) == 0
    out, _ = capsys.readouterr()
    assert "digests:" not in out and "digests_file: learned.sums" in out
    (golden / "imported.yaml").write_text(PROFILE_HEAD + out)
    (profile,) = load_golden_dir(golden).profiles
    assert profile.runtime is not None
    assert profile.runtime.evaluate(parse_binary(device.log).entries) == ()
    device.run("/usr/bin/miner")
    (reason,) = profile.runtime.evaluate(parse_binary(device.log).entries)
    assert "/usr/bin/miner" in reason.text


def test_a_digests_file_option_without_a_runtime_section_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["golden", "learn", "--event-log", "x", "--pcrs", "y", "--digests-file", "z.sums"]
    assert main(argv) == 2
    assert "--digests-file goes with --ima-log" in capsys.readouterr().err
