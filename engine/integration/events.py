"""Each device's outcome as an ``EndDeviceEvent``, written to the callback outbox.

A device is finished (:func:`finish_devices`) in the same transaction that records its final
status, and that transaction also writes the callback carrying its event into
``api_callbacks``: an outcome recorded is a callback that will be delivered, whatever happens
to the process after the commit. :func:`collect_finished` finds the devices whose switch
order has reached a final state (verified, armed, blocked, cancelled, field order) and
finishes them; when the last device of a message is finished, the message's summary event is
written after them.

Event IDs are derived from the message ID and the device's position (uuid5), so they are
the same in every process and every redelivery.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, exists, func, insert, select, update
from sqlmodel import Session

from engine.db.database import lock_rows, read_session, transaction
from engine.db.integration import API_CALLBACKS, API_DEVICES, API_MESSAGES
from engine.db.models import FIELD_ORDERS, SWITCH_ORDERS

_NAMESPACE = uuid.UUID("6f1b3c2e-9d1a-4c55-8f0e-61968e9d0c21")

PROCESSED, ERROR, CANCELLED, EXPIRED = "PROCESSED", "ERROR", "CANCELLED", "EXPIRED"
CONTACTOR = "Contactor status"
RELAY_NAMES = {"open": "Opened", "closed": "Closed", "armed": "Armed"}
MESSAGES_PER_PASS = 50


def event_id(message_id: str, seq: int) -> str:
    """The stable mRID of the event of device ``seq`` of ``message_id``: the RFC 4122 name-based
    (SHA-1) UUID, ``uuid.uuid5(_NAMESPACE, ...)`` without its object (10,000 per reply)."""
    digest = bytearray(
        hashlib.sha1(
            _NAMESPACE.bytes + f"{message_id}\x1f{seq}".encode(), usedforsecurity=False
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def summary_event_id(message_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{message_id}\x1fsummary"))


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def reply_document(
    message_id: str, correlation_id: str | None, result: str, errors: Sequence[dict[str, str]]
) -> dict[str, Any]:
    """The synchronous reply (``Verb=reply``) of a request message."""
    header: dict[str, Any] = {"Verb": "reply", "Noun": "EndDeviceControls", "MessageID": message_id}
    if correlation_id is not None:
        header["CorrelationID"] = correlation_id
    return {"Header": header, "Reply": {"Result": result, "Error": list(errors)}}


@dataclass(frozen=True)
class DeviceOutcome:
    """The final status of one ``api_devices`` row."""

    device_id: int
    seq: int
    control_mrid: str
    control_code: str
    meter_no: str
    status: str
    reason: str | None = None
    relay: str | None = None  # Opened | Closed | Armed (the read-back)


def device_event(message_id: str, outcome: DeviceOutcome, at: datetime) -> dict[str, Any]:
    event: dict[str, Any] = {
        "mRID": event_id(message_id, outcome.seq),
        "EndDeviceEventType": {"ref": outcome.control_code},
        "status": {"value": outcome.status},
        "EndDevice": {"mRID": outcome.meter_no},
        "EndDeviceControl": {"mRID": outcome.control_mrid},
        "createdDateTime": iso(at),
    }
    if outcome.reason:
        event["reason"] = outcome.reason
    if outcome.relay:
        event["EndDeviceEventDetails"] = [{"name": CONTACTOR, "value": outcome.relay}]
    return event


def _callback_body(message: Any, events: list[dict[str, Any]], at: datetime) -> str:
    doc = {
        "Header": {
            "Verb": "created",
            "Noun": "EndDeviceEvents",
            "MessageID": str(uuid.uuid4()),
            "CorrelationID": message.correlation_id or message.message_id,
            "RelatesTo": message.message_id,
            "Timestamp": iso(at),
        },
        "Payload": {"EndDeviceEvents": events},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _queue_callback(
    session: Session, message: Any, events: list[dict[str, Any]], at: datetime
) -> None:
    if not message.reply_address or not events:
        return
    session.execute(
        insert(API_CALLBACKS).values(
            message_pk=message.id,
            client=message.client,
            url=message.reply_address,
            body=_callback_body(message, events, at),
            events=len(events),
            created_at=at,
            pending=True,
            next_attempt_at=at,
            attempts=0,
        )
    )


_FINISH = (
    update(API_DEVICES)
    .where(API_DEVICES.c.id == bindparam("b_id"), API_DEVICES.c.stage != "done")
    .values(
        stage="done",
        status=bindparam("b_status"),
        reason=bindparam("b_reason"),
        relay=bindparam("b_relay"),
        finished_at=bindparam("b_at"),
    )
)


def finish_devices(
    session: Session, message: Any, outcomes: Iterable[DeviceOutcome], *, now: datetime
) -> int:
    """Record the final status of devices of ``message`` (a locked ``api_messages`` row) and
    queue their events, then the summary if the message is complete. Returns how many."""
    done = sorted(outcomes, key=lambda o: o.seq)
    if done:
        session.execute(
            _FINISH,
            [
                {"b_id": o.device_id, "b_status": o.status, "b_reason": o.reason,
                 "b_relay": o.relay, "b_at": now}
                for o in done
            ],
        )  # fmt: skip
        _queue_callback(
            session, message, [device_event(message.message_id, o, now) for o in done], now
        )
    summarize_if_complete(session, message, now=now)
    return len(done)


def summary_status(counts: Counter[str], *, rejected: bool) -> str:
    total = sum(counts.values())
    if counts[CANCELLED] == total:
        return "CANCELLED"
    if counts[PROCESSED] == total:
        return "SUCCESSFUL"
    if counts[PROCESSED] == 0:
        return "REJECTED" if rejected else "FAILED"
    return "PARTIAL_SUCCESS"


def summarize_if_complete(session: Session, message: Any, *, now: datetime) -> str | None:
    """Write the summary event once every device of ``message`` is finished."""
    if message.summary_status is not None:
        return str(message.summary_status)
    unfinished = session.execute(
        select(
            exists().where(API_DEVICES.c.message_pk == message.id, API_DEVICES.c.stage != "done")
        )
    ).scalar()
    if unfinished:
        return None
    counts: Counter[str] = Counter(
        dict(
            session.execute(
                select(API_DEVICES.c.status, func.count())
                .where(API_DEVICES.c.message_pk == message.id)
                .group_by(API_DEVICES.c.status)
            ).all()
        )
    )
    rejected = (message.reply or {}).get("Reply", {}).get("Result") == "FAILED"
    status = summary_status(counts, rejected=rejected) if counts else "REJECTED"
    session.execute(
        update(API_MESSAGES)
        .where(API_MESSAGES.c.id == message.id)
        .values(summary_status=status, finished_at=now)
    )
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    _queue_callback(
        session,
        message,
        [
            {
                "mRID": summary_event_id(message.message_id),
                "EndDeviceEventType": {"ref": "EndDeviceControls"},
                "status": {"value": status},
                "createdDateTime": iso(now),
                "reason": f"{sum(counts.values())} devices: {shown or 'none'}",
            }
        ],
        now,
    )
    return status


# -- following orders to their outcome -------------------------------------------------------


def order_outcome(
    kind: str, state: str, last_error: str | None, reasons: Any, field_order: Any | None
) -> tuple[str, str | None, str | None]:
    """(status, reason, relay) of a device whose order ended in ``state``."""
    if state == "verified":
        return PROCESSED, None, "Opened" if kind == "disconnect" else "Closed"
    if state == "armed":
        return (
            PROCESSED,
            "armed: the customer presses the meter's button to restore supply",
            "Armed",
        )
    if state == "cancelled_paid":
        return CANCELLED, "a payment cleared the arrears before the command was sent", None
    if state == "cancelled_approved":
        return CANCELLED, last_error or "the order was terminated before the command", None
    if state == "blocked":
        codes = ", ".join(str(r) for r in reasons or [])
        text = last_error or "refused by the policy re-check before the command"
        return ERROR, f"{text} (rules: {codes})" if codes else text, None
    if state == "field_order":
        if field_order is not None:
            return (
                ERROR,
                (
                    f"field order {field_order.id} ({field_order.cause}): "
                    f"{last_error or 'remote control could not finish'}"
                ),
                None,
            )
        return ERROR, f"field order: {last_error or 'remote control could not finish'}", None
    return ERROR, f"order ended in state {state}", None


def messages_with_devices(engine: Engine, where: Any, *, limit: int) -> list[int]:
    """The keys of the messages (oldest first, at most ``limit``) with a device for which
    ``where`` holds; ``where`` may name the device's order (outer-joined)."""
    with read_session(engine) as session:
        return list(
            session.execute(
                select(API_DEVICES.c.message_pk)
                .outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == API_DEVICES.c.order_id)
                .where(where)
                .group_by(API_DEVICES.c.message_pk)
                .order_by(API_DEVICES.c.message_pk)
                .limit(limit)
            ).scalars()
        )


