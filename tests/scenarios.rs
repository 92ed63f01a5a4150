//! The stories of SCENARIOS.md 1 (share one public address) and 2 (publish
//! an inside server), driven through the pure core with a virtual clock.
//!
//! Topology in every test (see `common::BASE_INTERFACES`, which
//! `common::ConfigText` starts from):
//!
//! ```text
//!   inside hosts 10.0.0.0/24 --- lan0 10.0.0.1 [natgw] wan0 203.0.113.1 --- 203.0.113.254 --- internet
//! ```
//!
//! Each test asserts what a user would check with tcpdump on either side:
//! the addresses and ports the far side sees, that replies reach the right
//! inside host, and that every frame natgw emits has valid checksums (the
//! fixture verifies those independently on every forwarded frame).

mod common;

use common::*;
use natgw::engine::{DropReason, flag_names};
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

/// `masquerade` for the LAN on the way out of wan0 (iptables
/// `-s 10.0.0.0/24 -o wan0 -j MASQUERADE`).
fn lan_out() -> Fields {
    masquerade_lan().name("lan-out")
}

/// The gateway with [`lan_out`] only.
fn masq() -> ConfigText {
    ConfigText::seeded().rule(lan_out())
}

/// Port forwarding `public:8080 -> 10.0.0.5:80` for outside clients, and
/// masquerade for the LAN.
fn dnat_and_masq() -> ConfigText {
    ConfigText::seeded()
        .rule(dnat_web().name("web"))
        .rule(lan_out())
}

const GW_OUT: &str = "203.0.113.1";
const GW_IN: &str = "10.0.0.1";
const UPSTREAM: &str = "203.0.113.254";

fn gw_out() -> Ipv4Addr {
    ip(GW_OUT)
}

/// `203.0.113.1:<port>` as text, for building replies.
fn public(port: u16) -> String {
    format!("{GW_OUT}:{port}")
}

// ---------------------------------------------------------------------------
// Story 1: share one public address

#[test]
fn masquerade_inside_host_reaches_server_and_gets_reply() {
    let gw = Gw::of(masq());

    // The inside host opens a connection to a web server.
    let out = gw.on_lan(&tcp("10.0.0.2:40000", "198.51.100.20:80", SYN, b""));
    assert_eq!(out.oif(), gw.wan, "leaves by the outside interface");
    assert_eq!(out.next_hop(), ip(UPSTREAM), "towards the default gateway");
    let seen = out.seen();
    assert_eq!(seen.src, gw_out(), "the server sees the gateway's address");
    assert_eq!(seen.dst_sa(), sa("198.51.100.20:80"));
    assert_eq!(seen.tcp_flags, SYN);
    assert_eq!(seen.ttl, 63, "forwarding decrements the TTL");
    let port = seen.sport;

    // The server answers the gateway; the inside host gets the answer.
    let back = gw.on_wan(&tcp_seq(
        "198.51.100.20:80",
        &public(port),
        SYN | ACK,
        7000,
        1001,
        b"",
    ));
    assert_eq!(back.oif(), gw.lan);
    assert_eq!(back.next_hop(), ip("10.0.0.2"));
    let seen = back.seen();
    assert_eq!(seen.src_sa(), sa("198.51.100.20:80"));
    assert_eq!(seen.dst_sa(), sa("10.0.0.2:40000"));
    assert_eq!(seen.tcp_flags, SYN | ACK);

    // Data goes both ways untouched apart from the addresses.
    let req = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    let seen = gw
        .on_lan(&tcp_seq(
            "10.0.0.2:40000",
            "198.51.100.20:80",
            PSH | ACK,
            1001,
            7001,
            req,
        ))
        .seen();
    assert_eq!((seen.src, seen.sport), (gw_out(), port));
    assert_eq!(seen.payload, req);
    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
    let seen = gw
        .on_wan(&tcp_seq(
            "198.51.100.20:80",
            &public(port),
            PSH | ACK,
            7001,
            1034,
            resp,
        ))
        .seen();
    assert_eq!(seen.dst_sa(), sa("10.0.0.2:40000"));
    assert_eq!(seen.payload, resp);

    // A second inside host using the same source port to the same server
    // needs another public port, and each gets its own replies.
    let seen2 = gw
        .on_lan(&tcp("10.0.0.3:40000", "198.51.100.20:80", SYN, b""))
        .seen();
    assert_eq!(seen2.src, gw_out());
    assert_ne!(
        seen2.sport, port,
        "two flows cannot share one outside tuple"
    );
    let back2 = gw.on_wan(&tcp_seq(
        "198.51.100.20:80",
        &public(seen2.sport),
        SYN | ACK,
        9000,
        1001,
        b"",
    ));
    assert_eq!(back2.next_hop(), ip("10.0.0.3"));
    assert_eq!(back2.seen().dst_sa(), sa("10.0.0.3:40000"));

    let flows = gw.flows();
    assert_eq!(flows.len(), 2);
    assert!(flows.iter().all(|f| flag_names(f).contains(&"SNAT")));
    assert_eq!(gw.counters.snapshot().total_drops(), 0);
}

#[test]
fn masquerade_udp_round_trip() {
    let gw = Gw::of(masq());
    let seen = gw
        .on_lan(&udp("10.0.0.2:5353", "198.51.100.53:53", b"dns query"))
        .seen();
    assert_eq!(seen.src, gw_out());
    assert_eq!(seen.dst_sa(), sa("198.51.100.53:53"));
    assert_eq!(seen.payload, b"dns query");
    let back = gw.on_wan(&udp("198.51.100.53:53", &public(seen.sport), b"dns answer"));
    assert_eq!(back.next_hop(), ip("10.0.0.2"));
    let seen = back.seen();
    assert_eq!(seen.src_sa(), sa("198.51.100.53:53"));
    assert_eq!(seen.dst_sa(), sa("10.0.0.2:5353"));
    assert_eq!(seen.payload, b"dns answer");
}

/// RFC 768: a UDP checksum that computes to zero is sent as 0xffff (zero
/// means "no checksum"). Craft a datagram whose translated checksum is zero.
#[test]
fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    let gw = Gw::of(masq());
    let first = gw
        .on_lan(&udp("10.0.0.2:40000", "198.51.100.20:53", b"\0\0"))
        .seen();
    // The datagram as it will leave, with a zero payload word: its checksum
    // c0 is the complement of the sum of everything else; a payload word of
    // c0 makes the sum all ones, i.e. a computed checksum of zero.
    let out_ip = Ip::new(first.src, first.dst);
    let probe = out_ip.udp(first.sport, 53, &[0, 0]);
    let c0 = [probe[40], probe[41]];
    let crafted = out_ip.udp(first.sport, 53, &c0);
    assert_eq!(
        &crafted[40..42],
        &[0xff, 0xff],
        "etherparse agrees the sum is zero"
    );

    let sent = gw.on_lan(&udp("10.0.0.2:40000", "198.51.100.20:53", &c0));
    let f = sent.forwarded();
    assert_eq!(view(f).src_sa(), first.src_sa());
    assert_eq!(
        &f[40..42],
        &[0xff, 0xff],
        "a computed zero goes out as 0xffff"
    );
}

const POOL_PERSISTENT: &str = r#"
[[rule]]
name = "pool"
oif = "wan0"
src = "10.0.0.0/24"
action = "snat"
to = ["192.0.2.10-192.0.2.13"]
persistent = true
"#;

#[test]
fn snat_pool_persistent_same_host_same_address() {
    let gw = Gw::with("", POOL_PERSISTENT);
    let pool: Vec<Ipv4Addr> = (10..=13).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();

    // One host, many flows to many servers, TCP and UDP: always one address.
    let mut used = BTreeSet::new();
    for i in 0..40u16 {
        let server = format!("198.51.100.{}:{}", 20 + i % 7, 80 + i);
        let src = format!("10.0.0.2:{}", 40000 + i);
        let f = if i % 2 == 0 {
            tcp(&src, &server, SYN, b"")
        } else {
            udp(&src, &server, b"x")
        };
        let seen = gw.on_lan(&f).seen();
        assert!(pool.contains(&seen.src), "{} is not in the pool", seen.src);
        used.insert(seen.src);

        // The reply to the pool address reaches the host.
        let reply = if i % 2 == 0 {
            tcp_seq(
                &server,
                &format!("{}:{}", seen.src, seen.sport),
                SYN | ACK,
                1,
                1001,
                b"",
            )
        } else {
            udp(&server, &format!("{}:{}", seen.src, seen.sport), b"y")
        };
        let back = gw.on_wan(&reply);
        assert_eq!(back.seen().dst_sa(), sa(&src));
    }
    assert_eq!(
        used.len(),
        1,
        "persistent: one host always gets one address"
    );

    // Ping from the same host uses the same address too.
    let seen = gw.on_lan(&ping("10.0.0.2", "198.51.100.1", 7, 1)).seen();
    assert_eq!(Some(&seen.src), used.first());

    // Many hosts spread over the whole pool, each consistently.
    let mut by_host = std::collections::BTreeMap::new();
    for h in 3..=60u8 {
        for k in 0..3u16 {
            let src = format!("10.0.0.{h}:{}", 30000 + k);
            let dst = format!("198.51.100.{}:443", 30 + k);
            let seen = gw.on_lan(&tcp(&src, &dst, SYN, b"")).seen();
            let prev = by_host.insert(h, seen.src);
            assert!(
                prev.is_none_or(|p| p == seen.src),
                "host 10.0.0.{h} moved from {prev:?} to {}",
                seen.src
            );
        }
    }
    let spread: BTreeSet<_> = by_host.values().copied().collect();
    assert_eq!(
        spread.len(),
        pool.len(),
        "58 hosts should use every address of a 4-address pool: {spread:?}"
    );
}

fn eim() -> Fields {
    lan_out().s("mapping", "endpoint-independent")
}

fn eim_eif() -> Fields {
    eim().s("filtering", "endpoint-independent")
}

