"""A report period: whole days in the site's time zone (``--from`` / ``--to``, both included).

Supervisors think in local days (a disconnection at 07:30 Beijing time belongs to that day,
not to the UTC day before), so every per-day figure is keyed by the site-local date, and the
period's bounds are the local midnights turned into UTC for the queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from base.errors import InputError
from base.i18n import N_, Msg

MAX_DAYS = 3660  # ten years: a typo such as 2204 for 2024 is refused instead of scanned


@dataclass(frozen=True)
class Period:
    """Days ``first`` .. ``last`` (both included) in ``tz``."""

    first: date
    last: date
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise InputError(
                Msg(N_("--to {last} is before --from {first}"), last=self.last, first=self.first)
            )
        if (self.last - self.first).days >= MAX_DAYS:
            raise InputError(
                Msg(
                    N_("--from {first} --to {last}: at most {max_days} days"),
                    first=self.first,
                    last=self.last,
                    max_days=MAX_DAYS,
                )
            )

    @property
    def start(self) -> datetime:
        """The first day's local midnight, in UTC (inclusive bound)."""
        return datetime.combine(self.first, time(0), tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The local midnight after the last day, in UTC (exclusive bound)."""
        return datetime.combine(self.last + timedelta(days=1), time(0), tzinfo=self.tz).astimezone(
            UTC
        )

    def days(self) -> list[date]:
        """Every day of the period, in order."""
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def contains(self, when: datetime) -> bool:
        """Whether the instant ``when`` (aware) falls in the period."""
        return self.start <= when < self.end

    def day_of(self, when: datetime) -> date:
        """The site-local date of the instant ``when``."""
        return when.astimezone(self.tz).date()


def parse_day(text: str, option: str) -> date:
    """``YYYY-MM-DD`` (the site-local day); an :class:`InputError` names the option."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            Msg(N_("{option} {text!r}: use a date like 2024-05-31"), option=option, text=text)
        ) from exc
