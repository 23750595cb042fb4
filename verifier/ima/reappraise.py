"""Held IMA entries judged again by a runtime policy: what explain and dry run show (pure).

``reappraise(held, policy)`` is a function of the entries and the policy only: each entry goes
through ``RuntimePolicy.judge``, the decision the live appraisal makes, so an outcome here is
the outcome the verifier would give those entries. Counted per deciding step
(``EntryOutcome``), with every failing entry kept as an ``EntryFailure`` (entry number,
path, template, expected, actual) and its ``Reason``, at most ``MAX_FINDINGS`` listed like the
live findings (the rest counted in one ``ima_findings_truncated`` reason).

Entries that are not held (``HeldEntries.missing``) are never judged: the outcome says
"runtime not re-evaluated" and why, and has no reasons, so nobody reads it as a pass.
A policy whose template hash algorithm is not the one the entries were parsed with would
refuse every list the device sends: that is one contraindicated ``ima_log_malformed``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from verifier.ima.appraise import MAX_FINDINGS, merge_findings
from verifier.ima.held import HeldEntries
from verifier.ima.parse import IMA_PCR
from verifier.ima.policy import EntryOutcome, RuntimePolicy
from verifier.verdict import Reason, Status

NOT_EVALUATED = "runtime not re-evaluated"


@dataclass(frozen=True)
class EntryFailure:
    number: int
    path: str
    template: str
    code: str
    severity: Status
    expected: str
    actual: str
    rule: str
    text: str


@dataclass(frozen=True)
class RuntimeOutcome:
    source: str  # where the entries came from
    not_evaluated: str = ""  # why they were not judged ("" when they were)
    kind: str = ""  # the short form of ``not_evaluated``, for grouping
    note: str = ""
    counts: dict[EntryOutcome, int] = field(default_factory=dict)
    failures: tuple[EntryFailure, ...] = ()  # at most MAX_FINDINGS, in entry order
    failing: int = 0  # entries with a reason, all of them
    reasons: tuple[Reason, ...] = ()  # what the outcome adds to the device's status
    keys: frozenset[tuple[int, str]] = frozenset()  # (entry, code) of every failing entry

    @property
    def evaluated(self) -> bool:
        return not self.not_evaluated

    @property
    def appraised(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """The one line: entries appraised and how each was decided, or why not."""
        if not self.evaluated:
            return f"{NOT_EVALUATED}: {self.not_evaluated}"
        c = self.counts
        violations = c.get(EntryOutcome.VIOLATION, 0)
        return (
            f"runtime: {self.appraised} entries appraised: "
            f"{c.get(EntryOutcome.ALLOWED, 0)} allowed by digest, "
            f"{c.get(EntryOutcome.EXCLUDED, 0)} excluded, "
            f"{c.get(EntryOutcome.SIGNED, 0)} signature-checked, "
            f"{c.get(EntryOutcome.UNKNOWN, 0)} unknown, "
            f"{violations} violation{'s' if violations != 1 else ''}, "
            f"{c.get(EntryOutcome.REJECTED, 0)} rejected"
        )


def not_evaluated(why: str, kind: str, source: str = "") -> RuntimeOutcome:
    return RuntimeOutcome(source, not_evaluated=why, kind=kind or why)


def reappraise(held: HeldEntries, policy: RuntimePolicy) -> RuntimeOutcome:
    """The policy's judgement of every held entry (see the module)."""
    if not held.complete:
        return not_evaluated(held.missing, held.kind, held.source)
    if held.template_hash_alg != policy.template_hash_alg:
        refused = Reason(
            code="ima_log_malformed",
            text=f"the held IMA lists carry {held.template_hash_alg} template hashes; this "
            f"policy reads {policy.template_hash_alg} ones, so every list would be refused",
            pcr=IMA_PCR,
            expected=policy.template_hash_alg,
            actual=held.template_hash_alg,
            rule="runtime.template_hash",
        )
        return RuntimeOutcome(
            held.source,
            note=held.note,
            reasons=(refused,),
            keys=frozenset({(-1, refused.code)}),
        )
    counts: Counter[EntryOutcome] = Counter()
    failures: list[EntryFailure] = []
    found: list[Reason] = []
    keys: set[tuple[int, str]] = set()
    for entry in held.entries:
        decided, reason = policy.judge(entry)
        counts[decided] += 1
        if reason is None:
            continue
        keys.add((entry.number, reason.code))
        found.append(reason)
        if len(failures) < MAX_FINDINGS:
            failures.append(
                EntryFailure(
                    entry.number,
                    entry.path,
                    entry.template,
                    reason.code,
                    reason.severity,
                    reason.expected,
                    reason.actual,
                    reason.rule,
                    reason.text,
                )
            )
    return RuntimeOutcome(
        held.source,
        note=held.note,
        counts=dict(counts),
        failures=tuple(failures),
        failing=len(found),
        reasons=merge_findings((), tuple(found)),
        keys=frozenset(keys),
    )
