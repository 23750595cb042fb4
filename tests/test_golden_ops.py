"""Operating golden measurements: learn, explain and dry run, as functions and as commands.

Evidence comes from the simulator's firmware (``simulator.firmware.boot``): a real TCG log and
the PCR values that log extends, exactly what a verified quote proves. The golden set is the
repository's ``golden_measurements/`` (generated independently by ``simulator.goldengen``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from simulator.firmware import FirmwareProfile, boot
from simulator.profiles import GOOD_A, GOOD_B, INIT_SH, RETIRED, TAMPERED_BOOTLOADER
from verifier.cli import main
from verifier.errors import PolicyViolation
from verifier.eventlog import BootFacts
from verifier.golden.evaluate import release_reasons
from verifier.golden.evidence_policy import appraise_profile_log
from verifier.golden.learn import learn_release
from verifier.golden.load import load_golden_dir, load_golden_texts
from verifier.golden.model import GoldenSet, Profile
from verifier.golden.whatif import dry_run, evaluate_evidence, explain
from verifier.store.base import DeviceRecord, StoredEvidence
from verifier.store.sqlite import SqliteStore
from verifier.verdict import Status

ROOT = Path(__file__).parent.parent
GOLDEN_DIR = ROOT / "golden_measurements"
SIM_YAML = (GOLDEN_DIR / "sim-gateway.yaml").read_text()
NOW = 1_800_000_000.0  # 2027-01-15: fw-1.0.0 and fw-1.1.0 live, fw-0.9.0 retired
LABELS = {"model": "sim-gateway"}
SELECTION = (0, 4, 7, 8, 9)
PROFILE_HEAD = """profile: learned
match: {model: sim-gateway}
verdict_lifetime: 1h
bank: sha256
pcrs: [0, 4, 7, 8, 9]
releases:
"""


def evidence(
    firmware: FirmwareProfile, device_id: str = "dev-1", bank: str = "sha256"
) -> StoredEvidence:
    record = boot(firmware, lambda _pcr, _digests: None, (bank,))
    return StoredEvidence(device_id, NOW - 60, bank, record.expected_pcrs[bank], record.log, LABELS)


@pytest.fixture(scope="module")
def golden() -> GoldenSet:
    return load_golden_dir(GOLDEN_DIR)


def learned_set(firmware: FirmwareProfile, name: str = "learned-1") -> GoldenSet:
    record = boot(firmware, lambda _pcr, _digests: None)
    text = learn_release(record.log, record.expected_pcrs["sha256"], "sha256", name, SELECTION)
    return load_golden_texts({"learned.yaml": PROFILE_HEAD + text})


# ------------------------------------------------------------------ learn


def test_learned_release_affirms_its_boot_and_rejects_tampered_boots() -> None:
    golden = learned_set(GOOD_A)
    good = evaluate_evidence(evidence(GOOD_A), golden, NOW)
    assert (good.status, good.profile, good.release, good.reasons) == (
        Status.AFFIRMING,
        "learned",
        "learned-1",
        (),
    )
    tampered = evaluate_evidence(evidence(TAMPERED_BOOTLOADER), golden, NOW)
    assert tampered.status is Status.CONTRAINDICATED
    assert tampered.first_rule == "boot_chain"
    init_sh = evaluate_evidence(evidence(INIT_SH), golden, NOW)
    assert init_sh.status is Status.CONTRAINDICATED
    assert init_sh.first_rule == "kernel_cmdline"
    other_release = evaluate_evidence(evidence(GOOD_B), golden, NOW)
    assert other_release.status is Status.CONTRAINDICATED


def test_learned_release_equals_the_independently_generated_golden_release(
    golden: GoldenSet,
) -> None:
    learned = learned_set(GOOD_A, "fw-1.0.0").profiles[0].releases[0]
    profile = golden.profile("sim-gateway")
    assert profile is not None
    generated = profile.release("fw-1.0.0")
    assert generated is not None
    assert learned.pcrs == generated.pcrs  # PCR 9 only: the others are covered by rules
    assert learned.events == generated.events


def test_learned_text_names_each_component_in_comments() -> None:
    record = boot(GOOD_A, lambda _pcr, _digests: None)
    text = learn_release(record.log, record.expected_pcrs["sha256"], "sha256", "x", SELECTION)
    for expected in (
        "firmware version (EV_S_CRTM_VERSION",
        "firmware volume PEIFV",
        "boot application 1: \\EFI\\fleet\\shimx64.efi",
        "boot application 2: \\EFI\\fleet\\grubx64.efi",
        "kernel command line as measured",
        "Secure Boot on",
        "db certificate 1 of 2",
        "dbx entry 2 of 2",
        "/vmlinuz-6.1.0, /initrd.img-6.1.0",
    ):
        assert expected in text
    assert text.startswith("  # Candidate release")
    assert "\n  - name: " in text


def test_learning_a_log_that_does_not_replay_to_the_pcrs_is_refused() -> None:
    good = boot(GOOD_A, lambda _pcr, _digests: None)
    tampered = boot(TAMPERED_BOOTLOADER, lambda _pcr, _digests: None)
    with pytest.raises(PolicyViolation, match=r"eventlog_replay_mismatch.*PCR 4"):
        learn_release(tampered.log, good.expected_pcrs["sha256"], "sha256", "x", SELECTION)


def test_learning_with_a_selected_pcr_missing_is_refused() -> None:
    record = boot(GOOD_A, lambda _pcr, _digests: None)
    with pytest.raises(PolicyViolation, match="PCR 12 is selected"):
        learn_release(record.log, record.expected_pcrs["sha256"], "sha256", "x", (4, 12))


def test_learning_without_an_event_log_is_refused() -> None:
    record = boot(GOOD_A, lambda _pcr, _digests: None)
    with pytest.raises(PolicyViolation, match="no event log"):
        learn_release(b"", record.expected_pcrs["sha256"], "sha256", "x", SELECTION)


def test_logged_names_cannot_inject_yaml_into_the_learned_release() -> None:
    # A log's strings end up in comments: a newline there must not start a new YAML key.
    evil = replace(
        GOOD_A,
        initrd=replace(GOOD_A.initrd, path="/initrd\n    revoked: true\n  - name: evil"),
        kernel_args='root=/dev/sda1 ro quiet msg="a\\b # c"',
    )
    golden = learned_set(evil)
    (release,) = golden.profiles[0].releases
    assert not release.revoked
    assert release.events.kernel_cmdline is not None
    assert release.events.kernel_cmdline.exact == evil.measured_cmdline
    assert evaluate_evidence(evidence(evil), golden, NOW).status is Status.AFFIRMING


# ------------------------------------------------------------------ evaluate


def test_evaluate_evidence_against_the_simulator_golden_set(golden: GoldenSet) -> None:
    results = {
        fw.name: evaluate_evidence(evidence(fw), golden, NOW)
        for fw in (GOOD_A, GOOD_B, RETIRED, TAMPERED_BOOTLOADER, INIT_SH)
    }
    assert (results["good-a"].status, results["good-a"].release) == (Status.AFFIRMING, "fw-1.0.0")
    assert (results["good-b"].status, results["good-b"].release) == (Status.AFFIRMING, "fw-1.1.0")
    assert (results["retired"].status, results["retired"].first_rule) == (
        Status.CONTRAINDICATED,
        "not_after",
    )
    assert results["tampered-bootloader"].first_rule == "boot_chain"
    assert results["init-sh"].first_rule == "kernel_cmdline"


def test_evidence_of_a_device_no_profile_matches_is_contraindicated(golden: GoldenSet) -> None:
    stray = replace(evidence(GOOD_A), labels={"model": "toaster"})
    outcome = evaluate_evidence(stray, golden, NOW)
    assert (outcome.status, outcome.profile, outcome.first_rule) == (
        Status.CONTRAINDICATED,
        "",
        "no_profile",
    )


def test_evidence_in_another_bank_than_the_profile_is_not_judged_affirming(
    golden: GoldenSet,
) -> None:
    outcome = evaluate_evidence(evidence(GOOD_A, bank="sha384"), golden, NOW)
    assert outcome.status is Status.CONTRAINDICATED
    assert outcome.reasons[0].code == "evidence_bank_mismatch"


def test_stored_pcrs_that_disagree_with_the_log_are_contraindicated(golden: GoldenSet) -> None:
    good = evidence(GOOD_A)
    forged = replace(good, pcrs={**good.pcrs, 8: bytes(32)})
    outcome = evaluate_evidence(forged, golden, NOW)
    assert outcome.status is Status.CONTRAINDICATED
    assert "eventlog_replay_mismatch" in {r.code for r in outcome.reasons}


# ------------------------------------------------------------------ explain


def test_explain_lists_every_rule_with_expected_and_actual_for_a_tampered_device(
    golden: GoldenSet,
) -> None:
    found = explain(evidence(TAMPERED_BOOTLOADER), golden, NOW)
    profile = golden.profile("sim-gateway")
    assert profile is not None
    assert found.outcome.status is Status.CONTRAINDICATED
    for release in profile.releases:
        rules = [r for r in found.rules if r.release == release.name]
        ev = release.events
        count = len(release.pcrs) + 1 + 1 + len(ev.db_contains) + len(ev.dbx_contains) + 2 + 1
        assert len(rules) == count  # pcrs, scrtm, secure_boot, db, dbx, chain, cmdline, date
        tampered = evidence(TAMPERED_BOOTLOADER)
        failed_rules = {
            r.rule for r in release_reasons(release, tampered.pcrs, _facts(tampered, profile))
        }
        assert {r.rule for r in rules if not r.passed} == failed_rules | (
            {"not_after"} if release.name == "fw-0.9.0" else set()
        )
    by_rule = {(r.release, r.rule): r for r in found.rules}
    chain = by_rule[("fw-1.0.0", "boot_chain")]
    assert not chain.passed and chain.expected != chain.actual
    assert chain.actual.split(",")[1] == TAMPERED_BOOTLOADER.grub.digest().hex()
    assert chain.text.startswith("boot application 1 differs")
    scrtm = by_rule[("fw-1.0.0", "scrtm_versions")]
    assert (scrtm.passed, scrtm.expected, scrtm.actual) == (True, "FleetFW 1.0.0", "FleetFW 1.0.0")
    cmdline = by_rule[("fw-1.0.0", "kernel_cmdline")]
    assert cmdline.passed and cmdline.actual == GOOD_A.measured_cmdline
    pcr9 = by_rule[("fw-1.1.0", "pcrs.9")]
    assert not pcr9.passed and pcr9.actual == evidence(TAMPERED_BOOTLOADER).pcrs[9].hex()


def _facts(stored: StoredEvidence, profile: Profile) -> BootFacts | None:
    return appraise_profile_log(profile, stored.event_log, stored.bank, stored.pcrs).facts


def test_explain_without_an_event_log_fails_every_event_rule(golden: GoldenSet) -> None:
    found = explain(replace(evidence(GOOD_A), event_log=b""), golden, NOW)
    assert found.outcome.status is Status.CONTRAINDICATED
    assert "eventlog_missing" in {r.code for r in found.log_reasons}
    fw10 = [r for r in found.rules if r.release == "fw-1.0.0"]
    assert {r.rule for r in fw10 if r.passed} == {"pcrs.9", "not_after"}
    assert all(r.actual for r in fw10)


def test_explain_of_a_device_without_profile_has_no_rules(golden: GoldenSet) -> None:
    found = explain(replace(evidence(GOOD_A), labels={}), golden, NOW)
    assert found.rules == ()
    assert [r.code for r in found.log_reasons] == ["no_profile"]


# ------------------------------------------------------------------ dry run


def fleet() -> list[StoredEvidence]:
    good = [evidence(GOOD_A, f"good-{i}") for i in range(3)]
    return good + [evidence(INIT_SH, f"initsh-{i}") for i in range(2)]


def proposed_without_quiet() -> GoldenSet:
    text = SIM_YAML.replace(
        'exact: "/vmlinuz-6.1.0 root=/dev/sda1 ro quiet"',
        'exact: "/vmlinuz-6.1.0 root=/dev/sda1 ro"',
    )
    assert text != SIM_YAML
    return load_golden_texts({"sim-gateway.yaml": text})


def test_dry_run_reports_exactly_the_devices_a_cmdline_change_flips(golden: GoldenSet) -> None:
    report = dry_run(fleet(), golden, proposed_without_quiet(), NOW)
    assert [c.device_id for c in report.changes] == ["good-0", "good-1", "good-2"]
    assert report.summary() == [
        "3 devices: affirming -> contraindicated, rule kernel_cmdline",
        "2 devices unchanged",
    ]
    assert all(c.after.first_rule == "kernel_cmdline" for c in report.changes)


def test_dry_run_of_an_identical_set_changes_nothing(golden: GoldenSet) -> None:
    same = load_golden_texts({"sim-gateway.yaml": SIM_YAML})
    report = dry_run(fleet(), golden, same, NOW)
    assert report.changes == ()
    assert report.summary() == ["5 devices unchanged"]


def test_dry_run_reports_a_release_change_with_the_same_status(golden: GoldenSet) -> None:
    # Move good-a devices onto a copy of fw-1.0.0 listed first under a new name.
    text = SIM_YAML.replace("  - name: fw-1.0.0\n", "  - name: fw-1.0.0-copy\n", 1).replace(
        "upgrades_to: [fw-1.0.0]", "upgrades_to: [fw-1.0.0-copy]"
    )
    report = dry_run(
        [evidence(GOOD_A, "a"), evidence(GOOD_B, "b")],
        golden,
        load_golden_texts({"s.yaml": text}),
        NOW,
    )
    assert [c.device_id for c in report.changes] == ["a"]
    assert report.summary()[0] == "1 device: affirming -> affirming (matched release changes)"


# ------------------------------------------------------------------ commands


def make_store(path: Path, items: list[StoredEvidence]) -> Path:
    store = SqliteStore(path)
    try:
        for item in items:
            store.insert_device(
                DeviceRecord(
                    device_id=item.device_id,
                    ek_public=b"\x00\x01ek-" + item.device_id.encode(),
                    ek_certificate=b"",
                    ek_not_after=None,
                    ak_public=b"\x00\x01ak",
                    ak_name=b"\x00\x0b" + b"\xaa" * 32,
                    labels=dict(item.labels),
                    enrollment_count=1,
                    enrolled_at=NOW - 3600,
                )
            )
            store.put_evidence(item)
    finally:
        store.close()
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_learn_from_the_store_gives_a_release_that_affirms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_store(tmp_path / "v.db", [evidence(GOOD_A, "4f2a-device"), evidence(INIT_SH, "9c-x")])
    code, out, err = run(
        ["golden", "learn", "--db", str(db), "--device", "4f2a", "--select", "0,4,7,8,9"], capsys
    )
    assert (code, err) == (0, "")
    golden = load_golden_texts({"l.yaml": PROFILE_HEAD + out})
    assert evaluate_evidence(evidence(GOOD_A), golden, NOW).status is Status.AFFIRMING
    assert evaluate_evidence(evidence(INIT_SH), golden, NOW).status is Status.CONTRAINDICATED


def test_cli_learn_from_files_accepts_eventlog_replay_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = boot(GOOD_B, lambda _pcr, _digests: None)
    log = tmp_path / "boot.log"
    log.write_bytes(record.log)
    code, replayed, _ = run(["eventlog", "replay", str(log), "--json"], capsys)
    assert code == 0
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text(replayed)  # whole output: {"sha256": {...}}
    per_bank = tmp_path / "pcrs-bank.json"
    per_bank.write_text(json.dumps(json.loads(replayed)["sha256"]))
    out_file = tmp_path / "candidate.yaml"
    args = ["golden", "learn", "--event-log", str(log), "--bank", "sha256", "--name", "fw-b"]
    code, out, err = run([*args, "--pcrs", str(pcrs), "--output", str(out_file)], capsys)
    assert (code, err) == (0, "")
    assert "wrote candidate release 'fw-b'" in out
    code, out2, _ = run([*args, "--pcrs", str(per_bank)], capsys)
    assert code == 0 and out2 == out_file.read_text()
    head = PROFILE_HEAD.replace("pcrs: [0, 4, 7, 8, 9]", "pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
    golden = load_golden_texts({"l.yaml": head + out_file.read_text()})
    assert evaluate_evidence(evidence(GOOD_B), golden, NOW).release == "fw-b"


def test_cli_learn_errors_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = boot(GOOD_A, lambda _pcr, _digests: None)
    tampered = tmp_path / "tampered.log"
    tampered.write_bytes(boot(TAMPERED_BOOTLOADER, lambda _pcr, _digests: None).log)
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text(json.dumps({str(i): v.hex() for i, v in good.expected_pcrs["sha256"].items()}))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"0": "zz"}')
    existing = tmp_path / "exists.yaml"
    existing.write_text("keep me\n")
    db = make_store(tmp_path / "v.db", [evidence(GOOD_A, "dev-a"), evidence(GOOD_A, "dev-b")])
    cases = [
        (["--event-log", str(tampered), "--pcrs", str(pcrs)], "eventlog_replay_mismatch"),
        (["--event-log", str(tampered), "--pcrs", str(bad_json)], "PCR 0 is not hex"),
        (["--event-log", str(tampered)], "go together"),
        ([], "give either"),
        (["--db", str(db), "--device", "dev-"], "matches several devices: dev-a, dev-b"),
        (["--db", str(db), "--device", "nope"], "no enrolled device has an id starting with"),
        (["--db", str(tmp_path / "missing.db"), "--device", "x"], "no database at"),
        (["--db", str(db), "--device", "dev-a", "--output", str(existing)], "exists"),
    ]
    for extra, message in cases:
        code, _out, err = run(["golden", "learn", *extra], capsys)
        assert code == 2, extra
        assert message in err and err.count("\n") == 1, (extra, err)
    assert existing.read_text() == "keep me\n"
    assert not (tmp_path / "missing.db").exists()


def test_cli_explain_shows_pass_and_fail_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_store(
        tmp_path / "v.db", [evidence(TAMPERED_BOOTLOADER, "abc123"), evidence(GOOD_A, "b")]
    )
    code, out, err = run(
        ["golden", "explain", "abc", "--db", str(db), "--golden", str(GOLDEN_DIR)], capsys
    )
    assert (code, err) == (0, "")
    assert "status   contraindicated  release -" in out
    assert re.search(r"^RELEASE\s+RULE\s+RESULT\s+EXPECTED\s+ACTUAL$", out, re.M)
    assert re.search(r"^fw-1\.0\.0\s+boot_chain\s+FAIL\s+f987", out, re.M)
    assert re.search(
        r"^fw-1\.0\.0\s+scrtm_versions\s+PASS\s+FleetFW 1\.0\.0\s+FleetFW 1\.0\.0$", out, re.M
    )
    grub, evil_grub = GOOD_A.grub.digest().hex(), TAMPERED_BOOTLOADER.grub.digest().hex()
    assert re.search(rf"^\s+{grub}\s+{evil_grub}$", out, re.M)  # chain item 2, side by side
    assert re.search(r"^fw-1\.0\.0\s+not_after\s+PASS\s+until 2031-01-01T00:00:00Z", out, re.M)
    code, out, err = run(
        ["golden", "explain", "zzz", "--db", str(db), "--golden", str(GOLDEN_DIR)], capsys
    )
    assert (
        code == 2 and "no enrolled device has an id starting with" in err and err.count("\n") == 1
    )
    code, out, err = run(
        ["golden", "explain", "b", "--db", str(db), "--golden", str(tmp_path)], capsys
    )
    assert code == 2 and "invalid golden set" in err and err.count("\n") == 1


def test_cli_dry_run_prints_the_flips_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_store(tmp_path / "v.db", fleet())
    proposed = tmp_path / "proposed"
    proposed.mkdir()
    (proposed / "sim-gateway.yaml").write_text(
        SIM_YAML.replace('ro quiet"}\n  - name: fw-1.1.0', 'ro"}\n  - name: fw-1.1.0')
    )
    before = _snapshot(db)
    code, out, err = run(
        ["golden", "dry-run", str(proposed), "--db", str(db), "--golden", str(GOLDEN_DIR)], capsys
    )
    assert (code, err) == (0, "")
    assert "3 devices: affirming -> contraindicated, rule kernel_cmdline\n" in out
    assert "2 devices unchanged\n" in out
    changed = re.findall(r"^  (\S+): affirming \(fw-1\.0\.0\) -> contraindicated", out, re.M)
    assert changed == ["good-0", "good-1", "good-2"]
    assert _snapshot(db) == before


def test_cli_dry_run_of_an_invalid_directory_prints_problems_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = make_store(tmp_path / "v.db", fleet())
    proposed = tmp_path / "proposed"
    proposed.mkdir()
    (proposed / "sim-gateway.yaml").write_text(
        SIM_YAML.replace("kernel_cmdline: {exact", "kernel_cmdlin: {exact", 1)
    )
    before = _snapshot(db)
    code, out, err = run(
        ["golden", "dry-run", str(proposed), "--db", str(db), "--golden", str(GOLDEN_DIR)], capsys
    )
    assert (code, err) == (1, "")
    line = (
        SIM_YAML.splitlines().index(
            next(x for x in SIM_YAML.splitlines() if "kernel_cmdline: {exact" in x)
        )
        + 1
    )
    assert re.search(rf"sim-gateway\.yaml:{line}:5: .*kernel_cmdlin", out)
    assert "nothing evaluated" in out and "devices" not in out
    assert _snapshot(db) == before
    code, out, err = run(
        ["golden", "dry-run", str(tmp_path / "nope"), "--db", str(db), "--golden", str(GOLDEN_DIR)],
        capsys,
    )
    assert code == 2 and "not a readable directory" in err and err.count("\n") == 1


def _snapshot(db: Path) -> tuple[object, ...]:
    store = SqliteStore(db)
    try:
        items = sorted(store.all_latest_evidence(), key=lambda e: e.device_id)
        verdicts = [store.latest_verdict(e.device_id) for e in items]
        return (tuple(items), tuple(verdicts), tuple(store.list_devices()))
    finally:
        store.close()


def test_a_selection_the_stored_evidence_lacks_is_not_judged_affirming(
    golden: GoldenSet,
) -> None:
    grown = load_golden_texts(
        {"s.yaml": SIM_YAML.replace("pcrs: [0, 4, 7, 8, 9]", "pcrs: [0, 4, 7, 8, 9, 14]")}
    )
    outcome = evaluate_evidence(evidence(GOOD_A), grown, NOW)
    assert (outcome.status, outcome.release, outcome.first_rule) == (
        Status.WARNING,
        "fw-1.0.0",
        "pcrs",
    )
    assert outcome.reasons[-1].code == "evidence_incomplete"
    report = dry_run([evidence(GOOD_A)], golden, grown, NOW)
    assert report.summary()[0] == "1 device: affirming -> warning, rule pcrs"


def test_learning_a_log_whose_cmdline_text_was_edited_is_refused() -> None:
    # The digests (and so the replay) are untouched; only the logged text lies about the boot.
    record = boot(INIT_SH, lambda _pcr, _digests: None)
    measured = b"kernel_cmdline: " + INIT_SH.measured_cmdline.encode()
    assert record.log.count(measured) == 1
    edited = record.log.replace(measured, measured.replace(b"init=/bin/sh", b"init=/sbin/i"))
    with pytest.raises(PolicyViolation, match="event_digest_mismatch"):
        learn_release(edited, record.expected_pcrs["sha256"], "sha256", "x", SELECTION)


def test_a_learned_release_the_loader_would_refuse_is_never_returned() -> None:
    record = boot(GOOD_A, lambda _pcr, _digests: None)
    with pytest.raises(PolicyViolation, match=r"does not load.*name"):
        learn_release(record.log, record.expected_pcrs["sha256"], "sha256", "bad name!", SELECTION)
