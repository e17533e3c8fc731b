"""Integration API benchmark: one EndDeviceControls message of 10,000 devices against serve.

The 2,000-meter simulator of the dispatch benchmark (100 buses at 2400 baud, its own
process) and a real ``meterctl serve`` (its own process). A CIS client (this script) posts
one signed message naming 10,000 devices: every meter five times (five controls of 2,000
devices, as a billing system that sends the same list in several controls would), so the
engine de-duplicates them into one disconnection per meter, 2,000 orders, the dispatch
benchmark's work. A receiver on 127.0.0.1 checks each callback's signature and notes when
each event arrived.

Figures: ``reply_s`` (the synchronous answer; goal under 1 s), ``last_callback_s`` (from the
post to the last device event) against ``bus_limit_s`` (the busiest bus's own wire and reply
time in this run, as in benchmarks/dispatch.py; goal ``ratio`` <= 1.2), and
``callback_latency_s`` (from an order's verification, its ``updated_at``, to its event's
arrival; goal p99 under 1 s).

Usage::

    .venv/bin/python benchmarks/api.py [--meters 2000] [--buses 100] [--devices 10000]

Progress goes to stderr; the figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dispatch import BAUD, _busy, _write_accounts
from support import ROOT, Simulator, database, db_kind, emit, free_port, log, machine, write_config

KEY = "bench-cis-key"
EXTRA = """
[hooks]
payment_key = "bench-pay-key"
listen = "127.0.0.1:{port}"
[api.clients.cis]
key = "{key}"
role = "operator"
[scheduler]
sweep_times = []
[logging]
level = "WARNING"
"""


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.bad = 0
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.time()
                stamp = self.headers.get("X-Meterctl-Timestamp", "")
                expected = (
                    "sha256="
                    + hmac.new(
                        KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                ok = hmac.compare_digest(self.headers.get("X-Meterctl-Signature", ""), expected)
                with receiver.lock:
                    receiver.calls += 1
                    if not ok:
                        receiver.bad += 1
                    else:
                        for event in json.loads(body)["Payload"]["EndDeviceEvents"]:
                            receiver.arrived.setdefault(event["mRID"], (at, event))
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.arrived)


def _post(url: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    body = json.dumps(doc).encode()
    stamp = str(int(time.time()))
    signature = (
        "sha256=" + hmac.new(KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Meterctl-Client": "cis",
                 "X-Meterctl-Timestamp": stamp, "X-Meterctl-Signature": signature},
    )  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:
        reply = json.loads(answer.read())
        return answer.status, reply, time.perf_counter() - started


def _import(config_path: Path, accounts: Path) -> None:
    from engine.config import load_config
    from engine.db import engine_from_config, init_db
    from engine.importer import import_accounts

    config = load_config(config_path)
    engine = engine_from_config(config)
    init_db(engine)
    import_accounts(engine, accounts, actor="bench", now=datetime.now(UTC), tz=config.site.tz)
    engine.dispose()


def _commands_sent(config_path: Path) -> tuple[float, float]:
    """When the first and the last command went out (unix seconds)."""
    from sqlalchemy import func, select

    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.db.models import COMMAND_ATTEMPTS

    engine = engine_from_config(load_config(config_path))
    with engine.connect() as conn:
        first, last = conn.execute(
            select(func.min(COMMAND_ATTEMPTS.c.sent_at), func.max(COMMAND_ATTEMPTS.c.sent_at))
        ).one()
    engine.dispose()
    return first.timestamp(), last.timestamp()


def _verified_at(config_path: Path) -> dict[str, float]:
    """meter number → when its order was verified (the order's last update)."""
    from sqlalchemy import select

    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.db.models import METERS, SWITCH_ORDERS

    engine = engine_from_config(load_config(config_path))
    with engine.connect() as conn:
        rows = conn.execute(
            select(METERS.c.meter_no, SWITCH_ORDERS.c.updated_at)
            .join(SWITCH_ORDERS, SWITCH_ORDERS.c.meter_id == METERS.c.id)
            .where(SWITCH_ORDERS.c.state == "verified")
        ).all()
    engine.dispose()
    return {str(m): at.timestamp() for m, at in rows}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def bench(meters: int, buses: int, devices: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-api-") as tmp:
        folder = Path(tmp)
        with database(None, folder) as url:
            port = free_port()
            config_path = write_config(folder, url, EXTRA.format(port=port, key=KEY))
            log(f"starting the simulator: {meters} meters on {buses} buses")
            with Simulator(
                folder, "--meters", str(meters), "--buses", str(buses), "--time-scale", "1",
                "--baud", str(BAUD), "--seed", str(seed), config=config_path,
            ) as sim:  # fmt: skip
                accounts = folder / "accounts.csv"
                _write_accounts(sim, accounts)
                _import(config_path, accounts)
                numbers = [m["meter_no"] for m in sim.meters()]
                receiver = Receiver()
                stderr = (folder / "serve.log").open("wb")
                serve = subprocess.Popen(
                    [sys.executable, "-m", "interfaces.cli.main", "--config", str(config_path),
                     "serve", "--no-json-logs"],
                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    api = f"http://127.0.0.1:{port}/cim/v1/EndDeviceControls"
                    _wait_listening(port, serve)
                    time.sleep(2.0)  # serve takes the scheduler lead (it delivers callbacks)
                    per_control = max(1, len(numbers))
                    refs = [numbers[i % len(numbers)] for i in range(devices)]
                    doc = {
                        "Header": {"Verb": "create", "Noun": "EndDeviceControls",
                                   "MessageID": "bench-1", "ReplyAddress": receiver.url},
                        "Payload": {"EndDeviceControls": [
                            {"mRID": f"ctl-{n}", "EndDeviceControlType": {"ref": "3.31.0.23"},
                             "EndDevices": [{"mRID": m} for m in refs[i:i + per_control]]}
                            for n, i in enumerate(range(0, devices, per_control))
                        ]},
                    }  # fmt: skip
                    stats_before = sim.bus_stats()
                    posted = time.time()
                    status, reply, reply_s = _post(api, doc)
                    log(f"reply {status} {reply['Reply']['Result']} in {reply_s:.3f} s")
                    deadline = time.monotonic() + 1800
                    while receiver.count() < devices + 1:
                        if time.monotonic() > deadline or serve.poll() is not None:
                            raise RuntimeError(f"callbacks incomplete: {receiver.count()}")
                        time.sleep(0.1)
                    per_bus = _busy(stats_before, sim.bus_stats())
                    relays = Counter(m["relay"] for m in sim.meters())
                finally:
                    serve.terminate()
                    serve.wait(60)
                    stderr.close()
                verified = _verified_at(config_path)
                first_command, last_command = _commands_sent(config_path)
    arrivals = {
        e["EndDevice"]["mRID"]: at
        for at, e in receiver.arrived.values()
        if "EndDevice" in e and e["status"]["value"] == "PROCESSED"
    }
    device_events = [(at, e) for at, e in receiver.arrived.values() if "EndDevice" in e]
    last = max(at for at, _ in device_events)
    latencies = [arrivals[m] - verified[m] for m in arrivals if m in verified]
    busiest = max(per_bus, key=lambda b: per_bus[b]["busy_s"])
    limit = per_bus[busiest]["busy_s"]
    statuses = Counter(e["status"]["value"] for _, e in device_events)
    figures: dict[str, Any] = {
        "devices": devices,
        "meters": meters,
        "buses": buses,
        "db": db_kind(url),
        "reply_s": round(reply_s, 3),
        "reply_result": reply["Reply"]["Result"],
        "last_callback_s": round(last - posted, 3),
        "bus_limit_s": round(limit, 3),
        "ratio": round((last - posted) / limit, 3),
        # From the post to the first and to the last command sent to a meter.
        "commands_sent_s": [round(first_command - posted, 3), round(last_command - posted, 3)],
        "callback_latency_s": {
            "p50": round(_quantile(latencies, 0.5), 3),
            "p99": round(_quantile(latencies, 0.99), 3),
            "max": round(max(latencies, default=0.0), 3),
        },
        "event_statuses": dict(statuses),
        "callback_posts": receiver.calls,
        "bad_signatures": receiver.bad,
        "meter_relays": dict(relays),
        "machine": machine(),
    }
    log(f"{devices} devices: reply {reply_s:.3f} s; last callback {last - posted:.2f} s against "
        f"the bus limit {limit:.2f} s (ratio {figures['ratio']}); callback p99 "
        f"{figures['callback_latency_s']['p99']} s")  # fmt: skip
    return figures


def _wait_listening(port: int, serve: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError("serve exited before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("serve did not listen in 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    emit(bench(args.meters, args.buses, args.devices, args.seed))


if __name__ == "__main__":
    main()
