"""Fixtures shared across the test packages.

``postgres_url``: a PostgreSQL server for the whole session. ``METERCTL_TEST_POSTGRES_URL``
wins when set; otherwise, when the machine has PostgreSQL binaries
(``/usr/lib/postgresql/*/bin/initdb``), a throw-away cluster is started in a temporary folder
(about a second) and removed at the end. Without either, tests that need it are skipped.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

POSTGRES_ENV = "METERCTL_TEST_POSTGRES_URL"

# The suite asserts English text unless a test asks for Chinese (--lang zh-CN, or LANG in a
# subprocess's own environment): a developer's zh_CN locale must not change the answers.
for _variable in ("LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_variable, None)
os.environ["LANG"] = "C.UTF-8"

# Hypothesis times its examples on the wall clock. On a CI machine shared with other jobs
# (two cores, a PostgreSQL server and a simulator next to the suite) a slow moment made the
# data generation look "too slow" and the per-example deadline fire, failing tests whose
# property held: what the suite checks is the property, not the machine's speed, which the
# benchmarks measure.
settings.register_profile("meterctl", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("meterctl")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Take what is imported and collected out of the cycle collector's sight.

    A full collection walks every tracked object; with the libraries and the collected tests
    that is a few hundred thousand, about half a second on a slow CI machine, and a test's
    event loop stands still meanwhile (a 1 s connect timeout to 127.0.0.1 once fired). Frozen
    objects are never collected, so the pass covers only what the tests create.
    """
    gc.collect()
    gc.freeze()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server as the postgres user then.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql+psycopg://`` URL of a server the tests may create databases on."""
    given = os.environ.get(POSTGRES_ENV)
    if given:
        yield given
        return
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.skip(f"no PostgreSQL: install it or set {POSTGRES_ENV}")
    bindir = Path(initdbs[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="meterctl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(folder / "log"),
                    "-w",
                    "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not start a throw-away PostgreSQL: {exc} {detail.decode()[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _forget_control_forwarding() -> Iterator[None]:
    """Concentrators that denied F10/F11 are remembered per process: not across tests."""
    from protocols.links.concentrator import forget_control_forwarding

    forget_control_forwarding()
    yield
    forget_control_forwarding()


@pytest.fixture(autouse=True)
def _english_after_each_test() -> Iterator[None]:
    """A command run with --lang zh-CN sets the process's language: not for the next test."""
    from base import i18n

    yield
    i18n.set_language("en")
