"""What a command means the relay should read (the state-mismatch screening's rule)."""

from __future__ import annotations

import pytest

from engine.screening import agrees, goal_of


@pytest.mark.parametrize(
    ("kind", "command", "goal"),
    [
        ("disconnect", "trip", "open"),
        ("reconnect", "direct_close", "closed"),
        ("reconnect", "close_allowed", "armed"),
        ("disconnect", None, "open"),
        ("reconnect", None, "closed"),
    ],
)
def test_goal_of_an_order(kind: str, command: str | None, goal: str) -> None:
    assert goal_of(kind, command) == goal


def test_read_states_that_satisfy_a_goal() -> None:
    assert agrees("open", "open") and agrees("open", "armed")
    assert not agrees("open", "closed")
    assert agrees("armed", "closed")  # 1BH: the customer pressed the button
    assert not agrees("closed", "open") and not agrees("closed", "armed")
