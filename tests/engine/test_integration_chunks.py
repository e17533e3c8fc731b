"""Orders of a large message are planned and created a chunk at a time: the first chunk's
orders exist before the rest is planned, the batch limit is still the whole message's (the
same devices refused as by one plan of the whole message), and a crash between chunks
resumes without a duplicate or a loss."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from engine.batch_run import accounts_with_open_relay
from engine.config import Config, parse_config
from engine.db import transaction
from engine.db.integration import API_CALLBACKS, API_DEVICES
from engine.db.models import ACCOUNTS, SWITCH_ORDERS, Notice
from engine.integration import controls
from engine.integration.clients import ApiClient
from engine.integration.controls import accept_message, materialize_pending
from engine.integration.messages import parse_request
from engine.notify import OutboxNotifier
from engine.store.cases import load_cases
from engine.workcalendar import policy_settings
from policies import check_batch_limit, plan_batch
from policies.facts import Outcome, Verdict
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import BASE_CONFIG
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine  # fixtures
db_engine = store_helpers.db_engine

CLIENT = ApiClient("cis", "operator", b"k" * 16)
ACCOUNTS_ = [f"C{i:02d}" for i in range(12)]
PAID_UP = {"C03", "C07"}  # refused by a rule (no arrears), whatever the limit
NOW = MONDAY_10_SHANGHAI


def config(max_count: int = 100000) -> Config:
    return parse_config(
        '[database]\nurl = "sqlite:///unused.db"\n'
        + BASE_CONFIG.replace("max_count = 100000", f"max_count = {max_count}")
    )


def seed(engine: Engine) -> None:
    for n in ACCOUNTS_:
        add_account(engine, n, balance="50.00" if n in PAID_UP else "-30.00")
        with transaction(engine) as session:
            session.add(
                Notice(
                    account_no=n,
                    issued_at=NOW - timedelta(days=9),
                    delivered_at=NOW - timedelta(days=8),
                )
            )


def post(engine: Engine, message_id: str = "m-big") -> None:
    """Every meter named twice (two controls), as a billing system may."""
    doc = {
        "Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": message_id,
                   "ReplyAddress": "http://127.0.0.1:9/events"},
        "Payload": {"EndDeviceControls": [
            {"mRID": f"c{k}", "EndDeviceControlType": {"ref": "3.31.0.23"},
             "EndDevices": [{"mRID": f"M{n}"} for n in ACCOUNTS_]}
            for k in (1, 2)
        ]},
    }  # fmt: skip
    message = parse_request(json.dumps(doc).encode(), max_devices=1000)
    accepted = accept_message(engine, message, client=CLIENT, now=NOW)
    assert accepted.status == 200 and accepted.accepted_devices == 2 * len(ACCOUNTS_)


def one_plan(engine: Engine, cfg: Config) -> dict[str, str]:
    """What one plan of the whole message decides per account: 'ordered', or the rule codes
    that refuse it (as the materialization did before it went by chunks)."""
    settings = policy_settings(cfg)
    plan = plan_batch(load_cases(engine, accounts=ACCOUNTS_, now=NOW), settings, NOW)
    eligible = [d for d in plan.decisions if d.outcome in (Outcome.DISCONNECT, Outcome.SCHEDULE)]
    open_now = accounts_with_open_relay(engine, [d.account_no for d in eligible])
    with engine.connect() as conn:
        in_scope = conn.execute(select(func.count()).select_from(ACCOUNTS)).scalar_one()
    limit = check_batch_limit(
        sum(1 for d in eligible if d.account_no not in open_now), in_scope, settings
    )
    answer = {}
    for d in plan.decisions:
        if d.outcome not in (Outcome.DISCONNECT, Outcome.SCHEDULE):
            answer[d.account_no] = ",".join(
                sorted(r.code for r in d.reasons if r.verdict is not Verdict.ALLOW)
            )
        elif limit.verdict is not Verdict.ALLOW:
            answer[d.account_no] = limit.code + ": " + limit.message
        else:
            answer[d.account_no] = "ordered"
    return answer


def outcomes(engine: Engine, cfg: Config) -> dict[str, str]:
    """Per account what the chunked materialization did, in one_plan's terms."""
    settings = policy_settings(cfg)
    plan = plan_batch(load_cases(engine, accounts=ACCOUNTS_, now=NOW), settings, NOW)
    codes = {
        d.account_no: ",".join(sorted(r.code for r in d.reasons if r.verdict is not Verdict.ALLOW))
        for d in plan.decisions
    }
    with engine.connect() as conn:
        rows = conn.execute(select(API_DEVICES)).mappings().all()
    answer: dict[str, set[str]] = {}
    for r in rows:
        if r["order_id"] is not None:
            got = "ordered"
        else:
            assert r["status"] == "ERROR", r
            if "batch_limit/" in r["reason"]:
                got = r["reason"].split("batch_limit/", 1)[1]
            else:
                got = codes[r["account_no"]]
                assert all(c in r["reason"] for c in got.split(",")), r["reason"]
        answer.setdefault(r["account_no"], set()).add(got)
    assert all(len(v) == 1 for v in answer.values()), answer  # both devices of an account alike
    return {a: v.pop() for a, v in answer.items()}


def orders_per_account(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(select(SWITCH_ORDERS.c.account_no)).scalars())


