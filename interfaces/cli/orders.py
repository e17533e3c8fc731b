"""``meterctl orders ...``: switch orders. ``terminate`` lives here; list/show come later."""

from __future__ import annotations

from typing import Annotated

import typer

from base.i18n import _
from engine.db.database import transaction
from engine.roles import Role
from engine.store.orders import terminate_order
from interfaces.cli.context import note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors

orders_app = typer.Typer(help=_("Disconnection and reconnection orders."), no_args_is_help=True)


@orders_app.command(
    "terminate",
    help=_("Stop a started disconnection flow (supervisor): the order becomes cancelled_approved."),
)
def terminate(
    ctx: typer.Context,
    order_id: Annotated[int, typer.Argument(metavar="ID", help=_("The order's id."))],
    reason: Annotated[str, typer.Option("--reason", help=_("Why the flow is stopped."))],
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Stop a started disconnection flow (supervisor): the order becomes cancelled_approved."""
    st = state(ctx)
    require_role(st, Role.SUPERVISOR, "orders terminate")
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        order, previous = terminate_order(
            session, order_id, reason=reason, actor=st.user, now=now()
        )
    if as_json:
        print_json(
            {
                "id": order.id,
                "account_no": order.account_no,
                "from": previous,
                "state": order.state,
                "version": order.version,
            }
        )
    note(
        _("order {order} of {account}: {previous} -> {state} by {user}").format(
            order=order.id,
            account=order.account_no,
            previous=previous,
            state=order.state,
            user=st.user,
        )
    )


def register(app: typer.Typer) -> None:
    app.add_typer(orders_app, name="orders")
