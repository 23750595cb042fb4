"""YAML text to a small tree of positioned nodes, for the golden loader.

The loader needs a line and column for every key and value, and must see what PyYAML's
constructor hides (duplicate keys, anchors), so it never constructs Python objects from YAML.
This module turns the parser's event stream (libyaml's ``CSafeLoader`` when available, else
the pure-Python ``SafeLoader``) into ``Scalar``/``Sequence``/``Mapping`` nodes that keep every
pair in order, duplicates included; ``golden.load`` gives them meaning.

Order of checks, all reported as ``Issue`` values (never raised):
1. YAML syntax and reader errors (control characters), with the parser's mark.
2. At most one document per file.
3. No anchors and no aliases (billion laughs, and surprising sharing); the first of each is
   reported.
4. No explicit tags (``!!python/...``, ``!!binary``, ``!custom``).
Any issue means no tree: the file is refused before its content is read.
libyaml limits nesting depth itself (1000 levels). The pure-Python fallback, whose scanner is
quadratic in flow depth, refuses more than 1000 unbalanced brackets up front and reports a
``RecursionError`` as a problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.resolver import Resolver

LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_RESOLVER = Resolver()
STR_TAG = "tag:yaml.org,2002:str"
_FULL = "write the value out in full"
MAX_DEPTH = 1000  # libyaml's own limit; enforced by hand for the pure-Python fallback


@dataclass(frozen=True, slots=True)
class Issue:
    line: int  # 1-based
    column: int  # 1-based
    message: str
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Scalar:
    value: str
    plain: bool  # unquoted: YAML would resolve it to int/bool/null/... by its text
    line: int
    column: int

    def implicit_tag(self) -> str:
        """The tag YAML 1.1 gives this scalar (``str`` for every quoted scalar)."""
        if not self.plain:
            return STR_TAG
        return str(_RESOLVER.resolve(yaml.ScalarNode, self.value, (True, False)))  # type: ignore[no-untyped-call]

    def is_null(self) -> bool:
        return self.plain and self.value in {"", "~", "null", "Null", "NULL"}


@dataclass(frozen=True, slots=True)
class Sequence:
    items: tuple[Node, ...]
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Mapping:
    pairs: tuple[tuple[Node, Node], ...]
    line: int
    column: int


Node = Scalar | Sequence | Mapping


def compose(text: str) -> tuple[Node | None, list[Issue]]:
    """Parse one YAML document into nodes.

    Returns the tree and no issues, or ``None`` and at least one issue (a tree with anchors,
    aliases, tags or a second document is not returned: walking it would only add noise).
    An empty stream gives ``(None, [])``.
    """
    issues: list[Issue] = []
    if LOADER is yaml.SafeLoader and _rough_flow_depth(text) > MAX_DEPTH:
        return None, [Issue(1, 1, f"YAML nesting deeper than {MAX_DEPTH} levels")]
    try:
        root = _build(yaml.parse(text, Loader=LOADER), issues)
    except yaml.MarkedYAMLError as exc:
        return None, [*issues, _syntax_issue(exc)]
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        return None, [*issues, Issue(line, column, f"YAML reader error: {exc.reason}")]
    except yaml.YAMLError as exc:
        return None, [*issues, Issue(1, 1, f"YAML error: {exc}")]
    except RecursionError:
        return None, [*issues, Issue(1, 1, "YAML nesting too deep")]
    return (None, issues) if issues else (root, issues)


class _Open:
    __slots__ = ("children", "column", "is_mapping", "line")

    def __init__(self, is_mapping: bool, line: int, column: int) -> None:
        self.is_mapping = is_mapping
        self.line = line
        self.column = column
        self.children: list[Node] = []

    def close(self) -> Node:
        if not self.is_mapping:
            return Sequence(tuple(self.children), self.line, self.column)
        kids = self.children
        pairs = tuple((kids[i], kids[i + 1]) for i in range(0, len(kids) - 1, 2))
        return Mapping(pairs, self.line, self.column)


def _build(events: Iterable[yaml.Event], issues: list[Issue]) -> Node | None:
    stack: list[_Open] = []
    root: Node | None = None
    documents = 0
    for event in events:
        kind = type(event)
        node: Node | None
        if kind is yaml.ScalarEvent and event.anchor is None and event.tag is None:  # type: ignore[attr-defined]
            mark = event.start_mark  # the fast path: most events are plain scalars
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            node = Scalar(event.value, not event.style, line, column)  # type: ignore[attr-defined]
        elif kind in _CLOSE:
            node = stack.pop().close()
        elif kind in _SKIP:
            continue
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                line, column = _mark(event)
                issues.append(
                    Issue(line, column, "more than one YAML document", "one profile per file")
                )
                break
            continue
        else:
            node = _step(event, stack, issues)
            if node is None:
                continue
        if stack:
            stack[-1].children.append(node)
        else:
            root = node
    return root


_CLOSE = frozenset({yaml.SequenceEndEvent, yaml.MappingEndEvent})
_SKIP = frozenset({yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent})


def _step(event: yaml.Event, stack: list[_Open], issues: list[Issue]) -> Node | None:
    """Apply a start, alias or tagged/anchored scalar event; ``None`` while a node is open."""
    line, column = _mark(event)
    if isinstance(event, yaml.AliasEvent):
        _once(issues, Issue(line, column, "YAML aliases are not allowed", _FULL))
        return Scalar("", True, line, column)
    _refuse_anchor_and_tag(event, line, column, issues)
    if isinstance(event, yaml.ScalarEvent):
        return Scalar(event.value, not event.style, line, column)
    stack.append(_Open(isinstance(event, yaml.MappingStartEvent), line, column))
    return None


def _refuse_anchor_and_tag(event: yaml.Event, line: int, column: int, issues: list[Issue]) -> None:
    if getattr(event, "anchor", None) is not None:
        _once(issues, Issue(line, column, "YAML anchors are not allowed", _FULL))
    tag = getattr(event, "tag", None)
    if tag is not None:
        issues.append(
            Issue(line, column, f"explicit YAML tags are not allowed ({tag})", "remove it")
        )


def _once(issues: list[Issue], issue: Issue) -> None:
    """Record the first anchor (or alias) only: one is enough to refuse the file."""
    if all(known.message != issue.message for known in issues):
        issues.append(issue)


def _mark(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    if mark is None:
        return 1, 1
    return int(mark.line) + 1, int(mark.column) + 1


def _syntax_issue(exc: yaml.MarkedYAMLError) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    line, column = (int(mark.line) + 1, int(mark.column) + 1) if mark is not None else (1, 1)
    problem = exc.problem or "invalid YAML"
    hint = exc.context or ""
    if exc.context_mark is not None and hint:
        hint += f" started at line {int(exc.context_mark.line) + 1}"
    return Issue(line, column, f"YAML syntax error: {problem}", hint)


def _rough_flow_depth(text: str) -> int:
    """An upper bound of flow nesting, for the pure-Python scanner (quadratic in depth)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _position(text: str, position: int) -> tuple[int, int]:
    """Line and column of a reader error (libyaml counts bytes of the UTF-8 encoding)."""
    if LOADER is yaml.SafeLoader:
        before = text[:position]
    else:
        before = text.encode("utf-8")[:position].decode("utf-8", errors="replace")
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
