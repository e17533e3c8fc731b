"""Extreme-weather days in the store: checked input, audit, and how soon the dispatcher sees
them (at once after a post in its own process, within WEATHER_TTL_S from another)."""

from __future__ import annotations

import asyncio
from datetime import date
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from base.clock import FrozenClock
from base.errors import InputError
from engine.db import transaction
from engine.dispatch.dispatcher import WEATHER_TTL_S, Dispatcher
from engine.store.weather import add_weather, list_weather, weather_entries
from engine.workcalendar import policy_settings
from policies import check_window
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import make_config
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account
from tests.policies.builders import case

sqlite_engine = store_helpers.sqlite_engine  # fixture

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 6, 1)


def post(engine: Engine, **kw: object) -> dict[str, object]:
    values: dict[str, object] = {"starts": MONDAY, "ends": None, "name": "台风红色预警",
                                 "region": None, "actor": "sam"}  # fmt: skip
    values.update(kw)
    with transaction(engine) as session:
        return add_weather(session, now=MONDAY_10_SHANGHAI, tz=SHANGHAI, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"name": " "}, "name"),
        ({"ends": date(2026, 5, 31)}, "before the start"),
        ({"starts": date(2026, 5, 30), "ends": date(2026, 5, 31)}, "already past"),
        ({"ends": date(2026, 7, 15)}, "at most 31 days"),
        ({"region": "S9"}, "no account is at station 'S9'"),
    ],
)
def test_bad_periods_are_refused_and_nothing_is_stored(
    sqlite_engine: Engine, change: dict[str, object], says: str
) -> None:
    with pytest.raises(InputError, match=says):
        post(sqlite_engine, **change)
    with transaction(sqlite_engine) as session:
        assert list_weather(session) == []


def test_a_period_becomes_one_no_disconnection_day_per_day(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "A1", station="S7")
    doc = post(sqlite_engine, ends=date(2026, 6, 3), region="S7")
    assert (doc["start"], doc["end"], doc["region"]) == ("2026-06-01", "2026-06-03", "S7")
    with transaction(sqlite_engine) as session:
        days = weather_entries(session)
        assert [d.day for d in days] == [date(2026, 6, n) for n in (1, 2, 3)]
        assert {d.region for d in days} == {"S7"}
        assert list_weather(session, year=2026)[0]["source"] == "weather posted by sam"
        assert list_weather(session, year=2027) == []


def test_the_dispatcher_sees_a_post_at_once_here_and_within_the_ttl_from_elsewhere(
    sqlite_engine: Engine,
) -> None:
    config = make_config()
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    dispatcher = Dispatcher(sqlite_engine, config, clock=clock)
    monday_10 = MONDAY_10_SHANGHAI

    def open_now() -> bool:
        return check_window(case(), dispatcher.policy, monday_10).verdict.value == "allow"

    async def scenario() -> None:
        await dispatcher.refresh_weather(force=True)
        assert open_now()
        post(sqlite_engine)  # another process posts
        await dispatcher.refresh_weather()
        assert open_now()  # not yet: read again only after the TTL
        clock.advance(WEATHER_TTL_S)
        await dispatcher.refresh_weather()
        assert not open_now()
        post(sqlite_engine, starts=date(2026, 6, 2), name="暴雨")
        dispatcher.weather_changed()  # a post to this process's API
        await dispatcher.refresh_weather()
        assert dispatcher.policy.window.calendar is not None
        assert dispatcher.policy.window.calendar.no_disconnect(date(2026, 6, 2)) is not None
        await dispatcher.close()

    asyncio.run(scenario())
    assert policy_settings(config, sqlite_engine).window.calendar is not None


def test_buses_due_for_a_weather_read_together_share_one_read(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three hundred buses reaching an order at the same moment used to ask the database
    # thread for the weather days each: one read serves them all.
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    dispatcher = Dispatcher(sqlite_engine, make_config(), clock=clock)
    reads: list[int] = []
    real_db = dispatcher.db

    async def counting_db(fn: object, *args: object) -> object:
        reads.append(1)
        await asyncio.sleep(0.01)  # the read waits for the database thread
        return await real_db(fn, *args)  # type: ignore[arg-type]

    async def scenario() -> None:
        await dispatcher.refresh_weather(force=True)
        monkeypatch.setattr(dispatcher, "db", counting_db)
        clock.advance(WEATHER_TTL_S)  # due by age
        await asyncio.gather(*(dispatcher.refresh_weather() for _ in range(300)))
        assert len(reads) == 1
        await dispatcher.close()

    asyncio.run(scenario())


def test_a_post_during_a_read_is_not_missed_by_the_next_command(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read in flight began before the post: it must not count as the read after it.
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    dispatcher = Dispatcher(sqlite_engine, make_config(), clock=clock)
    real_db = dispatcher.db
    in_read = asyncio.Event()
    go_on = asyncio.Event()
    first = True

    async def slow_first_db(fn: object, *args: object) -> object:
        nonlocal first
        result = await real_db(fn, *args)  # type: ignore[arg-type]
        if first:  # hold the first read's (stale) answer until the post is made
            first = False
            in_read.set()
            await go_on.wait()
        return result

    async def scenario() -> None:
        monkeypatch.setattr(dispatcher, "db", slow_first_db)
        earlier = asyncio.ensure_future(dispatcher.refresh_weather(force=True))
        await in_read.wait()
        post(sqlite_engine)  # Monday closed, posted to this process while the read waits
        dispatcher.weather_changed()
        later = asyncio.ensure_future(dispatcher.refresh_weather())
        await asyncio.sleep(0)
        go_on.set()
        await asyncio.gather(earlier, later)
        calendar = dispatcher.policy.window.calendar
        assert calendar is not None and calendar.no_disconnect(MONDAY) is not None
        await dispatcher.close()

    asyncio.run(scenario())
