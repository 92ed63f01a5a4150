//! Snapshots end to end on the pure core: an engine built from a config
//! carries masquerade, DNAT, UDP EIM/EIF, load-balanced and ICMP flows, a
//! snapshot of it goes through a file into a fresh engine on another
//! clock, and the fresh engine forwards every packet exactly as the old
//! one does, keeps the restored outside ports from new flows, and has the
//! same port use, EIM mappings, set entries, persistence entries and
//! services.

mod common;

use common::{ConfigText, Fields, dnat_web, masquerade_lan};
use etherparse::PacketBuilder;
use natgw::conntrack::{FlowRecord, TcpState, Time, flags};
use natgw::control::config::Config;
use natgw::engine::{Counters, DropReason, Engine, Verdict};
use natgw::lb::{Change, RealSpec};
use natgw::nat::{IfId, Prefix, nat_flags};
use natgw::packet::{Link, Tuple};
use natgw::snapshot::{
    self, Elapsed, FlowEntry, RestoreOptions, ServicePolicy, Snapshot, max_bytes_for, read,
    write_atomic,
};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// The gateway of every test here, with room for `max_flows` flows: a
/// timed and a permanent set, a drop rule on the timed set, a port
/// forward, masquerade with EIM/EIF, and a load-balanced service.
fn config_max_flows(max_flows: u32) -> String {
    let ei = "endpoint-independent";
    ConfigText::seeded()
        .table("limits", &format!("max_flows = {max_flows}"))
        .set(Fields::new().name("blocked").v("timeout", 300))
        .set(
            Fields::new()
                .name("trusted")
                .v("elements", r#"["10.0.0.0/28"]"#),
        )
        .rule(
            Fields::new()
                .s("iif", "wan0")
                .s("src_set", "blocked")
                .s("action", "drop"),
        )
        .rule(dnat_web())
        .rule(masquerade_lan().s("mapping", ei).s("filtering", ei))
        .service(
            Fields::new()
                .s("address", "203.0.113.10")
                .v("port", 80)
                .s("scheduler", "rr")
                .v("persistence", 300),
            &[
                Fields::new().s("address", "10.0.0.20").v("port", 8080),
                Fields::new().s("address", "10.0.0.21").v("port", 8080),
            ],
        )
        .text()
}

fn config() -> String {
    config_max_flows(4096)
}

const LAN: IfId = 0;
const WAN: IfId = 1;

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> u32 {
    s.parse::<Ipv4Addr>().unwrap().into()
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x10], [2, 0, 0, 0, 0, 1])
}

