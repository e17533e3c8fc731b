"""The operations view: figures computed from the store, and their formats.

- :mod:`engine.reports.period`: site-local days of a report;
- :mod:`engine.reports.history`: what happened in a period, read from the store;
- :mod:`engine.reports.figures`: the report document (pure);
- :mod:`engine.reports.charts`: matplotlib charts as inline SVG;
- :mod:`engine.reports.html` / :mod:`engine.reports.writers`: HTML, CSV and JSON;
- :mod:`engine.reports.status`: the live snapshot of ``meterctl status``.

The screening lists of ``meterctl exceptions`` live in :mod:`engine.screening`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from engine.config import Config
from engine.reports.figures import REPORT_KEYS, compute_figures
from engine.reports.history import load_history
from engine.reports.period import Period, parse_day
from engine.screening import blocked_now_by_reason
from engine.survey import survey_report

FORMATS = ("html", "csv", "json")


def build_report(
    engine: Engine, config: Config, period: Period, *, now: datetime
) -> dict[str, Any]:
    """The report document for ``period`` (keys :data:`REPORT_KEYS`, plus ``survey``: the
    newest read-only survey's findings, :func:`engine.survey.survey_report`, or None)."""
    history = load_history(
        engine, config, period, now=now, blocked_now=blocked_now_by_reason(engine, config, now=now)
    )
    doc = compute_figures(history)
    doc["survey"] = survey_report(engine)
    return doc


def render(doc: dict[str, Any], fmt: str) -> str:
    """The document in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        from engine.reports.writers import to_json

        return to_json(doc)
    if fmt == "csv":
        from engine.reports.writers import to_csv

        return to_csv(doc)
    from engine.reports.html import render_html  # matplotlib is only loaded for HTML

    return render_html(doc)


__all__ = ["FORMATS", "REPORT_KEYS", "Period", "build_report", "parse_day", "render"]
