"""No English sentence reaches a Chinese reader from the CLI.

Two nets, on top of the catalog's completeness and placeholder checks (test_i18n.py):

1. statically, every string literal a CLI module prints (``fail``, ``note``, ``print``, table
   headers and titles, progress columns, ``help=``) must go through ``_()``; a command or group
   without ``help=`` would show its English docstring;
2. at run time, the error paths of the commands (bad input, refused roles, unknown records)
   run with ``--lang zh-CN`` and no line they print may be an English sentence.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.engine.store_helpers import Cli, add_account, cli

__all__ = ["cli"]

ROOT = Path(__file__).resolve().parents[2]
CLI_MODULES = [*sorted((ROOT / "interfaces" / "cli").glob("*.py")), ROOT / "interfaces" / "demo.py"]
PRINTERS = {
    "fail", "note", "print", "echo", "secho", "add_row", "Table", "add_column", "confirm",
    "prompt", "BadParameter", "TextColumn", "Option", "Argument", "Typer", "command", "step",
}  # fmt: skip
TEXT_KEYWORDS = {"title", "help", "message", "caption", "prompt"}
# Two words of letters separated by a space: a sentence, not an option or a code.
WORDS = re.compile(r"[A-Za-z]{2,}[,:;]? [A-Za-z]{2,}")
MARKUP = re.compile(r"\[/?[a-z #]*\]")


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
        return " ".join(str(p) for p in parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return f"{_literal(node.left) or ''} {_literal(node.right) or ''}"
    if isinstance(node, ast.IfExp):
        return f"{_literal(node.body) or ''} {_literal(node.orelse) or ''}"
    return None


def unwrapped_sentences(source: str) -> list[tuple[int, str]]:
    """(line, text) of printed English literals and of commands without ``help=``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in PRINTERS:
            continue
        if name in ("command", "Typer") and not any(k.arg == "help" for k in node.keywords):
            found.append((node.lineno, f"{name}(...) without help=: its docstring is English"))
        shown = [*node.args, *(k.value for k in node.keywords if k.arg in TEXT_KEYWORDS)]
        for argument in shown:
            text = _literal(argument)
            if text and WORDS.search(MARKUP.sub("", text)):
                found.append((node.lineno, ast.unparse(argument)[:80]))
    return found


SOURCES = sorted(
    path
    for package in ("base", "engine", "interfaces", "policies", "protocols")
    for path in (ROOT / package).rglob("*.py")
    if "migrations" not in path.parts
)


def calls_inside_fstrings(source: str) -> list[int]:
    """Lines where ``_()``/``N_()`` is called inside an f-string: pybabel cannot see those,
    so the string never reaches the catalog and stays English."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            for inner in ast.walk(node):
                func = getattr(inner, "func", None)
                if (
                    isinstance(inner, ast.Call)
                    and getattr(func, "id", None) in ("_", "N_")
                    and inner.args
                    and isinstance(inner.args[0], ast.Constant)  # a variable was marked elsewhere
                ):
                    lines.append(inner.lineno)
    return lines


def test_no_translation_call_inside_an_fstring() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in SOURCES
        if (lines := calls_inside_fstrings(path.read_text(encoding="utf-8")))
    }
    assert not found, f"move these _() calls out of the f-strings: {found}"
    assert calls_inside_fstrings("x = f\"<h3>{escape(_('Late field orders'))}</h3>\"\n")


@pytest.mark.parametrize("module", CLI_MODULES, ids=lambda p: p.name)
def test_cli_modules_print_no_unwrapped_english(module: Path) -> None:
    found = unwrapped_sentences(module.read_text(encoding="utf-8"))
    assert not found, f"{module.name}: wrap these in _() (then make i18n): {found}"


def test_the_sweep_catches_what_it_is_for() -> None:
    caught = unwrapped_sentences(
        'fail(f"FILE: {file} does not exist")\n'
        'note("payment hook listening")\n'
        'Table("meter", "last seen", title=f"complaints PAST their time limit: {n}")\n'
        '@app.command("demo")\ndef demo() -> None: ...\n'
    )
    assert len(caught) == 5
    assert not unwrapped_sentences(
        'fail(_("FILE: {file} does not exist").format(file=f))\n'
        'typer.Option("--dry-run", help=_("Send nothing."))\n'
        'console.print(f"[bold red]{label}[/] {text}")\n'
    )


# A line is English when, after removing what is not prose (paths, options, codes, numbers,
# URLs, quoted values), three words of letters remain in a row and it has no Chinese at all.
CJK = re.compile(r"[\u3400-\u9fff]")
NOT_PROSE = re.compile(r"(https?://\S+|/\S+|--?[\w-]+|'[^']*'|\"[^\"]*\"|\S*[_./=]\S*|\d+)")
SENTENCE = re.compile(r"\b[A-Za-z]{2,} [A-Za-z]{2,} [A-Za-z]{2,}\b")


def english_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if not CJK.search(line) and SENTENCE.search(NOT_PROSE.sub(" ", line))
    ]


def test_english_lines_detector() -> None:
    assert english_lines("error: FILE: x.csv does not exist or is not a file")
    assert not english_lines("错误：文件 x.csv 不存在 (unknown account 'A9')")
    assert not english_lines("  --year INTEGER  [default: None]")


ERROR_PATHS: list[tuple[str, tuple[str, ...], int]] = [
    ("olga", ("accounts", "import", "missing.csv"), 2),
    ("nobody", ("accounts", "import", "missing.csv"), 4),
    ("nobody", ("status",), 4),
    ("nobody", ("exceptions",), 4),
    ("nobody", ("batch", "plan"), 4),
    ("olga", ("batch", "plan", "--at", "tomorrow"), 2),
    ("olga", ("payments", "record", "A1", "12,5x", "--ref", "R1"), 2),
    ("olga", ("payments", "record", "A1", "10", "--ref", "R1", "--timeout", "0"), 2),
    ("olga", ("payments", "record", "NOPE", "10", "--ref", "R2", "--no-wait"), 2),
    ("olga", ("exemptions", "approve", "1"), 4),
    ("sam", ("exemptions", "approve", "999"), 2),
    ("olga", ("orders", "show", "999"), 2),
    ("olga", ("orders", "terminate", "999", "--reason", "x"), 4),
    ("sam", ("approvals", "disconnect", "NOPE"), 2),
    ("olga", ("notices", "issue", "--account", "NOPE"), 2),
    ("olga", ("calendar", "weather", "add", "2026-13-01", "--name", "x"), 4),
    ("sam", ("calendar", "weather", "add", "2026-13-01", "--name", "x"), 2),
    ("sam", ("calendar", "weather", "remove", "999"), 2),
    ("olga", ("db", "upgrade"), 4),
    ("anyone", ("frame", "encode", "control", "--address", "1", "--action", "trip",
                "--valid-until", "never"), 2),
    ("anyone", ("--log-level", "LOUD", "status"), 2),
    ("anyone", ("--lang", "fr", "status"), 2),
]  # fmt: skip


@pytest.mark.parametrize(("user", "args", "code"), ERROR_PATHS, ids=lambda v: str(v))
def test_error_paths_speak_chinese(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    user: str,
    args: tuple[str, ...],
    code: int,
) -> None:
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")  # what --lang fr falls back to
    assert cli("ada", "db", "init").exit_code == 0
    add_account(cli.engine(), "A1", balance="-50")
    lang = () if "--lang" in args else ("--lang", "zh-CN")
    result = cli(user, *lang, *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert CJK.search(result.stderr), result.stderr
    english = english_lines(result.stdout + "\n" + result.stderr)
    assert not english, english
