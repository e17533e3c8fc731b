"""The HTML report: one self-contained file (inline CSS and SVG; no script, font or URL).

Utility networks are closed, so the page must open from a USB stick on a machine without
internet: nothing is fetched. Every chart sits above a table of the same numbers (the table
is what a supervisor copies into a spreadsheet; the chart is what they look at).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from base import i18n
from base.i18n import N_, _, local_time
from engine.reports.charts import CHART_TITLES, all_charts, chart_labels

CSS = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
       "Microsoft YaHei", "PingFang SC", "SimHei", sans-serif;
       margin: 24px auto; max-width: 980px; color: #1c2833; background: #fff; font-size: 14px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 2px solid #d5dbe1; padding-bottom: 3px; }
p.meta { color: #5d6d7e; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0; }
.card { border: 1px solid #d5dbe1; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 22px; }
.card.alert b { color: #c0392b; }
figure { margin: 6px 0; }
figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #d5dbe1; padding: 3px 8px; text-align: left; }
th { background: #f4f6f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.late, .missing { color: #c0392b; font-weight: bold; }
.on_time { color: #2c7a4b; }
details { margin: 4px 0 12px; }
footer { margin-top: 36px; color: #5d6d7e; font-size: 12px; }
"""

TOTAL_LABELS = {
    "disconnections": N_("disconnections verified"),
    "reconnections": N_("reconnections restored"),
    "reconnections_armed": N_("of which armed (1BH)"),
    "field_orders": N_("field orders"),
    "field_orders_cancelled": N_("field orders cancelled"),
    "blocked_orders": N_("orders blocked"),
    "cancelled_paid": N_("cancelled by payment"),
    "payments": N_("payments"),
    "overdue": N_("overdue items"),
}

# Enum values stay English in the JSON; people read them through these labels.
STEP_STATUS = {
    "on_time": N_("on time"),
    "late": N_("late"),
    "missing": N_("missing"),
    "pending": N_("pending"),
    "not_needed": N_("not needed"),
}
OVERDUE_WHAT = {
    "reconnection": N_("reconnection"),
    "important_warning": N_("important warning"),
    "important_instruction": N_("important instruction"),
    "important_execution": N_("important execution"),
}


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "<td>-</td>"
    if isinstance(value, bool):
        return "<td>" + (_("yes") if value else _("no")) + "</td>"
    if isinstance(value, int | float):
        return (
            f'<td class="num">{value:g}</td>'
            if isinstance(value, float)
            else f'<td class="num">{value}</td>'
        )
    return f"<td>{escape(str(value))}</td>"


def short(iso: str | None) -> str | None:
    """A site-local ISO time for people: ``2024-05-01 09:37`` (the offset is in the header)."""
    return local_time(iso) if iso else None


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str | None = None
) -> str:
    """An HTML table (escaped); ``empty`` is shown when there are no rows."""
    empty = _("none") if empty is None else empty
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    if not body:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _survey_section(survey: dict[str, Any] | None) -> str:
    """The newest read-only survey (``meterctl survey``): what would stop a campaign."""
    if not survey:
        return ""
    head = (
        "<p>"
        + escape(
            _(
                "Survey {survey} ({started}): {surveyed} meter(s), {ok} ok, {problem} with "
                "problems, {silent} silent."
            ).format(
                survey=survey["survey"],
                started=short(str(survey["started_at"])) or "",
                surveyed=survey["surveyed"],
                ok=survey["ok"],
                problem=survey["problem"],
                silent=survey["silent"],
            )
        )
        + "</p>"
    )
    rows = [
        (m["meter_address"], m["account_no"] or "-", m["bus"], ", ".join(m["problems"]))
        for m in survey["meters"]
    ]
    return (
        '<section id="survey"><h2>'
        + escape(_("Read-only survey before a campaign"))
        + "</h2>"
        + head
        + table(
            [_("meter"), _("account"), _("bus"), _("problems")],
            rows,
            empty=_("Nothing in the way."),
        )
        + "</section>"
    )


