//! Per-source flow limits (`[limits] flows_per_source`) and port
//! exhaustion of a pool, through the pure core with a virtual clock: what
//! an operator of a carrier-grade NAT checks. One inside host cannot take
//! more than its share of the table or of a pool's ports, other hosts are
//! not affected, refusals are counted and the worst sources are named,
//! and the per-source counts stay right whatever removes flows (expiry,
//! early drop, flush), across a snapshot restore, an HA standby's copy,
//! and a reload that changes the limit.

mod common;

use common::*;
use natgw::conntrack::flags;
use natgw::control::config::Config;
use natgw::dataplane::sys;
use natgw::engine::{Counters, DropReason, SESSION_RING_CAP, Verdict};
use natgw::ha::{Ha, HaConfig, Role};
use natgw::packet::Link;
use natgw::protocol::SourceLimitReport;
use natgw::snapshot::{Elapsed, RestoreOptions, ServicePolicy, Snapshot};
use std::collections::HashSet;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GREEDY: &str = "10.0.0.66";
const OTHER: &str = "10.0.0.7";
const SERVER: &str = "198.51.100.20:53";

fn limited(per_source: u32, max_flows: u32) -> ConfigText {
    ConfigText::seeded()
        .table(
            "limits",
            &format!("max_flows = {max_flows}\nflows_per_source = {per_source}"),
        )
        .rule(masquerade_lan())
}

/// A UDP query from `host` with source port `port` (a new flow each).
fn query(host: &str, port: u16) -> Vec<u8> {
    udp(&format!("{host}:{port}"), SERVER, b"q")
}

/// Live flows the table counts for `host`.
fn counted(gw: &Gw, host: &str) -> u32 {
    gw.engine.table().sources().flows(u32::from(ip(host)))
}

/// Live flows of `host` according to the flow list (the truth the counts
/// must agree with).
fn listed(gw: &Gw, host: &str) -> u32 {
    let a = u32::from(ip(host));
    gw.flows().iter().filter(|f| f.orig.src == a).count() as u32
}

#[test]
fn one_host_is_held_at_its_limit_and_another_is_not() {
    let mut gw = Gw::of(limited(5, 1000));
    for p in 0..5 {
        let _ = gw.on_lan(&query(GREEDY, 40000 + p)).seen();
    }
    // The sixth and later new flows of the greedy host are refused...
    for p in 5..25 {
        assert_eq!(
            gw.on_lan(&query(GREEDY, 40000 + p)),
            Out::Drop(DropReason::SourceLimit)
        );
    }
    assert_eq!(gw.drops(DropReason::SourceLimit), 20);
    // ... its existing flows carry on both ways ...
    let seen = gw.on_lan(&query(GREEDY, 40000)).seen();
    let back = gw
        .on_wan(&udp(SERVER, &format!("{}:{}", seen.src, seen.sport), b"a"))
        .seen();
    assert_eq!(back.dst_sa(), sa(&format!("{GREEDY}:40000")));
    // ... and another host is not limited by it.
    for p in 0..5 {
        let _ = gw.on_lan(&query(OTHER, 30000 + p)).seen();
    }
    assert_eq!((counted(&gw, GREEDY), counted(&gw, OTHER)), (5, 5));

    // What `natgw stats` shows: the limit, and the greedy host first.
    let r = SourceLimitReport::of(gw.engine.table().sources()).expect("limit set");
    assert_eq!((r.limit, r.sources), (Some(5), 2));
    assert_eq!(r.offenders.len(), 1, "{r:?}");
    let o = &r.offenders[0];
    assert_eq!(
        (o.addr, o.refused, o.error, o.flows),
        (ip(GREEDY), 20, 0, 5)
    );

    // When its flows time out, the host may open new ones again.
    gw.advance_secs(u64::from(gw.engine.config().timeouts.udp_stream) + 1);
    assert_eq!(gw.sweep(), 10);
    assert_eq!(counted(&gw, GREEDY), 0);
    assert_eq!(
        SourceLimitReport::of(gw.engine.table().sources())
            .unwrap()
            .sources,
        0,
        "nothing is kept for a source without flows"
    );
    let _ = gw.on_lan(&query(GREEDY, 41000)).seen();
}

