"""Configuration: one TOML file, typed sections, strict validation.

The file is found by ``meterctl --config PATH`` or ``METERCTL_CONFIG``; with neither, the
built-in defaults below apply (SQLite in the working folder, every user holds every role).
Every key is documented in ``config.example.toml``. An unknown key or a value of the wrong
type is a :class:`~protocols.errors.ConfigError` that names the key (``policy.window.start``).

Each section is a frozen dataclass; adding a key means adding a field here and a line in
``config.example.toml`` (``tests/engine/test_config.py`` checks the two agree).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.errors import ConfigError

CONFIG_ENV = "METERCTL_CONFIG"


@dataclass(frozen=True)
class SiteConfig:
    timezone: str = "Asia/Shanghai"
    name: str = "meterctl"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///meterctl.db"


@dataclass(frozen=True)
class Dlt645Config:
    password_level: int = 2
    password: str = "000000"
    operator_code: str = "00000000"
    secrets_file: str = ""
    wake_preamble: int = 4
    baud: int = 2400
    parity: str = "E"
    # Extra seconds allowed on top of the standard's timing for gateway/TCP latency.
    link_margin_s: float = 0.5
    read_retries: int = 2
    # Encrypted control (meters with security = "encrypted"): the security module and its keys.
    security_module: str = "software"
    security_key_file: str = ""


@dataclass(frozen=True)
class WindowConfig:
    weekdays: list[str] = field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: str = "08:00"
    end: str = "16:00"
    holidays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchLimitConfig:
    max_share: float = 0.05
    max_count: int = 5000


@dataclass(frozen=True)
class PolicyConfig:
    arrears_threshold: float = 0.0
    notice_days: int = 7
    notice_max_age_days: int = 30
    important_warning_minutes: int = 15
    window: WindowConfig = field(default_factory=WindowConfig)
    batch_limit: BatchLimitConfig = field(default_factory=BatchLimitConfig)


@dataclass(frozen=True)
class RolesConfig:
    operator: list[str] = field(default_factory=list)
    supervisor: list[str] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AuditConfig:
    # HMAC key for the audit hash chain; ``key_file`` wins when set. Keep it outside the DB.
    key: str = "meterctl-default-audit-key"
    key_file: str = ""


@dataclass(frozen=True)
class HooksConfig:
    payment_key: str = ""
    payment_key_file: str = ""
    listen: str = "127.0.0.1:8645"
    max_clock_skew_s: int = 300


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    json: bool = True


@dataclass(frozen=True)
class DispatchConfig:
    command_validity_minutes: int = 5  # 1CH N3..N8: how long a sent command stays valid
    max_commands: int = 2  # commands per order; a resend only after a read-back shows it needed
    readback_polls: int = 3  # relay read-backs after a command before "did not switch"
    poll_interval_s: float = 1.0
    backoff_s: float = 2.0  # before a resend, doubled each time
    max_dispatch_attempts: int = (
        3  # no reply before any command: retry the order later, then field order
    )
    retry_delay_s: float = 30.0
    reconnect_deadline_minutes: int = 120  # after payment; then escalated
    armed_poll_minutes: int = 5  # how often an armed (1BH) meter is read for the button press
    lease_s: int = 60  # a bus or order held by a silent process is free after this


@dataclass(frozen=True)
class SchedulerConfig:
    tick_seconds: int = 15  # how often due timers and due orders are claimed
    batch_cron: str = ""  # e.g. "0 9 * * mon-fri" (site time zone); empty = no automatic batch
    sweep_times: list[str] = field(default_factory=lambda: ["06:00", "18:00"])
    night_starts: str = "20:00"  # reconnections still pending at the evening sweep are escalated


@dataclass(frozen=True)
class NotifyConfig:
    outbox_file: str = ""  # also append every notification as a JSON line here
    important_copy_to: list[str] = field(
        default_factory=list
    )  # authorities copied on important-customer notices
    # who gets sweep reports, escalations and batch-limit alerts (duty officer, base units' group)
    duty_recipients: list[str] = field(default_factory=lambda: ["duty-officer"])


@dataclass(frozen=True)
class Config:
    site: SiteConfig = field(default_factory=SiteConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    dlt645: Dlt645Config = field(default_factory=Dlt645Config)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    # Not keys: where the file was (for relative paths) and which tables it had.
    source: Path | None = field(default=None, compare=False)
    present_tables: frozenset[str] = field(default_factory=frozenset, compare=False)

    @property
    def roles_configured(self) -> bool:
        """True once the file has a ``[roles]`` table (then only named users hold roles)."""
        return "roles" in self.present_tables

    def resolve_path(self, value: str) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path


_META_FIELDS = {"source", "present_tables"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list of {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _is_secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1].split("[", 1)[0]
    return last in ("password", "key") or last.endswith(("_key", "_password", "_secret"))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    if _is_secret_key(key):
        try:
            return _coerce_value(key, tp, value)
        except ConfigError:  # the message would quote the value: a secret
            raise ConfigError(
                f"config key {key}: expected {_type_name(tp)} (value not shown: a secret)"
            ) from None
    return _coerce_value(key, tp, value)


def _coerce_value(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", inner, item) for i, item in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(f"config key {key}: unsupported type")  # pragma: no cover
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"config key {key}: expected a {_type_name(tp)}, got {value!r}")
        return value
    raise ConfigError(f"config key {key}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in _META_FIELDS}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                f"unknown config key {dotted!r} (known in this table: {', '.join(sorted(known))})"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted}: expected a table, got {value!r}")
            kwargs[key] = _build(typing.cast(type[Any], tp), value, f"{dotted}.")
        else:
            kwargs[key] = _coerce(dotted, tp, value)
    return cls(**kwargs)


def _validate(config: Config) -> None:
    try:
        config.site.tz  # noqa: B018 - raises on an unknown zone
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"config key site.timezone: unknown time zone {config.site.timezone!r}"
        ) from exc
    if config.dlt645.password_level < 0 or config.dlt645.password_level > 0xFF:
        raise ConfigError("config key dlt645.password_level: must be 0..255")
    if len(config.dlt645.password) != 6 or not _ascii_digits(config.dlt645.password):
        raise ConfigError("config key dlt645.password: must be 6 digits")
    if len(config.dlt645.operator_code) != 8 or not _ascii_digits(config.dlt645.operator_code):
        raise ConfigError("config key dlt645.operator_code: must be 8 digits")
    if config.dlt645.parity not in ("E", "O", "N"):
        raise ConfigError("config key dlt645.parity: must be E, O or N")
    if config.dlt645.baud not in (300, 600, 1200, 2400, 4800, 9600, 19200):
        raise ConfigError("config key dlt645.baud: must be one of 600..19200 (a DL/T 645 rate)")
    days = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
    for i, day in enumerate(config.policy.window.weekdays):
        if day not in days:
            raise ConfigError(
                f"config key policy.window.weekdays[{i}]: {day!r} is not one of {sorted(days)}"
            )
    for key in ("start", "end"):
        text = getattr(config.policy.window, key)
        if not _is_hhmm(text, allow_24=(key == "end")):
            raise ConfigError(f"config key policy.window.{key}: {text!r} is not HH:MM")
    from datetime import date

    for i, text in enumerate(config.policy.window.holidays):
        try:
            date.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(
                f"config key policy.window.holidays[{i}]: {text!r} is not an ISO date"
            ) from exc
    if not 0.0 <= config.policy.batch_limit.max_share <= 1.0:
        raise ConfigError("config key policy.batch_limit.max_share: must be between 0 and 1")
    if config.policy.batch_limit.max_count < 0:
        raise ConfigError("config key policy.batch_limit.max_count: must not be negative")
    if (
        config.policy.notice_days < 0
        or config.policy.notice_max_age_days < config.policy.notice_days
    ):
        raise ConfigError(
            "config key policy.notice_max_age_days: must be at least policy.notice_days"
        )
    url = config.database.url
    if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ConfigError(
            f"config key database.url: {url.split('://')[0]!r} is not supported "
            "(use sqlite:///file.db or postgresql://...)"
        )


def _is_hhmm(text: str, *, allow_24: bool) -> bool:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return False
    hours, minutes = int(parts[0]), int(parts[1])
    if allow_24 and hours == 24 and minutes == 0:
        return True
    return hours < 24 and minutes < 60


def parse_config(text: str, source: Path | None = None) -> Config:
    """Parse and validate TOML text."""
    where = f" in {source}" if source else ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file is not valid TOML{where}: {exc}") from exc
    config: Config = _build(Config, data, "")
    config = dataclasses.replace(config, source=source, present_tables=frozenset(data))
    _validate(config)
    from engine.logging import register_secret

    for inline_secret in (config.hooks.payment_key, config.audit.key, config.dlt645.password):
        register_secret(inline_secret)  # never in a log line from now on
    return config


def load_config(path: str | Path | None = None) -> Config:
    """Load the config from ``path``, else ``$METERCTL_CONFIG``, else built-in defaults."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return Config()
    file = Path(chosen).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {file} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {file} is a folder, not a file") from exc
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file} is not UTF-8 text (byte {exc.start}: "
            f"0x{exc.object[exc.start]:02X}); save it as UTF-8"
        ) from None
    return parse_config(text, source=file.resolve())


def read_secret(config: Config, inline: str, file_key: str, file_value: str) -> str:
    """Return a secret given inline or by file (the file wins); never echo it in errors.

    The value is registered with :func:`engine.logging.register_secret`, so no log line can
    show it afterwards.
    """
    from engine.logging import register_secret

    if file_value:
        path = config.resolve_path(file_value)
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"config key {file_key}: cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config key {file_key}: {path} is not UTF-8 text") from exc
        register_secret(secret)
        return secret
    register_secret(inline)
    return inline


def _ascii_digits(text: str) -> bool:
    """Only 0-9: ``str.isdigit`` also accepts full-width, Arabic-Indic and superscript digits."""
    return bool(text) and text.isascii() and text.isdigit()
