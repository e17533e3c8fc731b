#!/usr/bin/env python3
"""DL/T 645 codec throughput: meterctl against the PyPI packages ``dlt645`` and ``python-dlt645``.

Usage::

    .venv/bin/python benchmarks/codec.py [--repeats 7] [--cache DIR] [--no-peers]

Both peers install the same top-level module ``dlt645``, so each gets its own venv under
``~/.cache/meterctl-bench/`` (or ``$METERCTL_BENCH_CACHE`` / ``--cache``), created on first
use with ``python3 -m venv`` + pip. Every implementation, ours included, is measured in its
own subprocess with the same code: ``timeit.Timer(op).autorange()`` (at least 0.2 s) repeated
``--repeats`` times, median time per operation. Before timing, each operation's output is
checked against the reference vectors (meter 123456789012, DI 00010000, 123456.78 kWh), so
a broken codec cannot look fast.

Operations: encode read request, decode read request, encode read reply, decode read reply,
decode a reply with 4 x FEH through each library's stream API.

Progress goes to stderr; the last stdout line is one JSON object with ``ratio_vs_best_peer``
(the smallest, over the operations, of our speed / the faster peer's speed) and per-op
figures. A peer that cannot be installed is reported in ``peers`` and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS = {"dlt645": "dlt645==3.2.0", "python-dlt645": "python-dlt645==0.1.4"}
OPERATIONS = (
    "encode_read_request",
    "decode_read_request",
    "encode_read_reply",
    "decode_read_reply",
    "decode_reply_4fe_stream",
)

# Runs inside each interpreter: argv[1] = implementation. Prints {op: seconds per op} for one
# timeit autorange of each op (None when the op's output is wrong).
RUNNER = r'''
import io, json, struct, sys, timeit

IMPL = sys.argv[1]
ADDRESS, DI = "123456789012", 0x00010000
VALUE = bytes.fromhex("78563412")  # 123456.78 kWh, low byte first
REQ = bytes.fromhex("68129078563412681104333334336816")
REP = bytes.fromhex("6812907856341268910833333433AB896745CC16")
REP_FE = b"\xfe" * 4 + REP


def check(op, out):
    """Encoders must give the reference bytes; decoders the address and DI."""
    if op.startswith("encode"):
        return bytes(out) == (REQ if "request" in op else REP)
    frame = out[0] if isinstance(out, list) else out
    if hasattr(frame, "di"):
        return frame.address == ADDRESS and frame.di == DI
    return frame.address == ADDRESS and frame.data[:4] == DI.to_bytes(4, "little")


if IMPL == "meterctl":
    from protocols.dlt645.deframer import Deframer
    from protocols.dlt645.frame import decode_frame, encode_frame

    deframer = Deframer()
    di_bytes = DI.to_bytes(4, "little")
    # The frame layer does the same work as the peers' codecs (address, control, data bytes).
    ops = {
        "encode_read_request": lambda: encode_frame(ADDRESS, 0x11, di_bytes),
        "decode_read_request": lambda: decode_frame(REQ),
        "encode_read_reply": lambda: encode_frame(ADDRESS, 0x91, di_bytes + VALUE),
        "decode_read_reply": lambda: decode_frame(REP),
        "decode_reply_4fe_stream": lambda: deframer.feed(REP_FE),
    }

elif IMPL == "meterctl-typed":
    from protocols.dlt645.deframer import Deframer
    from protocols.dlt645.frame import decode_frame
    from protocols.dlt645.decoding import decode_message
    from protocols.dlt645.messages import ReadReply, ReadRequest

    deframer = Deframer()
    # More work than the peers do: typed messages (DI as an int, reply fields) both ways.
    ops = {
        "encode_read_request": lambda: ReadRequest(ADDRESS, DI).to_frame().encode(),
        "decode_read_request": lambda: decode_message(decode_frame(REQ)),
        "encode_read_reply": lambda: ReadReply(ADDRESS, DI, VALUE).to_frame().encode(),
        "decode_read_reply": lambda: decode_message(decode_frame(REP)),
        "decode_reply_4fe_stream": lambda: [decode_message(f) for f in deframer.feed(REP_FE)],
    }

elif IMPL == "dlt645":
    from dlt645.protocol.protocol import DLT645Protocol as P

    addr = bytes.fromhex(ADDRESS)[::-1]  # its client converts the address once, too
    ops = {
        "encode_read_request": lambda: P.build_frame(addr, 0x11, struct.pack("<I", DI), 0),
        "decode_read_request": lambda: P.deserialize(REQ),
        "encode_read_reply": lambda: P.build_frame(addr, 0x91, struct.pack("<I", DI) + VALUE, 0),
        "decode_read_reply": lambda: P.deserialize(REP),
        "decode_reply_4fe_stream": lambda: P.deserialize_with_remaining(REP_FE),
    }

    def check(op, out):
        if op.startswith("encode"):
            return bytes(out) == (REQ if "request" in op else REP)
        frame = out[1] if isinstance(out, tuple) else out
        return bytes(frame.addr) == addr and bytes(frame.data[:4]) == struct.pack("<I", DI)

elif IMPL == "python-dlt645":
    import dlt645

    reply_control = {"direction": 1, "response": 0, "more": 0, "function": 0x11}

    def enc_req():
        f = dlt645.Frame(ADDRESS)
        f.data = "00010000"
        return f.dump()

    def enc_rep():
        f = dlt645.Frame(ADDRESS, control=reply_control)
        f.data = "12345678" + "00010000"
        return f.dump()

    def load(raw):
        f = dlt645.Frame()
        f.load(bytearray(raw))
        return f

    ops = {
        "encode_read_request": enc_req,
        "decode_read_request": lambda: load(REQ),
        "encode_read_reply": enc_rep,
        "decode_read_reply": lambda: load(REP),
        "decode_reply_4fe_stream": lambda: dlt645.read_frame(dlt645.iogen(io.BytesIO(REP_FE))),
    }

    def check(op, out):
        if op.startswith("encode"):
            return bytes(out) == (REQ if "request" in op else REP)
        return out.addr == ADDRESS and out.data.endswith("00010000")

else:
    raise SystemExit(f"unknown implementation {IMPL}")

result = {}
for name, fn in ops.items():
    if not check(name, fn()):
        result[name] = None  # wrong output: not timed
        continue
    number, seconds = timeit.Timer(fn).autorange()
    result[name] = seconds / number
print(json.dumps(result))
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peer_python(name: str, spec: str, cache: Path) -> tuple[Path | None, str]:
    """The peer's venv interpreter (created on demand) and its status text."""
    env_dir = cache / name
    python = env_dir / "bin" / "python"
    marker = env_dir / ".installed"
    if marker.exists() and marker.read_text().strip() == spec and python.exists():
        return python, spec
    log(f"setting up {spec} in {env_dir} ...")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", spec],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"unavailable: {detail.strip().splitlines()[-1] if detail else exc}"
    marker.write_text(spec)
    return python, spec


