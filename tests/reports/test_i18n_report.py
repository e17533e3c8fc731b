"""The report in Chinese: headings, tables, chart titles, axis labels and legends translated,
every chart glyph found in a real font, and English charts (not boxes) without a CJK font."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from base import i18n
from engine.reports import charts, render
from engine.reports.charts import CHART_TITLES, all_charts, cjk_font
from tests.reports.test_formats import sample_doc


@pytest.fixture(autouse=True)
def _english_after() -> Iterator[None]:
    yield
    i18n.set_language("en")


def test_html_report_in_chinese() -> None:
    i18n.set_language("zh-CN")
    page = render(sample_doc(), "html")
    assert '<html lang="zh-CN">' in page
    for title in CHART_TITLES.values():
        assert f"<h2>{i18n._(title)}</h2>" in page and f"<h2>{title}</h2>" not in page
    for text in ("meterctl 运行报告", "<th>原因代码</th>", "已确认停电", "承诺时限：", "站点时区"):
        assert text in page, text
    assert "城关所" in page and "notice_pending" in page  # names and reason codes as they are
    for english in ("disconnections verified", "Promised limit", "Nothing overdue", "site time"):
        assert english not in page, english


def test_english_report_stays_english() -> None:
    page = render(sample_doc(), "html")
    assert '<html lang="en">' in page and "disconnections verified" in page
    assert "每日停电与复电" not in page


@pytest.mark.skipif(cjk_font() is None, reason="no CJK font installed (fonts-wqy-microhei)")
def test_chinese_charts_have_every_glyph() -> None:
    """matplotlib warns "Glyph ... missing from font(s)" for each character drawn as a box."""
    i18n.set_language("zh-CN")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing")
        svgs = all_charts(sample_doc())
    for name, svg in svgs.items():
        assert f'aria-label="{i18n._(CHART_TITLES[name])}"' in svg
    # Text is drawn as paths: the Chinese legend adds glyph outlines the English one lacks.
    i18n.set_language("en")
    english = all_charts(sample_doc())
    assert svgs["per_day"] != english["per_day"]


def test_charts_fall_back_to_english_without_a_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "cjk_font", lambda: None)
    i18n.set_language("zh-CN")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing")
        svgs = all_charts(sample_doc())
    assert f'aria-label="{CHART_TITLES["per_day"]}"' in svgs["per_day"]
    assert i18n.current() == "zh-CN"  # the page around the charts stays Chinese
