"""Fault injection: what can go wrong between the engine and a meter, by rate or scripted.

A :class:`FaultPlan` belongs to one meter or one bus. It holds

* ``rates``: kind -> probability per opportunity (``bad_checksum=0.1``), drawn from the
  bus's seeded random generator, so a run is reproducible with the same ``--seed``;
* ``scripted``: kind -> count, "the next N opportunities get this fault" (tests use this:
  deterministic without any randomness);
* ``values``: the parameter of the state faults (``clock_skew=-900``,
  ``password_changed=123456``, ``wrong_meter_no=999999999999``).

An *opportunity* depends on the kind: every request the meter hears (``no_reply``), every
reply it sends (the line faults), every relay movement (``relay_stuck``), every read of
the meter number (``wrong_meter_no``). A meter's own plan is consulted before its bus's.

=================  =========  ===============================================================
kind               value      effect
=================  =========  ===============================================================
no_reply           rate       the meter does not hear the request: nothing done, no reply
lost_reply         rate       the meter acts but its reply is lost on the line
bad_checksum       rate       the reply's checksum byte is corrupted
truncated          rate       the reply stops part-way (the rest never comes)
garbage            rate       random noise bytes on the line before the reply
late_reply         rate       the reply comes after the client's deadline (``late_reply_s``)
drop_connection    rate       the TCP gateway sends part of the reply, then closes the socket
relay_stuck        rate       1CH is acknowledged (9CH, command bit 6 follows) but the relay
                              does not move (status bit 4 unchanged)
wrong_meter_no     rate or    04000402 returns another meter's number (a swapped meter); a
                   number     12-digit value is the number returned
clock_skew         seconds    the meter's clock is off by this much (until a 08H time sync)
password_changed   password   the meter's password was changed on site: commands get DCH 04H
                   (optional)
=================  =========  ===============================================================

Deviation faults: the reply stays well framed (checksum right) but its data departs from the
DL/T 645-2007 tables the way deployed meters do (one kind per class of
:mod:`protocols.dlt645.tolerant`; the opportunity is every 91H read reply, or as noted):

=================  =========  ===============================================================
extra_bytes        rate       a read reply carries one extra trailing 00H after the value
missing_bytes      rate       a read reply lacks the value's last (most significant) byte
ff_fill            rate       a read reply's value is all FFH (the meter has no value)
zero_date          rate       a date/time read (04000101, 04000102) answers all 00H
vendor_di          rate       a read of a DI outside the tables answers 91H with 4 vendor
                              bytes instead of D1H (opportunity: each such read)
vendor_reply       rate       an accepted 1CH answers 9CH with a 2-byte execution status 0000
                              instead of L=0 (opportunity: each accepted 1CH)
=================  =========  ===============================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from base.errors import InputError

RATE_KINDS = frozenset(
    {
        "no_reply",
        "lost_reply",
        "bad_checksum",
        "truncated",
        "garbage",
        "late_reply",
        "drop_connection",
        "relay_stuck",
        "wrong_meter_no",
        "extra_bytes",
        "missing_bytes",
        "ff_fill",
        "zero_date",
        "vendor_di",
        "vendor_reply",
    }
)
# The deviation faults (well-framed replies whose data departs from the tables).
DEVIATION_KINDS = (
    "extra_bytes",
    "missing_bytes",
    "ff_fill",
    "zero_date",
    "vendor_di",
    "vendor_reply",
)
STATE_KINDS = frozenset({"clock_skew", "password_changed"})
FAULT_KINDS = RATE_KINDS | STATE_KINDS
# Faults that alter a reply already produced by the meter, in the order they are applied.
LINE_KINDS = ("lost_reply", "bad_checksum", "truncated", "garbage", "late_reply", "drop_connection")


@dataclass
class FaultPlan:
    """The faults configured on one meter or one bus (mutate under the owner's lock)."""

    rates: dict[str, float] = field(default_factory=dict)
    scripted: dict[str, int] = field(default_factory=dict)
    values: dict[str, str | float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rates or any(self.scripted.values()) or self.values)

    def copy(self) -> FaultPlan:
        return FaultPlan(dict(self.rates), dict(self.scripted), dict(self.values))

    def set(
        self,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        value: str | float | None = None,
    ) -> None:
        """Add a fault: ``rate`` (probability), ``count`` (next N), or a state ``value``.

        With none of them a rate fault fires every time (rate 1.0).

        Raises:
            InputError: an unknown kind or an out-of-range rate/count.
        """
        check_kind(kind)
        if kind in STATE_KINDS:
            if kind == "clock_skew" and value is None:
                raise InputError("fault clock_skew needs a value in seconds (clock_skew=-900)")
            self.values[kind] = "" if value is None else value
            return
        if value is not None:  # wrong_meter_no=NUMBER
            self.values[kind] = value
        if count is not None:
            if count < 0:
                raise InputError(f"fault {kind}: count must not be negative")
            self.scripted[kind] = self.scripted.get(kind, 0) + count
        if rate is not None or (count is None and value is None):
            chosen = 1.0 if rate is None else rate
            if not 0.0 <= chosen <= 1.0:
                raise InputError(f"fault {kind}: rate {chosen} must be between 0 and 1")
            self.rates[kind] = chosen
        elif value is not None and count is None:
            self.rates.setdefault(kind, 1.0)

    def clear(self, kind: str | None = None) -> None:
        """Remove one kind, or every fault."""
        if kind is None:
            self.rates.clear()
            self.scripted.clear()
            self.values.clear()
            return
        self.rates.pop(kind, None)
        self.scripted.pop(kind, None)
        self.values.pop(kind, None)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary (rates, pending scripted counts, values)."""
        out: dict[str, object] = {}
        for kind, rate in self.rates.items():
            out[kind] = rate
        for kind, count in self.scripted.items():
            if count:
                out[f"{kind}#next"] = count
        for kind, value in self.values.items():
            out[kind] = value
        return out


def check_kind(kind: str) -> None:
    """Raise :class:`InputError` naming the known kinds when ``kind`` is not one."""
    if kind not in FAULT_KINDS:
        raise InputError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})")


def fires(kind: str, plans: Iterable[FaultPlan | None], rng: random.Random) -> bool:
    """Whether ``kind`` strikes at this opportunity (scripted counts first, then rates).

    A scripted count is consumed when it fires. The generator is drawn only for kinds that
    have a rate, so adding a fault to one meter does not change the dice of the others.
    """
    active = [plan for plan in plans if plan is not None]
    for plan in active:
        remaining = plan.scripted.get(kind, 0)
        if remaining > 0:
            plan.scripted[kind] = remaining - 1
            return True
    for plan in active:
        rate = plan.rates.get(kind)
        if rate and rng.random() < rate:
            return True
    return False


def parse_faults(text: str) -> FaultPlan:
    """Parse a fleet CSV ``faults`` cell: ``;``-separated ``kind`` or ``kind=value`` items.

    Raises:
        InputError: an unknown kind or a bad value; the message names the item.
    """
    plan = FaultPlan()
    for raw_item in text.split(";"):
        item = raw_item.strip()
        if not item:
            continue
        kind, sep, raw_value = item.partition("=")
        kind = kind.strip()
        raw_value = raw_value.strip()
        check_kind(kind)
        if not sep:
            if kind == "clock_skew":
                raise InputError("fault clock_skew needs a value in seconds (clock_skew=-900)")
            plan.set(kind)
            continue
        if kind == "clock_skew":
            plan.set(kind, value=_number(item, raw_value))
        elif kind == "password_changed":
            if len(raw_value) != 6 or not raw_value.isdigit():
                raise InputError("fault password_changed: the new password must be 6 digits")
            plan.set(kind, value=raw_value)
        elif kind == "wrong_meter_no" and len(raw_value) == 12 and raw_value.isdigit():
            plan.set(kind, value=raw_value)
        else:
            rate = _number(item, raw_value)
            if not 0.0 <= rate <= 1.0:
                raise InputError(f"fault {item!r}: a rate must be between 0 and 1")
            plan.set(kind, rate=rate)
    return plan


def _number(item: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError as exc:
        raise InputError(f"fault {item!r}: {raw!r} is not a number") from exc


def format_faults(plan: FaultPlan) -> str:
    """The inverse of :func:`parse_faults` for rates and values (scripted counts are runtime)."""
    items: list[str] = []
    for kind, rate in sorted(plan.rates.items()):
        if kind in plan.values:
            continue
        items.append(kind if rate == 1.0 else f"{kind}={rate:g}")
    for kind, value in sorted(plan.values.items()):
        if value == "":
            items.append(kind)
        elif isinstance(value, float):
            items.append(f"{kind}={value:g}")
        else:
            items.append(f"{kind}={value}")
    return ";".join(items)


def swapped_meter_no(meter_no: str) -> str:
    """A plausible other meter's number for ``wrong_meter_no`` (deterministic)."""
    digits = meter_no.rjust(12, "0")
    return f"{(int(digits) + 7919) % 10**12:012d}" if digits.isdigit() else "000000007919"


def changed_password(password: str) -> str:
    """The password a meter has after ``password_changed`` without a value: every digit +1."""
    return "".join(str((int(ch) + 1) % 10) for ch in password) if password.isdigit() else "111111"


@dataclass
class Transmission:
    """What goes back on the line for one request, after the line faults."""

    data: bytes
    reply_delay_s: float = 0.0
    extra_delay_s: float = 0.0  # late_reply: real seconds, not scaled
    drop_after: int | None = None  # drop_connection: close after this many bytes


def apply_line_faults(
    data: bytes,
    *,
    check: Callable[[str], bool],
    note: Callable[..., None],
    rng: random.Random,
    late_reply_s: float,
    checksum_index: int,
    reply_delay_s: float = 0.0,
) -> Transmission | None:
    """Apply the line faults (``LINE_KINDS``, in order) to a reply; None = the reply is lost.

    ``check(kind)`` says whether a fault fires now, ``note(kind, **detail)`` records it;
    ``checksum_index`` is the byte a ``bad_checksum`` corrupts (DL/T 645: CS, before 16H;
    Modbus RTU: the CRC's high byte).
    """
    if check("lost_reply"):
        note("lost_reply")
        return None
    tx = Transmission(data, reply_delay_s)
    if check("bad_checksum"):
        body = bytearray(tx.data)
        body[checksum_index] = (body[checksum_index] + 1 + rng.randrange(255)) & 0xFF
        tx.data = bytes(body)
        note("bad_checksum")
    if check("truncated"):
        keep = max(1, len(tx.data) * 2 // 3)
        tx.data = tx.data[:keep]
        note("truncated", kept=keep)
    if check("garbage"):
        noise = rng.randbytes(rng.randint(3, 12))
        tx.data = noise + tx.data
        note("garbage", bytes=len(noise))
    if check("late_reply"):
        tx.extra_delay_s = late_reply_s
        note("late_reply", extra_s=late_reply_s)
    if check("drop_connection"):
        tx.drop_after = max(1, len(tx.data) // 2)
        note("drop_connection", sent=tx.drop_after)
    return tx
