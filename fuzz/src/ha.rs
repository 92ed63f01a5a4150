//! The HA sync receiver harness: one engine (a harness config, see
//! [`crate::harness::config_text`]) and the receiving side of its sync
//! link ([`natgw::ha::Receiver`]), fed a sequence of datagrams with a
//! virtual clock. The oracle, beyond "no panic":
//!
//! - a datagram that `wire::decode` refuses (raw bytes from the fuzzer, a
//!   sealed datagram with one byte changed) moves exactly one `refused_*`
//!   counter, and nothing of it is applied: the flow table is the same
//!   after the node settled as before;
//! - a datagram from another address than the peer is refused as
//!   `refused_foreign`, sealed or not, and nothing of it is applied;
//! - whatever the peer's (sealed, authentic) datagrams say, the table
//!   holds at most `max_flows` flows, outside ports in use never exceed
//!   the flows, per-source counts equal each source's flows, and once
//!   every timer ran out no flow, port, EIM mapping or count is left.
//!
//! Input: a mode byte (bit 0: HMAC key, else CRC; bit 1: this node is the
//! master, else the backup; bits 2-7: harness config variant bits 0-5,
//! plus `flows_per_source` always on), then ops (see [`run`]).

use crate::Input;
use crate::harness::{all_gone_at, config_text};
use natgw::conntrack::{FlowRecord, TcpState, Time};
use natgw::control::config::Config;
use natgw::engine::Engine;
use natgw::ha::wire::{self, Header, Kind};
use natgw::ha::{HaConfig, Receiver, Role};
use natgw::packet::Tuple;
use natgw::snapshot::{self, FlowEntry, Snapshot};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The HMAC key of keyed inputs (the seed generator uses it too).
pub const KEY: &[u8] = b"fuzz-ha-key";

/// Addresses flows are made of: few, so flows collide and share sources.
const ADDRS: [u32; 8] = [
    0x0a00_0002, // 10.0.0.2
    0x0a00_0003,
    0x0a00_0005,
    0xcb00_7101, // 203.0.113.1 (wan0)
    0xcb00_710a, // 203.0.113.10 (a service)
    0xc633_6414, // 198.51.100.20
    0xc633_6415,
    0xac10_0002, // 172.16.0.2 (dmz)
];

fn tuple(inp: &mut Input) -> Tuple {
    let b = inp.u8().unwrap_or(0);
    let proto = [6, 17, 1, 47][(b & 3) as usize];
    let ports = proto == 6 || proto == 17;
    let (sport, dport) = (inp.u16().unwrap_or(0), inp.u16().unwrap_or(0));
    Tuple {
        src: ADDRS[(b >> 2 & 7) as usize],
        dst: ADDRS[(b >> 5) as usize],
        sport: if ports || proto == 1 { sport } else { 0 },
        dport: if ports { dport } else { 0 },
        proto,
    }
}

/// A flow as the peer might describe it: tuples from [`ADDRS`], the rest
/// from the input (consistent or not: the restore must sort it out).
fn flow(inp: &mut Input) -> FlowEntry {
    let orig = tuple(inp);
    let mut reply = tuple(inp);
    let f = inp.u8().unwrap_or(0);
    if f & 1 == 0 {
        // Mostly a flow of one protocol, the way a gateway writes them.
        reply.proto = orig.proto;
    }
    let flags = inp.u32().unwrap_or(0);
    FlowEntry {
        orig,
        reply,
        tcp_state: TcpState::from_u8(f >> 1 & 15),
        flags: if f & 0x20 != 0 {
            flags
        } else {
            flags & 0x00ff_0300
        },
        mark: inp.u32().unwrap_or(0),
        packets: [1, 0],
        bytes: [60, 0],
        remaining_ns: u64::from(inp.u16().unwrap_or(0)) * 10_000_000,
        age_ns: 0,
    }
}

struct Node {
    engine: Arc<Engine>,
    rx: Receiver,
    epoch: u64,
    now: Instant,
    max_flows: usize,
}

impl Node {
    fn seal(&self, h: &Header, body: &[u8]) -> Vec<u8> {
        wire::encode(h, body, self.rx.auth())
    }

    fn refused(&self) -> u64 {
        self.rx
            .counters()
            .iter()
            .filter(|(k, _)| k.starts_with("refused_"))
            .map(|(_, v)| v)
            .sum()
    }

    fn flows(&self) -> Vec<FlowRecord> {
        let mut v = Vec::new();
        self.engine.table().for_each(|_, r| v.push(r));
        v.sort_by_key(|r| r.orig);
        v
    }

    /// Hands in a datagram that must be refused: exactly one refusal
    /// counted, nothing applied.
    fn refuse(&mut self, d: &[u8], from: Option<SocketAddr>, why: &str) {
        self.rx.settle(self.now);
        let (before, refused, got) = (self.flows(), self.refused(), self.received());
        self.rx.datagram(d, from, self.now);
        self.rx.settle(self.now);
        assert_eq!(self.refused(), refused + 1, "{why}: not counted as refused");
        assert_eq!(self.received(), got, "{why}: counted as received");
        assert!(self.flows() == before, "{why}: the flow table changed");
    }

    fn received(&self) -> u64 {
        self.rx
            .counters()
            .get("datagrams_received")
            .copied()
            .unwrap_or(0)
    }

