#!/usr/bin/env python3
"""bench/ha_poll.py: waits for a natgw node's HA status to meet a condition
(for bench/ha.sh).

    ha_poll.py NATGW SOCKET --until EXPR [--timeout S] [--interval S]
    ha_poll.py NATGW SOCKET --settle S [--timeout S] [--interval S]

Runs `NATGW ha status --json --socket SOCKET` every --interval seconds
(default 0.01). --until: stops when the Python expression EXPR is true
with `s` the status object and `c` its counters (e.g. "s['role'] ==
'master'", "s['in_sync']", "c.get('flows_applied', 0) >= 1000"). --settle:
stops once counters.flows_applied has not changed for S seconds (the time
reported is the last change). Prints one JSON object: {"ok", "t" (epoch
seconds of the first status that met the condition, taken just before the
query that showed it: the query's start, so at most one interval late),
"polls", "status"}; exit 0 if met, 1 on timeout.
"""
import argparse
import json
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("natgw")
    ap.add_argument("socket")
    ap.add_argument("--until")
    ap.add_argument("--settle", type=float)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--interval", type=float, default=0.01)
    a = ap.parse_args()
    if (a.until is None) == (a.settle is None):
        ap.error("give --until or --settle")
    cmd = [a.natgw, "ha", "status", "--json", "--socket", a.socket]
    end = time.time() + a.timeout
    polls = 0
    s = None
    last_applied, last_change = None, None
    while True:
        t = time.time()
        polls += 1
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=5).stdout
            s = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            s = None
        if s is not None:
            c = s.get("counters", {})
            if a.until is not None:
                if eval(a.until, {}, {"s": s, "c": c}):
                    print(json.dumps({"ok": True, "t": t, "polls": polls, "status": s}))
                    return 0
            else:
                ap_ = c.get("flows_applied", 0)
                if ap_ != last_applied:
                    last_applied, last_change = ap_, t
                elif t - last_change >= a.settle:
                    print(json.dumps({"ok": True, "t": last_change, "polls": polls, "status": s}))
                    return 0
        if time.time() >= end:
            print(json.dumps({"ok": False, "t": None, "polls": polls, "status": s}))
            return 1
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
