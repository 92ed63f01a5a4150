//! Regression tests for what the fuzz targets in `fuzz/` flagged (see
//! perf/robustness.md, "Fuzzing"). Each test names the target and what it
//! found; they run in the normal `cargo test` suite (no nightly needed).

mod common;

use common::*;
use natgw::packet::{Link, parse};

/// `engine` target, first alarm (crash-5770f395...): an IPv4 packet of
/// protocol 51 (AH) whose payload is not a well-formed AH header. natgw
/// tracks it as a generic (portless) flow: masqueraded on the way out with
/// a valid header checksum and TTL - 1, the answer translated back. (The
/// alarm was the oracle's: etherparse's `Ipv4Slice` refuses such a packet;
/// the oracle now reads the IPv4 header and payload itself.)
#[test]
fn ah_packet_with_a_short_ah_header_is_translated_both_ways() {
    let gw = Gw::of(
        ConfigText::seeded()
            .raw("[[rule]]\noif = \"wan0\"\nsrc = \"10.0.0.0/24\"\naction = \"masquerade\"\n"),
    );
    let mut out = Ip::new(ip("10.0.0.2"), ip("198.51.100.7")).udp(1, 2, &[0x6e; 12]);
    out[14 + 9] = 51; // protocol AH; the UDP bytes are now an AH payload
    fix_ip_checksum(&mut out);
    let Out::Forward { oif, frame, .. } = gw.on_lan(&out) else {
        panic!("not forwarded")
    };
    assert_eq!(oif, gw.wan);
    let p = parse(&frame, Link::Ethernet).unwrap();
    assert_eq!(p.tuple.src, u32::from(ip("203.0.113.1")), "masqueraded");
    assert_eq!(p.tuple.proto, 51);
    assert_eq!(p.ttl, 63);
    assert_eq!(&frame[14 + 20..], &out[14 + 20..], "payload untouched");

    let mut back = Ip::new(ip("198.51.100.7"), ip("203.0.113.1")).udp(2, 1, &[0x6e; 12]);
    back[14 + 9] = 51;
    fix_ip_checksum(&mut back);
    let Out::Forward { oif, frame, .. } = gw.on_wan(&back) else {
        panic!("answer not forwarded")
    };
    assert_eq!(oif, gw.lan);
    let p = parse(&frame, Link::Ethernet).unwrap();
    assert_eq!(p.tuple.dst, u32::from(ip("10.0.0.2")), "translated back");
}
