"""A boot's IMA entries rebuilt from the attestation history, and judged again (pure).

The history is made by the live appraisal itself (``appraise_ima`` from each stored prior
state), so what ``held.rebuild`` must reproduce is exactly what a verifier accepted. Each test
is named after the history it is given; a history that cannot give every accepted entry must
say so, never return fewer entries as if they were all.
"""

from __future__ import annotations

from dataclasses import replace

from imadevice import Device

from verifier import errors
from verifier.ima import held, write
from verifier.ima.appraise import appraise_ima
from verifier.ima.held import BootHistory, Increment, operator_list, rebuild
from verifier.ima.incremental import IncrementalState
from verifier.ima.parse import parse_binary
from verifier.ima.policy import EntryOutcome, PathMatcher, PathPattern, RuntimePolicy
from verifier.ima.reappraise import reappraise
from verifier.verdict import Status

BOOT = "1:0"
POLICY = RuntimePolicy(digests={}, unknown=Status.WARNING, digest="policy-1")


class History:
    """A device attesting to a verifier, recording each attestation as the store would."""

    def __init__(self) -> None:
        self.device = Device()
        self.state: IncrementalState | None = None
        self.increments: list[Increment] = []

    def attest(self, offset: int | None = None, log: bytes | None = None) -> bool:
        """Send the entries from ``offset`` (default: past the accepted ones); True if accepted."""
        if offset is None:
            offset = self.state.entry_count if self.state else 0
        sent = self.device.since(offset) if log is None else log
        number = len(self.increments)
        self.increments.append(
            Increment(
                f"v{number}",
                float(number),
                BOOT,
                "sha256",
                dict(self.device.pcrs),
                sent,
                offset,
                self.state,
            )
        )
        try:
            result = appraise_ima(
                sent,
                offset,
                state=self.state,
                boot_id=BOOT,
                bank="sha256",
                quoted=self.device.quoted(),
                policy=POLICY,
            )
        except (errors.ReplayMismatch, errors.ImaLogError):
            return False
        self.state = result.state
        return True

    def boot(self, increments: list[Increment] | None = None, cut: str = "") -> BootHistory:
        chosen = self.increments if increments is None else increments
        return BootHistory(self.state, BOOT, tuple(chosen), cut, held.PURGED if cut else "")


def paths(entries: tuple[object, ...]) -> list[str]:
    return [e.path for e in entries]  # type: ignore[attr-defined]


def a_long_boot() -> History:
    history = History()
    history.device.run("/usr/bin/bash")
    assert history.attest()
    for round_number in range(3):
        history.device.run(f"/usr/bin/tool{round_number}")
        history.device.run("/usr/bin/ls")
        assert history.attest()
    return history


def test_rebuild_gives_the_whole_list_and_every_increment_after_it() -> None:
    history = a_long_boot()
    found = rebuild(history.boot(), "sha1")
    assert found.complete, found.missing
    assert found.entries == parse_binary(history.device.log).entries
    assert "attestation v0 and 3 increments" in found.source


def test_an_overlapping_increment_from_a_checkpoint_is_not_held_twice() -> None:
    history = a_long_boot()
    before = history.state
    assert before is not None and before.checkpoints
    checkpoint = before.checkpoints[0][0]
    history.device.run("/usr/bin/late")
    assert history.attest(offset=checkpoint)  # a retry that resends what was accepted
    found = rebuild(history.boot(), "sha1")
    assert found.complete and found.entries == parse_binary(history.device.log).entries


def test_a_whole_list_the_verifier_refused_is_not_taken_for_the_start_of_the_boot() -> None:
    history = a_long_boot()
    history.device.run("/usr/local/bin/miner")
    hidden = b"".join(history.device.raw[:-1])  # the miner removed, the TPM extended with it
    assert not history.attest(offset=0, log=hidden)
    assert history.attest()  # the honest increment, from the accepted count
    found = rebuild(history.boot(), "sha1")
    assert found.complete, found.missing
    assert paths(found.entries)[-1] == "/usr/local/bin/miner"
    assert "not accepted" in found.note


def test_an_attestation_missing_from_the_history_is_reported_not_papered_over() -> None:
    history = a_long_boot()
    gapped = [history.increments[0], *history.increments[2:]]
    found = rebuild(history.boot(gapped), "sha1")
    assert not found.complete and not found.entries
    assert found.kind == held.MISMATCH and "missing" in found.missing


