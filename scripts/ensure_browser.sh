#!/usr/bin/env bash
# `make test` runs this before any test: the browser tests need Chromium. Finds it the way
# tests/browser_support.py does ($CHROMIUM, default /usr/bin/chromium, else `chromium` on PATH),
# or installs Debian's package with apt-get when it can (as root, or with passwordless sudo), or
# stops with one line saying what to install, so `make test` never fails halfway for want of it.
# Only shell builtins besides apt-get and sudo: the tests run it with a PATH of their own.
set -u
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

find_chromium() {
  if [ -x "$CHROMIUM" ]; then echo "$CHROMIUM"; else command -v chromium; fi
}

if found=$(find_chromium); then
  echo "Chromium for the browser tests: $found"
  exit 0
fi

as_root=""
if [ "$EUID" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root="sudo -n"
fi
if command -v apt-get >/dev/null && { [ "$EUID" -eq 0 ] || [ -n "$as_root" ]; }; then
  echo "Chromium is missing: installing Debian's package for the browser tests (apt-get install chromium) ..."
  export DEBIAN_FRONTEND=noninteractive
  $as_root apt-get update -qq && $as_root apt-get install -y -qq chromium >/dev/null
  if found=$(find_chromium); then
    echo "Chromium for the browser tests: $found"
    exit 0
  fi
  echo "make test: apt-get did not install Chromium at $CHROMIUM; run \`sudo apt-get install -y chromium\` and read its errors." >&2
  exit 1
fi

echo "make test needs Chromium for its browser tests: install it (Debian/Ubuntu: \`sudo apt-get install -y chromium\`)" \
  "or set CHROMIUM=/path/to/chromium, then run make test again." >&2
exit 1
