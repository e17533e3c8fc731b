"""The integration API's client systems (``[api.clients.NAME]``): key and role.

A client may read (``viewer``) or also send controls (``operator``, ``supervisor``); no
client approves exemptions or overrides a policy: those stay with people (four eyes, CLI).
Keys are never logged or shown (``repr`` hides them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import Config, read_secret

CONTROL_ROLES = frozenset({"operator", "supervisor"})


@dataclass(frozen=True)
class ApiClient:
    name: str
    role: str
    key: bytes = field(repr=False)
    certificate_cn: str = ""  # identifies it over mutual TLS (its certificate's subject CN)

    @property
    def may_control(self) -> bool:
        return self.role in CONTROL_ROLES

    @property
    def actor(self) -> str:
        """How the audit trail names this client's actions."""
        return f"api:{self.name}"


def load_clients(config: Config) -> dict[str, ApiClient]:
    """Every configured client by name, its key read (ConfigError naming an unreadable file)."""
    clients: dict[str, ApiClient] = {}
    for name, entry in config.api.clients.items():
        key = read_secret(config, entry.key, f"api.clients.{name}.key_file", entry.key_file)
        clients[name] = ApiClient(name, entry.role, key.encode("utf-8"), entry.certificate_cn)
    return clients
