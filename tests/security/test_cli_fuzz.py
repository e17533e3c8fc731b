"""Class: no input ends in a traceback. Hypothesis drives ``meterctl`` in-process (CliRunner).

Three fuzzers, each bounded so the suite stays fast: any command with arbitrary arguments,
any config file (random keys, values of every type, bytes that are not UTF-8), and any
accounts CSV in any encoding read with any ``--encoding``. Every run must end with exit
0, 2, 3 or 4, a sentence on stderr when it is not 0, and no traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

import interfaces.cli.db as cli_db
from base.clock import FrozenClock
from engine.config import Config
from interfaces.cli.main import app
from tests.engine.store_helpers import HEADER, MONDAY_10_SHANGHAI

ALLOWED = {0, 2, 3, 4}
# Commands that run until stopped or talk to meters over the network: not fuzzed here
# (their option parsing is shared with the rest; the simulator has its own fuzz of frames).
SKIPPED = {"serve", "simulate", "demo", "meter read", "meter address", "batch run"}
FUZZ = settings(
    max_examples=int(os.environ.get("METERCTL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize="METERCTL_FUZZ_EXAMPLES" not in os.environ,  # reproducible by default
)


def _commands() -> dict[str, list[str]]:
    """Every leaf command -> its option names (from the typer app itself)."""
    found: dict[str, list[str]] = {}

    def walk(command: typing.Any, path: list[str]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
            return
        name = " ".join(path)
        if name not in SKIPPED:
            found[name] = [o for p in command.params for o in p.opts if o.startswith("-")]

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()


@dataclasses.dataclass
class Site:
    root: Path
    config: Path
    runner: CliRunner

    def run(self, *args: str, config: Path | None = None) -> Result:
        return self.runner.invoke(app, ["--config", str(config or self.config), *args])


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_db, "clock", FrozenClock(MONDAY_10_SHANGHAI))
    monkeypatch.delenv("METERCTL_CONFIG", raising=False)
    config = tmp_path / "meterctl.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "f.db"}"\n', encoding="utf-8")
    site = Site(tmp_path, config, CliRunner())
    assert site.run("db", "init").exit_code == 0
    (tmp_path / "a.csv").write_text(
        f"{HEADER}\nA1,n,,-5,yes,residential,no,M1,000000000001,,socket://127.0.0.1:9,\n",
        encoding="utf-8",
    )
    assert site.run("accounts", "import", "a.csv").exit_code == 0
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    yield site


def assert_a_sentence(result: Result, what: object) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, (what, output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        what,
        repr(result.exception),
    )
    assert result.exit_code in ALLOWED, (what, result.exit_code, output)
    if result.exit_code != 0:
        assert result.stderr.strip(), (what, "exit without a sentence")


# -- any command, any arguments ----------------------------------------------------------------

_ODD = [
    "", "-", "--", "[/]", "[bold]x", "%s%n", "{0}", "１２３", "١٢٣", "1e309", "-1e30", "NaN",
    "inf", "9" * 400, "-99999999999999999999", "0", "-1", "2026-13-45", "２０２６-01-01T00:00",
    "2026-06-01T10:00+08:00", "24:00", "a.csv", "blob.bin", "/", "/nonexistent/x", ".", "A1",
    "A\u200b1", "Ａ1", "\u202eA1", "socket://127.0.0.1:1", "x" * 3000, "é", "\ud7ff", "🙂",
]  # fmt: skip
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=30,
)


@st.composite
def invocations(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    options = COMMANDS[name]
    token = st.one_of(
        st.sampled_from(options) if options else st.nothing(),
        st.sampled_from(_ODD),
        _TEXT,
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
    )
    args = [*name.split(), *draw(st.lists(token, max_size=6))]
    if name == "payments record":
        args.append("--no-wait")
    if name == "status":
        args = [a for a in args if a != "--watch"]
    return args


@FUZZ
@given(args=invocations())
def test_every_command_answers_any_arguments_with_a_sentence(site: Site, args: list[str]) -> None:
    assert_a_sentence(site.run(*args), args)


def test_the_fuzzer_covers_the_commands() -> None:
    assert {"accounts import", "payments record", "audit verify", "frame decode"} <= set(COMMANDS)


# -- any config file ---------------------------------------------------------------------------


def _keys() -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []

    def walk(cls: typing.Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in ("source", "present_tables"):
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                keys.append((prefix.rstrip("."), f.name))

    walk(Config, "")
    return keys


KEYS = _keys()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string (\\uXXXX escapes are TOML too)


_VALUES = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    _TEXT,
    st.sampled_from(_ODD),
    st.lists(st.one_of(st.integers(), _TEXT), max_size=3),
)


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["keys", "keys", "keys", "bytes", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(_TEXT).encode("utf-8")
    tables: dict[str, list[str]] = {}
    for section, key in draw(st.lists(st.sampled_from(KEYS), max_size=6, unique=True)):
        tables.setdefault(section, []).append(f"{key} = {_toml_value(draw(_VALUES))}")
    text = "\n".join(f"[{t}]\n" + "\n".join(lines) for t, lines in tables.items()) + "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "gbk", "latin-1"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(content=config_files(), command=st.sampled_from(["status", "db status", "audit verify"]))
def test_any_config_file_is_a_sentence(site: Site, content: bytes, command: str) -> None:
    path = site.root / "fuzzed.toml"
    path.write_bytes(content)
    assert_a_sentence(site.run(*command.split(), config=path), content[:200])


# -- any CSV in any encoding -------------------------------------------------------------------

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "gbk", "gb18030", "latin-1", "ascii", "cp1252", "big5", "shift_jis"]  # fmt: skip


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    cell = st.one_of(st.sampled_from(_ODD), _TEXT, st.sampled_from(["yes", "no", "-5", "户号"]))
    rows = [HEADER] + [
        ",".join(draw(st.lists(cell, min_size=10, max_size=13)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    text = "\n".join(rows) + "\n"
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


@FUZZ
@given(
    content=csv_files(),
    encoding=st.sampled_from([*ENCODINGS, "undefined", "rot13", "hex", "bogus"]),
)
def test_any_csv_in_any_encoding_is_a_sentence(site: Site, content: bytes, encoding: str) -> None:
    (site.root / "fuzzed.csv").write_bytes(content)
    result = site.run("accounts", "import", "fuzzed.csv", "--encoding", encoding, "--dry-run")
    assert_a_sentence(result, (encoding, content[:200]))


# -- the cases the review found, by name -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["accounts", "import", "a.csv", "--encoding", "utf-16"], "not utf-16 text"),
        (["accounts", "import", "a.csv", "--encoding", "undefined"], "--encoding"),
        (["--log-level", "bogus", "status"], "--log-level"),
        (["orders", "show", "99999999999999999999999"], "out of the range"),
        (["payments", "record", "A1", "[/]", "--ref", "[bold]", "--no-wait"], "'[/]'"),
    ],
)
def test_named_bad_inputs_get_a_sentence(site: Site, args: list[str], said: str) -> None:
    result = site.runner.invoke(app, ["--config", str(site.config), *args])
    assert_a_sentence(result, args)
    assert result.exit_code == 2 and said in result.stderr


def test_a_config_that_is_not_utf8_is_a_sentence(site: Site) -> None:
    path = site.root / "gbk.toml"
    path.write_bytes('[site]\nname = "供电所"\n'.encode("gbk"))
    result = site.run("status", config=path)
    assert_a_sentence(result, "gbk config")
    assert result.exit_code == 2 and "not UTF-8" in result.stderr


def test_an_unforeseen_error_is_one_sentence_without_secrets(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.logging import register_secret

    register_secret("fuzz-SECRET-0123456789")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire near fuzz-SECRET-0123456789")

    monkeypatch.setattr("interfaces.cli.audit.audit.records", broken)
    result = site.run("audit", "show")
    assert result.exit_code == 1 and "unexpected RuntimeError" in result.stderr
    assert "fuzz-SECRET" not in result.stderr and "Traceback" not in result.output


# -- every option of every command, with the values that broke things --------------------------

_SWEPT = ["1e309", "9" * 400, "x" * 3000, "[/]"]  # infinity, huge int, too long, markup


def test_every_option_of_every_command_takes_absurd_values(site: Site) -> None:
    command = typer.main.get_command(app)
    failures = []
    for name in sorted(COMMANDS):
        leaf: typing.Any = command
        for part in name.split():
            leaf = leaf.commands[part]
        valued = [
            o
            for p in leaf.params
            if not getattr(p, "is_flag", False)
            for o in p.opts
            if o.startswith("-")
        ]
        positional = [p for p in leaf.params if not any(o.startswith("-") for o in p.opts)]
        base = ["A1"] * len(positional)
        extra = ["--no-wait"] if name == "payments record" else []
        for value in _SWEPT:
            trials = [[*base[:i], value, *base[i + 1 :]] for i in range(len(base))]
            trials += [[*base, option, value] for option in valued if option != "--watch"]
            for args in trials:
                result = site.run(*name.split(), *args, *extra)
                output = result.stdout + result.stderr
                if result.exit_code not in ALLOWED or "Traceback" in output:
                    failures.append((name, [a[:20] for a in args], result.exit_code, output[-200:]))
    assert failures == []


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--meters", "1", "--duration", "1e309"],
        ["simulate", "--meters", "1", "--time-scale", "-1"],
        ["demo", "--time-scale", "inf"],
    ],
)
def test_long_running_commands_check_their_numbers_first(site: Site, args: list[str]) -> None:
    result = site.run(*args)
    assert_a_sentence(result, args)
    assert result.exit_code == 2
