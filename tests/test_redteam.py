"""Red-team tests: evidence crafted to win an affirming verdict it should not get.

The attacker model is the one measured boot exists for: a device booted something bad (old
firmware, Secure Boot off, ``init=/bin/sh``), so its OS is the attacker's. Root on a PC Client
TPM may extend PCRs 0-15 from locality 0, and the event log the agent sends is whatever root
writes. So an attacker can append real measurements to any PCR after boot and rewrite any log
label or data that no digest binds. The quote, the nonce and the AK are genuine.

Each test pins an attack that is refused. The first three families were open findings of a
red-team review (an appended kernel command line, S-CRTM version or Secure Boot variable
replacing a relabelled real one); ``verifier.eventlog.facts`` now refuses them (every
command-line source must agree; nothing but authorities after PCR 7's separator, nothing
after PCR 0's).
Evidence comes from the simulator's firmware (real crypto-agile logs), the policy from the
repository's ``golden_measurements/``, the quote from a software AK.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from fleetattest.v1 import fleetattest_pb2 as pb
from simulator import efi
from simulator.firmware import FirmwareProfile, boot_events
from simulator.profiles import GOOD_A, INIT_SH, RETIRED, SECUREBOOT_OFF
from simulator.secureboot import DEFAULT_DBX
from simulator.softquote import QuoteFields, SoftAk, attest_bytes, pcr_select, sign
from simulator.tcglog import EventType, LogEvent, encode_log, measured, replay
from verifier import errors
from verifier.appraisal import AppraisalContext, appraise
from verifier.evidence import Evidence
from verifier.golden.load import load_golden_dir, load_golden_texts
from verifier.golden.model import Profile
from verifier.limits import DEFAULT_LIMITS
from verifier.marshal import HASH_IDS, u16, u32
from verifier.service.convert import evidence_from
from verifier.store.base import IssuedNonce
from verifier.verdict import Status, Verdict

ROOT = Path(__file__).parent.parent
GOLDEN_DIR = ROOT / "golden_measurements"
NOW = 1_800_000_000.0  # 2027-01-15: fw-1.0.0 and fw-1.1.0 live, fw-0.9.0 retired
NONCE = b"R" * 32
BANKS = ("sha256",)
EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


def _sim_profile(files: dict[str, str] | None = None) -> Profile:
    golden = load_golden_texts(files) if files else load_golden_dir(GOLDEN_DIR)
    profile = golden.profile("sim-gateway")
    assert profile is not None
    return profile


PROFILE = _sim_profile()
GOOD_CMDLINE = GOOD_A.measured_cmdline
OLD_FIRMWARE_NEW_OS = replace(GOOD_A, scrtm_version=RETIRED.scrtm_version, blobs=RETIRED.blobs)


@pytest.fixture(scope="module")
def ak() -> SoftAk:
    return SoftAk.generate()


def events_of(firmware: FirmwareProfile) -> list[LogEvent]:
    return list(boot_events(firmware, BANKS))


def appraise_log(ak: SoftAk, events: list[LogEvent], profile: Profile = PROFILE) -> Verdict:
    """What the verifier says about ``events`` quoted by a genuine TPM (PCRs = their replay)."""
    replayed = replay(events, BANKS)["sha256"]
    values = {i: replayed.get(i, bytes(32)) for i in profile.pcrs}
    attest, signature = ak.quote(QuoteFields(NONCE, "sha256", values))
    return appraise_quote(ak, attest, signature, values, encode_log(events, BANKS), profile)


def appraise_quote(
    ak: SoftAk,
    attest: bytes,
    signature: bytes,
    values: dict[int, bytes],
    log: bytes = b"",
    profile: Profile = PROFILE,
) -> Verdict:
    evidence = Evidence.build(
        device_id="dev-rt",
        nonce=NONCE,
        quote=attest,
        signature=signature,
        pcr_values=tuple(values.items()),
        event_log=log,
        limits=DEFAULT_LIMITS,
    )
    issued = IssuedNonce(NONCE, "dev-rt", profile.bank, profile.pcrs, profile.name, NOW + 60)
    ctx = AppraisalContext(ak.key.public_key(), "sha256", issued, profile, "sha256:rt", None, None)
    return appraise(evidence, ctx, NOW)


def index_of(events: list[LogEvent], pcr: int, event_type: int, data_prefix: bytes) -> int:
    return next(
        i
        for i, e in enumerate(events)
        if e.pcr == pcr and e.event_type == event_type and e.data.startswith(data_prefix)
    )


def relabel(events: list[LogEvent], index: int, event_type: int) -> None:
    """Rewrite an event's label in the log: its digest (and so the replay) is unchanged."""
    events[index] = replace(events[index], event_type=event_type)


