#!/bin/sh
# Installs the Debian packages the test suite needs, and only those that are missing:
#   postgresql               - the server tests/postgres.py starts for the PostgreSQL tests
#   chromium chromium-driver - the browser tests (Debian's Chromium at /usr/bin/chromium)
# Run by `make test`. When everything is installed it only asks dpkg and exits 0; otherwise
# it runs `apt-get update` and installs what is missing (through sudo unless root).
# Debian/Ubuntu only; elsewhere install the equivalents yourself.
set -eu

PACKAGES="postgresql chromium chromium-driver"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    case "$status" in
        ii*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "system-deps: all present ($PACKAGES)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing:$missing, and no apt-get here: install them yourself" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "system-deps: missing:$missing; run as root or install sudo" >&2
    exit 1
fi

echo "system-deps: installing$missing"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086 # one word per package
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