/// A peer-to-peer client talks to a STUN server, then to a second server:
/// both see the same public address and port (RFC 4787 REQ-1).
#[test]
fn udp_endpoint_independent_mapping_keeps_outside_port() {
    let gw = Gw::of(ConfigText::seeded().rule(eim()));
    let a = gw
        .on_lan(&udp(
            "10.0.0.2:5000",
            "198.51.100.20:3478",
            b"binding request",
        ))
        .seen();
    let b = gw
        .on_lan(&udp("10.0.0.2:5000", "192.0.2.50:3478", b"binding request"))
        .seen();
    let c = gw
        .on_lan(&udp("10.0.0.2:5000", "192.0.2.51:9999", b"hello peer"))
        .seen();
    assert_eq!(a.src, gw_out());
    assert_eq!(
        a.src_sa(),
        b.src_sa(),
        "same mapping towards a second server"
    );
    assert_eq!(a.src_sa(), c.src_sa(), "same mapping towards a peer");

    // Another inside host with the same port gets a different mapping, and
    // keeps it too.
    let d = gw
        .on_lan(&udp(
            "10.0.0.3:5000",
            "198.51.100.20:3478",
            b"binding request",
        ))
        .seen();
    let e = gw
        .on_lan(&udp("10.0.0.3:5000", "192.0.2.50:3478", b"binding request"))
        .seen();
    assert_ne!(d.src_sa(), a.src_sa());
    assert_eq!(d.src_sa(), e.src_sa());

    // Each server's answer reaches the right host.
    for (server, host, m) in [
        ("198.51.100.20:3478", "10.0.0.2:5000", a.sport),
        ("192.0.2.50:3478", "10.0.0.2:5000", a.sport),
        ("198.51.100.20:3478", "10.0.0.3:5000", d.sport),
        ("192.0.2.50:3478", "10.0.0.3:5000", d.sport),
    ] {
        let back = gw.on_wan(&udp(server, &public(m), b"binding response"));
        assert_eq!(back.seen().dst_sa(), sa(host), "answer from {server}");
    }
    let maps = gw.engine.nat().eim_mappings();
    assert_eq!(maps.len(), 2, "{maps:?}");
}

/// The default masquerade (no `mapping` option) keeps an inside
/// endpoint's mapping towards every new destination where it is free, as
/// Linux's "same source" lookup does (RFC 4787 REQ-1, RFC 5382 REQ-1), also
/// when the inside port itself could not be kept: TCP, UDP and ping.
#[test]
fn default_masquerade_reuses_an_inside_endpoints_mapping() {
    let gw = Gw::of(masq());
    // 10.0.0.2:5000 holds outside port 5000 towards the first server, so
    // 10.0.0.3:5000 is given another port there...
    for (mk, what) in [
        (
            (|s: &str, d: &str| tcp(s, d, SYN, b"")) as fn(&str, &str) -> Vec<u8>,
            "tcp",
        ),
        (
            (|s: &str, d: &str| udp(s, d, b"x")) as fn(&str, &str) -> Vec<u8>,
            "udp",
        ),
    ] {
        let a = gw.on_lan(&mk("10.0.0.2:5000", "198.51.100.20:80")).seen();
        assert_eq!(
            a.src_sa(),
            sa(&public(5000)),
            "{what}: the inside port is kept"
        );
        let b = gw.on_lan(&mk("10.0.0.3:5000", "198.51.100.20:80")).seen();
        assert_ne!(
            b.sport, 5000,
            "{what}: two flows cannot share one outside tuple"
        );
        // ...and keeps that port towards other servers and other ports,
        // where 5000 would have been free.
        for dst in ["198.51.100.20:443", "192.0.2.50:80", "192.0.2.51:3478"] {
            let c = gw.on_lan(&mk("10.0.0.3:5000", dst)).seen();
            assert_eq!(
                c.src_sa(),
                b.src_sa(),
                "{what}: 10.0.0.3:5000 -> {dst} got another mapping"
            );
            // The answer reaches the right host.
            let back = if what == "tcp" {
                gw.on_wan(&tcp_seq(dst, &public(b.sport), SYN | ACK, 1, 1, b""))
            } else {
                gw.on_wan(&udp(dst, &public(b.sport), b"y"))
            };
            assert_eq!(back.seen().dst_sa(), sa("10.0.0.3:5000"), "{what} {dst}");
        }
        // The first host keeps its own port everywhere too.
        let d = gw.on_lan(&mk("10.0.0.2:5000", "192.0.2.50:80")).seen();
        assert_eq!(d.sport, 5000, "{what}");
    }

    // Ping: the identifier taken at one server stays translated the same
    // way to the next.
    let p1 = gw.on_lan(&ping("10.0.0.2", "198.51.100.20", 77, 1)).seen();
    assert_eq!(p1.icmp().echo_id(), 77);
    let p2 = gw.on_lan(&ping("10.0.0.3", "198.51.100.20", 77, 1)).seen();
    let id = p2.icmp().echo_id();
    assert_ne!(id, 77);
    let p3 = gw.on_lan(&ping("10.0.0.3", "192.0.2.50", 77, 1)).seen();
    assert_eq!(p3.icmp().echo_id(), id, "ping id remapped differently");

    // When the mapping is taken towards a destination, that flow gets a
    // fresh one (Linux does the same) and the others keep theirs.
    let taken = gw
        .on_lan(&tcp("10.0.0.4:6000", "192.0.2.60:80", SYN, b""))
        .seen();
    assert_eq!(taken.sport, 6000);
    let first = gw
        .on_lan(&tcp("10.0.0.5:6000", "192.0.2.61:80", SYN, b""))
        .seen();
    assert_eq!(first.sport, 6000);
    let other = gw
        .on_lan(&tcp("10.0.0.4:6000", "192.0.2.61:80", SYN, b""))
        .seen();
    assert_ne!(other.sport, 6000);
    let m = other.sport;
    // 10.0.0.4:6000 now holds two mappings (6000 and m): like Linux's
    // most recent "same source" entry, m is tried first.
    let again = gw
        .on_lan(&tcp("10.0.0.5:7000", "192.0.2.62:80", SYN, b""))
        .seen();
    assert_eq!(again.sport, 7000);
    let last = gw
        .on_lan(&tcp("10.0.0.4:6000", "192.0.2.62:80", SYN, b""))
        .seen();
    assert_eq!(last.sport, m, "the mapping it was given last");

    // Expiry gives the mapping back: nothing stays indexed.
    let mut gw = gw;
    gw.advance_secs(500_000);
    gw.sweep();
    assert!(gw.flows().is_empty());
    assert_eq!(gw.engine.nat().same_source_len(), 0);
    assert_eq!(gw.counters.snapshot().total_drops(), 0);
}

/// A non-persistent pool hashes the destination to pick an address; an
/// inside endpoint that has a mapping keeps its address and port anyway
/// (Linux: `find_appropriate_src` comes before the hash).
#[test]
fn snat_pool_keeps_an_inside_endpoints_address_and_port() {
    let gw = Gw::with("", &POOL_PERSISTENT.replace("persistent = true", ""));
    let a = gw
        .on_lan(&udp("10.0.0.2:5000", "198.51.100.20:53", b"q"))
        .seen();
    for i in 0..30u8 {
        let dst = format!("198.51.100.{}:{}", 30 + i, 1000 + u16::from(i));
        let b = gw.on_lan(&udp("10.0.0.2:5000", &dst, b"q")).seen();
        assert_eq!(b.src_sa(), a.src_sa(), "towards {dst}");
        let back = gw.on_wan(&udp(&dst, &format!("{}:{}", b.src, b.sport), b"a"));
        assert_eq!(back.seen().dst_sa(), sa("10.0.0.2:5000"));
    }
    // Other hosts still spread over the pool.
    let spread: BTreeSet<Ipv4Addr> = (3..40u8)
        .map(|h| {
            gw.on_lan(&udp(&format!("10.0.0.{h}:5000"), "198.51.100.20:53", b"q"))
                .seen()
                .src
        })
        .collect();
    assert!(spread.len() > 1, "{spread:?}");
}

/// Without endpoint-independent filtering, a remote the inside endpoint
/// never sent to cannot use the mapping; once the inside sends to it, it can.
#[test]
fn udp_eim_without_eif_filters_unknown_remotes() {
    let gw = Gw::of(ConfigText::seeded().rule(eim()));
    let m = gw
        .on_lan(&udp(
            "10.0.0.2:5000",
            "198.51.100.20:3478",
            b"binding request",
        ))
        .seen()
        .sport;
    let stranger = gw.on_wan(&udp("192.0.2.77:6000", &public(m), b"knock knock"));
    assert!(
        !stranger.is_forward(),
        "an unknown remote must not reach the inside host: {}",
        stranger.short()
    );
    // The inside host sends to that peer (hole punching): now it gets in.
    let seen = gw
        .on_lan(&udp("10.0.0.2:5000", "192.0.2.77:6000", b"punch"))
        .seen();
    assert_eq!(seen.sport, m);
    let back = gw.on_wan(&udp("192.0.2.77:6000", &public(m), b"knock knock"));
    assert_eq!(back.seen().dst_sa(), sa("10.0.0.2:5000"));
}

/// With endpoint-independent filtering, any remote can reach the mapping
/// (RFC 4787 REQ-8 "full cone"), and the inside host's answer goes out
/// from the mapped address and port.
#[test]
fn udp_eim_with_eif_lets_new_remote_in() {
    let mut gw = Gw::of(ConfigText::seeded().rule(eim_eif()));
    let m = gw
        .on_lan(&udp(
            "10.0.0.2:5000",
            "198.51.100.20:3478",
            b"binding request",
        ))
        .seen()
        .sport;
    let inbound = gw.on_wan(&udp("192.0.2.77:6000", &public(m), b"hello from a peer"));
    assert_eq!(inbound.oif(), gw.lan);
    assert_eq!(inbound.next_hop(), ip("10.0.0.2"));
    let seen = inbound.seen();
    assert_eq!(
        seen.src_sa(),
        sa("192.0.2.77:6000"),
        "the peer's real address"
    );
    assert_eq!(seen.dst_sa(), sa("10.0.0.2:5000"));
    assert_eq!(seen.payload, b"hello from a peer");

    let answer = gw
        .on_lan(&udp("10.0.0.2:5000", "192.0.2.77:6000", b"hi peer"))
        .seen();
    assert_eq!(
        answer.src_sa(),
        sa(&public(m)),
        "answers come from the mapping"
    );
    assert_eq!(answer.dst_sa(), sa("192.0.2.77:6000"));

    // A port nobody mapped stays closed.
    let other = if m == 5001 { 5002 } else { 5001 };
    let closed = gw.on_wan(&udp("192.0.2.77:6000", &public(other), b"scan"));
    assert!(!closed.is_forward(), "{}", closed.short());

    // When every flow of the mapping has timed out, the mapping goes too,
    // and the port is closed again.
    assert_eq!(gw.engine.nat().eim_mappings().len(), 1);
    gw.advance_secs(gw.engine.config().timeouts.udp_stream as u64);
    assert_eq!(gw.sweep(), 2);
    assert!(gw.engine.nat().eim_mappings().is_empty());
    let late = gw.on_wan(&udp("192.0.2.78:6000", &public(m), b"too late"));
    assert!(!late.is_forward(), "{}", late.short());
    let usage = gw.engine.nat().port_usage();
    assert!(usage.iter().all(|u| u.flows == 0), "{usage:?}");
}

