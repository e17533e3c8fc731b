"""Class: a secret never reaches a log line, an HTTP answer or the audit trail, whatever raises.

Each request-handling step of the payment hook is made to raise (monkeypatched) while its frames
hold the hook key, the meter passwords and the audit key as local variables; absurd signature
headers are sent unsigned. Every output (the log lines on stderr in both formats, the response
bodies, the audit table) is scanned for every configured secret.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine

from base.clock import FrozenClock
from engine import logging as engine_logging
from engine.config import Config, parse_config
from engine.db import init_db, make_engine
from engine.db.models import AUDIT
from engine.secrets import load_secrets
from interfaces.http import payments as hook_module
from interfaces.http.payments import PaymentHook, payment_key, start_hook
from interfaces.http.signature import SignatureRefused, check_headers, sign
from tests.engine.scheduler_helpers import rows, set_meter
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

HOOK_KEY = "hook-SECRET-7f3a9c1e5b2d"
AUDIT_KEY = "audit-SECRET-2c4e6a8b0d1f"
METER_PASSWORD = "918273"
PER_METER_PASSWORD = "564738"
SECRETS = (HOOK_KEY, AUDIT_KEY, METER_PASSWORD, PER_METER_PASSWORD)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    secrets_file = tmp_path / "meters.toml"
    secrets_file.write_text(f'[meters."000000000001"]\npassword = "{PER_METER_PASSWORD}"\n')
    text = (
        f'[database]\nurl = "sqlite:///{tmp_path / "s.db"}"\n'
        f'[audit]\nkey = "{AUDIT_KEY}"\n'
        f'[hooks]\npayment_key = "{HOOK_KEY}"\n'
        f'[dlt645]\npassword = "{METER_PASSWORD}"\nsecrets_file = "{secrets_file}"\n'
    )
    cfg = parse_config(text, source=tmp_path / "meterctl.toml")
    load_secrets(cfg)  # as serve does: the passwords are loaded in the process
    return cfg


@pytest.fixture(params=[True, False], ids=["json-logs", "text-logs"])
def log_stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The real log configuration, writing to a buffer instead of stderr."""
    stream = io.StringIO()
    engine_logging.configure_logging("DEBUG", json=request.param)
    root = logging.getLogger()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    engine_logging.configure_logging("WARNING", json=False)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret ({secret[:4]}...) leaked into the output"


def _audit_text(engine: Engine) -> str:
    return json.dumps(rows(engine, AUDIT), default=str)


# -- the formatter -----------------------------------------------------------------------------


def _fails_holding_secrets(config: Config) -> None:
    hook_key = HOOK_KEY  # noqa: F841 - locals a traceback renderer could show
    audit_key = AUDIT_KEY  # noqa: F841
    password = METER_PASSWORD  # noqa: F841
    raise RuntimeError("exploded with secrets in scope")


@pytest.mark.parametrize("logger_kind", ["structlog", "stdlib"])
def test_a_logged_exception_never_shows_locals(
    config: Config, log_stream: io.StringIO, logger_kind: str
) -> None:
    try:
        _fails_holding_secrets(config)
    except RuntimeError:
        if logger_kind == "structlog":
            engine_logging.get_logger("t").exception("t.failed")
        else:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    out = log_stream.getvalue()
    assert "exploded with secrets in scope" in out and "_fails_holding_secrets" in out
    assert_no_secret(out)


def test_an_exception_message_quoting_a_secret_is_scrubbed(
    config: Config, log_stream: io.StringIO
) -> None:
    payment_key(config)  # the key is read as serve reads it, which registers it
    try:
        raise ValueError(f"bad key {HOOK_KEY} / {AUDIT_KEY}")
    except ValueError:
        engine_logging.get_logger("t").exception("t.failed", detail=f"k={HOOK_KEY}")
    out = log_stream.getvalue()
    assert "t.failed" in out and "***" in out
    assert_no_secret(out)


