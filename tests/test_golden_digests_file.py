"""``runtime: digests_file:``: a runtime policy's digests in a sha256sum-format side file.

Each test tries a way to get a digest past the loader that the operators did not ship in the
golden directory, or to change the policy without the golden digest (on every verdict) or
the policy digest (binding a device's IMA state) changing with it.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from verifier import auditlog
from verifier.cli.audit import _GoldenDirFiles
from verifier.cli.golden import lint
from verifier.golden.load import (
    GoldenError,
    golden_digest,
    load_golden_dir,
    load_golden_files,
    load_golden_texts,
)
from verifier.ima.digestsfile import (
    MAX_PROBLEMS,
    DigestsFileError,
    format_digest_lines,
    parse_digest_lines,
)
from verifier.ima.section import RuntimeSectionError, parse_runtime_section
from verifier.limits import DEFAULT_LIMITS, Limits
from verifier.livegolden import LiveGolden
from verifier.records import GoldenSetRecord
from verifier.store import open_store

BASE = """\
profile: {name}
match: {{model: {name}}}
verdict_lifetime: 1h
pcrs: [0, 7]
releases:
  - name: r1
    pcrs:
      0: "{zero}"
runtime:
  digests_file: {file}
"""
A = "11" * 32
B = "22" * 32
C = "33" * 32


def profile(name: str = "rt", file: str = "rt.sums", extra: str = "") -> str:
    return BASE.format(name=name, zero="00" * 32, file=file) + extra


def golden(tmp_path: Path, sums: str | bytes, yaml_text: str | None = None) -> Path:
    directory = tmp_path / "golden"
    directory.mkdir(exist_ok=True)
    (directory / "rt.yaml").write_text(profile() if yaml_text is None else yaml_text)
    data = sums.encode() if isinstance(sums, str) else sums
    (directory / "rt.sums").write_bytes(data)
    return directory


def problems(directory: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    with pytest.raises(GoldenError) as info:
        load_golden_dir(directory, limits)
    return [str(p) for p in info.value.problems]


# --- what a digests file allows ----------------------------------------------------------


def test_a_digests_file_allows_its_paths_merged_with_the_inline_digests(tmp_path: Path) -> None:
    inline = f"  digests:\n    /usr/bin/bash: [sha256:{C}]\n    /usr/bin/ls: [sha256:{A}]\n"
    directory = golden(
        tmp_path,
        f"# shipped with release 7\n\n{A}  /usr/bin/bash\nsha256:{B} */usr/bin/ls\n",
        profile(extra=inline),
    )
    loaded = load_golden_dir(directory)
    (rt,) = loaded.profiles
    assert rt.runtime is not None
    digests = rt.runtime.digests
    assert digests["/usr/bin/bash"] == (bytes.fromhex(A), bytes.fromhex(C))
    assert digests["/usr/bin/ls"] == (bytes.fromhex(B), bytes.fromhex(A))
    assert loaded.files == ("rt.sums", "rt.yaml")


def test_a_path_with_spaces_and_escapes_is_read_whole() -> None:
    lines = [
        f"{A}  /srv/a b  c \n".encode(),
        f"\\{B}  /opt/new\\nline\\\\x\n".encode(),
        f"{C}  /opt/back\\slash\n".encode(),  # no leading backslash: taken as it is
    ]
    parsed = parse_digest_lines(lines)
    assert set(parsed.digests) == {"/srv/a b  c ", "/opt/new\nline\\x", "/opt/back\\slash"}
    written = list(format_digest_lines({p: [f"sha256:{A}"] for p in parsed.digests}))
    assert set(parse_digest_lines(w.encode() for w in written).digests) == set(parsed.digests)


def test_a_digest_repeated_for_a_path_is_kept_once() -> None:
    parsed = parse_digest_lines([f"{A}  /a\n".encode(), f"sha256:{A}  /a\n".encode()])
    assert parsed.digests == {"/a": (bytes.fromhex(A),)} and parsed.count == 1


def test_the_same_digests_file_named_by_two_profiles_is_one_shared_structure(
    tmp_path: Path,
) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    (directory / "other.yaml").write_text(profile("other"))
    first, second = load_golden_dir(directory).profiles
    assert first.runtime is not None and second.runtime is not None
    assert first.runtime.digests is second.runtime.digests


# --- where the file may be ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("../outside.sums", "leaves the golden directory"),
        ("sub/../../outside.sums", "leaves the golden directory"),
        ("/etc/outside.sums", "is absolute"),
        ("./rt.sums", "plain relative path"),
        ("sub//rt.sums", "plain relative path"),
        ("other.yaml", "may not end in .yaml"),
    ],
)
def test_a_digests_file_outside_the_golden_directory_is_refused(
    tmp_path: Path, name: str, said: str
) -> None:
    (tmp_path / "outside.sums").write_text(f"{A}  /usr/bin/evil\n")
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n", profile(file=f'"{name}"'))
    (directory / "sub").mkdir()
    (found,) = problems(directory)
    assert found.startswith(f"{directory / 'rt.yaml'}:10:17: runtime.digests_file: ")
    assert said in found


def test_a_symlinked_digests_file_escaping_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.sums").write_text(f"{A}  /usr/bin/evil\n")
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    (directory / "rt.sums").unlink()
    (directory / "rt.sums").symlink_to(tmp_path / "outside.sums")
    (found,) = problems(directory)
    assert "resolves outside the golden directory" in found
    (directory / "sub").mkdir()
    (directory / "sub" / "up").symlink_to(tmp_path)  # a directory link on the way out
    (directory / "rt.yaml").write_text(profile(file="sub/up/outside.sums"))
    (found,) = problems(directory)
    assert "resolves outside the golden directory" in found


def test_a_symlink_inside_the_directory_is_followed(tmp_path: Path) -> None:
    directory = golden(tmp_path, "")
    (directory / "release-7.sums").write_text(f"{A}  /usr/bin/bash\n")
    (directory / "rt.sums").unlink()
    (directory / "rt.sums").symlink_to("release-7.sums")
    (rt,) = load_golden_dir(directory).profiles
    assert rt.runtime is not None and "/usr/bin/bash" in rt.runtime.digests


def test_a_fifo_or_a_directory_as_digests_file_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    directory = golden(tmp_path, "")
    (directory / "rt.sums").unlink()
    os.mkfifo(directory / "rt.sums")
    (found,) = problems(directory)
    assert "is not a regular file" in found
    (directory / "rt.sums").unlink()
    (directory / "rt.sums").mkdir()
    (found,) = problems(directory)
    assert "is not a regular file" in found


def test_a_missing_digests_file_is_refused(tmp_path: Path) -> None:
    directory = golden(tmp_path, "")
    (directory / "rt.sums").unlink()
    (found,) = problems(directory)
    assert "cannot read 'rt.sums': No such file or directory" in found


def test_an_oversized_digests_file_is_refused(tmp_path: Path) -> None:
    directory = golden(tmp_path, "".join(f"{i:064x}  /usr/bin/f{i}\n" for i in range(20)))
    size = (directory / "rt.sums").stat().st_size
    limits = Limits(max_runtime_digests_file_bytes=size - 1)
    (found,) = problems(directory, limits)
    assert f"is larger than {size - 1} bytes (max_runtime_digests_file_bytes)" in found
    with pytest.raises(GoldenError, match="larger than"):  # given as files, the same limit
        load_golden_files(
            {"rt.yaml": profile().encode(), "rt.sums": (directory / "rt.sums").read_bytes()},
            limits,
        )
    assert load_golden_dir(directory, Limits(max_runtime_digests_file_bytes=size))


def test_more_digests_than_the_policy_limit_with_the_inline_ones_is_refused(
    tmp_path: Path,
) -> None:
    sums = "".join(f"{i:064x}  /usr/bin/f{i}\n" for i in range(5))
    inline = f"  digests:\n    /usr/bin/new: [sha256:{A}]\n"
    directory = golden(tmp_path, sums, profile(extra=inline))
    (found,) = problems(directory, Limits(max_ima_policy_digests=5))
    assert "runtime.digests_file: more than 5 digests in the file and the section together" in (
        found
    )
    assert load_golden_dir(directory, Limits(max_ima_policy_digests=6))


def test_more_digests_for_a_path_than_the_limit_across_file_and_section_is_refused(
    tmp_path: Path,
) -> None:
    inline = f"  digests:\n    /usr/bin/bash: [sha256:{C}]\n"
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n{B}  /usr/bin/bash\n", profile(extra=inline))
    (found,) = problems(directory, Limits(max_ima_digests_per_path=2))
    assert "'/usr/bin/bash': more than 2 digests for the path" in found
    found_in_file = problems(directory, Limits(max_ima_digests_per_path=1))
    assert any("rt.sums:2:1: more than 1 digests for a path" in p for p in found_in_file)


# --- its lines ---------------------------------------------------------------------------


def test_a_digests_file_line_without_a_path_is_refused_with_its_line(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"# header\n{A}  /usr/bin/bash\n{B}  \n")
    found = problems(directory)
    assert found == [
        f"{directory / 'rt.yaml'}:10:17: runtime.digests_file: 'rt.sums' has 1 problem "
        f"(listed at {directory / 'rt.sums'})",
        f"{directory / 'rt.sums'}:3:67: no path after the digest",
    ]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (f"{A}  usr/bin/bash", "path 'usr/bin/bash' is not absolute"),
        (f"{A}  /usr/bin/ba\0sh", "a NUL byte"),
        (f"{A}  /usr/bin/\xff".encode("latin-1").decode("latin-1"), "not UTF-8"),
        (f"{A} /usr/bin/bash", "two spaces or ' *'"),
        (f"{A}", "no separator"),
        (f"{A}\t/usr/bin/bash", "no separator"),
        (f"{'ab' * 33}  /usr/bin/bash", "33-byte digest is no known digest"),
        (f"sha1:{A}  /usr/bin/bash", "32-byte digest is no sha1 digest"),
        (f"whirlpool:{A}  /usr/bin/bash", "unknown digest algorithm 'whirlpool'"),
        (f"{A[:-1]}g  /usr/bin/bash", "is not hex"),
        (f"{A[:-1]}  /usr/bin/bash", "is not hex"),
        (f"{A[:32]} {A[32:]}  /usr/bin/bash", "two spaces or ' *'"),
        (f"{A}  /usr/bin/bash\r", "carriage return"),
        (f"\\{A}  /usr/bin/ba\\tsh", "invalid escape"),
        (f"{A}  /" + "x" * 5000, "longer than"),
    ],
)
def test_a_bad_line_is_refused_with_its_line(line: str, said: str) -> None:
    raw = line.encode("latin-1") if "\xff" in line else line.encode()
    with pytest.raises(DigestsFileError) as info:
        parse_digest_lines([b"# ok\n", f"{B}  /ok\n".encode(), raw + b"\n"])
    (problem,) = info.value.problems
    assert problem.line == 3 and said in problem.message, problem


def test_an_overlong_line_stops_the_parse(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /" + "x" * 20_000 + f"\n{B}  relative\n")
    found = problems(directory)
    assert len(found) == 2 and "rt.sums:1:1: line longer than" in found[1]


def test_problems_are_listed_up_to_a_bound_then_the_parse_stops(tmp_path: Path) -> None:
    directory = golden(tmp_path, "".join(f"{A}  relative{i}\n" for i in range(500)))
    found = problems(directory)
    assert len(found) == 1 + MAX_PROBLEMS + 1  # the reference, the bound, the stop
    assert found[-1].endswith(f"stopped after {MAX_PROBLEMS} problems; fix these first")
    assert "has 51 problems" in found[0]


def test_lint_reports_the_files_problems_at_their_lines(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /ok\n{A}  relative\n")
    out = io.StringIO()
    assert lint(directory, out, io.StringIO()) == 1
    assert f"{directory / 'rt.sums'}:2:67: path 'relative' is not absolute\n" in out.getvalue()
    assert "2 problems in 2 files" in out.getvalue()
    (directory / "rt.sums").write_text(f"{A}  /ok\n")
    out = io.StringIO()
    assert lint(directory, out, io.StringIO()) == 0
    assert out.getvalue().startswith("ok: 2 files, 1 profiles")


# --- identity ----------------------------------------------------------------------------


def test_a_changed_digests_file_changes_the_golden_digest(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    before = load_golden_dir(directory)
    (directory / "rt.sums").write_text(f"{A}  /usr/bin/bash\n# a comment changes the bytes\n")
    after = load_golden_dir(directory)
    assert before.digest != after.digest
    assert before.profiles[0].runtime and after.profiles[0].runtime
    # the policy digest binds a device's IMA state: a changed file must re-judge the boot
    assert before.profiles[0].runtime.digest != after.profiles[0].runtime.digest


def test_the_digest_from_given_files_equals_the_directorys(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    from_dir = load_golden_dir(directory)
    files = {name: (directory / name).read_bytes() for name in from_dir.files}
    assert load_golden_files(files).digest == from_dir.digest == golden_digest(files)
    texts = {name: data.decode() for name, data in files.items()}
    assert load_golden_texts(texts).digest == from_dir.digest


def test_a_set_without_digests_files_keeps_the_digest_it_always_had() -> None:
    text = profile().replace("runtime:\n  digests_file: rt.sums\n", "")
    expected = hashlib.sha256(b"fleet-attest golden set v1\x00")
    for part in (b"rt.yaml", text.encode()):
        expected.update(len(part).to_bytes(8, "big") + part)
    assert load_golden_texts({"rt.yaml": text}).digest == "sha256:" + expected.hexdigest()


def test_a_given_file_no_profile_names_is_refused() -> None:
    text = profile().replace("runtime:\n  digests_file: rt.sums\n", "")
    with pytest.raises(GoldenError) as info:
        load_golden_files({"rt.yaml": text.encode(), "smuggled.sums": f"{A}  /x\n".encode()})
    (problem,) = info.value.problems
    assert str(problem).startswith("smuggled.sums:0:0: not a profile (*.yaml)")


def test_a_digests_file_cannot_be_named_where_no_loader_reads_it() -> None:
    with pytest.raises(RuntimeSectionError, match="only be read by the golden loader"):
        parse_runtime_section({"digests_file": "rt.sums"})


# --- the live set, its history and the watcher -------------------------------------------


def test_the_golden_history_keeps_the_digests_file_and_rebuilds_the_set(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    store = open_store(tmp_path / "v.db")
    try:
        live = LiveGolden.start(directory, store, time.time)
        digest = live.current().profile_set.digest
        record = store.golden_set(digest)
        assert record is not None and set(record.files) == {"rt.yaml", "rt.sums"}
        assert (
            record.files["rt.sums"]
            == hashlib.sha256((directory / "rt.sums").read_bytes()).hexdigest()
        )
        rebuilt = auditlog.golden_of(store, digest, None, Limits())
        assert rebuilt.digest == digest
        assert rebuilt.profiles[0].runtime is not None
        assert "/usr/bin/bash" in rebuilt.profiles[0].runtime.digests
    finally:
        store.close()


def test_a_change_to_the_digests_file_alone_is_reloaded(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    store = open_store(tmp_path / "v.db")
    try:
        live = LiveGolden.start(directory, store, time.time)
        before = live.current().profile_set.digest
        assert live.reload_if_changed() is None
        (directory / "rt.sums").write_text(f"{A}  /usr/bin/bash\n{B}  /usr/bin/ls\n")
        result = live.reload_if_changed()
        assert result is not None and result.applied and result.digest != before
        policy = live.current().profile_set.profiles[0].runtime
        assert policy is not None and "/usr/bin/ls" in policy.digests
        assert store.golden_set(result.digest) is not None
        (directory / "rt.sums").write_text(f"{A}  relative\n")  # a bad file keeps the last set
        refused = live.reload_if_changed()
        assert refused is not None and not refused.applied and refused.digest == result.digest
        assert any("rt.sums:1:67" in str(p) for p in live.problems)
    finally:
        store.close()


def test_a_digests_file_created_after_a_refused_reload_is_noticed(tmp_path: Path) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    store = open_store(tmp_path / "v.db")
    try:
        live = LiveGolden.start(directory, store, time.time)
        (directory / "sub").mkdir()
        (directory / "rt.yaml").write_text(profile(file="sub/new.sums"))
        refused = live.reload_if_changed()
        assert refused is not None and not refused.applied
        again = live.reload_if_changed()  # the new name is watched from now on: once more
        assert again is not None and not again.applied
        assert live.reload_if_changed() is None
        (directory / "sub" / "new.sums").write_text(f"{C}  /usr/bin/new\n")
        result = live.reload_if_changed()
        assert result is not None and result.applied, live.problems
        assert live.current().profile_set.files == ("rt.yaml", "sub/new.sums")
    finally:
        store.close()


def test_replay_given_the_directory_reads_the_digests_file_the_history_names(
    tmp_path: Path,
) -> None:
    directory = golden(tmp_path, f"{A}  /usr/bin/bash\n")
    loaded = load_golden_dir(directory)
    files = {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in loaded.files}
    store = open_store(tmp_path / "v.db")
    try:  # a history that kept the digests only: replay needs the operator's files
        store.record_golden_set(GoldenSetRecord(loaded.digest, time.time(), files), {})
        with pytest.raises(auditlog.ReplayUnavailable, match="pass its files"):
            auditlog.golden_of(store, loaded.digest, None, DEFAULT_LIMITS)
        given = _GoldenDirFiles(directory)
        assert auditlog.golden_of(store, loaded.digest, given, DEFAULT_LIMITS).digest == (
            loaded.digest
        )
        (directory / "rt.sums").write_text(f"{B}  /usr/bin/bash\n")  # not the file of then
        with pytest.raises(auditlog.ReplayUnavailable, match="the files give golden set"):
            auditlog.golden_of(store, loaded.digest, _GoldenDirFiles(directory), DEFAULT_LIMITS)
        (directory / "rt.sums").unlink()
        with pytest.raises(auditlog.ReplayUnavailable, match="which the given files lack"):
            auditlog.golden_of(store, loaded.digest, _GoldenDirFiles(directory), DEFAULT_LIMITS)
    finally:
        store.close()