fn tcp(src: &str, dst: &str, fl: u8, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let mut b =
        eth()
            .ipv4(s.ip().octets(), d.ip().octets(), 64)
            .tcp(s.port(), d.port(), 1000, 64240);
    if fl & SYN != 0 {
        b = b.syn();
    }
    if fl & PSH != 0 {
        b = b.psh();
    }
    if fl & ACK != 0 {
        // Acknowledges the other side's SYN (seq 1000): in window.
        b = b.ack(1001);
    }
    if fl & FIN != 0 {
        b = b.fin();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let mut out = Vec::new();
    eth()
        .ipv4(s.ip().octets(), d.ip().octets(), 64)
        .udp(s.port(), d.port())
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ping(src: &str, dst: &str, id: u16, reply: bool) -> Vec<u8> {
    let (s, d): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    let b = eth().ipv4(s.octets(), d.octets(), 64);
    let mut out = Vec::new();
    if reply {
        b.icmpv4_echo_reply(id, 1).write(&mut out, b"hi").unwrap();
    } else {
        b.icmpv4_echo_request(id, 1).write(&mut out, b"hi").unwrap();
    }
    out
}

/// What became of a frame: the verdict and the bytes that leave.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    verdict: Verdict,
    frame: Vec<u8>,
}

impl Out {
    /// Source and destination of the forwarded packet.
    fn endpoints(&self) -> (SocketAddrV4, SocketAddrV4) {
        assert!(
            matches!(self.verdict, Verdict::Forward { .. }),
            "not forwarded: {:?}",
            self.verdict
        );
        let p = etherparse::SlicedPacket::from_ethernet(&self.frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(v4)) = p.net else {
            panic!("not IPv4")
        };
        let (s, d) = (v4.header().source_addr(), v4.header().destination_addr());
        let (sp, dp) = match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
            Some(etherparse::TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
            _ => (0, 0),
        };
        (SocketAddrV4::new(s, sp), SocketAddrV4::new(d, dp))
    }
}

/// An engine from [`config`] (parsed anew: a config's sets are shared by
/// the engines built from it) and its clock.
struct Gw {
    engine: Engine,
    counters: Counters,
    now: Time,
}

impl Gw {
    fn new(config: &str, now: Time) -> Gw {
        let cfg = Config::parse(config, Path::new("snapshot-test.toml")).unwrap();
        Gw {
            engine: cfg.build_engine().unwrap(),
            counters: Counters::default(),
            now,
        }
    }

    fn send(&self, iif: IfId, frame: &[u8]) -> Out {
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        let verdict = self.engine.process(
            &mut buf,
            frame.len(),
            Link::Ethernet,
            iif,
            self.now,
            &self.counters,
        );
        Out {
            verdict,
            frame: buf[..frame.len()].to_vec(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = Time(self.now.0 + d.as_nanos() as u64);
    }

    fn flows(&self) -> Vec<FlowRecord> {
        let mut v = self.engine.flows(self.now);
        v.sort_by_key(|r| r.orig);
        v
    }
}

const T0: Time = Time::from_secs(1_000);
/// The new process's clock has nothing to do with the old one's.
const TB: Time = Time::from_secs(77_000);
/// Wall-clock time between capture and restore in these tests.
const GAP: Duration = Duration::from_secs(2);

/// Outside endpoints the old gateway chose, found while building.
struct Built {
    gw: Gw,
    /// Masqueraded TCP flow's outside port.
    tcp_port: u16,
    /// The UDP EIM mapping's outside port.
    udp_port: u16,
    /// The real server the LB client went to.
    real: SocketAddrV4,
}

/// The old gateway with one of each kind of flow, run-time set entries
/// and a run-time service change, 10 s after the flows started.
fn build_old() -> Built {
    let mut gw = Gw::new(&config(), T0);
    // Masquerade, TCP, established.
    let o = gw.send(LAN, &tcp("10.0.0.2:40000", "198.51.100.9:443", SYN, b""));
    let tcp_port = o.endpoints().0.port();
    let out = format!("203.0.113.1:{tcp_port}");
    gw.send(WAN, &tcp("198.51.100.9:443", &out, SYN | ACK, b""))
        .endpoints();
    gw.send(LAN, &tcp("10.0.0.2:40000", "198.51.100.9:443", ACK, b""))
        .endpoints();
    // DNAT, TCP, half open.
    let o = gw.send(
        WAN,
        &tcp("198.51.100.20:5555", "203.0.113.1:8080", SYN, b""),
    );
    assert_eq!(o.endpoints().1, sa("10.0.0.5:80"));
    gw.send(
        LAN,
        &tcp("10.0.0.5:80", "198.51.100.20:5555", SYN | ACK, b""),
    )
    .endpoints();
    // UDP with EIM: two remotes share the mapping; a third comes in by EIF.
    let o = gw.send(LAN, &udp("10.0.0.7:5000", "192.0.2.53:53", b"q"));
    let udp_port = o.endpoints().0.port();
    let o = gw.send(LAN, &udp("10.0.0.7:5000", "192.0.2.99:123", b"ntp"));
    assert_eq!(o.endpoints().0.port(), udp_port);
    let uout = format!("203.0.113.1:{udp_port}");
    gw.send(WAN, &udp("192.0.2.53:53", &uout, b"a")).endpoints();
    let o = gw.send(WAN, &udp("192.0.2.200:999", &uout, b"eif"));
    assert_eq!(o.endpoints().1, sa("10.0.0.7:5000"));
    // Load balanced (with persistence).
    let o = gw.send(WAN, &tcp("198.51.100.30:7000", "203.0.113.10:80", SYN, b""));
    let real = o.endpoints().1;
    gw.send(
        LAN,
        &tcp(&real.to_string(), "198.51.100.30:7000", SYN | ACK, b""),
    )
    .endpoints();
    // ICMP echo.
    gw.send(LAN, &ping("10.0.0.3", "198.51.100.9", 77, false))
        .endpoints();

    // Run-time changes: set entries (timed, and permanent), a new real.
    let sets = gw.engine.sets();
    let blocked = &sets["blocked"];
    blocked.add("198.51.100.66".parse().unwrap(), None, gw.now);
    sets["trusted"].add("10.0.0.200/32".parse().unwrap(), Some(0), gw.now);
    let lb = gw.engine.lb();
    let key = lb.specs()[0].key;
    let t = lb
        .apply(&Change::AddReal {
            service: key,
            real: RealSpec {
                addr: ip("10.0.0.22"),
                port: 8080,
                weight: 1,
            },
        })
        .unwrap();
    gw.engine.swap_lb(t);
    assert_eq!(gw.flows().len(), 7);

    gw.advance(Duration::from_secs(10));
    Built {
        gw,
        tcp_port,
        udp_port,
        real,
    }
}

/// Old engine -> file -> new engine; the old one's clock moved on by
/// [`GAP`] too, so both agree on every timer.
fn handover(b: &mut Built, opts: RestoreOptions) -> (Gw, snapshot::RestoreReport) {
    let dir = tempfile::Builder::new()
        .prefix("natgw-snapshot-")
        .tempdir()
        .unwrap();
    let snap = Snapshot::capture(&b.gw.engine, b.gw.now);
    let path = dir.path().join("natgw.snap");
    write_atomic(&path, &snap).unwrap();
    let loaded = read(&path, max_bytes_for(4096)).unwrap();
    assert_eq!(loaded, snap);
    let new = Gw::new(&config(), TB);
    let report = loaded.restore(&new.engine, new.now, opts).unwrap();
    b.gw.advance(GAP);
    (new, report)
}

fn opts() -> RestoreOptions {
    RestoreOptions {
        elapsed: Elapsed::Fixed(GAP),
        services: ServicePolicy::FromSnapshot,
        replace: false,
    }
}

/// A flow keeps its age across the handover (format 3): the new process's
/// session log gives it the start the old one logged, not the restore.
#[test]
fn restored_flows_keep_their_age() {
    let mut b = build_old();
    let (new, _) = handover(&mut b, opts());
    let old: std::collections::HashMap<_, _> =
        b.gw.flows().into_iter().map(|r| (r.orig, r.born)).collect();
    let flows = new.flows();
    assert!(!flows.is_empty());
    for r in flows {
        let before = b.gw.now.0 - old[&r.orig].0;
        let after = new.now.0 - r.born.0;
        assert!(
            before.abs_diff(after) <= natgw::conntrack::BORN_UNIT_NS,
            "{:?}: {before} ns old before, {after} ns after the handover",
            r.orig
        );
        assert!(after >= GAP.as_nanos() as u64, "older than the gap");
    }
}

#[test]
fn restored_flows_forward_exactly_as_before() {
    let mut b = build_old();
    let (new, rep) = handover(&mut b, opts());
    assert_eq!(
        (
            rep.flows,
            rep.flows_expired,
            rep.flows_duplicate,
            rep.flows_table_full,
            rep.flows_bad,
            rep.flows_clamped
        ),
        (7, 0, 0, 0, 0, 0),
        "{rep:?}"
    );
    assert_eq!((rep.eim, rep.eim_dropped), (1, 0));
    assert_eq!((rep.set_entries, rep.set_entries_expired), (2, 0));
    assert!(rep.sets_missing.is_empty());
    assert_eq!((rep.persistence, rep.persistence_skipped), (1, 0));
    assert_eq!(rep.services, Some(1));
    assert_eq!(rep.elapsed_ms, 2_000);

    // Same flows, same counters, timers re-based onto the new clock.
    let (old_flows, new_flows) = (b.gw.flows(), new.flows());
    assert_eq!(old_flows.len(), new_flows.len());
    for (o, n) in old_flows.iter().zip(&new_flows) {
        assert_eq!(
            // A restored flow's creation time is the restore's (not in
            // the file).
            FlowRecord {
                expires: Time(0),
                born: Time(0),
                ..o.clone()
            },
            FlowRecord {
                expires: Time(0),
                born: Time(0),
                ..n.clone()
            }
        );
        assert_eq!(o.remaining(b.gw.now), n.remaining(new.now), "{o:?}");
    }

    // Every kind of packet of every flow, both ways: same verdict, same
    // bytes out of both gateways.
    let (tp, up) = (b.tcp_port, b.udp_port);
    let (tout, uout) = (format!("203.0.113.1:{tp}"), format!("203.0.113.1:{up}"));
    let real = b.real.to_string();
    let probes: Vec<(IfId, Vec<u8>)> = vec![
        (WAN, tcp("198.51.100.9:443", &tout, PSH | ACK, b"reply")),
        (
            LAN,
            tcp("10.0.0.2:40000", "198.51.100.9:443", PSH | ACK, b"more"),
        ),
        (
            LAN,
            tcp("10.0.0.5:80", "198.51.100.20:5555", PSH | ACK, b"srv"),
        ),
        (
            WAN,
            tcp("198.51.100.20:5555", "203.0.113.1:8080", ACK, b"cli"),
        ),
        (WAN, udp("192.0.2.53:53", &uout, b"answer")),
        (WAN, udp("192.0.2.99:123", &uout, b"time")),
        (LAN, udp("10.0.0.7:5000", "192.0.2.200:999", b"to-eif")),
        (WAN, udp("192.0.2.201:1000", &uout, b"new eif")),
        (
            WAN,
            tcp("198.51.100.30:7000", "203.0.113.10:80", ACK, b"lb"),
        ),
        (
            LAN,
            tcp(&real, "198.51.100.30:7000", PSH | ACK, b"lb reply"),
        ),
        (WAN, ping("198.51.100.9", "203.0.113.1", 77, true)),
        (LAN, ping("10.0.0.3", "198.51.100.9", 77, false)),
        // A new connection of the persistent LB client: same real server.
        (WAN, tcp("198.51.100.30:7001", "203.0.113.10:80", SYN, b"")),
        // The run-time blocked entry still blocks.
        (WAN, tcp("198.51.100.66:1", "203.0.113.1:8080", SYN, b"")),
    ];
    for (i, (iif, f)) in probes.iter().enumerate() {
        let (o, n) = (b.gw.send(*iif, f), new.send(*iif, f));
        assert_eq!(o, n, "probe {i}");
        assert!(
            matches!(o.verdict, Verdict::Forward { .. }) || i == probes.len() - 1,
            "probe {i}: {:?}",
            o.verdict
        );
    }
    assert_eq!(new.counters.drops(DropReason::RuleDrop), 1);
    let persist = new.send(WAN, &tcp("198.51.100.30:7002", "203.0.113.10:80", SYN, b""));
    assert_eq!(persist.endpoints().1, b.real);
}

#[test]
fn new_flows_cannot_take_a_restored_outside_port() {
    let mut b = build_old();
    let (new, _) = handover(&mut b, opts());
    let fresh = Gw::new(&config(), TB);
    let (tp, up) = (b.tcp_port, b.udp_port);

    // Another inside host, same source port, same remote: a fresh gateway
    // keeps the port; the restored one must not (the remote would see two
    // connections on one tuple).
    let steal = tcp(&format!("10.0.0.4:{tp}"), "198.51.100.9:443", SYN, b"");
    assert_eq!(fresh.send(LAN, &steal).endpoints().0.port(), tp);
    let got = new.send(LAN, &steal).endpoints().0.port();
    assert_ne!(got, tp);
    assert_eq!(b.gw.send(LAN, &steal).endpoints().0.port(), got);

    // The UDP EIM mapping's port is held for its inside endpoint, towards
    // every remote.
    let steal = udp(&format!("10.0.0.8:{up}"), "192.0.2.77:53", b"q");
    assert_eq!(fresh.send(LAN, &steal).endpoints().0.port(), up);
    let got = new.send(LAN, &steal).endpoints().0.port();
    assert_ne!(got, up);
    assert_eq!(b.gw.send(LAN, &steal).endpoints().0.port(), got);
    // While the mapping's owner still gets it towards a new remote.
    let own = udp("10.0.0.7:5000", "192.0.2.78:53", b"q");
    assert_eq!(new.send(LAN, &own).endpoints().0.port(), up);
}

#[test]
fn port_use_eim_sets_persistence_and_services_come_back() {
    let mut b = build_old();
    let (new, _) = handover(&mut b, opts());
    let (old, oe) = (&b.gw.engine, &b.gw);

    assert_eq!(new.engine.nat().port_usage(), old.nat().port_usage());
    let usage: Vec<(String, u64)> = new
        .engine
        .nat()
        .port_usage()
        .into_iter()
        .map(|u| (u.proto, u.flows))
        .collect();
    assert_eq!(
        usage,
        [("icmp".into(), 1), ("tcp".into(), 1), ("udp".into(), 2)],
        "masqueraded flows: TCP, ICMP, two UDP (not the EIF one)"
    );
    let eim = new.engine.nat().eim_mappings();
    assert_eq!(eim, old.nat().eim_mappings());
    assert_eq!((eim[0].refs, eim[0].eif), (3, true));

    // Set entries with their time left (300 s - 10 s - the 2 s gap), the
    // permanent run-time entry, and the config's own entries from the new
    // config.
    let sets = new.engine.sets();
    let blocked = sets["blocked"].members(new.now);
    assert_eq!(
        blocked,
        [(
            "198.51.100.66/32".parse::<Prefix>().unwrap(),
            Some(Time(new.now.0 + Time::from_secs(288).0))
        )]
    );
    let trusted = sets["trusted"].members(new.now);
    assert_eq!(
        trusted,
        [
            ("10.0.0.0/28".parse::<Prefix>().unwrap(), None),
            ("10.0.0.200/32".parse::<Prefix>().unwrap(), None),
        ]
    );

    // Persistence entry, same time left.
    let (pe_old, pe_new) = (old.lb().entries(oe.now), new.engine.lb().entries(new.now));
    assert_eq!(pe_new.len(), 1);
    assert_eq!(pe_new[0].client, ip("198.51.100.30"));
    assert_eq!(
        (pe_new[0].real, pe_new[0].port),
        (u32::from(*b.real.ip()), b.real.port())
    );
    assert_eq!(
        pe_new[0].expires.saturating_sub(new.now),
        pe_old[0].expires.saturating_sub(oe.now)
    );
    assert_eq!(
        pe_new[0].expires.saturating_sub(new.now),
        Time::from_secs(288)
    );

    // Services with the run-time change, and the real servers' counts.
    assert_eq!(new.engine.lb().specs(), old.lb().specs());
    assert_eq!(new.engine.lb().specs()[0].reals.len(), 3);
    let counts = |e: &Engine, now| {
        e.lb().status(now)[0]
            .reals
            .iter()
            .map(|r| (r.addr, r.active, r.inactive, r.persistent))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&new.engine, new.now), counts(old, oe.now));
    // Their packets and bytes (live flows' counters, kept without a walk
    // over the flow table) come back with the flows.
    let traffic = |e: &Engine, now| {
        e.services(now)[0]
            .reals
            .iter()
            .map(|r| (r.addr, r.packets_in, r.packets_out, r.bytes_in, r.bytes_out))
            .collect::<Vec<_>>()
    };
    assert_eq!(traffic(&new.engine, new.now), traffic(old, oe.now));
    assert_eq!(
        traffic(old, oe.now)
            .iter()
            .map(|t| (t.1, t.2))
            .fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1)),
        (1, 1),
        "the LB connection's SYN in and SYN-ACK out"
    );
    assert_eq!(
        counts(&new.engine, new.now)
            .iter()
            .map(|c| c.2)
            .sum::<u32>(),
        1,
        "the half-open LB connection counts as inactive"
    );
}

