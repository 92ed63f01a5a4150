#!/bin/sh
for r in 1 2 3 4 5; do
 for v in old1122 head new; do
  for b in fast_path/engine_1k_flows new_flow/keep_port; do
   t=$(nice -n -5 /tmp/core-$v --bench "$b\$" --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^\S.*time:|^ +time:" | head -1 | sed 's/.*time: *\[//; s/\]//')
   echo "$(date +%H:%M:%S) r$r $v $b $t"
  done
 done
done
uptime
