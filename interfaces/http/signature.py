"""Signed payment calls: ``X-Meterctl-Signature: sha256=HEX(HMAC-SHA256(key, ts + "." + body))``.

The billing system signs the timestamp (``X-Meterctl-Timestamp``, unix seconds) together with
the exact raw body, so neither can be changed, and a call is accepted only within
``[hooks] max_clock_skew_s`` of the engine's clock. A signature seen before (within that same
window) is a replay and refused; older ones need not be remembered, because the timestamp
check refuses them anyway. ``serve`` remembers them in the database
(:class:`interfaces.http.replays.SharedReplayGuard`), so a replay sent to another ``serve``
process behind the same address is refused too; :class:`ReplayGuard` is the in-process memory.

Nothing here logs or returns the key or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

TIMESTAMP_HEADER = "X-Meterctl-Timestamp"
SIGNATURE_HEADER = "X-Meterctl-Signature"
SCHEME = "sha256="
# Unix seconds: 10 digits until the year 2286; 12 leaves room and bounds the arithmetic.
MAX_TIMESTAMP_DIGITS = 12
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")


class SignatureRefused(Exception):
    """A call that is not accepted as signed by the billing system; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(key: bytes, timestamp: str | int, body: bytes) -> str:
    """The ``X-Meterctl-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return SCHEME + hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The HTTP headers of a signed JSON call carrying ``body`` (the caller's side)."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, timestamp, body),
    }


@dataclass
class ReplayGuard:
    """Signatures accepted within the skew window (bounded memory, oldest forgotten first)."""

    window_s: float
    max_entries: int = 100_000

    def __post_init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _forget_old(self, now: float) -> None:
        # Entries are in arrival order; the window is measured from each call's own
        # timestamp, so keep anything that could still pass the timestamp check.
        horizon = now - 2 * self.window_s
        while self._seen:
            _sig, seen_ts = next(iter(self._seen.items()))
            if seen_ts >= horizon and len(self._seen) <= self.max_entries:
                break
            self._seen.popitem(last=False)

    def seen(self, digest: str, now: float) -> bool:
        self._forget_old(now)
        return digest in self._seen

    def remember(self, digest: str, timestamp: float) -> None:
        self._seen[digest] = timestamp

    def claim(self, digest: str, timestamp: float, now: float) -> bool:
        """True the first time ``digest`` is seen within the window (and remember it)."""
        if self.seen(digest, now):
            return False
        self.remember(digest, timestamp)
        return True


class SignatureMemory(Protocol):
    """Where accepted signatures are remembered: this process (:class:`ReplayGuard`) or the
    database shared by every serve process (:class:`interfaces.http.replays.SharedReplayGuard`)."""

    def claim(self, digest: str, timestamp: float, now: float) -> bool: ...


def check_headers(timestamp: str | None, signature: str | None) -> tuple[int, str]:
    """Validate the two signature headers' *form*, before any arithmetic or HMAC: pure.

    Returns (unix seconds, the signature lower-cased). Raises :class:`SignatureRefused`
    naming the header: missing; a timestamp that is not 1..12 ASCII digits (``int()`` would
    accept full-width or Arabic-Indic digits, signs, underscores and thousands of digits); a
    signature that is not ``sha256=`` and 64 hex digits. The reason never quotes the values.
    """
    if not timestamp or not signature:
        missing = [
            name
            for name, value in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature))
            if not value
        ]
        raise SignatureRefused(f"unsigned call: missing header {' and '.join(missing)}")
    stamp = timestamp.strip(" \t")
    if not 0 < len(stamp) <= MAX_TIMESTAMP_DIGITS or not set(stamp) <= _DIGITS:
        raise SignatureRefused(
            f"header {TIMESTAMP_HEADER} must be unix seconds (an integer of 1 to "
            f"{MAX_TIMESTAMP_DIGITS} ASCII digits 0-9)"
        )
    given = signature.strip(" \t").lower()
    digest = given[len(SCHEME) :]
    if not given.startswith(SCHEME) or len(digest) != 64 or not set(digest) <= _HEX:
        raise SignatureRefused(
            f"header {SIGNATURE_HEADER} must be 'sha256=' followed by 64 hex digits"
        )
    return int(stamp), given


def verify(
    key: bytes,
    headers_timestamp: str | None,
    headers_signature: str | None,
    body: bytes,
    *,
    now: float,
    max_skew_s: float,
    guard: SignatureMemory,
) -> None:
    """Accept a signed call or raise :class:`SignatureRefused` naming the problem.

    Checks, in order: both headers well formed (:func:`check_headers`); a timestamp within
    ``max_skew_s`` of ``now``; the signature matches (constant-time compare); not a replay. Only a call that
    passes all of them is remembered as seen.
    """
    timestamp, given = check_headers(headers_timestamp, headers_signature)
    if abs(now - timestamp) > max_skew_s:
        raise SignatureRefused(
            f"header {TIMESTAMP_HEADER} is {int(now - timestamp)} s away from the engine's clock "
            f"(more than the allowed {int(max_skew_s)} s): stale or replayed call"
        )
    stamp = (headers_timestamp or "").strip(" \t")  # signed as sent (validated above)
    expected = sign(key, stamp, body)
    if not hmac.compare_digest(given.encode("ascii"), expected.encode("ascii")):
        raise SignatureRefused(f"bad signature in header {SIGNATURE_HEADER}")
    digest = hashlib.sha256(expected.encode("ascii")).hexdigest()  # never keep the signature
    if not guard.claim(digest, float(timestamp), now):
        raise SignatureRefused("replayed call: this signature was already accepted")
