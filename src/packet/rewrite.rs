//! In-place rewrite of parsed frames with incremental checksum updates.
//!
//! Each function takes the [`Parsed`] view that [`super::parse`] returned
//! for the same bytes; parse guaranteed that every offset used here is in
//! bounds. Every forwarding rewrite also decrements the TTL, as a router
//! does, and folds that into the same IP header checksum update.

use super::checksum::{self, Delta};
use super::parse::{ICMP_TIME_EXCEEDED, IcmpErrorInfo, L4};
use super::{Parsed, Tuple, be16, proto};

#[inline]
fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Sets an address field at `off` to `new`, recording the change.
#[inline]
fn set_addr(b: &mut [u8], off: usize, old: u32, new: u32, d: &mut Delta) {
    if old != new {
        put32(b, off, new);
        d.addr(old, new);
    }
}

/// Sets a 16-bit field at `off` to `new`, recording the change.
#[inline]
fn set_port(b: &mut [u8], off: usize, old: u16, new: u16, d: &mut Delta) {
    if old != new {
        put16(b, off, new);
        d.word(old, new);
    }
}

/// Decrements the TTL at `l3`, recording the change of the TTL/protocol word.
#[inline]
fn dec_ttl(b: &mut [u8], l3: usize, d: &mut Delta) {
    let old = be16(b, l3 + 8);
    let new = old.wrapping_sub(0x0100);
    put16(b, l3 + 8, new);
    d.word(old, new);
}

/// Rewrites a packet whose tuple is `p.tuple` so that it carries `to`:
/// addresses, TCP/UDP ports or the ICMP echo identifier, with the IPv4 and
/// transport checksums updated incrementally (a zero UDP checksum stays
/// zero). Decrements the TTL.
pub fn rewrite_tuple(b: &mut [u8], p: &Parsed, to: &Tuple) {
    let from = &p.tuple;
    // The IPv4 header and the start of the transport header as fixed
    // arrays: parse checked their lengths, and the field writes below need
    // no bounds checks.
    let Some(h) = b.get_mut(p.l3..).and_then(|r| r.first_chunk_mut::<20>()) else {
        return;
    };
    let mut ip = Delta::default();
    if from.src != to.src {
        h[12..16].copy_from_slice(&to.src.to_be_bytes());
        ip.addr(from.src, to.src);
    }
    if from.dst != to.dst {
        h[16..20].copy_from_slice(&to.dst.to_be_bytes());
        ip.addr(from.dst, to.dst);
    }
    // TCP/UDP checksums cover the addresses through the pseudo-header.
    let mut l4 = ip;
    let ttl = u16::from_be_bytes([h[8], h[9]]);
    let dec = ttl.wrapping_sub(0x0100);
    h[8..10].copy_from_slice(&dec.to_be_bytes());
    ip.word(ttl, dec);
    let c = ip.apply(u16::from_be_bytes([h[10], h[11]]));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    match p.kind {
        L4::Tcp { .. } => {
            let Some(t) = b.get_mut(p.l4..).and_then(|r| r.first_chunk_mut::<18>()) else {
                return;
            };
            ports(t, from, to, &mut l4);
            let c = l4.apply(u16::from_be_bytes([t[16], t[17]]));
            t[16..18].copy_from_slice(&c.to_be_bytes());
        }
        L4::Udp => {
            let Some(u) = b.get_mut(p.l4..).and_then(|r| r.first_chunk_mut::<8>()) else {
                return;
            };
            ports(u, from, to, &mut l4);
            let c = l4.apply_udp(u16::from_be_bytes([u[6], u[7]]));
            u[6..8].copy_from_slice(&c.to_be_bytes());
        }
        L4::IcmpEcho => {
            // ICMP has no pseudo-header: only the identifier counts.
            let mut ic = Delta::default();
            let (old, new) = (from.sport | from.dport, to.sport | to.dport);
            set_port(b, p.l4 + 4, old, new, &mut ic);
            let c = ic.apply_unpseudo(be16(b, p.l4 + 2), &b[p.l4..p.end], 2);
            put16(b, p.l4 + 2, c);
        }
        // Later fragments and untracked protocols: addresses only. A first
        // fragment's transport checksum covers the whole datagram, and was
        // updated with the first fragment.
        L4::IcmpError { .. } | L4::IcmpOther { .. } | L4::Other => {}
    }
}

