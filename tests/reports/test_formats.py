"""The three formats of one figures document: JSON, long CSV, self-contained HTML with SVG."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

from engine.reports import render
from engine.reports.charts import CHART_TITLES, Labels, all_charts
from engine.reports.figures import compute_figures
from engine.reports.history import OrderEvent
from engine.reports.writers import CSV_HEADER
from tests.reports.test_figures import T0, history, order


def sample_doc() -> dict:
    h = history(
        orders={
            1: order(1, "disconnect", "verified", station="城关所"),
            2: order(2, "reconnect", "verified", batch_id="payment:P", station="城关所"),
            3: order(3, "disconnect", "blocked", station="South"),
        },
        payments={"P": T0},
        events=[
            OrderEvent(T0, 1, "disconnect", "verified"),
            OrderEvent(T0 + timedelta(minutes=42), 2, "reconnect", "verified"),
            OrderEvent(T0, 3, "disconnect", "blocked", "notice_pending"),
        ],
        blocked_now={"notice_pending": 2},
    )
    return compute_figures(h)


def test_json_is_the_document() -> None:
    doc = sample_doc()
    assert json.loads(render(doc, "json")) == json.loads(json.dumps(doc))


def test_csv_is_one_long_table_with_every_figure() -> None:
    doc = sample_doc()
    rows = list(csv.reader(io.StringIO(render(doc, "csv"))))
    assert tuple(rows[0]) == CSV_HEADER
    cells = {(f, k, m): v for f, k, m, v in rows[1:]}
    assert cells[("per_day", "2024-05-01", "disconnections")] == "1"
    assert cells[("blocked_by_reason", "notice_pending", "orders")] == "1"
    assert cells[("blocked_by_reason", "notice_pending", "accounts_now")] == "2"
    assert cells[("reconnections", "2", "minutes")] == "42.0"
    assert cells[("per_station", "城关所", "reconnections")] == "1"
    assert {r[0] for r in rows[1:]} >= {"period", "totals", "per_day", "reconnection_times"}


def test_charts_are_inline_svg_with_their_titles() -> None:
    charts = all_charts(sample_doc())
    assert set(charts) == set(CHART_TITLES)
    for name, svg in charts.items():
        assert svg.startswith("<svg"), name
        assert f'aria-label="{CHART_TITLES[name]}"' in svg
        assert "<?xml" not in svg and "<!DOCTYPE" not in svg
    # Same figures, same bytes (fixed hash salt, no date): reports can be compared.
    assert all_charts(sample_doc()) == charts


def test_charts_of_an_empty_period_render() -> None:
    charts = all_charts(compute_figures(history()))
    assert all(svg.startswith("<svg") for svg in charts.values())


def test_non_ascii_labels_are_replaced_without_a_cjk_font() -> None:
    labels = Labels(cjk=False)
    assert labels("North") == "North"
    assert labels("城关所") == "S1" and labels("城南所") == "S2" and labels("城关所") == "S1"
    assert Labels(cjk=True)("城关所") == "城关所"


def test_html_is_self_contained() -> None:
    page = render(sample_doc(), "html")
    assert page.startswith("<!DOCTYPE html>")
    for title in CHART_TITLES.values():
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") == len(CHART_TITLES)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", page)
    assert not re.search(r"url\((?!#)", page)
    assert "城关所" in page  # full names stay in the tables
