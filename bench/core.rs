//! Core microbenchmarks: the engine's fast path and new-flow path, the flow
//! table against a DashMap-indexed equivalent, and two-thread scaling.
//!
//! `cargo bench --bench core` runs everything (about four minutes on the
//! 2-vCPU machine); a filter argument selects benchmarks by name as
//! criterion does (`fast_path`, `new_flow`, `index`, `threads`). Results and
//! their reading are in `perf/core-microbench.md`.
//!
//! Frame reset: `Engine::process` rewrites the frame in place (addresses,
//! ports, TTL), so every packet first copies its 64-byte template into a
//! scratch buffer. `fast_path/copy_only` measures that copy alone; the
//! engine's own cost is `fast_path/engine_*` minus `copy_only`.
//!
//! The two-thread figures are not criterion runs: each configuration runs
//! for a fixed time (default 0.5 s) on 1 and then on 2 threads, all
//! configurations interleaved, for several repetitions (default 7); medians
//! are printed. Each thread drives its own flows through the same shared
//! engine or table (`std::thread::scope`). Because the machine is shared
//! and noisy, every 2-thread run is bracketed by a 0.2 s pure-ALU control on
//! 2 threads; a sample is "clean" when both controls reached x1.85 of one
//! thread, and medians are printed over all samples and over clean ones.
//! Set `NATGW_BENCH_REPS` / `NATGW_BENCH_SECS` to change the schedule,
//! `NATGW_BENCH_ONLY=<text>` to run only the configurations named with it.

#[path = "common.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput};
use crossbeam_utils::CachePadded;
use natgw::conntrack::{FlowTable, Lookup, PacketInfo, Timeouts};
use natgw::engine::{Counters, Engine, Verdict};
use natgw::packet::{Link, Tuple};
use parking_lot::RwLock;
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

// Same allocator as the natgw binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// New flows are created and timed in chunks of this many, then flushed.
const NEW_CHUNK: u64 = 65_536;
/// Established flows present while new flows are created.
const STANDING: u32 = 262_144;
/// First flow number of the new-flow benches (disjoint from standing flows).
const NEW_BASE: u32 = 1 << 22;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    fast_path(&mut c);
    new_flow_path(&mut c);
    index(&mut c);
    threads();
    c.final_summary();
}

/// Processes `t` (after copying it into `buf`) and returns the verdict.
#[inline(always)]
fn run_one(e: &Engine, buf: &mut [u8; 256], t: &Template, c: &Counters) -> Verdict {
    buf[..FRAME].copy_from_slice(&t.bytes);
    e.process(buf, FRAME, Link::Ethernet, t.iif, NOW, c)
}

/// Times `t`'s frames, round-robin, through `e`; asserts that none was
/// dropped and none created a flow.
fn fast_path_frames(b: &mut criterion::Bencher<'_>, e: &Engine, t: &[Template]) {
    let mask = t.len() - 1;
    let ctr = Counters::default();
    b.iter_custom(|iters| {
        let mut buf = [0u8; 256];
        let start = Instant::now();
        for i in 0..iters as usize {
            let _ = black_box(run_one(e, &mut buf, &t[i & mask], &ctr));
        }
        start.elapsed()
    });
    let s = ctr.snapshot();
    assert_eq!(s.total_drops(), 0, "{s:?}");
    assert_eq!(s.flows_created, 0, "all packets take the fast path");
}

fn fast_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("fast_path");
    g.throughput(Throughput::Elements(1));
    let mut small: Option<(Engine, Vec<Template>)> = None;
    let setup = || {
        let e = engine(1 << 16);
        let t = establish(&e, 0..1024);
        (e, t)
    };

    g.bench_function("copy_only", |b| {
        let (_, t) = small.get_or_insert_with(setup);
        let mask = t.len() - 1;
        b.iter_custom(|iters| {
            let mut buf = [0u8; 256];
            let start = Instant::now();
            for i in 0..iters as usize {
                buf[..FRAME].copy_from_slice(&t[i & mask].bytes);
                black_box(&mut buf);
            }
            start.elapsed()
        })
    });

    g.bench_function("engine_1k_flows", |b| {
        let (e, t) = small.get_or_insert_with(setup);
        fast_path_frames(b, e, t);
    });
    drop(small);

    // TCP: the same with 1024 established connections, window tracking
    // strict (the default) and liberal (its cost is the difference).
    for (name, liberal) in [("engine_1k_tcp", false), ("engine_1k_tcp_liberal", true)] {
        let mut tcp: Option<(Engine, Vec<Template>)> = None;
        g.bench_function(name, |b| {
            let (e, t) = tcp.get_or_insert_with(|| {
                let e = engine(1 << 16);
                e.table().set_liberal(liberal);
                let t = establish_tcp(&e, 0..1024);
                (e, t)
            });
            fast_path_frames(b, e, t);
        });
    }

    g.sample_size(10);
    let mut big: Option<(Engine, Vec<Template>)> = None;
    g.bench_function("engine_1M_flows", |b| {
        let (e, t) = big.get_or_insert_with(|| {
            let e = engine(1 << 21);
            let mut t = establish(&e, 0..1 << 20);
            t.truncate(1 << 20); // 1 Mi frames, random flows and directions
            (e, t)
        });
        fast_path_frames(b, e, t);
    });
    g.finish();
}