#[test]
fn services_of_the_config_can_be_kept() {
    let mut b = build_old();
    let o = RestoreOptions {
        services: ServicePolicy::FromConfig,
        ..opts()
    };
    let (new, rep) = handover(&mut b, o);
    assert_eq!(rep.services, None);
    assert_eq!(new.engine.lb().specs()[0].reals.len(), 2);
    // The flow to the real server keeps its translation either way.
    let real = b.real.to_string();
    let f = tcp(&real, "198.51.100.30:7000", PSH | ACK, b"x");
    assert_eq!(new.send(LAN, &f), b.gw.send(LAN, &f));
}

#[test]
fn time_passed_since_the_capture_expires_what_ran_out() {
    let b = build_old();
    let snap = Snapshot::capture(&b.gw.engine, b.gw.now);
    // 200 s later only the established TCP flow is left: UDP (30 s, or
    // 120 s once replied), ICMP (30 s) and SYN_RECV (60 s) ran out.
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Fixed(Duration::from_secs(200)),
                ..RestoreOptions::default()
            },
        )
        .unwrap();
    let live: Vec<FlowRecord> = new.flows();
    assert_eq!((rep.flows, rep.flows_expired), (1, 6), "{rep:?}");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].tcp_state, TcpState::Established);
    assert!(live[0].has(flags::ASSURED));
    // No UDP flow left: the EIM mapping goes too, and its port is free.
    assert_eq!((rep.eim, rep.eim_dropped), (0, 1));
    assert!(new.engine.nat().eim_mappings().is_empty());
    // Set entries: the timed one has 90 s left, the permanent one stays.
    assert_eq!((rep.set_entries, rep.set_entries_expired), (2, 0));

    // A day later nothing but the permanent set entry is left.
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Fixed(Duration::from_secs(6 * 86_400)),
                ..RestoreOptions::default()
            },
        )
        .unwrap();
    assert_eq!((rep.flows, rep.flows_expired), (0, 7));
    assert_eq!((rep.set_entries, rep.set_entries_expired), (1, 1));
    assert_eq!((rep.persistence, rep.persistence_skipped), (0, 1));
    assert!(new.engine.nat().port_usage().iter().all(|u| u.flows == 0));

    // The wall clock is the default: a fresh capture loses almost nothing.
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(&new.engine, new.now, RestoreOptions::default())
        .unwrap();
    assert_eq!(rep.flows, 7);
    assert!(rep.elapsed_ms < 60_000);
}

