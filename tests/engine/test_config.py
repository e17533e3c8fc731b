"""The TOML config: defaults, every key documented, strict errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from base.errors import ConfigError
from engine.config import CONFIG_ENV, Config, load_config, parse_config
from engine.secrets import load_secrets
from interfaces.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def _keys(cls: type, prefix: str = "") -> set[str]:
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.name in ("source", "present_tables"):
            continue
        tp = hints[f.name]
        if typing.get_origin(tp) is dict:  # a table of named tables ([api.clients.NAME])
            continue
        if dataclasses.is_dataclass(tp):
            keys |= _keys(typing.cast(type, tp), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _flatten(data: dict[str, object], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_every_key_is_in_the_example_and_the_example_has_the_defaults() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert _flatten(example) == _keys(Config)
    assert parse_config(EXAMPLE.read_text(encoding="utf-8")) == Config()


def test_no_config_means_builtin_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    config = load_config()
    assert config.database.url == "sqlite:///meterctl.db"
    assert (config.dlt645.password_level, config.dlt645.password, config.dlt645.operator_code) == (
        2,
        "000000",
        "00000000",
    )
    assert not config.roles_configured


def test_the_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "sqlite:///other.db"\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert load_config().database.url == "sqlite:///other.db"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[policy]\nnotice_dayz = 7\n", "policy.notice_dayz"),
        ('[policy]\nnotice_days = "7"\n', "policy.notice_days"),
        ('[policy.window]\nstart = "8am"\n', "policy.window.start"),
        ('[policy.window]\nweekdays = ["monday"]\n', "policy.window.weekdays[0]"),
        ('[site]\ntimezone = "Mars/Olympus"\n', "site.timezone"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[dlt645]\npassword = "12345"\n', "dlt645.password"),
        ("[dlt645]\nbaud = 2401\n", "dlt645.baud"),
        ("[wat]\nx = 1\n", "wat"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_config_is_an_error_naming_the_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)


def test_bad_config_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[policy]\nnotice_dayz = 7\n")
    result = CliRunner().invoke(app, ["--config", str(path), "status"])
    assert result.exit_code == 2
    assert "policy.notice_dayz" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_secrets_file_overrides_per_meter_and_never_shows_the_password(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text(
        '[meters."123456789012"]\npassword = "654321"\npassword_level = 4\n'
    )
    config = parse_config('[dlt645]\nsecrets_file = "secrets.toml"\n', source=tmp_path / "c.toml")
    secrets = load_secrets(config)
    special = secrets.for_meter("123456789012")
    assert (special.level, special.password) == (4, "654321")
    assert secrets.for_meter("000000000001").password == "000000"
    assert "654321" not in repr(special) and "654321" not in repr(secrets)


def test_a_malformed_secret_is_named_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text('[meters."123456789012"]\npassword = "98765x"\n')
    config = parse_config('[dlt645]\nsecrets_file = "secrets.toml"\n', source=tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="123456789012") as info:
        load_secrets(config)
    assert "98765x" not in str(info.value)


def test_api_clients_are_named_tables_with_a_key_and_a_role() -> None:
    config = parse_config(
        '[api.clients.cis]\nkey = "k1"\nrole = "operator"\n'
        '[api.clients.mdm]\nkey_file = "mdm.key"\nrole = "viewer"\n'
    )
    assert config.api.clients["cis"].key == "k1"
    assert config.api.clients["mdm"].role == "viewer"
    with pytest.raises(ConfigError, match=r"api\.clients\.cis\.role"):
        parse_config('[api.clients.cis]\nkey = "k"\nrole = "admin"\n')
    with pytest.raises(ConfigError, match=r"api\.clients\.cis\.key"):
        parse_config('[api.clients.cis]\nrole = "operator"\n')
    with pytest.raises(ConfigError, match=r"api\.clients\.cis\.colour"):
        parse_config('[api.clients.cis]\nkey = "k"\ncolour = "red"\n')


def test_the_example_crews_parse_once_uncommented() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [field.crews.day]"))
    crews = "\n".join(line[2:] for line in lines[start:] if line.startswith("# "))
    config = parse_config(crews + '\n[field.night_duty]\ncrew = "night"\n')
    assert config.field.crews["day"].members == ["wang", "li"]
    assert config.field.crews["night"].members == ["zhao", "qian"]
