"""The downlink password PW (消息认证码, 16 bytes) of Q/GDW 1376.1 control and setting frames.

Downlink AFN 01H, 04H, 05H, 06H, 0FH and 10H carry PW after the data units. A real terminal
checks it (the master computes it with its security module over the frame's user data); the
engine gets it from a pluggable :class:`PwAuthenticator`, like the meter's ESAM stand-in
(:mod:`protocols.dlt645.security`):

* ``zero`` (:class:`ZeroPw`) — 16 zero bytes. **The test default**: for the simulator and for
  terminals whose PW check is disabled. It is named in the link URL (``pw=zero``) or taken by
  default, and says so in the log once per process.
* anything else is registered by the deployment with :func:`register_pw_authenticator`
  (``pw=NAME`` in the link URL): a callable that receives the terminal address, the AFN,
  the frame sequence number and the data units (DA DT + data unit, without PW and Tp) and
  returns the 16 bytes. It never sees a meter password in clear unless the data unit carries
  one (F10/F11 do: the meter's 1CH password, as the standard lays it out).

Pure apart from the registry (a module-level dict filled at import by deployments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from base.errors import InputError

PW_LENGTH = 16


class PwAuthenticator(Protocol):
    """Produces the 16-byte PW for one downlink frame."""

    name: str

    def pw(self, terminal: str, afn: int, seq: int, units: bytes) -> bytes:
        """PW for the frame to ``terminal`` (``RRRRTTTT``) with AFN ``afn``, SEQ ``seq``."""
        ...


class ZeroPw:
    """16 zero bytes: the documented test default (simulator, PW check disabled)."""

    name = "zero"

    def pw(self, terminal: str, afn: int, seq: int, units: bytes) -> bytes:
        return bytes(PW_LENGTH)


_REGISTRY: dict[str, Callable[[], PwAuthenticator]] = {"zero": ZeroPw}


def register_pw_authenticator(name: str, factory: Callable[[], PwAuthenticator]) -> None:
    """Make ``pw=NAME`` available to concentrator links (a deployment's security module)."""
    _REGISTRY[name] = factory


def pw_authenticator(name: str = "zero") -> PwAuthenticator:
    """The authenticator registered as ``name``.

    Raises:
        InputError: no such authenticator (names the known ones).
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(sorted(_REGISTRY))
        raise InputError(f"no PW authenticator {name!r} (known: {known})")
    return factory()


def checked_pw(
    authenticator: PwAuthenticator, terminal: str, afn: int, seq: int, units: bytes
) -> bytes:
    """The authenticator's PW, checked to be 16 bytes.

    Raises:
        InputError: the authenticator returned something else.
    """
    value = bytes(authenticator.pw(terminal, afn, seq, units))
    if len(value) != PW_LENGTH:
        raise InputError(
            f"PW authenticator {authenticator.name!r} returned {len(value)} bytes, not {PW_LENGTH}"
        )
    return value
