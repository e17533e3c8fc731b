"""The report's charts: matplotlib figures rendered to inline SVG (no files, no fonts to fetch).

Why this shape:

- ``matplotlib.figure.Figure`` is used directly (never pyplot), with the Agg backend selected
  for anything else, so charts render headless, in threads, without global state.
- Text is drawn as paths (``svg.fonttype = "path"``): the SVG needs no font on the viewing
  machine, which matters on closed utility networks. Chart titles are also in the HTML
  around each SVG, so they stay searchable and readable by screen readers.
- DejaVu Sans ships with matplotlib. It has no CJK glyphs: a station name such as 城关所
  would come out as boxes, so unless a CJK font is installed, non-ASCII labels are replaced
  by ``S1``, ``S2``... and the HTML table beside the chart gives the full names. A CJK font is
  looked up in matplotlib's font list and, since that list is cached from the day matplotlib
  was installed, also at the paths of the Debian packages (fonts-wqy-microhei,
  fonts-noto-cjk; ``.ci/system-packages.sh`` installs the first).
- Titles, axis labels and legends are in the current language (``base.i18n``). A Chinese
  chart needs a CJK font; without one the charts are drawn in English rather than in boxes.
- ``svg.hashsalt`` is fixed per chart, so the same figures give the same bytes, and the
  clip-path ids of two charts in one page never collide.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from base import i18n
from base.i18n import N_, _, local_time

# (label, bars as (start, end, colour), marks as (x, marker, colour)) in minutes.
_Row = tuple[str, list[tuple[float, float, str]], list[tuple[float, str, str]]]

BASE_FONT = "DejaVu Sans"
_CJK_HINTS = ("CJK", "WenQuanYi", "Source Han", "Noto Sans SC", "SimHei", "Droid Sans Fallback")
# Where Debian's CJK font packages put their files (matplotlib's cached list may predate them).
CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)

COLORS = {
    "disconnections": "#c0392b",
    "reconnections": "#27ae60",
    "field_orders": "#e67e22",
    "blocked": "#8e44ad",
    "payments": "#2980b9",
    "overdue": "#e74c3c",
    "planned": "#d5dbe1",
    "on_time": "#2c7a4b",
    "neutral": "#5d6d7e",
}

CHART_TITLES = {
    "per_day": N_("Disconnections and reconnections per day"),
    "reconnection_times": N_("Reconnection time from payment to power"),
    "blocked_by_reason": N_("Orders blocked by reason"),
    "field_orders_by_cause": N_("Field orders by cause"),
    "per_station": N_("Per station"),
    "timeline": N_("Important customers and overdue items (timeline)"),
}
"""Each chart's title, in English (stable: tests look for them); shown through ``_()``."""

SERIES_LABELS = {
    "disconnections": N_("disconnections"),
    "reconnections": N_("reconnections"),
    "field_orders": N_("field orders"),
    "overdue": N_("overdue"),
}


def _listed_cjk_font() -> str | None:
    for entry in font_manager.fontManager.ttflist:
        if any(hint.lower() in entry.name.lower() for hint in _CJK_HINTS):
            return str(entry.name)
    return None


@cache
def cjk_font() -> str | None:
    """The family name of an installed CJK font, if any."""
    found = _listed_cjk_font()
    if found is not None:
        return found
    for path in CJK_FONT_FILES:
        if Path(path).exists():
            font_manager.fontManager.addfont(path)
            return _listed_cjk_font()
    return None


@contextmanager
def _chart_language() -> Iterator[None]:
    """The current language, or English when it needs a CJK font and none is installed."""
    if i18n.current() == "zh-CN" and cjk_font() is None:
        with i18n.using("en"):
            yield
    else:
        yield


@dataclass
class Labels:
    """Chart-safe labels: non-ASCII text becomes ``S1``, ``S2``... unless a CJK font exists."""

    prefix: str = "S"
    cjk: bool = field(default_factory=lambda: cjk_font() is not None)
    mapping: dict[str, str] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        if self.cjk or text.isascii():
            return text
        if text not in self.mapping:
            self.mapping[text] = f"{self.prefix}{len(self.mapping) + 1}"
        return self.mapping[text]


def _rc(salt: str) -> dict[str, Any]:
    families = [BASE_FONT] + ([f] if (f := cjk_font()) else [])
    return {
        "font.family": families,
        "font.size": 9,
        "svg.fonttype": "path",
        "svg.hashsalt": f"meterctl-{salt}",
        "axes.spines.top": False,
        "axes.spines.right": False,
    }


def to_svg(fig: Figure, title: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog), labelled with ``title``."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace("<svg", f'<svg role="img" aria-label="{label}"', 1)


def _render(name: str, draw: Callable[[Figure], None], size: tuple[float, float]) -> str:
    with _chart_language(), matplotlib.rc_context(_rc(name)):  # type: ignore[arg-type]
        fig = Figure(figsize=size, dpi=100, layout="constrained")
        draw(fig)
        return to_svg(fig, _(CHART_TITLES[name]))