#[test]
fn restoring_twice_counts_duplicates_and_keeps_counts_straight() {
    let b = build_old();
    let snap = Snapshot::capture(&b.gw.engine, b.gw.now);
    let new = Gw::new(&config(), TB);
    snap.restore(&new.engine, new.now, opts()).unwrap();
    let rep = snap.restore(&new.engine, new.now, opts()).unwrap();
    assert_eq!((rep.flows, rep.flows_duplicate), (0, 7));
    assert_eq!(rep.eim_dropped, 1, "the engine has that mapping already");
    assert_eq!(
        new.engine.nat().port_usage(),
        b.gw.engine.nat().port_usage()
    );
    assert_eq!(
        new.engine.nat().eim_mappings(),
        b.gw.engine.nat().eim_mappings()
    );
    // Expiring every restored flow brings the counts back to zero.
    let later = Time(new.now.0 + Time::from_secs(10 * 86_400).0);
    new.engine.expire(later, 1 << 20);
    assert!(new.engine.nat().port_usage().iter().all(|u| u.flows == 0));
    assert!(new.engine.nat().eim_mappings().is_empty());
    let st = new.engine.lb().status(later);
    assert!(st[0].reals.iter().all(|r| r.active + r.inactive == 0));
}

#[test]
fn a_table_that_is_too_small_takes_what_fits() {
    let b = build_old();
    let snap = Snapshot::capture(&b.gw.engine, b.gw.now);
    let new = Gw::new(&config_max_flows(3), TB);
    let rep = snap.restore(&new.engine, new.now, opts()).unwrap();
    assert_eq!((rep.flows, rep.flows_table_full), (3, 4));
    assert_eq!(new.engine.table().len(), 3);
}

