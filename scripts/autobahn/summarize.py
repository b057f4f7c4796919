#!/usr/bin/env python3
"""Summarizes an Autobahn|Testsuite run made by scripts/autobahn/run.sh.

    summarize.py [--strict] [--strict-close] OUTDIR

OUTDIR holds expected.json (the selected case ids) and reports/index.json
(wstest's verdicts). A case passes when its verdict ("behavior") is OK or
INFORMATIONAL, or NON-STRICT unless --strict. UNIMPLEMENTED (permessage-deflate
not negotiated), FAILED and a selected case without a verdict fail. With
--strict-close, a case whose closing handshake ("behaviorClose") was UNCLEAN
or FAILED fails too. Prints one line per failing case, then "N passed, N
failed"; exits 1 if anything failed, else 0. Standard library only.
"""
import argparse
import json
import os
import sys

VERDICTS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "NOT-RUN"]


def case_key(case_id):
    return tuple(int(part) for part in case_id.split(".") if part.isdigit())


def load(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def reason(reports, entry):
    """wstest's own one-line explanation of a verdict, from the case's report."""
    detail = load(os.path.join(reports, entry.get("reportfile") or "-")) or {}
    parts = [" ".join(str(detail.get("result") or "").split())]
    if entry.get("behavior") == "UNIMPLEMENTED":
        parts = ["permessage-deflate was not negotiated"]
    if entry.get("behaviorClose") not in (None, "OK", "INFORMATIONAL"):
        parts.append("close %s: %s" % (entry["behaviorClose"],
                                       " ".join(str(detail.get("resultClose") or "").split())))
    return " | ".join(p for p in parts if p)[:240]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--strict-close", action="store_true")
    parser.add_argument("outdir")
    args = parser.parse_args()
    reports = os.path.join(args.outdir, "reports")
    expected = load(os.path.join(args.outdir, "expected.json")) or []
    index = load(os.path.join(reports, "index.json")) or {}
    results = next(iter(index.values()), {})

    counts = dict.fromkeys(VERDICTS, 0)
    passing = {"OK", "INFORMATIONAL"} | (set() if args.strict else {"NON-STRICT"})
    failures = []
    not_run = []
    unclean = 0
    for case_id in sorted(expected, key=case_key):
        entry = results.get(case_id)
        verdict = entry.get("behavior", "FAILED") if entry else "NOT-RUN"
        counts[verdict if verdict in counts else "FAILED"] += 1
        bad_close = bool(entry) and entry.get("behaviorClose") in ("UNCLEAN", "FAILED")
        unclean += bad_close
        if not entry:
            not_run.append(case_id)
        elif verdict not in passing or (args.strict_close and bad_close):
            failures.append("  %-8s %-13s %s" % (case_id, verdict, reason(reports, entry)))
    if not_run:
        shown = ", ".join(not_run[:8]) + (" and %d more" % (len(not_run) - 8) if len(not_run) > 8 else "")
        failures.append("  NOT-RUN (no verdict: wstest stopped first): %s" % shown)

    print("Autobahn|Testsuite, %d cases: %s; unclean or failed closing handshakes: %d"
          % (len(expected), ", ".join("%s %d" % kv for kv in counts.items()), unclean))
    mode = [flag for flag, on in (("--strict", args.strict), ("--strict-close", args.strict_close)) if on]
    if failures:
        print("failing cases (%s):" % (" ".join(mode) or "default rules"))
        print("\n".join(failures))
    if os.path.isfile(os.path.join(reports, "index.html")):
        print("reports: %s" % os.path.join(reports, "index.html"))
    if not expected:
        print("no cases were selected")
    failed = len(failures) - (1 if not_run else 0) + len(not_run)
    print("%d passed, %d failed" % (len(expected) - failed, failed))
    return 1 if failed or not expected else 0


if __name__ == "__main__":
    sys.exit(main())
