"""What a golden set says about stored evidence: evaluate, explain, dry-run a proposed set.

Pure: stored evidence (the latest PCR values a quote proved, the event log and the device's
labels), golden sets and ``now`` in; outcomes out. No store, no clock, nothing changes.

Evaluating one device's evidence against a set, in order:
1. The profile is the one the set picks for the device's labels; none: CONTRAINDICATED
   ``no_profile``.
2. The evidence must be in the profile's bank (``evidence_bank_mismatch`` otherwise) and a
   SHA-1 bank needs ``allow_sha1`` (``sha1_not_allowed``): the live verifier would refuse it.
3. Only the PCRs of the profile's selection are used, as a quote for that profile would
   carry; then ``evidence_policy.evaluate_boot`` (the event log, then the releases), exactly
   as the live appraisal does. Selected PCRs the stored evidence lacks (a selection that
   grew since the device last attested) add a WARNING ``evidence_incomplete``.
4. A profile with a ``runtime:`` section: the IMA entries the verifier holds for the device's
   current boot (``verifier.ima.held``, rebuilt from the attestation history by the caller,
   or an operator's list) are judged by the profile's runtime policy
   (``verifier.ima.reappraise``: ``RuntimePolicy.judge``, the live decision) and their
   reasons join the outcome's. Entries that are not held are never judged and never a pass:
   ``EvidenceOutcome.runtime`` says "runtime not re-evaluated" and why.
The quote itself (signature, nonce, boot counters) was checked when the evidence was
received; those checks are not repeated here, so an outcome is the policy's view only.

``explain`` lists every rule of every release of the profile with expected and actual
values; pass or fail comes from the same rule evaluation (``release_reasons``), never from a
second implementation. ``dry_run`` compares two sets device by device and groups the changes
by (status before, status after, first failing rule after); a device whose runtime entries
would be judged differently (other entries failing) changes too, and one whose runtime could
not be re-evaluated is listed as such, never counted as unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from verifier.eventlog import BootFacts
from verifier.golden.evaluate import release_reasons, retirement
from verifier.golden.evidence_policy import evaluate_boot
from verifier.golden.model import GoldenSet, Profile, Release
from verifier.ima.held import HeldEntries
from verifier.ima.reappraise import NOT_EVALUATED, RuntimeOutcome, not_evaluated, reappraise
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.records import StoredEvidence
from verifier.verdict import Reason, Status, worst

NOT_QUOTED = "(not quoted)"
NO_FACT = "(not in the verified log)"


@dataclass(frozen=True)
class EvidenceOutcome:
    device_id: str
    profile: str  # "" when no profile matches the device's labels
    release: str  # the matched release, "" when none
    status: Status
    reasons: tuple[Reason, ...]
    runtime: RuntimeOutcome | None = None  # None when the profile has no runtime section

    @property
    def runtime_keys(self) -> frozenset[tuple[int, str]]:
        """(entry, code) of every failing runtime entry; empty when none were judged."""
        return self.runtime.keys if self.runtime is not None else frozenset()

    @property
    def runtime_not_evaluated(self) -> bool:
        return self.runtime is not None and not self.runtime.evaluated

    @property
    def first_rule(self) -> str:
        """The rule (or, for log problems, the code) of the first non-affirming reason."""
        for reason in self.reasons:
            if reason.severity is not Status.AFFIRMING:
                return reason.rule or reason.code
        return ""


@dataclass(frozen=True)
class _Assessment:
    outcome: EvidenceOutcome
    profile: Profile | None
    pcrs: dict[int, bytes]
    facts: BootFacts | None


NOT_READ = "no IMA entries were read for this device"


def runtime_template_hash(evidence: StoredEvidence, *sets: GoldenSet) -> str | None:
    """The template hash algorithm to read the device's IMA entries with: that of the first
    of ``sets`` whose profile for the device has a runtime section; None when none has one
    (then no entries are needed)."""
    for golden in sets:
        profile = golden.profile_for(evidence.labels)
        if profile is not None and profile.runtime is not None:
            return profile.runtime.template_hash_alg
    return None


def evaluate_evidence(
    evidence: StoredEvidence,
    golden: GoldenSet,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
    held: HeldEntries | None = None,
) -> EvidenceOutcome:
    """The status ``golden`` gives the device's stored evidence (and ``held`` IMA entries)."""
    return _assess(evidence, golden, now, limits, held).outcome


