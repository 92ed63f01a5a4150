//! Memory per live flow at 1M flows, from the process's resident set size.
//!
//! `cargo bench --bench memory` runs each case in a fresh child process
//! (this executable again, with `NATGW_MEM_CASE` set) so that one case's
//! freed memory cannot hide another's growth:
//!
//! - `engine`: 1,000,000 new UDP flows through `Engine::process`
//!   (masquerade; both tuples indexed), frames prepared beforehand;
//! - `table`: the same flows straight into `FlowTable::insert`;
//! - `dashmap`: the same flows into the DashMap-indexed equivalent
//!   (bench/common.rs), same slot slab.
//!
//! Each child builds its inputs, reads RSS (/proc/self/statm), creates the
//! engine or table (so whatever it allocates up front is counted), inserts,
//! and reads RSS again; it reports the difference per flow and the insert
//! rate from an empty table to 1M flows (so it includes every index growth).
//! Every case runs `NATGW_MEM_RUNS` times (default 3) with the allocator's
//! default settings and again with `MIMALLOC_PURGE_DELAY=0`; the median
//! run is printed with all runs' figures.

#[path = "common.rs"]
mod common;

use common::*;
use natgw::conntrack::{FlowTable, Timeouts};
use natgw::engine::{Counters, Verdict};
use natgw::packet::Link;
use std::hint::black_box;
use std::time::Instant;

// Same allocator as the natgw binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FLOWS: u32 = 1_000_000;
const CASES: [&str; 3] = ["engine", "table", "dashmap"];

fn main() {
    if let Ok(case) = std::env::var("NATGW_MEM_CASE") {
        return child(&case);
    }
    // `cargo test --benches` runs bench targets without `--bench`: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let runs: usize = std::env::var("NATGW_MEM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "memory per live flow, {FLOWS} UDP flows, both tuples indexed, mimalloc, \
         {runs} runs per row (median; all runs in brackets)"
    );
    println!(
        "{:<8} {:<14} {:>10} {:>10} {:>11} {:>15}  runs (bytes/flow)",
        "case", "allocator", "rss before", "rss after", "bytes/flow", "insert Mflow/s"
    );
    // Default mimalloc keeps freed pages (the index's outgrown arrays)
    // resident for a while; MIMALLOC_PURGE_DELAY=0 returns them at once,
    // which leaves mostly live data in the difference.
    for purge in [None, Some("0")] {
        for case in CASES {
            // (rss before, rss after, flows per second) per run.
            let mut r: Vec<(f64, f64, f64)> = (0..runs)
                .map(|_| {
                    let mut cmd = std::process::Command::new(&exe);
                    cmd.env("NATGW_MEM_CASE", case);
                    match purge {
                        Some(d) => cmd.env("MIMALLOC_PURGE_DELAY", d),
                        None => cmd.env_remove("MIMALLOC_PURGE_DELAY"),
                    };
                    let out = cmd.output().expect("child runs");
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        out.status.success(),
                        "{case}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let v: Vec<f64> = text
                        .split_whitespace()
                        .map(|w| w.parse().expect("child prints numbers"))
                        .collect();
                    (v[0], v[1], v[2])
                })
                .collect();
            let per_flow = |x: &(f64, f64, f64)| (x.1 - x.0) / FLOWS as f64;
            let all: Vec<String> = r.iter().map(|x| format!("{:.1}", per_flow(x))).collect();
            r.sort_by(|a, b| per_flow(a).total_cmp(&per_flow(b)));
            let m = r[r.len() / 2];
            let mut rates: Vec<f64> = r.iter().map(|x| x.2).collect();
            rates.sort_by(f64::total_cmp);
            let label = if purge.is_some() {
                "purge_delay=0"
            } else {
                "default"
            };
            println!(
                "{case:<8} {label:<14} {:>7.1} MB {:>7.1} MB {:>11.1} {:>15.2}  [{}]",
                m.0 / 1e6,
                m.1 / 1e6,
                per_flow(&m),
                rates[rates.len() / 2] / 1e6,
                all.join(", ")
            );
        }
    }
    // What the layouts imply (see the module docs of conntrack/table.rs).
    let slots = FLOWS.div_ceil(1 << 16) as f64 * 65536.0 * std::mem::size_of::<Slot>() as f64;
    let per_shard = 2.0 * FLOWS as f64 / 256.0;
    let words = (per_shard * 4.0 / 3.0).ceil().max(64.0) as u64;
    let ours_index = 256.0 * words.next_power_of_two() as f64 * 8.0;
    println!(
        "layout: slot {} B ({:.1} B/flow in 64 Ki-slot chunks); our index {:.1} B/flow \
         (256 shards x {} words); together {:.1} B/flow",
        std::mem::size_of::<Slot>(),
        slots / FLOWS as f64,
        ours_index / FLOWS as f64,
        words.next_power_of_two(),
        (slots + ours_index) / FLOWS as f64
    );
}

fn child(case: &str) {
    let t0;
    let before;
    let len;
    // Keep everything alive until the second reading.
    let keep: Box<dyn std::any::Any>;
    match case {
        "engine" => {
            let frames: Vec<[u8; FRAME]> =
                (0..FLOWS).map(|k| frame(&orig(k, Ports::Keep))).collect();
            let ctr = Counters::default();
            let mut buf = [0u8; 256];
            before = rss();
            let e = engine(1 << 21);
            t0 = Instant::now();
            for f in &frames {
                buf[..FRAME].copy_from_slice(f);
                let v = e.process(&mut buf, FRAME, Link::Ethernet, LAN, NOW, &ctr);
                assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            }
            len = e.table().len();
            assert_eq!(ctr.snapshot().flows_created, FLOWS as u64);
            keep = Box::new((e, frames));
        }
        "table" => {
            let flows: Vec<_> = (0..FLOWS).map(new_flow).collect();
            before = rss();
            let t = FlowTable::new(1 << 21, Timeouts::default(), 7);
            t0 = Instant::now();
            for f in &flows {
                black_box(t.insert(f, NOW).expect("distinct flows"));
            }
            len = t.len();
            keep = Box::new((t, flows));
        }
        "dashmap" => {
            let flows: Vec<_> = (0..FLOWS).map(new_flow).collect();
            before = rss();
            let t = DashTable::new(1 << 21);
            t0 = Instant::now();
            for f in &flows {
                black_box(t.insert(f, NOW).expect("distinct flows"));
            }
            len = t.len();
            keep = Box::new((t, flows));
        }
        _ => panic!("unknown case {case}"),
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = rss();
    assert_eq!(len, FLOWS as usize);
    println!("{before} {after} {}", FLOWS as f64 / secs);
    drop(keep);
}
