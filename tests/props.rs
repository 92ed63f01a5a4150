//! Property tests of the pure core (proptest).
//!
//! (a) every frame the core emits has IPv4 and transport checksums that an
//!     independent implementation (etherparse) accepts;
//! (b) translating a packet and then its reply (or an ICMP error about it)
//!     gives back the original tuple;
//! (c) no two live flows share a tuple, in particular an outside (reply)
//!     tuple, however many flows go to one destination;
//! (d) a flow lives exactly as long as its timeout: a hit at
//!     `t + timeout - 1ns`, new at `t + timeout`;
//! (e) the core never panics on arbitrary bytes or mutated frames.
//!
//! Cases are bounded (`ProptestConfig`) so the whole file runs in seconds;
//! failures are not persisted to disk (shrunk inputs print on failure).

mod common;

use common::*;
use natgw::conntrack::Time;
use natgw::engine::Counters;
use natgw::packet::Link;
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

fn pt(cases: u32) -> PtConfig {
    PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..PtConfig::default()
    }
}

/// Masquerade for the LAN plus two published services.
fn masq_dnat() -> ConfigText {
    ConfigText::seeded()
        .rule(dnat_web().name("web"))
        .rule(
            Fields::new()
                .name("dns")
                .s("iif", "wan0")
                .s("proto", "udp")
                .v("dport", 5353)
                .s("action", "dnat")
                .s("to", "10.0.0.6:53"),
        )
        .rule(masquerade_lan().name("lan-out"))
}

// ---------------------------------------------------------------------------
// Packet generation

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4Spec {
    Tcp(u8),
    Udp { zero_csum: bool },
    Echo,
}

/// Which side a generated packet starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// An inside host to an outside server (masquerade).
    Out,
    /// An outside client to a published service (DNAT).
    In,
}

#[derive(Debug, Clone)]
struct PktSpec {
    side: Side,
    l4: L4Spec,
    /// Inside host 10.0.0.<host> (Out) or client 198.51.100.<100+host> (In).
    host: u8,
    port: u16,
    /// Server 198.51.100.<20+peer> (Out).
    peer: u8,
    peer_port: u16,
    /// Echo sequence number (ICMP only).
    seq: u16,
    payload: Vec<u8>,
    /// Words of IPv4 options (NOPs).
    opt_words: u8,
    ttl: u8,
}

fn tcp_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(SYN),
        1 => Just(SYN | ACK),
        2 => Just(ACK),
        2 => Just(PSH | ACK),
        1 => Just(FIN | ACK),
        1 => Just(RST),
        1 => Just(RST | ACK),
        1 => any::<u8>().prop_map(|f| f & 0x3f),
    ]
}

fn l4_spec() -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        tcp_flags().prop_map(L4Spec::Tcp),
        any::<bool>().prop_map(|z| L4Spec::Udp { zero_csum: z }),
        Just(L4Spec::Echo),
    ]
}

/// Ports and echo ids, biased toward 0: an echo id rewritten to or from 0
/// is the corner where the ICMP checksum must become 0xffff.
fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(0u16),
        1 => Just(40000u16),
        1 => Just(40001),
        1 => Just(53),
        1 => Just(123),
        1 => Just(1024),
        1 => Just(65535),
        2 => any::<u16>(),
    ]
}

/// Payloads, often empty or all zeros (with id 0 and seq 0, an echo
/// message sums to +0).
fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        2 => (0..max).prop_map(|n| vec![0u8; n]),
        3 => proptest::collection::vec(any::<u8>(), 0..max),
    ]
}

/// Echo sequence numbers, mostly 0.
fn echo_seq() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => Just(7), 1 => any::<u16>()]
}

fn pkt_spec(ttl_lo: u8) -> impl Strategy<Value = PktSpec> {
    (
        prop_oneof![3 => Just(Side::Out), 1 => Just(Side::In)],
        l4_spec(),
        2u8..8,
        port(),
        0u8..4,
        prop_oneof![Just(80u16), Just(443), Just(53), any::<u16>()],
        echo_seq(),
        payload(48),
        0u8..3,
        ttl_lo..=255u8,
    )
        .prop_map(
            |(side, l4, host, port, peer, peer_port, seq, payload, opt_words, ttl)| PktSpec {
                side,
                l4,
                host,
                port,
                peer,
                peer_port,
                seq,
                payload,
                opt_words,
                ttl,
            },
        )
}