def collect_finished(engine: Engine, *, now: datetime) -> int:
    """Finish the devices whose order reached a final state; returns how many were finished."""
    messages = messages_with_devices(
        engine,
        and_(API_DEVICES.c.stage == "ordered", SWITCH_ORDERS.c.terminal.is_(True)),
        limit=MESSAGES_PER_PASS,
    )
    finished = 0
    for message_pk in messages:
        with transaction(engine) as session:
            message = lock_rows(session, API_MESSAGES.c.id, [message_pk]).get(message_pk)
            if message is None:
                continue
            rows = session.execute(
                select(
                    API_DEVICES.c.id, API_DEVICES.c.seq, API_DEVICES.c.control_mrid,
                    API_DEVICES.c.control_code, API_DEVICES.c.meter_no, SWITCH_ORDERS.c.id.label("oid"),
                    SWITCH_ORDERS.c.kind, SWITCH_ORDERS.c.state, SWITCH_ORDERS.c.last_error,
                    SWITCH_ORDERS.c.reasons,
                )
                .join(SWITCH_ORDERS, SWITCH_ORDERS.c.id == API_DEVICES.c.order_id)
                .where(
                    API_DEVICES.c.message_pk == message_pk,
                    API_DEVICES.c.stage == "ordered",
                    SWITCH_ORDERS.c.terminal.is_(True),
                )
            ).all()  # fmt: skip
            field_orders = {
                f.order_id: f
                for f in session.execute(
                    select(FIELD_ORDERS.c.id, FIELD_ORDERS.c.order_id, FIELD_ORDERS.c.cause).where(
                        FIELD_ORDERS.c.order_id.in_(
                            [r.oid for r in rows if r.state == "field_order"]
                        )
                    )
                )
            }
            outcomes = []
            for r in rows:
                status, reason, relay = order_outcome(
                    r.kind, r.state, r.last_error, r.reasons, field_orders.get(r.oid)
                )
                outcomes.append(
                    DeviceOutcome(
                        r.id,
                        r.seq,
                        r.control_mrid,
                        r.control_code,
                        r.meter_no,
                        status,
                        reason,
                        relay,
                    )
                )
            finished += finish_devices(session, message, outcomes, now=now)
    return finished