/// A masqueraded TCP flow from inside port `sport` with `left_s` seconds
/// left, as a running gateway would write it.
fn masq_entry(sport: u16, left_ns: u64) -> FlowEntry {
    let orig = Tuple {
        src: ip("10.0.0.2"),
        dst: ip("198.51.100.9"),
        sport,
        dport: 443,
        proto: 6,
    };
    let out = Tuple {
        src: ip("203.0.113.1"),
        ..orig
    };
    FlowEntry {
        orig,
        reply: out.invert(),
        tcp_state: TcpState::Established,
        flags: flags::SEEN_REPLY | flags::ASSURED | nat_flags::SNAT,
        mark: 3,
        packets: [5, 4],
        bytes: [500, 4000],
        remaining_ns: left_ns,
        age_ns: 0,
    }
}

/// A snapshot holding only `flows`.
fn flows_only(flows: Vec<FlowEntry>) -> Snapshot {
    Snapshot {
        version: snapshot::CURRENT_VERSION,
        captured_unix_ns: 0,
        flows,
        eim: vec![],
        sets: vec![],
        persistence: vec![],
        services: None,
        counters: None,
    }
}

fn ignore_elapsed() -> RestoreOptions {
    RestoreOptions {
        elapsed: Elapsed::Ignore,
        services: ServicePolicy::FromConfig,
        replace: false,
    }
}

