"""Configuration files: TOML that says what the command line would, flags overriding it.

A key is a long flag without its dashes (``listen = "0.0.0.0:50051"``, ``nonce-ttl = 60``).
Top-level keys set the program's own flags (``log-level``); a table per subcommand sets that
subcommand's flags (``[serve]``; nested commands nest: ``[verdict.show]``, or dotted keys).

Every value is checked as the flag's would be: the TOML type must fit the flag (a string for
a path or text flag, an integer for ``type=int``, an integer or float for ``type=float``,
a boolean for a switch such as ``store_true``, an array for a repeatable or multi-value flag),
then it goes through the flag's ``type`` and ``choices``. Paths mean what they mean on the
command line (relative ones to the working directory). Positional arguments, ``--help``,
``--version`` and ``--config`` itself cannot be set. Any other key, and any table that names
no subcommand, is an error; every error is a ``ConfigError`` that names the file and the line.

``parse_args`` applies the file as the parsers' defaults before parsing: a flag on the command
line wins over the file, and a ``required=True`` flag that the file sets is no longer missing.
A repeatable flag given on the command line replaces the file's list (it does not add to it).
"""

from __future__ import annotations

import argparse
import functools
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConfigError", "Setting", "add_config_option", "load_config", "parse_args"]

CONFIG_FLAG = "--config"
_NOT_SETTABLE = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
_ErrorFactory = Callable[[str], "ConfigError"]