def utf16(text: str) -> bytes:
    return (text + "\x00").encode("utf-16-le")


def variable(name: str, value: bytes) -> bytes:
    guid = efi.EFI_GLOBAL_VARIABLE if name == "SecureBoot" else efi.EFI_IMAGE_SECURITY_DATABASE_GUID
    return efi.variable_data(guid, name, value)


def test_baseline_good_boot_affirms_and_each_bad_boot_is_contraindicated(ak: SoftAk) -> None:
    """The attacks below start from these contraindicated boots; the good boot affirms."""
    assert appraise_log(ak, events_of(GOOD_A)).status is Status.AFFIRMING
    for bad in (INIT_SH, OLD_FIRMWARE_NEW_OS, SECUREBOOT_OFF):
        assert appraise_log(ak, events_of(bad)).status is Status.CONTRAINDICATED, bad.name


# ------------------------------------------------------------------ open findings


def _cmdline_append_pcr8(events: list[LogEvent]) -> Profile:
    text = f"kernel_cmdline: {GOOD_CMDLINE}".encode() + b"\x00"
    events.append(measured(8, EventType.EV_IPL, text, BANKS, GOOD_CMDLINE.encode()))
    return PROFILE


def _cmdline_hide_and_append_pcr8(events: list[LogEvent]) -> Profile:
    # Rewriting the booted cmdline's data to something unrecognised hides it without a problem:
    # a "first one wins" or "only one allowed" fix alone would not stop this.
    booted = index_of(events, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    events[booted] = replace(events[booted], data=b"opaque\x00")
    return _cmdline_append_pcr8(events)


def _cmdline_rekind_and_append_pcr8(events: list[LogEvent]) -> Profile:
    # GRUB's "<kind>: " prefix is not measured: the booted cmdline stays digest-bound as a
    # grub_cmd, so "every PCR 8 event verified, one kernel_cmdline" alone would not stop this.
    booted = index_of(events, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    text = events[booted].data.removeprefix(b"kernel_cmdline: ")
    events[booted] = replace(events[booted], data=b"grub_cmd: " + text)
    return _cmdline_append_pcr8(events)


def _cmdline_append_pcr12(events: list[LogEvent]) -> Profile:
    # A GRUB device whose profile also quotes PCR 12 (systemd-boot's): PCR 12 is empty, so the
    # attacker's event is its only one; events of different PCRs may be interleaved freely.
    events.append(measured(12, EventType.EV_IPL, utf16(GOOD_CMDLINE), BANKS))
    text = (GOLDEN_DIR / "sim-gateway.yaml").read_text()
    wider = text.replace("pcrs: [0, 4, 7, 8, 9]", "pcrs: [0, 4, 7, 8, 9, 12]")
    profile = _sim_profile({"sim-gateway.yaml": wider})
    assert 12 in profile.pcrs
    return profile


@pytest.mark.parametrize(
    "attack",
    [
        _cmdline_append_pcr8,
        _cmdline_hide_and_append_pcr8,
        _cmdline_rekind_and_append_pcr8,
        _cmdline_append_pcr12,
    ],
)
def test_kernel_cmdline_reextended_after_an_init_sh_boot_is_rejected(
    ak: SoftAk, attack: object
) -> None:
    events = events_of(INIT_SH)
    profile = attack(events)  # type: ignore[operator]
    verdict = appraise_log(ak, events, profile)
    assert verdict.status is Status.CONTRAINDICATED, verdict.reasons


def test_scrtm_version_relabelled_and_reextended_is_rejected(ak: SoftAk) -> None:
    events = events_of(OLD_FIRMWARE_NEW_OS)
    relabel(events, index_of(events, 0, EventType.EV_S_CRTM_VERSION, b""), EventType.EV_POST_CODE)
    events.append(measured(0, EventType.EV_S_CRTM_VERSION, utf16(GOOD_A.scrtm_version), BANKS))
    verdict = appraise_log(ak, events)
    assert verdict.status is Status.CONTRAINDICATED, (verdict.release, verdict.reasons)


STALE_DBX = replace(GOOD_A, secure_boot=replace(GOOD_A.secure_boot, dbx=DEFAULT_DBX[:1]))


@pytest.mark.parametrize(
    ("firmware", "name", "value", "label"),
    [
        (SECUREBOOT_OFF, "SecureBoot", b"\x01", EV_EFI_SPDM_DEVICE_POLICY),
        (SECUREBOOT_OFF, "SecureBoot", b"\x01", EventType.EV_EFI_VARIABLE_AUTHORITY),
        (
            STALE_DBX,
            "dbx",
            efi.sha256_signature_list(efi.FLEET_OWNER_GUID, DEFAULT_DBX),
            EV_EFI_SPDM_DEVICE_AUTHORITY,
        ),
    ],
    ids=["secureboot-off-as-spdm", "secureboot-off-as-authority", "stale-dbx-as-spdm-authority"],
)
def test_secure_boot_variable_relabelled_and_reextended_is_rejected(
    ak: SoftAk, firmware: FirmwareProfile, name: str, value: bytes, label: int
) -> None:
    events = events_of(firmware)
    assert appraise_log(ak, events).status is Status.CONTRAINDICATED
    real = index_of(events, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(name, b"")[:24])
    relabel(events, real, label)
    events.append(
        measured(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(name, value), BANKS)
    )
    verdict = appraise_log(ak, events)
    assert verdict.status is Status.CONTRAINDICATED, (verdict.release, verdict.reasons)


# ------------------------------------------------------------------ refused (regressions)


def test_scrtm_version_reextended_without_hiding_the_real_one_is_rejected(ak: SoftAk) -> None:
    """The first verified S-CRTM version counts: one appended after boot does not."""
    events = events_of(OLD_FIRMWARE_NEW_OS)
    events.append(measured(0, EventType.EV_S_CRTM_VERSION, utf16(GOOD_A.scrtm_version), BANKS))
    verdict = appraise_log(ak, events)
    assert verdict.status is Status.CONTRAINDICATED
    assert "scrtm_version_mismatch" in [r.code for r in verdict.reasons]


@pytest.mark.parametrize(("pcr", "label"), [(0, EventType.EV_NO_ACTION), (0xFFFFFFFF, 0x8)])
def test_unextended_scrtm_version_logged_first_is_rejected(
    ak: SoftAk, pcr: int, label: int
) -> None:
    """An event the TPM never extended (EV_NO_ACTION, PCR index outside 0-23) is no fact."""
    events = events_of(OLD_FIRMWARE_NEW_OS)
    version = utf16(GOOD_A.scrtm_version)
    digest = hashlib.sha256(version).digest()
    events.insert(0, LogEvent(pcr, label, (("sha256", digest),), version))
    verdict = appraise_log(ak, events)
    assert verdict.status is Status.CONTRAINDICATED
    assert "scrtm_version_mismatch" in [r.code for r in verdict.reasons]


def test_boot_application_reextended_after_boot_is_rejected(ak: SoftAk) -> None:
    """PCR 5 is not quoted (ExitBootServices unseen), yet the exact chain catches an extra app."""
    events = events_of(GOOD_A)
    shim = index_of(events, 4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"")
    events.append(events[shim])
    verdict = appraise_log(ak, events)
    assert "boot_chain_mismatch" in [r.code for r in verdict.reasons]
    assert verdict.status is Status.CONTRAINDICATED


def _quote_parts(ak: SoftAk, nonce: bytes = NONCE) -> tuple[bytes, dict[int, bytes]]:
    replayed = replay(events_of(GOOD_A), BANKS)["sha256"]
    values = {i: replayed[i] for i in PROFILE.pcrs}
    return attest_bytes(QuoteFields(nonce, "sha256", values)), values


@pytest.mark.parametrize(
    "selection",
    [
        u32(2)
        + pcr_select("sha256", PROFILE.pcrs)[4:]
        + u16(HASH_IDS["sha1"])
        + b"\x03\x00\x00\x00",
        u32(1) + u16(HASH_IDS["sha256"]) + b"\x00",
        u32(0),
    ],
    ids=["second-bank", "empty-bitmap", "no-bank"],
)
def test_signed_selection_with_extra_bank_or_none_is_rejected(ak: SoftAk, selection: bytes) -> None:
    attest, values = _quote_parts(ak)
    forged = attest.replace(pcr_select("sha256", PROFILE.pcrs), selection)
    assert forged != attest
    with pytest.raises(errors.ReplayMismatch):
        appraise_quote(ak, forged, sign(ak.key, forged), values)


def test_extra_data_with_the_nonce_as_prefix_is_rejected(ak: SoftAk) -> None:
    attest, values = _quote_parts(ak, NONCE + b"\x00")
    with pytest.raises(errors.NonceMismatch):
        appraise_quote(ak, attest, sign(ak.key, attest), values)


def test_unknown_field_nested_in_a_pcr_value_is_refused() -> None:
    request = pb.AttestRequest(device_id="dev-rt", nonce=NONCE, quote=b"q", signature=b"s")
    value = request.pcr_values.add(pcr=7, digest=bytes(32))
    value.MergeFromString(b"\x7a\x01x")  # field 15, length 1: unknown to PcrValue
    with pytest.raises(errors.MalformedEvidence, match="PcrValue"):
        evidence_from(request, DEFAULT_LIMITS)
