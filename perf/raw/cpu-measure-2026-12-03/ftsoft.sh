#!/bin/bash
# ftsoft.sh SECONDS [WAIT]: trace softirq entry/exit on CPU 1 for SECONDS, wait WAIT more seconds,
# then print the softirq time per second of wall time, by the context it ran in (root; mounts tracefs)
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
echo 0 > $T/tracing_on
echo > $T/trace
echo 2 > $T/tracing_cpumask
echo 65536 > $T/buffer_size_kb
echo nop > $T/current_tracer
echo 0 > $T/events/enable
echo 1 > $T/events/irq/softirq_entry/enable
echo 1 > $T/events/irq/softirq_exit/enable
echo 1 > $T/tracing_on
sleep $1
echo 0 > $T/tracing_on
sleep ${2:-0}
echo 0 > $T/events/enable
cat $T/per_cpu/cpu1/stats | grep -E "overrun|entries"
cat $T/per_cpu/cpu1/trace | python3 -c '
import sys,re,collections
dur=collections.Counter(); n=collections.Counter(); start=None; first=last=None
for l in sys.stdin:
    if l.startswith("#"): continue
    m=re.match(r"\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): softirq_(entry|exit): vec=(\d+)",l)
    if not m: continue
    comm,pid,ts,kind,vec=m.groups(); ts=float(ts)
    first=first or ts; last=ts
    if kind=="entry": start=(ts,comm,vec)
    elif start:
        ctx="idle" if start[1]=="<idle>" else start[1]
        dur[(ctx,start[2])]+=ts-start[0]; n[(ctx,start[2])]+=1; start=None
span=(last-first) if first else 1
tot=sum(dur.values())
print(f"span {span:.2f}s softirq total {tot/span:.4f} CPU")
for k,v in dur.most_common(8): print(f"  ctx={k[0]:16s} vec={k[1]} {v/span:.4f} CPU  n={n[k]/span:.0f}/s  mean {v/n[k]*1e6:.2f} us")
'
echo > $T/trace
echo 4 > $T/buffer_size_kb
echo 3 > $T/tracing_cpumask