/// An outside port held by an EIM mapping is not given to another inside
/// host, even towards a remote where its tuple would be free: a peer that
/// knocks on it must reach the mapping's owner and nobody else.
#[test]
fn a_port_held_by_an_eim_mapping_is_not_given_to_another_host() {
    let gw = Gw::of(ConfigText::seeded().rule(eim_eif()));
    let m = gw
        .on_lan(&udp("10.0.0.2:5000", "198.51.100.20:3478", b"binding"))
        .seen()
        .sport;
    // Another host with the same source port, to another remote.
    let other = gw
        .on_lan(&udp("10.0.0.3:5000", "192.0.2.99:7000", b"hello"))
        .seen()
        .sport;
    assert_ne!(other, m, "the mapping's port went to a second host");
    let knock = gw.on_wan(&udp("192.0.2.77:6000", &public(m), b"knock"));
    assert_eq!(knock.seen().dst_sa(), sa("10.0.0.2:5000"));
}

// ---------------------------------------------------------------------------
// Story 2: publish an inside server

#[test]
fn dnat_port_forward_server_sees_real_client() {
    let gw = Gw::of(dnat_and_masq());
    let client = "198.51.100.99:50000";

    let out = gw.on_wan(&tcp(client, &public(8080), SYN, b""));
    assert_eq!(out.oif(), gw.lan);
    assert_eq!(out.next_hop(), ip("10.0.0.5"));
    let seen = out.seen();
    assert_eq!(seen.src_sa(), sa(client), "the server sees the real client");
    assert_eq!(seen.dst_sa(), sa("10.0.0.5:80"), "port 8080 mapped to 80");

    let back = gw.on_lan(&tcp_seq("10.0.0.5:80", client, SYN | ACK, 500, 1001, b""));
    assert_eq!(back.oif(), gw.wan);
    assert_eq!(back.next_hop(), ip(UPSTREAM));
    let seen = back.seen();
    assert_eq!(
        seen.src_sa(),
        sa(&public(8080)),
        "the client sees the public address"
    );
    assert_eq!(seen.dst_sa(), sa(client));

    let seen = gw
        .on_wan(&tcp_seq(
            client,
            &public(8080),
            PSH | ACK,
            1001,
            501,
            b"GET /",
        ))
        .seen();
    assert_eq!(seen.dst_sa(), sa("10.0.0.5:80"));
    assert_eq!(seen.payload, b"GET /");

    let flows = gw.flows();
    assert_eq!(flows.len(), 1);
    assert!(
        flag_names(&flows[0]).contains(&"DNAT"),
        "{:?}",
        flag_names(&flows[0])
    );
    assert_eq!(flows[0].tcp_state.name(), "ESTABLISHED");

    // Other ports of the public address are not forwarded.
    let other = gw.on_wan(&tcp(client, &public(8081), SYN, b""));
    assert!(!other.is_forward(), "{}", other.short());
}

/// An NTP client on the internet queries from port 123; the published NTP
/// server must see the client's real address *and port* (DNAT changes the
/// destination only).
#[test]
fn dnat_server_sees_client_privileged_source_port() {
    let gw = Gw::of(
        ConfigText::seeded()
            .rule(
                Fields::new()
                    .name("ntp")
                    .s("iif", "wan0")
                    .s("proto", "udp")
                    .v("dport", 123)
                    .s("action", "dnat")
                    .s("to", "10.0.0.6:123"),
            )
            .rule(lan_out()),
    );
    let seen = gw
        .on_wan(&udp("198.51.100.99:123", &public(123), b"ntp request"))
        .seen();
    assert_eq!(seen.dst_sa(), sa("10.0.0.6:123"));
    assert_eq!(
        seen.src_sa(),
        sa("198.51.100.99:123"),
        "DNAT must not rewrite the client's source port"
    );
    let back = gw.on_lan(&udp(
        "10.0.0.6:123",
        &seen.src_sa().to_string(),
        b"ntp reply",
    ));
    assert_eq!(back.seen().dst_sa(), sa("198.51.100.99:123"));
    assert_eq!(back.seen().src_sa(), sa(&public(123)));
}

/// With no NAT rule and `unmatched = "forward"`, natgw routes like Linux
/// with ip_forward=1: addresses and ports leave as they came, privileged
/// source ports included.
#[test]
fn unmatched_flows_are_routed_untranslated() {
    let gw = Gw::with("unmatched = \"forward\"", "");
    for src in ["10.0.0.2:40000", "10.0.0.2:53", "10.0.0.2:123"] {
        let seen = gw.on_lan(&udp(src, "198.51.100.20:53", b"q")).seen();
        assert_eq!(seen.src_sa(), sa(src), "untranslated source {src}");
        assert_eq!(seen.dst_sa(), sa("198.51.100.20:53"));
    }
    let seen = gw
        .on_lan(&tcp("10.0.0.2:22", "198.51.100.20:22", SYN, b""))
        .seen();
    assert_eq!(seen.src_sa(), sa("10.0.0.2:22"));
}

/// "A whole address can be mapped 1:1" (netmap): the inside server
/// 10.0.0.5 is 203.0.113.5 to the world, both ways, with ports untouched.
#[test]
fn one_to_one_mapping_both_ways_keeps_ports() {
    let gw = Gw::of(
        ConfigText::seeded()
            .rule(
                Fields::new()
                    .name("server-1to1")
                    .s("src", "10.0.0.5/32")
                    .s("action", "netmap")
                    .s("to", "203.0.113.5/32"),
            )
            .rule(lan_out()),
    );
    // New inbound flows to the public address reach the server, which sees
    // the real client.
    let inbound = gw.on_wan(&tcp("198.51.100.99:50000", "203.0.113.5:22", SYN, b""));
    assert_eq!(inbound.next_hop(), ip("10.0.0.5"));
    let seen = inbound.seen();
    assert_eq!(seen.src_sa(), sa("198.51.100.99:50000"));
    assert_eq!(seen.dst_sa(), sa("10.0.0.5:22"));
    let back = gw.on_lan(&tcp_seq(
        "10.0.0.5:22",
        "198.51.100.99:50000",
        SYN | ACK,
        1,
        1001,
        b"",
    ));
    assert_eq!(back.seen().src_sa(), sa("203.0.113.5:22"));

    // Outbound flows of the server leave from its own public address, with
    // their ports (an NTP client uses 123 on both ends).
    for src_port in [40000u16, 123] {
        let seen = gw
            .on_lan(&udp(
                &format!("10.0.0.5:{src_port}"),
                "198.51.100.20:123",
                b"ntp",
            ))
            .seen();
        assert_eq!(
            seen.src_sa(),
            sa(&format!("203.0.113.5:{src_port}")),
            "1:1 mapping changes the address only"
        );
    }
    // Other inside hosts still share the gateway's address.
    let seen = gw
        .on_lan(&udp("10.0.0.6:40000", "198.51.100.20:123", b"ntp"))
        .seen();
    assert_eq!(seen.src, gw_out());
}

/// An inside client uses the public address of a server that is also
/// inside. The server sees the gateway's inside address (so it answers via
/// natgw), and the answer reaches the client from the public address.
#[test]
fn hairpin_inside_client_reaches_inside_server_by_public_address() {
    let gw = Gw::of(
        ConfigText::seeded()
            .rule(
                Fields::new()
                    .name("web-public")
                    .s("dst", "203.0.113.1")
                    .s("proto", "tcp")
                    .v("dport", 8080)
                    .s("action", "dnat")
                    .s("to", "10.0.0.5:80"),
            )
            .rule(lan_out()),
    );
    let out = gw.on_lan(&tcp("10.0.0.7:40001", &public(8080), SYN, b""));
    assert_eq!(out.oif(), gw.lan, "back out of the interface it came in");
    assert_eq!(out.next_hop(), ip("10.0.0.5"));
    let seen = out.seen();
    assert_eq!(
        seen.src,
        ip(GW_IN),
        "the server sees the gateway's inside address"
    );
    assert_eq!(seen.dst_sa(), sa("10.0.0.5:80"));

    let back = gw.on_lan(&tcp_seq(
        "10.0.0.5:80",
        &seen.src_sa().to_string(),
        SYN | ACK,
        100,
        1001,
        b"",
    ));
    assert_eq!(back.oif(), gw.lan);
    assert_eq!(back.next_hop(), ip("10.0.0.7"));
    let seen = back.seen();
    assert_eq!(
        seen.src_sa(),
        sa(&public(8080)),
        "the client sees the public address"
    );
    assert_eq!(seen.dst_sa(), sa("10.0.0.7:40001"));

    let flows = gw.flows();
    assert_eq!(flows.len(), 1);
    let names = flag_names(&flows[0]);
    assert!(
        names.contains(&"HAIRPIN") && names.contains(&"DNAT"),
        "{names:?}"
    );

    // The same rule still serves outside clients, who are seen as they are.
    let seen = gw
        .on_wan(&tcp("198.51.100.99:50000", &public(8080), SYN, b""))
        .seen();
    assert_eq!(seen.src_sa(), sa("198.51.100.99:50000"));
    assert_eq!(seen.dst_sa(), sa("10.0.0.5:80"));
}

// ---------------------------------------------------------------------------
// ping and ICMP errors through the NAT