def test_increments_whose_whole_list_was_purged_are_not_re_evaluated() -> None:
    history = a_long_boot()
    found = rebuild(history.boot(history.increments[1:], cut="purged: v0"), "sha1")
    assert (found.complete, found.kind, found.missing) == (False, held.PURGED, "purged: v0")
    found = rebuild(history.boot(history.increments[1:]), "sha1")
    assert found.kind == held.STATE_ONLY and "no whole IMA list" in found.missing


def test_only_the_running_state_holds_no_entries() -> None:
    history = a_long_boot()
    found = rebuild(history.boot([]), "sha1")
    assert found.kind == held.STATE_ONLY and not found.entries


def test_a_running_state_of_another_boot_holds_nothing_of_this_boot() -> None:
    history = a_long_boot()
    assert history.state is not None
    history.state = replace(history.state, boot_id="2:0")
    found = rebuild(history.boot(), "sha1")
    assert found.kind == held.NO_LIST and "2:0" in found.missing
    history.state = None
    assert rebuild(history.boot(), "sha1").kind == held.NO_LIST


def test_a_running_state_past_the_history_is_not_taken_for_it() -> None:
    history = a_long_boot()
    history.device.run("/usr/local/bin/miner")
    assert history.attest()
    found = rebuild(history.boot(history.increments[:-1]), "sha1")  # newest not in the history
    assert found.kind == held.MISMATCH and not found.entries


def test_lists_read_with_another_template_hash_are_unreadable_not_empty() -> None:
    history = a_long_boot()
    found = rebuild(history.boot(), "sha256")
    assert found.kind == held.UNREADABLE and not found.entries


def test_reappraise_counts_each_decision_and_names_each_failing_entry() -> None:
    device = Device()
    for path in ("/usr/bin/bash", "/tmp/x", "/usr/bin/ls"):
        device.run(path)
    device.run("/usr/bin/bash", version=1)  # another build of an allowed path
    device.append(write.file_entry("/usr/bin/bash", bytes(32), violation=True))
    entries = parse_binary(device.log).entries
    digests = {"/usr/bin/bash": (entries[1].digest,)}
    policy = RuntimePolicy(
        digests=digests, exclude=PathMatcher([PathPattern("glob", "/tmp/**")]), digest="p"
    )
    outcome = reappraise(operator_list(device.log, "sha1", "a file"), policy)
    assert outcome.counts == {
        EntryOutcome.BOOT_AGGREGATE: 1,
        EntryOutcome.ALLOWED: 1,
        EntryOutcome.EXCLUDED: 1,
        EntryOutcome.UNKNOWN: 1,
        EntryOutcome.REJECTED: 1,
        EntryOutcome.VIOLATION: 1,
    }
    assert [(f.number, f.path, f.template, f.code) for f in outcome.failures] == [
        (3, "/usr/bin/ls", "ima-ng", "ima_unknown_entry"),
        (4, "/usr/bin/bash", "ima-ng", "ima_digest_not_allowed"),
        (5, "/usr/bin/bash", "ima-ng", "ima_violation"),
    ]
    assert outcome.failures[1].expected == entries[1].digest.hex()
    assert outcome.failures[1].actual == f"sha256:{entries[4].digest.hex()}"
    assert outcome.summary() == (
        "runtime: 6 entries appraised: 1 allowed by digest, 1 excluded, 0 signature-checked, "
        "1 unknown, 1 violation, 1 rejected"
    )
    assert {r.code for r in outcome.reasons} == {
        "ima_unknown_entry",
        "ima_digest_not_allowed",
        "ima_violation",
    }


def test_entries_that_are_not_held_are_never_judged_a_pass() -> None:
    outcome = reappraise(held.not_held("purged", held.PURGED), POLICY)
    assert not outcome.evaluated and not outcome.reasons and not outcome.counts
    assert outcome.summary() == "runtime not re-evaluated: purged"


def test_a_policy_reading_another_template_hash_refuses_the_held_lists() -> None:
    history = a_long_boot()
    found = rebuild(history.boot(), "sha1")
    outcome = reappraise(found, replace(POLICY, template_hash_alg="sha256"))
    (reason,) = outcome.reasons
    assert reason.code == "ima_log_malformed" and reason.severity is Status.CONTRAINDICATED