/// Creates flows `ks` (original direction only).
fn populate(e: &Engine, ks: std::ops::Range<u32>) {
    let ctr = Counters::default();
    let mut buf = [0u8; 256];
    for k in ks {
        buf[..FRAME].copy_from_slice(&frame(&orig(k, Ports::Keep)));
        let v = e.process(&mut buf, FRAME, Link::Ethernet, LAN, NOW, &ctr);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
}

fn new_flow_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    // `keep_port_logged`: keep_port with the NAT session log on (the
    // worker writes a create event per flow into its ring; the ring is
    // drained, untimed, after each chunk, as the logger thread would).
    for (name, ports, logged) in [
        ("keep_port", Ports::Keep, false),
        ("remap_port", Ports::Clash, false),
        ("keep_port_logged", Ports::Keep, true),
    ] {
        let mut state: Option<Engine> = None;
        let mut next: u32 = 0;
        g.bench_function(name, |b| {
            let e = state.get_or_insert_with(|| {
                let e = engine(1 << 22);
                populate(&e, 0..STANDING);
                if logged {
                    e.sessions().enable();
                }
                e
            });
            let mut events = Vec::with_capacity(NEW_CHUNK as usize * 2);
            let ctr = Counters::default();
            let mut frames: Vec<[u8; FRAME]> = Vec::with_capacity(NEW_CHUNK as usize);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                let mut buf = [0u8; 256];
                while done < iters {
                    let n = (iters - done).min(NEW_CHUNK);
                    frames.clear();
                    for _ in 0..n {
                        frames.push(frame(&orig(NEW_BASE + next, ports)));
                        next = (next + 1) % (1 << 20);
                    }
                    let created = ctr.flows_created.load(Relaxed);
                    let start = Instant::now();
                    for f in &frames {
                        buf[..FRAME].copy_from_slice(f);
                        let _ =
                            black_box(e.process(&mut buf, FRAME, Link::Ethernet, LAN, NOW, &ctr));
                    }
                    total += start.elapsed();
                    events.clear();
                    if logged {
                        e.sessions().drain(&mut events);
                    }
                    assert_eq!(ctr.flows_created.load(Relaxed) - created, n);
                    // Untimed: remove the new flows, keep the standing ones.
                    // (New flows go to remotes above every standing flow's.)
                    let first_new = orig(NEW_BASE, Ports::Keep).dst;
                    e.flush(|r| r.orig.dst >= first_new);
                    assert_eq!(e.table().len(), STANDING as usize);
                    if logged {
                        e.sessions().drain(&mut events);
                        assert_eq!(events.len() as u64, 2 * n, "a create and a delete each");
                        assert_eq!(e.sessions().missed(), 0);
                    }
                    done += n;
                }
                total
            });
            let s = ctr.snapshot();
            assert_eq!(s.total_drops(), 0, "{s:?}");
        });
    }
    g.finish();
}

/// Both tuples of flows `0..n`, shuffled.
fn keys(n: u32) -> Vec<Tuple> {
    let mut v: Vec<Tuple> = (0..n)
        .flat_map(|k| {
            let o = orig(k, Ports::Keep);
            [o, reply_kept(&o)]
        })
        .collect();
    shuffle(&mut v, 0xfeed);
    v
}

fn ours(n: u32) -> FlowTable {
    let t = FlowTable::new(n.max(1 << 16) * 2, Timeouts::default(), 7);
    for k in 0..n {
        t.insert(&new_flow(k), NOW).expect("distinct flows");
    }
    t
}

fn dash(n: u32) -> DashTable {
    let t = DashTable::new((n.max(1 << 16) * 2) as usize);
    for k in 0..n {
        t.insert(&new_flow(k), NOW).expect("distinct flows");
    }
    t
}

const INFO: PacketInfo = PacketInfo {
    tcp_flags: None,
    len: 50,
    seg: None,
};

