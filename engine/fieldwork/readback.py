"""Read a field order's meter back before it is closed (status word 3, or the Modbus input).

A crew closing a 现场复电 or a 补停 reports what it did; the engine then reads the relay where
the meter can be reached (the same drivers and bus leases as the dispatcher) so a closed
order says what the meter says, not only what the crew says. Never sends a switch command.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, select

from base.clock import Clock
from base.errors import MeterctlError
from engine.config import Config
from engine.db.database import read_session, transaction
from engine.db.models import METERS
from engine.dispatch.dispatcher import link_settings
from engine.dispatch.identity import new_worker_id
from engine.dispatch.leases import release_bus, try_acquire_bus
from engine.fieldwork.orders import DONE, close_field_order, field_order_row
from engine.secrets import load_secrets
from engine.switching.drivers import BusPool

log = structlog.get_logger("engine.fieldwork")

UNREACHABLE = "unreachable"
READ_BACK_OUTCOMES = (DONE, "meter_replaced")  # outcomes that claim the relay is as required


async def read_relay(engine: Engine, config: Config, meter_address: str, now: datetime) -> str:
    """``open``, ``closed`` or ``unreachable`` (no meter row, bus busy, no reply, refused)."""
    with read_session(engine) as session:
        meter = (
            session.execute(select(METERS).where(METERS.c.address == meter_address))
            .mappings()
            .first()
        )
    if meter is None:
        return UNREACHABLE
    holder = new_worker_id()
    lease = timedelta(seconds=config.dispatch.lease_s)
    if not try_acquire_bus(engine, meter["link"], holder, now, lease):
        return UNREACHABLE  # the dispatcher is on the bus; the crew's word will do
    pool = BusPool(link_settings(config))
    try:
        driver = await pool.driver(
            protocol=meter["protocol"],
            link_url=meter["link"],
            address=meter["address"],
            credentials=load_secrets(config).for_meter(meter["address"], meter["password_ref"]),
            security=meter["security"],
        )
        reading = await driver.read_relay()
    except (MeterctlError, OSError) as exc:  # link, frame, refusal, config, secrets
        log.info("fieldwork.read_back_failed", meter=meter_address, error=str(exc))
        return UNREACHABLE
    finally:
        await pool.close()
        release_bus(engine, meter["link"], holder)
    return "open" if reading.open else "closed"


async def close_reading_meter(
    engine: Engine,
    config: Config,
    field_order_id: int,
    outcome: str,
    *,
    actor: str,
    clock: Clock,
    crew_saw: str | None = None,
    note: str | None = None,
    read_meter: bool = True,
) -> dict[str, Any]:
    """Close a field order, reading its meter first when the outcome claims the work is done.

    The one entry point for a crew's report (CLI ``field-orders close``, a work-item API):
    the reading and the crew's word go to :func:`~engine.fieldwork.orders.close_field_order`
    in one audited transaction.
    """
    with read_session(engine) as session:
        row = field_order_row(session, field_order_id)
    reading: str | None = None
    if read_meter and outcome in READ_BACK_OUTCOMES and row["meter_address"]:
        reading = await read_relay(engine, config, row["meter_address"], clock.now())
    with transaction(engine) as session:
        return close_field_order(
            session,
            field_order_id,
            outcome,
            actor=actor,
            now=clock.now(),
            meter_reading=reading,
            crew_saw=crew_saw,
            note=note,
        )
