//! The engine harness: one [`Engine`] built from a real config (three
//! interfaces, DNAT, netmap, a small SNAT pool, EIM masquerade, two
//! virtual services), fed a sequence of frames on its interfaces with a
//! virtual clock, checked after every frame by an oracle:
//!
//! - every forwarded (or replied) frame is valid IPv4 with a verifying
//!   header checksum, its TTL one less; its transport checksum verifies
//!   whenever the frame's did on the way in (etherparse's sums);
//! - an ICMP error keeps a quoted header checksum (and a wholly quoted
//!   transport checksum) valid if it was, and its quoted datagram is
//!   restored to the flow's other tuple;
//! - a reply never leaves untranslated: a packet of a live flow's reply
//!   direction leaves with the inverse of the original tuple — as the flow
//!   table says and as the harness itself recorded when the flow's first
//!   packet went out;
//! - the flow table never holds more than `max_flows` flows;
//! - with `flows_per_source` (variant bit 6), each source's count is
//!   exactly its live flows and never over the limit, and no count is
//!   left once every timer ran out;
//! - verdicts name existing interfaces and lengths inside the buffer.
//!
//! Input format (all integers big-endian), see [`run`].

use crate::{
    Input, fix_checksums, icmp_error_about, ip_header_ok, ipv4, l4_ok, quoted, reply_to, tuple_of,
};
use natgw::conntrack::{Dir, TcpState, Time};
use natgw::control::config::Config;
use natgw::engine::{Counters, Engine, Verdict};
use natgw::packet::{Link, Tuple};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// Buffer per frame (an AF_XDP frame is 2048 or 4096 bytes).
pub const BUF: usize = 2048;
/// Frames longer than this are cut (leaves room for replies).
pub const MAX_FRAME: usize = 1600;
/// Interfaces of the harness config: lan0, wan0, dmz0.
pub const NIF: u8 = 3;

/// The harness config for variant `v`: bits 0-1 max_flows (4, 16, 64,
/// 1024), bit 2 early_drop off, bit 3 unmatched = "drop", bit 4 hairpin
/// off, bit 5 raw IP link (TUN) instead of Ethernet, bit 6
/// `flows_per_source = 2`.
pub fn config_text(v: u8) -> String {
    let max_flows = [4, 16, 64, 1024][(v & 3) as usize];
    let early_drop = v & 4 == 0;
    let unmatched = if v & 8 != 0 { "drop" } else { "forward" };
    let hairpin = v & 16 == 0;
    let per_source = if v & 64 != 0 {
        "flows_per_source = 2"
    } else {
        ""
    };
    format!(
        r#"[gateway]
backend = "tun"
ipv6 = "drop"
unmatched = "{unmatched}"
hairpin = {hairpin}
icmp_rate = 3
seed = 7

[limits]
max_flows = {max_flows}
early_drop = {early_drop}
{per_source}

[timeouts]
tcp_syn_sent = 20
tcp_established = 600
tcp_time_wait = 20
udp = 10
udp_stream = 30
icmp = 10
generic = 30

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"
extra_addresses = ["203.0.113.2"]

[[interface]]
name = "dmz0"
role = "inside"
address = "172.16.0.1/16"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"

[[route]]
to = "192.168.0.0/16"
via = "10.0.0.254"

[[set]]
name = "pool"
elements = ["10.0.0.64/26"]

[[rule]]
iif = "wan0"
proto = "udp"
dport = 9
action = "drop"

[[rule]]
iif = "wan0"
dst = "203.0.113.1"
proto = "tcp"
dport = 8080
action = "dnat"
to = "10.0.0.5:80"

[[rule]]
iif = "wan0"
dst = "203.0.113.2"
action = "dnat"
to = "172.16.0.5"

[[rule]]
src = "172.16.1.0/24"
action = "netmap"
to = "198.51.100.0/24"

[[rule]]
oif = "wan0"
src_set = "pool"
action = "snat"
to = ["203.0.113.10-203.0.113.11"]
ports = "1024-1027"
persistent = true

[[rule]]
oif = "wan0"
src = "10.0.0.0/24"
action = "masquerade"
mapping = "endpoint-independent"
filtering = "endpoint-independent"

[[rule]]
oif = "wan0"
src = "172.16.0.0/16"
action = "masquerade"

[[service]]
address = "203.0.113.20"
port = 80
proto = "tcp"
scheduler = "rr"
persistence = 60

[[service.real]]
address = "10.0.0.21"
weight = 2

[[service.real]]
address = "10.0.0.22"
port = 8080

[[service]]
address = "203.0.113.21"
port = 53
proto = "udp"
scheduler = "sh"
forward = "fullnat"

[[service.real]]
address = "172.16.0.53"
"#
    )
}