/// Found by fuzzing: flows no gateway writes (tuples of two protocols,
/// and the like) were restored as they were. They are skipped and
/// counted as bad.
#[test]
fn inconsistent_flows_are_skipped_and_counted() {
    let good = masq_entry(40_000, 100_000_000_000);
    let mixed = {
        let mut f = masq_entry(40_001, 100_000_000_000);
        f.reply.proto = 17;
        f
    };
    let udp_with_tcp_state = {
        let mut f = masq_entry(40_002, 100_000_000_000);
        f.orig.proto = 17;
        f.reply.proto = 17;
        f
    };
    let ping = FlowEntry {
        orig: Tuple {
            src: ip("10.0.0.2"),
            dst: ip("198.51.100.9"),
            sport: 77,
            dport: 0,
            proto: 1,
        },
        reply: Tuple {
            src: ip("198.51.100.9"),
            dst: ip("203.0.113.1"),
            sport: 0,
            dport: 77,
            proto: 1,
        },
        tcp_state: TcpState::None,
        flags: nat_flags::SNAT,
        mark: 3,
        packets: [1, 0],
        bytes: [84, 0],
        remaining_ns: 20_000_000_000,
        age_ns: 0,
    };
    let ping_id_in_both_ports = {
        let mut f = ping;
        f.orig.sport = 78;
        f.orig.dport = 78;
        f.reply.dport = 78;
        f
    };
    let tcp_with_eim = {
        let mut f = masq_entry(40_003, 100_000_000_000);
        f.flags |= nat_flags::EIM;
        f
    };
    let snap = flows_only(vec![
        good,
        mixed,
        udp_with_tcp_state,
        ping,
        ping_id_in_both_ports,
        tcp_with_eim,
    ]);
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(&new.engine, new.now, ignore_elapsed())
        .unwrap();
    assert_eq!(
        (rep.flows, rep.flows_bad, rep.flows_clamped),
        (2, 4, 0),
        "{rep:?}"
    );
    let live: Vec<Tuple> = new.flows().iter().map(|r| r.orig).collect();
    let mut want = vec![good.orig, ping.orig];
    want.sort();
    assert_eq!(live, want);
    // The UDP reply tuple of the mixed flow catches nothing.
    assert!(!new.engine.table().contains(&mixed.reply));
    // Port use counts only the good flows.
    let used: u64 = new.engine.nat().port_usage().iter().map(|u| u.flows).sum();
    assert_eq!(used, 2);
}

/// Found by fuzzing: a time left near `u64::MAX` made a flow that never
/// expires. It is cut to the longest timeout of the config, counted.
#[test]
fn endless_timers_are_cut_to_the_longest_timeout() {
    let good = masq_entry(40_000, 100_000_000_000);
    let max = masq_entry(40_001, u64::MAX);
    let max_1 = masq_entry(40_002, u64::MAX - 1);
    let snap = flows_only(vec![good, max, max_1]);
    let new = Gw::new(&config(), TB);
    let longest = new.engine.table().timeouts().longest();
    assert_eq!(longest, 432_000, "the config's established TCP timeout");
    let rep = snap
        .restore(&new.engine, new.now, ignore_elapsed())
        .unwrap();
    assert_eq!(
        (rep.flows, rep.flows_bad, rep.flows_clamped),
        (3, 0, 2),
        "{rep:?}"
    );
    let deadline = TB.plus_secs(longest);
    for r in new.flows() {
        let want = if r.orig == good.orig {
            TB.plus_secs(100)
        } else {
            deadline
        };
        assert_eq!(r.expires, want, "{:?}", r.orig);
    }
    // Gone by the longest timeout.
    new.engine.expire(Time(deadline.0 - 1), 1 << 20);
    assert_eq!(new.engine.table().len(), 2);
    new.engine.expire(deadline, 1 << 20);
    assert_eq!(new.engine.table().len(), 0);
    assert!(new.engine.nat().port_usage().iter().all(|u| u.flows == 0));

    // The cut comes before the time elapsed is taken off.
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Fixed(Duration::from_secs(1_000)),
                ..ignore_elapsed()
            },
        )
        .unwrap();
    // (100 s left on the good flow ran out.)
    assert_eq!(
        (rep.flows, rep.flows_expired, rep.flows_clamped),
        (2, 1, 2),
        "{rep:?}"
    );
    for r in new.flows() {
        assert_eq!(r.expires, TB.plus_secs(longest - 1_000));
    }
    // ... so a long enough gap expires them.
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Fixed(Duration::from_secs(u64::MAX)),
                ..ignore_elapsed()
            },
        )
        .unwrap();
    assert_eq!((rep.flows, rep.flows_expired), (0, 3), "{rep:?}");

    // A clock near its end does not overflow.
    let late = Gw::new(&config(), Time(u64::MAX - 5));
    let rep = snap
        .restore(&late.engine, late.now, ignore_elapsed())
        .unwrap();
    assert_eq!(rep.flows, 3, "{rep:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the flows of a snapshot say, a restore does not panic,
    /// keeps only consistent flows, and sets no timer past the longest
    /// timeout.
    #[test]
    fn restoring_arbitrary_flows_never_panics(
        flows in proptest::collection::vec(
            (
                any::<[u32; 4]>(),
                any::<[u16; 4]>(),
                prop::sample::select(vec![0u8, 1, 6, 17, 47]),
                prop::sample::select(vec![0u8, 1, 6, 17, 47]),
                0u8..10,
                any::<u32>(),
                prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(0u64), any::<u64>()],
            ),
            0..12,
        ),
        elapsed in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let flows: Vec<FlowEntry> = flows
            .into_iter()
            .map(|(a, p, po, pr, st, fl, left)| FlowEntry {
                orig: Tuple { src: a[0], dst: a[1], sport: p[0], dport: p[1], proto: po },
                reply: Tuple { src: a[2], dst: a[3], sport: p[2], dport: p[3], proto: pr },
                tcp_state: TcpState::from_u8(st),
                flags: fl,
                mark: 0,
                packets: [1, 1],
                bytes: [1, 1],
                remaining_ns: left,
                age_ns: 0,
            })
            .collect();
        let n = flows.len();
        let snap = flows_only(flows);
        let new = Gw::new(&config(), TB);
        let rep = snap
            .restore(
                &new.engine,
                new.now,
                RestoreOptions {
                    elapsed: Elapsed::Fixed(Duration::from_nanos(elapsed)),
                    services: ServicePolicy::FromConfig,
                    replace: false,
                },
            )
            .unwrap();
        prop_assert_eq!(
            rep.flows + rep.flows_expired + rep.flows_duplicate + rep.flows_table_full + rep.flows_bad,
            n
        );
        let deadline = TB.plus_secs(new.engine.table().timeouts().longest());
        for r in new.flows() {
            prop_assert!(r.expires <= deadline);
            prop_assert_eq!(r.orig.proto, r.reply.proto);
        }
    }
}

