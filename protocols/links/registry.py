"""Open a link by URL (python-can's interface registry, imported lazily).

=====================================================  =========================================
URL                                                    link
=====================================================  =========================================
``serial:///dev/ttyUSB0?baud=2400&parity=E``           local RS-485 port through pyserial
``/dev/ttyUSB0``                                       the same, with the default settings
``socket://10.1.2.3:4001``                             transparent serial-to-TCP gateway (DTU)
``memory://NAME``                                      in-process handler (tests, demos)
``concentrator://HOST:PORT?terminal=...&port=N``       Q/GDW 1376.1 AFN=10H F1 (another module)
=====================================================  =========================================

Query parameters and keyword settings are the same names (``baud``, ``parity``...); the
query wins. An unknown scheme or setting is an :class:`~base.errors.InputError`
naming it.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, urlsplit

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.links.base import Link


class LinkFactory(Protocol):
    def from_url(self, url: str, **settings: Any) -> Link: ...


# scheme -> (module, class); the class has a ``from_url(url, **settings)`` classmethod.
SCHEMES: dict[str, tuple[str, str]] = {
    "serial": ("protocols.links.serial_link", "SerialLink"),
    "socket": ("protocols.links.socket_link", "SocketLink"),
    "memory": ("protocols.links.memory", "MemoryLink"),
    "concentrator": ("protocols.links.concentrator", "ConcentratorLink"),
}


def register_scheme(scheme: str, module: str, class_name: str) -> None:
    """Add (or replace) the link class behind ``scheme://``."""
    SCHEMES[scheme.lower()] = (module, class_name)


def scheme_of(url: str) -> str:
    """``serial``, ``socket``... (a bare device path counts as ``serial``).

    Raises:
        InputError: no scheme and not a path.
    """
    text = url.strip()
    if text.startswith("/"):
        return "serial"
    if "://" not in text:
        raise InputError(
            Msg(
                N_("link {url!r} is not a URL (serial:///dev/..., socket://host:port, ...)"),
                url=url,
            )
        )
    return text.split("://", 1)[0].lower()


def open_link(url: str, **settings: Any) -> Link:
    """Create the link for ``url``; it connects on ``await link.open()`` / ``async with``.

    Raises:
        InputError: unknown scheme, bad URL or setting.
    """
    scheme = scheme_of(url)
    try:
        module_name, class_name = SCHEMES[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise InputError(
            Msg(
                N_("link {url!r}: unknown scheme {scheme!r} (known: {known})"),
                url=url,
                scheme=scheme,
                known=known,
            )
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise InputError(
            Msg(
                N_("link {url!r}: {scheme}:// links are not available in this build"),
                url=url,
                scheme=scheme,
            )
        ) from exc
    factory = cast(LinkFactory, getattr(module, class_name))
    return factory.from_url(url.strip(), **settings)


def query_settings(url: str, allowed: set[str], settings: dict[str, Any]) -> dict[str, str]:
    """Merge ``settings`` with the URL's query (query wins); reject unknown names.

    Raises:
        InputError: a setting or query key not in ``allowed``.
    """
    merged: dict[str, Any] = dict(settings)
    merged.update(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise InputError(
            Msg(
                N_("link {url!r}: unknown setting {items} (allowed: {items2})"),
                url=url,
                items=", ".join(unknown),
                items2=", ".join(sorted(allowed)),
            )
        )
    return {k: str(v) for k, v in merged.items() if v is not None}


def number_setting(url: str, name: str, text: str, kind: type[int] | type[float]) -> Any:
    """Parse a numeric setting, naming it on error."""
    try:
        value = kind(text)
    except ValueError:
        raise InputError(
            Msg(N_("link {url!r}: {name}={text!r} is not a number"), url=url, name=name, text=text)
        ) from None
    if value < 0:
        raise InputError(Msg(N_("link {url!r}: {name} must not be negative"), url=url, name=name))
    return value