/// Sets the TCP/UDP source and destination ports at the start of `t`,
/// recording the changes.
#[inline]
fn ports<const N: usize>(t: &mut [u8; N], from: &Tuple, to: &Tuple, d: &mut Delta) {
    if from.sport != to.sport {
        t[0..2].copy_from_slice(&to.sport.to_be_bytes());
        d.word(from.sport, to.sport);
    }
    if from.dport != to.dport {
        t[2..4].copy_from_slice(&to.dport.to_be_bytes());
        d.word(from.dport, to.dport);
    }
}

/// Rewrites only the IPv4 addresses (a non-first fragment), and the TTL.
pub fn rewrite_l3_only(b: &mut [u8], p: &Parsed, src: u32, dst: u32) {
    let mut ip = Delta::default();
    set_addr(b, p.l3 + 12, p.tuple.src, src, &mut ip);
    set_addr(b, p.l3 + 16, p.tuple.dst, dst, &mut ip);
    dec_ttl(b, p.l3, &mut ip);
    put16(b, p.l3 + 10, ip.apply(be16(b, p.l3 + 10)));
}

/// Translates an ICMP error: the outer addresses become `outer_src` /
/// `outer_dst`, the quoted datagram's tuple becomes `inner_to` (its IP
/// header checksum, its transport checksum when quoted, and the outer ICMP
/// checksum all follow). Decrements the outer TTL.
pub fn rewrite_icmp_error(
    b: &mut [u8],
    p: &Parsed,
    e: &IcmpErrorInfo,
    outer_src: u32,
    outer_dst: u32,
    inner_to: &Tuple,
) {
    let from = &e.inner;
    // Every byte of the quoted datagram is covered by the outer ICMP checksum.
    let mut icmp = Delta::default();

    // Inner IP header: addresses and its own checksum.
    let mut inner_ip = Delta::default();
    set_addr(b, e.inner_l3 + 12, from.src, inner_to.src, &mut inner_ip);
    set_addr(b, e.inner_l3 + 16, from.dst, inner_to.dst, &mut inner_ip);
    icmp.add(inner_ip);
    let old_csum = be16(b, e.inner_l3 + 10);
    let new_csum = inner_ip.apply(old_csum);
    set_port(b, e.inner_l3 + 10, old_csum, new_csum, &mut icmp);

    // Inner transport header: ports (or echo id) and its checksum if quoted.
    let il4 = e.inner_l4;
    match from.proto {
        proto::TCP | proto::UDP => {
            let mut l4 = inner_ip;
            set_port(b, il4, from.sport, inner_to.sport, &mut l4);
            set_port(b, il4 + 2, from.dport, inner_to.dport, &mut l4);
            // Ports changed inside the ICMP body.
            let mut ports = Delta::default();
            ports.word(from.sport, inner_to.sport);
            ports.word(from.dport, inner_to.dport);
            icmp.add(ports);
            let csum_off = if from.proto == proto::TCP {
                il4 + 16
            } else {
                il4 + 6
            };
            if csum_off + 2 <= p.end {
                let old = be16(b, csum_off);
                let new = if from.proto == proto::UDP {
                    l4.apply_udp(old)
                } else {
                    l4.apply(old)
                };
                set_port(b, csum_off, old, new, &mut icmp);
            }
        }
        proto::ICMP => {
            let (old_id, new_id) = (from.sport | from.dport, inner_to.sport | inner_to.dport);
            let mut ic = Delta::default();
            set_port(b, il4 + 4, old_id, new_id, &mut ic);
            icmp.add(ic);
            // The quoted part of the inner message (a prefix of it).
            let inner_end = (e.inner_l3 + be16(b, e.inner_l3 + 2) as usize).clamp(il4, p.end);
            let old = be16(b, il4 + 2);
            let new = ic.apply_unpseudo(old, &b[il4..inner_end], 2);
            set_port(b, il4 + 2, old, new, &mut icmp);
        }
        _ => {}
    }

    // Outer header (ICMP has no pseudo-header, so only the IP checksum).
    let mut ip = Delta::default();
    set_addr(b, p.l3 + 12, p.tuple.src, outer_src, &mut ip);
    set_addr(b, p.l3 + 16, p.tuple.dst, outer_dst, &mut ip);
    dec_ttl(b, p.l3, &mut ip);
    put16(b, p.l3 + 10, ip.apply(be16(b, p.l3 + 10)));
    let c = icmp.apply_unpseudo(be16(b, p.l4 + 2), &b[p.l4..p.end], 2);
    put16(b, p.l4 + 2, c);
}

