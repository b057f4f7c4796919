#!/usr/bin/env bash
# Runs Autobahn|Testsuite's fuzzing client against a WebSocket echo endpoint and
# summarizes the verdicts. Install the suite first: scripts/autobahn/setup.sh.
#
#   run.sh [--strict] [--strict-close] [--timeout SECS] [--outdir DIR] ws://HOST:PORT/PATH [CASES]
#
# CASES    default: every case except 12.* and 13.* (permessage-deflate), 301 cases
#          all: all 517 cases; or a comma-separated list of ids and patterns,
#          e.g. '1.*,2.*' or 7.5.1; a leading ! excludes: 'default,!9.*'
# --strict        NON-STRICT verdicts count as failures
# --strict-close  a passed case whose closing handshake was UNCLEAN or FAILED
#                 counts as a failure
# --timeout SECS  bound on the whole wstest run (default 900; 1800 for "all");
#                 cases without a verdict by then count as failures
# --outdir DIR    where spec.json, wstest.log and reports/ go (default: a new
#                 temporary directory)
# Exit status: 0 when every selected case passed (OK or INFORMATIONAL, or
# NON-STRICT without --strict), 1 otherwise, 2 for a usage or setup error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${AUTOBAHN_HOME:-$HOME/.cache/loopchat-autobahn}"
usage() { sed -n '5,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

summary_args=()
timeout=""
outdir=""
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --strict | --strict-close) summary_args+=("$1") ;;
        --timeout) [ $# -ge 2 ] || usage; timeout="$2"; shift ;;
        --outdir) [ $# -ge 2 ] || usage; outdir="$2"; shift ;;
        -h | --help | -*) usage ;;
        *) positional+=("$1") ;;
    esac
    shift
done
[ "${#positional[@]}" -ge 1 ] && [ "${#positional[@]}" -le 2 ] || usage
url="${positional[0]}"
cases="${positional[1]:-default}"
case "$url" in ws://*) ;; *) echo "run.sh: the URL must start with ws:// (got $url)" >&2; exit 2 ;; esac
[ -n "$timeout" ] || { [ "$cases" = all ] && timeout=1800 || timeout=900; }
case "$timeout" in '' | *[!0-9]*) echo "run.sh: --timeout takes whole seconds" >&2; exit 2 ;; esac
[ -x "$home/venv/bin/wstest" ] || { echo "run.sh: no wstest in $home; run scripts/autobahn/setup.sh" >&2; exit 2; }

if [ -z "$outdir" ]; then
    outdir="$(mktemp -d "${TMPDIR:-/tmp}/loopchat-autobahn.XXXXXX")"
else
    mkdir -p "$outdir"
    outdir="$(cd "$outdir" && pwd)"
    rm -rf "$outdir/reports" "$outdir/expected.json" "$outdir/wstest.log"
fi

# The spec, and the list of case ids it selects (wstest silently skips an id
# that names no case, so unknown ids and empty patterns are refused here).
export PYTHONWARNINGS=ignore # cryptography's "Python 2 is no longer supported"
"$home/venv/bin/python" - "$url" "$cases" "$outdir" <<'EOF' || exit 2
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet
url, cases, outdir = sys.argv[1:4]
caseset = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
include, exclude = [], []
for item in [c.strip() for c in cases.split(",") if c.strip()]:
    negated = item.startswith("!")
    pattern = item.lstrip("!")
    if pattern == "default":
        found = ["*"]
        exclude += ["12.*", "13.*"] if not negated else []
    elif pattern == "all":
        found = ["*"]
    else:
        found = caseset.resolveCasePatternList([pattern])
        if not found or any(c not in caseset.CasesIndices for c in found):
            sys.exit("run.sh: %r names no Autobahn case (ids look like 1.1.1, 9.*, 6.4.*)" % pattern)
        found = [pattern]
    (exclude if negated else include).extend(found)
if not include:  # only exclusions: start from the default set
    include, exclude = ["*"], exclude + ["12.*", "13.*"]
spec = {"outdir": outdir + "/reports", "servers": [{"agent": "loopchat", "url": url}],
        "cases": include, "exclude-cases": exclude, "exclude-agent-cases": {}}
expected = caseset.parseSpecCases(spec)
if not expected:
    sys.exit("run.sh: the selection %r is empty" % cases)
for name, value in (("spec.json", spec), ("expected.json", expected)):
    with open(outdir + "/" + name, "w") as f:
        json.dump(value, f, indent=1)
EOF

python3 - "$url" <<'EOF' || exit 2
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname, u.port or 80), timeout=5).close()
except OSError as e:
    sys.exit("run.sh: nothing answers at %s (%s); is the server running?" % (sys.argv[1], e))
EOF
echo "[autobahn] $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$outdir/expected.json") cases ($cases) against $url, at most ${timeout}s; output in $outdir"
status=0
(cd "$outdir" && timeout -k 10 "$timeout" "$home/venv/bin/wstest" -m fuzzingclient -s spec.json) \
    >"$outdir/wstest.log" 2>&1 || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "[autobahn] wstest did not finish within ${timeout}s (its reports are written only at the end)"
elif [ "$status" -ne 0 ]; then
    echo "[autobahn] wstest exited with status $status; the end of $outdir/wstest.log:"
    tail -n 15 "$outdir/wstest.log"
fi
exec python3 "$here/summarize.py" "${summary_args[@]}" "$outdir"
