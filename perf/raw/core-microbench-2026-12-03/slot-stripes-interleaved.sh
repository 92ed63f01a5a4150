#!/usr/bin/env bash
# Old (1ce99bc: one free-slot mutex, DashMap::is_empty per port tried) vs
# new (striped free lists, lock-free emptiness checks), same bench source,
# interleaved rounds. Usage: BO=<old core bench binary> BN=<new> $0 > out.txt
set -u
for r in 1 2 3; do
  for v in old new; do
    B=$BO; [ $v = new ] && B=$BN
    echo "== round $r $v"
    $B --bench 'new_flow/(keep_port|remap_port)$' --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^new_flow|time:|thrpt:"
    NATGW_BENCH_ONLY=churn NATGW_BENCH_REPS=3 $B --bench threads 2>&1 | grep "MEDIAN all"
  done
done
