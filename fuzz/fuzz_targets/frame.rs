//! The frame parser and the in-place rewrites. Oracle: `parse` agrees
//! with etherparse on what it accepts and its offsets stay in bounds;
//! every rewrite of a parsed frame gives a frame that parses again with
//! the requested tuple, a verifying IPv4 header checksum, the TTL one less,
//! and a transport checksum that verifies whenever the input's did.
//!
//! Input: a selector byte (bit 0: raw IP link; `(sel >> 1) % 5`: which
//! rewrite; bit 7: keep the frame's checksums as they are instead of
//! making them valid first), two addresses (u32) and two ports (u16) for
//! the target tuple, then the frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw::packet::{self, L4, Link, Parsed, Tuple};
use natgw_fuzz::{Input, ip_header_ok, ipv4, l4_ok, quoted, tuple_of};

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let (Some(sel), Some(a), Some(b), Some(sp), Some(dp)) =
        (inp.u8(), inp.u32(), inp.u32(), inp.u16(), inp.u16())
    else {
        return;
    };
    let link = if sel & 1 != 0 {
        Link::Ip
    } else {
        Link::Ethernet
    };
    // Checksums made valid first (bit 7 clear), so that mutations get past
    // the header checksum check to the rewrites; raw bytes otherwise.
    let mut fixed = inp.rest().to_vec();
    if sel & 0x80 == 0 {
        natgw_fuzz::fix_checksums(&mut fixed, link);
    }
    let frame = &fixed[..];
    let Ok(p) = packet::parse(frame, link) else {
        return;
    };
    assert!(
        p.l3 + 20 <= p.l4 && p.l4 <= p.end && p.end <= frame.len(),
        "offsets out of bounds: {p:?}"
    );
    // etherparse sees the same IPv4 packet.
    let s = ipv4(frame, link).expect("natgw parsed what etherparse refuses");
    assert!(ip_header_ok(&s));
    let t = tuple_of(&s);
    assert_eq!(
        (t.src, t.dst, t.proto),
        (p.tuple.src, p.tuple.dst, p.tuple.proto)
    );
    if p.has_ports() {
        assert_eq!(t, p.tuple, "tuple differs from etherparse's");
    }
    let in_l4 = l4_ok(&s);
    let in_q = quoted(&s);
    let mut buf = frame.to_vec();
    let mode = (sel >> 1) % 5;
    match mode {
        0 => {
            let to = target(&p, a, b, sp, dp);
            packet::rewrite_tuple(&mut buf, &p, &to);
            let q = check_forwarded(&buf, link, &p, in_l4);
            if p.has_ports() {
                assert_eq!(q.tuple, to, "rewrite_tuple missed the target");
            } else {
                assert_eq!((q.tuple.src, q.tuple.dst), (to.src, to.dst));
            }
            if let (Some(iq), Some(oq)) = (in_q, quoted(&ipv4(&buf, link).unwrap())) {
                assert_eq!(iq, oq, "rewrite_tuple touched an ICMP error's quote");
            }
        }
        1 => {
            packet::rewrite_l3_only(&mut buf, &p, a, b);
            let q = check_forwarded(&buf, link, &p, None);
            assert_eq!((q.tuple.src, q.tuple.dst), (a, b));
        }
        2 => {
            if !matches!(p.kind, L4::IcmpError { .. }) {
                return;
            }
            let e = p
                .icmp_error_info(frame)
                .expect("parse took an ICMP error whose quote does not read back");
            let inner_to = inner_target(&e.inner, frame[e.inner_l4], a, b, sp, dp);
            let (os, od) = (a.rotate_left(7), b.rotate_left(13));
            packet::rewrite_icmp_error(&mut buf, &p, &e, os, od, &inner_to);
            let q = check_forwarded(&buf, link, &p, in_l4);
            assert_eq!((q.tuple.src, q.tuple.dst), (os, od));
            let Some(e2) = q.icmp_error_info(&buf) else {
                panic!("no longer an ICMP error: {:?}", q.kind)
            };
            assert_eq!(e2.inner, inner_to, "quoted tuple not rewritten");
            let oq = quoted(&ipv4(&buf, link).unwrap()).expect("quote");
            let iq = in_q.expect("natgw found a quote the oracle does not");
            if iq.header_ok {
                assert!(oq.header_ok, "quoted header checksum broken");
            }
            if iq.l4_ok == Some(true) {
                assert_eq!(oq.l4_ok, Some(true), "quoted transport checksum broken");
            }
        }
        3 => {
            if packet::echo_reply_in_place(&mut buf, &p) {
                let q = packet::parse(&buf, link).expect("echo reply parses");
                assert_eq!((q.tuple.src, q.tuple.dst), (p.tuple.dst, p.tuple.src));
                assert_eq!(q.tuple.dport, p.tuple.sport, "echo id");
                let s = ipv4(&buf, link).unwrap();
                assert!(ip_header_ok(&s));
                if in_l4 == Some(true) {
                    assert_eq!(l4_ok(&s), Some(true), "echo reply checksum");
                }
            }
        }
        _ => {
            buf.resize(frame.len() + (a as usize % 700), 0xa5);
            if let Some(n) = packet::build_time_exceeded(&mut buf, &p, b) {
                assert!(n <= buf.len());
                let out = &buf[..n];
                let s = ipv4(out, link).expect("time exceeded is IPv4");
                assert!(ip_header_ok(&s));
                assert_eq!(l4_ok(&s), Some(true), "time exceeded ICMP checksum");
                let t = tuple_of(&s);
                assert_eq!((t.src, t.dst, t.proto), (b, p.tuple.src, 1));
                // natgw reads back errors quoting what it can translate
                // (any protocol; address-only without ports); others (a
                // quoted later fragment, an ICMP error) it refuses.
                match packet::parse(out, link) {
                    Ok(q) => assert!(matches!(q.kind, L4::IcmpError { .. })),
                    Err(e) => assert_eq!(e, packet::ParseError::IcmpInnerBad),
                }
                assert!(n - p.l3 <= 576, "ICMP error longer than 576 bytes");
            }
        }
    }
}

