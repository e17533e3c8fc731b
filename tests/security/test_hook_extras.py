"""The payment hook: replays refused across serve processes, a body that never arrives."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from base.clock import FrozenClock
from engine.config import parse_config
from engine.db import init_db, make_engine
from interfaces.http import payments as hook_module
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

KEY = b"extras-hook-key-0123456789"


async def test_a_replay_sent_to_another_serve_process_is_refused(tmp_path: Path) -> None:
    config = parse_config(
        f'[database]\nurl = "sqlite:///{tmp_path / "r.db"}"\n[audit]\nkey = "k-0123456789"\n'
    )
    engine = make_engine(config.database.url, audit_key="k-0123456789")
    init_db(engine)
    add_account(engine, "R1", balance="10.00")
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    # Two serve processes: two hooks, each with its own memory object, one database.
    first, second = (PaymentHook(engine, config, key=KEY, clock=clock) for _ in range(2))
    runners = [await start_hook(h, "127.0.0.1", 0) for h in (first, second)]
    raw = b'{"account": "R1", "amount": "5", "ref": "REPLAY-1"}'
    stamp = int(MONDAY_10_SHANGHAI.timestamp())
    headers = {"X-Meterctl-Timestamp": str(stamp), "X-Meterctl-Signature": sign(KEY, stamp, raw)}
    try:
        async with aiohttp.ClientSession() as session:
            answers = []
            for _runner, url in runners:
                async with session.post(url, data=raw, headers=headers) as response:
                    answers.append((response.status, await response.json()))
    finally:
        for runner, _url in runners:
            await runner.cleanup()
        engine.dispose()
    assert answers[0][0] == 200
    assert answers[1][0] == 401 and "replayed" in answers[1][1]["error"]


async def test_a_body_that_never_arrives_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook_module, "BODY_TIMEOUT_S", 0.5)
    config = parse_config(
        f'[database]\nurl = "sqlite:///{tmp_path / "t.db"}"\n[audit]\nkey = "k-0123456789"\n'
    )
    engine = make_engine(config.database.url, audit_key="k-0123456789")
    init_db(engine)
    hook = PaymentHook(engine, config, key=KEY, clock=FrozenClock(MONDAY_10_SHANGHAI))
    runner, url = await start_hook(hook, "127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
        rest = await asyncio.wait_for(reader.read(4096), timeout=5)
        writer.close()
    finally:
        await runner.cleanup()
        engine.dispose()
    assert b" 408 " in status_line
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["field"] == "body"
