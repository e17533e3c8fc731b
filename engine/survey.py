"""Read-only survey before a campaign: what would stop a disconnection, found without switching.

``meterctl survey`` reads every DL/T 645-2007 meter in scope, bus by bus (buses in parallel,
each at its physical pace, under the same bus lease as orders so it never talks over a switch):

==========  =========  ==============================================================
read        DI         used for
==========  =========  ==============================================================
address     04000401   the meter at this address says it is this address
meter no.   04000402   the account's meter (a swapped meter is never tripped)
status 3    04000503   relay already open (bit 4), alarm (bit 7), 保电 (bit 12)
balance     00900200   the meter's own money register (kept as evidence)
clock       04000101   date + 04000102 time: off by more than the 1CH validity window?
==========  =========  ==============================================================

Problems (stable codes): ``silent`` (no answer: the other reads are skipped),
``read_refused`` (D1H to a read), ``wrong_address``, ``wrong_meter_no``, ``clock_off``,
``clock_unreadable``, ``already_open``, ``guarantee_mismatch`` (保电 at the meter differs from
the approved exemptions in force), ``protocol_deviation`` (a reply off the tables; the
deviations go to ``meter_deviations`` too). Nothing is written to a meter and nothing in the
engine's own state moves (relay, alarm and 保电 states stay as the engine last verified them).

Every meter's result is committed as it comes (``survey_results``), so an interrupted survey
resumes where it stopped: the next run of the same scope picks up the unfinished survey and
reads only the meters it has no result for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Engine, and_, insert, select, update

from base.errors import ConfigError, InputError
from engine import audit
from engine.db.database import read_session, transaction
from engine.db.models import METERS, SURVEY_RESULTS, SURVEYS
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import new_worker_id
from engine.dispatch.leases import release_bus, try_acquire_bus
from engine.dispatch.outcomes import record_deviations
from engine.store.exemptions import guarantee_in_force
from protocols.errors import FrameError, LinkError, MeterRefused, UnexpectedReply

log = structlog.get_logger("engine.survey")

DI_ADDRESS = 0x04000401
DI_METER_NO = 0x04000402
DI_STATUS_3 = 0x04000503
DI_BALANCE = 0x00900200
DI_DATE = 0x04000101
DI_TIME = 0x04000102
READS_PER_METER = 6

PROBLEMS = (
    "silent",
    "read_refused",
    "wrong_address",
    "wrong_meter_no",
    "clock_off",
    "clock_unreadable",
    "already_open",
    "guarantee_mismatch",
    "protocol_deviation",
)


@dataclass(frozen=True)
class SurveyTarget:
    meter_id: int
    account_no: str | None
    address: str
    meter_no: str
    link: str
    password_ref: str | None
    security: str
    exemption_in_force: bool


@dataclass(frozen=True)
class MeterSurvey:
    """One meter's survey: ``status`` ok | problem | silent."""

    target: SurveyTarget
    status: str
    problems: tuple[str, ...]
    observed: dict[str, Any]
    deviations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SurveyRun:
    survey_id: str
    resumed: bool
    in_scope: int
    already_done: int
    surveyed: list[MeterSurvey] = field(default_factory=list)
    busy_buses: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # meters the survey cannot read (protocol)


def survey_targets(
    engine: Engine, *, links: Sequence[str] | None, now: datetime
) -> tuple[list[SurveyTarget], list[str]]:
    """The DL/T 645-2007 meters in scope (``links`` None: every meter with a link), and the
    addresses of meters in scope the survey cannot read (other protocols)."""
    m = METERS.c
    query = select(
        m.id, m.account_no, m.address, m.meter_no, m.link, m.password_ref, m.security,
        m.protocol, guarantee_in_force(now).label("exempt"),
    ).where(m.link != "")  # fmt: skip
    if links is not None:
        query = query.where(m.link.in_(list(links)))
    targets: list[SurveyTarget] = []
    skipped: list[str] = []
    with read_session(engine) as session:
        for row in session.execute(query.order_by(m.link, m.address)):
            if row.protocol != "dlt645-2007":
                skipped.append(row.address)
                continue
            targets.append(
                SurveyTarget(
                    row.id, row.account_no, row.address, row.meter_no, row.link,
                    row.password_ref, row.security, bool(row.exempt),
                )
            )  # fmt: skip
    return targets, skipped


def _scope_key(links: Sequence[str] | None) -> list[str]:
    return ["*"] if links is None else sorted(set(links))


