"""The HTML report: one self-contained file (inline CSS and SVG; no script, font or URL).

Utility networks are closed, so the page must open from a USB stick on a machine without
internet: nothing is fetched. Every chart sits above a table of the same numbers (the table
is what a supervisor copies into a spreadsheet; the chart is what they look at).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from engine.reports.charts import CHART_TITLES, all_charts, chart_labels

CSS = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif;
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
    "disconnections": "disconnections verified",
    "reconnections": "reconnections restored",
    "reconnections_armed": "of which armed (1BH)",
    "field_orders": "field orders",
    "blocked_orders": "orders blocked",
    "cancelled_paid": "cancelled by payment",
    "payments": "payments",
    "overdue": "overdue items",
}


def _cell(value: Any) -> str:
    if value is None:
        return "<td>-</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        return (
            f'<td class="num">{value:g}</td>'
            if isinstance(value, float)
            else f'<td class="num">{value}</td>'
        )
    return f"<td>{escape(str(value))}</td>"


def short(iso: str | None) -> str | None:
    """A site-local ISO time for people: ``2024-05-01 09:37:00`` (the offset is in the header)."""
    return iso[:19].replace("T", " ") if iso else None


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "none") -> str:
    """An HTML table (escaped); ``empty`` is shown when there are no rows."""
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
        f"<p>Survey {escape(survey['survey'])} ({escape(short(str(survey['started_at'])) or '')}"
        f"): {survey['surveyed']} meter(s), {survey['ok']} ok, {survey['problem']} with "
        f"problems, {survey['silent']} silent.</p>"
    )
    rows = [
        (m["meter_address"], m["account_no"] or "-", m["bus"], ", ".join(m["problems"]))
        for m in survey["meters"]
    ]
    return (
        '<section id="survey"><h2>Read-only survey before a campaign</h2>'
        + head
        + table(["meter", "account", "bus", "problems"], rows, empty="Nothing in the way.")
        + "</section>"
    )


def _field_work_tables(doc: dict[str, Any]) -> str:
    work = doc["field_work"]
    orders, calls, complaints = work["orders"], work["follow_ups"], work["complaints"]
    return (
        "<h3>Field work: time limits, follow-up calls (回访), complaints (投诉)</h3>"
        + table(
            ["measure", "value"],
            [
                ("field orders closed", orders["closed"]),
                ("within their time limit", orders["within_limit"]),
                ("within their time limit (%)", orders["within_limit_pct"] or "-"),
                ("open past their time limit now", orders["open_overdue"]),
                ("escalated (预警)", orders["escalated"]),
                ("escalated to supervisors (督办)", orders["supervised"]),
                ("follow-up calls recorded", calls["recorded"]),
                ("customers satisfied (%)", calls["satisfaction_pct"] or "-"),
                ("follow-up calls due, not made", calls["due_not_made"]),
                ("complaints opened", complaints["opened"]),
                ("complaints closed within their time limit", complaints["closed_within_limit"]),
                ("complaints per million customers", complaints["per_million_customers"] or "-"),
            ],
            empty="",
        )
        + "<h3>Late field orders</h3>"
        + table(
            ["field order", "account", "work", "due", "closed", "minutes late", "level"],
            [
                (
                    f["field_order_id"],
                    f["account_no"],
                    f["kind"] or "-",
                    short(f["due_at"]) or "-",
                    short(f["closed_at"]) or "open",
                    f["late_minutes"],
                    f["escalation_level"],
                )
                for f in work["overdue"]
            ],
            empty="No field order was late.",
        )
    )


def _section(name: str, svg: str, body: str) -> str:
    return (
        f'<section id="{name}"><h2>{escape(CHART_TITLES[name])}</h2>'
        f"<figure>{svg}</figure>{body}</section>"
    )


def _status(status: str) -> str:
    return f'<span class="{escape(status)}">{escape(status.replace("_", " "))}</span>'


def _timeline_table(doc: dict[str, Any]) -> str:
    rows = []
    for item in doc["important_timeline"]:
        cells = [f"<td>{escape(item['account_no'])}</td>", f"<td>{escape(item['state'])}</td>"]
        for step in item["steps"]:
            due, done = escape(short(step["due"]) or "-"), escape(short(step["done"]) or "-")
            cells.append(f"<td>due {due}<br>done {done}<br>{_status(step['status'])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        return "<p>No important-customer disconnection in this period.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("account", "order state", "warning (T-15)", "instruction (T)", "execution (T+15)")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(doc: dict[str, Any], *, title: str = "meterctl operations report") -> str:
    """The whole report page for the figures document ``doc``."""
    charts = all_charts(doc)
    period = doc["period"]
    totals = doc["totals"]
    cards = "".join(
        f'<div class="card{" alert" if key == "overdue" and value else ""}">'
        f"<b>{value}</b>{escape(TOTAL_LABELS.get(key, key))}</div>"
        for key, value in totals.items()
    )
    times = doc["reconnection_times"]
    blocked = doc["blocked_by_reason"]
    codes = list(dict.fromkeys([*blocked["orders"], *blocked["accounts_now"]]))
    station_labels = chart_labels([r["station"] for r in doc["per_station"]])
    relabelled = any(k != v for k, v in station_labels.items())
    station_headers = ["station", *(["chart label"] if relabelled else [])]
    sections = [
        _section(
            "per_day",
            charts["per_day"],
            "<details><summary>numbers per day</summary>"
            + table(
                ["day", "disconnections", "reconnections", "field orders", "blocked", "payments"],
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
            f"<p>Promised limit: <b>{times['limit_minutes']:g} min</b> "
            f"([dispatch] reconnect_deadline_minutes). {times['count']} reconnection(s): "
            f"{times['within_limit']} within the limit, {times['over_limit']} over; "
            f"median {times['median_minutes'] if times['median_minutes'] is not None else '-'} min, "
            f"90th percentile {times['p90_minutes'] if times['p90_minutes'] is not None else '-'} min.</p>"
            + "<details><summary>every reconnection</summary>"
            + table(
                [
                    "order",
                    "account",
                    "station",
                    "from",
                    "paid / ordered",
                    "restored",
                    "state",
                    "minutes",
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
                    "reason code",
                    "orders blocked at dispatch (period)",
                    f"accounts in arrears blocked now ({short(blocked['as_of'])})",
                ],
                [
                    (c, blocked["orders"].get(c, 0), blocked["accounts_now"].get(c, 0))
                    for c in codes
                ],
                empty="No order was blocked and no account in arrears is blocked.",
            ),
        ),
        _section(
            "field_orders_by_cause",
            charts["field_orders_by_cause"],
            table(
                ["cause", "field orders"],
                list(doc["field_orders_by_cause"].items()),
                empty="No field order in this period.",
            )
            + "<h3>Cancelled field orders (do not carry out)</h3>"
            + table(
                ["field order", "account", "cause", "status", "cancelled at", "why"],
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
                empty="No field order was cancelled.",
            )
            + _field_work_tables(doc),
        ),
        _section(
            "per_station",
            charts["per_station"],
            table(
                [
                    *station_headers,
                    "disconnections",
                    "reconnections",
                    "field orders",
                    "blocked",
                    "payments",
                    "overdue",
                    "median reconnect min",
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
                empty="Nothing happened at any station in this period.",
            ),
        ),
        _section(
            "timeline",
            charts["timeline"],
            "<h3>Important customers (两个十五分钟)</h3>"
            + _timeline_table(doc)
            + "<h3>Overdue items</h3>"
            + table(
                ["what", "order", "account", "station", "due", "done", "late (min)"],
                [
                    (
                        i["what"].replace("_", " "),
                        i["order_id"],
                        i["account_no"],
                        i["station"],
                        short(i["due"]),
                        short(i["done"]) or "not yet",
                        i["late_minutes"],
                    )
                    for i in doc["overdue"]
                ],
                empty="Nothing overdue.",
            ),
        ),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} {escape(period['from'])} to {escape(period['to'])}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">{escape(period["from"])} to {escape(period["to"])} '
        f"({period['days']} day(s), site time {escape(period['timezone'])}); "
        f"generated {escape(short(period['generated_at']) or '')}</p>"
        f'<div class="cards">{cards}</div>'
        + "".join(sections)
        + _survey_section(doc.get("survey"))
        + "<footer>Days are site-local days. A disconnection counts when verified open by "
        "read-back; a reconnection when first verified closed or armed (1BH), timed from the "
        "payment that triggered it. Blocked orders were stopped by the policy re-check right "
        "before the command. Made by meterctl report; see docs/operations-view.md.</footer>"
        "</body></html>\n"
    )
