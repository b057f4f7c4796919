#!/usr/bin/env bash
# Installs what `cargo test --test browser` needs: Debian's chromium and
# playwright-core (from package-lock.json). Idempotent; does nothing when both
# are already there.
set -euo pipefail
cd "$(dirname "$0")"

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-liberation
fi

if [ ! -f node_modules/playwright-core/package.json ]; then
    npm ci --no-audit --no-fund
fi

echo "browser test ready: $("$chromium" --version 2>/dev/null), node $(node --version), playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version')"
