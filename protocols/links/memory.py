"""In-process link: a handler plays the bus (httpx ``MockTransport`` style).

``handler(request_bytes)`` returns the reply bytes, or None for silence; it may be a plain
function or a coroutine function, and may raise :class:`~protocols.errors.LinkError` to act
out a broken line. Replies are delivered in ``chunk`` sized pieces to exercise the framing.

``echo=True`` plays a 2-wire RS-485 adapter that hears its own transmission: every request
comes back before the reply, as clients must cope with.

Handlers can be named for URLs: ``register_handler("bus1", handler)`` then
``open_link("memory://bus1")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.links.base import Link
from protocols.links.registry import number_setting, query_settings

Handler = Callable[[bytes], "bytes | Awaitable[bytes | None] | None"]

_HANDLERS: dict[str, Handler] = {}


def register_handler(name: str, handler: Handler) -> None:
    """Make ``memory://name`` reach ``handler``."""
    _HANDLERS[name] = handler


def unregister_handler(name: str) -> None:
    _HANDLERS.pop(name, None)


class MemoryLink(Link):
    """A link whose far end is a Python callable."""

    def __init__(
        self,
        handler: Handler,
        *,
        url: str = "memory://",
        bus_key: str | None = None,
        echo: bool = False,
        chunk: int = 0,
    ) -> None:
        super().__init__(url, bus_key or f"{url}#{id(self):x}")
        self.handler = handler
        self.echo = echo
        self.chunk = chunk
        self.sent: list[bytes] = []  # every request written, for assertions

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> MemoryLink:
        """``memory://NAME[?echo=1&chunk=N]`` with a handler from :func:`register_handler`.

        Raises:
            InputError: no handler of that name.
        """
        options = query_settings(url, {"echo", "chunk"}, settings)
        name = url.split("://", 1)[1].split("?", 1)[0]
        try:
            handler = _HANDLERS[name]
        except KeyError:
            raise InputError(
                Msg(N_("link {url!r}: no in-memory bus named {name!r}"), url=url, name=name)
            ) from None
        return cls(
            handler,
            url=url,
            bus_key=f"memory://{name}",
            echo=options.get("echo", "0").lower() in ("1", "true", "yes"),
            chunk=int(number_setting(url, "chunk", options.get("chunk", "0"), int)),
        )

    async def _connect(self) -> None:
        return None

    async def _write(self, data: bytes) -> None:
        self.sent.append(data)
        if self.echo:
            self._deliver(data)
        reply = self.handler(data)
        if inspect.isawaitable(reply):
            reply = await reply
        if reply:
            self._deliver(bytes(reply))

    def _deliver(self, data: bytes) -> None:
        if self.chunk <= 0:
            self._feed_input(data)
            return
        for i in range(0, len(data), self.chunk):
            self._feed_input(data[i : i + self.chunk])

    async def _disconnect(self) -> None:
        return None