/// Synthetic masqueraded flows: `n` distinct inside hosts and ports, each
/// with its own outside port towards one of many remotes.
fn fill(engine: &Engine, n: u32, now: Time) {
    for i in 0..n {
        let orig = Tuple {
            src: ip("10.0.0.0") + (i % 60_000) + 2,
            dst: ip("198.18.0.0") + i / 50_000,
            sport: 1024 + (i % 50_000) as u16,
            dport: 443,
            proto: 6,
        };
        let out = Tuple {
            src: ip("203.0.113.1"),
            sport: 10_000 + (i % 50_000) as u16,
            ..orig
        };
        let r = FlowRecord {
            orig,
            reply: out.invert(),
            tcp_state: TcpState::Established,
            flags: flags::SEEN_REPLY | flags::ASSURED | nat_flags::SNAT,
            mark: 3,
            expires: Time(now.0 + Time::from_secs(400_000 + (i % 30_000) as u64).0),
            born: now,
            packets: [i as u64 % 1000, i as u64 % 700],
            bytes: [i as u64 * 61 % 1_000_000, i as u64 * 97 % 10_000_000],
        };
        engine.restore_flow(&r).unwrap();
        engine.nat().adopt_flow(&r);
    }
}

/// Memory and speed figure: `cargo test --release --test snapshot --
/// --ignored --nocapture one_million`.
#[test]
#[ignore]
fn one_million_flows() {
    const N: u32 = 1_000_000;
    let config = config_max_flows(1_100_000);
    let old = Gw::new(&config, T0);
    let t = Instant::now();
    fill(&old.engine, N, old.now);
    eprintln!("fill (insert {N} flows): {:?}", t.elapsed());

    let dir = tempfile::Builder::new()
        .prefix("natgw-snapshot-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("natgw.snap");
    let t = Instant::now();
    let snap = Snapshot::capture(&old.engine, old.now);
    let capture = t.elapsed();
    let t = Instant::now();
    let bytes = snapshot::encode(&snap);
    let encode = t.elapsed();
    let t = Instant::now();
    let written = write_atomic(&path, &snap).unwrap();
    let write = t.elapsed();
    drop(snap);
    let t = Instant::now();
    let loaded = read(&path, max_bytes_for(1_100_000)).unwrap();
    let read_decode = t.elapsed();
    let t = Instant::now();
    let _ = snapshot::decode(&bytes).unwrap();
    let decode = t.elapsed();
    let new = Gw::new(&config, TB);
    let t = Instant::now();
    let rep = loaded
        .restore(
            &new.engine,
            new.now,
            RestoreOptions {
                elapsed: Elapsed::Ignore,
                ..RestoreOptions::default()
            },
        )
        .unwrap();
    let restore = t.elapsed();
    assert_eq!(rep.flows, N as usize);
    assert_eq!(written as usize, bytes.len());
    assert_eq!(new.engine.nat().port_usage(), old.engine.nat().port_usage());
    eprintln!(
        "{N} flows: file {} bytes ({:.1} bytes/flow)\n  capture {capture:?}, encode {encode:?}, write_atomic (encode+fsync) {write:?}\n  read+decode {read_decode:?} (decode alone {decode:?}), restore {restore:?}",
        bytes.len(),
        bytes.len() as f64 / N as f64
    );
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "  in memory: {} bytes per FlowEntry; peak RSS of the whole test (two engines, snapshot, file bytes): {hwm}",
        std::mem::size_of::<snapshot::FlowEntry>()
    );
}

