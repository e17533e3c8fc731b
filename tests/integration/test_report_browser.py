"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``).

The report must open on a machine with no network: the page loads without console errors,
the screenshot is not blank, and every chart's title is in the rendered DOM (one inline SVG
per chart). Skipped when chromium is not installed (``.ci/system-packages.sh`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.reports.charts import CHART_TITLES
from interfaces.cli.main import app
from tests.reports.history_world import StoryWorld, story  # noqa: F401 - the fixture

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    # Nothing may be fetched: any lookup or connection fails (a closed utility network).
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
)


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_report_renders_in_headless_chromium(story: StoryWorld, tmp_path: Path) -> None:  # noqa: F811
    from PIL import Image, ImageStat

    s = story
    html = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["--config", str(s.world.config_path), "report", "--from", s.days[0].isoformat(),
         "--to", s.days[-1].isoformat(), "--out", str(html)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and "@import" not in text
    # Only in-page references (#clip-path ids): no src/href/url() to a file or a server.
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", text)
    assert not re.search(r"url\((?!#)", text)
    url = html.as_uri()

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,2400", url)
    assert shot.exists(), run.stderr[-2000:]
    for bad in ("Uncaught", "Failed to load resource", "net::ERR_"):
        assert bad not in run.stderr, [line for line in run.stderr.splitlines() if bad in line]
    with Image.open(shot) as image:
        gray = image.convert("L")
        stats = ImageStat.Stat(gray)
        assert stats.stddev[0] > 10, "the screenshot is (nearly) blank"
        dark = sum(gray.histogram()[:200])
        assert dark > 0.01 * gray.width * gray.height, "almost nothing is drawn"
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, "no charts: too few colours"

    run = chromium(tmp_path, "--dump-dom", url)
    dom = run.stdout
    assert "Uncaught" not in run.stderr
    for title in CHART_TITLES.values():
        assert title in dom, title
    assert dom.count("<svg") >= len(CHART_TITLES)
