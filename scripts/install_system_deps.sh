#!/usr/bin/env bash
# Debian packages the test suite needs: chromium, which the browser tests drive through
# playwright-python (never `playwright install`). Does nothing when chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install Debian's chromium (/usr/bin/chromium) for the browser tests; apt-get is not available here" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
RETRY="bash $(dirname "$0")/retry.sh 3"  # a mirror hiccup costs a retry, not the run
$RETRY $SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $RETRY $SUDO apt-get install -y chromium