def run_round(python: Path, impl: str, cwd: Path) -> dict[str, float | None]:
    """One subprocess: every op of ``impl`` timed once (one autorange)."""
    env = dict(os.environ)
    if impl.startswith("meterctl"):
        env["PYTHONPATH"] = str(REPO)
    run = subprocess.run(
        [str(python), "-c", RUNNER, impl],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{impl} benchmark failed: {run.stderr.strip()[-500:]}")
    data: dict[str, float | None] = json.loads(run.stdout.strip().splitlines()[-1])
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("METERCTL_BENCH_CACHE", "~/.cache/meterctl-bench")),
    )
    parser.add_argument("--no-peers", action="store_true", help="measure meterctl only")
    args = parser.parse_args()
    cache: Path = args.cache.expanduser()
    cache.mkdir(parents=True, exist_ok=True)

    pythons: dict[str, tuple[Path, Path]] = {
        "meterctl": (Path(sys.executable), REPO),
        "meterctl-typed": (Path(sys.executable), REPO),
    }
    peers: dict[str, str] = {}
    if not args.no_peers:
        for name, spec in PEERS.items():
            python, status = peer_python(name, spec, cache)
            peers[name] = status
            if python is None:
                log(f"skipping {name}: {status}")
            else:
                pythons[name] = (python, cache)

    # Rounds interleave the implementations, so background load hits all of them alike.
    samples: dict[str, dict[str, list[float]]] = {impl: {} for impl in pythons}
    failed: set[str] = set()
    for round_no in range(1, args.repeats + 1):
        for impl, (python, cwd) in pythons.items():
            if impl in failed:
                continue
            try:
                timings = run_round(python, impl, cwd)
            except RuntimeError as exc:
                log(str(exc))
                failed.add(impl)
                if impl in peers:
                    peers[impl] = f"failed: {exc}"
                continue
            for op, seconds in timings.items():
                if seconds is not None:
                    samples[impl].setdefault(op, []).append(seconds)
            shown = ", ".join(
                f"{op.split('_', 1)[0][:3]} {1 / t:,.0f}/s" for op, t in timings.items() if t
            )
            log(f"round {round_no}/{args.repeats} {impl:14} {shown}")

    def speed(impl: str, op: str) -> int | None:
        times = samples.get(impl, {}).get(op)
        return round(1 / statistics.median(times)) if times else None

    operations: dict[str, Any] = {}
    ratios: list[float] = []
    for op in OPERATIONS:
        ours = speed("meterctl", op)
        row: dict[str, Any] = {"meterctl": ours, "meterctl_typed": speed("meterctl-typed", op)}
        best_name, best = None, 0
        for name in PEERS:
            value = speed(name, op)
            row[name] = value
            if value and value > best:
                best_name, best = name, value
        if ours and best:
            row["best_peer"] = best_name
            row["ratio"] = round(ours / best, 2)
            row["ratio_typed"] = round((row["meterctl_typed"] or 0) / best, 2)
            ratios.append(ours / best)
        operations[op] = row

    summary = {
        "benchmark": "codec",
        "ratio_vs_best_peer": round(min(ratios), 2) if ratios else None,
        "goal": 2.0,
        "unit": "operations per second (median)",
        "operations": operations,
        "peers": peers,
        "method": (
            f"timeit.autorange per op, {args.repeats} interleaved rounds, median; "
            "each implementation in its own subprocess; ratio = meterctl frame layer / best peer"
        ),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
