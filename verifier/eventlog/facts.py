"""Boot facts: what a parsed log says about the boot, from events bound to their digests only.

Appraisal invariant 6: where the PC Client spec defines an event's digest as a hash of its data
(separators, EFI actions, S-CRTM version, UEFI variables, GRUB and systemd-boot command lines)
the data is hashed and compared with the digest of the bank being appraised; an event whose
data disagrees is a CONTRAINDICATED ``event_digest_mismatch`` problem and yields no fact.
Event types are labels the log writer chose, so:

- separators are recognised by digest (hash of 00000000, 00000001 or FFFFFFFF) whatever
  their type; a separator digest under another type is a ``relabelled_event`` problem;
- the EFI boot-phase markers ("Calling EFI Application from Boot Option", the
  ExitBootServices actions) are recognised by digest too;
- in PCR 4, once the boot manager starts (the "Calling EFI Application from Boot Option"
  marker, or PCR 4's separator for the many firmwares that do not log that marker), every event
  that is neither a separator nor an action string bound to its digest is a boot application,
  whatever its type; one labelled otherwise (EV_IPL excepted: legacy BIOS) is a
  ``relabelled_event`` problem. Applications before that are ``preboot_apps`` (firmware menus
  and tools), not part of the boot chain. A boot application logged after a (trusted)
  ExitBootServices marker is an ``event_after_exit_boot_services`` problem;
- PCRs 4 and 7 accept only the event types the spec puts there; others are
  ``unexpected_event_type`` problems; a type the spec does not define at all in PCRs 0-7 is
  an ``unknown_event_type`` problem (appraisal invariant 8: fail closed).

The kernel command line comes from every verified source and they must agree: the arguments
of GRUB's ``linux`` command (recognised by its text, not by the unmeasured ``grub_cmd: ``
prefix), GRUB's ``kernel_cmdline: `` string (both start with the kernel path, e.g.
``(hd0,gpt2)/vmlinuz-6.1 root=...``) and systemd-boot's UTF-16 load options (PCR 12, or PCR 8
for systemd-boot before v251); surrounding blanks are stripped. Two different command lines
(a second kernel, or a string appended after boot) are ``conflicting_kernel_cmdlines`` and no
fact; a PCR 8 event that is none of these is ``unrecognised_event``: PCR 8 has no separator,
so nothing there may go unexplained.

In PCRs 0 and 7, where the firmware and Secure Boot facts come from, a measurement after the
PCR's separator other than a PCR 7 authority is ``event_after_separator``: the firmware had
handed over by then, so it was added later (a relabelled real event replaced by an appended
one is the attack this stops).

UEFI variable digests cover the whole UEFI_VARIABLE_DATA, which binds the name to the data;
EV_EFI_VARIABLE_BOOT (by the spec) and, with the ``variable_digest_data_only`` quirk, PCR 7
variables may cover VariableData only. Then only the spec's measuring order (SecureBoot, PK,
KEK, db, dbx) binds the names, and a log out of that order loses its Secure Boot facts
(``variable_names_unbound``).

Only events in ``trusted_pcrs`` (``None``: all of 0-23) are considered: the appraisal passes
the quoted PCRs whose replay matched. EV_NO_ACTION events are never facts. Vendor quirks are
honoured only when named in ``quirks`` (see ``verifier.golden.model.QUIRKS``). Extraction
never raises for bad event content: it returns the facts it could establish and the problems.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verifier.errors import EventLogError
from verifier.eventlog import efi
from verifier.eventlog.parse import (
    EV_ACTION,
    EV_COMPACT_HASH,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_SPDM_DEVICE_AUTHORITY,
    EV_EFI_SPDM_DEVICE_POLICY,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_OMIT_BOOT_DEVICE_EVENTS,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    EVENT_TYPE_NAMES,
    MAX_PCR,
    Event,
    EventLog,
)
from verifier.eventlog.replay import EBS_INVOCATION, EBS_SUCCESS, hash_function
from verifier.verdict import Reason, Status

CALLING_EFI_APP = b"Calling EFI Application from Boot Option"
RETURNING_EFI_APP = b"Returning from EFI Application from Boot Option"
EBS_FAILURE = b"Exit Boot Services Returned with Failure"
SEPARATOR_VALUES = (b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\xff\xff\xff\xff")
# GRUB logs "<kind>: <string>" and measures <string> (without the NUL it logs after it).
GRUB_KINDS = frozenset({b"grub_cmd", b"kernel_cmdline", b"module_cmdline"})

CHAIN_TYPES = frozenset({EV_EFI_BOOT_SERVICES_APPLICATION, EV_IPL})  # EV_IPL: legacy BIOS boot
ACTION_TYPES = frozenset({EV_EFI_ACTION, EV_ACTION})
ANY_TYPE = frozenset(EVENT_TYPE_NAMES)
FIRMWARE_PCRS_END = 7  # PCRs 0-7 are the firmware's: an undefined event type there fails closed
ALLOWED_TYPES: dict[int, frozenset[int]] = {
    4: frozenset(
        {
            EV_EFI_ACTION,
            EV_SEPARATOR,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            EV_ACTION,
            EV_IPL,
            EV_COMPACT_HASH,
            EV_OMIT_BOOT_DEVICE_EVENTS,
            EV_EVENT_TAG,
        }
    ),
    7: frozenset(
        {
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            EV_EFI_VARIABLE_AUTHORITY,
            EV_SEPARATOR,
            EV_EFI_ACTION,
            EV_EFI_SPDM_DEVICE_POLICY,
            EV_EFI_SPDM_DEVICE_AUTHORITY,
        }
    ),
}
# What firmware may still measure into a PCR after that PCR's separator. Facts come from
# PCRs 0 and 7 (S-CRTM version, firmware blobs, Secure Boot): anything else there after the
# separator was measured after the firmware handed over (by the OS, or by whoever holds it) and
# is contraindicated, so that a relabelled real event cannot be replaced by an appended one.
POST_SEPARATOR_ALLOWED: dict[int, frozenset[int]] = {
    0: frozenset(),
    7: frozenset({EV_EFI_VARIABLE_AUTHORITY, EV_EFI_SPDM_DEVICE_AUTHORITY}),
}
# A GRUB string whose text is a kernel load command, whatever prefix it was logged with.
LINUX_COMMANDS = (b"linux ", b"linuxefi ", b"linux16 ")
SECURE_BOOT_ORDER = ("SecureBoot", "PK", "KEK", "db", "dbx")  # PC Client spec measuring order
SECURE_BOOT_DBS = {
    ("PK", efi.EFI_GLOBAL_VARIABLE),
    ("KEK", efi.EFI_GLOBAL_VARIABLE),
    ("db", efi.EFI_IMAGE_SECURITY_DATABASE),
    ("dbx", efi.EFI_IMAGE_SECURITY_DATABASE),
}


@dataclass(frozen=True)
class FirmwareBlob:
    event_index: int
    pcr: int
    base: int
    length: int
    digest: bytes
    description: str = ""


@dataclass(frozen=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY: the db/MOK entry that verified a loaded image."""

    event_index: int
    variable: str
    fingerprint: bytes  # SHA-256 of the certificate, or of the data when it is not one
    owner_less: bool = False


