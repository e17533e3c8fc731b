"""``meterctl demo``: the whole mission in under a minute, against simulated meters.

A temporary SQLite store and an in-process fleet of DL/T 645 meters on two simulated RS-485
buses (real TCP gateways on 127.0.0.1, 2400-baud timing). The story: import the billing
export, a supervisor approves a power-guarantee exemption requested by an operator (four
eyes), plan the batch (every account with every reason), run it (only the accounts that pass
every rule are cut, each verified by reading status word 3 back), take a payment through the
signed HTTP hook, watch the reconnection verified, let the utility's billing system reconnect
and disconnect through the integration API (callbacks received and verified), and verify the
audit chain. Every step
checks what happened against what must happen and stops loudly if it differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from base.clock import SystemClock
from base.i18n import N_, _, money
from engine import audit
from engine.batch_run import run_batch, select_batch
from engine.config import Config, parse_config
from engine.db import init_db, make_engine, transaction
from engine.db.models import SwitchOrder
from engine.dispatch.dispatcher import Dispatcher
from engine.importer import REQUIRED_COLUMNS, import_accounts
from engine.store.accounts import arrears_threshold
from engine.store.exemptions import decide_exemption, request_exemption
from interfaces.labels import COUNT_TEXT, OUTCOME_TEXT, REASON_TEXT, RELAY_TEXT, STATE_TEXT, label
from interfaces.simulation import simulator_settings
from simulator.fleet import Fleet
from simulator.state import RelayState

# What the story expects of each customer, as the table shows it.
EXPECT_TEXT = {
    "cut": N_("cut"),
    "kept": N_("kept"),
    "field_order": N_("field order"),
    "scheduled": N_("scheduled"),
}

DEMO_CONFIG = """\
# meterctl demo configuration (written by `meterctl demo`).
[site]
timezone = "Asia/Shanghai"
name = "Demo county, station 7"
[database]
url = "sqlite:///{db}"
[policy]
arrears_threshold = 0.0
notice_days = 7
[policy.window]
# The demo opens the window to every hour so it runs whenever you try it; the default is
# working hours (08:00-16:00) on working days.
weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
# Open on public holidays too (the statutory calendar would shut them).
[calendar]
statutory = false
[policy.batch_limit]
max_share = 0.5
max_count = 100
[policy.important]
authority_recipients = ["county-power-administration", "county-government"]
[audit]
key = "demo-audit-key"
[hooks]
payment_key = "demo-hook-key"
[api.clients.cis]
key = "demo-cis-key"
role = "operator"
[scheduler]
sweep_times = []  # the demo's short story needs no twice-daily sweep
[dispatch]
poll_interval_s = 0.3
backoff_s = 0.5
retry_delay_s = 1.0
[notify]
important_copy_to = ["county-power-administration"]
"""


@dataclass(frozen=True)
class Customer:
    account_no: str
    name: str
    balance: str
    notice_days_ago: int | None
    customer_class: str = "residential"
    humanitarian: bool = False
    expect: str = "kept"  # "cut", "kept", "field_order", "scheduled"
    why: str = ""


CUSTOMERS = (
    Customer(
        "D-1001",
        "Zhang Wei",
        "-56.20",
        9,
        expect="cut",
        why=N_("in arrears, notice delivered 9 days ago"),
    ),
    Customer(
        "D-1002",
        "Li Na",
        "-120.00",
        8,
        expect="cut",
        why=N_("in arrears; pays later through the hook"),
    ),
    Customer("D-1003", "Wang Fang", "35.50", 8, why=N_("paid up")),
    Customer("D-1004", "Liu Yang", "-18.00", 3, why=N_("notice delivered only 3 days ago")),
    Customer(
        "D-1005",
        "Chen Jie",
        "-42.00",
        10,
        humanitarian=True,
        why=N_("home oxygen: needs a supervisor's approval"),
    ),
    Customer(
        "D-1006",
        "Zhao Lei",
        "-77.00",
        9,
        expect="field_order",
        why=N_("the meter on the line is another customer's (swapped)"),
    ),
    Customer(
        "D-1007",
        "County Hospital Annex",
        "-980.00",
        9,
        customer_class="important",
        expect="scheduled",
        why=N_("important customer: warning T-15, instruction T, execution T+15"),
    ),
    Customer(
        "D-1008", "Sun Li", "-33.00", 9, why=N_("power guarantee (保电) approved by a supervisor")
    ),
)


class DemoFailed(RuntimeError):
    """A step of the story did not behave; the message says which and how."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


