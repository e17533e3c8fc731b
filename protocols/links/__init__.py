"""Links: byte paths to meter buses, opened by URL (see :mod:`protocols.links.registry`)."""

from protocols.links.base import Link
from protocols.links.memory import MemoryLink, register_handler, unregister_handler
from protocols.links.registry import SCHEMES, open_link, register_scheme, scheme_of

__all__ = [
    "SCHEMES",
    "Link",
    "MemoryLink",
    "open_link",
    "register_handler",
    "register_scheme",
    "scheme_of",
    "unregister_handler",
]
