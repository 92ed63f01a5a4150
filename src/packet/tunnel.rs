//! IPIP (RFC 2003) and GRE (RFC 2784, key and sequence of RFC 2890)
//! encapsulation and decapsulation, in place.
//!
//! natgw is the tunnel endpoint itself (no kernel ipip/gre device): a packet
//! its routes send into a tunnel gets an outer IPv4 header (and a GRE
//! header) put in front of it inside the same buffer; a packet from the
//! tunnel's remote loses them, and the inner datagram is then handled as if
//! it had arrived on the tunnel interface.
//!
//! - [`outer`] reads what the outer headers say about an already parsed
//!   frame whose protocol is 4 or 47: the GRE flags, key and protocol, and
//!   where the inner datagram is. It checks every length first and never
//!   panics; a GRE version other than 0 (PPTP's enhanced GRE is version 1),
//!   the routing bit or any reserved bit (RFC 2784 2.3: the receiver MUST
//!   discard), a wrong GRE checksum (when the C bit says there is one), a
//!   payload that is not IPv4, or an outer fragment (natgw does not
//!   reassemble) is an error naming the cause.
//! - [`decap`] moves the inner datagram to where the outer header began.
//! - [`encap`] moves the datagram up by the tunnel's overhead and writes
//!   the outer header: TTL 64, DF set (Linux's default `pmtudisc`), the
//!   inner IP id, protocol 4 or 47, a full header checksum.
//! - [`build_frag_needed`] is the ICMP "fragmentation needed" a router sends
//!   back when a DF datagram does not fit the tunnel (Linux does this with
//!   the tunnel MTU as the next-hop MTU).

use super::parse::{be16, be32};
use super::{Frag, Parsed, checksum};

/// IP protocol number of IP-in-IP.
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;

/// Size of the outer IPv4 header natgw writes (no options).
pub const OUTER_IP_LEN: usize = 20;

const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
/// Strict source route, recursion control and the other reserved flag bits.
const GRE_RESERVED0: u16 = 0x0ff8;
const GRE_VERSION: u16 = 0x0007;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// How a tunnel encapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    Ipip,
    /// GRE, with a key when `Some`.
    Gre {
        key: Option<u32>,
    },
}

impl Mode {
    /// Bytes the encapsulation adds in front of the inner datagram.
    pub const fn overhead(self) -> usize {
        OUTER_IP_LEN
            + match self {
                Mode::Ipip => 0,
                Mode::Gre { key: None } => 4,
                Mode::Gre { key: Some(_) } => 8,
            }
    }

    /// The outer header's protocol number.
    pub const fn proto(self) -> u8 {
        match self {
            Mode::Ipip => IPPROTO_IPIP,
            Mode::Gre { .. } => IPPROTO_GRE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Gre { .. } => "gre",
        }
    }
}

/// What the outer headers of a tunnel packet say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub src: u32,
    pub dst: u32,
    /// 4 (IPIP) or 47 (GRE).
    pub proto: u8,
    /// The GRE key, if the K bit is set.
    pub key: Option<u32>,
    /// Offset of the inner IPv4 header.
    pub inner: usize,
    /// End of the inner datagram (by its own total length).
    pub end: usize,
}

/// Why a tunnel packet cannot be decapsulated. Each is a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OuterError {
    /// Outer IPv4 datagram is a fragment (natgw does not reassemble).
    Fragment,
    /// GRE header (with its optional fields) or inner IPv4 header cut short.
    Truncated,
    /// GRE version is not 0.
    GreVersion,
    /// GRE routing bit or a reserved bit set.
    GreFlags,
    /// GRE checksum present (C bit) and wrong.
    GreChecksum,
    /// GRE payload is not IPv4 (protocol type other than 0x0800), or the
    /// inner header of an IPIP/GRE packet is not IPv4.
    NotIpv4,
}

