"""The TOML configuration file: every mistake is an error naming file and line, flags win.

The parser here has the shapes of the real ones (a required flag, typed flags, choices, a
switch, a repeatable flag, nested subcommands); the shipped sample is checked against the real
``attest-verifier`` parser at the end.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from verifier.cli import build_parser as verifier_parser
from verifier.config import ConfigError, KeyLines, add_config_option, load_config, parse_args

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prog")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version="1")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--listen", default="127.0.0.1:50051")
    serve.add_argument("--db", required=True)
    serve.add_argument("--golden", type=Path, default=Path("/nonexistent"))
    serve.add_argument("--nonce-ttl", type=float, default=60.0)
    serve.add_argument("--workers", type=int, default=4)
    serve.add_argument("--no-event-log", action="store_true")
    serve.add_argument("--label", action="append", default=[])
    serve.add_argument("--bind", action=argparse.BooleanOptionalAction, default=True)
    serve.add_argument("target", nargs="?")
    verdict = sub.add_parser("verdict")
    vsub = verdict.add_subparsers(dest="verdict_command", required=True)
    show = vsub.add_parser("show")
    show.add_argument("--history", type=int, default=0)
    add_config_option(parser)
    return parser


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "verifier.toml"
    path.write_text(text)
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, build_parser())
    return info.value


def test_file_values_reach_the_namespace_converted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'log-level = "debug"\n[serve]\nlisten = "0.0.0.0:1"\ndb = "x.db"\n'
        'golden = "/etc/g"\nnonce-ttl = 30\nworkers = 8\nno-event-log = true\n'
        'label = ["a=1", "b=2"]\nbind = false\n',
    )
    ns = parse_args(build_parser(), ["--config", str(path), "serve"])
    assert ns.log_level == "debug"
    assert (ns.listen, ns.db, ns.golden) == ("0.0.0.0:1", "x.db", Path("/etc/g"))
    assert ns.nonce_ttl == 30.0 and isinstance(ns.nonce_ttl, float)
    assert (ns.workers, ns.no_event_log, ns.label, ns.bind) == (8, True, ["a=1", "b=2"], False)


def test_unknown_key_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '# comment\n[serve]\ndb = "x.db"\n\nlisten-on = "0.0.0.0:1"\n')
    error = config_error(path)
    assert str(error).startswith(f"{path}:5: unknown key serve.listen-on")
    assert error.line == 5


def test_unknown_table_is_an_error_naming_its_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'log-level = "info"\n\n[srve]\ndb = "x.db"\n')
    assert str(config_error(path)).startswith(f"{path}:3: unknown key srve")


def test_unknown_dotted_key_in_a_nested_table_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[verdict]\nshow.history = 2\nshow.histroy = 3\n")
    assert str(config_error(path)).startswith(f"{path}:3: unknown key verdict.show.histroy")


def test_key_after_a_multiline_array_and_string_gets_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[serve]\nlabel = [\n  "a=1",  # x = 1\n  "b=2",\n]\n'
        'db = """\nfake = 1\n"""\n"wrkers" = 3\n',
    )
    assert str(config_error(path)).startswith(f"{path}:9: unknown key serve.wrkers")


def test_string_for_an_integer_flag_is_a_wrong_type_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\ndb = "x.db"\nworkers = "8"\n')
    assert str(config_error(path)) == f"{path}:3: --workers wants an integer, got a string"


def test_boolean_for_an_integer_flag_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[serve]\nworkers = true\n")
    assert "--workers wants an integer, got a boolean" in str(config_error(path))


def test_integer_for_a_path_flag_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[serve]\ngolden = 3\n")
    assert str(config_error(path)) == f"{path}:2: --golden wants a string, got an integer"


def test_string_for_a_switch_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\nno-event-log = "yes"\n')
    assert "--no-event-log is a switch: true or false, got a string" in str(config_error(path))


def test_scalar_for_a_repeatable_flag_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\nlabel = "a=1"\n')
    assert "--label takes several values: an array, got a string" in str(config_error(path))


def test_value_outside_the_choices_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, 'log-level = "verbose"\n')
    assert str(config_error(path)).startswith(f"{path}:1: --log-level: 'verbose' is not one of")


def test_flag_as_a_table_and_subcommand_as_a_value_are_rejected(tmp_path: Path) -> None:
    assert "must be a table" in str(config_error(write(tmp_path, 'serve = "x"\n')))
    assert "wants a string, got a table" in str(
        config_error(write(tmp_path, "[serve.listen]\nport = 1\n"))
    )


def test_positional_help_version_and_config_itself_cannot_be_set(tmp_path: Path) -> None:
    for text in ('[serve]\ntarget = "x"\n', "help = true\n", 'version = "2"\n', 'config = "a"\n'):
        assert "unknown key" in str(config_error(write(tmp_path, text))), text


def test_negative_spelling_of_a_boolean_flag_is_not_a_key(tmp_path: Path) -> None:
    # "no-bind = true" would otherwise set bind to true, the opposite of what it says
    assert "unknown key serve.no-bind" in str(
        config_error(write(tmp_path, "[serve]\nno-bind = true\n"))
    )


def test_invalid_toml_names_the_parser_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\ndb = "x.db"\nlisten "0.0.0.0:1"\n')
    assert str(config_error(path)).startswith(f"{path}:3: not TOML:")


def test_missing_file_is_an_error_not_an_empty_config(tmp_path: Path) -> None:
    error = config_error(tmp_path / "absent.toml")
    assert error.line is None and "cannot read the configuration file" in str(error)


def test_flag_on_the_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\ndb = "file.db"\nworkers = 8\nlabel = ["a=1"]\n')
    ns = parse_args(
        build_parser(),
        ["serve", "--config", str(path), "--workers", "2", "--db", "cli.db", "--label", "c=3"],
    )
    assert (ns.workers, ns.db, ns.label) == (2, "cli.db", ["c=3"])


def test_repeated_flag_not_on_the_command_line_comes_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\ndb = "x.db"\nlabel = ["a=1", "b=2"]\n')
    ns = parse_args(build_parser(), ["serve", "--config", str(path)])
    assert ns.label == ["a=1", "b=2"]


def test_required_flag_from_the_file_is_not_missing(tmp_path: Path) -> None:
    path = write(tmp_path, '[serve]\ndb = "file.db"\n')
    ns = parse_args(build_parser(), ["--config", str(path), "serve"])
    assert ns.db == "file.db"


def test_required_flag_in_neither_file_nor_command_line_still_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[serve]\nworkers = 2\n")
    with pytest.raises(SystemExit) as info:
        parse_args(build_parser(), ["--config", str(path), "serve"])
    assert info.value.code == 2
    assert "--db" in capsys.readouterr().err


def test_bad_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[serve]\nworkers = 1.5\n")
    with pytest.raises(SystemExit) as info:
        parse_args(build_parser(), ["serve", "--config", str(path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"prog: error: {path}:2: --workers wants an integer, got a float\n"
    )


def test_abbreviated_config_flag_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[serve]\ndb = "x.db"\n')
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["serve", "--conf", str(path), "--db", "y.db"])
    assert "spell --config in full" in capsys.readouterr().err


def test_without_config_parsing_is_unchanged() -> None:
    ns = parse_args(build_parser(), ["serve", "--db", "x.db"])
    assert (ns.db, ns.workers, ns.label) == ("x.db", 4, [])


def test_key_lines_handle_quoted_dotted_keys_and_inline_tables() -> None:
    lines = KeyLines("a = 1\n[ \"t\" . u ]\n'k'.v = { w = 1 }\n[[arr]]\nx = 1\n")
    assert lines.find(("a",)) == 1
    assert lines.find(("t", "u")) == 2
    assert lines.find(("t", "u", "k", "v")) == 3
    assert lines.find(("t", "u", "k", "v", "w")) == 3  # inside an inline table: its key's line
    assert lines.find(("arr", "x")) == 5
    assert lines.find(("nowhere",)) is None


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices[name]
            assert isinstance(found, argparse.ArgumentParser)
            return found
    raise AssertionError(f"no subcommand {name}")


def check_sample(
    sample: Path, parser: argparse.ArgumentParser, command: str, tmp_path: Path
) -> None:
    """Every flag of ``command`` is in the sample, set or as a commented-out example that is
    valid once uncommented."""
    add_config_option(parser)
    text = sample.read_text()
    load_config(sample, parser)  # as shipped
    target = tmp_path / sample.name
    target.write_text(re.sub(r"(?m)^# ([a-z-]+ = )", r"\1", text))
    settings = load_config(target, parser)
    sub = subcommand(parser, command)
    flags = {
        action.dest
        for action in sub._actions
        if action.option_strings and action.dest not in ("help", "config")
    }
    assert {s.dest for s in settings if s.parser is sub} == flags


def test_shipped_verifier_sample_covers_every_serve_flag(tmp_path: Path) -> None:
    check_sample(DEPLOY / "verifier.toml", verifier_parser(), "serve", tmp_path)
