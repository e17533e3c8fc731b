"""Hypothesis strategies for policy inputs: cases, settings and instants.

Times in a generated case are offsets from the ``now`` it is built for, weighted towards the
edges the rules care about (exactly ``notice_days``, exactly ``notice_max_age_days``, one
microsecond either side, the ends of an exemption), so properties hit the boundaries rather
than only the wide middle. Values lean towards "passes the rule" often enough that the
all-allow path (DISCONNECT) is explored too.

Reusable elsewhere (the store and engine tests): ``scenarios()`` draws a consistent
``(case, settings, now)``; ``cases(now, settings)`` a case for a given instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from policies import (
    AccountFacts,
    ApprovalFacts,
    Case,
    CustomerClass,
    ExemptionFacts,
    ExemptionStatus,
    ImportantTimeline,
    MeterFacts,
    NoticeFacts,
    PolicySettings,
    WindowSettings,
)

T = TypeVar("T")

TIMEZONES = ("Asia/Shanghai", "UTC", "America/New_York", "Europe/London", "Asia/Kolkata")
_TINY = (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(seconds=1))


def instants() -> st.SearchStrategy[datetime]:
    """Timezone-aware UTC instants over a few years (weekends, DST changes included)."""
    return st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    )


@st.composite
def instants_in_window(draw: st.DrawFn, settings: PolicySettings) -> datetime:
    """A UTC instant inside the disconnection window of ``settings`` (site wall clock)."""
    window = settings.window
    day = draw(st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 1)))
    for _ in range(60):  # the strategy's settings always open within a few weeks
        if day.weekday() in window.weekdays and day not in window.holidays:
            break
        day += timedelta(days=1)
    start = window.start.hour * 60 + window.start.minute
    end = 24 * 60 if window.end is None else window.end.hour * 60 + window.end.minute
    minute = draw(st.integers(start, end - 1))
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=settings.timezone)
    return local.astimezone(UTC)


def _near(
    edges: list[timedelta], span: timedelta, low: timedelta | None = None
) -> st.SearchStrategy[timedelta]:
    """A duration: an edge plus or minus a tiny step, or anything in ``[low or -span, span]``."""
    edge = st.builds(lambda e, d: e + d, st.sampled_from(edges), st.sampled_from(_TINY))
    low = -span if low is None else low
    return st.one_of(edge, st.timedeltas(min_value=low, max_value=span))


def balances(threshold: Decimal = Decimal("0")) -> st.SearchStrategy[Decimal]:
    """Balances in yuan, often in arrears, sometimes exactly at the threshold."""
    debt = st.decimals(min_value=Decimal("0.01"), max_value=500, places=2, allow_nan=False)
    return st.one_of(
        st.just(threshold),
        st.decimals(min_value=-100_000, max_value=100_000, places=2, allow_nan=False),
        debt.map(lambda d: threshold - d),
        debt.map(lambda d: threshold - d),
    )


@st.composite
def policy_settings(draw: st.DrawFn) -> PolicySettings:
    """Settings a utility could configure (validated the way ``settings_from_config`` does)."""
    notice_days = draw(st.integers(0, 15))
    start = draw(st.times(max_value=time(22, 0)).map(lambda t: t.replace(second=0, microsecond=0)))
    end_minutes = draw(st.one_of(st.none(), st.integers(1, 24 * 60 - 1)))
    end: time | None = None
    if end_minutes is not None:
        start_minutes = start.hour * 60 + start.minute
        total = min(start_minutes + end_minutes, 24 * 60 - 1)
        end = None if total <= start_minutes else time(total // 60, total % 60)
    holidays = draw(
        st.frozensets(
            st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31)), max_size=8
        )
    )
    return PolicySettings(
        timezone=ZoneInfo(draw(st.sampled_from(TIMEZONES))),
        arrears_threshold=draw(st.decimals(-100, 100, places=2, allow_nan=False)),
        notice_days=notice_days,
        notice_max_age_days=notice_days + draw(st.integers(0, 60)),
        important_warning_minutes=draw(st.sampled_from([15, 0, 1, 30])),
        window=WindowSettings(
            weekdays=draw(st.frozensets(st.integers(0, 6), min_size=1)),
            start=start,
            end=end,
            holidays=holidays,
        ),
        batch_max_share=draw(st.sampled_from([0.05, 0.0, 0.5, 1.0])),
        batch_max_count=draw(st.sampled_from([5000, 0, 1, 10])),
        important_authorities=draw(
            st.sampled_from([(), ("power administration",), ("judiciary",)])
        ),
        important_execute_grace_minutes=draw(st.sampled_from([15, 0, 60])),
    )


def _meter_for(account: AccountFacts) -> st.SearchStrategy[MeterFacts | None]:
    """The account's own meter, or one of the ways a meter record goes wrong."""
    number = account.meter_no or "000000000001"
    address = account.meter_address or number
    good = MeterFacts(meter_no=number, address=address, account_no=account.account_no)
    return st.one_of(
        st.just(good),
        st.just(good),
        st.just(good),
        st.none(),
        st.builds(
            MeterFacts,
            meter_no=st.sampled_from([number, "000000000009"]),
            address=st.sampled_from([address, "000000000009"]),
            account_no=st.sampled_from([account.account_no, "OTHER", None]),
            observed_meter_no=st.sampled_from([None, number, "000000000009"]),
        ),
    )


ASPECTS = ("balance", "agreement", "class", "humanitarian", "meter", "notices", "exemptions")


