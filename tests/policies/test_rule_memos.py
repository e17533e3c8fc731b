"""The rules' memos answer exactly what the rules compute afresh.

The window rule keeps its answer for the rest of the site's wall-clock minute, and the
notice rule keeps its served and stale answers per settings object by the age they show:
the dispatcher re-checks every order twice with a fresh ``now``, and computing the
sentences again each time was most of the chain's CPU (issue 20). These properties pin
the fast answers to the straightforward ones: the same verdict, code, ``not_before``, the
same English sentence as stored and the same Chinese one as shown.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, note
from hypothesis import strategies as st

from base.i18n import shown, using
from policies import PolicySettings, Reason, check_notice, check_window
from policies import notice as notice_rule
from policies import window as window_rule
from policies._text import age_key, age_text
from policies.calendar import CalendarDay, DayKind, WorkCalendar
from policies.facts import NoticeFacts
from policies.window import region_of, same_answer_span, window_reason
from tests.policies.builders import SETTINGS, account, case, shanghai
from tests.policies.strategies import instants, policy_settings

STATIONS = (None, "north", "south")


def same_answer(got: Reason, expected: Reason) -> None:
    """``got`` is ``expected`` as the engine stores it and as a person reads it."""
    assert got == expected  # rule, verdict, code, the English sentence, not_before
    assert got.text == expected.text
    with using("zh-CN"):
        assert shown(got.text or got.message) == shown(expected.text or expected.message)
    assert shown(got.text or got.message) == shown(expected.text or expected.message)


# -- the window: one answer per wall-clock minute --------------------------------------------


@st.composite
def calendars(draw: st.DrawFn, around: datetime) -> WorkCalendar | None:
    """None, or a calendar with holidays, make-up days and (regional) local days near
    ``around``, covering its year or not."""
    if draw(st.booleans()):
        return None
    day = around.date()
    near = st.integers(-4, 4).map(lambda n: day + timedelta(days=n))
    entries = [
        *(CalendarDay(d, DayKind.HOLIDAY, "holiday", "t") for d in draw(st.sets(near))),
        *(CalendarDay(d, DayKind.WORKDAY, "make-up", "t") for d in draw(st.sets(near))),
        *(
            CalendarDay(d, DayKind.NO_DISCONNECT, "typhoon", "t", region)
            for d, region in draw(st.sets(st.tuples(near, st.sampled_from(STATIONS)), max_size=3))
        ),
    ]
    years = draw(st.sampled_from([(day.year - 1, day.year, day.year + 1), (), (day.year,)]))
    return WorkCalendar.of(entries, years, strict=draw(st.booleans()))


# Instants next to a DST change of the sampled zones (the offset changes inside a minute
# only in zones that change at odd seconds; these at least cross a change).
DST_CHANGES = (
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # America/New_York springs forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # America/New_York falls back
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Europe/London
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
)


@st.composite
def window_scenarios(draw: st.DrawFn) -> tuple[PolicySettings, datetime, datetime, str | None]:
    """Settings (some with seconds in their times, some with a calendar), a first instant,
    a second one near it (often in the same minute), and the second account's station."""
    settings = draw(policy_settings())
    first = draw(
        st.one_of(
            instants(),
            st.builds(
                lambda at, d: at + d,
                st.sampled_from(DST_CHANGES),
                st.timedeltas(timedelta(minutes=-2), timedelta(minutes=2)),
            ),
        )
    )
    window = settings.window
    changes: dict[str, Any] = {"calendar": draw(calendars(first))}
    changes["holiday_eve_after"] = draw(st.sampled_from([time(12, 0), None, time(9, 30)]))
    if draw(st.integers(0, 4)) == 0:  # a time with seconds: the memo keeps `now` alone
        changes["start"] = window.start.replace(second=draw(st.integers(0, 59)))
        changes["holiday_eve_after"] = time(12, 0, draw(st.integers(1, 59)))
    settings = dataclasses.replace(settings, window=dataclasses.replace(window, **changes))
    window = settings.window
    edges = [t for t in (window.start, window.end, window.holiday_eve_after) if t is not None]
    if draw(st.booleans()):  # the minute of one of the window's times, on first's site day
        edge = draw(st.sampled_from(edges)).replace(second=0, microsecond=0)
        day = first.astimezone(settings.timezone).date()
        first = datetime.combine(day, edge, tzinfo=settings.timezone).astimezone(UTC)
    second = first + draw(
        st.one_of(
            st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)]),
            st.timedeltas(timedelta(seconds=-90), timedelta(seconds=90)),
            st.timedeltas(timedelta(0), timedelta(seconds=60)),
        )
    )
    if draw(st.booleans()):  # now in another zone than UTC: the same instant
        second = second.astimezone(ZoneInfo("Asia/Shanghai"))
    return settings, first, second, draw(st.sampled_from(STATIONS))


@given(window_scenarios(), st.sampled_from(STATIONS))
def test_the_window_memo_answers_what_the_rule_computes(
    scenario: tuple[PolicySettings, datetime, datetime, str | None], first_station: str | None
) -> None:
    settings, first, second, station = scenario
    note(f"{first=} {second=} {settings.window=}")
    earlier = case(account=account(station=first_station))
    later = case(account=account(station=station))
    check_window(earlier, settings, first)  # fills the memo
    got = check_window(later, settings, second)
    same_answer(got, window_reason(settings, second, region_of(later, settings)))


