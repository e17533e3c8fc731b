"""The payment hook over a real socket on 127.0.0.1: signatures, skew, replays, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from base.clock import FrozenClock
from engine import audit
from engine.db.models import AUDIT
from engine.payments import PaymentResult
from interfaces.http.payments import PaymentHook, parse_listen, parse_payment, start_hook
from interfaces.http.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayGuard,
    SignatureRefused,
    sign,
    signed_headers,
    verify,
)
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import make_config, rows, set_meter
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine  # fixture

KEY = b"hook-test-key-0123456789"


@dataclass
class Hook:
    url: str
    clock: FrozenClock
    engine: Engine
    woken: list[PaymentResult]
    session: aiohttp.ClientSession

    async def post(
        self,
        body: bytes | dict[str, Any],
        *,
        key: bytes | None = KEY,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent: dict[str, str] = {"Content-Type": "application/json"}
        if key is not None:
            stamp = timestamp if timestamp is not None else int(self.clock.now().timestamp())
            sent["X-Meterctl-Timestamp"] = str(stamp)
            sent["X-Meterctl-Signature"] = sign(key, stamp, raw)
        sent.update(headers or {})
        async with self.session.post(self.url, data=raw, headers=sent) as response:
            return response.status, await response.json()


async def _serve(engine: Engine, key: bytes | None) -> AsyncIterator[Hook]:
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    woken: list[PaymentResult] = []
    hook = PaymentHook(engine, make_config(), key=key, clock=clock, on_payment=woken.append)
    runner, url = await start_hook(hook, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Hook(url, clock, engine, woken, session)
    finally:
        await runner.cleanup()


@pytest.fixture
async def hook(sqlite_engine: Engine) -> AsyncIterator[Hook]:
    add_account(sqlite_engine, "H1", balance="-30.00")
    set_meter(sqlite_engine, "H1", relay_state="open")
    async for served in _serve(sqlite_engine, KEY):
        yield served


def refusals(engine: Engine) -> list[dict[str, Any]]:
    return [json.loads(r["payload"]) for r in rows(engine, AUDIT, AUDIT.c.action == "refused")]


async def test_valid_payment_returns_the_reconnection_order(hook: Hook) -> None:
    with capture_logs() as logs:
        status, body = await hook.post({"account": "H1", "amount": "50.00", "ref": "P-1"})
    assert status == 200
    assert body["order_id"] is not None and body["duplicate"] is False
    assert body["balance"] == "20.00" and body["in_arrears"] is False
    assert [r.reconnect_order_id for r in hook.woken] == [body["order_id"]]  # dispatch woken
    # Never the key or the signature in the logs or the audit trail.
    text = json.dumps(logs, default=str) + json.dumps(rows(hook.engine, AUDIT), default=str)
    assert KEY.decode() not in text and "sha256=" not in text

    # The same payment again (new timestamp, so a new signature): idempotent by ref.
    hook.clock.advance(5)
    status, again = await hook.post({"account": "H1", "amount": 50, "ref": "P-1"})
    assert status == 200 and again["duplicate"] is True and again["order_id"] == body["order_id"]
    assert again["balance"] == "20.00"


async def test_number_amounts_are_exact(hook: Hook) -> None:
    status, body = await hook.post(b'{"account": "H1", "amount": 30.1, "ref": "P-2"}')
    assert status == 200 and body["balance"] == "0.10"


async def test_unsigned_call_is_refused_and_audited(hook: Hook) -> None:
    status, body = await hook.post({"account": "H1", "amount": "50", "ref": "P-3"}, key=None)
    assert status == 401 and "unsigned" in body["error"]
    assert refusals(hook.engine)[-1]["action"] == "payments hook"
    assert hook.woken == []


async def test_bad_signature_is_refused(hook: Hook) -> None:
    status, body = await hook.post(
        {"account": "H1", "amount": "50", "ref": "P-4"}, key=b"not-the-key"
    )
    assert status == 401 and "bad signature" in body["error"]
    status, body = await hook.post(
        {"account": "H1", "amount": "50", "ref": "P-4"},
        headers={"X-Meterctl-Signature": "md5=abc"},
    )
    assert status == 401 and "sha256=" in body["error"]
    assert len(refusals(hook.engine)) == 2


async def test_stale_or_future_timestamp_is_refused(hook: Hook) -> None:
    now = int(hook.clock.now().timestamp())
    for stamp in (now - 301, now + 301):
        status, body = await hook.post(
            {"account": "H1", "amount": "50", "ref": "P-5"}, timestamp=stamp
        )
        assert status == 401 and "clock" in body["error"]
    status, _ = await hook.post(
        {"account": "H1", "amount": "50", "ref": "P-5"}, timestamp=now - 299
    )
    assert status == 200


async def test_replayed_call_is_refused(hook: Hook) -> None:
    raw = json.dumps({"account": "H1", "amount": "50", "ref": "P-6"}).encode()
    stamp = int(hook.clock.now().timestamp())
    headers = {"X-Meterctl-Timestamp": str(stamp), "X-Meterctl-Signature": sign(KEY, stamp, raw)}
    first = await hook.post(raw, key=None, headers=headers)
    hook.clock.advance(10)
    second = await hook.post(raw, key=None, headers=headers)
    assert first[0] == 200
    assert second[0] == 401 and "replayed" in second[1]["error"]
    assert "replayed" in refusals(hook.engine)[-1]["reason"]


async def test_bad_input_names_the_field(hook: Hook) -> None:
    cases: list[tuple[bytes | dict[str, Any], int, str]] = [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        ({"account": "H1", "amount": "12.345", "ref": "P-7"}, 400, "amount"),
        ({"account": "H1", "amount": "-5", "ref": "P-7"}, 400, "amount"),
        ({"account": "H1", "amount": True, "ref": "P-7"}, 400, "amount"),
        ({"account": "H1", "amount": "5"}, 400, "ref"),
        ({"amount": "5", "ref": "P-7"}, 400, "account"),
        ({"account": "NOPE", "amount": "5", "ref": "P-7"}, 404, "account"),
    ]
    for body, status, field in cases:
        hook.clock.advance(1)  # a fresh signature each time
        got, answer = await hook.post(body)
        assert (got, answer.get("field")) == (status, field), (body, answer)
        assert field in answer["error"] or "JSON" in answer["error"] or "account" in answer["error"]
    hook.clock.advance(1)
    status, body = await hook.post({"account": "H1", "amount": "5", "ref": "P-8"})
    assert status == 200
    hook.clock.advance(1)
    status, body = await hook.post({"account": "H1", "amount": "6", "ref": "P-8"})
    assert status == 409 and body["field"] == "ref"


async def test_no_key_refuses_every_call(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "H2", balance="-30.00")
    async for served in _serve(sqlite_engine, None):
        status, body = await served.post({"account": "H2", "amount": "50", "ref": "P-9"})
        assert status == 503 and "no [hooks] payment_key" in body["error"]
    assert audit.verify(sqlite_engine).ok


# -- the pure parts ------------------------------------------------------------------------


def test_signature_verification_rules() -> None:
    guard = ReplayGuard(300)
    body = b'{"a": 1}'
    good = sign(KEY, 1000, body)
    verify(KEY, "1000", good, body, now=1000.0, max_skew_s=300, guard=guard)
    with pytest.raises(SignatureRefused, match="replayed"):
        verify(KEY, "1000", good, body, now=1001.0, max_skew_s=300, guard=guard)
    with pytest.raises(SignatureRefused, match="bad signature"):  # body changed
        verify(
            KEY, "1001", sign(KEY, 1001, body), body + b" ", now=1001.0, max_skew_s=300, guard=guard
        )
    with pytest.raises(SignatureRefused, match="bad signature"):  # timestamp changed
        verify(KEY, "1002", good, body, now=1001.0, max_skew_s=300, guard=guard)
    with pytest.raises(SignatureRefused, match="integer"):
        verify(KEY, "soon", good, body, now=1001.0, max_skew_s=300, guard=guard)
    with pytest.raises(SignatureRefused, match="missing header X-Meterctl-Signature"):
        verify(KEY, "1000", None, body, now=1000.0, max_skew_s=300, guard=guard)


def test_replay_guard_forgets_only_what_the_clock_check_refuses_anyway() -> None:
    guard = ReplayGuard(300)
    guard.remember("a", 1000.0)
    assert guard.seen("a", 1000.0 + 599)
    assert not guard.seen("a", 1000.0 + 601)  # 601 s old: the timestamp check refuses it


def test_parse_payment_and_listen() -> None:
    from decimal import Decimal

    assert parse_payment(b'{"account": " A1 ", "amount": "1.5", "ref": "r"}') == (
        "A1",
        Decimal("1.50"),
        "r",
    )
    assert parse_listen("127.0.0.1:8645") == ("127.0.0.1", 8645)
    assert parse_listen("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="--listen"):
        parse_listen("localhost", "--listen")


def test_hook_repr_hides_the_key(sqlite_engine: Engine) -> None:
    hook = PaymentHook(sqlite_engine, make_config(), key=KEY)
    assert KEY.decode() not in repr(hook) and "set" in repr(hook)
    assert timedelta(seconds=hook.max_skew_s) == timedelta(minutes=5)


def test_signed_headers_are_what_the_hook_accepts() -> None:
    body = b'{"account": "A1", "amount": "10.00", "ref": "R1"}'
    headers = signed_headers(KEY, body, 1000)
    assert headers["Content-Type"] == "application/json"
    verify(
        KEY,
        headers[TIMESTAMP_HEADER],
        headers[SIGNATURE_HEADER],
        body,
        now=1000.0,
        max_skew_s=300,
        guard=ReplayGuard(300),
    )
    with pytest.raises(SignatureRefused):
        verify(
            b"another key",
            headers[TIMESTAMP_HEADER],
            headers[SIGNATURE_HEADER],
            body,
            now=1000.0,
            max_skew_s=300,
            guard=ReplayGuard(300),
        )


async def test_the_hooks_database_writes_go_where_serve_says(sqlite_engine: Engine) -> None:
    """``meterctl serve`` runs them on its dispatcher's urgent lane (no second SQLite writer
    waiting in the busy handler behind the campaign's)."""
    add_account(sqlite_engine, "H9", balance="-30.00")
    set_meter(sqlite_engine, "H9", relay_state="open")
    ran: list[str] = []

    async def run_blocking(func: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(func.__name__)
        return await asyncio.to_thread(func, *args, **kwargs)

    clock = FrozenClock(MONDAY_10_SHANGHAI)
    hook = PaymentHook(sqlite_engine, make_config(), key=KEY, clock=clock,
                       run_blocking=run_blocking)  # fmt: skip
    runner, url = await start_hook(hook, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            served = Hook(url, clock, sqlite_engine, [], session)
            status, body = await served.post({"account": "H9", "amount": "50.00", "ref": "P-9"})
    finally:
        await runner.cleanup()
    assert status == 200 and body["order_id"] is not None
    assert ran == ["verify", "record_payment"]
