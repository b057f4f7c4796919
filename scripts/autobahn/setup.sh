#!/usr/bin/env bash
# Installs Autobahn|Testsuite 0.8.2 (`wstest`, the RFC 6455 conformance suite) for
# scripts/autobahn/run.sh. The suite is Python 2.7 code, so it lives in its own
# Python 2.7 virtualenv with every package pinned (requirements-py2.txt).
#
#   bash scripts/autobahn/setup.sh     idempotent; ~0.1 s when already installed
#
# Where: ${AUTOBAHN_HOME:-$HOME/.cache/loopchat-autobahn}, holding
#   boot/   a Python 3 venv with virtualenv 20.21.1, the last one that still
#           creates Python 2.7 environments
#   venv/   the Python 2.7 virtualenv; venv/bin/wstest
#   stamp   hash of this script and the pins: a change to either reinstalls
# Python 2.7: AUTOBAHN_PYTHON2 if set, else /usr/bin/python2.7, else a pyenv
# 2.7 build; if none, apt installs python2.7 and python2.7-dev from Debian
# bullseye (bookworm has none), with the bullseye source pinned low so that it
# never upgrades anything else. That step needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${AUTOBAHN_HOME:-$HOME/.cache/loopchat-autobahn}"
stamp_value="$(cat "$0" "$here/requirements-py2.txt" | sha256sum | cut -d' ' -f1)"
say() { printf '[autobahn setup] %s\n' "$*"; }
die() { printf '[autobahn setup] error: %s\n' "$*" >&2; exit 1; }

installed() {
    [ "$(cat "$home/stamp" 2>/dev/null)" = "$stamp_value" ] &&
        "$home/venv/bin/python" -W ignore -c 'import autobahntestsuite.fuzzing, wsaccel' 2>/dev/null
}
if installed; then
    say "already installed: $home/venv/bin/wstest"
    exit 0
fi

# A Python 2.7 that can build C extensions (wsaccel, zope.interface): it needs Python.h.
has_headers() {
    "$1" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_config_var("INCLUDEPY"), "Python.h")))' 2>/dev/null
}
find_python2() {
    local p
    for p in "${AUTOBAHN_PYTHON2:-}" /usr/bin/python2.7 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7; do
        if [ -n "$p" ] && [ -x "$p" ] && has_headers "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! python2="$(find_python2)"; then
    if ! grep -rqs 'bullseye' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        mirror="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)"
        mirror="${mirror:-http://deb.debian.org/debian}"
        say "adding Debian bullseye ($mirror) as an apt source at priority 100, for python2.7"
        printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" >/etc/apt/sources.list.d/loopchat-bullseye.sources
    fi
    grep -rqs 'n=bullseye' /etc/apt/preferences /etc/apt/preferences.d/ ||
        printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' >/etc/apt/preferences.d/loopchat-bullseye
    apt-get update -qq
    apt_install python2.7 python2.7-dev
    python2="$(find_python2)" || die "no python2.7 with headers even after apt-get"
fi
command -v gcc >/dev/null || apt_install gcc libc6-dev
python3="$(command -v python3)" || die "python3 is missing"

mkdir -p "$home"
exec 9>"$home/lock"
flock -w 600 9 || die "another setup holds $home/lock"
if installed; then # installed by the setup we waited for
    say "already installed: $home/venv/bin/wstest"
    exit 0
fi
rm -rf "$home/boot" "$home/venv" "$home/stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1 PIP_NO_INPUT=1
# pip 20.3 (the last for 2.7) carries a CA bundle from 2020; use the system's.
[ -n "${PIP_CERT:-}" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] ||
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt

say "Python 2.7: $python2; installing into $home (about 30 s: pip compiles C extensions)"
if ! "$python3" -m venv "$home/boot" 2>/dev/null; then
    # Debian's own python3 needs python3-venv for `-m venv`.
    rm -rf "$home/boot"
    apt_install python3-venv
    "$python3" -m venv "$home/boot"
fi
"$home/boot/bin/python" -m pip install -q virtualenv==20.21.1 'platformdirs<4' 'filelock<4' 'distlib<1'
"$home/boot/bin/python" -m virtualenv -q --no-download --no-periodic-update \
    --app-data "$home/boot/app-data" -p "$python2" "$home/venv"
# --no-build-isolation: sdists build with the venv's own setuptools 44 (no
# per-package download of build tools that no longer support 2.7).
"$home/venv/bin/python" -m pip install -q --no-build-isolation -r "$here/requirements-py2.txt" 2>&1 |
    { grep -v 'DEPRECATION: Python 2.7' || true; }
"$home/venv/bin/python" -W ignore -c '
import autobahntestsuite.fuzzing
import autobahn.websocket.xormasker as m
assert m.XorMaskerNull.__module__.startswith("wsaccel"), "autobahn is not using wsaccel"
'
version="$(PYTHONWARNINGS=ignore "$home/venv/bin/wstest" --autobahnversion | paste -sd ' ')"
printf '%s\n' "$stamp_value" >"$home/stamp"
say "installed $version: $home/venv/bin/wstest"
