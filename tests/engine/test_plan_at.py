"""``batch plan --at TIME``: the plan as of any moment, the window judged at execution time.

The days a utility would check before a campaign: National Day, a 调休 Saturday, the eve of
Spring Festival after the cut-off, the window's closing minute, and an important customer
whose T+15 falls after the window closes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from engine.db import transaction
from engine.db.models import Notice
from tests.engine.store_helpers import Cli, add_account, cli  # noqa: F401


def _setup(cli: Cli, at: str) -> None:  # noqa: F811
    """Two accounts in arrears whose notices were delivered eight days before ``at``."""
    delivered = datetime.fromisoformat(at) - timedelta(days=8)
    with cli.config.open("a", encoding="utf-8") as config:  # important customers need 抄报
        config.write('[policy.important]\nauthority_recipients = ["county-power-admin"]\n')
    assert cli("ada", "db", "init").exit_code == 0
    engine = cli.engine()
    add_account(engine, "A1", balance="-50")
    add_account(engine, "VIP", balance="-80", customer_class="important")
    with transaction(engine) as session:
        for account_no in ("A1", "VIP"):
            session.add(
                Notice(
                    account_no=account_no,
                    issued_at=delivered - timedelta(days=1),
                    delivered_at=delivered,
                )
            )


def _plan(cli: Cli, at: str) -> dict[str, Any]:  # noqa: F811
    doc = cli.json("olga", "batch", "plan", "--at", at)
    assert doc["as_of_given"] is True
    return {d["account_no"]: d for d in doc["decisions"]}


def _window(decision: dict[str, Any]) -> dict[str, Any]:
    (reason,) = [r for r in decision["reasons"] if r["rule"] == "window"]
    return reason


def test_national_day_blocks_until_the_run_ends(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-10-01T10:00+08:00")
    a1 = _plan(cli, "2026-10-01T10:00+08:00")["A1"]
    assert a1["outcome"] == "blocked"
    window = _window(a1)
    assert window["code"] == "outside_window"
    assert "public holiday (国庆节 National Day" in window["message"]
    assert window["not_before"] == "2026-10-08T00:00:00+00:00"  # Thursday 08:00 in Shanghai


def test_makeup_saturday_is_open(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-10-10T10:00+08:00")
    a1 = _plan(cli, "2026-10-10T10:00+08:00")["A1"]
    assert a1["outcome"] == "disconnect"
    assert "make-up working day (调休" in _window(a1)["message"]


def test_spring_festival_eve_after_the_cutoff(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-02-14T09:00+08:00")
    # Saturday 2026-02-14 is the 调休 working day before the Spring Festival run.
    assert _plan(cli, "2026-02-14T09:00+08:00")["A1"]["outcome"] == "disconnect"
    late = _plan(cli, "2026-02-14T13:00+08:00")["A1"]
    assert late["outcome"] == "blocked"
    assert "working day before a public holiday" in _window(late)["message"]


def test_across_the_closing_minute(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-06-02T15:50+08:00")
    # The window closes at 16:00; a command sent at 15:50 stays valid 5 minutes: fits.
    assert _plan(cli, "2026-06-02T15:50+08:00")["A1"]["outcome"] == "disconnect"
    # At 15:57 it could still execute at 16:02: held to the next opening, and said so.
    held = _plan(cli, "2026-06-02T15:57+08:00")["A1"]
    assert held["outcome"] == "schedule"
    window = _window(held)
    assert window["code"] == "held_to_window"
    assert "held to the next opening, 2026-06-03 08:00" in window["message"]
    assert window["not_before"] == "2026-06-03T00:00:00+00:00"


def test_important_customer_whose_t_plus_15_is_after_closing(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-06-02T15:00+08:00")
    # At 15:00 the T+15 execution (15:30) is inside: scheduled, window allows.
    early = _plan(cli, "2026-06-02T15:00+08:00")["VIP"]
    assert early["outcome"] == "schedule"
    assert _window(early)["code"] == "inside_window"
    # At 15:40 a timeline starting now would execute at 16:10, after closing: it is not
    # executed at T+15 but planned inside the next open stretch (08:00 warning, 08:15 T,
    # 08:30 execution), and the window judged at that execution is open.
    late = _plan(cli, "2026-06-02T15:40+08:00")["VIP"]
    assert late["outcome"] == "schedule"
    (important,) = [r for r in late["reasons"] if r["rule"] == "important"]
    assert important["not_before"] == "2026-06-03T00:30:00+00:00"
    assert _window(late)["code"] == "inside_window"


def test_at_must_be_a_time(cli: Cli) -> None:  # noqa: F811
    _setup(cli, "2026-06-02T10:00+08:00")
    result = cli("olga", "batch", "plan", "--at", "tomorrow")
    assert result.exit_code == 2
    assert "--at" in result.stderr and "Traceback" not in result.output
