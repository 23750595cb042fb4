"""Verdicts: the attestation result the verifier records and serves.

Names follow the IETF RATS attestation-result drafts: a verdict is ``affirming``, ``warning``
or ``contraindicated``. A verdict carries every reason found, each machine readable. A verdict
past ``expires_at`` means "unknown", never "trusted"; whether a verdict is current is
decided in one place, ``verifier.currency``.
Times are POSIX seconds (float) everywhere in the core; the clock is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

SUPERSEDED_AT = "superseded_at"  # extra key of a supersession event: when it was written


class Status(enum.Enum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.AFFIRMING: 0, Status.WARNING: 1, Status.CONTRAINDICATED: 2}


class Freshness(enum.Enum):
    FRESH = "fresh"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    UNKNOWN = "unknown"  # the reader cannot know the golden set or the revocations


@dataclass(frozen=True)
class Reason:
    """One finding. ``code`` is stable and machine readable; ``text`` is for people."""

    code: str
    text: str
    severity: Status = Status.CONTRAINDICATED
    pcr: int | None = None
    expected: str = ""
    actual: str = ""
    release: str = ""
    rule: str = ""
    event_index: int | None = None


def worst(reasons: Iterable[Reason]) -> Status:
    """The status a set of reasons leads to: the most severe one, affirming when empty."""
    status = Status.AFFIRMING
    for reason in reasons:
        if reason.severity.rank > status.rank:
            status = reason.severity
    return status


@dataclass(frozen=True)
class BootEpoch:
    reset_count: int
    restart_count: int


@dataclass(frozen=True)
class Verdict:
    device_id: str
    status: Status
    reasons: tuple[Reason, ...]
    profile: str
    release: str
    golden_digest: str
    boot_epoch: BootEpoch
    issued_at: float
    expires_at: float
    firmware_version: int = 0
    clock: int = 0
    safe: bool = True
    verdict_id: str = ""
    sequence: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    # Non-empty only on a stream event: this verdict stopped being current, and why. The
    # event repeats the superseded verdict (same ``verdict_id``) under a new ``sequence``.
    supersession: str = ""