def test_an_unrenderable_value_does_not_lose_the_event(
    log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's own capture handler (beside ours) re-raises render errors unless this is off.
    monkeypatch.setattr(logging, "raiseExceptions", False)

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        __str__ = __repr__

    engine_logging.get_logger("t").error("t.hostile", value=Hostile())
    out = log_stream.getvalue()
    assert "t.hostile" in out and "Logging error" not in out


# -- the header checks (pure) ------------------------------------------------------------------

GOOD_SIG = "sha256=" + "a" * 64


@pytest.mark.parametrize(
    "timestamp",
    [
        "9" * 500,  # int() works, the arithmetic then overflows float
        "١٧٠٠٠٠٠٠٠٠",  # Arabic-Indic digits: int() accepts them
        "１７００００００００",  # full-width digits
        "1_700_000_000",
        "-1700000000",
        "+1700000000",
        "1e9",
        "",
        " ",
    ],
)
def test_absurd_timestamps_are_refused_before_any_arithmetic(timestamp: str) -> None:
    with pytest.raises(SignatureRefused) as info:
        check_headers(timestamp, GOOD_SIG)
    assert "X-Meterctl-Timestamp" in info.value.reason


@pytest.mark.parametrize(
    "signature",
    ["sha256=" + "a" * 63, "sha256=" + "g" * 64, "md5=abc", "sha256=" + "ａ" * 64, "x" * 5000],
)
def test_malformed_signatures_are_refused(signature: str) -> None:
    with pytest.raises(SignatureRefused, match="X-Meterctl-Signature"):
        check_headers("1700000000", signature)


def test_well_formed_headers_pass() -> None:
    assert check_headers(" 1700000000 ", "SHA256=" + "A" * 64) == (1700000000, "sha256=" + "a" * 64)


# -- the hook: raise in each step --------------------------------------------------------------


class Served:
    def __init__(self, url: str, engine: Engine, session: aiohttp.ClientSession) -> None:
        self.url, self.engine, self.session = url, engine, session
        self.bodies: list[str] = []

    async def post(self, raw: bytes, headers: dict[str, str]) -> int:
        async with self.session.post(self.url, data=raw, headers=headers) as response:
            self.bodies.append(await response.text())
            return response.status

    async def signed(self, body: dict[str, Any]) -> int:
        raw = json.dumps(body).encode()
        stamp = int(MONDAY_10_SHANGHAI.timestamp())
        headers = {
            "X-Meterctl-Timestamp": str(stamp),
            "X-Meterctl-Signature": sign(HOOK_KEY.encode(), stamp, raw),
        }
        return await self.post(raw, headers)


@pytest.fixture
async def served(config: Config, log_stream: io.StringIO) -> AsyncIterator[Served]:
    engine = make_engine(config.database.url, audit_key=AUDIT_KEY)
    init_db(engine)
    add_account(engine, "S1", balance="-30.00")
    set_meter(engine, "S1", relay_state="open")
    hook = PaymentHook(
        engine,
        config,
        key=payment_key(config),
        clock=FrozenClock(MONDAY_10_SHANGHAI),
        on_payment=lambda _result: _fails_holding_secrets(config),
    )
    runner, url = await start_hook(hook, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(url, engine, session)
    finally:
        await runner.cleanup()
        engine.dispose()


def _raiser(*_args: Any, **_kwargs: Any) -> Any:
    key = HOOK_KEY  # noqa: F841 - locals of the failing frame
    passwords = [METER_PASSWORD, PER_METER_PASSWORD]  # noqa: F841
    audit_key = AUDIT_KEY  # noqa: F841
    raise RuntimeError("a step of the hook failed")


@pytest.mark.parametrize(
    ("step", "status"),
    [
        ("verify", 401),  # before the signature is accepted: never a retryable 500
        ("parse_payment", 500),
        ("record_payment", 500),
        ("read_body", 401),
    ],
)
async def test_a_step_that_raises_leaks_nothing(
    served: Served,
    log_stream: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    status: int,
) -> None:
    monkeypatch.setattr(hook_module, step, _raiser)
    got = await served.signed({"account": "S1", "amount": "50.00", "ref": f"R-{step}"})
    assert got == status
    logs = log_stream.getvalue()
    assert "hook.internal_error" in logs and "RuntimeError" in logs
    for text in (logs, "".join(served.bodies), _audit_text(served.engine)):
        assert_no_secret(text)
    assert "Traceback" not in "".join(served.bodies)


async def test_a_failing_wake_up_after_a_payment_leaks_nothing(
    served: Served, log_stream: io.StringIO
) -> None:
    assert await served.signed({"account": "S1", "amount": "50.00", "ref": "R-wake"}) == 200
    logs = log_stream.getvalue()
    assert "hook.wake_failed" in logs
    for text in (logs, "".join(served.bodies), _audit_text(served.engine)):
        assert_no_secret(text)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Meterctl-Timestamp": "9" * 500, "X-Meterctl-Signature": GOOD_SIG},
        {"X-Meterctl-Timestamp": "１７００００００００", "X-Meterctl-Signature": GOOD_SIG},
        {"X-Meterctl-Timestamp": "1700000000", "X-Meterctl-Signature": "sha256=" + "z" * 64},
        {"X-Meterctl-Timestamp": "", "X-Meterctl-Signature": ""},
        {},
    ],
)
async def test_absurd_unsigned_calls_get_401_and_leak_nothing(
    served: Served, log_stream: io.StringIO, headers: dict[str, str]
) -> None:
    sent = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
    status = await served.post(b'{"account": "S1", "amount": "1", "ref": "x"}', sent)
    assert status == 401
    logs = log_stream.getvalue()
    assert "hook.refused" in logs and "hook.internal_error" not in logs
    for text in (logs, "".join(served.bodies), _audit_text(served.engine)):
        assert_no_secret(text)