def start_or_resume(
    engine: Engine, *, links: Sequence[str] | None, actor: str, now: datetime, new: bool = False
) -> tuple[str, bool, set[int]]:
    """The survey to run: the newest unfinished one of the same scope (unless ``new``), or a
    new one. Returns (id, resumed, meters it already has results for)."""
    scope = _scope_key(links)
    with transaction(engine) as session:
        if not new:
            for row in session.execute(
                select(SURVEYS.c.id, SURVEYS.c.scope)
                .where(SURVEYS.c.finished_at.is_(None))
                .order_by(SURVEYS.c.started_at.desc())
            ):
                if list(row.scope or []) == scope:
                    done = {
                        int(r)
                        for r in session.execute(
                            select(SURVEY_RESULTS.c.meter_id).where(
                                SURVEY_RESULTS.c.survey_id == row.id
                            )
                        ).scalars()
                    }
                    return str(row.id), True, done
        survey_id = f"s-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        session.execute(
            insert(SURVEYS).values(
                id=survey_id, scope=scope, started_at=now, finished_at=None, actor=actor
            )
        )
        audit.append(session, actor, "survey.started", "", {"survey": survey_id, "scope": scope})
        return survey_id, False, set()


async def run_survey(
    dispatcher: Dispatcher,
    *,
    links: Sequence[str] | None,
    actor: str,
    new: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[MeterSurvey], None] | None = None,
) -> SurveyRun:
    """Survey the meters in scope (see the module docstring)."""
    engine, clock = dispatcher.engine, dispatcher.clock
    now = clock.now()
    targets, skipped = await asyncio.to_thread(survey_targets, engine, links=links, now=now)
    survey_id, resumed, done = await asyncio.to_thread(
        start_or_resume, engine, links=links, actor=actor, now=now, new=new
    )
    todo = [t for t in targets if t.meter_id not in done]
    run = SurveyRun(survey_id, resumed, len(targets), len(targets) - len(todo), skipped=skipped)
    if on_start is not None:
        on_start(len(todo))
    by_bus: dict[str, list[SurveyTarget]] = defaultdict(list)
    for target in todo:
        by_bus[target.link].append(target)
    validity = timedelta(minutes=dispatcher.config.dispatch.command_validity_minutes)

    async def bus_run(bus: str, items: list[SurveyTarget]) -> None:
        holder = new_worker_id()
        lease = timedelta(seconds=dispatcher.config.dispatch.lease_s)
        if not await asyncio.to_thread(try_acquire_bus, engine, bus, holder, clock.now(), lease):
            run.busy_buses.append(bus)
            return
        try:
            for target in items:
                result = await survey_meter(dispatcher, target, validity)
                await asyncio.to_thread(_record, engine, survey_id, result, clock.now())
                run.surveyed.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            await asyncio.to_thread(release_bus, engine, bus, holder)

    await asyncio.gather(*(bus_run(bus, items) for bus, items in by_bus.items()))
    if not run.busy_buses:
        await asyncio.to_thread(_finish, engine, survey_id, clock.now(), actor)
    return run


async def survey_meter(
    dispatcher: Dispatcher, target: SurveyTarget, validity: timedelta
) -> MeterSurvey:
    """Read one meter (never switching it) and name what would stop a campaign on it."""
    observed: dict[str, Any] = {}
    problems: list[str] = []
    try:
        driver: Any = await dispatcher.open_driver(
            protocol="dlt645-2007",
            link=target.link,
            address=target.address,
            password_ref=target.password_ref,
            security=target.security,
        )
    except (LinkError, InputError, ConfigError, OSError) as exc:
        observed["error"] = f"{type(exc).__name__}: {exc}"
        return MeterSurvey(target, "silent", ("silent",), observed)
    client = driver.client
    deviations: list[dict[str, Any]] = []
    values: dict[int, Any] = {}
    for di in (DI_ADDRESS, DI_METER_NO, DI_STATUS_3, DI_BALANCE, DI_DATE, DI_TIME):
        try:
            result = await client.read(target.address, di)
        except MeterRefused as exc:
            problems.append("read_refused")
            observed.setdefault("refused", []).append(f"{di:08X}: {', '.join(exc.errors)}")
            continue
        except (LinkError, FrameError, UnexpectedReply) as exc:
            if not values:  # the first read got nothing: a silent meter, skip the rest
                observed["error"] = f"{type(exc).__name__}: {exc}"
                return MeterSurvey(target, "silent", ("silent",), observed)
            problems.append("read_refused")
            observed.setdefault("refused", []).append(f"{di:08X}: {exc}")
            continue
        values[di] = result.value
        for item in result.deviations:
            deviations.append({"di": f"{di:08X}", "kind": item.kind, "detail": item.detail})
    _judge(target, values, observed, problems, dispatcher.meter_now(), validity)
    if deviations:
        problems.append("protocol_deviation")
        observed["deviations"] = [f"{d['di']} {d['kind']}" for d in deviations]
    unique = tuple(dict.fromkeys(problems))
    return MeterSurvey(target, "problem" if unique else "ok", unique, observed, deviations)


