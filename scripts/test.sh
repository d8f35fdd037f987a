#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them.
# Usage: bash scripts/test.sh [pytest args]      (exit code: pytest's)
# Screenshots of every page land in artifacts/screenshots/, the app server's log in artifacts/.
# GPTVIZ_SKIP_BROWSER=1 skips the browser tests on a local machine; it is an error in CI (CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

is_true() { case "${1:-}" in 1|true|TRUE|True|yes|on) return 0 ;; *) return 1 ;; esac; }
apt_install() {  # root only; one `apt-get update` per run
  if [ "$(id -u)" != 0 ]; then return 1; fi
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if is_true "${CI:-}" && is_true "${GPTVIZ_SKIP_BROWSER:-}"; then
  echo "GPTVIZ_SKIP_BROWSER is set in CI: browser tests must run in CI." >&2
  exit 2
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv; then
    rm -rf .venv
    apt_install python3-venv || { echo "cannot create a venv: install python3-venv" >&2; exit 1; }
    "$PYTHON" -m venv .venv
  fi
fi
# Playwright drives Debian's Chromium; it must never fetch a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

if ! is_true "${GPTVIZ_SKIP_BROWSER:-}" && ! command -v chromium >/dev/null; then
  # fonts-liberation: readable text in the screenshots
  apt_install chromium fonts-liberation || {
    echo "chromium is missing: sudo apt-get install chromium (or GPTVIZ_SKIP_BROWSER=1 to skip browser tests locally)" >&2
    exit 1
  }
fi

# tests/test_replicas.py runs two replicas behind Debian's nginx (foreground, its own prefix; no service).
if ! is_true "${GPTVIZ_SKIP_BROWSER:-}" && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx || {
    echo "nginx is missing: sudo apt-get install nginx (or GPTVIZ_SKIP_BROWSER=1 to skip browser tests locally)" >&2
    exit 1
  }
fi

rm -rf artifacts/screenshots artifacts/streamlit-server-*.log  # only this run's screenshots and logs
mkdir -p artifacts/screenshots
exec .venv/bin/python -m pytest "$@"
