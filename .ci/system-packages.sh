#!/usr/bin/env bash
# Debian packages the test suite uses. Idempotent; a no-op when all are present.
# The PostgreSQL server is started by the test suite itself (tests/conftest.py starts a
# throw-away cluster), so nothing is left running.
set -euo pipefail
need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the report's headless-browser test
# A CJK font for the Chinese report: matplotlib draws chart text with it, Chromium renders the
# page with it (tests/integration/test_report_browser.py measures that no glyph is tofu).
ls /usr/share/fonts/truetype/wqy/wqy-microhei.ttc >/dev/null 2>&1 || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "system-packages: missing ${need[*]} and not root; tests needing them will be skipped" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