#[test]
fn the_limit_also_holds_a_host_back_from_a_pools_ports() {
    // Ten ports; one host may take four of them towards one server.
    let gw = Gw::of(
        ConfigText::seeded()
            .table("limits", "flows_per_source = 4")
            .rule(masquerade_lan().s("ports", "1000-1009")),
    );
    for p in 0..10 {
        let out = gw.on_lan(&tcp(&format!("{GREEDY}:{}", 40000 + p), SERVER, SYN, b""));
        let want = if p < 4 {
            None
        } else {
            Some(DropReason::SourceLimit)
        };
        match want {
            None => assert!(out.is_forward(), "{}", out.short()),
            Some(r) => assert_eq!(out, Out::Drop(r)),
        }
    }
    // Six ports are left for the others, and no port was exhausted.
    for h in 10..16 {
        let _ = gw
            .on_lan(&tcp(&format!("10.0.0.{h}:40000"), SERVER, SYN, b""))
            .seen();
    }
    let usage = gw.engine.nat().port_usage();
    assert!(usage.iter().all(|u| u.exhausted == 0), "{usage:?}");
}

#[test]
fn counts_stay_right_through_early_drop_and_flush() {
    // A table of 8 with early drop: unreplied flows of other hosts are
    // evicted to make room; the greedy host's count follows.
    let gw = Gw::of(limited(3, 8));
    for p in 0..3 {
        let _ = gw.on_lan(&query(GREEDY, 40000 + p)).seen();
    }
    for h in 0..20 {
        let _ = gw
            .on_lan(&query(&format!("10.0.0.{}", 100 + h), 5000))
            .seen();
    }
    assert_eq!(gw.engine.table().len(), 8);
    assert!(gw.counters.snapshot().early_drops >= 15);
    for host in [GREEDY, "10.0.0.119", "10.0.0.100"] {
        assert_eq!(counted(&gw, host), listed(&gw, host), "{host}");
    }
    let sources = gw.engine.table().sources().sources();
    let distinct: HashSet<u32> = gw.flows().iter().map(|f| f.orig.src).collect();
    assert_eq!(sources, distinct.len());

    // Flushing a host's flows gives it its whole allowance back.
    let g = u32::from(ip(GREEDY));
    let before = listed(&gw, GREEDY);
    assert_eq!(gw.engine.flush(|r| r.orig.src == g) as u32, before);
    assert_eq!(counted(&gw, GREEDY), 0);
    for p in 0..3 {
        let _ = gw.on_lan(&query(GREEDY, 42000 + p)).seen();
    }
    assert_eq!(counted(&gw, GREEDY), 3);
    assert_eq!(gw.engine.flush(|_| true), 8);
    assert_eq!(gw.engine.table().sources().sources(), 0);
}

#[test]
fn a_snapshot_restore_counts_restored_flows_and_never_refuses_them() {
    let old = Gw::of(limited(5, 1000));
    for p in 0..5 {
        let _ = old.on_lan(&query(GREEDY, 40000 + p)).seen();
    }
    let _ = old.on_lan(&query(OTHER, 30000)).seen();
    let snap = Snapshot::capture(&old.engine, old.now);

    // A new process whose limit is lower than what the host has: the
    // restored flows all come back (they are live connections), counted,
    // and the host gets no new flow until it is under the limit.
    let new = Gw::of(limited(2, 1000));
    let rep = snap
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Fixed(Duration::ZERO),
                services: ServicePolicy::FromConfig,
                replace: false,
            },
        )
        .unwrap();
    assert_eq!(rep.flows, 6, "{rep:?}");
    assert_eq!((counted(&new, GREEDY), counted(&new, OTHER)), (5, 1));
    assert_eq!(
        new.on_lan(&query(GREEDY, 41000)),
        Out::Drop(DropReason::SourceLimit)
    );
    let _ = new.on_lan(&query(OTHER, 30001)).seen();
    assert_eq!(
        new.on_lan(&query(OTHER, 30002)),
        Out::Drop(DropReason::SourceLimit)
    );
    // The snapshot's records carry no trace of the counting.
    assert!(snap.flows.iter().all(|f| f.flags & flags::COUNTED == 0));
}

