"""Meter credentials: defaults from ``[dlt645]``, per-meter overrides from the secrets file.

The secrets file (``[dlt645] secrets_file``, TOML) is the only place a meter password
lives; the database stores at most a *reference* (``meters.password_ref``)::

    [meters."123456789012"]      # by meter address, or by the meter's password_ref
    password = "123456"
    password_level = 4
    operator_code = "00000001"

Errors name the file and the entry, never the password.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from base.errors import ConfigError
from base.i18n import N_, Msg
from engine.config import Config
from protocols.dlt645.messages import Credentials
from protocols.errors import FrameStructureError


@dataclass(frozen=True)
class MeterSecrets:
    default: Credentials
    per_meter: dict[str, Credentials] = field(default_factory=dict, repr=False)

    def for_meter(self, address: str, password_ref: str | None = None) -> Credentials:
        """Credentials for a meter: its reference, else its address, else the default."""
        if password_ref and password_ref in self.per_meter:
            return self.per_meter[password_ref]
        return self.per_meter.get(address, self.default)


def load_secrets(config: Config) -> MeterSecrets:
    """Read the defaults and the secrets file named by the config.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown key or a malformed entry (named).
    """
    d = config.dlt645
    try:
        default = Credentials(d.password_level, d.password, d.operator_code)
    except FrameStructureError as exc:
        raise ConfigError(Msg(N_("config [dlt645]: {problem}"), problem=exc)) from exc
    if not d.secrets_file:
        return MeterSecrets(default)
    path = config.resolve_path(d.secrets_file)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config key dlt645.secrets_file: cannot read {path}: {strerror}"),
                path=path,
                strerror=exc.strerror,
            )
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            Msg(N_("secrets file {path} is not valid TOML: {exc}"), path=path, exc=exc)
        ) from exc
    unknown = set(data) - {"meters"}
    if unknown:
        raise ConfigError(
            Msg(
                N_('secrets file {path}: unknown table(s) {sorted}; use [meters."ADDR"]'),
                path=path,
                sorted=sorted(unknown),
            )
        )
    per_meter: dict[str, Credentials] = {}
    for name, entry in (data.get("meters") or {}).items():
        if not isinstance(entry, dict):
            raise ConfigError(
                Msg(N_("secrets file {path}: meters.{name} must be a table"), path=path, name=name)
            )
        extra = set(entry) - {"password", "password_level", "operator_code"}
        if extra:
            raise ConfigError(
                Msg(
                    N_("secrets file {path}: meters.{name} has unknown key(s) {sorted}"),
                    path=path,
                    name=name,
                    sorted=sorted(extra),
                )
            )
        try:
            per_meter[str(name)] = Credentials(
                int(entry.get("password_level", default.level)),
                str(entry.get("password", default.password)),
                str(entry.get("operator_code", default.operator)),
            )
        except (FrameStructureError, ValueError, TypeError) as exc:
            raise ConfigError(
                Msg(N_("secrets file {path}: meters.{name}: {exc}"), path=path, name=name, exc=exc)
            ) from exc
    from engine.logging import register_secret

    for credentials in per_meter.values():
        register_secret(credentials.password)
    return MeterSecrets(default, per_meter)