#[test]
fn ping_through_nat_two_hosts_same_id() {
    let gw = Gw::of(masq());
    let id = 0x04d2;
    let a = gw.on_lan(&ping("10.0.0.2", "198.51.100.20", id, 1)).seen();
    let b = gw.on_lan(&ping("10.0.0.3", "198.51.100.20", id, 1)).seen();
    assert_eq!((a.src, b.src), (gw_out(), gw_out()));
    assert_eq!(a.icmp().ty, ICMP_ECHO_REQUEST);
    let (ida, idb) = (a.icmp().echo_id(), b.icmp().echo_id());
    assert_ne!(
        ida, idb,
        "two pings through one address need two identifiers"
    );

    // Replies arrive in the opposite order; each reaches its sender with
    // the identifier it used.
    for (pub_id, host) in [(idb, "10.0.0.3"), (ida, "10.0.0.2")] {
        let back = gw.on_wan(&pong("198.51.100.20", GW_OUT, pub_id, 1));
        assert_eq!(back.next_hop(), ip(host));
        let seen = back.seen();
        assert_eq!((seen.src, seen.dst), (ip("198.51.100.20"), ip(host)));
        let icmp = seen.icmp();
        assert_eq!(icmp.ty, ICMP_ECHO_REPLY);
        assert_eq!((icmp.echo_id(), icmp.echo_seq()), (id, 1));
        assert_eq!(seen.payload, b"natgw ping payload");
    }

    // The next pings of both keep their identifiers.
    let a2 = gw.on_lan(&ping("10.0.0.2", "198.51.100.20", id, 2)).seen();
    let b2 = gw.on_lan(&ping("10.0.0.3", "198.51.100.20", id, 2)).seen();
    assert_eq!((a2.icmp().echo_id(), b2.icmp().echo_id()), (ida, idb));
    assert_eq!(gw.counters.snapshot().fast_path, 4);

    // A stray echo reply matches nothing and is counted.
    let stray = gw.on_wan(&pong("198.51.100.20", GW_OUT, ida ^ idb ^ 0x5555, 1));
    assert!(!stray.is_forward(), "{}", stray.short());
}

/// Identifier 0 is a valid echo identifier (RFC 792); a ping using it must
/// work like any other.
#[test]
fn ping_with_identifier_zero_works() {
    let gw = Gw::of(masq());
    let out = gw.on_lan(&ping("10.0.0.2", "198.51.100.20", 0, 1));
    let seen = out.seen();
    assert_eq!(seen.src, gw_out());
    let back = gw.on_wan(&pong("198.51.100.20", GW_OUT, seen.icmp().echo_id(), 1));
    let seen = back.seen();
    assert_eq!(seen.dst, ip("10.0.0.2"));
    assert_eq!(seen.icmp().echo_id(), 0);
}

/// A UDP flow 10.0.0.2:40000 -> 198.51.100.20:53 through masquerade;
/// returns the gateway and the frame as the server received it.
fn udp_flow() -> (Gw, Vec<u8>) {
    let gw = Gw::of(masq());
    let out = gw.on_lan(&udp("10.0.0.2:40000", "198.51.100.20:53", b"dns query"));
    let frame = out.forwarded().to_vec();
    (gw, frame)
}

/// A TCP flow 10.0.0.2:40000 -> 198.51.100.20:443 (handshake done, one
/// data segment); returns the gateway and the data segment as it left.
fn tcp_flow() -> (Gw, Vec<u8>) {
    let gw = Gw::of(masq());
    let syn = gw.on_lan(&tcp("10.0.0.2:40000", "198.51.100.20:443", SYN, b""));
    let port = syn.seen().sport;
    let _ = gw.on_wan(&tcp_seq(
        "198.51.100.20:443",
        &public(port),
        SYN | ACK,
        1,
        1001,
        b"",
    ));
    let _ = gw.on_lan(&tcp_seq(
        "10.0.0.2:40000",
        "198.51.100.20:443",
        ACK,
        1001,
        2,
        b"",
    ));
    let data = vec![0xabu8; 600];
    let out = gw.on_lan(&tcp_seq(
        "10.0.0.2:40000",
        "198.51.100.20:443",
        PSH | ACK,
        1001,
        2,
        &data,
    ));
    let frame = out.forwarded().to_vec();
    (gw, frame)
}

/// Checks an ICMP error that came back to the inside host 10.0.0.2 about
/// its packet `inside_src -> server`.
#[track_caller]
fn assert_error_reached_host(
    gw: &Gw,
    out: &Out,
    from: &str,
    kind: IcmpKind,
    inside_src: &str,
    server: &str,
) -> View {
    assert_eq!(out.oif(), gw.lan, "{}", out.short());
    assert_eq!(out.next_hop(), ip("10.0.0.2"));
    let seen = out.seen();
    assert_eq!(seen.src, ip(from), "the error still comes from its sender");
    assert_eq!(
        seen.dst,
        ip("10.0.0.2"),
        "outer destination translated back"
    );
    let icmp = seen.icmp();
    assert_eq!((icmp.ty, icmp.code), kind.type_code());
    let inner = seen.inner();
    assert_eq!(
        inner.src_sa(),
        sa(inside_src),
        "quoted source translated back"
    );
    assert_eq!(inner.dst_sa(), sa(server), "quoted destination unchanged");
    seen
}

/// RFC 5508 4.1: ICMP errors about datagrams of protocols without ports
/// (GRE, 253) are translated by their address-only flow, both ways: the
/// remote's protocol-unreachable reaches the inside host, and the inside
/// host's error about the remote's packet goes out translated.
#[test]
fn icmp_errors_quoting_other_protocols_are_translated() {
    let gw = Gw::of(masq());
    for proto in [47u8, 253] {
        let server = "198.51.100.20";
        let payload = [0u8, 0, 0x08, 0, 0x45, 0, 0, 20, 1, 2, 3, 4];
        let sent = Ip::new(ip("10.0.0.2"), ip(server)).raw(proto, &payload);
        let out = gw.on_lan(&sent);
        let seen = out.seen();
        assert_eq!(
            (seen.src, seen.dst, seen.proto),
            (gw_out(), ip(server), proto)
        );
        for quote in [Quote::HeaderPlus8, Quote::Full] {
            let err = icmp_error(
                server,
                GW_OUT,
                IcmpKind::ProtoUnreachable,
                out.forwarded(),
                quote,
            );
            let back = gw.on_wan(&err);
            let seen = assert_error_reached_host(
                &gw,
                &back,
                server,
                IcmpKind::ProtoUnreachable,
                "10.0.0.2:0",
                &format!("{server}:0"),
            );
            assert_eq!(seen.inner().proto, proto, "{proto}");
            if quote == Quote::Full {
                assert_eq!(seen.inner().payload, payload, "{proto}: quoted payload");
            }
        }
        // The remote's packet reaches the inside host, whose error about
        // it leaves as the gateway's, quoting what the remote sent.
        let reply = Ip::new(ip(server), gw_out()).raw(proto, &payload);
        let inb = gw.on_wan(&reply);
        assert_eq!(inb.next_hop(), ip("10.0.0.2"));
        let err = icmp_error(
            "10.0.0.2",
            server,
            IcmpKind::ProtoUnreachable,
            inb.forwarded(),
            Quote::Full,
        );
        let o = gw.on_lan(&err);
        assert_eq!(o.oif(), gw.wan, "{}", o.short());
        let seen = o.seen();
        assert_eq!((seen.src, seen.dst), (gw_out(), ip(server)));
        let inner = seen.inner();
        assert_eq!(
            (inner.src, inner.dst, inner.proto),
            (ip(server), gw_out(), proto)
        );
    }
    assert_eq!(gw.counters.snapshot().icmp_errors_translated, 6);
    assert_eq!(gw.counters.snapshot().total_drops(), 0);
    // An error about a flow natgw does not have is still refused.
    let stray = Ip::new(gw_out(), ip("198.51.100.77")).raw(253, b"zzzzzzzz");
    let err = icmp_error(
        "198.51.100.77",
        GW_OUT,
        IcmpKind::ProtoUnreachable,
        &stray,
        Quote::Full,
    );
    assert!(!gw.on_wan(&err).is_forward());
    assert_eq!(gw.drops(DropReason::IcmpInnerBad), 0);
}

#[test]
fn icmp_port_unreachable_reaches_inside_host() {
    for quote in [Quote::Full, Quote::HeaderPlus8] {
        let (gw, sent) = udp_flow();
        let kind = IcmpKind::PortUnreachable;
        let err = icmp_error("198.51.100.20", GW_OUT, kind, &sent, quote);
        let out = gw.on_wan(&err);
        let seen = assert_error_reached_host(
            &gw,
            &out,
            "198.51.100.20",
            kind,
            "10.0.0.2:40000",
            "198.51.100.20:53",
        );
        assert_eq!(seen.inner().proto, PROTO_UDP);
        if quote == Quote::Full {
            assert_eq!(seen.inner().payload, b"dns query");
        }
        assert_eq!(gw.counters.snapshot().icmp_errors_translated, 1);
    }
}

#[test]
fn icmp_fragmentation_needed_reaches_inside_host_with_mtu() {
    // Path MTU discovery: a router on the path cannot forward the segment.
    for quote in [Quote::HeaderPlus8, Quote::Full] {
        let (gw, sent) = tcp_flow();
        let kind = IcmpKind::FragNeeded { mtu: 576 };
        let err = icmp_error("198.51.100.1", GW_OUT, kind, &sent, quote);
        let out = gw.on_wan(&err);
        let seen = assert_error_reached_host(
            &gw,
            &out,
            "198.51.100.1",
            kind,
            "10.0.0.2:40000",
            "198.51.100.20:443",
        );
        assert_eq!(seen.icmp().mtu(), 576, "the next-hop MTU is kept");
        assert_eq!(seen.inner().proto, PROTO_TCP);
    }
}