/// Turns an ICMP echo request into its reply in place (the gateway
/// answering a ping to its own address): addresses swapped, type 0,
/// TTL 64, checksums updated. Returns false if `p` is not an echo request.
pub fn echo_reply_in_place(b: &mut [u8], p: &Parsed) -> bool {
    if p.kind != L4::IcmpEcho || b[p.l4] != super::parse::ICMP_ECHO_REQUEST {
        return false;
    }
    // Swapping the addresses leaves the header sum unchanged.
    put32(b, p.l3 + 12, p.tuple.dst);
    put32(b, p.l3 + 16, p.tuple.src);
    let mut ip = Delta::default();
    let old = be16(b, p.l3 + 8);
    let new = (64u16 << 8) | (old & 0xff);
    put16(b, p.l3 + 8, new);
    ip.word(old, new);
    put16(b, p.l3 + 10, ip.apply(be16(b, p.l3 + 10)));
    let mut ic = Delta::default();
    let old = be16(b, p.l4);
    let new = old & 0x00ff; // type 0, same code
    put16(b, p.l4, new);
    ic.word(old, new);
    // Id 0, seq 0 and an all-zero payload sum to +0: checksum 0xffff.
    let c = ic.apply_unpseudo(be16(b, p.l4 + 2), &b[p.l4..p.end], 2);
    put16(b, p.l4 + 2, c);
    true
}

/// Largest ICMP error natgw sends, IP header included (RFC 1812 4.3.2.3:
/// quote as much of the original datagram as fits in 576 bytes, as Linux).
pub const ICMP_ERROR_MAX: usize = 576;

/// Replaces the frame with an ICMP time-exceeded message from `from` to the
/// packet's sender, quoting as much of the original datagram as fits in
/// [`ICMP_ERROR_MAX`] bytes (the whole of a shorter one) and in `buf`. The
/// link-layer header (bytes before `p.l3`) is left for the caller. Returns
/// the new frame length, or `None` if `buf` cannot hold the error with at
/// least the original IP header and 8 bytes (RFC 792).
pub fn build_time_exceeded(buf: &mut [u8], p: &Parsed, from: u32) -> Option<usize> {
    build_icmp_error(buf, p, from, ICMP_TIME_EXCEEDED, 0)
}

