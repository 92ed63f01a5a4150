#!/usr/bin/env python3
"""Instructions per call of one function from a callgrind output file.

    python3 bench/cg_per_call.py callgrind.out.PID 'natgw::engine::Engine::process_inner'

Sums the calls to FUNC recorded at its call sites (`calls=` lines after a
`cfn=` naming it) and the inclusive instruction counts that follow them;
prints calls, inclusive Ir and Ir per call. Run callgrind without
--toggle-collect so the callers' call sites are recorded.
"""
import re
import sys


def main():
    path, func = sys.argv[1], sys.argv[2]
    ids, calls, incl = set(), 0, 0
    want = expect_cost = False
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if m and m.group(2) and m.group(2).strip() == func:
                ids.add(m.group(1))
            if line.startswith("cfn="):
                want = bool(m) and m.group(1) in ids
                continue
            if line.startswith("calls=") and want:
                calls += int(line.split("=")[1].split()[0])
                want, expect_cost = False, True
                continue
            if expect_cost:
                incl += int(line.split()[1])
                expect_cost = False
    if calls == 0:
        sys.exit(f"no calls to {func} recorded in {path}")
    print(f"calls {calls} inclusive_Ir {incl} per_call {incl / calls:.0f}")


if __name__ == "__main__":
    main()
