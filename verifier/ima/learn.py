"""Learn a runtime policy (the ``runtime:`` section) from known-good IMA logs.

Every non-violation entry becomes an allowed digest of its path (several for a path measured
with different contents), every ``ima-buf`` entry an allowed digest of its name. Skipped, and
said so in ``notes``: ``boot_aggregate`` (checked against the PCRs, not a policy digest),
violations (their fields are bound by nothing, and a known-good device should have none), and
paths the given exclusions match (the exclusions are written into the section). Learning
trusts the logs: feed it logs whose PCR 10 replay was verified (``appraise_ima`` in warning
mode does exactly that). The section asks for ``unknown: contraindicated``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from verifier.ima.parse import BOOT_AGGREGATE, ImaLog
from verifier.ima.policy import PathMatcher, PathPattern


@dataclass(frozen=True)
class LearnedRuntime:
    section: dict[str, Any]
    notes: tuple[str, ...]


def learn_runtime_policy(
    logs: Iterable[ImaLog], *, exclude: Iterable[PathPattern] = ()
) -> LearnedRuntime:
    patterns = tuple(exclude)
    matcher = PathMatcher(patterns)
    digests: dict[str, list[str]] = {}
    buf: dict[str, list[str]] = {}
    notes: list[str] = []
    template_hash = "sha1"
    for log in logs:
        template_hash = log.template_hash_alg
        for entry in log.entries:
            if entry.violation:
                notes.append(f"entry {entry.number} {entry.path[:200]!r}: violation, not learned")
                continue
            if entry.number == 0 and entry.path == BOOT_AGGREGATE:
                continue
            if matcher.first(entry.path) is not None:
                continue
            target = buf if entry.template == "ima-buf" else digests
            values = target.setdefault(entry.path, [])
            text = f"{entry.digest_alg}:{entry.digest.hex()}"
            if text not in values:
                values.append(text)
    section: dict[str, Any] = {"template_hash": template_hash, "unknown": "contraindicated"}
    if digests:
        section["digests"] = dict(sorted(digests.items()))
    if buf:
        section["buf"] = {name: {"digests": d} for name, d in sorted(buf.items())}
    if patterns:
        section["exclude"] = [{p.kind: p.text} for p in patterns]
    several = sum(1 for values in digests.values() if len(values) > 1)
    if several:
        notes.append(f"{several} paths were measured with more than one digest")
    return LearnedRuntime(section, tuple(notes))