fn reload(gw: &Gw, text: &str) -> Result<(), String> {
    let cfg = Config::parse(text, Path::new("reload.toml")).map_err(|e| e.to_string())?;
    gw.engine
        .reload(&cfg.engine, cfg.ruleset, &cfg.sets, gw.now)
        .map(|_| ())
}

#[test]
fn a_reload_changes_the_limit_and_can_add_it_to_a_running_gateway() {
    // No limit at first: nothing is counted.
    let gw = Gw::of(ConfigText::seeded().rule(masquerade_lan()));
    for p in 0..6 {
        let _ = gw.on_lan(&query(GREEDY, 40000 + p)).seen();
    }
    assert!(SourceLimitReport::of(gw.engine.table().sources()).is_none());

    // A reload adds a limit of 4: the six live flows are counted (and
    // kept), new ones are refused.
    reload(&gw, &limited(4, 262_144).text()).unwrap();
    assert_eq!(counted(&gw, GREEDY), 6);
    assert_eq!(
        gw.on_lan(&query(GREEDY, 41000)),
        Out::Drop(DropReason::SourceLimit)
    );
    // Raised to 8: two more.
    reload(&gw, &limited(8, 262_144).text()).unwrap();
    let _ = gw.on_lan(&query(GREEDY, 41001)).seen();
    let _ = gw.on_lan(&query(GREEDY, 41002)).seen();
    assert_eq!(
        gw.on_lan(&query(GREEDY, 41003)),
        Out::Drop(DropReason::SourceLimit)
    );
    // Removed: no limit, counts still right.
    reload(&gw, &ConfigText::seeded().rule(masquerade_lan()).text()).unwrap();
    let _ = gw.on_lan(&query(GREEDY, 41003)).seen();
    assert_eq!(counted(&gw, GREEDY), 9);
    assert_eq!(listed(&gw, GREEDY), 9);
    let r = SourceLimitReport::of(gw.engine.table().sources()).unwrap();
    assert_eq!(r.limit, None);
    // A reload that also changes max_flows is refused whole: the limit
    // stays as it was.
    let e = reload(&gw, &limited(2, 1000).text()).unwrap_err();
    assert!(
        e.contains("[limits]") && e.contains("nothing was changed"),
        "{e}"
    );
    let _ = gw.on_lan(&query(GREEDY, 41004)).seen();
}

#[test]
fn bad_limits_name_file_line_and_column() {
    for (v, why) in [
        ("0", "flows_per_source: must be 1..=1000"),
        (
            "1001",
            "flows_per_source: must be 1..=1000 (max_flows), not 1001",
        ),
        ("\"x\"", "expected u32"),
    ] {
        let text = limited(1, 1000)
            .text()
            .replace("flows_per_source = 1", &format!("flows_per_source = {v}"));
        let line = text
            .lines()
            .position(|l| l.starts_with("flows_per_source"))
            .unwrap()
            + 1;
        let Err(e) = Config::parse(&text, Path::new("natgw.toml")) else {
            panic!("flows_per_source = {v} accepted");
        };
        let e = e.to_string();
        assert!(e.starts_with(&format!("natgw.toml:{line}:20:")), "{v}: {e}");
        assert!(e.contains(why), "{v}: {e}");
    }
}

// ---------------------------------------------------------------------------
// Port exhaustion of a pool

