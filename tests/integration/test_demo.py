"""`make demo` must never fail: the story runs (with instant bus timing) and checks itself."""

from __future__ import annotations

import io

from rich.console import Console

from interfaces.demo import run_demo


def test_demo_story_passes_every_check() -> None:
    out = io.StringIO()
    assert run_demo(Console(file=out, width=120), time_scale=0.0), out.getvalue()
    text = out.getvalue()
    assert "demo passed" in text
    assert "hash chain intact" in text