#[inline(always)]
fn track_ours(t: &FlowTable, k: &Tuple) -> bool {
    matches!(t.track(k, &INFO, NOW), Lookup::Hit(_))
}

#[inline(always)]
fn track_dash(t: &DashTable, k: &Tuple) -> bool {
    t.track(k, INFO.len, NOW).is_some()
}

fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1));
    for (label, n, samples) in [("1k", 1024u32, 30), ("1M", 1 << 20, 10)] {
        g.sample_size(samples);
        let mut ks: Option<Vec<Tuple>> = None;
        let mut o: Option<FlowTable> = None;
        g.bench_function(format!("track_{label}/ours"), |b| {
            let ks = ks.get_or_insert_with(|| keys(n));
            let t = o.get_or_insert_with(|| ours(n));
            let mask = ks.len() - 1;
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(track_ours(t, &ks[i & mask]));
                }
                start.elapsed()
            });
            assert!(ks.iter().all(|k| track_ours(t, k)));
        });
        drop(o);
        let mut d: Option<DashTable> = None;
        g.bench_function(format!("track_{label}/dashmap"), |b| {
            let ks = ks.get_or_insert_with(|| keys(n));
            let t = d.get_or_insert_with(|| dash(n));
            let mask = ks.len() - 1;
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(track_dash(t, &ks[i & mask]));
                }
                start.elapsed()
            });
            assert!(ks.iter().all(|k| track_dash(t, k)));
        });
    }

    // Insert: timed chunks of new flows into a table holding STANDING
    // flows; each chunk is removed again untimed.
    g.sample_size(10);
    let mut o: Option<FlowTable> = None;
    let mut next = 0u32;
    g.bench_function("insert/ours", |b| {
        let t = o.get_or_insert_with(|| ours(STANDING));
        let mut ids = Vec::with_capacity(NEW_CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(NEW_CHUNK);
                let flows: Vec<_> = (0..n)
                    .map(|_| {
                        next = (next + 1) % (1 << 20);
                        new_flow(NEW_BASE + next)
                    })
                    .collect();
                ids.clear();
                let start = Instant::now();
                for f in &flows {
                    ids.push(t.insert(f, NOW));
                }
                total += start.elapsed();
                for id in ids.drain(..) {
                    t.remove(id.expect("distinct flows"), None);
                }
                done += n;
            }
            total
        })
    });
    drop(o);
    let mut d: Option<DashTable> = None;
    g.bench_function("insert/dashmap", |b| {
        let t = d.get_or_insert_with(|| dash(STANDING));
        let mut ids = Vec::with_capacity(NEW_CHUNK as usize);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(NEW_CHUNK);
                let flows: Vec<_> = (0..n)
                    .map(|_| {
                        next = (next + 1) % (1 << 20);
                        new_flow(NEW_BASE + next)
                    })
                    .collect();
                ids.clear();
                let start = Instant::now();
                for f in &flows {
                    ids.push(t.insert(f, NOW));
                }
                total += start.elapsed();
                for id in ids.drain(..) {
                    t.remove(id.expect("distinct flows"));
                }
                done += n;
            }
            total
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Two threads on one shared table.

/// True if this run is `cargo bench` (not `cargo test --benches`) and the
/// criterion-style filter, if any, matches `name`.
fn selected(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return false;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A worker: `f(thread_no, stop)` runs until `stop` and returns its count.
type Worker<'a> = Box<dyn Fn(usize, &AtomicBool) -> u64 + Sync + 'a>;

/// Runs `f` on `n` threads for `secs`; returns the aggregate rate (sum of
/// the counts the threads return, per second).
fn run_threads(n: usize, secs: f64, f: &Worker<'_>) -> f64 {
    let stop = AtomicBool::new(false);
    let go = Barrier::new(n + 1);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (go, stop) = (&go, &stop);
                s.spawn(move || {
                    go.wait();
                    f(i, stop)
                })
            })
            .collect();
        go.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Relaxed);
        let total: u64 = hs.into_iter().map(|h| h.join().expect("worker")).sum();
        total as f64 / t0.elapsed().as_secs_f64()
    })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Pure ALU work with no shared memory: what 2 threads can get on this
/// machine at this moment (the ceiling for every other ratio).
fn alu(_: usize, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    let mut x = 1u64;
    while !stop.load(Relaxed) {
        for i in 0..4096u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        black_box(x);
        n += 4096;
    }
    n
}

