"""The report's three formats, all from the same figures document.

- JSON: the document itself (keys :data:`engine.reports.figures.REPORT_KEYS`), one object.
- CSV: one long table ``figure,key,measure,value`` holding every figure (one file that any
  spreadsheet opens and that stays one table however many stations or days there are).
  ``figure`` is a top-level key (``per_day``, ``reconnection_times``...), ``key`` the row
  within it (a day, a reason code, a station, an order id), ``measure`` the column, e.g.
  ``per_day,2024-05-01,disconnections,12``.
- HTML: :func:`engine.reports.html.render_html`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

CSV_HEADER = ("figure", "key", "measure", "value")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(doc: dict[str, Any]) -> str:
    """The document as pretty JSON (UTF-8 text, keys in document order)."""
    return json.dumps(doc, default=_json_default, ensure_ascii=False, indent=2) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def csv_rows(doc: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """Every figure as ``(figure, key, measure, value)`` rows, in document order."""
    for measure, value in doc["period"].items():
        yield "period", "", measure, _cell(value)
    for measure, value in doc["totals"].items():
        yield "totals", "", measure, _cell(value)
    for row in doc["per_day"]:
        for measure, value in row.items():
            if measure != "day":
                yield "per_day", row["day"], measure, _cell(value)
    times = doc["reconnection_times"]
    for measure, value in times.items():
        if measure not in ("buckets", "items"):
            yield "reconnection_times", "", measure, _cell(value)
    for bucket in times["buckets"]:
        yield "reconnection_buckets", bucket["label"], "count", _cell(bucket["count"])
    for item in times["items"]:
        for measure, value in item.items():
            if measure != "order_id":
                yield "reconnections", str(item["order_id"]), measure, _cell(value)
    blocked = doc["blocked_by_reason"]
    for code, n in blocked["orders"].items():
        yield "blocked_by_reason", code, "orders", _cell(n)
    for code, n in blocked["accounts_now"].items():
        yield "blocked_by_reason", code, "accounts_now", _cell(n)
    for cause, n in doc["field_orders_by_cause"].items():
        yield "field_orders_by_cause", cause, "field_orders", _cell(n)
    for item in doc["field_orders_cancelled"]:
        for measure in ("account_no", "cause", "status", "cancelled_at", "reason"):
            yield "field_orders_cancelled", str(item["id"]), measure, _cell(item[measure])
    for row in doc["per_station"]:
        for measure, value in row.items():
            if measure != "station":
                yield "per_station", row["station"], measure, _cell(value)
    for row in doc["important_timeline"]:
        key = str(row["order_id"])
        for measure in ("account_no", "station", "state", "notice_time", "overdue"):
            yield "important_timeline", key, measure, _cell(row[measure])
        for step in row["steps"]:
            for measure in ("due", "done", "status", "late_minutes"):
                yield "important_timeline", key, f"{step['step']}_{measure}", _cell(step[measure])
    for item in doc["overdue"]:
        key = f"{item['order_id']}:{item['what']}"
        for measure, value in item.items():
            if measure not in ("order_id", "what"):
                yield "overdue", key, measure, _cell(value)
    survey = doc.get("survey")
    if survey:
        for measure in (
            "survey",
            "started_at",
            "finished_at",
            "surveyed",
            "ok",
            "problem",
            "silent",
        ):
            yield "survey", "", measure, _cell(survey[measure])
        for code, n in survey["by_problem"].items():
            yield "survey_problems", code, "meters", _cell(n)
        for item in survey["meters"]:
            yield "survey_meters", item["meter_address"], "problems", ";".join(item["problems"])
    work = doc["field_work"]
    for part in ("orders", "follow_ups", "complaints"):
        for measure, value in work[part].items():
            yield f"field_work_{part}", "", measure, _cell(value)
    for item in work["overdue"]:
        for measure, value in item.items():
            if measure != "field_order_id":
                yield "field_work_overdue", str(item["field_order_id"]), measure, _cell(value)


def to_csv(doc: dict[str, Any]) -> str:
    """The document as one long CSV table (:data:`CSV_HEADER`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(doc))
    return out.getvalue()