def _field_work_tables(doc: dict[str, Any]) -> str:
    work = doc["field_work"]
    orders, calls, complaints = work["orders"], work["follow_ups"], work["complaints"]
    return (
        (
            "<h3>"
            + escape(_("Field work: time limits, follow-up calls (回访), complaints (投诉)"))
            + "</h3>"
        )
        + table(
            [_("measure"), _("value")],
            [
                (_("field orders closed"), orders["closed"]),
                (_("within their time limit"), orders["within_limit"]),
                (_("within their time limit (%)"), orders["within_limit_pct"] or "-"),
                (_("open past their time limit now"), orders["open_overdue"]),
                (_("escalated (预警)"), orders["escalated"]),
                (_("escalated to supervisors (督办)"), orders["supervised"]),
                (_("follow-up calls recorded"), calls["recorded"]),
                (_("customers satisfied (%)"), calls["satisfaction_pct"] or "-"),
                (_("follow-up calls due, not made"), calls["due_not_made"]),
                (_("complaints opened"), complaints["opened"]),
                (_("complaints closed within their time limit"), complaints["closed_within_limit"]),
                (_("complaints per million customers"), complaints["per_million_customers"] or "-"),
            ],
            empty="",
        )
        + ("<h3>" + escape(_("Late field orders")) + "</h3>")
        + table(
            [
                _("field order"),
                _("account"),
                _("work"),
                _("due"),
                _("closed"),
                _("minutes late"),
                _("level"),
            ],
            [
                (
                    f["field_order_id"],
                    f["account_no"],
                    f["kind"] or "-",
                    short(f["due_at"]) or "-",
                    short(f["closed_at"]) or _("open"),
                    f["late_minutes"],
                    f["escalation_level"],
                )
                for f in work["overdue"]
            ],
            empty=_("No field order was late."),
        )
    )


def _section(name: str, svg: str, body: str) -> str:
    return (
        f'<section id="{name}"><h2>{escape(_(CHART_TITLES[name]))}</h2>'
        f"<figure>{svg}</figure>{body}</section>"
    )


def _status(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(_(STEP_STATUS.get(status, status)))}</span>'