fn engine_worker<'a>(e: &'a [Engine], sets: &'a [Vec<Template>]) -> Worker<'a> {
    Box::new(move |i, stop| {
        let e = &e[i.min(e.len() - 1)];
        let ctr = Counters::default();
        let t = &sets[i];
        let mut buf = [0u8; 256];
        let mut n = 0;
        while !stop.load(Relaxed) {
            for tpl in t {
                let _ = black_box(run_one(e, &mut buf, tpl, &ctr));
            }
            n += t.len() as u64;
        }
        let s = ctr.snapshot();
        assert!(s.total_drops() == 0 && s.flows_created == 0, "{s:?}");
        n
    })
}

/// Thread `i` creates the flows of `frames[i]` in `e[i]` (or the one
/// shared engine), then removes them, until stopped; counts flows created.
fn churn_worker<'a>(e: &'a [Engine], frames: &'a [Vec<([u8; FRAME], Tuple)>]) -> Worker<'a> {
    Box::new(move |i, stop| {
        let e = &e[i.min(e.len() - 1)];
        let ctr = Counters::default();
        let mut buf = [0u8; 256];
        let mut n = 0;
        while !stop.load(Relaxed) {
            for (f, _) in &frames[i] {
                buf[..FRAME].copy_from_slice(f);
                let _ = black_box(e.process(&mut buf, FRAME, Link::Ethernet, LAN, NOW, &ctr));
            }
            for (_, o) in &frames[i] {
                assert!(e.remove_flow(o));
            }
            n += frames[i].len() as u64;
        }
        let s = ctr.snapshot();
        assert!(s.total_drops() == 0 && s.flows_created == n, "{s:?}");
        n
    })
}