/// [`build_time_exceeded`] with any ICMP error type and code (the 4 bytes
/// after the checksum are zero; a caller may fill them and fix the sum).
pub(super) fn build_icmp_error(
    buf: &mut [u8],
    p: &Parsed,
    from: u32,
    ty: u8,
    code: u8,
) -> Option<usize> {
    let hlen = p.l4 - p.l3;
    let orig_len = p.end - p.l3;
    let room = buf.len().checked_sub(p.l3 + 20 + 8)?;
    let quote_len = orig_len.min(ICMP_ERROR_MAX - 20 - 8).min(room);
    if quote_len < (hlen + 8).min(orig_len) {
        return None;
    }
    let total = 20 + 8 + quote_len;
    let new_len = p.l3 + total;
    // The quote moves up behind the new headers (overlapping move).
    buf.copy_within(p.l3..p.l3 + quote_len, p.l3 + 28);
    let to = p.tuple.src;
    let o = p.l3;
    let ip = &mut buf[o..o + 20];
    ip.copy_from_slice(&[
        0x45,
        0xc0,
        0,
        0,
        0,
        0,
        0,
        0,
        64,
        proto::ICMP,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    put16(ip, 2, total as u16);
    put32(ip, 12, from);
    put32(ip, 16, to);
    let c = checksum::checksum(ip);
    put16(ip, 10, c);
    let icmp = &mut buf[o + 20..new_len];
    icmp[..8].copy_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    let c = checksum::checksum(icmp);
    put16(icmp, 2, c);
    Some(new_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Link, parse};
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use std::net::Ipv4Addr;

    fn udp(csum: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [192, 0, 2, 1], 64)
            .udp(40000, 53);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        if !csum {
            out[40..42].copy_from_slice(&[0, 0]);
        }
        out
    }

    /// Verifies IPv4 and transport checksums with etherparse (independent code).
    fn assert_checksums_ok(f: &[u8]) {
        let s = SlicedPacket::from_ethernet(f).expect("etherparse parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
            panic!("not ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "ip header checksum"
        );
        let payload = ip.payload().payload;
        match s.transport {
            Some(TransportSlice::Udp(u)) => {
                let uh = u.to_header();
                if uh.checksum != 0 {
                    assert_eq!(uh.checksum, uh.calc_checksum_ipv4(&h, u.payload()).unwrap());
                }
            }
            Some(TransportSlice::Tcp(t)) => {
                let th = t.to_header();
                assert_eq!(th.checksum, th.calc_checksum_ipv4(&h, t.payload()).unwrap());
            }
            Some(TransportSlice::Icmpv4(_)) => {
                assert_eq!(checksum::checksum(payload), 0, "icmp checksum");
            }
            _ => {}
        }
    }

    #[test]
    fn udp_rewrite_keeps_checksums_valid() {
        let mut f = udp(true);
        let p = parse(&f, Link::Ethernet).unwrap();
        let to = Tuple::new(
            Ipv4Addr::new(203, 0, 113, 1),
            1024,
            Ipv4Addr::new(192, 0, 2, 1),
            53,
            17,
        );
        rewrite_tuple(&mut f, &p, &to);
        let q = parse(&f, Link::Ethernet).unwrap();
        assert_eq!(q.tuple, to);
        assert_eq!(q.ttl, 63);
        assert_checksums_ok(&f);
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut f = udp(false);
        let p = parse(&f, Link::Ethernet).unwrap();
        let to = Tuple::new(
            Ipv4Addr::new(203, 0, 113, 1),
            1024,
            Ipv4Addr::new(192, 0, 2, 1),
            53,
            17,
        );
        rewrite_tuple(&mut f, &p, &to);
        assert_eq!(&f[40..42], &[0, 0]);
        assert_checksums_ok(&f);
    }

    #[test]
    fn tcp_and_echo_rewrite() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [192, 0, 2, 1], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let p = parse(&f, Link::Ethernet).unwrap();
        let to = Tuple {
            src: 0xcb007101,
            sport: 2000,
            ..p.tuple
        };
        rewrite_tuple(&mut f, &p, &to);
        assert_eq!(parse(&f, Link::Ethernet).unwrap().tuple, to);
        assert_checksums_ok(&f);

        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [192, 0, 2, 1], 64)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut f, b"ping")
            .unwrap();
        let p = parse(&f, Link::Ethernet).unwrap();
        assert_eq!((p.tuple.sport, p.tuple.dport), (0x1234, 0));
        let to = Tuple {
            src: 0xcb007101,
            sport: 0x9999,
            ..p.tuple
        };
        rewrite_tuple(&mut f, &p, &to);
        assert_eq!(parse(&f, Link::Ethernet).unwrap().tuple, to);
        assert_checksums_ok(&f);
    }

    #[test]
    fn echo_reply_in_place_answers_a_ping() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 5)
            .icmpv4_echo_request(7, 1)
            .write(&mut f, b"abc")
            .unwrap();
        let p = parse(&f, Link::Ethernet).unwrap();
        assert!(echo_reply_in_place(&mut f, &p));
        let q = parse(&f, Link::Ethernet).unwrap();
        assert_eq!(
            (q.tuple.src, q.tuple.dst, q.tuple.dport, q.ttl),
            (p.tuple.dst, p.tuple.src, 7, 64)
        );
        assert_checksums_ok(&f);
        assert!(!echo_reply_in_place(&mut f, &q), "a reply is not answered");
    }

    #[test]
    fn time_exceeded_quotes_the_header() {
        let mut f = udp(true);
        f.resize(200, 0);
        let p = parse(&f, Link::Ethernet).unwrap();
        let n = build_time_exceeded(&mut f, &p, 0x0a000001).unwrap();
        f.truncate(n);
        let q = parse(&f, Link::Ethernet).unwrap();
        let Some(e) = q.icmp_error_info(&f) else {
            panic!("not an icmp error: {:?}", q.kind)
        };
        assert_eq!(e.ty, ICMP_TIME_EXCEEDED);
        assert_eq!(e.inner, p.tuple);
        assert_eq!(q.tuple.src, 0x0a000001);
        assert_eq!(q.tuple.dst, p.tuple.src);
        assert_checksums_ok(&f);
    }

    /// Independent check of an ICMP message's checksum with etherparse:
    /// the stored value equals etherparse's from-scratch computation, and
    /// the receiver's sum over the whole message is all ones.
    fn assert_icmp_checksum_independent(f: &[u8]) {
        let s = SlicedPacket::from_ethernet(f).expect("etherparse parses");
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!("not icmp")
        };
        let stored = icmp.checksum();
        let computed = icmp.icmp_type().calc_checksum(icmp.payload());
        assert_eq!(
            stored, computed,
            "icmp checksum {stored:#06x}, etherparse computes {computed:#06x}"
        );
        let all = etherparse::checksum::Sum16BitWords::new()
            .add_slice(icmp.slice())
            .ones_complement();
        assert_eq!(all, 0, "receiver's icmp sum is not all ones");
    }

    fn ping(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .icmpv4_echo_request(id, seq)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    /// Id 0, seq 0 and an empty or all-zero payload: the reply's ICMP
    /// message is all zeros, so its checksum must be 0xffff, not 0x0000.
    #[test]
    fn echo_reply_to_all_zero_request_has_checksum_ffff() {
        for payload in [&[][..], &[0u8; 56][..], &[0u8; 7][..]] {
            let mut f = ping(0, 0, payload);
            assert_icmp_checksum_independent(&f);
            let p = parse(&f, Link::Ethernet).unwrap();
            assert!(echo_reply_in_place(&mut f, &p));
            assert_eq!(
                be16(&f, p.l4 + 2),
                0xffff,
                "payload {} bytes",
                payload.len()
            );
            assert_icmp_checksum_independent(&f);
            assert_checksums_ok(&f);
        }
    }

    /// An echo reply whose id is rewritten to 0 (seq 0, zero payload): the
    /// message becomes all zeros. Also a rewrite away from 0 and back.
    #[test]
    fn echo_id_rewritten_to_zero_keeps_a_valid_checksum() {
        for payload in [&[][..], &[0u8; 32][..]] {
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([198, 51, 100, 20], [203, 0, 113, 1], 64)
                .icmpv4_echo_reply(0x1234, 0)
                .write(&mut f, payload)
                .unwrap();
            let p = parse(&f, Link::Ethernet).unwrap();
            let to = Tuple {
                dst: 0x0a000002,
                dport: 0,
                ..p.tuple
            };
            rewrite_tuple(&mut f, &p, &to);
            assert_eq!(parse(&f, Link::Ethernet).unwrap().tuple, to);
            assert_eq!(be16(&f, p.l4 + 2), 0xffff);
            assert_icmp_checksum_independent(&f);
            assert_checksums_ok(&f);
            // And back to a non-zero id.
            let p = parse(&f, Link::Ethernet).unwrap();
            let back = Tuple {
                dport: 0x1234,
                ..p.tuple
            };
            rewrite_tuple(&mut f, &p, &back);
            assert_icmp_checksum_independent(&f);
        }
    }

    /// The same all-zero echo reply quoted in an ICMP error whose inner id
    /// is rewritten to 0: the quoted checksum and the outer one verify.
    #[test]
    fn quoted_echo_id_rewritten_to_zero() {
        let mut about = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([203, 0, 113, 1], [198, 51, 100, 20], 64)
            .icmpv4_echo_reply(0x1234, 0)
            .write(&mut about, &[0u8; 8])
            .unwrap();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([198, 51, 100, 20], [203, 0, 113, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Host,
            ))
            .write(&mut f, &about[14..])
            .unwrap();
        let p = parse(&f, Link::Ethernet).unwrap();
        let Some(e) = p.icmp_error_info(&f) else {
            panic!("not an icmp error")
        };
        // An echo reply carries its id in `dport`.
        let inner_to = Tuple {
            src: 0x0a000002,
            dport: 0,
            ..e.inner
        };
        rewrite_icmp_error(&mut f, &p, &e, p.tuple.src, 0x0a000002, &inner_to);
        assert_checksums_ok(&f);
        assert_icmp_checksum_independent(&f);
        let inner = &f[e.inner_l4..p.end];
        assert_eq!(be16(inner, 2), 0xffff, "quoted echo checksum");
        assert_eq!(checksum::checksum(inner), 0, "quoted echo verifies");
    }

    /// UDP frame over Ethernet whose IP datagram is `ip_len` bytes, TTL 1.
    fn expiring(ip_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..ip_len - 28).map(|i| (i % 251) as u8 + 1).collect();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 2], [192, 0, 2, 1], 1)
            .udp(40000, 33434)
            .write(&mut f, &payload)
            .unwrap();
        f
    }

    /// Builds the time-exceeded in a buffer of `room` bytes past the frame.
    fn time_exceeded(ip_len: usize, room: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let orig = expiring(ip_len);
        let mut buf = orig.clone();
        buf.resize(orig.len() + room, 0xaa);
        let p = parse(&buf, Link::Ethernet).unwrap();
        let n = build_time_exceeded(&mut buf, &p, 0x0a000001)?;
        assert!(n <= buf.len());
        buf.truncate(n);
        Some((orig, buf))
    }

    #[test]
    fn time_exceeded_quotes_up_to_576_bytes() {
        // 1000 bytes: 576 of IP, quoting the first 548 bytes.
        let (orig, f) = time_exceeded(1000, 0).unwrap();
        assert_eq!(f.len() - 14, ICMP_ERROR_MAX);
        assert_eq!(be16(&f, 16) as usize, ICMP_ERROR_MAX);
        assert_eq!(&f[14 + 28..], &orig[14..14 + 548]);
        assert_checksums_ok(&f);
        assert_eq!(checksum::checksum(&f[14 + 20..]), 0, "icmp checksum");
        // 100 bytes: quoted whole (its UDP checksum still verifies inside).
        let (orig, f) = time_exceeded(100, 64).unwrap();
        assert_eq!(f.len() - 14, 128);
        assert_eq!(&f[14 + 28..], &orig[14..]);
        assert_checksums_ok(&f);
        let q = parse(&f, Link::Ethernet).unwrap();
        let Some(e) = q.icmp_error_info(&f) else {
            panic!("not an icmp error")
        };
        assert_eq!(e.inner.dport, 33434);
    }

    /// The error never outgrows the buffer: with little room past the frame
    /// the quote shrinks, and without room for header + 8 there is none.
    #[test]
    fn time_exceeded_stays_within_the_buffer() {
        // 100-byte datagram, exactly its frame: 100 - 28 bytes of quote.
        let (orig, f) = time_exceeded(100, 0).unwrap();
        assert_eq!(f.len(), 14 + 100);
        assert_eq!(&f[14 + 28..], &orig[14..14 + 72]);
        assert_checksums_ok(&f);
        // 600 bytes, 10 spare: the quote is 548 (limited by 576, not room).
        let (_, f) = time_exceeded(600, 10).unwrap();
        assert_eq!(f.len() - 14, 576);
        // 40 bytes with no spare room: 12 bytes of quote < header + 8.
        assert!(time_exceeded(40, 0).is_none());
        // 40 bytes with 16 spare: 28 bytes of quote, just enough.
        let (_, f) = time_exceeded(40, 16).unwrap();
        assert_eq!(f.len() - 14, 56);
        assert_checksums_ok(&f);
    }
}
