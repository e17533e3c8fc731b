"""Helpers shared by the benchmarks: logging to stderr, the machine, databases, the simulator.

- :func:`throwaway_postgres`: a PostgreSQL cluster in a temporary folder (the recipe of
  tests/conftest.py: ``initdb`` + ``pg_ctl`` as the ``postgres`` user when run as root),
  stopped and removed afterwards. ``fsync`` stays ON here (unlike the tests): a benchmark
  must pay for durable commits like production does.
- :func:`fresh_database`: a new, migrated database on a server (dropped afterwards).
- :class:`Simulator`: ``meterctl simulate`` in its own process (its CPU is not the engine's),
  with its ready document and control endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the final JSON line)."""
    print(message, file=sys.stderr, flush=True)


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's result: one JSON object on the last line of stdout."""
    print(json.dumps(figures, default=str), flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gb = round(int(first.split()[1]) / 2**20, 1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_measured(command: list[str], cwd: Path, what: str) -> tuple[float, float, float]:
    """Run ``command`` in its own process, its stdout thrown away: (wall seconds, its peak
    RSS in MB, its CPU seconds, user + system). Raises RuntimeError naming ``what`` with the
    end of its stderr when it fails. Its stderr goes to a file, not a pipe: a chatty command
    would otherwise block on a full pipe while we wait for it."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{what} failed: {tail}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # KiB on Linux


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), children excluded."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# -- PostgreSQL --------------------------------------------------------------------------------


_POSTMASTERS: dict[str, int] = {}  # server URL (without the database) -> postmaster pid


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def throwaway_postgres(*, durable: bool = True) -> Iterator[str]:
    """Start a PostgreSQL cluster in a temp folder; yield its admin URL; remove it after."""
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not initdbs:
        raise RuntimeError("no PostgreSQL binaries (apt-get install postgresql)")
    bindir = Path(initdbs[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="meterctl-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off"
    try:
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                 "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        subprocess.run(
            _as_postgres(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                 "-o", options, "start"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid_text = (data / "postmaster.pid").read_text().splitlines()[0]
            _POSTMASTERS[url.rsplit("/", 1)[0]] = int(pid_text)
        yield url
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _postmaster_of(url: str) -> int | None:
    """The server's postmaster pid, from its data directory (a server on this machine)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            folder = conn.exec_driver_sql("SHOW data_directory").scalar()
        engine.dispose()
        pid = int((Path(str(folder)) / "postmaster.pid").read_text().splitlines()[0])
    except Exception:  # another machine, no permission: the server's CPU is not reported
        return None
    _POSTMASTERS[url.rsplit("/", 1)[0]] = pid
    return pid


def postgres_cpu_s(url: str) -> float | None:
    """CPU seconds the server behind ``url`` used so far (None when it is not ours).

    The postmaster reaps its backends, so its ``children_*`` times hold the ended ones and the
    live backends are added one by one.
    """
    import psutil

    pid = _POSTMASTERS.get(url.rsplit("/", 1)[0]) or _postmaster_of(url)
    if pid is None:
        return None
    try:
        master = psutil.Process(pid)
        times = master.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in master.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        return None
    return float(total)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on ``server_url``'s server, migrated to head; dropped afterwards."""
    import sqlalchemy as sa

    from engine.db import init_db, make_engine

    name = f"meterctl_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    init_db(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def database(db_url: str | None, folder: Path) -> Iterator[str]:
    """SQLite in ``folder`` (migrated), or a fresh database on the server of ``db_url``."""
    if db_url is None or db_url.startswith("sqlite"):
        from engine.db import init_db, make_engine

        url = db_url or f"sqlite:///{folder / 'bench.db'}"
        engine = make_engine(url)
        init_db(engine)
        engine.dispose()
        yield url
        return
    with fresh_database(db_url) as url:
        yield url


def db_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


# -- the simulator -----------------------------------------------------------------------------


class Simulator:
    """``meterctl simulate`` as a separate process, with its ready document."""

    def __init__(self, folder: Path, *args: str, config: Path | None = None) -> None:
        self.ready = folder / "sim-ready.json"
        command = [sys.executable, "-m", "interfaces.cli.main"]
        if config is not None:
            command += ["--config", str(config)]
        command += ["simulate", *args, "--ready-file", str(self.ready)]
        self.command = command
        self.log = (folder / "simulator.log").open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the simulator exited: see {folder / 'simulator.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not become ready in 120 s")
            time.sleep(0.05)
        self.document: dict[str, Any] = json.loads(self.ready.read_text())
        self.control: str = self.document["control"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.control}{path}", timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.control}{path}",
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    def meters(self) -> list[dict[str, Any]]:
        return list(self.get("/meters")["meters"])

    def link_of(self) -> dict[str, str]:
        return {a: bus["link"] for bus in self.document["buses"] for a in bus["meters"]}

    def bus_stats(self) -> dict[str, dict[str, Any]]:
        return dict(self.get("/buses")["stats"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- configuration -----------------------------------------------------------------------------

BENCH_CONFIG = """
[site]
timezone = "Asia/Shanghai"
[database]
url = "{url}"
[policy.window]
weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
[policy.batch_limit]
max_share = 1.0
max_count = 1000000
[audit]
key = "bench-audit-key"
"""


def write_config(folder: Path, url: str, extra: str = "") -> Path:
    """A config whose window is always open (benchmarks run at any hour), else defaults."""
    path = folder / "meterctl.toml"
    path.write_text(BENCH_CONFIG.format(url=url) + extra, encoding="utf-8")
    return path
