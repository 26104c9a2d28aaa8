#!/usr/bin/env bash
# Install Debian's chromium and chromedriver for tests/test_browser.py when they are missing (needs root or sudo).
#   bash scripts/install_browser.sh
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
SUDO=""
if [[ $(id -u) != 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_browser.sh: chromium is missing and installing it needs root (apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
