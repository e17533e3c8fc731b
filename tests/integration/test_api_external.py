"""An outside system drives ``meterctl serve`` through the integration API, speaking only HTTP.

A real ``meterctl serve`` subprocess runs against a simulated fleet on 127.0.0.1 (served by
this test process). The test plays the CIS: it posts signed EndDeviceControls, and runs its
own callback receiver on 127.0.0.1 that checks every callback's signature the way
docs/integration.md tells an integrator to. Meters are disconnected and reconnected, the
simulator confirms each relay, and each device's event carries the read-back. Then the same
with ``serve`` SIGKILLed right after the reply (and the receiver refusing the first
callbacks): a new ``serve`` finishes the work and every event arrives; a redelivered event
has the same ID and the same content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from engine.db.integration import API_MESSAGES
from engine.db.models import SWITCH_ORDERS
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.databases import postgres_db_url
from tests.integration.harness import EngineWorld, account_no_for
from tests.integration.test_multiserve import Serve, _until

__all__ = ["postgres_db_url"]

KEY = "cis-integration-key"
EXTRA = f"""
[hooks]
payment_key = "pay-key"
[api.clients.cis]
key = "{KEY}"
role = "operator"
[api]
callback_backoff_s = 0.2
callback_max_backoff_s = 0.5
[scheduler]
tick_seconds = 1
sweep_times = []
[logging]
json = true
"""
OPEN, CLOSE = "3.31.0.23", "3.31.0.18"


class Receiver:
    """The CIS's callback endpoint: verifies each call, records the events (thread-safe)."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.bad: list[str] = []
        self.refuse = refuse_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers.get("X-Meterctl-Timestamp", "")
                given = self.headers.get("X-Meterctl-Signature", "")
                expected = (
                    "sha256="
                    + hmac.new(
                        KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                with receiver.lock:
                    if (
                        not hmac.compare_digest(given, expected)
                        or abs(time.time() - int(stamp)) > 300
                        or self.headers.get("X-Meterctl-Client") != "cis"
                    ):
                        receiver.bad.append(given)
                        status = 401
                    elif receiver.refuse > 0:
                        receiver.refuse -= 1
                        status = 503
                    else:
                        receiver.bodies.append(json.loads(body))
                        status = 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cis/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for b in self.bodies for e in b["Payload"]["EndDeviceEvents"]]

    def for_message(self, correlation: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                e
                for b in self.bodies
                if b["Header"]["CorrelationID"] == correlation
                for e in b["Payload"]["EndDeviceEvents"]
            ]


def call(
    base: str, method: str, path: str, doc: dict[str, Any] | None = None, *, ago_s: int = 0
) -> tuple[int, Any]:
    body = b"" if doc is None else json.dumps(doc).encode()
    stamp = str(int(time.time()) - ago_s)
    signature = (
        "sha256=" + hmac.new(KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    request = urllib.request.Request(
        base + path,
        data=body if doc is not None else None,
        method=method,
        headers={
            "Content-Type": "application/json",
            "X-Meterctl-Client": "cis",
            "X-Meterctl-Timestamp": stamp,
            "X-Meterctl-Signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def controls(message_id: str, code: str, meters: list[str], reply_to: str) -> dict[str, Any]:
    return {
        "Header": {
            "Verb": "create",
            "Noun": "EndDeviceControls",
            "MessageID": message_id,
            "CorrelationID": f"corr-{message_id}",
            "ReplyAddress": reply_to,
        },
        "Payload": {
            "EndDeviceControls": [
                {"mRID": f"ctl-{message_id}", "EndDeviceControlType": {"ref": code},
                 "EndDevices": [{"mRID": m} for m in meters]}
            ]
        },
    }  # fmt: skip


def base_url(serve: Serve) -> str:
    url = serve.hook_url()
    assert url is not None
    return url.rsplit("/", 1)[0]


def complete(receiver: Receiver, message_id: str, devices: int) -> list[dict[str, Any]] | None:
    """The message's distinct events once every device's and the summary have arrived."""
    got = {e["mRID"]: e for e in receiver.for_message(f"corr-{message_id}")}
    return list(got.values()) if len(got) == devices + 1 else None


def by_meter(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["EndDevice"]["mRID"]: e for e in events if "EndDevice" in e}


def summary(events: list[dict[str, Any]]) -> str:
    (found,) = [e for e in events if "EndDevice" not in e]
    return str(found["status"]["value"])


@pytest.mark.slow
def test_a_cis_disconnects_and_reconnects_meters_over_http(tmp_path: Path) -> None:
    with Fleet.generate(meters=8, buses=2, time_scale=0.1, seed=21) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=EXTRA)
        paid = fleet.addresses[0]
        world.import_fleet(balances={paid: "25.00"})
        meters = {a: fleet.meter(a).meter_no for a in fleet.addresses}
        targets = fleet.addresses[:4]  # one paid-up, three in arrears
        receiver = Receiver()
        serve = Serve(world, 1)
        try:
            _until("serve listening", serve.hook_url, 30, [serve])
            base = base_url(serve)
            started = time.monotonic()
            status, reply = call(
                base, "POST", "/cim/v1/EndDeviceControls",
                controls("off-1", OPEN, [meters[a] for a in targets], receiver.url),
            )  # fmt: skip
            assert time.monotonic() - started < 1.0
            assert status == 200, reply
            assert reply["Reply"] == {"Result": "OK", "Error": []}

            events = _until("every event", lambda: complete(receiver, "off-1", 4), 60, [serve])
            got = by_meter(events)
            for address in targets[1:]:
                event = got[meters[address]]
                assert event["status"]["value"] == "PROCESSED"
                assert event["EndDeviceEventDetails"] == [
                    {"name": "Contactor status", "value": "Opened"}
                ]
                assert fleet.relay(address) is RelayState.OPEN  # the simulator agrees
            refused = got[meters[paid]]
            assert refused["status"]["value"] == "ERROR"
            assert "arrears/" in refused["reason"]
            assert fleet.relay(paid) is RelayState.CLOSED
            assert summary(events) == "PARTIAL_SUCCESS"
            assert not receiver.bad

            status, reply = call(
                base, "POST", "/cim/v1/EndDeviceControls",
                controls("on-1", CLOSE, [meters[a] for a in targets[1:]], receiver.url),
            )  # fmt: skip
            assert (status, reply["Reply"]["Result"]) == (200, "OK")
            events = _until("every event", lambda: complete(receiver, "on-1", 3), 60, [serve])
            for address in targets[1:]:
                assert by_meter(events)[meters[address]]["EndDeviceEventDetails"][0]["value"] == (
                    "Closed"
                )
                assert fleet.relay(address) is RelayState.CLOSED
            assert summary(events) == "SUCCESSFUL"

            status, state = call(base, "GET", f"/cim/v1/EndDevices/{meters[targets[1]]}")
            assert status == 200
            assert state["readBack"]["value"] == "Closed"
            assert state["intended"]["value"] == "Closed"
            status, state = call(base, "GET", "/cim/v1/EndDeviceControls/off-1")
            assert status == 200
            assert state["summary"] == "PARTIAL_SUCCESS"
            assert [d["status"] for d in state["EndDevices"]] == ["ERROR"] + ["PROCESSED"] * 3
            assert account_no_for(targets[1]) in {d["account"] for d in state["EndDevices"]}
        finally:
            if serve.proc.poll() is None:
                serve.proc.send_signal(signal.SIGTERM)
                serve.proc.wait(30)
            receiver.close()


@pytest.mark.slow
def test_serve_sigkilled_between_request_and_callback_still_delivers_every_event(
    tmp_path: Path,
) -> None:
    with Fleet.generate(meters=8, buses=2, time_scale=0.1, seed=22) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=EXTRA)
        world.import_fleet()
        meters = [fleet.meter(a).meter_no for a in fleet.addresses]
        receiver = Receiver(refuse_first=2)  # the CIS is down for the first calls too
        first = Serve(world, 1)
        second: Serve | None = None
        try:
            _until("serve listening", first.hook_url, 30, [first])
            status, reply = call(
                base_url(first), "POST", "/cim/v1/EndDeviceControls",
                controls("off-k", OPEN, meters, receiver.url),
            )  # fmt: skip
            assert (status, reply["Reply"]["Result"]) == (200, "OK")
            signed_in = int(time.time())  # the second of the first call's timestamp, or later
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(30)

            second = Serve(world, 2)
            _until("serve listening", second.hook_url, 30, [second])
            # The client's retry is signed afresh: in the same second, the same body would
            # carry the same signature, which the shared replay guard rightly refuses.
            while int(time.time()) <= signed_in:
                time.sleep(0.05)
            # The MessageID is remembered across the restart: the same reply, nothing new.
            status, again = call(
                base_url(second), "POST", "/cim/v1/EndDeviceControls",
                controls("off-k", OPEN, meters, receiver.url),
            )  # fmt: skip
            assert (status, again) == (200, reply)

            events = _until(
                "every event after the kill",
                lambda: complete(receiver, "off-k", len(meters)),
                90,
                [first, second],
            )
            assert {e["status"]["value"] for e in by_meter(events).values()} == {"PROCESSED"}
            assert summary(events) == "SUCCESSFUL"
            for address in fleet.addresses:
                assert fleet.relay(address) is RelayState.OPEN
                trips = [e for e in fleet.events(address) if e.get("action") == "trip"]
                assert len(trips) == 1, address
            # At least once: a redelivered event is the same event with the same content.
            seen: dict[str, dict[str, Any]] = {}
            for event in receiver.events():
                assert seen.setdefault(event["mRID"], event) == event
            assert not receiver.bad
        finally:
            for s in (first, second):
                if s is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
                    s.proc.wait(30)
            receiver.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_one_message_posted_to_two_serve_processes_on_postgresql_is_taken_once(
    tmp_path: Path, postgres_db_url: str
) -> None:
    with Fleet.generate(meters=6, buses=2, time_scale=0.1, seed=23) as fleet:
        world = EngineWorld(tmp_path, fleet, db_url=postgres_db_url, extra_config=EXTRA)
        world.import_fleet()
        meters = [fleet.meter(a).meter_no for a in fleet.addresses]
        receiver = Receiver()
        servers = [Serve(world, n) for n in (1, 2)]
        try:
            _until("both listening", lambda: all(s.hook_url() for s in servers), 30, servers)
            doc = controls("twice", OPEN, meters, receiver.url)
            answers: list[tuple[int, Any]] = []
            # Two posts of the message, each signed on its own (the same signed request sent
            # twice is a replay, refused by both processes: the replay memory is shared).
            threads = [
                threading.Thread(
                    target=lambda s=s, n=n: answers.append(
                        call(base_url(s), "POST", "/cim/v1/EndDeviceControls", doc, ago_s=n)
                    )
                )
                for n, s in enumerate(servers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert [status for status, _ in answers] == [200, 200]
            assert answers[0][1] == answers[1][1]
            events = _until(
                "every event", lambda: complete(receiver, "twice", len(meters)), 90, servers
            )
            assert summary(events) == "SUCCESSFUL"
            with world.engine.connect() as conn:
                taken = conn.execute(select(func.count()).select_from(API_MESSAGES)).scalar_one()
                orders = conn.execute(select(func.count()).select_from(SWITCH_ORDERS)).scalar_one()
            assert (taken, orders) == (1, len(meters))
            for address in fleet.addresses:
                trips = [e for e in fleet.events(address) if e.get("action") == "trip"]
                assert len(trips) == 1, address
        finally:
            for s in servers:
                if s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
                    s.proc.wait(30)
            receiver.close()


@pytest.mark.slow
def test_a_scheduled_control_is_held_across_a_sigkill_and_one_that_ended_expires(
    tmp_path: Path,
) -> None:
    """A control with a future start waits for it in the database (not in the process that
    took it): killed and restarted, serve carries it out after its start; a control whose
    end passed while no serve ran ends EXPIRED, its meter untouched."""
    with Fleet.generate(meters=4, buses=2, time_scale=0.1, seed=23) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=EXTRA)
        world.import_fleet()
        meters = [fleet.meter(a).meter_no for a in fleet.addresses]
        receiver = Receiver()
        first = Serve(world, 1)
        second: Serve | None = None
        try:
            _until("serve listening", first.hook_url, 30, [first])
            now = datetime.now(UTC)
            doc = controls("later-1", OPEN, meters[:2], receiver.url)
            held = doc["Payload"]["EndDeviceControls"][0]
            held["scheduledInterval"] = {"start": (now + timedelta(seconds=6)).isoformat()}
            doc["Payload"]["EndDeviceControls"].append(
                {"mRID": "ctl-short", "EndDeviceControlType": {"ref": OPEN},
                 "EndDevices": [{"mRID": meters[2]}],
                 "scheduledInterval": {"start": (now + timedelta(seconds=5)).isoformat(),
                                       "end": (now + timedelta(seconds=7)).isoformat()}}
            )  # fmt: skip
            status, reply = call(base_url(first), "POST", "/cim/v1/EndDeviceControls", doc)
            assert (status, reply["Reply"]) == (200, {"Result": "OK", "Error": []})
            time.sleep(1.0)
            status, state = call(base_url(first), "GET", "/cim/v1/EndDeviceControls/later-1")
            assert [d["stage"] for d in state["EndDevices"]] == ["accepted"] * 3
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(30)
            assert all(fleet.relay(a) is RelayState.CLOSED for a in fleet.addresses[:3])
            time.sleep(max(0.0, (now + timedelta(seconds=8) - datetime.now(UTC)).total_seconds()))

            second = Serve(world, 2)
            _until("serve listening", second.hook_url, 30, [second])
            events = _until(
                "every event", lambda: complete(receiver, "later-1", 3), 60, [first, second]
            )
            got = by_meter(events)
            for address, meter in zip(fleet.addresses[:2], meters[:2], strict=True):
                assert got[meter]["status"]["value"] == "PROCESSED"
                assert fleet.relay(address) is RelayState.OPEN
            assert got[meters[2]]["status"]["value"] == "EXPIRED"
            assert "scheduledInterval.end" in got[meters[2]]["reason"]
            assert fleet.relay(fleet.addresses[2]) is RelayState.CLOSED
            assert summary(events) == "PARTIAL_SUCCESS"
            assert not receiver.bad
        finally:
            for s in (first, second):
                if s is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
                    s.proc.wait(30)
            receiver.close()
