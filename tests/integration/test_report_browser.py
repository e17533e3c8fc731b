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


# A script run inside the page by the test below (the report itself never has a script).
GLYPH_PROBE = r"""
<script>
(() => {
  // Unassigned code points: no font has them, so the browser draws its .notdef glyph (tofu).
  const TOFU = ["\u0378", "\u0379", "\u0380"];
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  const draw = (ch, family) => {
    ctx.clearRect(0, 0, 64, 64);
    ctx.font = "40px " + family;
    ctx.fillStyle = "#000";
    ctx.fillText(ch, 4, 48);
    const alpha = [];
    const data = ctx.getImageData(0, 0, 64, 64).data;
    for (let i = 3; i < data.length; i += 4) alpha.push(data[i]);
    return alpha.join(",");
  };
  const blank = draw(" ", "sans-serif");
  const result = {checked: 0, tofu: [], blank: [], control: [], cjk: 0, lang: document.documentElement.lang};
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Map();  // char -> font family of the element it was found in
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const family = getComputedStyle(node.parentElement).fontFamily;
    for (const ch of node.nodeValue) {
      if (ch.codePointAt(0) > 0x7e && !/\s/.test(ch) && !seen.has(ch)) seen.set(ch, family);
    }
  }
  const tofuOf = new Map();
  for (const [ch, family] of seen) {
    if (!tofuOf.has(family)) tofuOf.set(family, new Set(TOFU.map((t) => draw(t, family))));
    const shape = draw(ch, family);
    result.checked += 1;
    if (/[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]/.test(ch)) result.cjk += 1;
    if (tofuOf.get(family).has(shape)) result.tofu.push(ch);
    else if (shape === blank) result.blank.push(ch);
  }
  // The control: one unassigned code point against the others' .notdef must count as tofu,
  // or the method would not see tofu at all.
  const family = getComputedStyle(document.body).fontFamily;
  const others = new Set(TOFU.slice(1).map((t) => draw(t, family)));
  result.control = [others.has(draw(TOFU[0], family)), draw("\u4e2d", family) !== draw(TOFU[0], family)];
  const out = document.createElement("pre");
  out.id = "glyph-probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
})();
</script>
"""


@pytest.fixture
def _english_after() -> object:
    from base import i18n

    yield
    i18n.set_language("en")


def test_chinese_report_renders_every_glyph(
    story: StoryWorld,  # noqa: F811
    tmp_path: Path,
    _english_after: object,
) -> None:
    """The Chinese report in Chromium: every character on the page drawn by a real font.

    How tofu is measured: a character no installed font has is drawn with the .notdef glyph
    (an empty box, "tofu"); every missing character gets the same .notdef of the same font.
    A probe script (added to a copy of the page only) walks every text node, and draws each
    distinct non-ASCII character on a canvas in the font stack the page gives its element,
    with the browser's own fallback, exactly as the page text is drawn. Its pixels are
    compared with those of unassigned code points (U+0378, U+0379, U+0380) drawn in the same
    stack: equal pixels mean tofu, and a blank canvas means nothing was drawn. A control
    proves the probe can see tofu (one unassigned code point matches the others' .notdef)
    and that a real CJK glyph (中) differs from it. The charts' text is drawn by matplotlib
    into the SVG as paths; tests/reports/test_i18n_report.py checks matplotlib found a glyph
    for every character. Needs a CJK font (fonts-wqy-microhei, .ci/system-packages.sh).
    """
    import json

    from engine.reports.charts import cjk_font

    if cjk_font() is None:
        pytest.skip("no CJK font installed (fonts-wqy-microhei)")
    s = story
    html = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["--config", str(s.world.config_path), "--lang", "zh-CN", "report",
         "--from", s.days[0].isoformat(), "--to", s.days[-1].isoformat(), "--out", str(html)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = html.read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in text and "每日停电与复电" in text and "<script" not in text
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", GLYPH_PROBE + "</body>"), encoding="utf-8")
    run = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="glyph-probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    report = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert report["lang"] == "zh-CN"
    assert report["control"] == [True, True], "the probe cannot tell tofu from a glyph"
    assert report["cjk"] > 50, report  # the page really is in Chinese
    assert report["tofu"] == [] and report["blank"] == [], report