class ConfigError(Exception):
    """A configuration file that cannot be read, parsed or applied; the message names the line."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Setting:
    """One key of the file, checked and converted: ``parser.set_defaults(**{dest: value})``."""

    parser: argparse.ArgumentParser
    dest: str
    value: object
    line: int | None


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to ``parser`` and every subcommand (call once the tree is built).

    Accepting it after the subcommand too (``serve --config FILE``) matches how operators type.
    """
    for _, each in _walk(parser, ()):
        if CONFIG_FLAG in each._option_string_actions:  # already added (idempotent)
            continue
        each.add_argument(
            CONFIG_FLAG,
            type=Path,
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="TOML file of flag values; flags given here override it",
        )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` after applying the ``--config`` file, if one is given.

    A bad file ends the program as a bad flag does: the message and exit status 2.
    """
    pre = argparse.ArgumentParser(prog=parser.prog, add_help=False, allow_abbrev=False)
    pre.add_argument(CONFIG_FLAG, type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return _checked(parser, parser.parse_args(argv), None)
    try:
        settings = load_config(known.config, parser)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    lists = [s for s in settings if isinstance(s.value, list)]
    for setting in settings:
        for action in setting.parser._actions:
            if action.dest == setting.dest:
                action.required = False
        # a list default would be appended to by the command line: fill it in after parsing
        default = None if isinstance(setting.value, list) else setting.value
        setting.parser.set_defaults(**{setting.dest: default})
    ns = parser.parse_args(argv)
    for setting in lists:
        if getattr(ns, setting.dest, ...) is None:
            setattr(ns, setting.dest, list(setting.value))  # type: ignore[call-overload]
    return _checked(parser, ns, known.config)


def _checked(
    parser: argparse.ArgumentParser, ns: argparse.Namespace, loaded: Path | None
) -> argparse.Namespace:
    """Refuse a ``--config`` that argparse accepted but the first pass did not see (``--conf``)."""
    if getattr(ns, "config", None) != loaded:
        parser.error(f"spell {CONFIG_FLAG} in full")
    return ns


def load_config(path: Path, parser: argparse.ArgumentParser) -> list[Setting]:
    """Read ``path`` and check every key against ``parser``'s tree; raise ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read the configuration file: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise ConfigError(path, int(found[1]) if found else None, f"not TOML: {exc}") from exc
    lines = KeyLines(text)
    settings: list[Setting] = []
    _collect(document, parser, (), path, lines, settings)
    return settings


def _collect(
    table: Mapping[str, object],
    parser: argparse.ArgumentParser,
    where: tuple[str, ...],
    path: Path,
    lines: KeyLines,
    out: list[Setting],
) -> None:
    flags = _flags(parser)
    commands = _subcommands(parser)
    for key, value in table.items():
        here = (*where, key)
        line = lines.find(here)
        if key in commands:
            if not isinstance(value, dict):
                raise ConfigError(path, line, f"{_name(here)} must be a table of its flags")
            _collect(value, commands[key], here, path, lines, out)
        elif key in flags:
            converted = _convert(flags[key], value, functools.partial(ConfigError, path, line))
            out.append(Setting(parser, flags[key].dest, converted, line))
        else:
            known = sorted([*flags, *commands])
            raise ConfigError(
                path, line, f"unknown key {_name(here)} (known here: {', '.join(known)})"
            )


def _convert(action: argparse.Action, value: object, error: _ErrorFactory) -> object:
    flag = action.option_strings[-1]
    if isinstance(action, _SWITCHES):
        if not isinstance(value, bool):
            raise error(f"{flag} is a switch: true or false, got {_kind(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else action.default
    if isinstance(action, argparse._CountAction):
        if type(value) is not int or value < 0:
            raise error(f"{flag} counts: a non-negative integer, got {_kind(value)}")
        return value
    if isinstance(action, argparse._AppendAction | argparse._ExtendAction) or action.nargs not in (
        None,
        "?",
    ):
        if not isinstance(value, list):
            raise error(f"{flag} takes several values: an array, got {_kind(value)}")
        items = [_one(action, flag, item, error) for item in value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise error(f"{flag} takes {action.nargs} values, got {len(items)}")
        if action.nargs == "+" and not items:
            raise error(f"{flag} takes at least one value")
        return items
    if isinstance(action, argparse._StoreAction):
        return _one(action, flag, value, error)
    raise error(f"{flag} cannot be set in a configuration file")


def _one(action: argparse.Action, flag: str, value: object, error: _ErrorFactory) -> object:
    """One value through the flag's ``type`` and ``choices``, as argparse would."""
    kind = action.type
    if kind is int:
        if type(value) is not int:
            raise error(f"{flag} wants an integer, got {_kind(value)}")
        converted: object = value
    elif kind is float:
        if type(value) not in (int, float):
            raise error(f"{flag} wants a number, got {_kind(value)}")
        converted = float(value)  # type: ignore[arg-type]
    elif not isinstance(value, str):
        raise error(f"{flag} wants a string, got {_kind(value)}")
    elif kind is None or kind is str:
        converted = value
    elif callable(kind):
        try:
            converted = kind(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise error(f"{flag}: invalid value {value!r}: {exc}") from exc
    else:
        raise error(f"{flag} has a type this file cannot convert")
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise error(f"{flag}: {converted!r} is not one of {choices}")
    return converted


_SWITCHES = (
    argparse._StoreConstAction,  # also store_true / store_false
    argparse.BooleanOptionalAction,
)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    flags: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, _NOT_SETTABLE) or CONFIG_FLAG in action.option_strings:
            continue
        for option in action.option_strings:
            negative = isinstance(action, argparse.BooleanOptionalAction) and option.startswith(
                "--no-"
            )
            if option.startswith("--") and not negative:
                flags[option[2:]] = action
    return flags


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _walk(
    parser: argparse.ArgumentParser, where: tuple[str, ...]
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(where, parser)]
    seen = {id(parser)}
    for name, sub in _subcommands(parser).items():
        if id(sub) not in seen:  # aliases map several names to one parser
            seen.add(id(sub))
            found.extend(_walk(sub, (*where, name)))
    return found


def _name(keys: tuple[str, ...]) -> str:
    return ".".join(_quote(k) for k in keys)


def _quote(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


class KeyLines:
    """The line where each key path is defined, found by scanning the TOML text.

    tomllib reports no positions, so this reads table headers (``[a.b]``, ``[[a]]``) and the
    keys of ``key = value`` lines (bare, quoted, dotted) at the start of a line, skipping the
    inside of multi-line strings and of arrays and inline tables spread over several lines.
    ``find`` falls back to the nearest enclosing path it knows (an inline table's key, a
    table's header), so every error can name a line.
    """

    _KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
    _DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
    _HEADER = re.compile(rf"\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
    _ASSIGN = re.compile(rf"\s*({_DOTTED})\s*=")

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        depth = 0  # open brackets and braces of a value spread over lines
        in_string: str | None = None  # the delimiter of an open multi-line string
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string is not None or depth > 0:
                in_string, depth = self._scan_value(line, in_string, depth)
                continue
            header = self._HEADER.match(line)
            if header:
                table = self._split(header[2])
                self._lines.setdefault(table, number)
                continue
            assign = self._ASSIGN.match(line)
            if assign:
                key = (*table, *self._split(assign[1]))
                for end in range(len(table) + 1, len(key) + 1):
                    self._lines.setdefault(key[:end], number)
                in_string, depth = self._scan_value(line[assign.end() :], None, 0)

    def find(self, keys: tuple[str, ...]) -> int | None:
        for end in range(len(keys), 0, -1):
            if keys[:end] in self._lines:
                return self._lines[keys[:end]]
        return None

    @classmethod
    def _split(cls, dotted: str) -> tuple[str, ...]:
        parts = re.findall(cls._KEY, dotted)
        return tuple(_unquote(part) for part in parts)

    @staticmethod
    def _scan_value(text: str, in_string: str | None, depth: int) -> tuple[str | None, int]:
        """Track strings, brackets and comments through ``text``; return the open state."""
        i = 0
        while i < len(text):
            if in_string is not None:
                if in_string in ('"', '"""') and text[i] == "\\":
                    i += 2
                    continue
                if text.startswith(in_string, i):
                    i += len(in_string)
                    in_string = None
                    continue
                i += 1
                continue
            char = text[i]
            if char == "#":
                break
            if text.startswith('"""', i) or text.startswith("'''", i):
                in_string = text[i : i + 3]
                i += 3
                continue
            if char in "\"'":
                in_string = char
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            i += 1
        if in_string in ('"', "'"):  # a one-line string cannot span lines
            in_string = None
        return in_string, max(depth, 0)


def _unquote(key: str) -> str:
    if key.startswith('"'):
        parsed = tomllib.loads(f"k = {key}")["k"]
        return str(parsed)
    if key.startswith("'"):
        return key[1:-1]
    return key