#[test]
fn icmp_time_exceeded_reaches_inside_host_traceroute() {
    // UDP traceroute: the probe leaves with TTL 1 and dies at the next router.
    let gw = Gw::of(masq());
    let probe = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .ttl(2)
        .udp(33434, 33435, b"probe");
    let sent = gw.on_lan(&probe);
    assert_eq!(sent.seen().ttl, 1);
    let kind = IcmpKind::TimeExceeded;
    let err = icmp_error(UPSTREAM, GW_OUT, kind, sent.forwarded(), Quote::HeaderPlus8);
    let out = gw.on_wan(&err);
    assert_error_reached_host(
        &gw,
        &out,
        UPSTREAM,
        kind,
        "10.0.0.2:33434",
        "198.51.100.20:33435",
    );

    // ICMP traceroute (traceroute -I / mtr): the quoted echo request has its
    // identifier translated back.
    let probe = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .ttl(2)
        .echo_request(0x3131, 5, b"probe");
    let _ = gw.on_lan(&Ip::new(ip("10.0.0.3"), ip("198.51.100.20")).echo_request(0x3131, 1, b"x"));
    let sent = gw.on_lan(&probe);
    let err = icmp_error(UPSTREAM, GW_OUT, kind, sent.forwarded(), Quote::Full);
    let out = gw.on_wan(&err);
    assert_eq!(out.next_hop(), ip("10.0.0.2"));
    let seen = out.seen();
    assert_eq!((seen.src, seen.dst), (ip(UPSTREAM), ip("10.0.0.2")));
    let inner = seen.inner();
    assert_eq!(
        (inner.src, inner.dst),
        (ip("10.0.0.2"), ip("198.51.100.20"))
    );
    let q = inner.icmp();
    assert_eq!(
        (q.ty, q.echo_id(), q.echo_seq()),
        (ICMP_ECHO_REQUEST, 0x3131, 5)
    );
}

#[test]
fn icmp_parameter_problem_reaches_inside_host() {
    let (gw, sent) = tcp_flow();
    let kind = IcmpKind::ParamProblem { pointer: 20 };
    let err = icmp_error("198.51.100.20", GW_OUT, kind, &sent, Quote::Full);
    let out = gw.on_wan(&err);
    let seen = assert_error_reached_host(
        &gw,
        &out,
        "198.51.100.20",
        kind,
        "10.0.0.2:40000",
        "198.51.100.20:443",
    );
    assert_eq!(seen.icmp().rest[0], 20, "the pointer is kept");
}

#[test]
fn icmp_host_unreachable_for_ping_reaches_the_right_host() {
    let gw = Gw::of(masq());
    let _ = gw.on_lan(&ping("10.0.0.3", "198.51.100.77", 9, 1));
    let sent = gw.on_lan(&ping("10.0.0.2", "198.51.100.77", 9, 1));
    let kind = IcmpKind::HostUnreachable;
    let err = icmp_error("198.51.100.1", GW_OUT, kind, sent.forwarded(), Quote::Full);
    let out = gw.on_wan(&err);
    assert_eq!(out.next_hop(), ip("10.0.0.2"));
    let seen = out.seen();
    assert_eq!(seen.dst, ip("10.0.0.2"));
    assert_eq!(seen.inner().icmp().echo_id(), 9);
    assert_eq!(seen.inner().src, ip("10.0.0.2"));
}

/// The inside host rejects an answer with port unreachable (its socket
/// closed): the server must get the error about *its* packet, addressed
/// from and quoting the public address.
#[test]
fn icmp_error_from_inside_host_goes_out_translated() {
    let (gw, sent) = udp_flow();
    let port = view(&sent).sport;
    let answer = gw.on_wan(&udp("198.51.100.20:53", &public(port), b"late answer"));
    let received = answer.forwarded().to_vec();
    let kind = IcmpKind::PortUnreachable;
    let err = icmp_error("10.0.0.2", "198.51.100.20", kind, &received, Quote::Full);
    let out = gw.on_lan(&err);
    assert_eq!(out.oif(), gw.wan);
    let seen = out.seen();
    assert_eq!(seen.src, gw_out(), "the inside address must not leak");
    assert_eq!(seen.dst, ip("198.51.100.20"));
    let inner = seen.inner();
    assert_eq!(inner.src_sa(), sa("198.51.100.20:53"));
    assert_eq!(
        inner.dst_sa(),
        sa(&public(port)),
        "quotes the packet the server sent"
    );
}

/// The published server rejects a datagram: the outside client gets the
/// error from the public address, quoting what it sent.
#[test]
fn icmp_error_from_published_server_reaches_client() {
    let gw = Gw::with(
        "",
        r#"
[[rule]]
iif = "wan0"
proto = "udp"
dport = 5353
action = "dnat"
to = "10.0.0.5:53"
"#,
    );
    let client = "198.51.100.99:40000";
    let received = gw.on_wan(&udp(client, &public(5353), b"query"));
    let kind = IcmpKind::PortUnreachable;
    let err = icmp_error(
        "10.0.0.5",
        "198.51.100.99",
        kind,
        received.forwarded(),
        Quote::Full,
    );
    let out = gw.on_lan(&err);
    assert_eq!(out.oif(), gw.wan);
    let seen = out.seen();
    assert_eq!(seen.src, gw_out());
    assert_eq!(seen.dst, ip("198.51.100.99"));
    let inner = seen.inner();
    assert_eq!(inner.src_sa(), sa(client));
    assert_eq!(inner.dst_sa(), sa(&public(5353)));
}

#[test]
fn icmp_error_about_unknown_flow_is_not_forwarded() {
    let gw = Gw::of(masq());
    let never_sent = Ip::new(gw_out(), ip("198.51.100.20")).udp(4444, 53, b"x");
    let err = icmp_error(
        "198.51.100.20",
        GW_OUT,
        IcmpKind::PortUnreachable,
        &never_sent,
        Quote::Full,
    );
    let out = gw.on_wan(&err);
    assert!(!out.is_forward(), "{}", out.short());
    let about_inside = Ip::new(ip("10.0.0.9"), ip("198.51.100.20")).udp(4444, 53, b"x");
    let err = icmp_error(
        "198.51.100.20",
        "10.0.0.9",
        IcmpKind::PortUnreachable,
        &about_inside,
        Quote::Full,
    );
    assert_eq!(gw.on_wan(&err), Out::Drop(DropReason::IcmpErrorNoFlow));
}

/// A packet that would leave with TTL 0 gets an ICMP time exceeded from the
/// gateway's inside address (what makes the first hop of traceroute show).
#[test]
fn ttl_one_gets_time_exceeded_from_gateway() {
    let gw = Gw::of(masq());
    let probe = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .ttl(1)
        .udp(33434, 33434, b"probe");
    let out = gw.on_lan(&probe);
    let Out::Reply {
        oif,
        next_hop,
        frame,
    } = &out
    else {
        panic!("expected an ICMP reply, got {}", out.short());
    };
    assert_eq!((*oif, *next_hop), (gw.lan, ip("10.0.0.2")));
    let seen = view(frame);
    assert_eq!(
        seen.src,
        ip(GW_IN),
        "from the interface the probe came in on"
    );
    assert_eq!(seen.dst, ip("10.0.0.2"));
    assert_eq!((seen.icmp().ty, seen.icmp().code), (ICMP_TIME_EXCEEDED, 0));
    let inner = seen.inner();
    assert_eq!(
        inner.src_sa(),
        sa("10.0.0.2:33434"),
        "quotes the probe as sent"
    );
    assert_eq!(inner.dst_sa(), sa("198.51.100.20:33434"));
    assert!(gw.flows().is_empty(), "an expiring packet creates no flow");
    let snap = gw.counters.snapshot();
    assert_eq!(snap.ttl_exceeded_sent, 1);

    // TTL 2 is forwarded with TTL 1.
    let probe = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .ttl(2)
        .udp(33434, 33435, b"probe");
    assert_eq!(gw.on_lan(&probe).seen().ttl, 1);

    // ICMP errors never get an ICMP error back.
    let mut err = icmp_error(
        "10.0.0.2",
        "198.51.100.20",
        IcmpKind::PortUnreachable,
        &probe,
        Quote::HeaderPlus8,
    );
    set_ttl(&mut err, 1);
    assert_eq!(gw.on_lan(&err), Out::Drop(DropReason::TtlExceeded));
}

/// RFC 1812 4.3.2.3: the time-exceeded quotes as much of the expired
/// datagram as fits in 576 bytes of IP (as Linux does), and a shorter
/// datagram whole; checksums verify (Gw::send checks every emitted frame,
/// and the quoted UDP checksum too when the whole datagram is quoted).
#[test]
fn time_exceeded_quotes_up_to_576_bytes() {
    let gw = Gw::of(masq());
    for (ip_len, quoted) in [
        (1000usize, 576 - 28),
        (100, 100),
        (576 - 28, 576 - 28),
        (577, 548),
    ] {
        let payload: Vec<u8> = (0..ip_len - 28).map(|i| (i * 7) as u8).collect();
        let probe = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
            .ttl(1)
            .udp(33434, 33434, &payload);
        let orig = ip_datagram(&probe);
        assert_eq!(orig.len(), ip_len);
        let out = gw.on_lan(&probe);
        let Out::Reply { frame, .. } = &out else {
            panic!("expected an ICMP reply, got {}", out.short());
        };
        assert_checksums(frame);
        let err = ip_datagram(frame);
        assert_eq!(err.len(), 28 + quoted, "{ip_len}-byte datagram");
        assert_eq!(u16::from_be_bytes([err[2], err[3]]) as usize, err.len());
        assert_eq!(
            &err[28..],
            &orig[..quoted],
            "quotes the datagram as it came"
        );
        let seen = view(frame);
        assert_eq!(seen.icmp().ty, ICMP_TIME_EXCEEDED);
        assert_eq!(seen.inner().src_sa(), sa("10.0.0.2:33434"));
    }
    assert_eq!(gw.counters.snapshot().ttl_exceeded_sent, 4);
}

/// tcptraceroute to a published service: the probe that expires at the
/// gateway gets a time-exceeded (as Linux does after DNAT in prerouting),
/// rather than being handed to the gateway's own stack as if the gateway
/// were the server.
#[test]
fn ttl_one_towards_published_port_gets_time_exceeded() {
    let gw = Gw::of(dnat_and_masq());
    let probe = Ip::new(ip("198.51.100.99"), gw_out())
        .ttl(1)
        .tcp(50000, 8080, SYN, 1, 0, b"");
    let out = gw.on_wan(&probe);
    let Out::Reply { oif, frame, .. } = &out else {
        panic!("expected an ICMP time exceeded, got {}", out.short());
    };
    assert_eq!(*oif, gw.wan);
    let seen = view(frame);
    assert_eq!((seen.src, seen.dst), (gw_out(), ip("198.51.100.99")));
    assert_eq!(seen.icmp().ty, ICMP_TIME_EXCEEDED);
    assert_eq!(seen.inner().dst_sa(), sa(&public(8080)));
}

// ---------------------------------------------------------------------------
// TCP life cycle and timers

