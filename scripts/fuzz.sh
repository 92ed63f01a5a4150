#!/usr/bin/env bash
# Fuzzes natgw with cargo-fuzz (libFuzzer): fuzz/fuzz_targets/*.rs.
#
#   scripts/fuzz.sh [--minutes N] [--coverage] [TARGET...]
#
# Runs each TARGET (default: all of them: frame engine arp snapshot
# config ha) for N minutes (default 10), one
# after the other, one process at a time (a second fuzz.sh is refused
# while one runs), under `nice -n 19`. Needs a
# nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz from crates.io if it is missing (only here: the normal build
# and `scripts/test.sh` never need nightly). Built without a sanitizer
# (`-s none`: natgw's fuzzed code is safe Rust, and the address sanitizer
# made the engine target ~17x slower) but with debug assertions and
# overflow checks (`-a`).
#
# The checked-in seeds are fuzz/seeds/TARGET (regenerate them with
# `cd fuzz && cargo +nightly run --example gen_corpus`) and, kept apart
# from the generated ones, fuzz/found/TARGET: inputs that once crashed a
# target (each fixed, most with a test in tests/fuzz_regressions.rs),
# fed to every run so the fuzzer starts from them; what the fuzzer
# learns goes to fuzz/corpus/TARGET and crashes to fuzz/artifacts/TARGET
# (neither is checked in). Each run's log is fuzz/logs/TARGET-DATE.log; a
# summary line per target (wall and CPU seconds, executions, exec/s, cov,
# features, corpus files, crashes)
# is printed at the end and appended to fuzz/logs/summary.txt.
#
# --coverage: after fuzzing, `cargo fuzz coverage` over the corpus and an
# `llvm-cov report` summary per target (needs the llvm-tools-preview
# component of nightly; skipped with a note if it is missing).
#
# Reproduce a crash: cd fuzz && cargo +nightly fuzz run -s none -a TARGET artifacts/TARGET/crash-...
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../fuzz"

minutes=10
coverage=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --minutes=*) minutes="${1#*=}"; shift ;;
        --coverage) coverage=1; shift ;;
        -h|--help) sed -n '2,28p' "$self"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(frame engine arp snapshot config ha)
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi

# Per target: the longest input and extra libFuzzer options.
max_len() {
    case "$1" in
        engine) echo 4096 ;;
        frame) echo 2048 ;;
        arp) echo 1024 ;;
        snapshot) echo 16384 ;;
        config) echo 8192 ;;
        ha) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

mkdir -p logs
# One run at a time in fuzz/: libFuzzer (-jobs=1) writes its output to
# ./fuzz-0.log, which two runs would share and mix (2026-12-02: two
# runs at once left both logs with the same statistics).
exec 9>logs/.lock
if ! flock -n 9; then
    echo "fuzz.sh: another scripts/fuzz.sh is running in fuzz/; wait for it (they would share libFuzzer's fuzz-0.log)" >&2
    exit 1
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
nice -n 19 cargo +nightly fuzz build -s none -a 2>&1 | tail -n 3
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    found=()
    [ -d "found/$t" ] && found=("found/$t")
    log="logs/$t-$stamp.log"
    dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    echo "== fuzzing $t for $minutes min (log: fuzz/$log)"
    start=$(date +%s)
    # CPU time of the fuzz process (user + system), from bash's `times`
    # of a subshell that runs it.
    set +e
    ( nice -n 19 cargo +nightly fuzz run -s none -a "$t" "corpus/$t" "seeds/$t" "${found[@]}" -- \
        -max_total_time=$((minutes * 60)) -max_len="$(max_len "$t")" \
        -jobs=1 -workers=1 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "${dict[@]}" >"$log" 2>&1; rc=$?
      # With -jobs libFuzzer runs the fuzzing in one child whose output
      # is fuzz-0.log: keep it in the run's log.
      if [ -f fuzz-0.log ]; then cat fuzz-0.log >>"$log"; rm -f fuzz-0.log; fi
      echo "rc=$rc" >>"$log"; times >>"$log" )
    set -e
    end=$(date +%s)
    cpu=$(tail -n 1 "$log" | awk '{
        split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1]*60+u[2]+s[1]*60+s[2] }')
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -n 1)
    last=$(grep -a -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | awk '{print $2}')
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | awk '{print $2}')
    corp=$(ls "corpus/$t" | wc -l)
    # libFuzzer's own figure (executions per second of fuzzing).
    rate=$(echo "$last" | grep -o 'exec/s: [0-9]*' | awk '{print $2}')
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    line="$stamp $t: wall $((end - start))s (asked ${minutes}min) cpu ${cpu}s execs ${execs:-?} exec/s ${rate} cov ${cov:-?} ft ${ft:-?} corpus ${corp} crashes ${crashes} $(grep '^rc=' "$log" | tail -n 1)"
    echo "$line" | tee -a logs/summary.txt
done

if [ "$coverage" = 1 ]; then
    sysroot=$(rustc +nightly --print sysroot)
    llvm_cov=$(ls "$sysroot"/lib/rustlib/*/bin/llvm-cov 2>/dev/null | head -n 1 || true)
    if [ -z "$llvm_cov" ]; then
        echo "coverage: no llvm-cov (rustup component add llvm-tools-preview --toolchain nightly); skipped" >&2
        exit 0
    fi
    for t in "${targets[@]}"; do
        echo "== coverage of $t"
        nice -n 19 cargo +nightly fuzz coverage -s none "$t" "corpus/$t" "seeds/$t" >"logs/$t-coverage-$stamp.log" 2>&1
        bin=$(ls target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release/"$t")
        "$llvm_cov" report "$bin" -instr-profile="coverage/$t/coverage.profdata" \
            -ignore-filename-regex='(\.cargo/registry|rustc/|/fuzz/)' | tee "logs/$t-coverage-report-$stamp.txt" | tail -n 1
    done
fi
