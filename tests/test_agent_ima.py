"""The agent's IMA cursor: frame boundaries, only new entries sent, resets on a new boot."""

from __future__ import annotations

from pathlib import Path

import pytest
from imadevice import Device

from agent import ima
from verifier.ima import write
from verifier.ima.parse import parse_binary


def listed(tmp_path: Path, device: Device) -> Path:
    path = tmp_path / "binary_runtime_measurements"
    path.write_bytes(device.log)
    return path


def test_frame_ends_are_the_entry_boundaries_the_verifier_parses() -> None:
    device = Device()
    device.run("/usr/bin/bash")
    device.append(write.buf_entry("kexec-cmdline", b"root=/dev/vda1"))
    device.run("/usr/bin/ls", signature=b"")
    ends = ima.frame_ends(device.log)
    sizes = [len(raw) for raw in device.raw]
    assert list(ends) == [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert len(parse_binary(device.log).entries) == len(ends)


def test_a_last_entry_cut_short_waits_for_the_next_attestation() -> None:
    device = Device()
    device.run("/usr/bin/bash")
    assert ima.frame_ends(device.log[:-3]) == (len(device.raw[0]),)


def test_a_bad_template_name_length_is_an_error() -> None:
    bad = bytes(4 + 20) + (1000).to_bytes(4, "little") + bytes(1000)
    with pytest.raises(ima.ImaListError):
        ima.frame_ends(bad)


def test_only_entries_after_the_accepted_count_are_sent(tmp_path: Path) -> None:
    device = Device()
    device.run("/usr/bin/bash")
    path = listed(tmp_path, device)
    first = ima.payload(path, "boot-1", None)
    assert (first.first, first.data) == (0, device.log)
    cursor = ima.advanced(first, 2)
    device.run("/usr/bin/ls")
    path.write_bytes(device.log)
    second = ima.payload(path, "boot-1", cursor)
    assert (second.first, second.data) == (2, device.raw[2])


def test_entries_the_quote_did_not_cover_are_sent_again(tmp_path: Path) -> None:
    device = Device()
    device.run("/usr/bin/bash")
    device.run("/usr/bin/ls")
    sent = ima.payload(listed(tmp_path, device), "b", None)
    cursor = ima.advanced(sent, 2)  # the verifier accepted 2 of 3
    assert ima.payload(listed(tmp_path, device), "b", cursor).data == device.raw[2]


def test_a_new_boot_sends_the_whole_list(tmp_path: Path) -> None:
    device = Device()
    device.run("/usr/bin/bash")
    path = listed(tmp_path, device)
    cursor = ima.advanced(ima.payload(path, "boot-1", None), 2)
    again = ima.payload(path, "boot-2", cursor)
    assert (again.first, again.data) == (0, device.log)


def test_a_shorter_list_than_the_cursor_sends_the_whole_list(tmp_path: Path) -> None:
    device = Device()
    device.run("/usr/bin/bash")
    device.run("/usr/bin/ls")
    path = listed(tmp_path, device)
    cursor = ima.advanced(ima.payload(path, "b", None), 3)
    path.write_bytes(device.raw[0])
    assert ima.payload(path, "b", cursor).first == 0


def test_an_accepted_count_past_what_was_sent_resets_the_cursor(tmp_path: Path) -> None:
    device = Device()
    sent = ima.payload(listed(tmp_path, device), "b", None)
    assert ima.advanced(sent, 5) == ima.Cursor("b", 0, 0)


def test_the_cursor_survives_a_restart_and_a_damaged_one_is_dropped(tmp_path: Path) -> None:
    ima.save_cursor(tmp_path, ima.Cursor("b", 4, 400))
    assert ima.load_cursor(tmp_path) == ima.Cursor("b", 4, 400)
    assert (tmp_path / ima.CURSOR_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / ima.CURSOR_FILE).write_text("{not json")
    assert ima.load_cursor(tmp_path) is None