#[test]
fn tcp_flow_lifecycle_through_time_wait() {
    let mut gw = Gw::of(masq());
    let c = "10.0.0.2:40000";
    let s = "198.51.100.20:80";
    let state = |gw: &Gw| {
        let f = gw.flows();
        assert_eq!(f.len(), 1, "{f:?}");
        f[0].tcp_state.name()
    };

    let p = gw.on_lan(&tcp_seq(c, s, SYN, 100, 0, b"")).seen().sport;
    let sp = public(p);
    assert_eq!(state(&gw), "SYN_SENT");
    assert!(flag_names(&gw.flows()[0]).contains(&"UNREPLIED"));

    gw.advance_secs(1);
    let _ = gw.on_wan(&tcp_seq(s, &sp, SYN | ACK, 900, 101, b"")).seen();
    assert_eq!(state(&gw), "SYN_RECV");
    let _ = gw.on_lan(&tcp_seq(c, s, ACK, 101, 901, b"")).seen();
    assert_eq!(state(&gw), "ESTABLISHED");
    assert!(flag_names(&gw.flows()[0]).contains(&"ASSURED"));

    gw.advance_secs(1);
    let _ = gw
        .on_lan(&tcp_seq(c, s, PSH | ACK, 101, 901, b"request"))
        .seen();
    let back = gw.on_wan(&tcp_seq(s, &sp, PSH | ACK, 901, 108, b"response"));
    assert_eq!(back.seen().dst_sa(), sa(c));
    assert_eq!(state(&gw), "ESTABLISHED");

    // The client closes first.
    let _ = gw.on_lan(&tcp_seq(c, s, FIN | ACK, 108, 909, b"")).seen();
    assert_eq!(state(&gw), "FIN_WAIT");
    let _ = gw.on_wan(&tcp_seq(s, &sp, ACK, 909, 109, b"")).seen();
    assert_eq!(state(&gw), "CLOSE_WAIT");
    let _ = gw.on_wan(&tcp_seq(s, &sp, FIN | ACK, 909, 109, b"")).seen();
    assert_eq!(state(&gw), "LAST_ACK");
    let last = gw.on_lan(&tcp_seq(c, s, ACK, 109, 910, b""));
    assert_eq!(last.seen().src_sa(), sa(&sp));
    assert_eq!(state(&gw), "TIME_WAIT");
    assert_eq!(gw.counters.snapshot().tcp_invalid, 0);

    let tw = gw.engine.config().timeouts.tcp_time_wait as u64;
    let t0 = gw.now;
    assert_eq!(gw.flows()[0].expires.0, t0.0 + tw * 1_000_000_000);

    // One nanosecond before the TIME_WAIT timer runs out: still there.
    gw.advance_nanos(tw * 1_000_000_000 - 1);
    assert_eq!(gw.sweep(), 0);
    assert_eq!(state(&gw), "TIME_WAIT");

    // At the deadline it is gone from listings, and a sweep frees it.
    assert_eq!(gw.step_to_next_deadline(), 1);
    assert_eq!(gw.now.0, t0.0 + tw * 1_000_000_000);
    assert!(gw.flows().is_empty());
    assert_eq!(gw.engine.table().len(), 0);
    let usage = gw.engine.nat().port_usage();
    assert!(usage.iter().all(|u| u.flows == 0), "{usage:?}");
}

/// An established connection, client seq 100 (next 101), server seq 900
/// (next 901), both windows 64240 unscaled: `(gw, client, server's view
/// of the client)`.
fn established_tcp(c: ConfigText) -> (Gw, &'static str, String) {
    let gw = Gw::of(c);
    let (cl, s) = ("10.0.0.2:40001", "198.51.100.20:80");
    let p = gw.on_lan(&tcp_seq(cl, s, SYN, 100, 0, b"")).seen().sport;
    let sp = public(p);
    let _ = gw.on_wan(&tcp_seq(s, &sp, SYN | ACK, 900, 101, b"")).seen();
    let _ = gw.on_lan(&tcp_seq(cl, s, ACK, 101, 901, b"")).seen();
    (gw, cl, sp)
}

/// Issue 16 gap 3: a segment from the outside whose sequence number lies
/// beyond what the inside host allowed, or that acknowledges data never
/// sent, is dropped and counted, and changes nothing in the flow (state,
/// timer, counters); in-window segments, a retransmission and a
/// keepalive pass; natgw answers nothing (no reset of its own).
#[test]
fn tcp_segment_outside_the_window_is_dropped_and_changes_nothing() {
    let (mut gw, cl, sp) = established_tcp(masq());
    let s = "198.51.100.20:80";
    gw.advance_secs(5);
    let before = gw.flows()[0].clone();
    for (what, seq, ack) in [
        (
            "data half the sequence space away",
            901u32.wrapping_add(1 << 31),
            101,
        ),
        ("data past the window", 901 + 64_240 + 1, 101),
        (
            "data acknowledged long ago",
            901u32.wrapping_sub(200_000),
            101,
        ),
        ("an ACK of data never sent", 901, 101 + 100_000),
    ] {
        let out = gw.on_wan(&tcp_seq(s, &sp, PSH | ACK, seq, ack, b"evil"));
        assert!(
            matches!(out, Out::Drop(DropReason::TcpOutOfWindow)),
            "{what}: {}",
            out.short()
        );
    }
    let rst = gw.on_wan(&tcp_seq(s, &sp, RST, 901u32.wrapping_add(1 << 30), 0, b""));
    assert!(
        matches!(rst, Out::Drop(DropReason::TcpOutOfWindow)),
        "{}",
        rst.short()
    );
    assert_eq!(gw.drops(DropReason::TcpOutOfWindow), 5);
    assert_eq!(
        gw.flows()[0],
        before,
        "an out-of-window segment moved the flow"
    );

    // The conversation goes on: data both ways, a retransmission, a
    // keepalive, an in-window RST closes.
    let back = gw.on_wan(&tcp_seq(s, &sp, PSH | ACK, 901, 101, b"response"));
    assert_eq!(back.seen().dst_sa(), sa(cl));
    let _ = gw
        .on_wan(&tcp_seq(s, &sp, PSH | ACK, 901, 101, b"response"))
        .seen();
    let _ = gw.on_lan(&tcp_seq(cl, s, ACK, 101, 909, b"")).seen();
    let _ = gw.on_lan(&tcp_seq(cl, s, ACK, 100, 909, b"")).seen();
    let _ = gw.on_wan(&tcp_seq(s, &sp, RST, 909, 0, b"")).seen();
    assert_eq!(gw.flows()[0].tcp_state.name(), "CLOSE");
    assert_eq!(gw.drops(DropReason::TcpOutOfWindow), 5);
}

/// `tcp_window = "liberal"` forwards what strict tracking drops; a flow
/// picked up mid-stream (first segment no SYN) is tracked liberally by
/// default too, since its window scales are unknown.
#[test]
fn liberal_tracking_and_picked_up_flows_forward_any_segment() {
    let (gw, cl, sp) = established_tcp(masq().gateway_opt("tcp_window", "\"liberal\""));
    let far = 901u32.wrapping_add(1 << 31);
    let s = "198.51.100.20:80";
    let out = gw.on_wan(&tcp_seq(s, &sp, PSH | ACK, far, 101, b"x"));
    assert_eq!(out.seen().dst_sa(), sa(cl));

    let gw = Gw::of(masq());
    let p = gw
        .on_lan(&tcp_seq(cl, s, PSH | ACK, 5000, 7000, b"mid"))
        .seen()
        .sport;
    let out = gw.on_wan(&tcp_seq(s, &public(p), PSH | ACK, far, 5003, b"x"));
    assert_eq!(out.seen().dst_sa(), sa(cl));
    assert_eq!(gw.drops(DropReason::TcpOutOfWindow), 0);
}

/// `tcp_loose = false`: a TCP segment other than a SYN starts no flow
/// (dropped as `tcp_not_syn`); a SYN still does.
#[test]
fn tcp_loose_off_refuses_to_pick_up_connections() {
    let gw = Gw::of(masq().gateway_opt("tcp_loose", false));
    let s = "198.51.100.20:80";
    let out = gw.on_lan(&tcp_seq("10.0.0.2:40002", s, PSH | ACK, 5000, 7000, b"mid"));
    assert!(
        matches!(out, Out::Drop(DropReason::TcpNotSyn)),
        "{}",
        out.short()
    );
    assert!(gw.flows().is_empty());
    let _ = gw
        .on_lan(&tcp_seq("10.0.0.2:40002", s, SYN, 5000, 0, b""))
        .seen();
    assert_eq!(gw.flows().len(), 1);
}

// ---------------------------------------------------------------------------
// Limits: flow table and ports

fn limits(max: u32, early_drop: bool) -> ConfigText {
    ConfigText::seeded()
        .table(
            "limits",
            &format!("max_flows = {max}\nearly_drop = {early_drop}"),
        )
        .rule(lan_out())
}

#[test]
fn flow_limit_drops_new_flow_without_early_drop() {
    let mut gw = Gw::of(limits(4, false));
    for i in 0..4 {
        let _ = gw
            .on_lan(&udp(
                &format!("10.0.0.2:{}", 40000 + i),
                "198.51.100.20:53",
                b"q",
            ))
            .seen();
    }
    let out = gw.on_lan(&udp("10.0.0.2:40004", "198.51.100.20:53", b"q"));
    assert_eq!(out, Out::Drop(DropReason::FlowTableFull));
    assert_eq!(gw.drops(DropReason::FlowTableFull), 1);
    assert_eq!(gw.engine.table().len(), 4);
    assert_eq!(gw.engine.table().capacity(), 4);

    // Existing flows keep working while the table is full.
    let seen = gw
        .on_lan(&udp("10.0.0.2:40000", "198.51.100.20:53", b"q2"))
        .seen();
    assert_eq!(seen.src, gw_out());

    // Once flows time out and are swept, there is room again.
    gw.advance_secs(gw.engine.config().timeouts.udp as u64);
    assert_eq!(gw.sweep(), 4);
    let _ = gw
        .on_lan(&udp("10.0.0.2:40004", "198.51.100.20:53", b"q"))
        .seen();
}