@st.composite
def cases(
    draw: st.DrawFn,
    now: datetime,
    settings: PolicySettings | None = None,
    account_no: str | None = None,
) -> Case:
    """A case for deciding at ``now``, its times clustered around the rules' edges.

    Half the cases are drawn freely; the other half pass every account rule except at most
    one aspect (from :data:`ASPECTS`), so each rule's failure is seen on its own and the
    all-allow path is common enough to be tested.
    """
    settings = settings or PolicySettings()
    days = timedelta(days=1)
    near_pass = draw(st.booleans())
    broken = draw(st.sampled_from((*ASPECTS, None))) if near_pass else None

    def pick(aspect: str, good: st.SearchStrategy[T], anything: st.SearchStrategy[T]) -> T:
        return draw(good if near_pass and aspect != broken else anything)

    meter_no = pick(
        "meter",
        st.just("000012345678"),
        st.sampled_from(["000012345678", "000012345678", "000012345678", None]),
    )
    account = AccountFacts(
        account_no=account_no or draw(st.from_regex(r"A[0-9]{1,6}", fullmatch=True)),
        balance=pick(
            "balance",
            balances(settings.arrears_threshold).filter(lambda b: b < settings.arrears_threshold),
            balances(settings.arrears_threshold),
        ),
        agreement_signed=pick("agreement", st.just(True), st.sampled_from([True, True, False])),
        customer_class=pick(
            "class",
            st.sampled_from([CustomerClass.RESIDENTIAL, CustomerClass.COMMERCIAL]),
            st.sampled_from(CustomerClass),
        ),
        humanitarian=pick("humanitarian", st.just(False), st.sampled_from([False, False, True])),
        meter_no=meter_no,
        meter_address=pick(
            "meter",
            st.just(meter_no),
            st.sampled_from([meter_no, meter_no, meter_no, "000012345678", None]),
        ),
    )
    matured_age = st.timedeltas(
        min_value=settings.notice_days * days, max_value=settings.notice_max_age_days * days
    )
    notice_age = _near(
        [settings.notice_days * days, settings.notice_max_age_days * days, 10 * days],
        timedelta(days=settings.notice_max_age_days + 10),
        low=-2 * days,
    )

    def notice(
        age: st.SearchStrategy[timedelta], delivered: st.SearchStrategy[bool]
    ) -> st.SearchStrategy[NoticeFacts]:
        return st.builds(
            lambda age, lag, delivered: NoticeFacts(
                issued_at=now - age - lag, delivered_at=(now - age) if delivered else None
            ),
            age,
            st.timedeltas(min_value=timedelta(0), max_value=3 * days),
            delivered,
        )

    notices = pick(
        "notices",
        st.lists(notice(matured_age, st.just(True)), min_size=1, max_size=1),
        st.lists(notice(notice_age, st.sampled_from([True, True, True, False])), max_size=3),
    )
    around_now = _near([timedelta(0), days], timedelta(days=60))
    exemptions = pick(
        "exemptions",
        st.just([]),
        st.lists(
            st.builds(
                lambda i, status, until, starts: ExemptionFacts(
                    id=i,
                    status=status,
                    until=now + until,
                    starts=None if starts is None else now + starts,
                ),
                st.integers(1, 999),
                st.sampled_from(ExemptionStatus),
                around_now,
                st.one_of(st.none(), around_now),
            ),
            max_size=2,
        ),
    )
    approvals = draw(
        st.lists(
            st.builds(
                lambda at, until: ApprovalFacts(
                    approved_by="supervisor1",
                    approved_at=now + at,
                    valid_until=None if until is None else now + until,
                ),
                around_now,
                st.one_of(st.none(), around_now),
            ),
            max_size=2,
        )
    )
    step = timedelta(minutes=settings.important_warning_minutes)
    timeline = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda t, warned, instructed: ImportantTimeline(
                    notice_time=now + t,
                    warned_at=None if warned is None else now + t - step + warned,
                    instructed_at=None if instructed is None else now + t + instructed,
                    recipients=("power administration", "local government"),
                ),
                _near([-step, timedelta(0), -2 * step], timedelta(hours=3)),
                st.one_of(st.none(), _near([timedelta(0)], timedelta(minutes=20))),
                st.one_of(st.none(), _near([timedelta(0)], timedelta(minutes=20))),
            ),
        )
    )
    return Case(
        account=account,
        meter=pick("meter", _meter_for(account).filter(_bound), _meter_for(account)),
        notices=tuple(notices),
        exemptions=tuple(exemptions),
        approvals=tuple(approvals),
        timeline=timeline,
    )


def _bound(meter: MeterFacts | None) -> bool:
    return meter is not None and meter.observed_meter_no in (None, meter.meter_no)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Case, PolicySettings, datetime]:
    """A consistent ``(case, settings, now)``: settings and instant drawn first."""
    settings = draw(st.one_of(st.just(PolicySettings()), policy_settings()))
    now = draw(st.one_of(instants(), instants_in_window(settings)))
    return draw(cases(now, settings)), settings, now


@st.composite
def batches(draw: st.DrawFn, max_size: int = 8) -> tuple[list[Case], PolicySettings, datetime]:
    """Several cases (distinct account numbers) decided together at one instant."""
    settings = draw(st.one_of(st.just(PolicySettings()), policy_settings()))
    now = draw(st.one_of(instants(), instants_in_window(settings)))
    size = draw(st.integers(0, max_size))
    batch = [draw(cases(now, settings, account_no=f"A{i:05d}")) for i in range(size)]
    return batch, settings, now