@dataclass(frozen=True)
class BootApp:
    event_index: int
    digest: bytes
    path: str
    type_label: int


@dataclass(frozen=True)
class SecureBootDb:
    event_index: int
    content: efi.SignatureDb


@dataclass(frozen=True)
class BootFacts:
    bank: str
    trusted_pcrs: tuple[int, ...]
    scrtm_version: str | None = None
    scrtm_event: int | None = None
    firmware_blobs: tuple[FirmwareBlob, ...] = ()
    secure_boot: bool | None = None
    secure_boot_event: int | None = None
    databases: tuple[tuple[str, SecureBootDb], ...] = ()  # PK, KEK, db, dbx as measured
    authorities: tuple[Authority, ...] = ()
    boot_apps: tuple[BootApp, ...] = ()  # the boot chain (PCR 4, once the boot manager starts)
    preboot_apps: tuple[BootApp, ...] = ()  # PCR 4 applications before that (firmware menus)
    grub_commands: tuple[tuple[int, str], ...] = ()
    kernel_cmdline: str | None = None
    kernel_cmdline_event: int | None = None
    separators: tuple[tuple[int, int], ...] = ()  # (pcr, event index)
    exit_boot_services: bool = False
    problems: tuple[Reason, ...] = ()

    def database(self, name: str) -> SecureBootDb | None:
        return next((db for n, db in self.databases if n == name), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (digests in hex), for the CLI and for people."""
        return {
            "bank": self.bank,
            "trusted_pcrs": list(self.trusted_pcrs),
            "scrtm_version": self.scrtm_version,
            "firmware_blobs": [
                {
                    "event": b.event_index,
                    "pcr": b.pcr,
                    "base": b.base,
                    "length": b.length,
                    "digest": b.digest.hex(),
                    "description": b.description,
                }
                for b in self.firmware_blobs
            ],
            "secure_boot": self.secure_boot,
            "databases": {
                name: {
                    "event": db.event_index,
                    "certificates": [c.hex() for c in db.content.certificates],
                    "hashes": db.content.hash_count,
                    "other": db.content.other,
                }
                for name, db in self.databases
            },
            "authorities": [
                {
                    "event": a.event_index,
                    "variable": a.variable,
                    "fingerprint": a.fingerprint.hex(),
                    "owner_less": a.owner_less,
                }
                for a in self.authorities
            ],
            "boot_apps": [
                {"event": a.event_index, "digest": a.digest.hex(), "path": a.path}
                for a in self.boot_apps
            ],
            "preboot_apps": [
                {"event": a.event_index, "digest": a.digest.hex(), "path": a.path}
                for a in self.preboot_apps
            ],
            "grub_commands": [text for _, text in self.grub_commands],
            "kernel_cmdline": self.kernel_cmdline,
            "separators": [{"pcr": p, "event": i} for p, i in self.separators],
            "exit_boot_services": self.exit_boot_services,
            "problems": [reason_json(r) for r in self.problems],
        }


def reason_json(reason: Reason) -> dict[str, Any]:
    return {
        "code": reason.code,
        "severity": reason.severity.value,
        "text": reason.text,
        "pcr": reason.pcr,
        "event_index": reason.event_index,
        "rule": reason.rule,
        "expected": reason.expected,
        "actual": reason.actual,
    }


def extract_facts(
    log: EventLog,
    bank: str,
    quirks: frozenset[str],
    trusted_pcrs: frozenset[int] | None = None,
) -> BootFacts:
    """The facts ``log`` establishes in ``bank``, from events in ``trusted_pcrs`` only.

    ``EventLogError`` if the log does not carry ``bank`` in every event.
    """
    if bank not in log.banks:
        raise EventLogError(f"the event log has no {bank} digests (it has {', '.join(log.banks)})")
    extractor = _Extractor(bank, quirks)
    trusted = frozenset(range(MAX_PCR + 1)) if trusted_pcrs is None else trusted_pcrs
    visit = extractor.visit
    special = extractor.special
    hfunc = extractor.hash
    grub = extractor.grub
    for event in log.events:
        _, pcr, etype, digests, data, _ = event
        if pcr not in trusted or etype == EV_NO_ACTION:
            continue
        if pcr == 8 and etype == EV_IPL and digests[bank] not in special:
            # GRUB's strings are most of a Linux log: handled inline, same rules as grub_string
            head, _, text = data.partition(b": ")
            if head == b"grub_cmd":
                text = text[:-1] if text.endswith(b"\x00") else text
                if hfunc(text).digest() == digests[bank]:
                    grub.append((event.number, text.decode("utf-8", "replace")))
                    extractor.grub_command(event.number, text)
                    continue
            if head in GRUB_KINDS:
                extractor.grub_string(event)
                continue
        visit(event)
    return extractor.result(tuple(sorted(trusted)))


class _Extractor:
    """One pass over the trusted events; holds the partial facts while it goes."""

    def __init__(self, bank: str, quirks: frozenset[str]) -> None:
        self.bank = bank
        self.quirks = quirks
        self.hash: Callable[[bytes], Any] = hash_function(bank)
        self.separator_digests, self.calling, self.ebs, self.markers = _marker_digests(bank)
        self.special = self.separator_digests | self.markers
        self.problems: list[Reason] = []
        self.values: dict[str, Any] = {}
        self.blobs: list[FirmwareBlob] = []
        self.databases: dict[str, SecureBootDb] = {}
        self.authorities: list[Authority] = []
        self.apps: list[BootApp] = []
        self.grub: list[tuple[int, str]] = []
        self.separators: list[tuple[int, int]] = []
        self.boot_started = False  # PCR 4: "Calling EFI Application" or its separator seen
        self.preboot: list[BootApp] = []
        self.ebs_seen = False
        self.unbound_names = False  # a PCR 7 variable verified over VariableData only
        self.driver_config_names: list[str] = []
        self.separated: set[int] = set()  # PCRs whose separator has been measured
        self.cmdlines: list[tuple[int, str, str]] = []  # (event, source, text)

    # -- results -------------------------------------------------------------------------

    def result(self, trusted: tuple[int, ...]) -> BootFacts:
        self.check_unbound_names()
        self.settle_kernel_cmdline()
        v = self.values
        return BootFacts(
            bank=self.bank,
            trusted_pcrs=trusted,
            scrtm_version=v.get("scrtm_version"),
            scrtm_event=v.get("scrtm_event"),
            firmware_blobs=tuple(self.blobs),
            secure_boot=v.get("secure_boot"),
            secure_boot_event=v.get("secure_boot_event"),
            databases=tuple(sorted(self.databases.items())),
            authorities=tuple(self.authorities),
            boot_apps=tuple(self.apps),
            preboot_apps=tuple(self.preboot),
            grub_commands=tuple(self.grub),
            kernel_cmdline=v.get("kernel_cmdline"),
            kernel_cmdline_event=v.get("kernel_cmdline_event"),
            separators=tuple(self.separators),
            exit_boot_services=self.ebs_seen,
            problems=tuple(self.problems),
        )

    def problem(
        self,
        code: str,
        event: Event,
        text: str,
        expected: str = "",
        actual: str = "",
        severity: Status = Status.CONTRAINDICATED,
    ) -> None:
        self.problems.append(
            Reason(
                code=code,
                text=f"event {event.number} ({event.type_name}) in PCR {event.pcr}: {text}",
                severity=severity,
                pcr=event.pcr,
                expected=expected,
                actual=actual,
                event_index=event.number,
            )
        )

    def matches(self, event: Event, *alternatives: bytes, whole: bool = True) -> bool:
        """True when the digest is the hash of the data (unless not ``whole``) or of one of
        ``alternatives``."""
        digest = event.digests[self.bank]
        h = self.hash
        return (whole and h(event.data).digest() == digest) or any(
            h(a).digest() == digest for a in alternatives
        )

    def mismatch(self, event: Event) -> None:
        self.problem(
            "event_digest_mismatch",
            event,
            "its data does not hash to its digest",
            expected=event.digests[self.bank].hex(),
            actual=self.hash(event.data).hexdigest(),
        )

    def verified(self, event: Event, *alternatives: bytes) -> bool:
        """``matches``, reporting an ``event_digest_mismatch`` when it does not."""
        if self.matches(event, *alternatives):
            return True
        self.mismatch(event)
        return False

    # -- dispatch ------------------------------------------------------------------------

    def visit(self, event: Event) -> None:
        _, pcr, etype, digests, _, _ = event
        digest = digests[self.bank]
        if digest in self.special or etype == EV_SEPARATOR:
            if digest in self.markers:
                self.marker(event, digest)
            else:
                self.separator(event, digest)
            return
        if pcr > FIRMWARE_PCRS_END:  # OS PCRs: only GRUB's (8) and systemd-boot's (12) strings
            if etype == EV_IPL and pcr in (8, 12):
                self.ipl(event)
            elif pcr == 8:
                self.problem("unrecognised_event", event, "PCR 8 holds only boot loader strings")
            return
        if pcr in self.separated and etype not in POST_SEPARATOR_ALLOWED.get(pcr, ANY_TYPE):
            self.problem(
                "event_after_separator",
                event,
                f"measured after PCR {pcr}'s separator, when the firmware had handed over",
            )
            return
        if etype not in EVENT_TYPE_NAMES:
            self.problem("unknown_event_type", event, "an event type the spec does not define")
            return
        allowed = ALLOWED_TYPES.get(pcr)
        if pcr == 4:
            self.pcr4(event, digest, allowed)
            return
        if allowed is not None and etype not in allowed:
            self.problem(
                "unexpected_event_type", event, f"type {event.type_name} does not belong here"
            )
            return
        handler = _HANDLERS.get(etype)
        if handler is not None:
            handler(self, event)

    def separator(self, event: Event, digest: bytes) -> None:
        if event.type != EV_SEPARATOR:
            self.problem(
                "relabelled_event",
                event,
                "a separator (by digest) labelled otherwise",
                expected="EV_SEPARATOR",
                actual=event.type_name,
            )
        elif not self.verified(event):  # Windows logs separate PCRs 12-14 with "WBCL"
            return
        self.separators.append((event.pcr, event.number))
        self.separated.add(event.pcr)
        if event.pcr == 4:
            self.boot_started = True

    def marker(self, event: Event, digest: bytes) -> None:
        if event.type != EV_EFI_ACTION:
            self.problem(
                "relabelled_event",
                event,
                "an EFI boot-phase action (by digest) labelled otherwise",
                expected="EV_EFI_ACTION",
                actual=event.type_name,
            )
        elif not self.verified(event):
            return
        if event.pcr == 4 and digest == self.calling:
            self.boot_started = True
        elif event.pcr == 5 and digest in self.ebs:
            self.ebs_seen = True

    def pcr4(self, event: Event, digest: bytes, allowed: frozenset[int] | None) -> None:
        """PCR 4 once the boot manager starts: every measurement that is not a verified action
        string is a boot application, whatever its label; before that, pre-boot applications."""
        if event.type in ACTION_TYPES and self.hash(event.data).digest() == digest:
            return  # an action string bound to its digest: not an application
        if not self.boot_started:
            if allowed is not None and event.type not in allowed:
                self.problem(
                    "unexpected_event_type", event, f"type {event.type_name} does not belong here"
                )
            elif event.type == EV_EFI_BOOT_SERVICES_APPLICATION:
                self.preboot.append(self.boot_app(event, digest))
            return
        if event.type not in CHAIN_TYPES:
            self.problem(
                "relabelled_event",
                event,
                "a PCR 4 measurement of the boot chain that is not labelled as a boot application",
                expected="EV_EFI_BOOT_SERVICES_APPLICATION",
                actual=event.type_name,
            )
        if self.ebs_seen:
            self.problem(
                "event_after_exit_boot_services",
                event,
                "a boot application logged after ExitBootServices",
            )
        self.apps.append(self.boot_app(event, digest))

    def boot_app(self, event: Event, digest: bytes) -> BootApp:
        path = efi.image_path(event.data) if event.type == EV_EFI_BOOT_SERVICES_APPLICATION else ""
        return BootApp(event.number, digest, path, event.type)

    # -- by type -------------------------------------------------------------------------

    def scrtm_version(self, event: Event) -> None:
        if event.pcr != 0 or not self.verified(event):
            return
        if "scrtm_version" not in self.values:
            self.values["scrtm_version"] = _version_text(event.data)
            self.values["scrtm_event"] = event.number

    def firmware_blob(self, event: Event) -> None:
        digest = event.digests[self.bank]
        data = event.data
        description = ""
        if event.type == EV_EFI_PLATFORM_FIRMWARE_BLOB2:
            if not data:
                self.problem("event_data_malformed", event, "empty UEFI_PLATFORM_FIRMWARE_BLOB2")
                return
            size = data[0]
            description = data[1 : 1 + size].decode("ascii", "replace")
            data = data[1 + size :]
        if len(data) != 16:
            self.problem("event_data_malformed", event, f"firmware blob of {len(data)} bytes")
            return
        base = int.from_bytes(data[:8], "little")
        length = int.from_bytes(data[8:], "little")
        self.blobs.append(FirmwareBlob(event.number, event.pcr, base, length, digest, description))

    def variable(self, event: Event) -> None:
        try:
            var = efi.parse_variable(event.data)
        except efi.EfiDecodeError as exc:
            self.problem("event_data_malformed", event, str(exc))
            return
        if not self.matches(event, *self.variable_alternatives(event, var)):
            if not self.data_only_allowed(event) or not self.matches(event, var.data, whole=False):
                self.mismatch(event)
                return
            if event.type == EV_EFI_VARIABLE_DRIVER_CONFIG and event.pcr == 7:
                self.unbound_names = True  # verified over VariableData only: name not bound
        if event.type == EV_EFI_VARIABLE_DRIVER_CONFIG and event.pcr == 7:
            self.driver_config_names.append(var.name)
            self.driver_config(event, var)
        elif event.type == EV_EFI_VARIABLE_AUTHORITY and event.pcr == 7:
            self.authority(event, var)

    def data_only_allowed(self, event: Event) -> bool:
        # The PC Client spec defines EV_EFI_VARIABLE_BOOT's digest over VariableData only.
        return event.type == EV_EFI_VARIABLE_BOOT or "variable_digest_data_only" in self.quirks

    def settle_kernel_cmdline(self) -> None:
        """One command line from every verified source, or a conflict and no fact."""
        texts = sorted({text for _, _, text in self.cmdlines})
        if len(texts) == 1:
            self.values["kernel_cmdline"] = texts[0]
            self.values["kernel_cmdline_event"] = self.cmdlines[-1][0]
        elif len(texts) > 1:
            self.problems.append(
                Reason(
                    code="conflicting_kernel_cmdlines",
                    text=f"{len(texts)} different kernel command lines were measured ("
                    + "; ".join(f"event {n} {source}" for n, source, _ in self.cmdlines)
                    + "): a second kernel, or a line added after boot",
                    expected="one command line",
                    actual=" | ".join(texts),
                    event_index=self.cmdlines[-1][0],
                )
            )

    def cmdline(self, event_number: int, source: str, text: str) -> None:
        self.cmdlines.append((event_number, source, text.strip()))

    def grub_command(self, event_number: int, text: bytes) -> None:
        """A verified GRUB string: a kernel load command by its text, whatever its prefix."""
        for command in LINUX_COMMANDS:
            if text.startswith(command):
                args = text[len(command) :].decode("utf-8", "replace")
                self.cmdline(event_number, "GRUB linux command", args)
                return

    def check_unbound_names(self) -> None:
        """With digests over VariableData only, the spec's fixed measuring order (SecureBoot,
        PK, KEK, db, dbx) is what binds the names: a log that departs from it loses its
        Secure Boot facts, so a renamed variable cannot pass for another."""
        if not self.unbound_names or self.driver_config_names[:5] == list(SECURE_BOOT_ORDER):
            return
        self.values.pop("secure_boot", None)
        self.values.pop("secure_boot_event", None)
        self.databases.clear()
        self.problems.append(
            Reason(
                code="variable_names_unbound",
                text="PCR 7 variables are measured over their data only and are not in the"
                " order SecureBoot, PK, KEK, db, dbx: their names cannot be trusted",
                pcr=7,
                expected=",".join(SECURE_BOOT_ORDER),
                actual=",".join(self.driver_config_names),
            )
        )

    def variable_alternatives(self, event: Event, var: efi.Variable) -> list[bytes]:
        """What else the digest may cover: the structure without trailing bytes, and quirks
        that keep the name bound (VariableData-only digests are ``data_only_allowed``)."""
        data = event.data
        alternatives = [data[: var.size]] if var.size < len(data) else []
        if (
            event.type == EV_EFI_VARIABLE_AUTHORITY
            and "shim_authority_without_owner" in self.quirks
            and _is_der_certificate(var.data)
        ):
            # Old shim measures its owner-less certificate over a few bytes past the structure.
            alternatives.extend(
                data[:k] for k in range(var.size + 1, min(len(data), var.size + 16))
            )
        return alternatives

    def driver_config(self, event: Event, var: efi.Variable) -> None:
        if var.name == "SecureBoot" and var.guid == efi.EFI_GLOBAL_VARIABLE:
            self.secure_boot_state(event, var.data)
        elif (var.name, var.guid) in SECURE_BOOT_DBS and var.name not in self.databases:
            try:
                content = efi.parse_signature_lists(var.data)
            except efi.EfiDecodeError as exc:
                self.problem("efi_signature_list_malformed", event, f"{var.name}: {exc}")
                return
            self.databases[var.name] = SecureBootDb(event.number, content)

    def secure_boot_state(self, event: Event, data: bytes) -> None:
        if "secure_boot" in self.values:
            return
        if data in (b"\x00", b"\x01"):
            state = data == b"\x01"
        elif not data and "empty_secureboot_variable" in self.quirks:
            state = False
        else:
            self.problem(
                "secureboot_variable_malformed",
                event,
                f"SecureBoot variable of {len(data)} bytes (quirk empty_secureboot_variable"
                " accepts an empty one as disabled)",
            )
            return
        self.values["secure_boot"] = state
        self.values["secure_boot_event"] = event.number

    def authority(self, event: Event, var: efi.Variable) -> None:
        data = var.data
        if _is_der_certificate(data):
            if "shim_authority_without_owner" not in self.quirks:
                self.problem(
                    "authority_without_owner",
                    event,
                    f"{var.name}: certificate without the EFI_SIGNATURE_DATA owner GUID"
                    " (quirk shim_authority_without_owner accepts it)",
                )
                return
            self.authorities.append(
                Authority(event.number, var.name, hashlib.sha256(data).digest(), owner_less=True)
            )
            return
        body = data[16:] if len(data) > 16 and _is_der_certificate(data[16:]) else data
        self.authorities.append(Authority(event.number, var.name, hashlib.sha256(body).digest()))

    def ipl(self, event: Event) -> None:
        if event.pcr == 12:
            self.systemd_cmdline(event)
        elif event.data.partition(b": ")[0] in GRUB_KINDS:
            self.grub_string(event)
        elif self.matches(event):  # systemd-boot before v251 measured its load options here
            self.systemd_cmdline(event)
        else:
            self.problem(
                "unrecognised_event",
                event,
                "neither a GRUB string nor load options bound to its digest",
            )

    def grub_string(self, event: Event) -> None:
        head, _, text = event.data.partition(b": ")
        if head not in GRUB_KINDS:
            return
        if text.endswith(b"\x00"):
            text = text[:-1]
        if not self.verified_text(event, text):
            return
        decoded = text.decode("utf-8", "replace")
        if head == b"kernel_cmdline":
            self.cmdline(event.number, "GRUB kernel_cmdline", decoded)
        elif head == b"grub_cmd":
            self.grub.append((event.number, decoded))
        self.grub_command(event.number, text)

    def verified_text(self, event: Event, text: bytes) -> bool:
        digest = event.digests[self.bank]
        actual = self.hash(text).digest()
        if actual == digest:
            return True
        self.problem(
            "event_digest_mismatch",
            event,
            "its text does not hash to its digest (the measured string is not the logged one)",
            expected=digest.hex(),
            actual=actual.hex(),
        )
        return False

    def systemd_cmdline(self, event: Event) -> None:
        if not self.verified(event):
            return
        try:
            text = efi.decode_utf16(event.data)
        except efi.EfiDecodeError as exc:
            self.problem("event_data_malformed", event, str(exc))
            return
        self.cmdline(event.number, f"load options (PCR {event.pcr})", text)

    def efi_action(self, event: Event) -> None:
        self.verified(event)


@functools.cache
def _marker_digests(
    bank: str,
) -> tuple[frozenset[bytes], bytes, frozenset[bytes], frozenset[bytes]]:
    """Separator digests, "Calling EFI Application", ExitBootServices, all phase markers."""
    h = hash_function(bank)
    calling = h(CALLING_EFI_APP).digest()
    ebs = frozenset(h(text).digest() for text in (EBS_INVOCATION, EBS_SUCCESS, EBS_FAILURE))
    return (
        frozenset(h(v).digest() for v in SEPARATOR_VALUES),
        calling,
        ebs,
        frozenset({calling, h(RETURNING_EFI_APP).digest(), *ebs}),
    )


def _version_text(data: bytes) -> str:
    """UTF-16 (the usual form) or ASCII text, "" for an empty string, else hex (a GUID...)."""
    if not data.strip(b"\x00"):
        return ""
    if len(data) % 2 == 0 and len(data) >= 2:
        try:
            text = data.decode("utf-16-le").rstrip("\x00")
        except UnicodeDecodeError:
            text = ""
        if text and text.isprintable():
            return text
    stripped = data.rstrip(b"\x00")
    if stripped and all(32 <= b < 127 for b in stripped):
        return stripped.decode("ascii")
    return data.hex()


def _is_der_certificate(data: bytes) -> bool:
    """A DER SEQUENCE with a two-byte length that spans exactly ``data``."""
    return (
        len(data) >= 4
        and data[0] == 0x30
        and data[1] == 0x82
        and int.from_bytes(data[2:4], "big") + 4 == len(data)
    )


_HANDLERS: dict[int, Callable[[_Extractor, Event], None]] = {
    EV_S_CRTM_VERSION: _Extractor.scrtm_version,
    EV_EFI_PLATFORM_FIRMWARE_BLOB: _Extractor.firmware_blob,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2: _Extractor.firmware_blob,
    EV_EFI_VARIABLE_DRIVER_CONFIG: _Extractor.variable,
    EV_EFI_VARIABLE_AUTHORITY: _Extractor.variable,
    EV_EFI_VARIABLE_BOOT: _Extractor.variable,
    EV_EFI_VARIABLE_BOOT2: _Extractor.variable,
    EV_IPL: _Extractor.ipl,
    EV_EFI_ACTION: _Extractor.efi_action,
}