def _timeline_table(doc: dict[str, Any]) -> str:
    rows = []
    for item in doc["important_timeline"]:
        cells = [f"<td>{escape(item['account_no'])}</td>", f"<td>{escape(item['state'])}</td>"]
        for step in item["steps"]:
            due, done = escape(short(step["due"]) or "-"), escape(short(step["done"]) or "-")
            cells.append(
                "<td>" + escape(_("due")) + f" {due}<br>" + escape(_("done")) + f" {done}<br>"
                f"{_status(step['status'])}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        return "<p>" + escape(_("No important-customer disconnection in this period.")) + "</p>"
    head = "".join(
        f"<th>{escape(_(h))}</th>"
        for h in (
            N_("account"),
            N_("order state"),
            N_("warning (T-15)"),
            N_("instruction (T)"),
            N_("execution (T+15)"),
        )
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(doc: dict[str, Any], *, title: str | None = None) -> str:
    """The whole report page for the figures document ``doc``, in the current language."""
    title = _("meterctl operations report") if title is None else title
    charts = all_charts(doc)
    period = doc["period"]
    totals = doc["totals"]
    cards = "".join(
        f'<div class="card{" alert" if key == "overdue" and value else ""}">'
        f"<b>{value}</b>{escape(_(TOTAL_LABELS[key]) if key in TOTAL_LABELS else key)}</div>"
        for key, value in totals.items()
    )
    times = doc["reconnection_times"]
    blocked = doc["blocked_by_reason"]
    codes = list(dict.fromkeys([*blocked["orders"], *blocked["accounts_now"]]))
    station_labels = chart_labels([r["station"] for r in doc["per_station"]])
    relabelled = any(k != v for k, v in station_labels.items())
    station_headers = [_("station"), *([_("chart label")] if relabelled else [])]
    sections = [
        _section(
            "per_day",
            charts["per_day"],
            ("<details><summary>" + escape(_("numbers per day")) + "</summary>")
            + table(
                [
                    _("day"),
                    _("disconnections"),
                    _("reconnections"),
                    _("field orders"),
                    _("blocked"),
                    _("payments"),
                ],
                [
                    (
                        r["day"],
                        r["disconnections"],
                        r["reconnections"],
                        r["field_orders"],
                        r["blocked"],
                        r["payments"],
                    )
                    for r in doc["per_day"]
                ],
            )
            + "</details>",
        ),
        _section(
            "reconnection_times",
            charts["reconnection_times"],
            "<p>"
            + escape(
                _(
                    "Promised limit: {limit} min ([dispatch] reconnect_deadline_minutes). "
                    "{count} reconnection(s): {within} within the limit, {over} over; "
                    "median {median} min, 90th percentile {p90} min."
                ).format(
                    limit=f"{times['limit_minutes']:g}",
                    count=times["count"],
                    within=times["within_limit"],
                    over=times["over_limit"],
                    median=_dash(times["median_minutes"]),
                    p90=_dash(times["p90_minutes"]),
                )
            )
            + "</p>"
            + ("<details><summary>" + escape(_("every reconnection")) + "</summary>")
            + table(
                [
                    _("order"),
                    _("account"),
                    _("station"),
                    _("from"),
                    _("paid / ordered"),
                    _("restored"),
                    _("state"),
                    _("minutes"),
                ],
                [
                    (
                        i["order_id"],
                        i["account_no"],
                        i["station"],
                        i["started_by"],
                        short(i["started_at"]),
                        short(i["restored_at"]),
                        i["state"],
                        i["minutes"],
                    )
                    for i in times["items"]
                ],
            )
            + "</details>",
        ),
        _section(
            "blocked_by_reason",
            charts["blocked_by_reason"],
            table(
                [
                    _("reason code"),
                    _("orders blocked at dispatch (period)"),
                    _("accounts in arrears blocked now ({time})").format(
                        time=short(blocked["as_of"])
                    ),
                ],
                [
                    (c, blocked["orders"].get(c, 0), blocked["accounts_now"].get(c, 0))
                    for c in codes
                ],
                empty=_("No order was blocked and no account in arrears is blocked."),
            ),
        ),
        _section(
            "field_orders_by_cause",
            charts["field_orders_by_cause"],
            table(
                [_("cause"), _("field orders")],
                list(doc["field_orders_by_cause"].items()),
                empty=_("No field order in this period."),
            )
            + ("<h3>" + escape(_("Cancelled field orders (do not carry out)")) + "</h3>")
            + table(
                [
                    _("field order"),
                    _("account"),
                    _("cause"),
                    _("status"),
                    _("cancelled at"),
                    _("why"),
                ],
                [
                    (
                        f["id"],
                        f["account_no"],
                        f["cause"],
                        f["status"],
                        short(f["cancelled_at"]) or "-",
                        f["reason"] or "",
                    )
                    for f in doc["field_orders_cancelled"]
                ],
                empty=_("No field order was cancelled."),
            )
            + _field_work_tables(doc),
        ),
        _section(
            "per_station",
            charts["per_station"],
            table(
                [
                    *station_headers,
                    _("disconnections"),
                    _("reconnections"),
                    _("field orders"),
                    _("blocked"),
                    _("payments"),
                    _("overdue"),
                    _("median reconnect min"),
                ],
                [
                    (
                        r["station"],
                        *([station_labels[r["station"]]] if relabelled else []),
                        r["disconnections"],
                        r["reconnections"],
                        r["field_orders"],
                        r["blocked"],
                        r["payments"],
                        r["overdue"],
                        r["median_reconnect_minutes"],
                    )
                    for r in doc["per_station"]
                ],
                empty=_("Nothing happened at any station in this period."),
            ),
        ),
        _section(
            "timeline",
            charts["timeline"],
            ("<h3>" + escape(_("Important customers (两个十五分钟)")) + "</h3>")
            + _timeline_table(doc)
            + ("<h3>" + escape(_("Overdue items")) + "</h3>")
            + table(
                [
                    _("what"),
                    _("order"),
                    _("account"),
                    _("station"),
                    _("due"),
                    _("done"),
                    _("late (min)"),
                ],
                [
                    (
                        _(OVERDUE_WHAT.get(i["what"], i["what"])),
                        i["order_id"],
                        i["account_no"],
                        i["station"],
                        short(i["due"]),
                        short(i["done"]) or _("not yet"),
                        i["late_minutes"],
                    )
                    for i in doc["overdue"]
                ],
                empty=_("Nothing overdue."),
            ),
        ),
    ]
    lang = "zh-CN" if i18n.current() == "zh-CN" else "en"
    span = _("{start} to {end}").format(start=period["from"], end=period["to"])
    meta = _("{span} ({days} day(s), site time {timezone}); generated {generated}").format(
        span=span,
        days=period["days"],
        timezone=period["timezone"],
        generated=short(period["generated_at"]) or "",
    )
    footer = _(
        "Days are site-local days. A disconnection counts when verified open by read-back; a "
        "reconnection when first verified closed or armed (1BH), timed from the payment that "
        "triggered it. Blocked orders were stopped by the policy re-check right before the "
        "command. Made by meterctl report; see docs/operations-view.md."
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} {escape(span)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">{escape(meta)}</p>'
        f'<div class="cards">{cards}</div>'
        + "".join(sections)
        + _survey_section(doc.get("survey"))
        + f"<footer>{escape(footer)}</footer>"
        "</body></html>\n"
    )
