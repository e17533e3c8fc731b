"""Emergency reconnection (应急复电) when a protection is approved for a customer already cut.

Seed 002 §2.5: a customer for whom an outage may endanger life or cause major loss gets
"应急复电或保电服务" (emergency reconnection or a power guarantee). So approving a power
guarantee (保电) or a humanitarian case that is in force now does what a payment does for a
paid customer, in the approval's transaction: every queued cut of the account is stopped
(``cancelled_approved``; open field disconnection orders ``cancelled``), and when the meter is
or may be open a reconnection order is created at once (the dispatcher runs reconnections
first). An approval that starts later reconnects nothing now: the policies protect the
account from its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from engine.config import Config
from engine.db.models import Exemption
from engine.notify import notifier_from_config
from engine.orders_states import DisconnectState
from engine.payments import reconnect_if_cut
from engine.store.accounts import get_account
from engine.store.standdown import stand_down_cuts


@dataclass
class Emergency:
    """What approving a protection did to the account's supply."""

    reconnect_order_id: int | None = None
    meter_link: str | None = None
    cancelled_orders: list[int] = field(default_factory=list)
    cancelled_field_orders: list[int] = field(default_factory=list)


def protect_now(
    session: Session, exemption: Exemption, *, config: Config, actor: str, now: datetime
) -> Emergency:
    """After ``exemption`` was approved: stand every cut down and reconnect if it is in force."""
    result = Emergency()
    if exemption.status != "approved" or not (exemption.starts <= now < exemption.until):
        return result
    what = "humanitarian case" if exemption.kind == "humanitarian" else "power guarantee (保电)"
    why = f"{what} #{exemption.id} approved by {actor}"
    stood = stand_down_cuts(
        session,
        exemption.account_no,
        actor=actor,
        now=now,
        why=why,
        detail={"exemption_id": exemption.id},
        notifier=notifier_from_config(config),
        to=DisconnectState.CANCELLED_APPROVED,
    )
    result.cancelled_orders = stood.cancelled_orders
    result.cancelled_field_orders = stood.cancelled_field_orders
    account = get_account(session, exemption.account_no)
    result.meter_link, result.reconnect_order_id = reconnect_if_cut(
        session,
        account_no=exemption.account_no,
        meter_no=account.meter_no,
        now=now,
        actor=actor,
        config=config,
        reason=f"emergency_{exemption.kind}",
        batch_id=f"emergency:{exemption.id}",
        detail={"exemption_id": exemption.id, "emergency": "应急复电", "why": why},
    )
    return result
