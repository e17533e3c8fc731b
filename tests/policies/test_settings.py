from __future__ import annotations

import dataclasses
from datetime import date, time
from decimal import Decimal

import pytest

from base.errors import ConfigError
from engine.config import BatchLimitConfig, PolicyConfig, WindowConfig, parse_config
from policies import PolicySettings, settings_from_config


def test_defaults_match_the_dataclass_defaults() -> None:
    # The engine's defaults and the policies' defaults describe the same utility.
    assert settings_from_config(PolicyConfig(), "Asia/Shanghai") == PolicySettings()


def test_conversion() -> None:
    config = PolicyConfig(
        arrears_threshold=-0.1,
        notice_days=3,
        notice_max_age_days=14,
        important_warning_minutes=20,
        window=WindowConfig(
            weekdays=["mon", "wed", "sat"], start="09:30", end="24:00", holidays=["2026-10-01"]
        ),
        batch_limit=BatchLimitConfig(max_share=0.1, max_count=12),
    )
    settings = settings_from_config(config, "Europe/London")
    assert settings.arrears_threshold == Decimal("-0.1")  # via str, not the float expansion
    assert settings.timezone.key == "Europe/London"
    assert (settings.notice_days, settings.notice_max_age_days) == (3, 14)
    assert settings.important_warning_minutes == 20
    assert settings.window.weekdays == frozenset({0, 2, 5})
    assert settings.window.start == time(9, 30)
    assert settings.window.end is None
    assert settings.window.holidays == frozenset({date(2026, 10, 1)})
    assert (settings.batch_max_share, settings.batch_max_count) == (0.1, 12)


def test_from_a_parsed_toml_file() -> None:
    config = parse_config(
        '[site]\ntimezone = "Asia/Shanghai"\n'
        '[policy.window]\nend = "15:00"\nholidays = ["2026-10-01"]\n'
    )
    settings = settings_from_config(config.policy, config.site.timezone)
    assert settings.window.end == time(15, 0)


@pytest.mark.parametrize(
    ("policy", "tz", "key"),
    [
        (PolicyConfig(), "Mars/Olympus", "site.timezone"),
        (
            PolicyConfig(window=WindowConfig(weekdays=["monday"])),
            "UTC",
            "policy.window.weekdays[0]",
        ),
        (PolicyConfig(window=WindowConfig(start="8:00")), "UTC", "policy.window.start"),
        (PolicyConfig(window=WindowConfig(start="24:00")), "UTC", "policy.window.start"),
        (PolicyConfig(window=WindowConfig(end="24:30")), "UTC", "policy.window.end"),
        (PolicyConfig(window=WindowConfig(start="16:00", end="08:00")), "UTC", "policy.window.end"),
        (PolicyConfig(window=WindowConfig(holidays=["1 Oct"])), "UTC", "policy.window.holidays[0]"),
        (PolicyConfig(notice_days=10, notice_max_age_days=5), "UTC", "policy.notice_max_age_days"),
        (PolicyConfig(arrears_threshold=float("nan")), "UTC", "policy.arrears_threshold"),
        (
            PolicyConfig(batch_limit=BatchLimitConfig(max_share=1.5)),
            "UTC",
            "policy.batch_limit.max_share",
        ),
    ],
)
def test_bad_values_name_the_key(policy: PolicyConfig, tz: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        settings_from_config(policy, tz)


def test_duck_typed_config() -> None:
    # Any object with the attributes works: policies do not import the engine.
    @dataclasses.dataclass
    class Window:
        weekdays: tuple[str, ...] = ("sat",)
        start: str = "10:00"
        end: str = "12:00"
        holidays: tuple[str, ...] = ()

    @dataclasses.dataclass
    class Limit:
        max_share: float = 1.0
        max_count: int = 1

    @dataclasses.dataclass
    class Policy:
        arrears_threshold: str = "-5.5"
        notice_days: int = 1
        notice_max_age_days: int = 2
        important_warning_minutes: int = 15
        window: Window = dataclasses.field(default_factory=Window)
        batch_limit: Limit = dataclasses.field(default_factory=Limit)

    settings = settings_from_config(Policy(), "UTC")
    assert settings.arrears_threshold == Decimal("-5.5")
    assert settings.window.weekdays == frozenset({5})


def test_policies_do_not_import_the_engine() -> None:
    import subprocess
    import sys

    code = "import sys, policies; print(any(m.split('.')[0] == 'engine' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
