"""The parsed form of golden measurements: frozen, checked when built by ``golden.load``.

One ``Profile`` per YAML file. A profile selects devices by enrollment labels, fixes the PCR
bank and selection to quote, the verdict lifetime, opt-in vendor quirks, and lists releases
that are acceptable at the same time. A release expects exact PCR values and/or event-level
facts (``EventRules``, evaluated against facts extracted from a verified event log).
A profile may also carry a runtime policy (``runtime:``, Linux IMA): then ``pcrs`` includes
0-10, and an attestation must send the IMA measurement list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.golden.pattern import LinearPattern
from verifier.ima.policy import RuntimePolicy

# Opt-in quirks of real firmware. Each is off unless a profile names it.
QUIRKS = frozenset(
    {
        "empty_secureboot_variable",  # SecureBoot variable measured with no data
        "shim_authority_without_owner",  # shim's EV_EFI_VARIABLE_AUTHORITY lacks the owner GUID
        "variable_digest_data_only",  # variable digests over VariableData, not the whole struct
        "missing_exit_boot_services",  # firmware omits the ExitBootServices events
    }
)

BANKS = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True)
class CmdlineRule:
    """The kernel command line, exact or a full-match regular expression (RE2, linear time)."""

    exact: str | None = None
    pattern: LinearPattern | None = None


@dataclass(frozen=True)
class EventRules:
    """Event-level expectations of a release. ``None``/empty means "no rule"."""

    scrtm_versions: tuple[str, ...] = ()  # accepted S-CRTM version strings
    secure_boot: bool | None = None  # required Secure Boot state
    db_contains: tuple[bytes, ...] = ()  # SHA-256 fingerprints of certificates db must hold
    dbx_contains: tuple[bytes, ...] = ()  # hashes dbx must at least contain
    boot_chain: tuple[bytes, ...] | None = None  # ordered PCR 4 boot application digests
    kernel_cmdline: CmdlineRule | None = None

    def is_empty(self) -> bool:
        return self == EventRules()


@dataclass(frozen=True)
class Release:
    name: str
    pcrs: dict[int, bytes] = field(default_factory=dict)  # index -> digest in the profile bank
    events: EventRules = field(default_factory=EventRules)
    not_after: float | None = None  # POSIX seconds; past it the release is retired
    revoked: bool = False
    upgrades_to: tuple[str, ...] = ()  # releases a device on this one may be moved to
    line: int = 0  # where it is defined, for messages


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # file path, for messages
    match_labels: dict[str, str]  # every label must equal
    verdict_lifetime: int  # seconds
    bank: str
    pcrs: tuple[int, ...]  # ascending selection to quote
    releases: tuple[Release, ...]
    allow_sha1: bool = False
    quirks: frozenset[str] = frozenset()
    priority: int = 0  # higher wins when several profiles match
    # The ``runtime:`` section (IMA, PCR 10): built once per golden set, shared by devices.
    runtime: RuntimePolicy | None = None
    runtime_warnings: tuple[str, ...] = ()  # "file:line:column: text" for golden lint

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())

    def release(self, name: str) -> Release | None:
        return next((r for r in self.releases if r.name == name), None)


@dataclass(frozen=True)
class GoldenSet:
    """Every profile loaded from one directory, and the digest of its content."""

    profiles: tuple[Profile, ...]
    digest: str  # "sha256:<hex>" over the sorted file names and bytes
    files: tuple[str, ...]

    def profile_for(self, labels: dict[str, str]) -> Profile | None:
        matching = [p for p in self.profiles if p.matches(labels)]
        if not matching:
            return None
        return max(matching, key=lambda p: (p.priority, len(p.match_labels), p.name))

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)