static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();

/// The 64 harness configs, parsed once per process.
pub fn configs() -> &'static [Config] {
    CONFIGS.get_or_init(|| {
        (0..128)
            .map(|v| {
                Config::parse(&config_text(v), Path::new("fuzz.toml"))
                    .unwrap_or_else(|e| panic!("harness config {v}: {e}"))
            })
            .collect()
    })
}

/// A frame that left the engine: its bytes and interface.
struct Sent {
    frame: Vec<u8>,
    oif: u8,
}

/// Runs one input. Layout: a variant byte ([`config_text`]), then ops,
/// each an op byte `o`:
///
/// - `o % 8` in 0..=3: a frame `len: u16` then `len` bytes (at most
///   [`MAX_FRAME`]), received on interface `(o >> 3) % 3`; its checksums
///   are fixed first unless bit 7 is set;
/// - 4: the clock moves `u16` milliseconds (bit 7: seconds);
/// - 5: expiry runs with a budget of `u8` flows;
/// - 6: the remote answers a frame that left (`u8` picks which, `u8` TCP
///   flags), on the interface it left by;
/// - 7: an ICMP error about a frame that left (`u8` which, `u8` type
///   selector, `u8` code, `u8` extra quoted bytes; bit 7 of `o`: from a
///   router rather than the destination).
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(variant) = inp.u8() else {
        return;
    };
    let cfg = &configs()[(variant & 127) as usize];
    let link = if variant & 32 != 0 {
        Link::Ip
    } else {
        Link::Ethernet
    };
    let engine = cfg.build_engine().expect("harness config builds");
    let mut h = Harness {
        engine,
        link,
        now: Time::from_secs(1_000),
        counters: Counters::default(),
        sent: Vec::new(),
        translated: HashMap::new(),
        max_flows: cfg.engine.max_flows as usize,
    };
    let mut ops = 0;
    while let Some(o) = inp.u8() {
        ops += 1;
        if ops > 256 {
            break;
        }
        match o % 8 {
            0..=3 => {
                let len = (inp.u16().unwrap_or(0) as usize).min(MAX_FRAME);
                let mut f = inp.take(len).to_vec();
                if link == Link::Ip && f.len() >= 14 && o & 0x40 == 0 {
                    // Ethernet-shaped seeds also drive the TUN variants.
                    f.drain(..14);
                }
                if o & 0x80 == 0 {
                    fix_checksums(&mut f, link);
                }
                h.step(&f, (o >> 3) % NIF);
            }
            4 => {
                let v = inp.u16().unwrap_or(0) as u64;
                let d = if o & 0x80 != 0 {
                    Time::from_secs(v)
                } else {
                    Time::from_millis(v)
                };
                h.now = h.now.saturating_add(d);
            }
            5 => {
                let budget = inp.u8().unwrap_or(0) as usize;
                let n = h.engine.expire(h.now, budget);
                if trace() {
                    eprintln!("t={:?} expire({budget}): {n}", h.now);
                }
            }
            6 => {
                let (k, flags) = (inp.u8().unwrap_or(0), inp.u8().unwrap_or(0x10));
                if let Some(s) = pick(&h.sent, k)
                    && let Some(r) = reply_to(&s.frame, link, flags)
                {
                    let oif = s.oif;
                    h.step(&r, oif);
                }
            }
            _ => {
                let k = inp.u8().unwrap_or(0);
                let ty = [3, 11, 12, 3][(inp.u8().unwrap_or(0) & 3) as usize];
                let code = inp.u8().unwrap_or(3);
                let extra = inp.u8().unwrap_or(8) as usize;
                if let Some(s) = pick(&h.sent, k) {
                    let from = (o & 0x80 != 0).then_some(0xc633_6401); // 198.51.100.1
                    if let Some(r) = icmp_error_about(&s.frame, link, ty, code, from, extra) {
                        let oif = s.oif;
                        h.step(&r, oif);
                    }
                }
            }
        }
        let n = h.engine.table().len();
        assert!(
            n <= h.max_flows,
            "flow table holds {n} flows, max_flows is {}",
            h.max_flows
        );
        let used: u64 = h.engine.nat().port_usage().iter().map(|u| u.flows).sum();
        assert!(
            used as usize <= n,
            "{used} outside ports in use by {n} flows"
        );
        check_sources(&h);
    }
    // Every timer runs out: nothing may be left behind (flows, ports, EIM).
    all_gone_at(&h.engine, h.now.saturating_add(Time::from_secs(1_000_000)));
}

