"""Configuration: one TOML file, typed sections, strict validation.

The file is found by ``meterctl --config PATH`` or ``METERCTL_CONFIG``; with neither, the
built-in defaults below apply (SQLite in the working folder, every user holds every role).
Every key is documented in ``config.example.toml``. An unknown key or a value of the wrong
type is a :class:`~base.errors.ConfigError` that names the key (``policy.window.start``).

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

from base.errors import ConfigError
from base.i18n import N_, Msg
from engine.import_formats import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

CONFIG_ENV = "METERCTL_CONFIG"


@dataclass(frozen=True)
class SiteConfig:
    timezone: str = "Asia/Shanghai"
    name: str = "meterctl"
    # "zh-CN" or "en"; --lang and the locale variables (LANG=zh_CN.UTF-8) override it.
    language: str = "en"

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
    # No disconnection on the working day before a public holiday from this time; "" = off.
    holiday_eve_after: str = "12:00"
    # The statutory calendar wins over weekdays: a make-up (调休) Saturday is a working day.
    statutory_wins: bool = True


@dataclass(frozen=True)
class CalendarConfig:
    # Public holidays and 调休 make-up working days of the PRC (the chinese_calendar library).
    statutory: bool = True
    # Site days before the library has them (next year's schedule) or local ones (extreme
    # weather): TOML or CSV with date, kind (holiday | workday | no_disconnect), name.
    file: str = ""


@dataclass(frozen=True)
class BatchLimitConfig:
    max_share: float = 0.05
    max_count: int = 5000


@dataclass(frozen=True)
class ImportantPolicyConfig:
    # Copies of an important customer's notice and timeline (抄报): the power administration,
    # the customer's authority, the local government, the judiciary. None: no important
    # customer is cut (the cut is blocked, saying so).
    authority_recipients: list[str] = field(default_factory=list)
    # An execution more than this many minutes after its time (T+15) restarts the timeline.
    execute_grace_minutes: int = 15


@dataclass(frozen=True)
class PolicyConfig:
    arrears_threshold: float = 0.0
    notice_days: int = 7
    notice_max_age_days: int = 30
    # A delivery recorded (CLI or billing export) more than this many days after it happened
    # is refused: evidence written down weeks later is no evidence.
    notice_backdate_max_days: int = 14
    # No exemption (保电, humanitarian case) or disconnection approval lasts longer than this.
    exemption_max_days: int = 90
    important_warning_minutes: int = 15
    window: WindowConfig = field(default_factory=WindowConfig)
    batch_limit: BatchLimitConfig = field(default_factory=BatchLimitConfig)
    important: ImportantPolicyConfig = field(default_factory=ImportantPolicyConfig)


@dataclass(frozen=True)
class ImportConfig:
    # A header as it appears in the billing export -> the column it means ("户号" = "account_no").
    # Built-in Chinese names (engine/import_formats.py) are matched too; this table wins.
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolesConfig:
    operator: list[str] = field(default_factory=list)
    supervisor: list[str] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)
    # OS accounts several people use (through sudo -u / su): the identity is then the person
    # who logged in (the kernel's login uid), never the shared name (docs/security.md).
    shared_accounts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AuditConfig:
    # HMAC key of the audit hash chain; ``key_file`` wins when set. With neither, the key is
    # the file meterctl-audit.key beside the config, generated by ``db init`` (never a
    # built-in default). Files are relative to the config file (engine.audit_anchor).
    key: str = ""
    key_file: str = ""
    signing_key_file: str = ""  # Ed25519 private key of the checkpoints (0600)
    public_key_file: str = ""  # its public key: all `audit verify` needs
    anchor_file: str = ""  # append-only file of signed checkpoints, outside the database
    checkpoint_interval_s: int = 300  # serve signs the chain's head this often (when it moved)


@dataclass(frozen=True)
class HooksConfig:
    payment_key: str = ""
    payment_key_file: str = ""
    listen: str = "127.0.0.1:8645"
    max_clock_skew_s: int = 300
    # HTTPS for the hook and the integration API (both files, PEM), and optionally the CA
    # whose client certificates identify API clients ([api.clients.NAME] certificate_cn).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""


@dataclass(frozen=True)
class PaymentsConfig:
    # Whole yuan. A payment above max_amount, or one that would take a balance above
    # max_balance, is refused (exit 2 / HTTP 400 naming the field); both stay below what the
    # NUMERIC(14, 2) column holds exactly (engine.money).
    max_amount: int = 1_000_000
    max_balance: int = 100_000_000


@dataclass(frozen=True)
class ApiClientConfig:
    """One client system of the integration API (``[api.clients.NAME]``)."""

    key: str = ""  # its HMAC-SHA256 key (requests and callbacks are signed with it)
    key_file: str = ""  # or read the key from this file (wins over key)
    role: str = "operator"  # viewer (reads only), operator or supervisor
    # The subject common name (CN) of the client certificate that identifies this client
    # over mutual TLS ([hooks] tls_client_ca_file), instead of signing each request.
    certificate_cn: str = ""


@dataclass(frozen=True)
class ApiConfig:
    """The IEC 61968-9 integration API served by ``meterctl serve`` (docs/integration.md)."""

    clients: dict[str, ApiClientConfig] = field(default_factory=dict)
    max_devices: int = 10_000  # devices in one message; more is refused (413)
    callback_retry_hours: float = 24.0  # a callback not acknowledged by then is given up
    callback_backoff_s: float = 1.0  # first retry delay, doubled each time
    callback_max_backoff_s: float = 300.0
    callback_timeout_s: float = 10.0


API_ROLES = ("viewer", "operator", "supervisor")


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
    # Pre-trip alarm (2AH) at the meter this many minutes before an ordinary disconnection
    # is due (0: off). Important customers always get it at their T-15 warning.
    alarm_before_minutes: int = 0
    # Group commit (engine.dispatch.group_commit): while the campaign's database jobs arrive
    # close together, a transaction waits this long for company before it starts. Each
    # commit (an fsync) then serves more orders; an order waits this long once (0: off).
    group_commit_delay_ms: float = 4.0


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
class CrewConfig:
    """``[field.crews.NAME]``: a field crew (班组) orders can be assigned to."""

    members: list[str] = field(default_factory=list)  # people, by the names the desk uses
    recipients: list[str] = field(default_factory=list)  # notify these; empty = the members


@dataclass(frozen=True)
class NightDutyConfig:
    """``[field.night_duty]``: who takes reconnection orders raised at night (复电不过夜)."""

    crew: str = ""  # a crew of [field.crews]; empty = no automatic night assignment
    starts: str = "20:00"
    ends: str = "08:00"


@dataclass(frozen=True)
class FieldConfig:
    """``[field]``: time limits and escalation of field work orders (engine/fieldwork)."""

    reconnect_hours: float = 4.0  # 现场复电 within this many hours of being raised
    reconnect_done_by: str = "08:00"  # ... and never left overnight: done by this local time
    disconnect_working_days: int = 3  # 补停 by the end of the Nth working day after being raised
    second_level_hours: float = 2.0  # still late this long after 预警: 督办 by the supervisors
    followup_hours: float = 24.0  # 回访 due this long after a reconnection
    complaint_working_days: int = 5  # a complaint answered by the end of the Nth working day
    supervisors: list[str] = field(default_factory=list)  # 督办 recipients; empty = [roles]
    crews: dict[str, CrewConfig] = field(default_factory=dict)
    night_duty: NightDutyConfig = field(default_factory=NightDutyConfig)


@dataclass(frozen=True)
class Config:
    site: SiteConfig = field(default_factory=SiteConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    dlt645: Dlt645Config = field(default_factory=Dlt645Config)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    # ``[import]`` in the file (``import`` is a Python keyword).
    import_: ImportConfig = field(default_factory=ImportConfig, metadata={"toml": "import"})
    roles: RolesConfig = field(default_factory=RolesConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    payments: PaymentsConfig = field(default_factory=PaymentsConfig)
    # Not keys: where the file was (for relative paths) and which tables it had.
    source: Path | None = field(default=None, compare=False)
    present_tables: frozenset[str] = field(default_factory=frozenset, compare=False)
    # ``[field]`` (work orders); last, because the name shadows dataclasses.field in this body.
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)

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
                Msg(
                    N_("config key {key}: expected {type_name} (value not shown: a secret)"),
                    key=key,
                    type_name=_type_name(tp),
                )
            ) from None
    return _coerce_value(key, tp, value)


def _coerce_value(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is dict:  # named tables ([api.clients.NAME], [field.crews.NAME]) or strings
        _key_type, inner = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(
                Msg(N_("config key {key}: expected a table, got {value!r}"), key=key, value=value)
            )
        if not dataclasses.is_dataclass(inner):  # e.g. [import.columns]: header -> column
            return {str(k): _coerce(f"{key}.{k}", inner, v) for k, v in value.items()}
        built: dict[str, Any] = {}
        for name, item in value.items():
            if not isinstance(item, dict):
                raise ConfigError(
                    Msg(
                        N_("config key {key}.{name}: expected a table, got {item!r}"),
                        key=key,
                        name=name,
                        item=item,
                    )
                )
            built[name] = _build(typing.cast(type[Any], inner), item, f"{key}.{name}.")
        return built
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(
                Msg(
                    N_("config key {key}: expected {type_name}, got {value!r}"),
                    key=key,
                    type_name=_type_name(tp),
                    value=value,
                )
            )
        return [_coerce(f"{key}[{i}]", inner, item) for i, item in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(
            Msg(N_("config key {key}: unsupported type"), key=key)
        )  # pragma: no cover
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                Msg(N_("config key {key}: expected a number, got {value!r}"), key=key, value=value)
            )
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                Msg(
                    N_("config key {key}: expected an integer, got {value!r}"), key=key, value=value
                )
            )
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(
                Msg(
                    N_("config key {key}: expected a {type_name}, got {value!r}"),
                    key=key,
                    type_name=_type_name(tp),
                    value=value,
                )
            )
        return value
    raise ConfigError(
        Msg(N_("config key {key}: unsupported type {tp!r}"), key=key, tp=tp)
    )  # pragma: no cover


def _build(cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    # A field's TOML name is its own, or metadata["toml"] when the name is a Python keyword.
    known = {
        f.metadata.get("toml", f.name): f
        for f in dataclasses.fields(cls)
        if f.name not in _META_FIELDS
    }
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                Msg(
                    N_("unknown config key {dotted!r} (known in this table: {items})"),
                    dotted=dotted,
                    items=", ".join(sorted(known)),
                )
            )
        name = known[key].name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(
                    Msg(
                        N_("config key {dotted}: expected a table, got {value!r}"),
                        dotted=dotted,
                        value=value,
                    )
                )
            kwargs[name] = _build(typing.cast(type[Any], tp), value, f"{dotted}.")
        else:
            kwargs[name] = _coerce(dotted, tp, value)
    return cls(**kwargs)


def _validate_field(config: Config) -> None:
    work = config.field
    for key in ("reconnect_hours", "second_level_hours", "followup_hours"):
        if getattr(work, key) <= 0:
            raise ConfigError(Msg(N_("config key field.{key}: must be more than 0"), key=key))
    for key in ("disconnect_working_days", "complaint_working_days"):
        if getattr(work, key) < 0:
            raise ConfigError(Msg(N_("config key field.{key}: must not be negative"), key=key))
    checks = (
        ("field.reconnect_done_by", work.reconnect_done_by),
        ("field.night_duty.starts", work.night_duty.starts),
        ("field.night_duty.ends", work.night_duty.ends),
    )
    for key, text in checks:
        if not _is_hhmm(text, allow_24=False):
            raise ConfigError(
                Msg(N_("config key {key}: {text!r} is not HH:MM"), key=key, text=text)
            )
    crew = work.night_duty.crew
    if crew and crew not in work.crews:
        raise ConfigError(
            Msg(
                N_(
                    "config key field.night_duty.crew: {crew!r} is not a crew of field.crews (known: {value})"
                ),
                crew=crew,
                value=", ".join(sorted(work.crews)) or "none",
            )
        )
    for name, members in sorted(work.crews.items()):
        for member in members.members:
            if member in work.crews:
                raise ConfigError(
                    Msg(
                        N_(
                            "config key field.crews.{name}.members: {member!r} is also a crew's name"
                        ),
                        name=name,
                        member=member,
                    )
                )


def _validate(config: Config) -> None:
    _validate_field(config)
    try:
        config.site.tz  # noqa: B018 - raises on an unknown zone
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            Msg(
                N_("config key site.timezone: unknown time zone {timezone!r}"),
                timezone=config.site.timezone,
            )
        ) from exc
    from base.i18n import LANGUAGES, normalise

    if normalise(config.site.language) not in LANGUAGES:
        raise ConfigError(
            Msg(
                N_("config key site.language: {language!r} is not one of {items}"),
                language=config.site.language,
                items=", ".join(LANGUAGES),
            )
        )
    if config.dlt645.password_level < 0 or config.dlt645.password_level > 0xFF:
        raise ConfigError(Msg(N_("config key dlt645.password_level: must be 0..255")))
    if len(config.dlt645.password) != 6 or not _ascii_digits(config.dlt645.password):
        raise ConfigError(Msg(N_("config key dlt645.password: must be 6 digits")))
    if len(config.dlt645.operator_code) != 8 or not _ascii_digits(config.dlt645.operator_code):
        raise ConfigError(Msg(N_("config key dlt645.operator_code: must be 8 digits")))
    if config.dlt645.parity not in ("E", "O", "N"):
        raise ConfigError(Msg(N_("config key dlt645.parity: must be E, O or N")))
    if config.dlt645.baud not in (300, 600, 1200, 2400, 4800, 9600, 19200):
        raise ConfigError(
            Msg(N_("config key dlt645.baud: must be one of 600..19200 (a DL/T 645 rate)"))
        )
    days = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
    for i, day in enumerate(config.policy.window.weekdays):
        if day not in days:
            raise ConfigError(
                Msg(
                    N_("config key policy.window.weekdays[{i}]: {day!r} is not one of {sorted}"),
                    i=i,
                    day=day,
                    sorted=sorted(days),
                )
            )
    for key in ("start", "end", "holiday_eve_after"):
        text = getattr(config.policy.window, key)
        if key == "holiday_eve_after" and text == "":
            continue
        if not _is_hhmm(text, allow_24=(key == "end")):
            raise ConfigError(
                Msg(N_("config key policy.window.{key}: {text!r} is not HH:MM"), key=key, text=text)
            )
    from datetime import date

    for i, text in enumerate(config.policy.window.holidays):
        try:
            date.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(
                Msg(
                    N_("config key policy.window.holidays[{i}]: {text!r} is not an ISO date"),
                    i=i,
                    text=text,
                )
            ) from exc
    if not 0.0 <= config.policy.batch_limit.max_share <= 1.0:
        raise ConfigError(
            Msg(N_("config key policy.batch_limit.max_share: must be between 0 and 1"))
        )
    if config.policy.batch_limit.max_count < 0:
        raise ConfigError(Msg(N_("config key policy.batch_limit.max_count: must not be negative")))
    if (
        config.policy.notice_days < 0
        or config.policy.notice_max_age_days < config.policy.notice_days
    ):
        raise ConfigError(
            Msg(N_("config key policy.notice_max_age_days: must be at least policy.notice_days"))
        )
    _validate_bounds(config)
    if config.policy.exemption_max_days < 1:
        raise ConfigError(Msg(N_("config key policy.exemption_max_days: must be at least 1")))
    if config.policy.notice_backdate_max_days < 0:
        raise ConfigError(
            Msg(N_("config key policy.notice_backdate_max_days: must not be negative"))
        )
    if config.import_.columns:
        for header, column in config.import_.columns.items():
            if column not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
                raise ConfigError(
                    Msg(
                        N_(
                            "config key import.columns.{header!r}: {column!r} is not a column ({items})"
                        ),
                        header=header,
                        column=column,
                        items=", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS),
                    )
                )
    url = config.database.url
    if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ConfigError(
            Msg(
                N_(
                    "config key database.url: {value!r} is not supported (use sqlite:///file.db or postgresql://...)"
                ),
                value=url.split("://")[0],
            )
        )
    _validate_api(config)


def _validate_api(config: Config) -> None:
    api = config.api
    if not 1 <= api.max_devices <= 100_000:
        raise ConfigError(Msg(N_("config key api.max_devices: must be between 1 and 100000")))
    for key in ("callback_retry_hours", "callback_backoff_s", "callback_max_backoff_s"):
        if getattr(api, key) <= 0:
            raise ConfigError(Msg(N_("config key api.{key}: must be positive"), key=key))
    for name, client in api.clients.items():
        if client.role not in API_ROLES:
            raise ConfigError(
                Msg(
                    N_("config key api.clients.{name}.role: {role!r} is not one of {items}"),
                    name=name,
                    role=client.role,
                    items=", ".join(API_ROLES),
                )
            )
        if not client.key and not client.key_file:
            raise ConfigError(
                Msg(
                    N_("config key api.clients.{name}.key: a client needs a key or key_file"),
                    name=name,
                )
            )
        if client.certificate_cn and not config.hooks.tls_client_ca_file:
            raise ConfigError(
                f"config key api.clients.{name}.certificate_cn: needs [hooks] "
                "tls_client_ca_file (the CA that signs the client certificates)"
            )
    names = [c.certificate_cn for c in api.clients.values() if c.certificate_cn]
    if len(names) != len(set(names)):
        raise ConfigError(
            "config key api.clients.*.certificate_cn: two clients name the same certificate"
        )
    hooks = config.hooks
    if bool(hooks.tls_cert_file) != bool(hooks.tls_key_file):
        raise ConfigError(
            "config key hooks.tls_cert_file: HTTPS needs both tls_cert_file and tls_key_file"
        )
    if hooks.tls_client_ca_file and not hooks.tls_cert_file:
        raise ConfigError(
            "config key hooks.tls_client_ca_file: client certificates need HTTPS "
            "(tls_cert_file and tls_key_file)"
        )


# (key, smallest, largest): numbers where a negative, zero or absurd value would silently
# disable a safeguard (a negative skew refuses every call, a zero lease lets two processes
# drive one bus, a zero command budget never switches).
_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("hooks.max_clock_skew_s", 1, 86_400),
    ("dispatch.lease_s", 5, 86_400),
    ("dispatch.max_commands", 1, 10),
    ("dispatch.command_validity_minutes", 1, 1_440),
    ("dispatch.readback_polls", 1, 100),
    ("dispatch.poll_interval_s", 0, 3_600),
    ("dispatch.backoff_s", 0, 3_600),
    ("dispatch.max_dispatch_attempts", 1, 100),
    ("dispatch.retry_delay_s", 0, 86_400),
    ("dispatch.reconnect_deadline_minutes", 1, 10_080),
    ("dispatch.armed_poll_minutes", 0, 1_440),
    ("dispatch.group_commit_delay_ms", 0, 100),
    ("scheduler.tick_seconds", 1, 3_600),
    ("audit.checkpoint_interval_s", 1, 86_400),
    ("dlt645.link_margin_s", 0, 60),
    ("dlt645.read_retries", 0, 20),
    ("dlt645.wake_preamble", 0, 16),
    ("payments.max_amount", 1, 10**10),
    ("payments.max_balance", 1, 10**12 - 1),
)


def _validate_bounds(config: Config) -> None:
    for key, low, high in _BOUNDS:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not low <= value <= high:
            raise ConfigError(
                Msg(
                    N_("config key {key}: {value!r} is out of range ({low:g} to {high:g})"),
                    key=key,
                    value=value,
                    low=low,
                    high=high,
                )
            )
    if config.payments.max_amount > config.payments.max_balance:
        raise ConfigError(
            Msg(N_("config key payments.max_amount: must not exceed payments.max_balance"))
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
        raise ConfigError(
            Msg(N_("config file is not valid TOML{where}: {exc}"), where=where, exc=exc)
        ) from exc
    config: Config = _build(Config, data, "")
    config = dataclasses.replace(config, source=source, present_tables=frozenset(data))
    _validate(config)
    from engine.logging import register_secret

    api_keys = [client.key for client in config.api.clients.values()]
    for inline_secret in (
        config.hooks.payment_key,
        config.audit.key,
        config.dlt645.password,
        *api_keys,
    ):
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
        raise ConfigError(Msg(N_("config file {file} does not exist"), file=file)) from exc
    except IsADirectoryError as exc:
        raise ConfigError(Msg(N_("config file {file} is a folder, not a file"), file=file)) from exc
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config file {file} cannot be read: {strerror}"),
                file=file,
                strerror=exc.strerror,
            )
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            Msg(
                N_(
                    "config file {file} is not UTF-8 text (byte {start}: 0x{value:02X}); save it as UTF-8"
                ),
                file=file,
                start=exc.start,
                value=exc.object[exc.start],
            )
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
            raise ConfigError(
                Msg(
                    N_("config key {file_key}: cannot read {path}: {strerror}"),
                    file_key=file_key,
                    path=path,
                    strerror=exc.strerror,
                )
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                Msg(
                    N_("config key {file_key}: {path} is not UTF-8 text"),
                    file_key=file_key,
                    path=path,
                )
            ) from exc
        register_secret(secret)
        return secret
    register_secret(inline)
    return inline


def _ascii_digits(text: str) -> bool:
    """Only 0-9: ``str.isdigit`` also accepts full-width, Arabic-Indic and superscript digits."""
    return bool(text) and text.isascii() and text.isdigit()


DEFAULT_AUDIT_KEY_FILE = "meterctl-audit.key"
# The key every installation shared before keys were generated per installation: public.
PUBLIC_DEFAULT_AUDIT_KEY = "meterctl-default-audit-key"


def audit_key_path(config: Config) -> Path | None:
    """Where the audit key is read from: ``key_file``, else (no inline ``key``) the
    installation's file beside the config; None when the key is given inline."""
    if config.audit.key and not config.audit.key_file:
        return None
    return config.resolve_path(config.audit.key_file or DEFAULT_AUDIT_KEY_FILE)