def _assess(
    evidence: StoredEvidence,
    golden: GoldenSet,
    now: float,
    limits: Limits,
    held: HeldEntries | None = None,
) -> _Assessment:
    profile = golden.profile_for(evidence.labels)
    if profile is None:
        reason = Reason(
            code="no_profile",
            text=f"no profile of golden set {golden.digest} matches the device's labels "
            f"{_labels(evidence.labels)}",
            rule="no_profile",
        )
        return _Assessment(_outcome(evidence, "", "", (reason,)), None, {}, None)
    refused = _bank_reason(evidence, profile)
    if refused is not None:
        return _Assessment(_outcome(evidence, profile.name, "", (refused,)), None, {}, None)
    pcrs = {i: v for i, v in evidence.pcrs.items() if i in profile.pcrs}
    result = evaluate_boot(profile, evidence.event_log, evidence.bank, pcrs, now, limits)
    missing = [i for i in profile.pcrs if i not in pcrs]
    reasons = result.reasons + ((_incomplete(profile, missing),) if missing else ())
    runtime = None
    if profile.runtime is not None:
        runtime = reappraise(held, profile.runtime) if held else not_evaluated(NOT_READ, NOT_READ)
        reasons += runtime.reasons
    outcome = _outcome(evidence, profile.name, result.outcome.release, reasons, runtime)
    return _Assessment(outcome, profile, pcrs, result.facts)


def _outcome(
    evidence: StoredEvidence,
    profile: str,
    release: str,
    reasons: tuple[Reason, ...],
    runtime: RuntimeOutcome | None = None,
) -> EvidenceOutcome:
    return EvidenceOutcome(evidence.device_id, profile, release, worst(reasons), reasons, runtime)


def _bank_reason(evidence: StoredEvidence, profile: Profile) -> Reason | None:
    if evidence.bank != profile.bank:
        return Reason(
            code="evidence_bank_mismatch",
            text=f"the stored evidence is in the {evidence.bank} bank; profile {profile.name} "
            f"quotes {profile.bank} (the device must attest again to be judged)",
            expected=profile.bank,
            actual=evidence.bank,
            rule="bank",
        )
    if evidence.bank == "sha1" and not profile.allow_sha1:
        return Reason(
            code="sha1_not_allowed",
            text=f"profile {profile.name} does not allow the SHA-1 bank (set allow_sha1)",
            rule="allow_sha1",
        )
    return None


def _incomplete(profile: Profile, missing: list[int]) -> Reason:
    shown = ",".join(str(i) for i in missing)
    return Reason(
        code="evidence_incomplete",
        text=f"the stored evidence has no value for PCRs {shown} of profile {profile.name}'s "
        "selection; the device must attest again before the profile can be fully judged",
        severity=Status.WARNING,
        expected=",".join(str(i) for i in profile.pcrs),
        actual=",".join(str(i) for i in profile.pcrs if i not in missing),
        rule="pcrs",
    )


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


# --- explain --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOutcome:
    release: str
    rule: str  # as Reason.rule names it: "pcrs.9", "kernel_cmdline", "db_contains", ...
    passed: bool
    expected: str
    actual: str
    text: str = ""  # why it failed (the reason's text); empty when it passed


@dataclass(frozen=True)
class Explanation:
    outcome: EvidenceOutcome
    rules: tuple[RuleOutcome, ...]

    @property
    def log_reasons(self) -> tuple[Reason, ...]:
        """Reasons that belong to no release rule (event log problems, no profile, bank);
        runtime reasons are in ``runtime``."""
        runtime = set(self.outcome.runtime.reasons) if self.outcome.runtime else set()
        return tuple(
            r
            for r in self.outcome.reasons
            if not r.release and r.rule != "releases" and r not in runtime
        )

    @property
    def runtime(self) -> RuntimeOutcome | None:
        return self.outcome.runtime


