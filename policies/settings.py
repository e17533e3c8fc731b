"""Build :class:`~policies.facts.PolicySettings` from the engine's ``[policy]`` config section.

Conversion happens once per command, not per account: the rules then compare ready-made
``time``, ``date``, ``Decimal`` and ``ZoneInfo`` values. The engine is not imported at run
time (policies stay a pure leaf package); any object with the attributes of
``engine.config.PolicyConfig`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from base.errors import ConfigError
from policies.facts import PolicySettings, WindowSettings

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WindowConfigLike(Protocol):
    """``[policy.window]``: weekday names, ``HH:MM`` strings, ISO holiday dates."""

    @property
    def weekdays(self) -> Sequence[str]: ...
    @property
    def start(self) -> str: ...
    @property
    def end(self) -> str: ...
    @property
    def holidays(self) -> Sequence[str]: ...


class BatchLimitConfigLike(Protocol):
    """``[policy.batch_limit]``."""

    @property
    def max_share(self) -> float: ...
    @property
    def max_count(self) -> int: ...


class PolicyConfigLike(Protocol):
    """``[policy]``, as ``engine.config.PolicyConfig`` has it."""

    @property
    def arrears_threshold(self) -> float | Decimal | str: ...
    @property
    def notice_days(self) -> int: ...
    @property
    def notice_max_age_days(self) -> int: ...
    @property
    def important_warning_minutes(self) -> int: ...
    @property
    def window(self) -> WindowConfigLike: ...
    @property
    def batch_limit(self) -> BatchLimitConfigLike: ...


def parse_clock(text: str, key: str, *, allow_24: bool = False) -> time | None:
    """``"08:00"`` -> ``time(8, 0)``; ``"24:00"`` -> ``None`` (end of day) when allowed."""
    parts = text.split(":")
    if len(parts) == 2 and all(len(p) == 2 and p.isdigit() for p in parts):
        hours, minutes = int(parts[0]), int(parts[1])
        if allow_24 and (hours, minutes) == (24, 0):
            return None
        if hours < 24 and minutes < 60:
            return time(hours, minutes)
    raise ConfigError(f"config key {key}: {text!r} is not HH:MM")


def _window(config: WindowConfigLike) -> WindowSettings:
    weekdays: set[int] = set()
    for i, name in enumerate(config.weekdays):
        try:
            weekdays.add(WEEKDAYS.index(name.lower()))
        except ValueError:
            raise ConfigError(
                f"config key policy.window.weekdays[{i}]: {name!r} is not one of "
                f"{', '.join(WEEKDAYS)}"
            ) from None
    start = parse_clock(config.start, "policy.window.start")
    end = parse_clock(config.end, "policy.window.end", allow_24=True)
    assert start is not None  # allow_24 is False, so parse_clock returned a time
    if end is not None and end <= start:
        raise ConfigError(
            f"config key policy.window.end: {config.end!r} is not after start {config.start!r}"
        )
    holidays: set[date] = set()
    for i, text in enumerate(config.holidays):
        try:
            holidays.add(date.fromisoformat(text))
        except (TypeError, ValueError):
            raise ConfigError(
                f"config key policy.window.holidays[{i}]: {text!r} is not an ISO date (YYYY-MM-DD)"
            ) from None
    return WindowSettings(
        weekdays=frozenset(weekdays), start=start, end=end, holidays=frozenset(holidays)
    )


def settings_from_config(policy_config: PolicyConfigLike, site_timezone: str) -> PolicySettings:
    """Convert ``[policy]`` (and ``[site] timezone``) into :class:`PolicySettings`.

    Raises :class:`~base.errors.ConfigError` naming the key on a value the rules cannot
    use. The threshold goes through ``str`` so ``-0.1`` becomes ``Decimal("-0.1")``, not the
    float's binary expansion.
    """
    try:
        tz = ZoneInfo(site_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"config key site.timezone: unknown time zone {site_timezone!r}"
        ) from None
    try:
        threshold = Decimal(str(policy_config.arrears_threshold))
    except InvalidOperation:
        raise ConfigError(
            "config key policy.arrears_threshold: "
            f"{policy_config.arrears_threshold!r} is not a number"
        ) from None
    if not threshold.is_finite():
        raise ConfigError("config key policy.arrears_threshold: must be a finite number")
    notice_days = policy_config.notice_days
    max_age = policy_config.notice_max_age_days
    if notice_days < 0:
        raise ConfigError("config key policy.notice_days: must not be negative")
    if max_age < notice_days:
        raise ConfigError(
            "config key policy.notice_max_age_days: must be at least policy.notice_days"
        )
    if policy_config.important_warning_minutes < 0:
        raise ConfigError("config key policy.important_warning_minutes: must not be negative")
    important = getattr(policy_config, "important", None)
    authorities = tuple(
        str(a).strip() for a in getattr(important, "authority_recipients", ()) if str(a).strip()
    )
    grace = int(getattr(important, "execute_grace_minutes", 15))
    if grace < 0:
        raise ConfigError("config key policy.important.execute_grace_minutes: must not be negative")
    limit = policy_config.batch_limit
    if not 0.0 <= limit.max_share <= 1.0:
        raise ConfigError("config key policy.batch_limit.max_share: must be between 0 and 1")
    if limit.max_count < 0:
        raise ConfigError("config key policy.batch_limit.max_count: must not be negative")
    return PolicySettings(
        timezone=tz,
        arrears_threshold=threshold,
        notice_days=notice_days,
        notice_max_age_days=max_age,
        important_warning_minutes=policy_config.important_warning_minutes,
        window=_window(policy_config.window),
        batch_max_share=float(limit.max_share),
        batch_max_count=limit.max_count,
        important_authorities=authorities,
        important_execute_grace_minutes=grace,
    )
