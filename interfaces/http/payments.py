"""``POST /payments``: the billing system reports a payment (aiohttp, in serve's event loop).

Request: JSON ``{"account": "...", "amount": "12.50" (or a number), "ref": "..."}`` with the
headers of :mod:`interfaces.http.signature`. Answers (always JSON):

- 200 ``{"order_id", "duplicate", "balance", "in_arrears", "ref", "account",
  "cancelled_orders"}``: recorded (or recorded before: ``duplicate`` true, nothing changed);
  ``order_id`` is the reconnection order (null when none is needed);
- 400 bad JSON or a bad field (``{"error", "field"}``), 404 unknown account (field
  ``account``), 409 the ``ref`` was used for another account or amount;
- 401 unsigned, bad signature, stale timestamp or replay; audited as ``refused``;
- 503 no ``[hooks] payment_key`` configured: every call is refused.

After a payment that created (or found) a reconnection order, ``on_payment`` is called so the
server dispatches it at once. The key and the signatures are never logged.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from base.clock import Clock, SystemClock
from base.errors import InputError
from engine import audit
from engine.config import Config, read_secret
from engine.identifiers import confusable_problem
from engine.logging import scrub_text
from engine.money import AmountError
from engine.payments import PaymentResult, parse_amount, record_payment
from engine.store.errors import UnknownAccount
from interfaces.http.replays import SharedReplayGuard
from interfaces.http.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureMemory,
    SignatureRefused,
    verify,
)

log = structlog.get_logger("engine.hooks")

PATH = "/payments"
MAX_BODY = 64 * 1024  # a payment is a few hundred bytes
BODY_TIMEOUT_S = 10.0  # a body that never arrives must not hold a connection (and a task) open
LINGER_S = 1.0  # after an answer, how long an unread body is still drained (aiohttp: 10 s)
SIGNED = web.RequestKey("meterctl.signed", bool)  # set once the call's signature was accepted
INTERNAL_ERROR = "internal error: the call could not be handled (logged); retry, signed anew"
NOT_SIGNED = "call refused: it was not accepted as signed"
NO_KEY = "no [hooks] payment_key configured: the payment hook refuses every call"


def payment_key(config: Config) -> bytes | None:
    """The hook's shared key from ``[hooks] payment_key`` or ``payment_key_file`` (None: unset)."""
    secret = read_secret(
        config, config.hooks.payment_key, "hooks.payment_key_file", config.hooks.payment_key_file
    )
    return secret.encode("utf-8") if secret else None


