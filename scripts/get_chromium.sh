#!/bin/sh
# Headless Chromium for the browser check (tests/test_browser.py: TensorBoard's pages as a user sees them):
# Debian's package `chromium` (Ubuntu's is a snap: `chromium-browser`, used when present) unless one is there.
set -e
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found and apt-get is not available: install Chromium so that \`chromium\` is on PATH" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing headless Chromium (apt package chromium) for the browser test"
$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null; }