/// Interleaved 1- and 2-thread runs of every configuration: each
/// repetition runs all of them once, so load changes hit them alike.
fn threads() {
    if !selected("threads") {
        return;
    }
    const FLOWS: u32 = 1024;
    let reps: usize = env_or("NATGW_BENCH_REPS", 7);
    let secs: f64 = env_or("NATGW_BENCH_SECS", 0.5);
    let ks = |t: u32| t * 4096..t * 4096 + FLOWS;

    // Shared: one engine, each thread its own 1024 flows (2048 frames,
    // both directions). Unshared: one engine per thread.
    let shared = [engine(1 << 16)];
    let sets: Vec<Vec<Template>> = (0..2).map(|t| establish(&shared[0], ks(t))).collect();
    let separate = [engine(1 << 16), engine(1 << 16)];
    let sets_sep: Vec<Vec<Template>> = (0..2)
        .map(|t| establish(&separate[t as usize], ks(t)))
        .collect();

    let per: Vec<Vec<Tuple>> = (0..2u32)
        .map(|t| {
            let mut v: Vec<Tuple> = ks(t)
                .flat_map(|k| {
                    let o = orig(k, Ports::Keep);
                    [o, reply_kept(&o)]
                })
                .collect();
            shuffle(&mut v, 3 + t as u64);
            v
        })
        .collect();
    let o = FlowTable::new(1 << 16, Timeouts::default(), 7);
    let d = DashTable::new(1 << 16);
    for t in 0..2 {
        for k in ks(t) {
            o.insert(&new_flow(k), NOW).expect("distinct");
            d.insert(&new_flow(k), NOW).expect("distinct");
        }
    }
    let per = &per;
    let (o, d) = (&o, &d);
    let dash_name = format!("track_1k/dashmap({} shards)", d.shards());
    // The shard locks alone: a read lock and unlock of one of 256
    // parking_lot RwLocks per operation, in a pseudo-random order, with
    // the 256 locks shared by both threads or one set per thread.
    let locks: Vec<Vec<CachePadded<RwLock<u64>>>> = (0..2)
        .map(|_| (0..256).map(|_| CachePadded::new(RwLock::new(0))).collect())
        .collect();
    let locks = &locks;
    let lock_worker = move |shared: bool| -> Worker<'_> {
        Box::new(move |i, stop| {
            let set = &locks[if shared { 0 } else { i }];
            let (mut n, mut x) = (0u64, 0x9e37_79b9_7f4a_7c15u64 + i as u64);
            while !stop.load(Relaxed) {
                for _ in 0..4096 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    black_box(*set[(x & 255) as usize].read());
                }
                n += 4096;
            }
            n
        })
    };
    // New flows: each thread creates its own 4,096 flows through the
    // engine, then removes them (as the sweeper would), over and over; the
    // count is flows created. Shared: one engine for both threads.
    let churn_frames: Vec<Vec<([u8; FRAME], Tuple)>> = (0..2u32)
        .map(|t| {
            (0..4096)
                .map(|k| {
                    let o = orig(NEW_BASE + t * 65_536 + k, Ports::Keep);
                    (frame(&o), o)
                })
                .collect()
        })
        .collect();
    let churn_shared = [engine(1 << 16)];
    let churn_separate = [engine(1 << 16), engine(1 << 16)];
    let configs: Vec<(&str, Worker<'_>)> = vec![
        ("alu_control", Box::new(alu)),
        (
            "new_flow_churn/shared",
            churn_worker(&churn_shared, &churn_frames),
        ),
        (
            "new_flow_churn/separate",
            churn_worker(&churn_separate, &churn_frames),
        ),
        ("rwlock_256/shared", lock_worker(true)),
        ("rwlock_256/separate", lock_worker(false)),
        ("engine_1k/shared", engine_worker(&shared, &sets)),
        ("engine_1k/separate", engine_worker(&separate, &sets_sep)),
        (
            "track_1k/ours",
            Box::new(move |i, stop| {
                let mut n = 0;
                while !stop.load(Relaxed) {
                    for k in &per[i] {
                        assert!(track_ours(o, k));
                    }
                    n += per[i].len() as u64;
                }
                n
            }),
        ),
        (
            dash_name.as_str(),
            Box::new(move |i, stop| {
                let mut n = 0;
                while !stop.load(Relaxed) {
                    for k in &per[i] {
                        assert!(track_dash(d, k));
                    }
                    n += per[i].len() as u64;
                }
                n
            }),
        ),
    ];

    // NATGW_BENCH_ONLY=<text>: only the configurations whose name holds it.
    let only: String = env_or("NATGW_BENCH_ONLY", String::new());
    let configs: Vec<(&str, Worker<'_>)> = configs
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| *i == 0 || name.contains(only.as_str()))
        .map(|(_, c)| c)
        .collect();
    // Control: pure ALU work on 2 threads right before and after each
    // 2-thread run, relative to the best 1-thread ALU rate. A 2-thread
    // sample counts as "clean" if both controls reached x1.85, i.e. the
    // machine really had two free cores at that moment.
    let alu1 = (0..3)
        .map(|_| run_threads(1, 0.2, &configs[0].1))
        .fold(0.0, f64::max);
    let control = || run_threads(2, 0.2, &configs[0].1) / alu1;
    println!(
        "threads: {reps} repetitions x {secs} s per run, load average {}",
        loadavg()
    );
    for (_, f) in &configs {
        run_threads(2, 0.2, f); // warm-up
    }
    // Per configuration: (1-thread rate, 2-thread rate, clean) per repetition.
    let mut res: Vec<Vec<(f64, f64, bool)>> = vec![Vec::new(); configs.len()];
    for rep in 0..reps {
        for (c, (name, f)) in configs.iter().enumerate().skip(1) {
            let a = run_threads(1, secs, f);
            let c0 = control();
            let b = run_threads(2, secs, f);
            let c1 = control();
            let clean = c0.min(c1) >= 1.85;
            println!(
                "threads/{name:<32} rep {rep}: 1 thread {:>7.2} M/s, 2 threads {:>7.2} M/s, x{:.2} \
                 (control x{c0:.2}/x{c1:.2}{})",
                a / 1e6,
                b / 1e6,
                b / a,
                if clean { ", clean" } else { "" }
            );
            res[c].push((a, b, clean));
        }
    }
    println!("threads: load average {}", loadavg());
    let summary = |r: &[&(f64, f64, bool)]| {
        if r.is_empty() {
            return "none".to_string();
        }
        let one: Vec<f64> = r.iter().map(|x| x.0).collect();
        let two: Vec<f64> = r.iter().map(|x| x.1).collect();
        let ratio: Vec<f64> = r.iter().map(|x| x.1 / x.0).collect();
        format!(
            "n={} 1 thread {:.2} M/s ({:.1} ns/op), 2 threads {:.2} M/s, median ratio x{:.2} \
             (min {:.2}, max {:.2})",
            r.len(),
            median(&one) / 1e6,
            1e9 / median(&one),
            median(&two) / 1e6,
            median(&ratio),
            ratio.iter().copied().fold(f64::MAX, f64::min),
            ratio.iter().copied().fold(0.0, f64::max),
        )
    };
    for ((name, _), r) in configs.iter().zip(&res).skip(1) {
        let all: Vec<&(f64, f64, bool)> = r.iter().collect();
        let clean: Vec<&(f64, f64, bool)> = r.iter().filter(|x| x.2).collect();
        println!("threads/{name:<32} MEDIAN all:   {}", summary(&all));
        println!("threads/{name:<32} MEDIAN clean: {}", summary(&clean));
    }
}
