"""``meterctl payments record ACCOUNT AMOUNT --ref REF``: a payment taken at the counter.

Idempotent by ``--ref``: a reference already recorded changes nothing and sends nothing
(exit 0, saying so). A payment that leaves the account in arrears reconnects nothing (exit
0). One that clears the arrears cancels pending disconnections and, when the meter is or may
be open, creates a reconnection order; then:

- ``--no-wait``: print the order id and return;
- a ``meterctl serve`` is running: it dispatches the order; wait for the result;
- otherwise dispatch it here, on the meter's bus (if another process such as ``batch run``
  holds that bus, wait: it runs reconnections ahead of disconnections).

Exit 0 when the relay reads closed, or ``armed`` (1BH: the customer must press the meter
button); 3 when it became a field order or did not finish within ``--timeout``; 2 bad input;
4 refused.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Annotated, Any

import typer
from sqlalchemy import Engine, select

from base.errors import InputError, MeterctlError
from base.i18n import _, money, shown
from engine.config import Config
from engine.db.database import read_session
from engine.db.models import FIELD_ORDERS, SWITCH_ORDERS
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import new_worker_id
from engine.dispatch.leases import register_node, server_running, unregister_node
from engine.identifiers import confusable_problem
from engine.orders_states import ReconnectState
from engine.payments import parse_amount, record_payment
from engine.roles import Role
from interfaces.cli import db as cli_db
from interfaces.cli.context import fail, note, print_json, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

payments_app = typer.Typer(help=_("Payments from the billing system (post-payment reconnection)."))

DONE_STATES = (
    ReconnectState.VERIFIED.value,
    ReconnectState.ARMED.value,
    ReconnectState.FIELD_ORDER.value,
)
POLL_S = 0.5


def _order_state(engine: Engine, order_id: int) -> dict[str, Any]:
    with read_session(engine) as session:
        row = session.execute(
            select(SWITCH_ORDERS.c.state, SWITCH_ORDERS.c.last_error).where(
                SWITCH_ORDERS.c.id == order_id
            )
        ).first()
        field_order = session.execute(
            select(FIELD_ORDERS.c.id)
            .where(FIELD_ORDERS.c.order_id == order_id)
            .order_by(FIELD_ORDERS.c.id.desc())
            .limit(1)
        ).scalar()
    return {
        "state": row.state if row else None,
        "last_error": row.last_error if row else None,
        "field_order_id": field_order,
    }


async def _wait_for(engine: Engine, order_id: int, deadline: float) -> dict[str, Any]:
    """Poll the order until it is verified, armed or a field order, or the deadline passes."""
    while True:
        found = await asyncio.to_thread(_order_state, engine, order_id)
        if found["state"] in DONE_STATES or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(POLL_S)


async def _dispatch_here(
    engine: Engine, config: Config, order_id: int, link: str | None, actor: str, timeout: float
) -> dict[str, Any]:
    """No server runs: dispatch the reconnection on its bus ourselves, then report its state."""
    deadline = time.monotonic() + timeout
    worker = new_worker_id()
    await asyncio.to_thread(register_node, engine, worker, "payments", cli_db.clock.now())
    dispatcher = Dispatcher(engine, config, clock=cli_db.clock, worker_id=worker, actor=actor)
    try:
        if link:
            await dispatcher.run_until_idle(
                buses=[link],
                wait_for_busy_s=timeout,
                max_retry_wait_s=timeout,
            )
    finally:
        await dispatcher.close()
        await asyncio.to_thread(unregister_node, engine, worker)
    # Another process may have had the bus and be finishing the order: wait for it.
    return await _wait_for(engine, order_id, deadline)


def reconnect_and_wait(
    engine: Engine, config: Config, order_id: int, link: str | None, actor: str, timeout: float
) -> dict[str, Any]:
    """Have the reconnection dispatched (by a running ``serve``, else here) and wait for it.

    Returns the order's ``state``, ``last_error`` and ``field_order_id``. Shared by payments
    and emergency reconnection (``exemptions approve``).
    """
    if server_running(engine, cli_db.now()):
        note(
            _("reconnection order {order}: meterctl serve is dispatching it; waiting").format(
                order=order_id
            )
        )
        return asyncio.run(_wait_for(engine, order_id, time.monotonic() + timeout))
    note(_("reconnection order {order}: dispatching on {link}").format(order=order_id, link=link))
    return asyncio.run(_dispatch_here(engine, config, order_id, link, actor, timeout))


def outcome_message(order_id: int, found: dict[str, Any], timeout: float) -> tuple[ExitCode, str]:
    """The exit code and the sentence for a reconnection's state after waiting."""
    state_now = found["state"]
    if state_now == ReconnectState.VERIFIED.value:
        return ExitCode.OK, _("reconnected: order {order} verified, the relay reads closed").format(
            order=order_id
        )
    if state_now == ReconnectState.ARMED.value:
        return ExitCode.OK, _(
            "armed: the customer must press the meter button (order {order}, "
            "close allowed / 合闸允许)"
        ).format(order=order_id)
    if state_now == ReconnectState.FIELD_ORDER.value:
        return ExitCode.PARTIAL, _(
            "reconnection order {order} became field order {field_order} (现场复电): {error}"
        ).format(
            order=order_id,
            field_order=found["field_order_id"],
            error=found["last_error"] or _("remote reconnection failed"),
        )
    return ExitCode.PARTIAL, _(
        "reconnection order {order} is still {state} after {seconds} s; "
        "it stays queued (meterctl serve or the next run dispatches it)"
    ).format(order=order_id, state=state_now, seconds=f"{timeout:g}")