def device_events(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        bodies = conn.execute(select(API_CALLBACKS.c.body)).scalars().all()
    return [
        e["mRID"]
        for b in bodies
        for e in json.loads(b)["Payload"]["EndDeviceEvents"]
        if "EndDevice" in e
    ]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controls, "ORDER_CHUNK", 2)


def test_the_first_orders_exist_before_the_rest_of_the_message_is_planned(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(sqlite_engine)
    post(sqlite_engine)
    planned: list[str] = []
    real_load_cases = controls.load_cases

    def counting_load_cases(engine: Engine, **kw: Any) -> Any:
        planned.extend(kw["accounts"])
        return real_load_cases(engine, **kw)

    monkeypatch.setattr(controls, "load_cases", counting_load_cases)
    at_first_wake: list[tuple[int, int]] = []

    def woken(_buses: set[str]) -> None:
        if not at_first_wake:
            at_first_wake.append((len(planned), sum(orders_per_account(sqlite_engine).values())))

    materialize_pending(sqlite_engine, config(), now=NOW, notifier=OutboxNotifier(), on_buses=woken)
    # Woken after the first chunk of two accounts: planned, created and committed.
    assert at_first_wake == [(2, 2)]
    assert len(planned) == len(ACCOUNTS_)  # every account planned once
    assert orders_per_account(sqlite_engine) == Counter(
        {a: 1 for a in ACCOUNTS_ if a not in PAID_UP}
    )


@pytest.mark.parametrize(
    ("max_count", "ordered"),
    [
        (100000, 10),  # known within the limit before any plan: the first chunk goes at once
        (10, 10),  # 12 named, 10 eligible: known within once the rules refused two
        (9, 0),  # 10 eligible, over 9: every disconnection refused, the same as one plan
    ],
)
def test_the_batch_limit_is_counted_over_the_whole_message_as_one_plan_does(
    db_engine: Engine, max_count: int, ordered: int
) -> None:
    seed(db_engine)
    cfg = config(max_count)
    expected = one_plan(db_engine, cfg)
    post(db_engine)
    materialize_pending(db_engine, cfg, now=NOW, notifier=OutboxNotifier())
    assert outcomes(db_engine, cfg) == expected
    assert sum(orders_per_account(db_engine).values()) == ordered
    assert Counter(expected.values())["ordered"] == ordered
    if ordered == 0:
        limit_refused = [a for a, v in expected.items() if v != "ordered" and "batch" in v]
        assert sorted(limit_refused) == sorted(set(ACCOUNTS_) - PAID_UP)
        assert all("10 accounts" in expected[a] for a in limit_refused)


@pytest.mark.parametrize("max_count", [100000, 10])
def test_a_crash_between_chunks_resumes_without_a_duplicate_or_a_loss(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch, max_count: int
) -> None:
    seed(sqlite_engine)
    cfg = config(max_count)
    expected = one_plan(sqlite_engine, cfg)
    post(sqlite_engine)
    real_chunk = controls._materialize_chunk
    calls = []

    def dies_on_the_third(*args: Any, **kw: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")  # as a SIGKILL: this chunk's transaction never commits
        real_chunk(*args, **kw)

    monkeypatch.setattr(controls, "_materialize_chunk", dies_on_the_third)
    with pytest.raises(RuntimeError, match="killed"):
        materialize_pending(sqlite_engine, cfg, now=NOW, notifier=OutboxNotifier())
    with sqlite_engine.connect() as conn:
        stages = Counter(conn.execute(select(API_DEVICES.c.stage)).scalars())
    assert stages["accepted"] > 0 and stages["accepted"] < 2 * len(ACCOUNTS_)  # part done
    monkeypatch.setattr(controls, "_materialize_chunk", real_chunk)
    # Another process (or the restarted one) takes up what is still accepted.
    materialize_pending(sqlite_engine, cfg, now=NOW, notifier=OutboxNotifier())
    assert outcomes(sqlite_engine, cfg) == expected
    assert orders_per_account(sqlite_engine) == Counter(
        {a: 1 for a in ACCOUNTS_ if a not in PAID_UP}
    )
    refused = device_events(sqlite_engine)
    assert len(refused) == len(set(refused)) == 2 * len(PAID_UP)  # each finished once
    with sqlite_engine.connect() as conn:
        assert not conn.execute(
            select(API_DEVICES.c.id).where(API_DEVICES.c.stage == "accepted")
        ).all()


def test_over_the_limit_nothing_is_refused_halfway(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal of a message over the limit is one transaction: a crash cannot leave a
    remainder that the next pass counts under the limit and sends."""
    seed(sqlite_engine)
    cfg = config(9)
    post(sqlite_engine)
    real_chunk = controls._materialize_chunk
    calls = []

    def dies_on_the_second(*args: Any, **kw: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        real_chunk(*args, **kw)

    monkeypatch.setattr(controls, "_materialize_chunk", dies_on_the_second)
    # (A pass that refused chunk by chunk would die after its first chunk.)
    with contextlib.suppress(RuntimeError):
        materialize_pending(sqlite_engine, cfg, now=NOW, notifier=OutboxNotifier())
    monkeypatch.setattr(controls, "_materialize_chunk", real_chunk)
    materialize_pending(sqlite_engine, cfg, now=NOW, notifier=OutboxNotifier())
    assert sum(orders_per_account(sqlite_engine).values()) == 0
    assert outcomes(sqlite_engine, cfg) == one_plan(sqlite_engine, cfg)