#[test]
fn flow_limit_with_early_drop_evicts_unreplied_flow() {
    let gw = Gw::of(limits(4, true));
    // Flow 0 gets an answer (assured); flows 1-3 never do.
    let mut ports = Vec::new();
    for i in 0..4 {
        let seen = gw
            .on_lan(&udp(
                &format!("10.0.0.2:{}", 40000 + i),
                "198.51.100.20:53",
                b"q",
            ))
            .seen();
        ports.push(seen.sport);
    }
    let _ = gw
        .on_wan(&udp("198.51.100.20:53", &public(ports[0]), b"a"))
        .seen();
    let _ = gw
        .on_wan(&udp("198.51.100.20:53", &public(ports[0]), b"a"))
        .seen();

    let out = gw.on_lan(&udp("10.0.0.2:40004", "198.51.100.20:53", b"q"));
    assert!(
        out.is_forward(),
        "a full table of unreplied flows must make room: {} (drops {:?})",
        out.short(),
        gw.nonzero_drops()
    );
    assert_eq!(gw.counters.snapshot().early_drops, 1);
    assert_eq!(gw.engine.table().len(), 4);
    // The assured flow survived.
    let back = gw.on_wan(&udp("198.51.100.20:53", &public(ports[0]), b"a"));
    assert_eq!(back.seen().dst_sa(), sa("10.0.0.2:40000"));
}

/// The same with a table big enough that every shard of the index holds
/// flows: early drop finds a victim near the new flow.
#[test]
fn flow_limit_with_early_drop_large_table() {
    let gw = Gw::of(limits(2048, true));
    for i in 0..2048u32 {
        let src = format!("10.0.0.{}:{}", 2 + i % 200, 20000 + i);
        let _ = gw.on_lan(&udp(&src, "198.51.100.20:53", b"q")).seen();
    }
    let out = gw.on_lan(&udp("10.0.0.250:1999", "198.51.100.20:53", b"q"));
    assert!(
        out.is_forward(),
        "{} (drops {:?})",
        out.short(),
        gw.nonzero_drops()
    );
    assert_eq!(gw.counters.snapshot().early_drops, 1);
    assert_eq!(gw.engine.table().len(), 2048);
}

#[test]
fn port_exhaustion_is_counted_and_visible() {
    let mut gw = Gw::of(ConfigText::seeded().rule(lan_out().s("ports", "1000-1009")));
    let mut used = HashSet::new();
    for h in 2..12 {
        let seen = gw
            .on_lan(&tcp(
                &format!("10.0.0.{h}:40000"),
                "198.51.100.20:80",
                SYN,
                b"",
            ))
            .seen();
        assert_eq!(seen.src, gw_out());
        assert!((1000..=1009).contains(&seen.sport), "port {}", seen.sport);
        assert!(
            used.insert(seen.sport),
            "port {} handed out twice",
            seen.sport
        );
    }
    // The 11th concurrent flow to the same server has no port left.
    let out = gw.on_lan(&tcp("10.0.0.12:40000", "198.51.100.20:80", SYN, b""));
    assert_eq!(out, Out::Drop(DropReason::PortExhausted));
    assert_eq!(gw.drops(DropReason::PortExhausted), 1);
    let usage = gw.engine.nat().port_usage();
    let u = usage
        .iter()
        .find(|u| u.addr == gw_out() && u.proto == "tcp")
        .unwrap_or_else(|| panic!("no port usage for {GW_OUT}/tcp: {usage:?}"));
    assert_eq!((u.flows, u.exhausted), (10, 1), "{usage:?}");

    // Ports are per remote endpoint: another server still works.
    let seen = gw
        .on_lan(&tcp("10.0.0.12:40000", "198.51.100.21:80", SYN, b""))
        .seen();
    assert!((1000..=1009).contains(&seen.sport));

    // When the unanswered SYNs time out, ports come back. The sweep runs
    // on another thread, as the gateway's sweeper does: the flows created
    // here are counted down there, and the port use still adds up.
    gw.advance_secs(gw.engine.config().timeouts.tcp_syn_sent as u64);
    let swept = std::thread::scope(|s| s.spawn(|| gw.sweep()).join().expect("sweeper"));
    assert_eq!(swept, 11);
    let tcp_flows = |gw: &Gw| {
        let usage = gw.engine.nat().port_usage();
        let u = usage
            .iter()
            .find(|u| u.addr == gw_out() && u.proto == "tcp");
        u.map(|u| (u.flows, u.exhausted))
    };
    assert_eq!(tcp_flows(&gw), Some((0, 1)));
    let _ = gw
        .on_lan(&tcp("10.0.0.12:40000", "198.51.100.20:80", SYN, b""))
        .seen();
    assert_eq!(tcp_flows(&gw), Some((1, 1)));
}

// ---------------------------------------------------------------------------
// Fragments

#[test]
fn fragments_share_their_first_fragments_translation() {
    let gw = Gw::of(masq());
    let payload: Vec<u8> = (0..64u8).collect();
    let whole = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .id(0x4242)
        .udp(40000, 5000, &payload);
    let (first, later) = fragment(&whole, 32);

    let f1 = gw.on_lan(&first);
    let s1 = f1.seen();
    assert!(s1.more_fragments);
    assert_eq!(s1.src, gw_out());
    assert_eq!(s1.dst_sa(), sa("198.51.100.20:5000"));
    let f2 = gw.on_lan(&later);
    let s2 = f2.seen();
    assert_eq!((s2.src, s2.dst), (gw_out(), ip("198.51.100.20")));
    assert_eq!((s2.frag_offset, s2.ip_id), (4, 0x4242));
    assert_eq!(gw.counters.snapshot().frags_translated, 1);

    // The server reassembles a datagram whose UDP checksum holds.
    let got = reassemble(&[f1.forwarded(), f2.forwarded()]);
    assert_checksums(&got);
    let seen = view(&got);
    assert_eq!(seen.src_sa(), s1.src_sa());
    assert_eq!(seen.payload, payload);

    // The answer comes back fragmented, first fragment first (natgw does
    // not queue fragments), and reaches the inside host whole.
    let answer: Vec<u8> = (0..100u8).rev().collect();
    let whole = Ip::new(ip("198.51.100.20"), gw_out())
        .id(0x7777)
        .udp(5000, s1.sport, &answer);
    let (first, later) = fragment(&whole, 48);
    let r1 = gw.on_wan(&first);
    let r2 = gw.on_wan(&later);
    assert_eq!(
        (r1.next_hop(), r2.next_hop()),
        (ip("10.0.0.2"), ip("10.0.0.2"))
    );
    let got = reassemble(&[r1.forwarded(), r2.forwarded()]);
    assert_checksums(&got);
    let seen = view(&got);
    assert_eq!(seen.dst_sa(), sa("10.0.0.2:40000"));
    assert_eq!(seen.payload, answer);
}

#[test]
fn large_ping_fragments_keep_translated_identifier() {
    let gw = Gw::of(masq());
    // Another host holds the identifier, so this ping's id must change.
    let _ = gw
        .on_lan(&ping("10.0.0.3", "198.51.100.20", 0x77, 1))
        .seen();
    let data = vec![0x5au8; 200];
    let whole = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .id(0x5151)
        .echo_request(0x77, 1, &data);
    let (first, later) = fragment(&whole, 104);
    let o1 = gw.on_lan(&first);
    let o2 = gw.on_lan(&later);
    let got = reassemble(&[o1.forwarded(), o2.forwarded()]);
    assert_checksums(&got);
    let seen = view(&got);
    assert_eq!(seen.src, gw_out());
    let id = seen.icmp().echo_id();
    assert_ne!(id, 0x77);
    assert_eq!(seen.payload, data);
    let back = gw.on_wan(&Ip::new(ip("198.51.100.20"), gw_out()).echo_reply(id, 1, &data));
    assert_eq!(back.seen().dst, ip("10.0.0.2"));
    assert_eq!(back.seen().icmp().echo_id(), 0x77);
}

/// Out of order (last fragment first), both ways: the engine asks to hold
/// the later fragment unchanged (nothing counted, no flow), and once the
/// first fragment created or found the flow the held one gets the same
/// translation (the worker runs it again; see dataplane/worker.rs); the
/// receiver reassembles the datagram.
#[test]
fn later_fragment_ahead_of_its_first_is_held_then_translated() {
    let gw = Gw::of(masq());
    let payload: Vec<u8> = (0..200u8).collect();
    let whole = Ip::new(ip("10.0.0.2"), ip("198.51.100.20"))
        .id(0x9999)
        .udp(40000, 5000, &payload);
    let (first, later) = fragment(&whole, 96);
    assert_eq!(gw.on_lan(&later), Out::HeldFragment);
    assert!(gw.flows().is_empty());
    assert_eq!(gw.counters.snapshot().total_drops(), 0);
    let f1 = gw.on_lan(&first);
    let f2 = gw.on_lan(&later);
    let got = reassemble(&[f1.forwarded(), f2.forwarded()]);
    assert_checksums(&got);
    let seen = view(&got);
    assert_eq!(seen.src, gw_out());
    assert_eq!(seen.dst_sa(), sa("198.51.100.20:5000"));
    assert_eq!(seen.payload, payload);

    // The answer, last fragment first, reaches the inside host whole.
    let answer: Vec<u8> = (0..180u8).rev().collect();
    let whole = Ip::new(ip("198.51.100.20"), gw_out())
        .id(0x7778)
        .udp(5000, seen.sport, &answer);
    let (first, later) = fragment(&whole, 64);
    assert_eq!(gw.on_wan(&later), Out::HeldFragment);
    let r1 = gw.on_wan(&first);
    let r2 = gw.on_wan(&later);
    let got = reassemble(&[r1.forwarded(), r2.forwarded()]);
    assert_checksums(&got);
    let back = view(&got);
    assert_eq!(back.dst_sa(), sa("10.0.0.2:40000"));
    assert_eq!(back.payload, answer);
    assert_eq!(gw.counters.snapshot().frags_translated, 2);
    assert_eq!(gw.counters.snapshot().total_drops(), 0);

    // A first fragment that a rule drops leaves its later ones waiting
    // (the worker drops them as frag_timeout after FRAG_HOLD_TIME).
    let orphan = Ip::new(ip("198.51.100.99"), gw_out())
        .id(0x1111)
        .udp(9, 9, &[7u8; 64]);
    let (first, later) = fragment(&orphan, 32);
    assert!(!gw.on_wan(&first).is_forward());
    assert_eq!(gw.on_wan(&later), Out::HeldFragment);
}