/// Expires everything by `end` and checks that nothing is left: no flow,
/// no outside port in use, no EIM mapping, no per-source count.
pub fn all_gone_at(engine: &Engine, end: Time) {
    while engine.expire(end, 1 << 16) > 0 {}
    assert_eq!(
        engine.table().len(),
        0,
        "flows left after every timer ran out"
    );
    let used: Vec<_> = engine
        .nat()
        .port_usage()
        .into_iter()
        .filter(|u| u.flows > 0)
        .collect();
    assert!(used.is_empty(), "ports still in use with no flow: {used:?}");
    let eim = engine.nat().eim_mappings();
    assert!(eim.is_empty(), "EIM mappings left with no flow: {eim:?}");
    let sources = engine.table().sources().sources();
    assert_eq!(sources, 0, "per-source counts left with no flow");
}

/// Per-source counts equal each source's live (or not yet swept) flows,
/// none over the limit.
fn check_sources(h: &Harness) {
    let s = h.engine.table().sources();
    let Some(limit) = s.limit() else { return };
    let mut per: HashMap<u32, u32> = HashMap::new();
    h.engine
        .table()
        .for_each(|_, r| *per.entry(r.orig.src).or_default() += 1);
    assert_eq!(
        s.sources(),
        per.len(),
        "sources counted vs sources with flows"
    );
    for (src, n) in per {
        assert_eq!(s.flows(src), n, "source {src:#x}: counted vs its flows");
        assert!(n <= limit, "source {src:#x} has {n} flows, limit {limit}");
    }
}

/// `FUZZ_TRACE=1` prints every frame the harness feeds and what left.
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

fn pick(sent: &[Sent], k: u8) -> Option<&Sent> {
    if sent.is_empty() {
        return None;
    }
    // Counted from the newest: 0 is the last frame that left.
    sent.get(sent.len() - 1 - (k as usize % sent.len()))
}

struct Harness {
    engine: Engine,
    link: Link,
    now: Time,
    counters: Counters,
    sent: Vec<Sent>,
    /// Outgoing tuple -> the tuple it was translated from, recorded when
    /// the first packet of a flow left.
    translated: HashMap<Tuple, Tuple>,
    max_flows: usize,
}

impl Harness {
    /// `s` (tuple `t`) is a TCP SYN without ACK, not a later fragment, and
    /// `t` is the original tuple of a load-balanced flow in TIME_WAIT or
    /// CLOSE.
    fn lb_reopens(&self, s: &crate::Ipv4<'_>, t: &Tuple) -> bool {
        let p = s.payload().payload;
        let syn_only = t.proto == 6
            && (!s.is_payload_fragmented() || s.header().fragments_offset().value() == 0)
            && p.len() >= 14
            && p[13] & 0x12 == 0x02;
        syn_only
            && self.engine.table().get(t).is_some_and(|r| {
                r.flags & natgw::nat::nat_flags::LB != 0
                    && matches!(r.tcp_state, TcpState::TimeWait | TcpState::Close)
            })
    }