def audit_key(config: Config) -> bytes:
    """The chain's HMAC key: ``[audit] key_file``, else ``key``, else the installation's file.

    The installation's file (``meterctl-audit.key`` beside the config) is generated by
    ``meterctl db init`` (:mod:`engine.audit_anchor`); a missing one is an error saying so.
    There is no built-in default: the old one is public and refused.
    """
    path = audit_key_path(config)
    if path is not None and not config.audit.key_file and not path.exists():
        raise ConfigError(
            Msg(
                N_(
                    "no audit key: `meterctl db init` creates one in {path} (or set [audit] key_file to the installation's key)"
                ),
                path=path,
            )
        )
    secret = read_secret(
        config, config.audit.key, "audit.key_file", str(path) if path is not None else ""
    )
    if not secret:
        raise ConfigError(Msg(N_("config key audit.key: the audit key must not be empty")))
    if secret == PUBLIC_DEFAULT_AUDIT_KEY:
        raise ConfigError(
            Msg(
                N_(
                    "config key audit.key: this is the old built-in default key, which is public; anyone could re-hash the trail (docs/security.md: moving to a generated key)"
                )
            )
        )
    return secret.encode("utf-8")


if typing.TYPE_CHECKING:
    from policies.settings import PolicyConfigLike

    def _policy_config_fits(config: PolicyConfig) -> PolicyConfigLike:
        # Checked by mypy only: this dataclass must keep matching what the policies read.
        return config
