"""Named device firmware profiles: the releases and attacks the scenarios and the demo boot.

- ``good-a``: release A (FleetFW 1.0.0, kernel 6.1.0), Secure Boot on with the test keys.
- ``good-b``: release B (FleetFW 1.1.0, kernel 6.1.5): a newer firmware and kernel.
- ``retired``: an old release (FleetFW 0.9.0, kernel 5.15.0) that golden files retire.
- ``tampered-bootloader``: good-a with a different grub binary (same path, version, name).
- ``secureboot-off``: good-a with the SecureBoot variable 0 (no authority event).
- ``init-sh``: good-a with ``init=/bin/sh`` appended to the kernel command line.

Every profile is a frozen value; derive others with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import replace

from simulator.firmware import BootComponent, FirmwareBlob, FirmwareProfile
from simulator.secureboot import default_secure_boot

SHIM_PATH = "/EFI/fleet/shimx64.efi"
GRUB_PATH = "/EFI/fleet/grubx64.efi"
KERNEL_ARGS = "root=/dev/sda1 ro quiet"


def release(name: str, release_name: str, firmware: str, kernel: str) -> FirmwareProfile:
    """A good boot of firmware version ``firmware`` (x.y.z) and Linux ``kernel`` (x.y.z)."""
    return FirmwareProfile(
        name=name,
        release=release_name,
        scrtm_version=f"FleetFW {firmware}",
        blobs=(
            FirmwareBlob("PEIFV", firmware, 0x00820000),
            FirmwareBlob("DXEFV", firmware, 0x00900000),
        ),
        secure_boot=default_secure_boot(),
        shim=BootComponent("shim", SHIM_PATH, "15.8"),
        grub=BootComponent("grub", GRUB_PATH, "2.06"),
        kernel=BootComponent("kernel", f"/vmlinuz-{kernel}", kernel),
        initrd=BootComponent("initrd", f"/initrd.img-{kernel}", kernel),
        kernel_args=KERNEL_ARGS,
    )


GOOD_A = release("good-a", "A", "1.0.0", "6.1.0")
GOOD_B = release("good-b", "B", "1.1.0", "6.1.5")
RETIRED = release("retired", "retired", "0.9.0", "5.15.0")
TAMPERED_BOOTLOADER = replace(
    GOOD_A, name="tampered-bootloader", grub=replace(GOOD_A.grub, variant="tampered")
)
SECUREBOOT_OFF = replace(
    GOOD_A, name="secureboot-off", secure_boot=default_secure_boot(enabled=False)
)
INIT_SH = replace(GOOD_A, name="init-sh", kernel_args=f"{KERNEL_ARGS} init=/bin/sh")

PROFILES: dict[str, FirmwareProfile] = {
    p.name: p for p in (GOOD_A, GOOD_B, RETIRED, TAMPERED_BOOTLOADER, SECUREBOOT_OFF, INIT_SH)
}


def profile(name: str) -> FirmwareProfile:
    """The named profile; ``KeyError`` lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown firmware profile {name!r}; known: {sorted(PROFILES)}") from None