    fn step(&mut self, frame: &[u8], iif: u8) {
        let mut buf = vec![0u8; BUF];
        let len = frame.len().min(BUF);
        buf[..len].copy_from_slice(&frame[..len]);
        let link = self.link;
        // What the oracle knows of the input, before natgw touches it.
        let input = ipv4(frame, link).map(|s| {
            let q = quoted(&s);
            let t = tuple_of(&s);
            let flow = match q {
                Some(q) => self.engine.table().peek(&q.tuple.invert(), self.now),
                None => self.engine.table().peek(&t, self.now),
            };
            // A SYN reopening a finished load-balanced connection (TIME_WAIT
            // or CLOSE) is scheduled afresh, as a new flow (IPVS
            // conn_reuse_mode 1): the old flow's translation does not bind.
            let flow =
                flow.filter(|&(d, _)| !(d == Dir::Orig && q.is_none() && self.lb_reopens(&s, &t)));
            (
                t,
                ip_header_ok(&s),
                l4_ok(&s),
                s.header().ttl(),
                q,
                flow,
                s.is_payload_fragmented(),
                s.is_payload_fragmented() && s.header().fragments_offset().value() != 0,
            )
        });
        if trace() {
            eprintln!(
                "t={:?} iif={iif} in {:?}",
                self.now,
                input.as_ref().map(|i| (i.0, i.5, i.6))
            );
        }
        let v = self.engine.process(
            &mut buf,
            len,
            link,
            iif as natgw::nat::IfId,
            self.now,
            &self.counters,
        );
        if trace() {
            eprintln!("  -> {v:?}");
        }
        let (out_len, oif) = match v {
            Verdict::Forward { oif, .. } => (len, oif),
            Verdict::Reply { oif, len: n, .. } => {
                assert!(n <= BUF, "reply of {n} bytes in a {BUF}-byte buffer");
                (n, oif)
            }
            _ => return,
        };
        assert!(
            oif < NIF as natgw::nat::IfId,
            "verdict names interface {oif}"
        );
        let out = &buf[..out_len];
        if trace() {
            eprintln!("  out {:?}", ipv4(out, link).map(|s| tuple_of(&s)));
        }
        let s = ipv4(out, link).unwrap_or_else(|| {
            panic!("{v:?}: the frame that leaves is not valid IPv4: {out:02x?}")
        });
        assert!(
            ip_header_ok(&s),
            "{v:?}: IPv4 header checksum wrong: {out:02x?}"
        );
        let ot = tuple_of(&s);
        if let Verdict::Reply { .. } = v {
            // natgw's own ICMP time-exceeded: built from scratch, all valid.
            assert_eq!(
                l4_ok(&s),
                Some(true),
                "time-exceeded ICMP checksum: {out:02x?}"
            );
            if let Some(q) = quoted(&s) {
                assert!(q.header_ok, "time-exceeded quotes a bad header");
            }
            self.sent.push(Sent {
                frame: out.to_vec(),
                oif: oif as u8,
            });
            return;
        }
        let Some((it, ihdr_ok, il4, ttl, iq, flow, frag, later_frag)) = input else {
            panic!("{v:?} for a frame the oracle does not see as IPv4: {frame:02x?}");
        };
        assert!(ihdr_ok, "{v:?} for a frame with a bad IPv4 header checksum");
        assert_eq!(s.header().ttl(), ttl.wrapping_sub(1), "TTL not decremented");
        if il4 == Some(true) {
            assert_eq!(
                l4_ok(&s),
                Some(true),
                "transport checksum broken by the rewrite: {it} -> {ot}\nin:  {frame:02x?}\nout: {out:02x?}"
            );
        }
        match (iq, quoted(&s)) {
            (Some(iq), Some(oq)) => {
                if iq.header_ok {
                    assert!(oq.header_ok, "quoted IPv4 checksum broken: {out:02x?}");
                }
                if iq.l4_ok == Some(true) {
                    assert_eq!(
                        oq.l4_ok,
                        Some(true),
                        "quoted transport checksum broken: {out:02x?}"
                    );
                }
                if let Some((_, other)) = flow {
                    assert_eq!(oq.tuple, other, "quoted datagram not restored: {out:02x?}");
                }
            }
            (Some(_), None) => panic!("an ICMP error left without its quote: {out:02x?}"),
            (None, _) => {
                if frag && !later_frag && flow.is_none() {
                    // A flow started by its first fragment: its translation
                    // binds the replies as any other flow's does.
                    self.translated.insert(ot, it);
                } else if !frag {
                    match flow {
                        Some((Dir::Reply, other)) => {
                            assert_eq!(ot, other.invert(), "reply left with the wrong tuple");
                            if let Some(orig) = self.translated.get(&it.invert()) {
                                assert_eq!(
                                    ot,
                                    orig.invert(),
                                    "reply of {orig} left untranslated / mistranslated as {ot}"
                                );
                            }
                        }
                        Some((Dir::Orig, other)) => {
                            assert_eq!(ot, other.invert(), "packet left with the wrong tuple")
                        }
                        None => {
                            self.translated.insert(ot, it);
                        }
                    }
                }
            }
        }
        if self.sent.len() >= 64 {
            self.sent.remove(0);
        }
        self.sent.push(Sent {
            frame: out.to_vec(),
            oif: oif as u8,
        });
    }
}