def _empty(ax: Axes, message: str | None = None) -> None:
    message = _("nothing in this period") if message is None else message
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#7f8c8d")
    ax.set_xticks([])
    ax.set_yticks([])


def per_day_chart(doc: dict[str, Any]) -> str:
    """Disconnections, reconnections and field orders per site-local day (grouped bars)."""
    rows = doc["per_day"]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        series = ("disconnections", "reconnections", "field_orders")
        if not any(r[s] for r in rows for s in series):
            _empty(ax)
            return
        width = 0.8 / len(series)
        xs = range(len(rows))
        for i, name in enumerate(series):
            ax.bar(
                [x + (i - 1) * width for x in xs],
                [r[name] for r in rows],
                width=width,
                label=_(SERIES_LABELS[name]),
                color=COLORS[name],
            )
        step = max(1, len(rows) // 14)  # at most ~14 date labels
        ax.set_xticks(list(xs)[::step], [r["day"][5:] for r in rows][::step])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_("orders"))
        fig.legend(frameon=False, ncols=3, loc="outside upper left")

    return _render("per_day", draw, (9, 3.2))


def reconnection_chart(doc: dict[str, Any]) -> str:
    """Histogram of reconnection minutes, with the promised limit as a red line."""
    data = doc["reconnection_times"]
    limit = float(data["limit_minutes"])
    minutes = [float(i["minutes"]) for i in data["items"]]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if not minutes:
            _empty(ax, _("no reconnection in this period"))
            return
        width = limit / 8  # uniform bins for the picture; the JSON keeps the limit's buckets
        top = max(max(minutes), limit * 1.25)
        edges = [width * i for i in range(int(top // width) + 2)]
        ax.hist(
            minutes,
            bins=edges,
            color=COLORS["reconnections"],
            edgecolor="white",
            label=_("reconnections"),
        )
        ax.axvline(
            limit,
            color=COLORS["overdue"],
            linewidth=2,
            label=_("promised limit {minutes} min").format(minutes=f"{limit:g}"),
        )
        ax.set_xlabel(_("minutes from payment to verified (or armed) relay"))
        ax.set_ylabel(_("reconnections"))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, edges[-1])
        fig.legend(frameon=False, ncols=2, loc="outside upper left")

    return _render("reconnection_times", draw, (9, 3.2))


def chart_labels(names: Sequence[str]) -> dict[str, str]:
    """The label each name gets in a chart (itself, or ``S1``... without a CJK font)."""
    labels = Labels()
    return {name: labels(name) for name in names}


def _barh(
    name: str,
    counts: Sequence[tuple[str, Sequence[int]]],
    series: Sequence[str],
    colors: Sequence[str],
) -> str:
    labels = chart_labels([c[0] for c in counts])

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        if not counts:
            _empty(ax)
            return
        height = 0.8 / len(series)
        ys = range(len(counts))
        for i, (label, color) in enumerate(zip(series, colors, strict=True)):
            ax.barh(
                [y + i * height for y in ys],
                [c[1][i] for c in counts],
                height=height,
                label=_(label),
                color=color,
            )
        ax.set_yticks(
            [y + height * (len(series) - 1) / 2 for y in ys], [labels[c[0]] for c in counts]
        )
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(series) > 1:
            fig.legend(frameon=False, ncols=len(series), loc="outside upper left")

    rows = max(1, len(counts))
    return _render(name, draw, (9, 1.2 + 0.35 * rows * max(1, len(series) / 1.5)))


def blocked_chart(doc: dict[str, Any]) -> str:
    """Blocks by reason code: orders stopped at dispatch (period) and accounts blocked now."""
    blocked = doc["blocked_by_reason"]
    codes = list(dict.fromkeys([*blocked["orders"], *blocked["accounts_now"]]))
    counts = [(c, (blocked["orders"].get(c, 0), blocked["accounts_now"].get(c, 0))) for c in codes]
    return _barh(
        "blocked_by_reason",
        counts,
        (N_("orders blocked at dispatch (period)"), N_("accounts in arrears blocked now")),
        (COLORS["blocked"], "#bb8fce"),
    )


def field_orders_chart(doc: dict[str, Any]) -> str:
    """Field work orders created in the period, by cause."""
    counts = [(cause, (n,)) for cause, n in doc["field_orders_by_cause"].items()]
    return _barh("field_orders_by_cause", counts, (N_("field orders"),), (COLORS["field_orders"],))


def per_station_chart(doc: dict[str, Any]) -> str:
    """Disconnections, reconnections, field orders and overdue items per station."""
    series = ("disconnections", "reconnections", "field_orders", "overdue")
    counts = [(r["station"], tuple(r[s] for s in series)) for r in doc["per_station"]]
    return _barh(
        "per_station",
        counts,
        tuple(SERIES_LABELS[s] for s in series),
        tuple(COLORS[s] for s in series),
    )


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _minutes_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60.0


def _important_rows(doc: dict[str, Any], tz: ZoneInfo, now: datetime | None) -> list[_Row]:
    """Each important order against its noticed time T: planned T-15..T+15, actual marks."""
    rows: list[_Row] = []
    for item in doc["important_timeline"]:
        t = _when(item["notice_time"])
        if t is None:
            continue
        steps = item["steps"]
        first, last = _when(steps[0]["due"]), _when(steps[-1]["due"])
        if first is None or last is None:
            continue
        bars = [(_minutes_between(t, first), _minutes_between(t, last), COLORS["planned"])]
        marks: list[tuple[float, str, str]] = []
        for step, marker in zip(steps, ("^", "D", "o"), strict=True):
            late = step["status"] in ("late", "missing")
            color = COLORS["overdue"] if late else COLORS["on_time"]
            done, due = _when(step["done"]), _when(step["due"])
            if done is not None:
                marks.append((_minutes_between(t, done), marker, color))
            elif step["status"] == "missing" and now is not None and due is not None:
                bars.append((_minutes_between(t, due), _minutes_between(t, now), color))
        label = f"{item['account_no']}  T={local_time(t, tz)}"
        rows.append((label, bars, marks))
    return rows


def _overdue_rows(doc: dict[str, Any], tz: ZoneInfo, now: datetime | None) -> list[_Row]:
    """Each overdue reconnection from its payment: promised part grey, overdue part red."""
    rows: list[_Row] = []
    for item in doc["overdue"]:
        if item["what"] != "reconnection":
            continue
        started, due = _when(item["started_at"]), _when(item["due"])
        finished = _when(item["done"]) or now
        if started is None or due is None or finished is None:
            continue
        bars = [
            (0.0, _minutes_between(started, due), COLORS["planned"]),
            (
                _minutes_between(started, due),
                _minutes_between(started, finished),
                COLORS["overdue"],
            ),
        ]
        marks = (
            [(_minutes_between(started, finished), "o", COLORS["reconnections"])]
            if item["done"]
            else []
        )
        state = _("restored") if item["done"] else _("still {state}").format(state=item["state"])
        label = _("{account}  paid {time} ({state})").format(
            account=item["account_no"], time=local_time(started, tz), state=state
        )
        rows.append((label, bars, marks))
    return rows


def _gantt(ax: Axes, rows: list[_Row], xlabel: str, empty: str) -> None:
    if not rows:
        _empty(ax, empty)
        return
    for y, (_label, bars, marks) in enumerate(rows):
        for start, end, color in bars:
            ax.barh(y, max(end - start, 0.2), left=start, height=0.5, color=color)
        for x, marker, color in marks:
            ax.plot(x, y, marker=marker, color=color, markersize=7, linestyle="none")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.use_sticky_edges = False  # keep a margin: a mark on the first or last minute stays visible
    ax.margins(x=0.04)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(xlabel)


def timeline_chart(doc: dict[str, Any]) -> str:
    """Gantt-style: important customers' T-15 / T / T+15 steps, and overdue reconnections.

    Two panels on relative time axes (minutes from the noticed time T; minutes from the
    payment): a 30-minute timeline would be a sliver on a week-long calendar axis.
    """
    tz = ZoneInfo(doc["period"]["timezone"])
    now = _when(doc["period"]["generated_at"])
    important = _important_rows(doc, tz, now)
    late = _overdue_rows(doc, tz, now)
    step = doc["reconnection_times"]["limit_minutes"]

    def draw(fig: Figure) -> None:
        top, bottom = fig.subplots(2, 1, height_ratios=[max(1, len(important)), max(1, len(late))])
        top.set_title(
            _("important customers (两个十五分钟)") if cjk_font() else "important customers",
            loc="left",
            fontsize=9,
        )
        _gantt(
            top,
            important,
            _(
                "minutes from the noticed time T:  ▲ warning (T-15)  ◆ instruction (T)  "
                "● execution (T+15)"
            ),
            _("no important-customer disconnection in this period"),
        )
        if important:
            top.axvline(0, color=COLORS["neutral"], linewidth=0.8, linestyle=":")
        bottom.set_title(
            _("overdue reconnections (promised within {minutes} min)").format(minutes=f"{step:g}"),
            loc="left",
            fontsize=9,
        )
        _gantt(
            bottom,
            late,
            _("minutes from payment: grey = promised time, red = overdue, ● restored"),
            _("no overdue reconnection in this period"),
        )
        if late:
            bottom.axvline(step, color=COLORS["overdue"], linewidth=1, linestyle="--")

    height = 2.4 + 0.4 * (max(1, len(important)) + max(1, len(late)))
    return _render("timeline", draw, (9, height))


def all_charts(doc: dict[str, Any]) -> dict[str, str]:
    """Every chart of the report document, by name (the keys of :data:`CHART_TITLES`)."""
    return {
        "per_day": per_day_chart(doc),
        "reconnection_times": reconnection_chart(doc),
        "blocked_by_reason": blocked_chart(doc),
        "field_orders_by_cause": field_orders_chart(doc),
        "per_station": per_station_chart(doc),
        "timeline": timeline_chart(doc),
    }
