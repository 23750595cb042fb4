"""UEFI structures the simulated firmware measures, encoded byte for byte.

Everything here is little-endian and packed, as in the UEFI 2.x and TCG PC Client Platform
Firmware Profile (PFP) specifications:

- ``EFI_GUID``: the mixed-endian 16-byte form (``uuid.UUID.bytes_le``).
- ``EFI_SIGNATURE_LIST`` = SignatureType (GUID), SignatureListSize (u32), SignatureHeaderSize
  (u32, 0 here), SignatureSize (u32), then SignatureHeader (empty) and entries of
  ``EFI_SIGNATURE_DATA`` = SignatureOwner (GUID) + SignatureData, all of SignatureSize bytes.
  X.509 certificates differ in size, so each goes in its own list (as real db variables do).
- ``UEFI_VARIABLE_DATA`` (PFP, EV_EFI_VARIABLE_*) = VariableName (GUID), UnicodeNameLength (u64,
  CHAR16 count without a NUL), VariableDataLength (u64), UnicodeName (UTF-16LE, no NUL),
  VariableData.
- ``UEFI_IMAGE_LOAD_EVENT`` (EV_EFI_BOOT_SERVICES_APPLICATION) = ImageLocationInMemory (u64),
  ImageLengthInMemory (u64), ImageLinkTimeAddress (u64), LengthOfDevicePath (u64), DevicePath.
- ``EFI_LOAD_OPTION`` (Boot####) = Attributes (u32), FilePathListLength (u16), Description
  (UTF-16LE, NUL-terminated), FilePathList, OptionalData.

Functions are pure; none reads the clock or the file system.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence


def guid(text: str) -> bytes:
    """The 16-byte on-disk form of a GUID written in registry format."""
    return uuid.UUID(text).bytes_le


EFI_GLOBAL_VARIABLE = guid("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE_GUID = guid("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
EFI_CERT_X509_GUID = guid("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256_GUID = guid("c1c41626-504c-4092-aca9-41f936934328")
SHIM_LOCK_GUID = guid("605dab50-e046-4300-abb6-3dd810dd8b23")
# SignatureOwner of every entry the simulator enrolls (an arbitrary, fixed test GUID).
FLEET_OWNER_GUID = guid("f1ee7a77-0000-4e57-8000-7e57c0ffee00")

LOAD_OPTION_ACTIVE = 0x00000001


def signature_data(owner: bytes, data: bytes) -> bytes:
    """One ``EFI_SIGNATURE_DATA``: owner GUID then the signature (cert or hash)."""
    _check_guid(owner)
    return owner + data


def signature_list(signature_type: bytes, owner: bytes, entries: Sequence[bytes]) -> bytes:
    """One ``EFI_SIGNATURE_LIST`` holding ``entries``, which must all have the same size."""
    _check_guid(signature_type)
    if not entries:
        raise ValueError("an EFI_SIGNATURE_LIST needs at least one entry")
    size = 16 + len(entries[0])
    if any(16 + len(e) != size for e in entries):
        raise ValueError("entries of one EFI_SIGNATURE_LIST must have equal sizes")
    body = b"".join(signature_data(owner, e) for e in entries)
    header = signature_type + struct.pack("<III", 28 + len(body), 0, size)
    return header + body


def x509_signature_lists(owner: bytes, certificates: Sequence[bytes]) -> bytes:
    """A variable's value holding DER certificates, one ``EFI_CERT_X509_GUID`` list each."""
    return b"".join(signature_list(EFI_CERT_X509_GUID, owner, [c]) for c in certificates)


def sha256_signature_list(owner: bytes, hashes: Sequence[bytes]) -> bytes:
    """A variable's value holding SHA-256 image hashes in one ``EFI_CERT_SHA256_GUID`` list."""
    if any(len(h) != 32 for h in hashes):
        raise ValueError("EFI_CERT_SHA256_GUID entries are 32-byte digests")
    if not hashes:
        return b""
    return signature_list(EFI_CERT_SHA256_GUID, owner, list(hashes))


def variable_data(vendor: bytes, name: str, data: bytes) -> bytes:
    """``UEFI_VARIABLE_DATA`` for the variable ``vendor``:``name`` with value ``data``."""
    _check_guid(vendor)
    unicode_name = name.encode("utf-16-le")
    return vendor + struct.pack("<QQ", len(name), len(data)) + unicode_name + data


def file_path_device_path(path: str) -> bytes:
    """A device path of one MEDIA_FILEPATH_DP node (type 4, subtype 4) and the end node."""
    text = path.replace("/", "\\").encode("utf-16-le") + b"\x00\x00"
    node = struct.pack("<BBH", 4, 4, 4 + len(text)) + text
    end = struct.pack("<BBH", 0x7F, 0xFF, 4)
    return node + end


def image_load_event(location: int, length: int, link_time_address: int, path: str) -> bytes:
    """``UEFI_IMAGE_LOAD_EVENT`` for an image loaded at ``location`` from file ``path``."""
    device_path = file_path_device_path(path)
    return struct.pack("<QQQQ", location, length, link_time_address, len(device_path)) + (
        device_path
    )


def load_option(description: str, path: str, attributes: int = LOAD_OPTION_ACTIVE) -> bytes:
    """``EFI_LOAD_OPTION``: the value of a Boot#### variable that starts ``path``."""
    device_path = file_path_device_path(path)
    text = description.encode("utf-16-le") + b"\x00\x00"
    return struct.pack("<IH", attributes, len(device_path)) + text + device_path


def boot_order(options: Sequence[int]) -> bytes:
    """The value of BootOrder: UINT16 option numbers."""
    return b"".join(struct.pack("<H", n) for n in options)


def _check_guid(value: bytes) -> None:
    if len(value) != 16:
        raise ValueError(f"a GUID is 16 bytes, got {len(value)}")