// ---------------------------------------------------------------------------
// Malformed frames, IPv6

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let gw = Gw::of(masq());
    let good = udp("10.0.0.2:40000", "198.51.100.20:53", b"hello");
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let total = |v: &mut Vec<u8>, n: u16| v[16..18].copy_from_slice(&n.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "ethernet header cut",
            good[..10].to_vec(),
            DropReason::EthTruncated,
        ),
        (
            "IP header cut",
            good[..14 + 12].to_vec(),
            DropReason::IpTruncated,
        ),
        (
            "IHL 4",
            edit(&|v| {
                v[14] = 0x44;
                fix_ip_checksum(v)
            }),
            DropReason::IpBadIhl,
        ),
        (
            "IHL past the frame",
            edit(&|v| {
                v[14] = 0x4f;
                fix_ip_checksum(v)
            }),
            DropReason::IpBadIhl,
        ),
        (
            "total length past the frame",
            edit(&|v| {
                total(v, 200);
                fix_ip_checksum(v)
            }),
            DropReason::IpBadLength,
        ),
        (
            "total length below the header",
            edit(&|v| {
                total(v, 12);
                fix_ip_checksum(v)
            }),
            DropReason::IpBadLength,
        ),
        (
            "header checksum wrong",
            edit(&|v| v[24] ^= 0x5a),
            DropReason::IpBadChecksum,
        ),
        (
            "version 6 in an IPv4 ethertype",
            edit(&|v| {
                v[14] = 0x65;
                fix_ip_checksum(v)
            }),
            DropReason::IpBadVersion,
        ),
        (
            "UDP header cut",
            edit(&|v| {
                total(v, 24);
                fix_ip_checksum(v)
            }),
            DropReason::L4Truncated,
        ),
        (
            "unknown ethertype",
            edit(&|v| v[12..14].copy_from_slice(&[0x88, 0xcc])),
            DropReason::NonIp,
        ),
    ];
    for (what, frame, reason) in &cases {
        let before = gw.drops(*reason);
        assert_eq!(gw.on_lan(frame), Out::Drop(*reason), "{what}");
        assert_eq!(
            gw.drops(*reason),
            before + 1,
            "{what}: counted once as {}",
            reason.name()
        );
    }
    assert_eq!(gw.counters.snapshot().total_drops(), cases.len() as u64);
    assert!(gw.flows().is_empty(), "malformed frames create no flow");

    // The good frame still goes through.
    let _ = gw.on_lan(&good).seen();
}

/// RFC 768: the UDP length covers header and data. A length past the IP
/// payload (or below 8) is dropped and counted as `udp_bad_length`, not
/// translated; a shorter one (trailing padding) is forwarded.
#[test]
fn udp_length_past_the_ip_payload_is_dropped_and_counted() {
    let gw = Gw::of(masq());
    let good = udp("10.0.0.2:40000", "198.51.100.20:53", b"hello");
    // Ethernet 14 + IPv4 20: the UDP length field is at 38.
    let ulen = |n: u16| {
        let mut v = good.clone();
        v[38..40].copy_from_slice(&n.to_be_bytes());
        v
    };
    assert_eq!(u16::from_be_bytes([good[38], good[39]]), 13);
    for bad in [14u16, 200, 0xffff, 7, 0] {
        assert_eq!(
            gw.on_lan(&ulen(bad)),
            Out::Drop(DropReason::UdpBadLength),
            "UDP length {bad}"
        );
    }
    assert_eq!(gw.drops(DropReason::UdpBadLength), 5);
    assert_eq!(gw.nonzero_drops(), vec![("udp_bad_length".to_string(), 5)]);
    assert!(!DropReason::UdpBadLength.describe().is_empty());
    assert!(gw.flows().is_empty(), "a bad UDP length creates no flow");

    // Shorter than the IP payload: the rest is padding, and it is forwarded
    // (zero checksum: the test verifier sums the whole IP payload).
    let mut padded = ulen(8 + 3);
    padded[40..42].copy_from_slice(&[0, 0]);
    let out = gw.on_lan(&padded);
    assert!(out.is_forward(), "padded datagram: {}", out.short());
    assert_eq!(out.seen().src, gw_out());
    assert_eq!(gw.drops(DropReason::UdpBadLength), 5);
    // The exact length goes through too.
    assert!(gw.on_lan(&good).is_forward());
}

#[test]
fn ipv6_frames_pass_or_drop_per_config() {
    let v6 = ipv6_udp("2001:db8::2", "2001:db8:1::1", 5000, 53);

    let gw = Gw::of(masq().gateway_opt("ipv6", "\"pass\""));
    assert_eq!(gw.on_lan(&v6), Out::Pass);
    assert_eq!(gw.counters.snapshot().passed, 1);
    assert_eq!(gw.counters.snapshot().total_drops(), 0);

    let gw = Gw::of(masq().gateway_opt("ipv6", "\"drop\""));
    assert_eq!(gw.on_lan(&v6), Out::Drop(DropReason::Ipv6));
    assert_eq!(gw.drops(DropReason::Ipv6), 1);
    assert_eq!(gw.counters.snapshot().passed, 0);
    assert!(gw.flows().is_empty());
}

// ---------------------------------------------------------------------------
// Atomic ruleset swap (story 4 as it touches stories 1 and 2)

#[test]
fn ruleset_swap_keeps_existing_flows_and_applies_to_new_ones() {
    let gw = Gw::of(masq());
    let old = gw
        .on_lan(&tcp("10.0.0.2:40000", "198.51.100.20:80", SYN, b""))
        .seen();
    assert_eq!(old.src, gw_out());
    let _ = gw.on_wan(&tcp_seq(
        "198.51.100.20:80",
        &old.src_sa().to_string(),
        SYN | ACK,
        1,
        1001,
        b"",
    ));
    let before = gw.flows();

    let new_rules = r#"
[[rule]]
name = "lan-out-v2"
oif = "wan0"
src = "10.0.0.0/24"
action = "snat"
to = "192.0.2.50"
"#;
    let cfg = natgw::control::config::Config::parse(
        &config("", new_rules),
        std::path::Path::new("v2.toml"),
    )
    .expect("new config");
    gw.engine.swap_ruleset(cfg.ruleset);

    // The established flow keeps its translation both ways.
    let seen = gw
        .on_lan(&tcp_seq(
            "10.0.0.2:40000",
            "198.51.100.20:80",
            ACK,
            1001,
            2,
            b"still here",
        ))
        .seen();
    assert_eq!(seen.src_sa(), old.src_sa());
    let back = gw.on_wan(&tcp_seq(
        "198.51.100.20:80",
        &old.src_sa().to_string(),
        ACK,
        2,
        1011,
        b"ok",
    ));
    assert_eq!(back.seen().dst_sa(), sa("10.0.0.2:40000"));

    // A new flow uses the new rule, and its replies come back.
    let new = gw
        .on_lan(&tcp("10.0.0.2:40001", "198.51.100.20:80", SYN, b""))
        .seen();
    assert_eq!(new.src, ip("192.0.2.50"));
    let back = gw.on_wan(&tcp_seq(
        "198.51.100.20:80",
        &new.src_sa().to_string(),
        SYN | ACK,
        1,
        1001,
        b"",
    ));
    assert_eq!(back.seen().dst_sa(), sa("10.0.0.2:40001"));

    // Listings before/after: nothing established was lost.
    let after = gw.flows();
    assert_eq!(after.len(), 2);
    for f in &before {
        assert!(
            after.iter().any(|g| g.orig == f.orig && g.reply == f.reply),
            "flow {} lost in the swap",
            f.orig
        );
    }
}

// ---------------------------------------------------------------------------
// Routes of live flows (each flow caches its next hops: they must follow
// the routing table, never outlive it)

/// `gw` reloaded with [`masq`] plus `extra` TOML (routes).
fn reload_masq(gw: &Gw, extra: &str) {
    let cfg = natgw::control::config::Config::parse(
        &masq().raw(extra).text(),
        std::path::Path::new("reload.toml"),
    )
    .unwrap();
    gw.engine
        .reload(&cfg.engine, cfg.ruleset, &cfg.sets, gw.now)
        .unwrap();
}

const NEARER: &str = "\n[[route]]\nto = \"198.51.100.0/24\"\nvia = \"203.0.113.253\"\n";

/// An operator adds a more specific route for a network while inside hosts
/// talk to it: the live connection's next packets take the new route at
/// once, and the old one again when the route is removed; its replies
/// still reach the inside host.
#[test]
fn live_flow_follows_a_reloaded_route() {
    let gw = Gw::of(masq());
    let q = udp("10.0.0.2:40000", "198.51.100.20:53", b"q");
    for _ in 0..3 {
        assert_eq!(gw.on_lan(&q).next_hop(), ip(UPSTREAM));
    }
    let port = gw.on_lan(&q).seen().sport;
    let answer = udp("198.51.100.20:53", &public(port), b"a");
    assert_eq!(gw.on_wan(&answer).next_hop(), ip("10.0.0.2"));

    reload_masq(&gw, NEARER);
    for _ in 0..3 {
        let out = gw.on_lan(&q);
        assert_eq!(out.next_hop(), ip("203.0.113.253"), "the new route");
        assert_eq!(out.seen().sport, port, "the same flow");
    }
    assert_eq!(gw.on_wan(&answer).next_hop(), ip("10.0.0.2"));

    reload_masq(&gw, "");
    assert_eq!(gw.on_lan(&q).next_hop(), ip(UPSTREAM), "route removed");
    assert_eq!(gw.flows().len(), 1);
}

/// A flow that ends leaves nothing of its route to the next flow that
/// takes its place in the table.
#[test]
fn a_new_flow_does_not_inherit_an_old_flows_route() {
    let mut gw = Gw::of(masq().raw(NEARER));
    let old = udp("10.0.0.2:40000", "198.51.100.20:53", b"q");
    for _ in 0..3 {
        assert_eq!(gw.on_lan(&old).next_hop(), ip("203.0.113.253"));
    }
    gw.advance_secs(3600);
    assert_eq!(gw.sweep(), 1, "the old flow expired");
    let new = udp("10.0.0.2:40000", "192.0.2.7:53", b"q");
    for _ in 0..3 {
        assert_eq!(gw.on_lan(&new).next_hop(), ip(UPSTREAM));
    }
    assert_eq!(gw.flows().len(), 1);
}