class BadField(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_payment(body: bytes, config: Config | None = None) -> tuple[str, Decimal, str]:
    """(account, amount, ref) from the JSON body, or :class:`BadField` naming the field.

    ``amount`` is refused beyond ``[payments] max_amount`` of ``config`` (engine.money).
    """
    try:
        data = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_int=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadField("body", f"the body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError):  # e.g. nesting thousands deep
        raise BadField("body", "the body is not a JSON document meterctl accepts") from None
    if not isinstance(data, dict):
        raise BadField("body", "the body must be a JSON object with account, amount and ref")

    def text(name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise BadField(name, f"field {name!r} must be a non-empty string")
        return value.strip()

    account, ref = text("account"), text("ref")
    look_alike = confusable_problem(account, "field 'account':")
    if look_alike:
        raise BadField("account", look_alike)
    raw = data.get("amount")
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise BadField("amount", "field 'amount' must be a number of yuan, e.g. \"12.50\"")
    try:
        amount = parse_amount(str(raw), config)
    except InputError as exc:
        raise BadField("amount", f"field 'amount': {exc}") from None
    return account, amount, ref


class PaymentHook:
    """The hook's request handling, bound to a store and a config.

    Args:
        key: the shared HMAC key (None: refuse every call with 503).
        on_payment: called (in the event loop) after a recorded payment.
        run_blocking: runs the hook's database writes (the replay memory, the payment) off
            the event loop; default ``asyncio.to_thread``. ``meterctl serve`` passes its
            dispatcher's urgent lane (``Dispatcher.urgent``): on SQLite a thread of its own
            would wait in the busy handler while the campaign's database thread holds the
            write lock (measured with 300 busy buses: 2.8 s at p99).
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        key: bytes | None,
        clock: Clock | None = None,
        on_payment: Callable[[PaymentResult], None] | None = None,
        run_blocking: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self._key = key
        self.clock = clock or SystemClock()
        self.on_payment = on_payment
        self._blocking = run_blocking or asyncio.to_thread
        self.max_skew_s = float(config.hooks.max_clock_skew_s)
        # Shared by every serve process (a replay sent to another one is refused too).
        self.guard: SignatureMemory = SharedReplayGuard(engine, self.max_skew_s)

    def __repr__(self) -> str:  # never show the key
        return f"PaymentHook(key={'set' if self._key else 'unset'})"

    def app(self, *, client_max_size: int = MAX_BODY) -> web.Application:
        """The application serving ``POST /payments`` (a larger ``client_max_size`` when
        other routes share it; the hook still refuses a body over its own limit). Its
        middleware answers one sentence whatever a handler of any route raises."""
        app = web.Application(
            client_max_size=max(client_max_size, MAX_BODY), middlewares=[no_traceback]
        )
        app.router.add_post(PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        if self._key is None:
            await self._refused(peer, NO_KEY)
            return _error(503, NO_KEY)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"the body is larger than {MAX_BODY} bytes", "body")
        body_or_error = await read_body(request)
        if isinstance(body_or_error, web.Response):
            return body_or_error
        body = body_or_error
        if len(body) > MAX_BODY:
            return _error(413, f"the body is larger than {MAX_BODY} bytes", "body")
        try:
            await self._blocking(  # the replay memory is a database write
                verify,
                self._key,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                body,
                now=self.clock.now().timestamp(),
                max_skew_s=self.max_skew_s,
                guard=self.guard,
            )
        except SignatureRefused as exc:
            await self._refused(peer, exc.reason)
            return _error(401, exc.reason)
        except SQLAlchemyError as exc:  # the replay memory could not be written
            log.error("hook.database_error", error=type(exc).__name__)
            return _error(503, "the database is unavailable; retry, signed anew")
        request[SIGNED] = True
        try:
            account, amount, ref = parse_payment(body, self.config)
        except BadField as exc:
            return _error(400, str(exc), exc.field)
        try:
            result = await self._blocking(
                record_payment,
                self.engine,
                account_no=account,
                amount=amount,
                ref=ref,
                actor=f"hook:{peer}",
                now=self.clock.now(),
                config=self.config,
                source="hook",
            )
        except UnknownAccount as exc:
            return _error(404, str(exc), "account")
        except AmountError as exc:  # beyond [payments] max_balance
            return _error(400, str(exc), exc.field)
        except InputError as exc:  # the ref was used for another account or amount
            return _error(409, str(exc), "ref")
        except SQLAlchemyError as exc:
            log.error("hook.database_error", error=type(exc).__name__)
            return _error(500, "the payment could not be recorded (database error); retry")
        log.info(
            "hook.payment",
            account=account,
            ref=ref,
            duplicate=result.duplicate,
            order=result.reconnect_order_id,
            in_arrears=result.in_arrears,
        )
        if self.on_payment is not None and result.reconnect_order_id is not None:
            try:
                self.on_payment(result)
            except Exception:  # the payment is recorded; the serve loop dispatches it anyway
                log.exception("hook.wake_failed")
        return web.json_response(
            {
                "order_id": result.reconnect_order_id,
                "duplicate": result.duplicate,
                "balance": str(result.balance),
                "in_arrears": result.in_arrears,
                "ref": result.ref,
                "account": result.account_no,
                "cancelled_orders": result.cancelled_orders,
            }
        )

    async def _refused(self, peer: str, reason: str) -> None:
        log.warning("hook.refused", peer=peer, reason=reason)
        try:
            await asyncio.to_thread(
                audit.record_refusal, self.engine, f"hook:{peer}", "payments hook", reason
            )
        except SQLAlchemyError as exc:
            log.error("hook.refusal_not_audited", error=type(exc).__name__)


async def read_body(request: web.Request) -> bytes | web.Response:
    """The raw body, or the error answer: 413 too large, 408 not arrived in time."""
    try:
        return await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"the body is larger than {MAX_BODY} bytes", "body")
    except TimeoutError:
        answer = _error(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s", "body")
        answer.force_close()  # the connection is not waited on any longer
        return answer


@web.middleware
async def no_traceback(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Whatever a handler raises, answer one sentence: never a traceback, a local or a key.

    The log gets the exception's type and a traceback without local variables
    (:mod:`engine.logging`). A call that was not (yet) accepted as signed is refused with 401
    rather than 500: 500 tells the billing system to retry, and an unsigned call must never
    look retryable.
    """
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # aiohttp's own answers (404, 405 ...) carry no detail of ours
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("hook.internal_error", path=request.path, error=type(exc).__name__, exc_info=True)
        if not request.get(SIGNED, False):
            return _error(401, NOT_SIGNED)
        return _error(500, INTERNAL_ERROR)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": scrub_text(message)}  # never a loaded secret
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


def parse_listen(text: str, option: str = "[hooks] listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8645`` for IPv6) → (host, port); ValueError names ``option``."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{option}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8645)")
    return host, int(port_text)


async def start_hook(
    hook: PaymentHook,
    host: str,
    port: int,
    *,
    app: web.Application | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, str]:
    """Serve ``hook`` (or ``app``, which holds the hook's route and others) on ``host:port``
    (0 = any free port; HTTPS with ``ssl_context``); returns the runner and the hook's URL."""
    runner = web.AppRunner(
        app or hook.app(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=10.0,
        lingering_time=LINGER_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:  # the port actually bound (port 0 in tests)
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://{shown}:{bound}{PATH}"