/// A handover in two steps, as `natgw run --takeover` does it: a full copy
/// while the old gateway still forwards, then only the flows touched since
/// (new ones, ones that changed state, ones that just carried a packet),
/// restored over the copy with `replace`. The new gateway then holds
/// exactly the old one's flows; untouched flows are not sent twice.
#[test]
fn a_full_copy_then_the_changes_since_leaves_the_new_gateway_equal_to_the_old() {
    let mut b = build_old();
    let since = b.gw.now;
    let full = Snapshot::capture(&b.gw.engine, since);
    assert_eq!(full.flows.len(), 7);
    // Nothing touched yet: no changes.
    b.gw.advance(Duration::from_millis(1));
    let none = Snapshot::capture_touched(&b.gw.engine, b.gw.now, since);
    assert_eq!(none.flows.len(), 0, "{:?}", none.flows);
    // After the copy: the masqueraded TCP flow closes from the inside
    // (state change), the ICMP flow carries one more echo, a new UDP flow
    // starts; the four other flows see nothing.
    b.gw.advance(Duration::from_millis(5));
    b.gw.send(
        LAN,
        &tcp("10.0.0.2:40000", "198.51.100.9:443", FIN | ACK, b""),
    )
    .endpoints();
    b.gw.send(LAN, &ping("10.0.0.3", "198.51.100.9", 77, false))
        .endpoints();
    gw_lb_ack(&b);
    b.gw.send(LAN, &udp("10.0.0.9:6000", "192.0.2.53:53", b"new"))
        .endpoints();
    let delta = Snapshot::capture_touched(&b.gw.engine, b.gw.now, since);
    let mut touched: Vec<String> = delta
        .flows
        .iter()
        .map(|f| format!("{}:{}", Ipv4Addr::from(f.orig.src), f.orig.sport))
        .collect();
    touched.sort();
    assert_eq!(
        touched,
        [
            "10.0.0.2:40000",
            "10.0.0.3:77",
            "10.0.0.9:6000",
            "198.51.100.30:7000"
        ]
    );

    let new = Gw::new(&config(), TB);
    let o = |replace| RestoreOptions {
        elapsed: Elapsed::Ignore,
        services: ServicePolicy::FromSnapshot,
        replace,
    };
    let r1 = full.restore(&new.engine, new.now, o(false)).unwrap();
    assert_eq!(r1.flows, 7);
    let r2 = delta.restore(&new.engine, new.now, o(true)).unwrap();
    assert_eq!((r2.flows, r2.flows_replaced, r2.flows_duplicate), (4, 3, 0));
    // The replaced LB flow adds only what it carried since the copy to
    // its server's counters (not its whole count again).
    let traffic = |e: &Engine, now| {
        e.services(now)[0]
            .reals
            .iter()
            .map(|r| (r.addr, r.packets_in, r.packets_out, r.bytes_in, r.bytes_out))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        traffic(&new.engine, new.now),
        traffic(&b.gw.engine, b.gw.now)
    );
    let sum: u64 = traffic(&new.engine, new.now).iter().map(|t| t.1).sum();
    assert_eq!(sum, 2, "SYN and ACK in");
    let (old_flows, new_flows) = (b.gw.flows(), new.flows());
    assert_eq!(old_flows.len(), 8);
    assert_eq!(old_flows.len(), new_flows.len());
    for (o, n) in old_flows.iter().zip(&new_flows) {
        let strip = |r: &FlowRecord| FlowRecord {
            expires: Time(0),
            born: Time(0),
            ..r.clone()
        };
        assert_eq!(strip(o), strip(n));
    }
    // The closed flow is FIN_WAIT on the new gateway too, and its port is
    // still taken there: a new inside flow does not get it.
    let closed = new_flows.iter().find(|r| r.orig.sport == 40000).unwrap();
    assert_eq!(closed.tcp_state, TcpState::FinWait);
    assert_eq!(ports_in_use(&new), ports_in_use(&b.gw));
}

/// The LB client of [`build_old`] sends its ACK (the flow is touched).
fn gw_lb_ack(b: &Built) {
    b.gw.send(WAN, &tcp("198.51.100.30:7000", "203.0.113.10:80", ACK, b""))
        .endpoints();
}

/// Live translated flows per outside address and protocol.
fn ports_in_use(gw: &Gw) -> Vec<(Ipv4Addr, String, u64)> {
    let mut v: Vec<_> = gw
        .engine
        .nat()
        .port_usage()
        .into_iter()
        .map(|u| (u.addr, u.proto, u.flows))
        .collect();
    v.sort();
    v
}

/// A snapshot that says a set entry or a persistence entry has (almost)
/// forever left: the set entry is cut to the longest timeout a command can
/// give (u32::MAX s), the persistence entry to its service's persistence
/// timeout (300 s) — neither stays forever.
#[test]
fn endless_set_and_persistence_timers_are_cut() {
    let b = build_old();
    let mut snap = Snapshot::capture(&b.gw.engine, b.gw.now);
    for s in &mut snap.sets {
        for e in &mut s.entries {
            if e.remaining_ns.is_some() {
                e.remaining_ns = Some(u64::MAX);
            }
        }
    }
    assert!(!snap.persistence.is_empty());
    for p in &mut snap.persistence {
        p.remaining_ns = u64::MAX;
    }
    let new = Gw::new(&config(), TB);
    let rep = snap
        .restore(&new.engine, new.now, ignore_elapsed())
        .unwrap();
    assert_eq!((rep.set_entries_expired, rep.persistence_skipped), (0, 0));
    let blocked = new.engine.sets()["blocked"].members(new.now);
    assert_eq!(
        blocked,
        [(
            "198.51.100.66/32".parse::<Prefix>().unwrap(),
            Some(Time(new.now.0 + Time::from_secs(u32::MAX as u64).0))
        )]
    );
    let pe = new.engine.lb().entries(new.now);
    assert_eq!(pe.len(), 1);
    assert_eq!(pe[0].expires.saturating_sub(new.now), Time::from_secs(300));
}
