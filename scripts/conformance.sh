#!/usr/bin/env bash
# RFC 6455 conformance: installs Autobahn|Testsuite if needed, builds the release
# server, serves it on a free loopback port and runs the suite (strict about
# NON-STRICT verdicts and closing handshakes) against /echo. Exits with the
# suite's status: 0 only when every selected case passed.
#
#   bash scripts/conformance.sh [CASES] [run.sh options]
#
# CASES defaults to "default" (groups 1-10: all but the permessage-deflate
# groups 12 and 13); "all", or a list such as '9.*' or '1.*,2.*', goes through
# to scripts/autobahn/run.sh, as do options such as --timeout 1800 or --outdir DIR.
# LOOPCHAT_ARGS adds server flags (split on spaces).
set -euo pipefail
cd "$(dirname "$0")/.."

cases=default
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    cases="$1"
    shift
fi

bash scripts/autobahn/setup.sh
cargo build --release --locked --quiet

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp "${TMPDIR:-/tmp}/loopchat-conformance.XXXXXX.log")"
# Group 9 sends messages of up to 16 MiB; the default limit is chat-sized (1 MiB).
# shellcheck disable=SC2086 # LOOPCHAT_ARGS is split on purpose
"${CARGO_TARGET_DIR:-target}/release/loopchat" --addr "127.0.0.1:$port" --max-message-size 16MiB --log-level warn \
    ${LOOPCHAT_ARGS:-} >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$server" 2>/dev/null; then
    echo "conformance: the server did not start; its log:"
    cat "$log"
    exit 2
fi

status=0
bash scripts/autobahn/run.sh --strict --strict-close "$@" "ws://127.0.0.1:$port/echo" "$cases" || status=$?

if ! kill -0 "$server" 2>/dev/null; then
    echo "conformance: the server died during the run"
    status=$((status == 0 ? 1 : status))
fi
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
trap - EXIT
if [ "$status" -ne 0 ] && [ -s "$log" ]; then
    echo "conformance: failed (status $status); the end of the server log ($log):"
    tail -n 50 "$log"
else
    rm -f "$log"
fi
exit "$status"