/// Reads the outer headers of `frame`, parsed as `p`, whose protocol is
/// [`IPPROTO_IPIP`] or [`IPPROTO_GRE`] (anything else is `NotIpv4`).
pub fn outer(frame: &[u8], p: &Parsed) -> Result<Outer, OuterError> {
    if p.frag != Frag::No {
        return Err(OuterError::Fragment);
    }
    // `parse` guarantees l4 <= end <= frame.len(); stay inside `end`.
    let end = p.end.min(frame.len());
    let b = &frame[..end];
    let (inner, key) = match p.tuple.proto {
        IPPROTO_IPIP => (p.l4, None),
        IPPROTO_GRE => {
            if b.len() < p.l4 + 4 {
                return Err(OuterError::Truncated);
            }
            let fl = be16(b, p.l4);
            if fl & GRE_VERSION != 0 {
                return Err(OuterError::GreVersion);
            }
            if fl & (GRE_R | GRE_RESERVED0) != 0 {
                return Err(OuterError::GreFlags);
            }
            if be16(b, p.l4 + 2) != ETHERTYPE_IPV4 {
                return Err(OuterError::NotIpv4);
            }
            let mut off = p.l4 + 4;
            if fl & GRE_C != 0 {
                // Checksum + reserved1; the sum covers the GRE header and
                // its payload (RFC 2784 2.5).
                if b.len() < off + 4 {
                    return Err(OuterError::Truncated);
                }
                if checksum::checksum(&b[p.l4..end]) != 0 {
                    return Err(OuterError::GreChecksum);
                }
                off += 4;
            }
            let key = if fl & GRE_K != 0 {
                if b.len() < off + 4 {
                    return Err(OuterError::Truncated);
                }
                let k = be32(b, off);
                off += 4;
                Some(k)
            } else {
                None
            };
            if fl & GRE_S != 0 {
                off += 4; // sequence number
            }
            (off, key)
        }
        _ => return Err(OuterError::NotIpv4),
    };
    if b.len() < inner + 20 {
        return Err(OuterError::Truncated);
    }
    if b[inner] >> 4 != 4 {
        return Err(OuterError::NotIpv4);
    }
    // The whole inner datagram must be there (what follows it is padding).
    let hlen = usize::from(b[inner] & 0x0f) * 4;
    let total = usize::from(be16(b, inner + 2));
    if hlen < 20 || total < hlen || inner + total > end {
        return Err(OuterError::Truncated);
    }
    Ok(Outer {
        src: p.tuple.src,
        dst: p.tuple.dst,
        proto: p.tuple.proto,
        key,
        inner,
        end: inner + total,
    })
}

/// Removes the outer headers: the inner datagram moves to `l3` (where the
/// outer IPv4 header began). Returns the new frame length. Bytes before
/// `l3` (the link-layer header) are kept.
pub fn decap(buf: &mut [u8], l3: usize, o: &Outer) -> usize {
    let end = o.end.min(buf.len());
    let inner = o.inner.min(end);
    let l3 = l3.min(inner);
    buf.copy_within(inner..end, l3);
    l3 + (end - inner)
}

/// Puts the datagram at `l3..end` into a tunnel: moves it up by
/// `mode.overhead()` bytes and writes the outer headers from `src` to
/// `dst`. Returns the new frame length, or `None` (nothing changed) when
/// `buf` has no room for the larger frame or the result would exceed
/// 65535 bytes.
pub fn encap(
    buf: &mut [u8],
    l3: usize,
    end: usize,
    mode: Mode,
    src: u32,
    dst: u32,
) -> Option<usize> {
    if l3 > end || end > buf.len() {
        return None;
    }
    let oh = mode.overhead();
    let new_end = end.checked_add(oh)?;
    let total = new_end - l3;
    if new_end > buf.len() || total > usize::from(u16::MAX) {
        return None;
    }
    // The inner IP id makes a good outer id (unique enough, no state).
    let id = if end - l3 >= 6 { be16(buf, l3 + 4) } else { 0 };
    buf.copy_within(l3..end, l3 + oh);
    let ip = &mut buf[l3..l3 + OUTER_IP_LEN];
    ip.copy_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        (id >> 8) as u8,
        id as u8,
        0x40, // DF
        0,
        64,
        mode.proto(),
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
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&dst.to_be_bytes());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    if let Mode::Gre { key } = mode {
        let g = &mut buf[l3 + OUTER_IP_LEN..l3 + oh];
        let fl = if key.is_some() { GRE_K } else { 0 };
        g[0..2].copy_from_slice(&fl.to_be_bytes());
        g[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        if let Some(k) = key {
            g[4..8].copy_from_slice(&k.to_be_bytes());
        }
    }
    Some(new_end)
}

/// True if the datagram parsed as `p` has DF set.
pub fn dont_fragment(frame: &[u8], p: &Parsed) -> bool {
    frame.get(p.l3 + 6).is_some_and(|b| b & 0x40 != 0)
}