def explain(
    evidence: StoredEvidence,
    golden: GoldenSet,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
    held: HeldEntries | None = None,
) -> Explanation:
    """Every rule of every release of the device's profile: passed or failed, with values;
    with a runtime section, ``outcome.runtime`` judges the ``held`` IMA entries."""
    assessment = _assess(evidence, golden, now, limits, held)
    if assessment.profile is None:  # no profile, or evidence the profile cannot judge
        return Explanation(assessment.outcome, ())
    rules = [
        rule
        for release in assessment.profile.releases
        for rule in _release_rules(release, assessment.pcrs, assessment.facts, now)
    ]
    return Explanation(assessment.outcome, tuple(rules))


def _release_rules(
    release: Release, pcrs: Mapping[int, bytes], facts: BootFacts | None, now: float
) -> list[RuleOutcome]:
    failed = release_reasons(release, pcrs, facts)
    no_facts = next((r for r in failed if r.rule == "events"), None)
    rules = [
        _judge(release.name, rule, expected, actual, failed, no_facts, key)
        for rule, expected, actual, key in _rule_values(release, pcrs, facts)
    ]
    retired = retirement(release, now)
    if release.revoked or release.not_after is not None:
        until = f"until {_iso(release.not_after)}" if release.not_after is not None else ""
        rules.append(
            RuleOutcome(
                release.name,
                "revoked" if release.revoked else "not_after",
                retired is None,
                "not revoked" if release.revoked else until,
                "revoked" if release.revoked else f"now {_iso(now)}",
                retired.text if retired is not None else "",
            )
        )
    return rules


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _judge(
    release: str,
    rule: str,
    expected: str,
    actual: str,
    failed: list[Reason],
    no_facts: Reason | None,
    key: str,
) -> RuleOutcome:
    """Failed when ``release_reasons`` gave a reason for this rule (and this item of it)."""
    if no_facts is not None and not rule.startswith("pcrs."):
        return RuleOutcome(release, rule, False, expected, actual, no_facts.text)
    reason = next((r for r in failed if r.rule == rule and (not key or r.expected == key)), None)
    return RuleOutcome(
        release, rule, reason is None, expected, actual, reason.text if reason else ""
    )


def _rule_values(
    release: Release, pcrs: Mapping[int, bytes], facts: BootFacts | None
) -> list[tuple[str, str, str, str]]:
    """(rule, expected, actual, key) per rule; ``key`` tells items of db/dbx rules apart."""
    values = [
        (f"pcrs.{i}", v.hex(), pcrs[i].hex() if i in pcrs else NOT_QUOTED, "")
        for i, v in sorted(release.pcrs.items())
    ]
    rules = release.events
    if rules.scrtm_versions:
        actual = facts.scrtm_version if facts and facts.scrtm_version is not None else NO_FACT
        values.append(("scrtm_versions", " | ".join(rules.scrtm_versions), actual, ""))
    if rules.secure_boot is not None:
        state = facts.secure_boot if facts else None
        actual = NO_FACT if state is None else str(state).lower()
        values.append(("secure_boot", str(rules.secure_boot).lower(), actual, ""))
    for fingerprint in rules.db_contains:
        actual = _db_actual(facts, fingerprint)
        values.append(("db_contains", fingerprint.hex(), actual, fingerprint.hex()))
    for digest in rules.dbx_contains:
        values.append(("dbx_contains", digest.hex(), _dbx_actual(facts, digest), digest.hex()))
    if rules.boot_chain is not None:
        chain = ",".join(d.hex() for d in rules.boot_chain)
        actual = ",".join(a.digest.hex() for a in facts.boot_apps) if facts else NO_FACT
        values.append(("boot_chain", chain, actual, ""))
    if rules.kernel_cmdline is not None:
        rule = rules.kernel_cmdline
        pattern = rule.pattern.pattern if rule.pattern is not None else ""
        expected = rule.exact if rule.exact is not None else f"pattern {pattern}"
        cmdline = facts.kernel_cmdline if facts else None
        values.append(("kernel_cmdline", expected, cmdline if cmdline is not None else NO_FACT, ""))
    return values


def _db_actual(facts: BootFacts | None, fingerprint: bytes) -> str:
    db = facts.database("db") if facts else None
    if db is None:
        return NO_FACT
    found = "present" if fingerprint in db.content.certificates else "absent"
    return f"{found} ({len(db.content.certificates)} certificates in db)"


