#!/usr/bin/env bash
# Headless Chromium for the report test (tests/test_report_browser.py opens every HTML report in
# it): installed from the system's package manager (Debian/Ubuntu apt) when no chromium,
# chromium-browser or google-chrome is on PATH. Needs root or sudo.
set -euo pipefail
for browser in chromium chromium-browser google-chrome; do
    if command -v "$browser" >/dev/null 2>&1; then
        exit 0
    fi
done
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium
