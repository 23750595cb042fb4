"""Simulated measured boot: a device firmware profile in, the event log and PCR extends out.

swtpm has no firmware, so this module plays the part of UEFI firmware (EDK2), shim and GRUB:
``boot`` computes every event of one boot, calls ``extend(pcr, {bank: digest})`` for each
event that firmware extends (never EV_NO_ACTION), in log order, and returns the crypto-agile
log with the software replay of the same events. The event sequence follows a real
shim + GRUB boot on EDK2 (compare ``keylime/binary_bios_measurements-secureboot``); what is
extended per PCR, in order:

- PCR 0: [EV_NO_ACTION StartupLocality, only if the profile sets a locality], EV_S_CRTM_VERSION
  (UTF-16LE, NUL-terminated; digest = H(data)), EV_EFI_PLATFORM_FIRMWARE_BLOB2 per blob
  (digest = H(blob contents)), EV_SEPARATOR.
- PCR 7: EV_EFI_VARIABLE_DRIVER_CONFIG for SecureBoot, PK, KEK, db, dbx (digest =
  H(UEFI_VARIABLE_DATA)), EV_SEPARATOR, then, with Secure Boot on, EV_EFI_VARIABLE_AUTHORITY
  (the db entry that verified shim; digest = H(UEFI_VARIABLE_DATA)).
- PCR 1: [EV_EFI_VARIABLE_BOOT BootOrder, Boot0001 when ``boot_variables``; digest =
  H(VariableData) as EDK2 does for this type], EV_SEPARATOR.
- PCR 2, 3, 6: EV_SEPARATOR.
- PCR 4: EV_EFI_ACTION "Calling EFI Application from Boot Option", EV_SEPARATOR, then
  EV_EFI_BOOT_SERVICES_APPLICATION for shim, grub and the kernel (data = UEFI_IMAGE_LOAD_EVENT;
  digest = the image digest, see below).
- PCR 8 (GRUB): EV_IPL "grub_cmd: <command>" per command and "kernel_cmdline: <cmdline>".
  As GRUB's ``grub_tpm_verify_string`` does, the data is prefix + string + NUL and the digest
  is the hash of the string alone: without the prefix and without the NUL. GRUB's ``linux``
  loader measures the command line starting after "BOOT_IMAGE=" (``grub_create_loader_cmdline``
  is passed the buffer past that prefix), so the measured kernel command line is
  "/vmlinuz-6.1.0 root=..." while the kernel's /proc/cmdline reads "BOOT_IMAGE=/vmlinuz-6.1.0
  root=...". ``describe`` gives both.
- PCR 9 (GRUB): EV_IPL per file GRUB reads (grub.cfg, kernel, initrd); data = file name + NUL;
  digest = H(file contents).
- PCR 5: EV_SEPARATOR, then EV_EFI_ACTION "Exit Boot Services Invocation" and "Exit Boot
  Services Returned with Success" (unless ``exit_boot_services`` is off, a real firmware bug).

Image digests: real firmware measures the PE/COFF Authenticode hash of each boot application.
The simulator's boot applications are stand-in byte strings (deterministic per component,
version and variant), so their "image digest" is simply H(stand-in bytes) in each bank.

Limitation: a StartupLocality event makes PCR 0 start at ``00..0L``. ``extend`` cannot set a
start value, so a TPM only reaches ``expected_pcrs`` for PCR 0 if it was started
(TPM2_Startup) from that locality; ``replay_real_log`` refuses such logs unless PCR 0 is
skipped. Same profile, same banks: byte-identical log.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from simulator import efi
from simulator.secureboot import SecureBootConfig, fingerprint
from simulator.tcglog import (
    ALGORITHMS,
    EventType,
    LogEvent,
    check_banks,
    encode_log,
    extend_value,
    measured,
    parse_log,
    pcr0_start,
    replay,
    startup_locality_event,
)
from verifier.errors import EventLogError

Extend = Callable[[int, Mapping[str, bytes]], None]

CALLING_EFI_APPLICATION = b"Calling EFI Application from Boot Option"
EXIT_BOOT_SERVICES_INVOCATION = b"Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_SUCCEEDED = b"Exit Boot Services Returned with Success"
SEPARATOR_DATA = b"\x00\x00\x00\x00"
LOG_ONLY_PCR = 0xFFFFFFFF  # Windows logs end with events at this index; never extended


class UnreplayableLog(Exception):
    """A real log whose PCR values a TPM cannot reach by extends alone (PCR 0 start value)."""


@dataclass(frozen=True)
class BootComponent:
    """A boot application or file: deterministic stand-in bytes per name, version, variant."""

    name: str
    path: str
    version: str
    variant: str = ""  # anything but "" gives different bytes (a tampered build)
    size: int = 16 * 1024

    def image(self) -> bytes:
        seed = f"fleet-attest stand-in|{self.name}|{self.version}|{self.variant}".encode()
        header = b"MZ" + seed[:62].ljust(62, b"\x00")
        return header + hashlib.shake_256(seed).digest(self.size - len(header))

    def digest(self, bank: str = "sha256") -> bytes:
        """The stand-in for the Authenticode image digest: H(stand-in bytes)."""
        return hashlib.new(bank, self.image()).digest()


@dataclass(frozen=True)
class FirmwareBlob:
    """A firmware volume measured into PCR 0 (EV_EFI_PLATFORM_FIRMWARE_BLOB2)."""

    description: str  # e.g. "PEIFV", "DXEFV"; at most 255 ASCII bytes
    version: str
    base: int
    size: int = 4096

    def content(self) -> bytes:
        seed = f"fleet-attest firmware volume|{self.description}|{self.version}".encode()
        return hashlib.shake_256(seed).digest(self.size)

    def event_data(self) -> bytes:
        text = self.description.encode("ascii")
        if len(text) > 255:
            raise ValueError("blob description longer than 255 bytes")
        return bytes([len(text)]) + text + struct.pack("<QQ", self.base, self.size)


@dataclass(frozen=True)
class FirmwareProfile:
    """Everything a simulated boot measures. Make variants with ``dataclasses.replace``."""

    name: str
    release: str
    scrtm_version: str
    blobs: tuple[FirmwareBlob, ...]
    secure_boot: SecureBootConfig
    shim: BootComponent
    grub: BootComponent
    kernel: BootComponent
    initrd: BootComponent
    kernel_args: str  # after the kernel path: "root=/dev/sda1 ro quiet"
    grub_config: BootComponent = field(
        default_factory=lambda: BootComponent("grub.cfg", "(hd0,gpt1)/EFI/fleet/grub.cfg", "1")
    )
    grub_root: str = "hd0,gpt2"
    startup_locality: int | None = None  # None: no StartupLocality event, PCR 0 starts at 0
    boot_variables: bool = False  # measure BootOrder and Boot0001 into PCR 1
    exit_boot_services: bool = True  # False reproduces firmware that omits those events

    @property
    def measured_cmdline(self) -> str:
        """The kernel command line as GRUB measures it (PCR 8), without "BOOT_IMAGE="."""
        return f"{self.kernel.path} {self.kernel_args}".strip()

    @property
    def proc_cmdline(self) -> str:
        """The command line the kernel receives (/proc/cmdline)."""
        return f"BOOT_IMAGE={self.measured_cmdline}"

    def grub_commands(self) -> tuple[str, ...]:
        """The commands GRUB runs from its configuration, each measured as "grub_cmd: ..."."""
        return (
            "insmod part_gpt",
            "insmod ext2",
            f"set root={self.grub_root}",
            f"linux {self.measured_cmdline}",
            f"initrd {self.initrd.path}",
        )


@dataclass(frozen=True)
class BootRecord:
    """One simulated boot: the log bytes, its events (after the header) and the replay."""

    log: bytes
    events: tuple[LogEvent, ...]
    expected_pcrs: dict[str, dict[int, bytes]]


# --- the boot sequence --------------------------------------------------------------------


def boot_events(profile: FirmwareProfile, banks: Sequence[str]) -> tuple[LogEvent, ...]:
    """Every event of one boot, in log order (the Spec ID header is not an event here)."""
    banks = check_banks(banks)
    events: list[LogEvent] = []
    if profile.startup_locality is not None:
        events.append(startup_locality_event(profile.startup_locality, banks))
    events += _platform(profile, banks)
    events += _secure_boot_policy(profile.secure_boot, banks)
    events += _boot_manager(profile, banks)
    events += _shim(profile, banks)
    events += _grub(profile, banks)
    if profile.exit_boot_services:
        events += _exit_boot_services(banks)
    return tuple(events)


def _platform(profile: FirmwareProfile, banks: Sequence[str]) -> list[LogEvent]:
    version = (profile.scrtm_version + "\x00").encode("utf-16-le")
    events = [measured(0, EventType.EV_S_CRTM_VERSION, version, banks)]
    for blob in profile.blobs:
        events.append(
            measured(
                0,
                EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
                blob.event_data(),
                banks,
                blob.content(),
            )
        )
    return events


def _secure_boot_policy(config: SecureBootConfig, banks: Sequence[str]) -> list[LogEvent]:
    events = [
        measured(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, efi.variable_data(g, n, v), banks)
        for n, g, v in config.variables()
    ]
    events.append(_separator(7, banks))
    return events


def _boot_manager(profile: FirmwareProfile, banks: Sequence[str]) -> list[LogEvent]:
    events: list[LogEvent] = []
    if profile.boot_variables:
        g = efi.EFI_GLOBAL_VARIABLE
        for name, value in (
            ("BootOrder", efi.boot_order([1])),
            ("Boot0001", efi.load_option("fleet", profile.shim.path)),
        ):
            data = efi.variable_data(g, name, value)
            events.append(measured(1, EventType.EV_EFI_VARIABLE_BOOT, data, banks, value))
    events.append(measured(4, EventType.EV_EFI_ACTION, CALLING_EFI_APPLICATION, banks))
    events += [_separator(pcr, banks) for pcr in range(7)]
    return events


def _shim(profile: FirmwareProfile, banks: Sequence[str]) -> list[LogEvent]:
    events: list[LogEvent] = []
    if profile.secure_boot.enabled:
        data = profile.secure_boot.authority_data()
        events.append(measured(7, EventType.EV_EFI_VARIABLE_AUTHORITY, data, banks))
    events.append(_application(profile.shim, 0x7E000000, profile.shim.path, banks))
    events.append(_application(profile.grub, 0x7D000000, profile.grub.path, banks))
    return events


def _grub(profile: FirmwareProfile, banks: Sequence[str]) -> list[LogEvent]:
    config = profile.grub_config
    events = [_grub_file(config, banks)]
    for command in profile.grub_commands():
        events.append(_grub_string("grub_cmd: ", command, banks))
        if command.startswith("linux "):
            events.append(_grub_file(profile.kernel, banks))
            events.append(_application(profile.kernel, 0x7A000000, None, banks))
            events.append(_grub_string("kernel_cmdline: ", profile.measured_cmdline, banks))
        elif command.startswith("initrd "):
            events.append(_grub_file(profile.initrd, banks))
    return events


def _exit_boot_services(banks: Sequence[str]) -> list[LogEvent]:
    return [
        measured(5, EventType.EV_EFI_ACTION, EXIT_BOOT_SERVICES_INVOCATION, banks),
        measured(5, EventType.EV_EFI_ACTION, EXIT_BOOT_SERVICES_SUCCEEDED, banks),
    ]


def _separator(pcr: int, banks: Sequence[str]) -> LogEvent:
    return measured(pcr, EventType.EV_SEPARATOR, SEPARATOR_DATA, banks)


def _application(
    component: BootComponent, location: int, path: str | None, banks: Sequence[str]
) -> LogEvent:
    """EV_EFI_BOOT_SERVICES_APPLICATION; ``path`` None: loaded from memory, no device path."""
    image = component.image()
    if path is None:
        data = struct.pack("<QQQQ", location, len(image), 0, 0)
    else:
        data = efi.image_load_event(location, len(image), 0, path)
    return measured(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data, banks, image)


def _grub_string(prefix: str, text: str, banks: Sequence[str]) -> LogEvent:
    data = (prefix + text).encode() + b"\x00"
    return measured(8, EventType.EV_IPL, data, banks, text.encode())


def _grub_file(component: BootComponent, banks: Sequence[str]) -> LogEvent:
    data = component.path.encode() + b"\x00"
    return measured(9, EventType.EV_IPL, data, banks, component.image())


# --- the public entry points --------------------------------------------------------------


def boot(
    profile: FirmwareProfile, extend: Extend, banks: Sequence[str] = ("sha256",)
) -> BootRecord:
    """Boot ``profile``: extend every measured event through ``extend``, return the record."""
    banks = check_banks(banks)
    events = boot_events(profile, banks)
    for event in events:
        if event.extends:
            extend(event.pcr, dict(event.digests))
    return BootRecord(encode_log(events, banks), events, replay(events, banks))


def replay_real_log(
    log_bytes: bytes,
    extend: Extend,
    bank: str = "sha256",
    skip_pcr0: bool = False,
    pcr0_locality: int = 0,
) -> dict[int, bytes]:
    """Extend a real machine's log into a TPM through ``extend``; return the expected PCRs.

    Checks before anything is extended: the log parses (``EventLogError``), it has ``bank``,
    every extended event carries a ``bank`` digest and a PCR index 0-23 (events at 0xFFFFFFFF
    are log-only and skipped), and PCR 0 does not need a start value other than zero
    (StartupLocality or H-CRTM): such a log raises ``UnreplayableLog`` unless ``skip_pcr0``,
    which leaves PCR 0 out of both the extends and the result, or unless the TPM was started
    from the log's locality (``pcr0_locality``, e.g. swtpm started from locality 3).
    """
    if bank not in ALGORITHMS:
        raise ValueError(f"unknown PCR bank {bank!r}; known: {sorted(ALGORITHMS)}")
    parsed = parse_log(log_bytes)
    if bank not in parsed.banks:
        raise EventLogError(f"log has no {bank} bank (it has {', '.join(parsed.banks)})")
    start = pcr0_start(parsed.events)
    if start and start != pcr0_locality and not skip_pcr0:
        raise UnreplayableLog(
            "log starts PCR 0 at locality "
            f"{pcr0_start(parsed.events)} (StartupLocality/H-CRTM): extends from a zero PCR 0 "
            "cannot reproduce it; pass skip_pcr0=True to replay the other PCRs"
        )
    steps = [
        (e.pcr, _digest_of(e, bank))
        for e in parsed.events
        if e.extends and e.pcr != LOG_ONLY_PCR and not (skip_pcr0 and e.pcr == 0)
    ]
    size = len(steps[0][1]) if steps else 0
    pcrs: dict[int, bytes] = {}
    for pcr, digest in steps:
        initial = bytes(size - 1) + bytes([start]) if pcr == 0 and start else bytes(size)
        pcrs[pcr] = extend_value(bank, pcrs.get(pcr, initial), digest)
    for pcr, digest in steps:
        extend(pcr, {bank: digest})
    return dict(sorted(pcrs.items()))


def _digest_of(event: LogEvent, bank: str) -> bytes:
    if not 0 <= event.pcr <= 23:
        raise EventLogError(f"event for PCR {event.pcr} cannot be extended into a TPM")
    for name, value in event.digests:
        if name == bank:
            return value
    raise EventLogError(f"event for PCR {event.pcr} has no {bank} digest")


def describe(profile: FirmwareProfile, bank: str = "sha256") -> dict[str, object]:
    """The components of a profile, as golden measurements and the README can state them."""
    config = profile.secure_boot
    record = boot(profile, lambda _pcr, _digests: None, (bank,))
    return {
        "profile": profile.name,
        "release": profile.release,
        "scrtm_version": profile.scrtm_version,
        "firmware_blobs": [
            {"description": b.description, bank: hashlib.new(bank, b.content()).hexdigest()}
            for b in profile.blobs
        ],
        "secure_boot": config.enabled,
        "pk_sha256": [fingerprint(c).hex() for c in config.pk],
        "kek_sha256": [fingerprint(c).hex() for c in config.kek],
        "db_sha256": [fingerprint(c).hex() for c in config.db],
        "dbx": [h.hex() for h in config.dbx],
        "boot_chain": [
            {"name": c.name, "path": c.path, "version": c.version, bank: c.digest(bank).hex()}
            for c in (profile.shim, profile.grub, profile.kernel)
        ],
        "kernel_cmdline": profile.measured_cmdline,
        "proc_cmdline": profile.proc_cmdline,
        "pcrs": {bank: {i: v.hex() for i, v in record.expected_pcrs[bank].items()}},
    }