class Demo:
    def __init__(self, console: Console, *, keep: bool = False, time_scale: float = 1.0) -> None:
        self.out = console
        self.keep = keep
        self.time_scale = time_scale
        self.folder = Path(tempfile.mkdtemp(prefix="meterctl-demo-"))
        db = self.folder / "demo.db"
        self.config_text = DEMO_CONFIG.format(db=db)
        (self.folder / "config.toml").write_text(self.config_text, encoding="utf-8")
        self.config: Config = parse_config(self.config_text, source=self.folder / "config.toml")
        self.engine = make_engine(self.config.database.url, audit_key=b"demo-audit-key")
        self.clock = SystemClock()
        self.fleet: Fleet | None = None
        self.meter_of: dict[str, str] = {}

    # -- helpers ------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.out.rule(f"[bold]{title}")

    def relay(self, account_no: str) -> RelayState:
        assert self.fleet is not None
        return self.fleet.relay(self.meter_of[account_no])

    def order_of(self, account_no: str, kind: str = "disconnect") -> SwitchOrder | None:
        from sqlmodel import Session, select

        with Session(self.engine) as session:
            return session.exec(
                select(SwitchOrder)
                .where(SwitchOrder.account_no == account_no, SwitchOrder.kind == kind)
                .order_by(SwitchOrder.id.desc())  # type: ignore[union-attr]
            ).first()

    # -- the story -----------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        try:
            self._run()
        finally:
            if self.fleet is not None:
                self.fleet.stop()
            self.engine.dispose()
            if self.keep:
                kept = _("demo files kept in {folder}").format(folder=self.folder)
                self.out.print(f"[dim]{kept}[/]")
            else:
                shutil.rmtree(self.folder, ignore_errors=True)
        passed = _("demo passed")
        seconds = _("in {seconds} s").format(seconds=f"{time.monotonic() - started:.1f}")
        self.out.print(f"[bold green]{passed}[/] {seconds}")

    def _run(self) -> None:
        self.step(_("1. A fleet of simulated meters on two RS-485 buses (TCP gateways, 2400 baud)"))
        self.fleet = Fleet.generate(
            meters=len(CUSTOMERS),
            buses=2,
            time_scale=self.time_scale,
            seed=7,
            settings=simulator_settings(self.config),
        ).start()
        for customer, address in zip(CUSTOMERS, self.fleet.addresses, strict=True):
            self.meter_of[customer.account_no] = address
        swapped = self.meter_of["D-1006"]
        self.fleet.inject(swapped, "wrong_meter_no")
        for bus in self.fleet.bus_info():
            line = _("bus {link}: meters {meters}").format(
                link=bus["link"], meters=", ".join(bus["meters"])
            )
            self.out.print(f"  {line}")
        swapped_line = _("meter {meter} is wired to the wrong customer (a swapped meter)")
        self.out.print("  " + swapped_line.format(meter=swapped))

        self.step(_("2. Import the billing export"))
        init_db(self.engine)
        csv_path = self._write_accounts()
        summary = import_accounts(
            self.engine,
            csv_path,
            actor="operator-li",
            now=self.clock.now(),
            tz=self.config.site.tz,
            arrears_threshold=arrears_threshold(self.config.policy.arrears_threshold),
            max_backdate=timedelta(days=self.config.policy.notice_backdate_max_days),
        )
        imported = _("{rows} accounts imported from {file} (audit record {seq})")
        self.out.print(
            "  " + imported.format(rows=summary.rows, file=csv_path.name, seq=summary.audit_seq)
        )

        self.step(
            _(
                "3. Power guarantee (保电) for D-1008: requested by an operator, approved by a "
                "supervisor"
            )
        )
        now = self.clock.now()
        with transaction(self.engine) as session:
            exemption = request_exemption(
                session,
                "D-1008",
                reason="dialysis at home until the end of the month",
                until=now + timedelta(days=20),
                actor="operator-li",
                now=now,
            )
            exemption_id = exemption.id
        with transaction(self.engine) as session:
            assert exemption_id is not None
            decide_exemption(session, exemption_id, approve=True, actor="supervisor-wang", now=now)
        self.out.print(
            "  " + _("exemption approved by supervisor-wang (the requester may not approve it)")
        )

        self.step(_("4. Plan the batch: every account, every reason (nothing is sent)"))
        selection = select_batch(self.engine, self.config, now=self.clock.now())
        table = Table(_("account"), _("customer"), _("decision"), _("reasons (blocking first)"))
        names = {c.account_no: c.name for c in CUSTOMERS}
        for decision in selection.plan.decisions:
            blocks = [r.code for r in decision.blocked_by]
            others = [r.code for r in decision.reasons if r.code not in blocks]
            table.add_row(
                decision.account_no,
                names.get(decision.account_no, ""),
                label(OUTCOME_TEXT, decision.outcome),
                _("; ").join(label(REASON_TEXT, code) for code in blocks + others[:2]),
            )
        self.out.print(table)
        self._expect_plan(selection)

        self.step(
            _("5. Run the batch: re-check, read the meter number, trip (1CH), read status word 3")
        )
        result = asyncio.run(
            run_batch(self.engine, self.config, selection, actor="operator-li", clock=self.clock)
        )
        table = Table(_("account"), _("expected"), _("order"), _("relay on the meter"), _("why"))
        for customer in CUSTOMERS:
            order = self.order_of(customer.account_no)
            table.add_row(
                customer.account_no,
                _(EXPECT_TEXT[customer.expect]),
                label(STATE_TEXT, order.state) if order else "-",
                label(RELAY_TEXT, self.relay(customer.account_no)),
                _(customer.why),
            )
        self.out.print(table)
        counts = _(", ").join(
            f"{label(COUNT_TEXT, key)} {value}" for key, value in result.counts().items() if value
        )
        self.out.print("  " + _("counts: {counts}").format(counts=counts))
        self._expect_cuts()

        self.step(
            _("6. D-1002 pays {amount}: the billing system calls the signed hook").format(
                amount=money(Decimal("200.00"))
            )
        )
        latency = self._pay_through_hook("D-1002", "200.00", "BANK-20261129-0001")
        _check(self.relay("D-1002") is RelayState.CLOSED, "D-1002 paid but its relay is not closed")
        order = self.order_of("D-1002", "reconnect")
        _check(
            order is not None and order.state == "verified",
            f"reconnect order not verified: {order}",
        )
        verified = _("reconnection verified by read-back {seconds} s after the hook call")
        self.out.print("  " + verified.format(seconds=f"{latency:.2f}"))

        self.step(_("7. The utility's billing system (CIS) over the integration API (IEC 61968-9)"))
        self._cis_story()

        self.step(_("8. Verify the audit chain"))
        verification = audit.verify(self.engine)
        _check(verification.ok, f"audit chain broken at record {verification.bad_seq}")
        intact = _("{records} audit records, hash chain intact")
        self.out.print("  " + intact.format(records=verification.records))

    def _write_accounts(self) -> Path:
        assert self.fleet is not None
        path = self.folder / "billing-export.csv"
        now = self.clock.now()
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(REQUIRED_COLUMNS)
            for customer in CUSTOMERS:
                address = self.meter_of[customer.account_no]
                state = self.fleet.meter(address)
                delivered = (
                    (now - timedelta(days=customer.notice_days_ago)).isoformat()
                    if customer.notice_days_ago is not None
                    else ""
                )
                writer.writerow(
                    [
                        customer.account_no,
                        customer.name,
                        f"1390000{address[-4:]}",
                        customer.balance,
                        "yes",
                        customer.customer_class,
                        "yes" if customer.humanitarian else "no",
                        state.meter_no,
                        address,
                        "dlt645-2007",
                        self.fleet.link_of(address),
                        delivered,
                    ]
                )
        return path

    def _expect_plan(self, selection: Any) -> None:
        outcomes = {d.account_no: d for d in selection.plan.decisions}
        codes = {a: {r.code for r in d.blocked_by} for a, d in outcomes.items()}
        _check(
            outcomes["D-1003"].outcome.value == "blocked" and "not_in_arrears" in codes["D-1003"],
            "D-1003 is paid up but was not blocked as not_in_arrears",
        )
        _check("notice_pending" in codes["D-1004"], "D-1004's 3-day-old notice did not block")
        _check(
            "humanitarian_needs_approval" in codes["D-1005"], "D-1005 humanitarian case not blocked"
        )
        _check("exemption_active" in codes["D-1008"], "D-1008's approved exemption did not block")
        _check(outcomes["D-1007"].outcome.value == "schedule", "important customer not scheduled")
        for account in ("D-1001", "D-1002", "D-1006"):
            _check(outcomes[account].outcome.value == "disconnect", f"{account} should be planned")

    def _expect_cuts(self) -> None:
        for customer in CUSTOMERS:
            relay = self.relay(customer.account_no)
            if customer.expect == "cut":
                _check(
                    relay is RelayState.OPEN,
                    f"{customer.account_no} should be cut, relay is {relay.value}",
                )
                order = self.order_of(customer.account_no)
                _check(
                    order is not None and order.state == "verified",
                    f"{customer.account_no} not verified",
                )
            else:
                _check(
                    relay is RelayState.CLOSED,
                    f"{customer.account_no} must not be cut ({customer.why})",
                )
        order = self.order_of("D-1006")
        _check(
            order is not None and order.state == "field_order",
            "swapped meter did not become a field order",
        )
        order = self.order_of("D-1007")
        _check(
            order is not None and order.state == "planned" and order.notice_time is not None,
            "important customer's timeline was not scheduled",
        )

    def _pay_through_hook(self, account_no: str, amount: str, ref: str) -> float:
        """Post a signed payment to the engine's HTTP hook; the engine dispatches the reconnection."""
        started = time.monotonic()
        answer, replay = asyncio.run(self._hook_call(account_no, amount, ref))
        answered = _("hook answered 200: order {order}, balance {balance}")
        self.out.print(
            "  " + answered.format(order=answer["order_id"], balance=money(answer["balance"]))
        )
        replayed = _("the same signed call replayed: {status} {error}")
        self.out.print("  " + replayed.format(status=replay[0], error=replay[1].get("error")))
        _check(replay[0] == 401, "a replayed hook call was not refused")
        return time.monotonic() - started

    async def _hook_call(
        self, account_no: str, amount: str, ref: str
    ) -> tuple[dict[str, Any], tuple[int, dict[str, Any]]]:
        import json

        import aiohttp

        from interfaces.http.payments import PaymentHook, payment_key, start_hook
        from interfaces.http.signature import signed_headers

        key = payment_key(self.config)
        assert key is not None
        dispatcher = Dispatcher(self.engine, self.config, clock=self.clock, actor="engine")
        woken = asyncio.Event()
        hook = PaymentHook(
            self.engine,
            self.config,
            key=key,
            clock=self.clock,
            on_payment=lambda _result: woken.set(),
        )
        runner, url = await start_hook(hook, "127.0.0.1", 0)
        self.out.print("  " + _("hook listening on {url}").format(url=url))
        body = json.dumps({"account": account_no, "amount": amount, "ref": ref}).encode()
        headers = signed_headers(key, body, int(self.clock.now().timestamp()))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(url, data=body, headers=headers) as response:
                    answer = await response.json()
                    _check(response.status == 200, f"hook refused the payment: {answer}")
                # What `meterctl serve` does when the hook wakes it: dispatch at once.
                await asyncio.wait_for(woken.wait(), 5)
                await dispatcher.run_until_idle()
                async with http.post(url, data=body, headers=headers) as response:
                    replay = (response.status, await response.json())
        finally:
            await runner.cleanup()
            await dispatcher.close()
        return answer, replay

    def _cis_story(self) -> None:
        """A CIS reconnects D-1001 (a payment arrangement), then cuts it and D-1003 again when
        it lapses; every outcome comes back as a signed callback to the CIS's receiver."""
        assert self.fleet is not None
        meter = {a: self.fleet.meter(self.meter_of[a]).meter_no for a in ("D-1001", "D-1003")}
        events = asyncio.run(
            self._cis_calls(
                [
                    ("cis-0001", "3.31.0.18", [meter["D-1001"]]),
                    ("cis-0002", "3.31.0.23", [meter["D-1001"], meter["D-1003"]]),
                ]
            )
        )
        table = Table(_("message"), _("control"), _("meter"), _("status"), _("contactor / reason"))
        account = {m: a for a, m in meter.items()}
        for message_id, event in events:
            device = event.get("EndDevice", {}).get("mRID")
            details = event.get("EndDeviceEventDetails") or [{"value": ""}]
            table.add_row(
                message_id,
                event["EndDeviceEventType"]["ref"],
                f"{device} ({account[device]})" if device else _("(summary)"),
                event["status"]["value"],
                details[0]["value"] or str(event.get("reason", ""))[:70],
            )
        self.out.print(table)
        by = {(m, e.get("EndDevice", {}).get("mRID")): e for m, e in events}
        reconnected = by[("cis-0001", meter["D-1001"])]
        _check(
            reconnected["status"]["value"] == "PROCESSED"
            and reconnected["EndDeviceEventDetails"][0]["value"] == "Closed",
            f"the API reconnection of D-1001 did not end closed: {reconnected}",
        )
        cut = by[("cis-0002", meter["D-1001"])]
        _check(
            cut["EndDeviceEventDetails"][0]["value"] == "Opened",
            f"the API disconnection of D-1001 did not end open: {cut}",
        )
        _check(self.relay("D-1001") is RelayState.OPEN, "D-1001's relay is not open on the meter")
        refused = by[("cis-0002", meter["D-1003"])]
        _check(
            refused["status"]["value"] == "ERROR" and "not_in_arrears" in refused["reason"],
            f"the paid-up D-1003 was not refused by the arrears rule: {refused}",
        )
        _check(self.relay("D-1003") is RelayState.CLOSED, "D-1003 must not be cut")
        self.out.print(
            "  "
            + _(
                "every callback signed with the CIS's key and verified by its receiver; "
                "the paid-up account refused by the same rule as in the batch"
            )
        )

    async def _cis_calls(
        self, messages: list[tuple[str, str, list[str]]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Run ``meterctl serve`` in-process, post each message, collect its callbacks."""
        import hashlib
        import hmac
        import json

        import aiohttp
        from aiohttp import web

        from interfaces.server import EngineServer

        key = b"demo-cis-key"
        received: list[tuple[str, dict[str, Any]]] = []
        summaries: set[str] = set()
        arrived = asyncio.Event()

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            stamp = request.headers.get("X-Meterctl-Timestamp", "")
            mac = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(
                request.headers.get("X-Meterctl-Signature", ""), "sha256=" + mac
            ):
                return web.Response(status=401)
            doc = json.loads(body)
            message_id = doc["Header"]["RelatesTo"]
            for event in doc["Payload"]["EndDeviceEvents"]:
                received.append((message_id, event))
                if "EndDevice" not in event:
                    summaries.add(message_id)
            arrived.set()
            return web.Response(status=204)

        receiver = web.Application()
        receiver.router.add_post("/cis/events", receive)
        runner = web.AppRunner(receiver, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        reply_to = f"http://127.0.0.1:{runner.addresses[0][1]}/cis/events"
        server = EngineServer(
            self.engine, self.config, clock=self.clock, listen=("127.0.0.1", 0), actor="engine"
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(server.run(stop))
        try:
            while server.hook_url is None:
                await asyncio.sleep(0.05)
            url = server.hook_url.rsplit("/", 1)[0] + "/cim/v1/EndDeviceControls"
            self.out.print(
                "  " + _("meterctl serve listening; the CIS posts to {url}").format(url=url)
            )
            async with aiohttp.ClientSession() as http:
                for message_id, code, meters in messages:
                    doc = {
                        "Header": {"Verb": "create", "Noun": "EndDeviceControls",
                                   "MessageID": message_id, "ReplyAddress": reply_to},
                        "Payload": {"EndDeviceControls": [
                            {"mRID": f"{message_id}-1", "EndDeviceControlType": {"ref": code},
                             "EndDevices": [{"mRID": m} for m in meters]}]},
                    }  # fmt: skip
                    body = json.dumps(doc).encode()
                    stamp = str(int(time.time()))
                    headers = {
                        "Content-Type": "application/json",
                        "X-Meterctl-Client": "cis",
                        "X-Meterctl-Timestamp": stamp,
                        "X-Meterctl-Signature": "sha256="
                        + hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest(),
                    }
                    async with http.post(url, data=body, headers=headers) as response:
                        reply = await response.json()
                    self.out.print(
                        "  "
                        + _("{message} ({code}): reply {status} {result}").format(
                            message=message_id,
                            code=code,
                            status=response.status,
                            result=reply["Reply"]["Result"],
                        )
                    )
                    _check(response.status == 200, f"the API refused {message_id}: {reply}")
                    deadline = time.monotonic() + 60
                    while message_id not in summaries:
                        _check(time.monotonic() < deadline, f"no callbacks for {message_id}")
                        arrived.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(arrived.wait(), 1.0)
        finally:
            stop.set()
            await serving
            await runner.cleanup()
        return received


def run_demo(
    console: Console | None = None,
    *,
    keep: bool = False,
    time_scale: float = 1.0,
    on_error: Callable[[str], None] | None = None,
) -> bool:
    """Run the story; True when every step behaved."""
    console = console or Console()
    try:
        Demo(console, keep=keep, time_scale=time_scale).run()
    except DemoFailed as exc:
        failed = _("demo FAILED:")
        console.print(f"[bold red]{failed}[/] {exc}")
        if on_error:
            on_error(str(exc))
        return False
    return True


__all__ = ["CUSTOMERS", "UTC", "Decimal", "Demo", "DemoFailed", "datetime", "run_demo"]