/// A tuple of the same protocol, with ICMP ids where natgw keeps them.
fn target(p: &Parsed, a: u32, b: u32, sp: u16, dp: u16) -> Tuple {
    let mut to = Tuple {
        src: a,
        dst: b,
        sport: sp,
        dport: dp,
        proto: p.tuple.proto,
    };
    if p.kind == L4::IcmpEcho {
        if p.icmp_type == packet::ICMP_ECHO_REQUEST {
            to.dport = 0;
        } else {
            to.sport = 0;
        }
    }
    if !p.has_ports() {
        (to.sport, to.dport) = (p.tuple.sport, p.tuple.dport);
    }
    to
}

/// A tuple for the quoted datagram; an ICMP echo keeps its id where its
/// type (`ty`, 8 request or 0 reply) puts it.
fn inner_target(inner: &Tuple, ty: u8, a: u32, b: u32, sp: u16, dp: u16) -> Tuple {
    let mut to = Tuple {
        src: a,
        dst: b,
        sport: sp,
        dport: dp,
        proto: inner.proto,
    };
    if inner.proto == 1 {
        if ty == packet::ICMP_ECHO_REQUEST {
            to.dport = 0;
        } else {
            to.sport = 0;
        }
    } else if inner.proto != 6 && inner.proto != 17 {
        // A protocol without ports (GRE, 253, ...) is translated by
        // address only: its quoted tuple has no ports.
        to.sport = 0;
        to.dport = 0;
    }
    to
}

/// The rewritten frame parses, its header checksum verifies, its TTL is
/// one less, and its transport checksum verifies if the input's did.
fn check_forwarded(buf: &[u8], link: Link, p: &Parsed, in_l4: Option<bool>) -> Parsed {
    let q = packet::parse(buf, link).expect("a rewritten frame parses");
    let s = ipv4(buf, link).expect("etherparse parses the rewritten frame");
    assert!(ip_header_ok(&s), "IPv4 header checksum");
    assert_eq!(q.ttl, p.ttl.wrapping_sub(1), "TTL");
    if in_l4 == Some(true) {
        assert_eq!(
            l4_ok(&s),
            Some(true),
            "transport checksum after the rewrite"
        );
    }
    q
}