def _judge(
    target: SurveyTarget,
    values: dict[int, Any],
    observed: dict[str, Any],
    problems: list[str],
    meter_now: datetime,
    validity: timedelta,
) -> None:
    address = values.get(DI_ADDRESS)
    if address is not None:
        observed["address"] = str(address)
        if str(address) != target.address:
            problems.append("wrong_address")
    number = values.get(DI_METER_NO)
    if number is not None:
        observed["meter_no"] = str(number)
        if str(number) != target.meter_no:
            problems.append("wrong_meter_no")
    word = values.get(DI_STATUS_3)
    if isinstance(word, dict):
        relay_open = bool(word["relay_open"])
        armed = relay_open and not word["relay_command_open"]
        observed["relay"] = ("armed" if armed else "open") if relay_open else "closed"
        observed["alarm"] = bool(word["pre_trip_alarm"])
        observed["guarantee"] = bool(word["power_guarantee"])
        if relay_open:
            problems.append("already_open")
        if observed["guarantee"] != target.exemption_in_force:
            problems.append("guarantee_mismatch")
    balance = values.get(DI_BALANCE)
    if isinstance(balance, Decimal):
        observed["balance"] = str(balance)
    clock = _meter_clock(values.get(DI_DATE), values.get(DI_TIME))
    if clock is None:
        problems.append("clock_unreadable")
    else:
        offset = (clock - meter_now).total_seconds()
        observed["clock"] = clock.isoformat()
        observed["clock_offset_s"] = round(offset)
        if abs(offset) > validity.total_seconds():
            problems.append("clock_off")


def _meter_clock(day: Any, moment: Any) -> datetime | None:
    if not isinstance(day, dict) or not isinstance(moment, str):
        return None
    try:
        return datetime.combine(date.fromisoformat(day["date"]), time.fromisoformat(moment))
    except (KeyError, ValueError):
        return None


def _record(engine: Engine, survey_id: str, result: MeterSurvey, now: datetime) -> None:
    target = result.target
    with transaction(engine) as session:
        session.execute(
            insert(SURVEY_RESULTS).values(
                survey_id=survey_id,
                meter_id=target.meter_id,
                meter_address=target.address,
                link=target.link,
                status=result.status,
                problems=list(result.problems),
                observed=result.observed,
                surveyed_at=now,
            )
        )
        record_deviations(
            session,
            result.deviations,
            meter_id=target.meter_id,
            meter_address=target.address,
            order_id=None,
            source="survey",
            now=now,
        )


def _finish(engine: Engine, survey_id: str, now: datetime, actor: str) -> None:
    with transaction(engine) as session:
        session.execute(
            update(SURVEYS)
            .where(and_(SURVEYS.c.id == survey_id, SURVEYS.c.finished_at.is_(None)))
            .values(finished_at=now)
        )
        audit.append(session, actor, "survey.finished", "", {"survey": survey_id})


def survey_report(engine: Engine, survey_id: str | None = None) -> dict[str, Any] | None:
    """The survey's findings (the newest survey by default): counts and the problem meters."""
    with read_session(engine) as session:
        query = select(SURVEYS).order_by(SURVEYS.c.started_at.desc()).limit(1)
        if survey_id is not None:
            query = select(SURVEYS).where(SURVEYS.c.id == survey_id)
        head = session.execute(query).mappings().first()
        if head is None:
            return None
        rows = (
            session.execute(
                select(SURVEY_RESULTS, METERS.c.account_no, METERS.c.meter_no)
                .join(METERS, METERS.c.id == SURVEY_RESULTS.c.meter_id)
                .where(SURVEY_RESULTS.c.survey_id == head["id"])
                .order_by(SURVEY_RESULTS.c.link, SURVEY_RESULTS.c.meter_address)
            )
            .mappings()
            .all()
        )
    statuses = Counter(r["status"] for r in rows)
    problems = Counter(p for r in rows for p in (r["problems"] or []))
    return {
        "survey": head["id"],
        "scope": head["scope"],
        "started_at": head["started_at"],
        "finished_at": head["finished_at"],
        "surveyed": len(rows),
        "ok": statuses.get("ok", 0),
        "problem": statuses.get("problem", 0),
        "silent": statuses.get("silent", 0),
        "by_problem": {code: problems[code] for code in PROBLEMS if problems[code]},
        "meters": [
            {
                "meter_address": r["meter_address"],
                "meter_no": r["meter_no"],
                "account_no": r["account_no"],
                "bus": r["link"],
                "status": r["status"],
                "problems": list(r["problems"] or []),
                "observed": r["observed"],
                "surveyed_at": r["surveyed_at"],
            }
            for r in rows
            if r["status"] != "ok"
        ],
    }