/// Replaces the frame with an ICMP destination-unreachable /
/// fragmentation-needed (type 3 code 4) from `from` to the packet's sender,
/// with next-hop MTU `mtu`, quoting the datagram (RFC 1812 sizes, see
/// [`super::build_time_exceeded`]). Returns the new frame length.
pub fn build_frag_needed(buf: &mut [u8], p: &Parsed, from: u32, mtu: u16) -> Option<usize> {
    let len = super::rewrite::build_icmp_error(buf, p, from, 3, 4)?;
    // Bytes 6..8 of the ICMP header: next-hop MTU (RFC 1191); fix the sum.
    let icmp = p.l3 + 20;
    buf[icmp + 6..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    buf[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&buf[icmp..len]);
    buf[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Link, parse};
    use etherparse::{PacketBuilder, SlicedPacket};

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([198, 51, 100, 7], [5, 5, 5, 5], 63)
            .udp(40000, 80);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    /// Encapsulates `inner` (an Ethernet frame) with `mode` into a buffer
    /// with room to spare; returns the buffer and the new length.
    fn wrap(inner: &[u8], mode: Mode) -> (Vec<u8>, usize) {
        let mut buf = inner.to_vec();
        buf.resize(inner.len() + 64, 0);
        let n = encap(
            &mut buf,
            14,
            inner.len(),
            mode,
            u32::from_be_bytes([203, 0, 113, 1]),
            u32::from_be_bytes([203, 0, 113, 50]),
        )
        .expect("room");
        (buf, n)
    }

    #[test]
    fn ipip_round_trip_with_valid_outer_header() {
        let f = udp_frame(b"hello");
        let (mut buf, n) = wrap(&f, Mode::Ipip);
        assert_eq!(n, f.len() + 20);
        // etherparse reads the outer header: protocol 4, DF, TTL 64, sum ok.
        {
            let s = SlicedPacket::from_ethernet(&buf[..n]).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else {
                panic!("not ipv4")
            };
            let h = ip.header();
            assert_eq!(h.protocol(), etherparse::IpNumber(4));
            assert!(h.dont_fragment());
            assert_eq!(h.ttl(), 64);
            assert_eq!(h.total_len() as usize, n - 14);
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        }
        let p = parse(&buf[..n], Link::Ethernet).unwrap();
        let o = outer(&buf[..n], &p).unwrap();
        assert_eq!(o.key, None);
        assert_eq!(o.inner, 34);
        let m = decap(&mut buf, p.l3, &o);
        assert_eq!(&buf[..m], &f[..]);
    }

    #[test]
    fn gre_with_and_without_key_round_trip() {
        let f = udp_frame(b"some payload");
        for mode in [
            Mode::Gre { key: None },
            Mode::Gre {
                key: Some(0xdead_beef),
            },
        ] {
            let (mut buf, n) = wrap(&f, mode);
            assert_eq!(n, f.len() + mode.overhead());
            let p = parse(&buf[..n], Link::Ethernet).unwrap();
            assert_eq!(p.tuple.proto, 47);
            let o = outer(&buf[..n], &p).unwrap();
            assert_eq!(
                o.key,
                match mode {
                    Mode::Gre { key } => key,
                    _ => None,
                }
            );
            let m = decap(&mut buf, p.l3, &o);
            assert_eq!(&buf[..m], &f[..]);
        }
    }

    #[test]
    fn gre_optional_fields_are_skipped() {
        // C and S bits: checksum+reserved and sequence number come around
        // the key.
        let f = udp_frame(b"x");
        let (buf, n) = wrap(&f, Mode::Gre { key: Some(7) });
        let mut v = buf[..34].to_vec();
        v.extend_from_slice(&[0xb0, 0x00, 0x08, 0x00]); // C K S
        v.extend_from_slice(&[0, 0, 0, 0]); // checksum, reserved1
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 9]); // sequence
        v.extend_from_slice(&buf[42..n]);
        let c = checksum::checksum(&v[34..]);
        v[38..40].copy_from_slice(&c.to_be_bytes());
        fix_outer(&mut v);
        let p = parse(&v, Link::Ethernet).unwrap();
        let o = outer(&v, &p).unwrap();
        assert_eq!(o.key, Some(7));
        assert_eq!(o.inner, 34 + 16);
        // A wrong GRE checksum is refused.
        v[60] ^= 0x40;
        let p = parse(&v, Link::Ethernet).unwrap();
        assert_eq!(outer(&v, &p), Err(OuterError::GreChecksum));
    }

    /// Rewrites the outer total length and header checksum after a test
    /// changed the frame.
    fn fix_outer(v: &mut [u8]) {
        let total = (v.len() - 14) as u16;
        v[16..18].copy_from_slice(&total.to_be_bytes());
        v[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&v[14..34]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn hostile_gre_headers_are_refused_not_panicking() {
        let f = udp_frame(b"payload");
        let (buf, n) = wrap(&f, Mode::Gre { key: Some(1) });
        let cases: [(&[u8], OuterError); 7] = [
            (&[0x00, 0x01, 0x08, 0x00], OuterError::GreVersion),
            (&[0x40, 0x00, 0x08, 0x00], OuterError::GreFlags),
            (&[0x08, 0x00, 0x08, 0x00], OuterError::GreFlags),
            (&[0x00, 0x00, 0x86, 0xdd], OuterError::NotIpv4),
            (&[0x00, 0x00, 0x65, 0x58], OuterError::NotIpv4),
            (&[0x30, 0x00, 0x08, 0x00], OuterError::Truncated),
            (&[0xa0, 0x00, 0x08, 0x00], OuterError::GreChecksum),
        ];
        for (gre, want) in cases {
            let mut v = buf[..n].to_vec();
            v[34..38].copy_from_slice(gre);
            if want == OuterError::Truncated {
                v.truncate(34 + 8 + 4);
            }
            fix_outer(&mut v);
            let p = parse(&v, Link::Ethernet).unwrap();
            assert_eq!(outer(&v, &p), Err(want), "gre {gre:02x?}");
        }
        // Every truncation of the outer datagram: an error, never a panic.
        for cut in 34..n {
            let mut v = buf[..cut].to_vec();
            fix_outer(&mut v);
            if let Ok(p) = parse(&v, Link::Ethernet) {
                assert!(outer(&v, &p).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn ipip_truncated_or_non_ipv4_inner_is_refused() {
        let f = udp_frame(b"");
        let (buf, n) = wrap(&f, Mode::Ipip);
        for cut in 34..54 {
            let mut v = buf[..cut].to_vec();
            fix_outer(&mut v);
            let p = parse(&v, Link::Ethernet).unwrap();
            assert_eq!(outer(&v, &p), Err(OuterError::Truncated), "cut {cut}");
        }
        let mut v = buf[..n].to_vec();
        v[34] = 0x60; // IPv6 inside
        let p = parse(&v, Link::Ethernet).unwrap();
        assert_eq!(outer(&v, &p), Err(OuterError::NotIpv4));
        // An outer fragment is not reassembled.
        let mut v = buf[..n].to_vec();
        v[20] = 0x20; // MF
        v[20] &= !0x40;
        fix_outer(&mut v);
        let p = parse(&v, Link::Ethernet).unwrap();
        assert_eq!(outer(&v, &p), Err(OuterError::Fragment));
    }

    #[test]
    fn encap_without_room_changes_nothing() {
        let f = udp_frame(b"abc");
        let mut buf = f.clone();
        assert_eq!(encap(&mut buf, 14, f.len(), Mode::Ipip, 1, 2), None);
        assert_eq!(buf, f);
        assert_eq!(encap(&mut buf, 20, 10, Mode::Ipip, 1, 2), None);
        assert_eq!(encap(&mut buf, 14, f.len() + 1, Mode::Ipip, 1, 2), None);
    }

    #[test]
    fn frag_needed_quotes_the_datagram_and_carries_the_mtu() {
        let mut f = udp_frame(&[7u8; 1400]);
        f[20] |= 0x40; // DF
        let sum_off = 24;
        f[sum_off..sum_off + 2].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[sum_off..sum_off + 2].copy_from_slice(&c.to_be_bytes());
        let p = parse(&f, Link::Ethernet).unwrap();
        assert!(dont_fragment(&f, &p));
        let mut buf = f.clone();
        let gw = u32::from_be_bytes([203, 0, 113, 1]);
        let n = build_frag_needed(&mut buf, &p, gw, 1480).unwrap();
        assert_eq!(n, 14 + 576);
        let s = SlicedPacket::from_ethernet(&buf[..n]).unwrap();
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = s.transport else {
            panic!("not icmp")
        };
        match icmp.icmp_type() {
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
            ) => assert_eq!(next_hop_mtu, 1480),
            t => panic!("{t:?}"),
        }
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload())
        );
        let q = parse(&buf[..n], Link::Ethernet).unwrap();
        assert_eq!(q.tuple.src, gw);
        assert_eq!(q.tuple.dst, p.tuple.src);
    }
}