def test_an_audit_payload_quoting_a_secret_value_is_scrubbed(config: Config) -> None:
    from engine import audit
    from engine.db import transaction

    payment_key(config)  # loaded as serve loads it: registered
    engine = make_engine(config.database.url, audit_key=AUDIT_KEY)
    init_db(engine)
    try:
        with transaction(engine) as session:
            audit.append(
                session,
                "t",
                "dispatch.failed",
                "A1",
                {"error": f"gateway said: bad key {HOOK_KEY}", "hook": {"detail": AUDIT_KEY}},
            )
        assert_no_secret(_audit_text(engine))
        assert audit.verify(engine).ok  # scrubbed before hashing: the chain holds
    finally:
        engine.dispose()


# -- the integration API (served beside the hook, same app) ------------------------------------

API_KEY = "api-SECRET-9d8c7b6a5f4e"


@pytest.mark.parametrize(
    ("target", "method", "path", "status"),
    [
        ("verify", "POST", "/cim/v1/EndDeviceControls", 401),  # before authentication
        ("parse_request", "POST", "/cim/v1/EndDeviceControls", 500),
        ("message_state", "GET", "/cim/v1/EndDeviceControls/M1", 500),
        ("device_state", "GET", "/cim/v1/EndDevices/M1", 500),
    ],
)
async def test_an_api_handler_that_raises_leaks_nothing(
    tmp_path: Path,
    log_stream: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    method: str,
    path: str,
    status: int,
) -> None:
    from interfaces.http import cim

    secrets_file = tmp_path / "meters.toml"
    secrets_file.write_text(f'[meters."000000000001"]\npassword = "{PER_METER_PASSWORD}"\n')
    config = parse_config(
        f'[database]\nurl = "sqlite:///{tmp_path / "api.db"}"\n[audit]\nkey = "{AUDIT_KEY}"\n'
        f'[hooks]\npayment_key = "{HOOK_KEY}"\n'
        f'[dlt645]\npassword = "{METER_PASSWORD}"\nsecrets_file = "{secrets_file}"\n'
        f'[api.clients.cis]\nkey = "{API_KEY}"\nrole = "operator"\n',
        source=tmp_path / "meterctl.toml",
    )
    load_secrets(config)
    engine = make_engine(config.database.url, audit_key=AUDIT_KEY)
    init_db(engine)
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    hook = PaymentHook(engine, config, key=payment_key(config), clock=clock)
    app = hook.app(client_max_size=1 << 20)
    cim.IntegrationApi(engine, config, clock=clock).install(app)
    monkeypatch.setattr(cim, target, _raiser)
    runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
    base = url.rsplit("/payments", 1)[0]
    body = b"" if method == "GET" else b'{"Header": {}}'
    stamp = int(MONDAY_10_SHANGHAI.timestamp())
    headers = {
        "X-Meterctl-Client": "cis",
        "X-Meterctl-Timestamp": str(stamp),
        "X-Meterctl-Signature": sign(API_KEY.encode(), stamp, body),
    }
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, base + path, data=body, headers=headers) as response,
        ):
            got, answer = response.status, await response.text()
    finally:
        await runner.cleanup()
    try:
        assert got == status
        logs = log_stream.getvalue()
        assert "hook.internal_error" in logs
        for text in (logs, answer, _audit_text(engine)):
            assert_no_secret(text)
            assert API_KEY not in text
    finally:
        engine.dispose()