def _dbx_actual(facts: BootFacts | None, digest: bytes) -> str:
    dbx = facts.database("dbx") if facts else None
    if dbx is None:
        return NO_FACT
    present = dbx.content.has_hash(digest) or digest in dbx.content.certificates
    return f"{'present' if present else 'absent'} ({dbx.content.hash_count} hashes in dbx)"


# --- dry run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceChange:
    device_id: str
    before: EvidenceOutcome
    after: EvidenceOutcome

    @property
    def changed(self) -> bool:
        return (
            self.before.status is not self.after.status
            or self.before.release != self.after.release
            or self.before.runtime_keys != self.after.runtime_keys
        )

    @property
    def runtime_unknown(self) -> RuntimeOutcome | None:
        """The runtime outcome that could not be re-evaluated (the proposed set's first)."""
        for outcome in (self.after, self.before):
            if outcome.runtime is not None and not outcome.runtime.evaluated:
                return outcome.runtime
        return None

    def describe(self) -> str:
        text = (
            f"{self.device_id}: {_state(self.before)} -> {_state(self.after)}"
            f"{_rule_suffix(self.after.first_rule)}"
        )
        first = next((r for r in self.after.reasons if r.severity is not Status.AFFIRMING), None)
        return f"{text}: {first.text}" if first is not None else text


@dataclass(frozen=True)
class DryRunReport:
    current_digest: str
    proposed_digest: str
    devices: tuple[DeviceChange, ...]  # every device with stored evidence, in input order

    @property
    def changes(self) -> tuple[DeviceChange, ...]:
        return tuple(d for d in self.devices if d.changed)

    @property
    def not_reevaluated(self) -> tuple[DeviceChange, ...]:
        """Devices whose runtime entries could not be judged: never counted as unchanged."""
        return tuple(d for d in self.devices if d.runtime_unknown is not None)

    def summary(self) -> list[str]:
        """One line per (status before, status after, first failing rule after), largest
        first; then one per reason runtime was not re-evaluated; then the unchanged."""
        groups = Counter(
            (c.before.status.value, c.after.status.value, c.after.first_rule, _moved(c))
            for c in self.changes
        )
        ordered = sorted(groups.items(), key=lambda item: (-item[1], item[0]))
        lines = [
            f"{_devices(n)}: {before} -> {after}{_rule_suffix(rule)}{moved}"
            for (before, after, rule, moved), n in ordered
        ]
        unknown = Counter(d.runtime_unknown.kind for d in self.not_reevaluated if d.runtime_unknown)
        lines += [
            f"{_devices(n)}: {NOT_EVALUATED}: {kind}"
            for kind, n in sorted(unknown.items(), key=lambda item: (-item[1], item[0]))
        ]
        counted = {d.device_id for d in (*self.changes, *self.not_reevaluated)}
        unchanged = sum(1 for d in self.devices if d.device_id not in counted)
        lines.append(f"{_devices(unchanged)} unchanged")
        return lines


def dry_run(
    evidences: Sequence[StoredEvidence],
    current: GoldenSet,
    proposed: GoldenSet,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
    held: Mapping[str, HeldEntries] | None = None,
) -> DryRunReport:
    """Each device's outcome under ``current`` and under ``proposed``; nothing is changed.
    ``held``: the IMA entries held per device id (read with ``runtime_template_hash``)."""
    held = held or {}
    devices = tuple(
        DeviceChange(
            evidence.device_id,
            evaluate_evidence(evidence, current, now, limits, held.get(evidence.device_id)),
            evaluate_evidence(evidence, proposed, now, limits, held.get(evidence.device_id)),
        )
        for evidence in evidences
    )
    return DryRunReport(current.digest, proposed.digest, devices)


def _state(outcome: EvidenceOutcome) -> str:
    return f"{outcome.status.value} ({outcome.release or 'no release'})"


def _rule_suffix(rule: str) -> str:
    return f", rule {rule}" if rule else ""


def _moved(change: DeviceChange) -> str:
    """What changed when the status did not: the matched release, or the runtime findings."""
    if change.before.status is not change.after.status:
        return ""
    if change.before.release != change.after.release:
        return " (matched release changes)"
    return " (runtime findings change)"


def _devices(n: int) -> str:
    return f"{n} device{'s' if n != 1 else ''}"