@payments_app.command(
    "record",
    help=_(
        "Record a payment; when it clears the arrears, reconnect the meter and wait for the result."
    ),
)
def record(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help=_("The account number."))],
    amount_text: Annotated[
        str, typer.Argument(metavar="AMOUNT", help=_("Yuan, at most 2 decimals (e.g. 120.50)."))
    ],
    ref: Annotated[
        str, typer.Option("--ref", help=_("The billing system's payment reference (used once)."))
    ],
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help=_("Return once recorded; do not wait for the meter."))
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", max=86_400, help=_("How long to wait for the meter.")
        ),
    ] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Record a payment; when it clears the arrears, reconnect the meter and wait for the result."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "payments record")
    if timeout <= 0:
        fail(
            _("--timeout: {timeout} must be a positive number of seconds").format(timeout=timeout),
            ExitCode.BAD_INPUT,
        )
    look_alike = confusable_problem(account.strip(), "ACCOUNT: account number")
    if look_alike:
        fail(look_alike, ExitCode.BAD_INPUT)
    try:
        amount: Decimal = parse_amount(amount_text, st.config)
    except InputError as exc:
        fail(_("{option}: {error}").format(option="AMOUNT", error=shown(exc)), ExitCode.BAD_INPUT)
    engine = open_store(st)
    with store_errors(st, engine):
        result = record_payment(
            engine,
            account_no=account.strip(),
            amount=amount,
            ref=ref,
            actor=st.user,
            now=cli_db.now(),
            config=st.config,
            source="cli",
        )
    document: dict[str, Any] = {**result.to_dict(), "state": None, "field_order_id": None}
    code = ExitCode.OK
    order_id = result.reconnect_order_id

    if result.duplicate:
        if order_id is not None:
            document.update(_order_state(engine, order_id))
        message = _("payment {ref} already recorded, nothing changed").format(ref=result.ref)
    elif result.in_arrears:
        message = _(
            "payment {ref} recorded: account {account} is still in arrears (balance {balance}): "
            "no reconnection"
        ).format(ref=result.ref, account=result.account_no, balance=money(result.balance))
    elif order_id is None:
        cancelled = (
            _("; cancelled disconnection order(s) {orders}").format(
                orders=", ".join(map(str, result.cancelled_orders))
            )
            if result.cancelled_orders
            else ""
        )
        message = (
            _(
                "payment {ref} recorded: account {account} no longer in arrears (balance "
                "{balance}); the meter is not disconnected, no reconnection needed"
            ).format(ref=result.ref, account=result.account_no, balance=money(result.balance))
            + cancelled
        )
    elif no_wait:
        document.update(_order_state(engine, order_id))
        message = _("payment {ref} recorded: reconnection order {order} created").format(
            ref=result.ref, order=order_id
        ) + (
            _(" (a running meterctl serve dispatches it)")
            if server_running(engine, cli_db.now())
            else ""
        )
    else:
        try:
            found = reconnect_and_wait(
                engine, st.config, order_id, result.meter_link, st.user, timeout
            )
        except MeterctlError as exc:  # e.g. an unreadable secrets file
            fail(str(exc), ExitCode.BAD_INPUT)
        document.update(found)
        code, message = outcome_message(order_id, found, timeout)
    document["message"] = message
    if as_json:
        print_json(document)
    note(message)
    if code:
        raise typer.Exit(int(code))


def register(app: typer.Typer) -> None:
    app.add_typer(payments_app, name="payments")
