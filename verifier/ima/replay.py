"""Replay IMA entries into PCR 10 of the quoted bank, and check ``boot_aggregate``.

Two kernel behaviours exist in the field (``ExtendMode``):

- ``SHA1_PADDED`` (kernels before 5.8, and any bank the kernel has no hash for): every bank is
  extended with the SHA-1 template hash, zero-padded to the bank's digest size.
- ``BANK_HASH`` (5.8 and later): each bank is extended with the template data hashed with the
  bank's own algorithm (for the legacy ``ima`` template, the legacy layout).

In the SHA-1 bank both are the same and ``SHA1_PADDED`` is reported. A violation (all-zero
template hash) is extended as all-ones of the bank's size in either mode, as the kernel does.
``match_quote`` tries the configured mode, or both, and reports which matched; the quoted
value may lag the list (IMA appends before it extends and the agent reads the list after the
quote), so the match is the shortest prefix whose running value equals the quoted PCR 10.
Entries past it are not covered by the quote and are not accepted.

``boot_aggregate`` (entry 0) is ``H(PCR0 || ... || PCR7)`` in its digest's algorithm, over
that bank's quoted values, and on kernels 5.8+ for non-SHA-1 banks ``H(PCR0 || ... || PCR9)``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from verifier.errors import ImaLogError, ReplayMismatch
from verifier.ima.parse import BOOT_AGGREGATE, IMA_PCR, ImaEntry, hash_function


class ExtendMode(enum.Enum):
    SHA1_PADDED = "sha1-padded"
    BANK_HASH = "bank-hash"


@dataclass(frozen=True)
class QuoteMatch:
    """The quoted PCR 10 equals the running value after ``count`` of the entries given."""

    mode: ExtendMode
    count: int  # entries of those given that the quote covers
    value: bytes  # the running PCR 10 after them (equal to the quoted value)


@dataclass(frozen=True)
class BootAggregateMatch:
    alg: str
    pcrs: tuple[int, ...]  # (0..7) or (0..9)


def extend_values(entries: Iterable[ImaEntry], bank: str, mode: ExtendMode) -> list[bytes]:
    """The digest each entry extends PCR 10 of ``bank`` with."""
    hfunc = hash_function(bank)
    size = hfunc().digest_size
    ones = b"\xff" * size
    if mode is ExtendMode.SHA1_PADDED or bank == "sha1":
        pad = bytes(max(0, size - 20))
        return [ones if e.violation else (e.template_hash + pad)[:size] for e in entries]
    return [ones if e.violation else hfunc(e.template_input).digest() for e in entries]


def replay(
    entries: Sequence[ImaEntry], bank: str, mode: ExtendMode, start: bytes | None = None
) -> bytes:
    """PCR 10 after extending ``entries`` from ``start`` (zero when None)."""
    hfunc = hash_function(bank)
    value = bytes(hfunc().digest_size) if start is None else start
    for digest in extend_values(_in_pcr10(entries), bank, mode):
        value = hfunc(value + digest).digest()
    return value


def match_quote(
    entries: Sequence[ImaEntry],
    bank: str,
    quoted: bytes,
    *,
    start: bytes | None = None,
    mode: ExtendMode | None = None,
) -> QuoteMatch:
    """The mode and shortest prefix of ``entries`` that replays from ``start`` to ``quoted``.

    Raises ``ReplayMismatch`` when no prefix in any mode tried does, naming both values."""
    hfunc = hash_function(bank)
    size = hfunc().digest_size
    if len(quoted) != size:
        raise ReplayMismatch(f"quoted PCR 10 has {len(quoted)} bytes, {bank} has {size}")
    pcr10 = _in_pcr10(entries)
    initial = bytes(size) if start is None else start
    modes = _modes(bank, mode)
    finals: list[str] = []
    for candidate in modes:
        value = initial
        if value == quoted:
            return QuoteMatch(candidate, 0, value)
        for count, digest in enumerate(extend_values(pcr10, bank, candidate), start=1):
            value = hfunc(value + digest).digest()
            if value == quoted:
                return QuoteMatch(candidate, count, value)
        finals.append(f"{candidate.value} {value.hex()}")
    raise ReplayMismatch(
        f"the IMA log does not replay to the quoted {bank} PCR 10 {quoted.hex()} "
        f"({len(pcr10)} entries; replayed: {', '.join(finals)})"
    )


def check_boot_aggregate(
    entry: ImaEntry, quoted: Mapping[str, Mapping[int, bytes]]
) -> BootAggregateMatch:
    """``entry`` is boot_aggregate and its digest equals that of the quoted PCRs 0-7 or 0-9.

    ``quoted`` maps bank -> PCR index -> value. Raises ``ReplayMismatch``."""
    if entry.path != BOOT_AGGREGATE or entry.number != 0 or entry.violation:
        raise ReplayMismatch(
            f"IMA entry {entry.number} is not a boot_aggregate (path {entry.path[:80]!r})"
        )
    alg = "sha1" if entry.digest_alg == "sha1" else entry.digest_alg
    bank = quoted.get(alg)
    if bank is None or any(i not in bank for i in range(8)):
        raise ReplayMismatch(
            f"boot_aggregate is {alg}: the quote must include {alg} PCRs 0-7 to check it"
        )
    try:
        hfunc = hash_function(alg)
    except ImaLogError as exc:
        raise ReplayMismatch(f"boot_aggregate algorithm {alg!r} cannot be computed") from exc
    tried: list[str] = []
    for last in (7, 9):
        pcrs = tuple(range(last + 1))
        if any(i not in bank for i in pcrs):
            continue
        value = hfunc(b"".join(bank[i] for i in pcrs)).digest()
        if value == entry.digest:
            return BootAggregateMatch(alg, pcrs)
        tried.append(f"PCRs 0-{last}: {value.hex()}")
    raise ReplayMismatch(
        f"boot_aggregate {alg}:{entry.digest.hex()} does not match the quoted "
        f"{alg} PCRs ({'; '.join(tried)})"
    )


def _modes(bank: str, mode: ExtendMode | None) -> tuple[ExtendMode, ...]:
    if bank == "sha1":
        return (ExtendMode.SHA1_PADDED,)
    if mode is not None:
        return (mode,)
    return (ExtendMode.BANK_HASH, ExtendMode.SHA1_PADDED)


def _in_pcr10(entries: Sequence[ImaEntry]) -> Sequence[ImaEntry]:
    """Every entry must be for PCR 10: entries for another PCR (a ``pcr=`` policy rule) are
    refused, since they are not bound by the PCR 10 quote."""
    for entry in entries:
        if entry.pcr != IMA_PCR:
            raise ReplayMismatch(
                f"IMA entry {entry.number} is for PCR {entry.pcr}; only PCR 10 is replayed"
            )
    return entries