impl PktSpec {
    fn src(&self) -> Ipv4Addr {
        match self.side {
            Side::Out => Ipv4Addr::new(10, 0, 0, self.host),
            Side::In => Ipv4Addr::new(198, 51, 100, 100 + self.host),
        }
    }

    fn dst(&self) -> Ipv4Addr {
        match self.side {
            Side::Out => Ipv4Addr::new(198, 51, 100, 20 + self.peer),
            Side::In => Ipv4Addr::new(203, 0, 113, 1),
        }
    }

    fn dport(&self) -> u16 {
        match (self.side, self.l4) {
            (Side::In, L4Spec::Tcp(_)) => 8080,
            (Side::In, _) => 5353,
            (Side::Out, _) => self.peer_port,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let ipb =
            Ip::new(self.src(), self.dst())
                .ttl(self.ttl)
                .options(&vec![1u8; 4 * self.opt_words as usize]);
        match self.l4 {
            L4Spec::Tcp(f) => ipb.tcp(self.port, self.dport(), f, 1000, 2000, &self.payload),
            L4Spec::Udp { zero_csum } => {
                let mut f = ipb.udp(self.port, self.dport(), &self.payload);
                if zero_csum {
                    let l4 = 14 + 20 + 4 * self.opt_words as usize;
                    f[l4 + 6] = 0;
                    f[l4 + 7] = 0;
                }
                f
            }
            L4Spec::Echo => ipb.echo_request(self.port, self.seq, &self.payload),
        }
    }

    fn iif(&self, gw: &Gw) -> u16 {
        match self.side {
            Side::Out => gw.lan,
            Side::In => gw.wan,
        }
    }
}

/// What a receiver answers to `seen` (a frame as it left natgw): the same
/// protocol with source and destination swapped.
fn reply_to(seen: &View, payload: &[u8]) -> Vec<u8> {
    let ipb = Ip::new(seen.dst, seen.src);
    match seen.proto {
        PROTO_TCP => {
            let flags = if seen.tcp_flags & (SYN | ACK) == SYN {
                SYN | ACK
            } else {
                ACK
            };
            ipb.tcp(seen.dport, seen.sport, flags, 5000, 1001, payload)
        }
        PROTO_UDP => ipb.udp(seen.dport, seen.sport, payload),
        PROTO_ICMP => {
            let icmp = seen.icmp();
            ipb.echo_reply(icmp.echo_id(), icmp.echo_seq(), payload)
        }
        p => panic!("no reply for protocol {p}"),
    }
}

/// The tuple of a frame: addresses, and ports or the echo identifier.
fn tuple_of(v: &View) -> (SocketAddrV4, SocketAddrV4, u8) {
    match v.icmp {
        Some(i) if i.ty == ICMP_ECHO_REQUEST => (
            SocketAddrV4::new(v.src, i.echo_id()),
            SocketAddrV4::new(v.dst, 0),
            v.proto,
        ),
        Some(i) if i.ty == ICMP_ECHO_REPLY => (
            SocketAddrV4::new(v.src, 0),
            SocketAddrV4::new(v.dst, i.echo_id()),
            v.proto,
        ),
        _ => (v.src_sa(), v.dst_sa(), v.proto),
    }
}

fn invert(t: (SocketAddrV4, SocketAddrV4, u8)) -> (SocketAddrV4, SocketAddrV4, u8) {
    (t.1, t.0, t.2)
}

const ERROR_KINDS: [IcmpKind; 5] = [
    IcmpKind::PortUnreachable,
    IcmpKind::HostUnreachable,
    IcmpKind::FragNeeded { mtu: 1280 },
    IcmpKind::TimeExceeded,
    IcmpKind::ParamProblem { pointer: 8 },
];

#[derive(Debug, Clone)]
enum Event {
    Send(PktSpec),
    /// The receiver of the i-th forwarded frame answers it.
    Reply(usize, Vec<u8>),
    /// The receiver of the i-th forwarded frame sends an ICMP error about it.
    Error(usize, usize, bool),
    Advance(u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        5 => pkt_spec(1).prop_map(Event::Send),
        3 => (any::<usize>(), payload(40)).prop_map(|(i, p)| Event::Reply(i, p)),
        2 => (any::<usize>(), 0..ERROR_KINDS.len(), any::<bool>())
            .prop_map(|(i, k, full)| Event::Error(i, k, full)),
        1 => (0u16..200).prop_map(Event::Advance),
    ]
}

/// A frame natgw emitted, and the interface it left by.
struct Sent {
    frame: Vec<u8>,
    oif: u16,
}

// ---------------------------------------------------------------------------
// (a) checksums of everything emitted

proptest! {
    #![proptest_config(pt(192))]

    /// Random TCP/UDP/ICMP traffic through masquerade and DNAT, with
    /// replies, ICMP errors (quoting whole datagrams or header + 8 bytes),
    /// IP options, zero UDP checksums, TTL 1 and the clock moving, echo ids
    /// and seqs of 0 with empty or all-zero payloads: every
    /// frame natgw forwards or originates verifies with etherparse.
    /// (`Gw::send` checks each emitted frame; a bad one fails the case.)
    #[test]
    fn a_emitted_frames_have_valid_checksums(events in proptest::collection::vec(event(), 1..40)) {
        let mut gw = Gw::of(masq_dnat());
        let mut sent: Vec<Sent> = Vec::new();
        for ev in events {
            let out = match ev {
                Event::Send(p) => gw.send(p.iif(&gw), &p.frame()),
                Event::Reply(i, payload) if !sent.is_empty() => {
                    let s = &sent[i % sent.len()];
                    let seen = view(&s.frame);
                    if seen.icmp.is_some_and(|c| c.ty != ICMP_ECHO_REQUEST) {
                        continue;
                    }
                    gw.send(s.oif, &reply_to(&seen, &payload))
                }
                Event::Error(i, k, full) if !sent.is_empty() => {
                    let s = &sent[i % sent.len()];
                    let seen = view(&s.frame);
                    if seen.icmp.is_some_and(|c| c.ty != ICMP_ECHO_REQUEST && c.ty != ICMP_ECHO_REPLY) {
                        continue;
                    }
                    let quote = if full { Quote::Full } else { Quote::HeaderPlus8 };
                    let err = icmp_error(
                        &seen.dst.to_string(),
                        &seen.src.to_string(),
                        ERROR_KINDS[k],
                        &s.frame,
                        quote,
                    );
                    gw.send(s.oif, &err)
                }
                Event::Advance(s) => {
                    gw.advance_secs(s as u64);
                    gw.sweep();
                    continue;
                }
                _ => continue,
            };
            match out {
                Out::Forward { oif, frame, .. } | Out::Reply { oif, frame, .. } => {
                    // Already verified by Gw::send; double-check here so the
                    // property states it.
                    prop_assert!(verify_checksums(&frame).is_ok());
                    sent.push(Sent { frame, oif });
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (b) translate, then reverse: identity

proptest! {
    #![proptest_config(pt(192))]

    /// For every packet natgw forwards, the receiver's answer comes back to
    /// the original sender with exactly the inverse of the original tuple,
    /// and an ICMP error about it comes back quoting the original tuple and
    /// addressed to the original sender (RFC 5508).
    #[test]
    fn b_translate_then_reverse_is_identity(
        pkts in proptest::collection::vec(
            (pkt_spec(2), payload(32), 0..ERROR_KINDS.len(), any::<bool>()),
            1..24,
        )
    ) {
        let gw = Gw::of(masq_dnat());
        for (p, reply_payload, kind, full) in pkts {
            let frame = p.frame();
            let orig = view(&frame);
            let out = gw.send(p.iif(&gw), &frame);
            let Out::Forward { oif, frame: fwd, .. } = out else { continue };
            let there = view(&fwd);
            let back_side = oif;

            // The answer.
            let back = gw.send(back_side, &reply_to(&there, &reply_payload));
            prop_assert!(back.is_forward(), "reply to {:?} was {}", tuple_of(&there), back.short());
            prop_assert_eq!(back.oif(), p.iif(&gw), "the answer leaves where the packet came in");
            let home = back.seen();
            prop_assert_eq!(tuple_of(&home), invert(tuple_of(&orig)));
            prop_assert_eq!(&home.payload, &reply_payload);
            if orig.proto == PROTO_ICMP {
                prop_assert_eq!(home.icmp().ty, ICMP_ECHO_REPLY);
            }

            // An ICMP error about the forwarded packet.
            let quote = if full { Quote::Full } else { Quote::HeaderPlus8 };
            let err = icmp_error(
                &there.dst.to_string(),
                &there.src.to_string(),
                ERROR_KINDS[kind],
                &fwd,
                quote,
            );
            let e = gw.send(back_side, &err);
            prop_assert!(e.is_forward(), "error about {:?} was {}", tuple_of(&there), e.short());
            let got = e.seen();
            prop_assert_eq!(got.dst, orig.src, "the error reaches the original sender");
            prop_assert_eq!(tuple_of(got.inner()), tuple_of(&orig), "quoted as it was sent");
            prop_assert_eq!(got.icmp().ty, ERROR_KINDS[kind].type_code().0);
        }
    }
}

// ---------------------------------------------------------------------------
// (c) outside tuples are unique

#[derive(Debug, Clone)]
struct FlowSpec {
    l4: u8,
    host: u8,
    port: u16,
    dst: u8,
    dport: u16,
    /// An outside remote knocking on a mapping instead (EIF).
    inbound: bool,
    advance: u8,
}

fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    (
        0u8..3,
        2u8..6,
        prop_oneof![
            Just(2000u16),
            Just(2001),
            Just(5000),
            Just(5001),
            2000u16..2020
        ],
        // Mostly one destination.
        prop_oneof![6 => Just(0u8), 1 => 0u8..3],
        prop_oneof![4 => Just(80u16), 1 => Just(443)],
        proptest::bool::weighted(0.1),
        prop_oneof![9 => Just(0u8), 1 => 1u8..60],
    )
        .prop_map(|(l4, host, port, dst, dport, inbound, advance)| FlowSpec {
            l4,
            host,
            port,
            dst,
            dport,
            inbound,
            advance,
        })
}

proptest! {
    #![proptest_config(pt(128))]

    /// Many flows, most to one server, through a 16-port range (so ports
    /// run out and are reused as flows expire), with and without UDP
    /// endpoint-independent mapping/filtering: no two live flows ever share
    /// an original or a reply tuple, and the far side never sees one
    /// outside tuple used by two inside endpoints at once.
    #[test]
    fn c_no_two_flows_share_an_outside_tuple(
        eim in any::<bool>(),
        flows in proptest::collection::vec(flow_spec(), 1..160),
    ) {
        let mut rule = masquerade_lan().s("ports", "2000-2015");
        if eim {
            rule = rule
                .s("mapping", "endpoint-independent")
                .s("filtering", "endpoint-independent");
        }
        let mut gw = Gw::of(
            ConfigText::seeded()
                .table("timeouts", "udp = 30\ntcp_syn_sent = 40\nicmp = 20")
                .rule(rule),
        );
        // Outside tuple (as the server sees it) -> inside endpoint, for the
        // flows that are alive.
        let mut wire: HashMap<(SocketAddrV4, SocketAddrV4, u8), SocketAddrV4> = HashMap::new();
        for f in flows {
            if f.advance > 0 {
                gw.advance_secs(f.advance as u64);
                gw.sweep();
                // Mappings of flows that are gone may be reused.
                let live: HashSet<_> = gw
                    .flows()
                    .iter()
                    .map(|r| (r.reply.dst, r.reply.dport, r.reply.src, r.reply.sport, r.reply.proto))
                    .collect();
                wire.retain(|k, _| {
                    live.contains(&(u32::from(*k.0.ip()), k.0.port(), u32::from(*k.1.ip()), k.1.port(), k.2))
                });
            }
            let server = Ipv4Addr::new(198, 51, 100, 20 + f.dst);
            let inside = Ipv4Addr::new(10, 0, 0, f.host);
            if f.inbound {
                // A remote sends to some port of the gateway.
                let frame = Ip::new(server, ip("203.0.113.1")).udp(f.dport, f.port, b"knock");
                let _ = gw.on_wan(&frame);
            } else {
                let ipb = Ip::new(inside, server);
                let frame = match f.l4 {
                    0 => ipb.tcp(f.port, f.dport, SYN, 1, 0, b""),
                    1 => ipb.udp(f.port, f.dport, b"u"),
                    _ => ipb.echo_request(f.port, 1, b"e"),
                };
                if let Out::Forward { frame: fwd, .. } = gw.on_lan(&frame) {
                    let v = view(&fwd);
                    let t = tuple_of(&v);
                    let me = SocketAddrV4::new(inside, f.port);
                    if let Some(prev) = wire.insert(t, me) {
                        prop_assert_eq!(prev, me, "outside tuple {:?} used by two inside endpoints", t);
                    }
                }
            }
            let live = gw.flows();
            let mut origs = HashSet::new();
            let mut replies = HashSet::new();
            for r in &live {
                prop_assert!(origs.insert(r.orig), "two flows with original tuple {}", r.orig);
                prop_assert!(replies.insert(r.reply), "two flows with reply tuple {}", r.reply);
            }
            // A tuple is never both some flow's original and another's reply.
            for r in &live {
                if r.reply != r.orig.invert() {
                    prop_assert!(!origs.contains(&r.reply), "reply tuple {} is another flow's original", r.reply);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (d) expiry is exact

proptest! {
    #![proptest_config(pt(128))]

    /// A flow created at `t` is listed and hit until `t + timeout - 1ns`
    /// (keeping its translation), is gone from listings at `t + timeout`,
    /// and a packet at exactly its (refreshed) deadline starts a new flow.
    #[test]
    fn d_flow_expires_exactly_at_its_timeout(
        kind in 0u8..3,
        timeout in 1u32..100_000,
        start_ns in 0u64..1_000_000_000_000_000,
        port in 1u16..,
    ) {
        let key = ["tcp_syn_sent", "udp", "icmp"][kind as usize];
        let mut gw = Gw::of(
            ConfigText::seeded()
                .table("timeouts", &format!("{key} = {timeout}"))
                .rule(masquerade_lan()),
        );
        gw.now = Time(start_ns);
        let ipb = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"));
        let frame = match kind {
            0 => ipb.tcp(port, 80, SYN, 1, 0, b""),
            1 => ipb.udp(port, 53, b"q"),
            _ => ipb.echo_request(port, 1, b"p"),
        };
        let t_ns = timeout as u64 * 1_000_000_000;
        let first = gw.on_lan(&frame).seen();
        let created = gw.counters.snapshot().flows_created;
        prop_assert_eq!(created, 1);
        let t0 = gw.now;

        // Listing is read-only: alive just before, gone at the deadline.
        prop_assert_eq!(gw.engine.flows(Time(t0.0 + t_ns - 1)).len(), 1);
        prop_assert_eq!(gw.engine.flows(Time(t0.0 + t_ns)).len(), 0);

        // A packet one nanosecond before the deadline hits the same flow.
        gw.now = Time(t0.0 + t_ns - 1);
        prop_assert_eq!(gw.sweep(), 0, "nothing expires before its time");
        let probe = gw.on_lan(&frame).seen();
        prop_assert_eq!(tuple_of(&probe), tuple_of(&first), "same translation");
        let snap = gw.counters.snapshot();
        prop_assert_eq!(snap.flows_created, 1);
        prop_assert_eq!(snap.fast_path, 1);

        // The hit refreshed the timer; at the new deadline the flow is over.
        let t1 = gw.now;
        gw.now = Time(t1.0 + t_ns);
        prop_assert_eq!(gw.flows().len(), 0);
        let again = gw.on_lan(&frame);
        prop_assert!(again.is_forward(), "{}", again.short());
        let snap = gw.counters.snapshot();
        prop_assert_eq!(snap.flows_created, 2, "treated as a new flow");
        prop_assert_eq!(snap.fast_path, 1);
        prop_assert_eq!(gw.flows().len(), 1);
        prop_assert_eq!(gw.engine.table().len(), 1, "the expired flow was replaced, not leaked");
    }
}

// ---------------------------------------------------------------------------
// (e) no panics on hostile input

/// Valid frames of every kind the parser knows, to mutate.
fn seed_frames() -> Vec<Vec<u8>> {
    let out = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"));
    let udp_f = out.udp(40000, 53, b"query");
    let tcp_f = out.tcp(40000, 80, SYN, 1, 0, b"");
    let opts = out
        .clone()
        .options(&[1; 8])
        .tcp(40001, 80, ACK, 1, 1, b"data");
    let echo = out.echo_request(7, 1, b"ping");
    let err = icmp_error(
        "198.51.100.20",
        "203.0.113.1",
        IcmpKind::PortUnreachable,
        &udp_f,
        Quote::HeaderPlus8,
    );
    let err_full = icmp_error(
        "198.51.100.20",
        "10.0.0.2",
        IcmpKind::TimeExceeded,
        &tcp_f,
        Quote::Full,
    );
    let (f1, f2) = fragment(&out.clone().id(9).udp(1, 2, &[0u8; 40]), 16);
    let ttl1 = out.clone().ttl(1).udp(40000, 53, b"q");
    let inbound = Ip::new(ip("198.51.100.9"), ip("203.0.113.1")).tcp(5555, 8080, SYN, 1, 0, b"");
    vec![
        udp_f,
        tcp_f,
        opts,
        echo,
        err,
        err_full,
        f1,
        f2,
        ttl1,
        inbound,
        ipv6_udp("::1", "::2", 1, 2),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Xor(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Xor(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Mutation::Extend),
    ]
}

/// Runs one frame through a fresh-ish engine on both interfaces, with a
/// roomy buffer and with a buffer exactly as long as the frame (no room for
/// a reply), and with a claimed length past the buffer.
fn hammer(gw: &Gw, frame: &[u8]) {
    let c = Counters::default();
    for link in [Link::Ethernet, Link::Ip] {
        for iif in [gw.lan, gw.wan, 7] {
            let mut roomy = vec![0u8; frame.len() + 256];
            roomy[..frame.len()].copy_from_slice(frame);
            let _ = gw
                .engine
                .process(&mut roomy, frame.len(), link, iif, gw.now, &c);
            let mut tight = frame.to_vec();
            let _ = gw
                .engine
                .process(&mut tight, frame.len(), link, iif, gw.now, &c);
            let mut tight = frame.to_vec();
            let _ = gw
                .engine
                .process(&mut tight, frame.len() + 100, link, iif, gw.now, &c);
        }
    }
}

proptest! {
    #![proptest_config(pt(512))]

    #[test]
    fn e_no_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let gw = Gw::of(masq_dnat());
        hammer(&gw, &bytes);
        // Random bytes behind a valid Ethernet/IPv4 start are likelier to
        // reach the deeper parsers.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&bytes);
        if f.len() > 14 {
            f[14] = 0x40 | (f[14] & 0x0f);
        }
        hammer(&gw, &f);
        fix_ip_checksum(&mut f);
        hammer(&gw, &f);
    }

    #[test]
    fn e_no_panic_on_mutated_frames(
        which in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 1..6),
        fix in any::<bool>(),
    ) {
        let gw = Gw::of(masq_dnat());
        // Some state to hit: a flow for the UDP seed and the TCP seed.
        let seeds = seed_frames();
        let _ = gw.on_lan(&seeds[0]);
        let _ = gw.on_lan(&seeds[1]);
        let mut f = seeds[which % seeds.len()].clone();
        for m in muts {
            match m {
                Mutation::Set(i, b) if !f.is_empty() => {
                    let n = f.len();
                    f[i % n] = b;
                }
                Mutation::Xor(i, b) if !f.is_empty() => {
                    let n = f.len();
                    f[i % n] ^= b;
                }
                Mutation::Truncate(n) => {
                    let n = n % (f.len() + 1);
                    f.truncate(n);
                }
                Mutation::Extend(v) => f.extend_from_slice(&v),
                _ => {}
            }
        }
        if fix {
            // A valid header checksum gets the mutation past the IP checks.
            fix_ip_checksum(&mut f);
        }
        hammer(&gw, &f);
    }
}

// ---------------------------------------------------------------------------
// The verifier itself

proptest! {
    #![proptest_config(pt(256))]

    /// The independent verifier is only worth something if it catches
    /// damage: any change to a checksummed byte after the headers fails it.
    #[test]
    fn verifier_rejects_corrupted_payload(which in 0usize..5, at in any::<usize>(), x in 1u8..) {
        let out = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"));
        let udp_f = out.udp(40000, 53, b"some payload");
        let frames = [
            udp_f.clone(),
            out.tcp(40000, 80, PSH | ACK, 1, 1, b"some payload"),
            out.echo_request(7, 1, b"some payload"),
            icmp_error("198.51.100.20", "203.0.113.1", IcmpKind::PortUnreachable, &udp_f, Quote::Full),
            out.clone().options(&[1; 4]).udp(1, 2, b"xy"),
        ];
        let mut f = frames[which].clone();
        prop_assert!(verify_checksums(&f).is_ok());
        // Bytes after Ethernet + IPv4 + 8 (past lengths and ports).
        let hl = (f[14] & 0x0f) as usize * 4;
        let start = 14 + hl + 8;
        let i = start + at % (f.len() - start);
        f[i] ^= x;
        prop_assert!(verify_checksums(&f).is_err(), "byte {} changed unnoticed", i);
        // And a damaged IPv4 header is caught too.
        let mut g = frames[which].clone();
        g[14 + 12 + at % 8] ^= x;
        prop_assert!(verify_checksums(&g).is_err());
    }
}
