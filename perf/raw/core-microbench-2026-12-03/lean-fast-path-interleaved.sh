#!/bin/sh
# Old (bdd2ba3) and new bench binaries copied to /tmp/core-old and /tmp/core-new
# (cargo build --release --bench core in each tree); 5 interleaved rounds.
for r in 1 2 3 4 5; do
 for v in old new; do
  for b in fast_path/engine_1k_flows fast_path/engine_1k_tcp new_flow/keep_port; do
   t=$(nice -n -5 /tmp/core-$v --bench "$b\$" --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^\S.*time:|^ +time:" | head -1 | sed 's/.*time: *\[//; s/\]//')
   echo "$(date +%H:%M:%S) r$r $v $b $t"
  done
 done
done
uptime