#[test]
fn a_pool_out_of_ports_refuses_new_flows_per_address_and_protocol_and_keeps_old_ones() {
    // Two pool addresses with four ports each: eight concurrent flows to
    // one server per protocol.
    let gw = Gw::of(
        ConfigText::seeded().rule(
            Fields::new()
                .s("oif", "wan0")
                .s("src", "10.0.0.0/8")
                .s("action", "snat")
                .s("to", "203.0.113.20-203.0.113.21")
                .s("ports", "2000-2003"),
        ),
    );
    let mut live = Vec::new();
    for h in 0..8 {
        let c = format!("10.0.0.{}:40000", 10 + h);
        let seen = gw.on_lan(&tcp(&c, "198.51.100.9:443", SYN, b"")).seen();
        live.push((c, seen));
    }
    // Load: 200 more hosts try; every one is refused and counted.
    for h in 0..200 {
        let c = format!("10.0.{}.{}:40000", 1 + h / 200, h % 200 + 1);
        assert_eq!(
            gw.on_lan(&tcp(&c, "198.51.100.9:443", SYN, b"")),
            Out::Drop(DropReason::PortExhausted)
        );
    }
    assert_eq!(gw.drops(DropReason::PortExhausted), 200);
    let usage = gw.engine.nat().port_usage();
    let tcp_rows: Vec<_> = usage.iter().filter(|u| u.proto == "tcp").collect();
    assert_eq!(
        tcp_rows.iter().map(|u| u.flows).sum::<u64>(),
        8,
        "{usage:?}"
    );
    assert_eq!(
        tcp_rows.iter().map(|u| u.exhausted).sum::<u64>(),
        200,
        "{usage:?}"
    );
    assert!(
        tcp_rows
            .iter()
            .all(|u| u.addr == ip("203.0.113.20") || u.addr == ip("203.0.113.21"))
    );
    // UDP to the same server has its own ports.
    let _ = gw
        .on_lan(&udp("10.0.0.10:40000", "198.51.100.9:443", b"q"))
        .seen();
    // The existing connections are untouched: the handshake completes
    // both ways with the same translation.
    for (c, seen) in &live {
        let out = format!("{}:{}", seen.src, seen.sport);
        let back = gw
            .on_wan(&tcp("198.51.100.9:443", &out, SYN | ACK, b""))
            .seen();
        assert_eq!(back.dst_sa(), sa(c));
        let again = gw.on_lan(&tcp(c, "198.51.100.9:443", ACK, b"")).seen();
        assert_eq!((again.src, again.sport), (seen.src, seen.sport));
    }
    assert_eq!(gw.flows().len(), 9);
}

// ---------------------------------------------------------------------------
// HA: the standby's copy is counted like the active node's flows

fn free_addr() -> SocketAddrV4 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    }
}

