#!/usr/bin/env python3
"""bench/hitless_logs.py: the steps of one handover or kill -9 restart of a
bench/hitless.sh run, from the natgw logs.

    hitless_logs.py handover OLD.log NEW.log T0 [GAP_AT GAP_MS]
    hitless_logs.py crash    OLD.log NEW.log T0 [GAP_AT GAP_MS]

T0: the event (CLOCK_REALTIME seconds: the new process spawned, or the
kill -9); GAP_AT / GAP_MS: start and length of the longest gap near the
event at the server (from hitless_gaps.py; "-" if none). Prints one JSON
object, then on a second line the cells of the bench report's step table
(markdown, "|"-separated); the times natgw measures itself ("in X us") are taken as logged,
the others are differences of the logs' millisecond time stamps (+-1 ms).

handover (`natgw run --takeover`, the copy in steps):
  copy_flows, copy_bytes, copy_us     the full copy while the old forwards
  changes                             [[flows, us], ...] the change steps
  prepare_us                          data plane prepared (XDP adopted, UMEM)
  cut_us                              the cut, as the new process timed it
  cut_flows, cut_restored, cut_restore_us
  old                                 {step: us} the old process's cut steps
  parked, parked_us                   frames parked during the cut, processed
  in_place_ms                         "state in place X ms after the start"
  t_cut_ms, t_running_ms              old "handover cut" / new "natgw running"
                                      logged, ms after T0
  old_exit_ms                         old "natgw handed over; exiting", after T0
crash (kill -9, then `natgw run --snapshot`):
  flows, t_restored_ms, t_running_ms, parked, parked_us
both: gap_from_t0_ms, running_to_gap_end_ms (natgw running -> first frame
after the gap)
"""
import json
import re
import sys
from datetime import datetime, timezone

TS = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z ")


def lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def ts(line):
    m = TS.match(line)
    if not m:
        return None
    s = m.group(1)
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp()


def first(ls, pat):
    r = re.compile(pat)
    for line in ls:
        m = r.search(line)
        if m:
            return line, m
    return None, None


def ms(a, b):
    return None if a is None or b is None else round((b - a) * 1000, 1)


def main():
    kind, oldf, newf, t0 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    gap_at = gap = None
    if len(sys.argv) > 6 and sys.argv[5] not in ("-", ""):
        gap_at, gap = float(sys.argv[5]), float(sys.argv[6])
    old, new = lines(oldf), lines(newf)
    j = {}
    line, _ = first(new, r"natgw running")
    t_run = ts(line) if line else None
    j["t_running_ms"] = ms(t0, t_run)
    line, m = first(new, r"processed (\d+) frame\(s\) parked .* in (\d+) us")
    j["parked"], j["parked_us"] = (int(m[1]), int(m[2])) if m else (0, None)
    if kind == "handover":
        _, m = first(new, r"takeover: copied (\d+) flow\(s\) \((\d+) bytes\) in (\d+) us")
        if m:
            j["copy_flows"], j["copy_bytes"], j["copy_us"] = int(m[1]), int(m[2]), int(m[3])
        r = re.compile(r"takeover: (\d+) flow\(s\) changed meanwhile, copied in (\d+) us")
        j["changes"] = [[int(m[1]), int(m[2])] for m in map(r.search, new) if m]
        _, m = first(new, r"data plane prepared in (\d+) us")
        j["prepare_us"] = int(m[1]) if m else None
        _, m = first(new, r"takeover: cut in (\d+) us: (\d+) flow\(s\) changed \((\d+) restored in (\d+) us\); old natgw: (.*)$")
        if m:
            j["cut_us"], j["cut_flows"], j["cut_restored"], j["cut_restore_us"] = map(int, m.groups()[:4])
            j["old"] = {k.strip(): int(v) for k, v in re.findall(r"([^,]+?) (\d+) us", m[5])}
        _, m = first(new, r"state in place (\d+) ms")
        j["in_place_ms"] = int(m[1]) if m else None
        line, _ = first(old, r"handover cut: taking the sockets")
        j["t_cut_ms"] = ms(t0, ts(line) if line else None)
        line, _ = first(old, r"natgw handed over; exiting")
        j["old_exit_ms"] = ms(t0, ts(line) if line else None)
        j["old_lost"] = bool(first(old, r"frames meanwhile are lost")[0]) or bool(
            first(new, r"could not leave its XDP programs parking")[0])
    else:
        line, m = first(new, r"restored (\d+) flow\(s\)")
        j["flows"] = int(m[1]) if m else None
        j["t_restored_ms"] = ms(t0, ts(line) if line else None)
    if gap_at is not None:
        j["gap_from_t0_ms"] = ms(t0, gap_at)
        j["running_to_gap_end_ms"] = ms(t_run, gap_at + gap / 1000) if t_run else None
    print(json.dumps(j))
    print(cells(kind, j))


def f(v, unit=""):
    return "?" if v is None else f"{v}{unit}"


def cells(kind, j):
    if kind == "handover":
        old = j.get("old", {})
        steps = ["health checks stopped", "sockets out of the XDP maps",
                 "workers drained", "changes captured", "changes written"]
        c = [
            f"{f(j.get('copy_flows'))} / {f(j.get('copy_us'))}",
            ", ".join(f"{a} / {b}" for a, b in j.get("changes", [])) or "-",
            f(j.get("prepare_us")),
            f"**{f(j.get('cut_us'))}**",
            " / ".join(f(old.get(k)) for k in steps) + (" (+ " + ", ".join(
                f"{k} {v}" for k, v in old.items() if k not in steps) + ")" if set(old) - set(steps) else ""),
            f"{f(j.get('cut_flows'))} / {f(j.get('cut_restore_us'))}",
            f"{j['parked']} / {f(j.get('parked_us'))}",
            f(j.get("t_cut_ms")),
            f"{f(j.get('t_running_ms'))} ({f(None if j.get('t_cut_ms') is None or j.get('t_running_ms') is None else round(j['t_running_ms'] - j['t_cut_ms'], 1))})",
            f(j.get("in_place_ms")),
            f(j.get("gap_from_t0_ms")),
        ]
        if j.get("old_lost"):
            c[-1] += " (NOT PARKED)"
    else:
        c = [
            f(j.get("flows")),
            f(j.get("t_restored_ms")),
            f(j.get("t_running_ms")),
            f"{j['parked']} / {f(j.get('parked_us'))}",
            f(j.get("gap_from_t0_ms")),
            f(j.get("running_to_gap_end_ms")),
        ]
    return " | ".join(c)


if __name__ == "__main__":
    main()
