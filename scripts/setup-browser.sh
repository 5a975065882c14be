#!/usr/bin/env bash
# Installs the headless browser the dashboard's page tests drive (`provision ui`): Debian's
# chromium and its WebDriver, chromium-driver. Idempotent and quick when both are present.
# Where they cannot be installed (no apt, not root and no sudo, no network) it says so and exits
# 0: the page tests then skip with a message naming this script; every other test still runs.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-browser: no apt-get here; install chromium and chromedriver to run the dashboard's page tests" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "setup-browser: not root and no passwordless sudo; install chromium and chromium-driver to run the dashboard's page tests" >&2
    exit 0
  fi
fi
echo "setup-browser: installing chromium and chromium-driver (apt) ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; then
  # A fresh machine may not have package lists yet.
  "${sudo[@]}" apt-get update -q >/dev/null 2>&1 || true
  "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null \
    || echo "setup-browser: apt-get could not install chromium and chromium-driver; the dashboard's page tests will be skipped" >&2
fi
exit 0