    fn check(&self) {
        let t = self.engine.table();
        let n = t.len();
        assert!(
            n <= self.max_flows,
            "{n} flows, max_flows {}",
            self.max_flows
        );
        let used: u64 = self.engine.nat().port_usage().iter().map(|u| u.flows).sum();
        assert!(
            used as usize <= n,
            "{used} outside ports in use by {n} flows"
        );
        let mut per: HashMap<u32, u32> = HashMap::new();
        t.for_each(|_, r| *per.entry(r.orig.src).or_default() += 1);
        let s = t.sources();
        assert_eq!(s.sources(), per.len(), "sources counted vs with flows");
        for (src, k) in per {
            assert_eq!(s.flows(src), k, "source {src:#x}: counted vs its flows");
        }
    }
}

/// Runs one input. Ops (first byte `o`, `o % 6`):
/// 0. raw bytes (u16 length) as a datagram from the peer: if the wire
///    refuses them, nothing may change;
/// 1. a sealed datagram: kind, epoch (small), seq, a, b, and for `Data` a
///    body of flows (or raw body bytes);
/// 2. a sealed datagram from a foreign address: refused;
/// 3. a sealed datagram with one byte changed: refused;
/// 4. the node settles (acknowledge, apply, stuck gaps), time moves on
///    by up to 2.55 s;
/// 5. an `Alive` heartbeat from the peer.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mode) = inp.u8() else { return };
    let text = config_text(64 | (mode >> 2));
    let Ok(cfg) = Config::parse(&text, Path::new("fuzz.toml")) else {
        panic!("harness config {mode}");
    };
    let Ok(engine) = cfg.build_engine() else {
        panic!("harness engine {mode}");
    };
    let engine = Arc::new(engine);
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    // The peer: a port nothing listens on (what the node sends is lost).
    let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    let ha = HaConfig {
        local,
        peer,
        key: (mode & 1 != 0).then(|| KEY.to_vec()),
        refresh_secs: 1,
        max_datagram: 1472,
    };
    let role = if mode & 2 != 0 {
        Role::Master
    } else {
        Role::Backup
    };
    let Ok(rx) = Receiver::new(ha, engine.clone(), role) else {
        // No loopback socket: nothing to fuzz here.
        return;
    };
    let mut n = Node {
        max_flows: engine.table().capacity(),
        engine,
        rx,
        epoch: 1_000,
        now: Instant::now(),
    };
    let foreign = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 4000));
    for _ in 0..64 {
        let Some(o) = inp.u8() else { break };
        match o % 6 {
            0 => {
                let len = inp.u16().unwrap_or(0) as usize % 2048;
                let d = inp.take(len).to_vec();
                if wire::decode(&d, n.rx.auth()).is_err() {
                    n.refuse(&d, None, "raw datagram the wire refuses");
                } else {
                    n.rx.datagram(&d, None, n.now);
                }
            }
            1..=3 => {
                let d = sealed(&mut inp, &n);
                match o % 6 {
                    1 => n.rx.datagram(&d, None, n.now),
                    2 => {
                        n.refuse(&d, Some(foreign), "datagram from a foreign address");
                        assert!(n.rx.counters().get("refused_foreign").is_some());
                    }
                    _ => {
                        let mut bad = d;
                        let at = inp.u16().unwrap_or(0) as usize % bad.len().max(1);
                        let x = inp.u8().unwrap_or(0).max(1);
                        if let Some(b) = bad.get_mut(at) {
                            *b ^= x;
                        }
                        n.refuse(&bad, None, "sealed datagram with a byte changed");
                    }
                }
            }
            4 => {
                n.rx.settle(n.now);
                n.now += Duration::from_millis(u64::from(inp.u8().unwrap_or(0)) * 10);
            }
            _ => {
                let h = Header {
                    seq: u64::from(inp.u8().unwrap_or(0)),
                    b: u32::from(inp.u8().unwrap_or(0) & 3),
                    ..Header::new(Kind::Alive, n.epoch + u64::from(o >> 7))
                };
                let d = n.seal(&h, &[]);
                n.rx.datagram(&d, None, n.now);
            }
        }
        n.check();
    }
    n.rx.settle(n.now);
    n.check();
    // Every timer runs out: nothing may be left behind.
    all_gone_at(
        &n.engine,
        natgw::dataplane::sys::now().saturating_add(Time::from_secs(10_000_000)),
    );
}

/// A datagram sealed with the node's own authentication.
fn sealed(inp: &mut Input, n: &Node) -> Vec<u8> {
    let k = inp.u8().unwrap_or(0);
    let kind = [
        Kind::Data,
        Kind::Data,
        Kind::Data,
        Kind::BulkStart,
        Kind::BulkEnd,
        Kind::Ack,
        Kind::Nack,
        Kind::Resync,
    ][(k & 7) as usize];
    let h = Header {
        seq: u64::from(inp.u8().unwrap_or(0)),
        a: u64::from(inp.u16().unwrap_or(0)),
        b: u32::from(inp.u16().unwrap_or(0)),
        ..Header::new(kind, n.epoch + u64::from(k >> 6))
    };
    let body = if kind != Kind::Data {
        Vec::new()
    } else if k & 8 != 0 {
        let len = inp.u16().unwrap_or(0) as usize % 1400;
        inp.take(len).to_vec()
    } else {
        let count = inp.u8().unwrap_or(0) % 24;
        let flows = (0..count).map(|_| flow(inp)).collect();
        snapshot::encode_body(&Snapshot {
            version: snapshot::CURRENT_VERSION,
            captured_unix_ns: 0,
            flows,
            eim: Vec::new(),
            sets: Vec::new(),
            persistence: Vec::new(),
            services: None,
            counters: None,
        })
    };
    n.seal(&h, &body)
}