#[test]
fn an_ha_standby_counts_the_flows_it_was_sent_once_each() {
    let (a, b) = (free_addr(), free_addr());
    let cfg = |local, peer| HaConfig {
        local,
        peer,
        key: None,
        refresh_secs: 1,
        max_datagram: 1472,
    };
    let engine = || {
        let c = Config::parse(&limited(5, 1000).text(), Path::new("ha.toml")).unwrap();
        Arc::new(c.build_engine().unwrap())
    };
    let (active, standby) = (engine(), engine());
    let _ha_a = Ha::start(cfg(a, b), active.clone(), Role::Master).unwrap();
    let _ha_b = Ha::start(cfg(b, a), standby.clone(), Role::Backup).unwrap();
    let c = Counters::default();
    let lan = active.interface_id("lan0").unwrap();
    let send = |frame: &[u8]| {
        let mut buf = vec![0u8; frame.len() + 128];
        buf[..frame.len()].copy_from_slice(frame);
        active.process(&mut buf, frame.len(), Link::Ethernet, lan, sys::now(), &c)
    };
    let g = u32::from(ip(GREEDY));
    let on = |e: &natgw::engine::Engine| {
        let listed = e
            .flows(sys::now())
            .iter()
            .filter(|f| f.orig.src == g)
            .count() as u32;
        (e.table().sources().flows(g), listed)
    };
    for p in 0..5 {
        assert!(matches!(
            send(&query(GREEDY, 40000 + p)),
            Verdict::Forward { .. }
        ));
    }
    assert_eq!(
        send(&query(GREEDY, 40005)),
        Verdict::Drop(DropReason::SourceLimit)
    );
    // Every packet changes a flow, so the standby is sent new copies of
    // the same five flows again and again (and the refresh resends them):
    // each copy replaces the one before and is counted once.
    let end = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < end {
        for p in 0..5 {
            let _ = send(&query(GREEDY, 40000 + p));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while on(&standby) != (5, 5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(on(&active), (5, 5));
    assert_eq!(on(&standby), (5, 5), "standby: (counted, listed)");
}

/// After a stall, a backlog of expired flows ends no faster than the
/// session log takes their delete events: expiry waits for the logger
/// instead of overflowing its ring, so no event is lost and every flow
/// still ends.
#[test]
fn a_backlog_of_expiries_waits_for_the_session_log() {
    let mut gw = Gw::of(
        ConfigText::seeded()
            .table("limits", "max_flows = 200000")
            .table("timeouts", "udp = 2")
            .rule(masquerade_lan()),
    );
    gw.engine.sessions().enable();
    let n = SESSION_RING_CAP + SESSION_RING_CAP / 2;
    let mut events = Vec::new();
    for i in 0..n {
        let dst = format!("198.51.100.{}:{}", 1 + i / 60000, 1 + i % 60000);
        gw.on_lan(&udp("10.0.0.9:5000", &dst, b"q")).seen();
        if i % 10_000 == 0 {
            gw.engine.sessions().drain(&mut events);
        }
    }
    gw.engine.sessions().drain(&mut events);
    assert_eq!(events.len(), n, "one create each");
    gw.advance_secs(3);
    // One sweep that could visit every slot: it stops at the ring's room.
    let first = gw.engine.expire(gw.now, usize::MAX / 2);
    assert_eq!(first, SESSION_RING_CAP);
    assert_eq!(
        gw.engine.expire(gw.now, usize::MAX / 2),
        0,
        "the ring is full"
    );
    events.clear();
    assert_eq!(gw.engine.sessions().drain(&mut events), SESSION_RING_CAP);
    let second = gw.engine.expire(gw.now, usize::MAX / 2);
    assert_eq!(first + second, n);
    assert_eq!(gw.engine.table().len(), 0);
    assert_eq!(gw.engine.sessions().missed(), 0, "no event lost");
}

/// A full table never reports more flows than `max_flows`, not even for the
/// moment a refused insert is undone: under a SYN flood `natgw stats` once
/// read 2049 flows of 2048 (tests/e2e_flood.rs), when the count was taken
/// with an add and given back with a subtract. One thread keeps offering
/// new flows to a full table while another reads the count.
#[test]
fn a_full_table_never_counts_past_max_flows() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let gw = Gw::of(
        ConfigText::seeded()
            .table("limits", "max_flows = 16\nearly_drop = false")
            .rule(masquerade_lan()),
    );
    for p in 0..16 {
        let _ = gw.on_lan(&query(OTHER, 20000 + p)).seen();
    }
    assert_eq!(gw.engine.table().len(), 16);
    let stop = AtomicBool::new(false);
    let (refused, most) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut most = 0;
            while !stop.load(Relaxed) {
                most = most.max(gw.engine.table().len());
            }
            most
        });
        let start = Instant::now();
        let mut refused = 0u32;
        while start.elapsed() < Duration::from_millis(300) {
            let port = 1024 + (refused % 60000) as u16;
            assert_eq!(
                gw.on_lan(&query(GREEDY, port)),
                Out::Drop(DropReason::FlowTableFull)
            );
            refused += 1;
        }
        stop.store(true, Relaxed);
        (refused, reader.join().unwrap())
    });
    assert!(refused > 1000, "only {refused} new flows offered");
    assert_eq!(most, 16, "the count went past max_flows");
    assert_eq!(gw.engine.table().len(), 16);
}