@given(window_scenarios())
def test_the_span_shares_one_answer(
    scenario: tuple[PolicySettings, datetime, datetime, str | None],
) -> None:
    """Every instant of the span has the answer of the instant it was computed for."""
    settings, now, _, station = scenario
    region = station if settings.window.calendar is not None else None
    low, high = same_answer_span(settings, now)
    assert low <= now < high and high - low <= timedelta(minutes=1)
    expected = window_reason(settings, now, region)
    for instant in (low, high - timedelta(microseconds=1), low + (high - low) / 2):
        same_answer(window_reason(settings, instant, region), expected)


def test_one_answer_per_minute() -> None:
    now = shanghai(2026, 3, 4, 10, 0)
    first = check_window(case(), SETTINGS, now)
    assert check_window(case(), SETTINGS, now + timedelta(seconds=59.999999)) is first
    following = check_window(case(), SETTINGS, now + timedelta(minutes=1))
    assert "10:01" in following.message and "10:00" in first.message


def test_a_window_time_with_seconds_keeps_the_instant_alone() -> None:
    settings = dataclasses.replace(
        SETTINGS, window=dataclasses.replace(SETTINGS.window, end=time(16, 0, 30))
    )
    closes = shanghai(2026, 3, 4, 16, 0)
    assert same_answer_span(settings, closes) == (closes, closes + timedelta(microseconds=1))
    assert check_window(case(), settings, closes).code == "inside_window"
    assert check_window(case(), settings, closes + timedelta(seconds=30)).code == "outside_window"


def test_the_memo_holds_a_region_each() -> None:
    typhoon = WorkCalendar.of(
        [CalendarDay(date(2026, 3, 4), DayKind.NO_DISCONNECT, "typhoon", "t", "north")],
        (),
        strict=False,
    )
    settings = dataclasses.replace(
        SETTINGS, window=dataclasses.replace(SETTINGS.window, calendar=typhoon)
    )
    now = shanghai(2026, 3, 4, 10, 0)
    for _ in range(2):
        assert check_window(case(account=account(station="north")), settings, now).code == (
            "outside_window"
        )
        assert check_window(case(account=account(station="south")), settings, now).code == (
            "inside_window"
        )


def test_a_naive_instant_is_not_kept() -> None:
    aware = shanghai(2026, 3, 4, 10, 0)
    check_window(case(), SETTINGS, aware)
    naive = aware.replace(tzinfo=None)
    same_answer(check_window(case(), SETTINGS, naive), window_reason(SETTINGS, naive, None))
    assert window_rule._answers is not None and window_rule._answers.low.tzinfo is not None


# -- the notice: one served (or stale) answer per age shown -----------------------------------


@given(
    st.timedeltas(timedelta(days=-2), timedelta(days=400)),
    st.timedeltas(timedelta(days=-2), timedelta(days=400)),
)
def test_equal_age_keys_show_equal_ages(a: timedelta, b: timedelta) -> None:
    if age_key(a) == age_key(b):
        same_text = (str(age_text(a)), age_text(a).parts) == (str(age_text(b)), age_text(b).parts)
        assert same_text


@st.composite
def notice_scenarios(
    draw: st.DrawFn,
) -> tuple[list[PolicySettings], list[tuple[int, datetime, tuple[NoticeFacts, ...]]]]:
    """A few settings and a sequence of (which settings, now, notices) asked in a row."""
    settings = draw(st.lists(policy_settings(), min_size=1, max_size=3))
    base = draw(instants())
    asks = []
    for _ in range(draw(st.integers(1, 6))):
        now = base + draw(st.timedeltas(timedelta(0), timedelta(days=3)))
        ages = st.one_of(
            st.timedeltas(timedelta(0), timedelta(days=80)),
            st.integers(0, 80).map(lambda d: timedelta(days=d)),
            st.integers(0, 30).map(lambda h: timedelta(hours=h)),
        )
        notices = tuple(
            NoticeFacts(now - age - timedelta(hours=1), now - age)
            for age in draw(st.lists(ages, min_size=1, max_size=2))
        )
        asks.append((draw(st.integers(0, len(settings) - 1)), now, notices))
    return settings, asks


@given(notice_scenarios())
def test_the_notice_memo_answers_what_the_rule_computes(
    scenario: tuple[list[PolicySettings], list[tuple[int, datetime, tuple[NoticeFacts, ...]]]],
) -> None:
    settings, asks = scenario
    for which, now, notices in asks:
        facts = case(notices=notices)
        got = check_notice(facts, settings[which], now)
        notice_rule._last = None  # afresh: no answer kept from before
        same_answer(got, check_notice(facts, settings[which], now))


def test_a_notice_served_hours_ago_says_its_own_hours() -> None:
    """With a 0-day notice period, notices a few hours old are served: each shows its age."""
    settings = dataclasses.replace(SETTINGS, notice_days=0)
    now = shanghai(2026, 3, 4, 10, 0)
    two = check_notice(case(notices=(NoticeFacts(now, now - timedelta(hours=2)),)), settings, now)
    five = check_notice(case(notices=(NoticeFacts(now, now - timedelta(hours=5)),)), settings, now)
    assert (two.code, five.code) == ("notice_served", "notice_served")
    assert "2 hours" in two.message and "5 hours" in five.message
