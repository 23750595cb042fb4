"""A profile's ``runtime:`` section, from YAML nodes to a ``RuntimePolicy`` with file:line problems.

The section's meaning lives in ``verifier.ima.section`` (plain data in, a policy or every
problem out). This module is the YAML half: it turns the node tree into plain data without
constructing anything YAML would resolve (a scalar is its text; only plain ``true``/``false``
become booleans and a plain null ``None``), refusing duplicate and non-scalar keys, and
remembers where each key path is, so that a ``SectionProblem`` (``where`` is a key path such
as ``runtime.digests['/usr/bin/bash'][0]``) is reported at the line of the nearest node it
names. Warnings (an exclusion that matches every path) are kept for ``golden lint``. A
``digests_file`` is read through ``ctx.digests_files`` (the loader's resolver).

Invariants: the policy is built once per loaded golden set and shared by every device of
the profile (``Profile.runtime``); a profile with a runtime section quotes PCR 10 and PCRs
0-9, which ``boot_aggregate`` is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.golden import fields as fl
from verifier.golden.nodes import Node, Scalar, Sequence
from verifier.ima.parse import IMA_PCR
from verifier.ima.policy import RuntimePolicy
from verifier.ima.section import RuntimeSectionError, parse_runtime_section

RUNTIME_PCRS = frozenset(range(IMA_PCR + 1))  # boot_aggregate over 0-9, the log in 10
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
# Mappings whose keys are data (paths, ima-buf names): the section names them ``[repr]``.
_FREE_KEYS = frozenset({"runtime.digests", "runtime.buf"})

Plain = str | bool | None | list["Plain"] | dict[str, "Plain"]


@dataclass(frozen=True)
class ParsedSection:
    policy: RuntimePolicy
    warnings: tuple[str, ...]  # "file:line:column: text", for golden lint


def parse_runtime(ctx: fl.FileContext, node: Node) -> ParsedSection | None:
    """The section's policy, or ``None`` with every problem recorded in ``ctx``."""
    where: dict[str, Node] = {}
    start = len(ctx.problems)
    data = _plain(ctx, node, "runtime", where)
    if len(ctx.problems) > start:
        return None
    try:
        parsed = parse_runtime_section(
            data, where="runtime", limits=ctx.limits, digests_files=ctx.digests_files
        )
    except RuntimeSectionError as exc:
        for problem in exc.problems:
            ctx.problem(_nearest(problem.where, where, node), f"{problem.where}: {problem.message}")
        return None
    warnings = []
    for text in parsed.warnings:
        at = _nearest(text.split(" ", 1)[0], where, node)
        warnings.append(f"{ctx.file}:{at.line}:{at.column}: {text}")
    return ParsedSection(parsed.policy, tuple(warnings))


def _plain(ctx: fl.FileContext, node: Node, path: str, where: dict[str, Node]) -> Plain:
    where.setdefault(path, node)
    if isinstance(node, Scalar):
        return _scalar(node)
    if isinstance(node, Sequence):
        return [_plain(ctx, item, f"{path}[{i}]", where) for i, item in enumerate(node.items)]
    out: dict[str, Plain] = {}
    lines: dict[str, int] = {}
    for key, value in node.pairs:
        if not isinstance(key, Scalar) or key.is_null():
            ctx.problem(key, f"keys in {path} must be strings, not {fl.describe(key)}")
            continue
        name = key.value
        if name in lines:
            ctx.problem(
                key,
                f"duplicate key {name!r} in {path}",
                f"first set at line {lines[name]}; YAML would silently keep the last",
            )
            continue
        lines[name] = key.line
        child = f"{path}[{name!r}]" if path in _FREE_KEYS else f"{path}.{name}"
        out[name] = _plain(ctx, value, child, where)
    return out


def _scalar(node: Scalar) -> Plain:
    if node.plain and node.is_null():
        return None
    if node.plain and node.value in _TRUE:
        return True
    if node.plain and node.value in _FALSE:
        return False
    return node.value


def _nearest(path: str, where: dict[str, Node], root: Node) -> Node:
    """The node of the longest registered prefix of ``path`` (the section root at worst)."""
    for end in range(len(path), 0, -1):
        found = where.get(path[:end])
        if found is not None:
            return found
    return root
