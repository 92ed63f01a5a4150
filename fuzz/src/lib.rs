//! Shared pieces of natgw's fuzz targets: an input reader, an independent
//! checksum oracle (etherparse's slices and its 16-bit one's-complement
//! sums, not natgw's own parser or checksum code), helpers that build
//! frames (replies, ICMP errors) and the engine harness.
//!
//! The oracle never trusts natgw to say what a frame is: it finds the IPv4
//! header itself (Ethernet, up to two VLAN tags) and lets etherparse
//! validate it.

pub mod ha;
pub mod harness;

use etherparse::Ipv4HeaderSlice;
use etherparse::checksum::Sum16BitWords;
use natgw::packet::{Link, Tuple};

/// Reads a fuzz input front to back; runs dry with `None`.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Offset of the IPv4 header: after the Ethernet header and up to two
/// 802.1Q/802.1ad tags, or 0 on a raw IP link. `None` if not IPv4.
pub fn ip_offset(f: &[u8], link: Link) -> Option<usize> {
    if link == Link::Ip {
        return (f.first()? >> 4 == 4).then_some(0);
    }
    let mut off = 12;
    for _ in 0..3 {
        let t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
        match t {
            0x0800 => return Some(off + 2),
            0x8100 | 0x88a8 => off += 4,
            _ => return None,
        }
    }
    None
}

/// An IPv4 packet as the oracle sees it: etherparse's header slice (which
/// validates version, IHL and lengths) and the payload the total length
/// covers. Extension headers (AH) are left in the payload: natgw does not
/// look into them either.
pub struct Ipv4<'a> {
    header: Ipv4HeaderSlice<'a>,
    payload: Payload<'a>,
}

/// The payload of an [`Ipv4`].
pub struct Payload<'a> {
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    pub fn header(&self) -> &Ipv4HeaderSlice<'a> {
        &self.header
    }
    pub fn payload(&self) -> &Payload<'a> {
        &self.payload
    }
    /// More fragments or a non-zero offset.
    pub fn is_payload_fragmented(&self) -> bool {
        self.header.more_fragments() || self.header.fragments_offset().value() != 0
    }
}

/// The IPv4 packet in `f` (bounded by its total length), checked by
/// etherparse's header parser.
pub fn ipv4(f: &[u8], link: Link) -> Option<Ipv4<'_>> {
    let off = ip_offset(f, link)?;
    let ip = &f[off..];
    let header = Ipv4HeaderSlice::from_slice(ip).ok()?;
    let hlen = header.slice().len();
    let total = header.total_len() as usize;
    if total < hlen || total > ip.len() {
        return None;
    }
    Some(Ipv4 {
        header,
        payload: Payload {
            payload: &ip[hlen..total],
        },
    })
}

/// True if the IPv4 header checksum verifies (etherparse recomputes it).
pub fn ip_header_ok(s: &Ipv4<'_>) -> bool {
    let h = s.header();
    Sum16BitWords::new().add_slice(h.slice()).ones_complement() == 0
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_slice(&src)
        .add_slice(&dst)
        .add_2bytes([0, proto])
        .add_2bytes((len as u16).to_be_bytes())
}

/// Verifies a transport checksum over `payload` (the whole transport
/// message) of protocol `proto` between `src` and `dst`. `None` when there
/// is nothing to verify (other protocols, too short, a UDP length that
/// does not fit).
pub fn l4_sum_ok(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Option<bool> {
    match proto {
        6 => {
            if payload.len() < 20 {
                return None;
            }
            Some(
                pseudo(src, dst, 6, payload.len())
                    .add_slice(payload)
                    .ones_complement()
                    == 0,
            )
        }
        17 => {
            if payload.len() < 8 {
                return None;
            }
            if payload[6..8] == [0, 0] {
                return Some(true);
            }
            let ulen = u16::from_be_bytes([payload[4], payload[5]]) as usize;
            if ulen < 8 || ulen > payload.len() {
                return None;
            }
            let covered = &payload[..ulen];
            Some(
                pseudo(src, dst, 17, ulen)
                    .add_slice(covered)
                    .ones_complement()
                    == 0,
            )
        }
        1 => {
            if payload.len() < 8 {
                return None;
            }
            Some(Sum16BitWords::new().add_slice(payload).ones_complement() == 0)
        }
        _ => None,
    }
}

/// The transport checksum of an unfragmented packet, verified.
pub fn l4_ok(s: &Ipv4<'_>) -> Option<bool> {
    if s.is_payload_fragmented() {
        return None;
    }
    let h = s.header();
    l4_sum_ok(
        h.source(),
        h.destination(),
        h.protocol().0,
        s.payload().payload,
    )
}

/// What the oracle knows of the datagram quoted in an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub tuple: Tuple,
    /// The quoted IPv4 header's checksum verifies.
    pub header_ok: bool,
    /// The quoted transport checksum verifies (only when the whole
    /// datagram is quoted and it is not a fragment).
    pub l4_ok: Option<bool>,
}

/// The datagram quoted in an ICMP error (types 3, 11, 12).
pub fn quoted(s: &Ipv4<'_>) -> Option<Quoted> {
    // A first fragment (offset 0, more fragments) carries the ICMP header
    // and the quote as well: natgw translates it like an unfragmented one.
    if s.header().fragments_offset().value() != 0 || s.header().protocol().0 != 1 {
        return None;
    }
    let icmp = s.payload().payload;
    if icmp.len() < 8 || !matches!(icmp[0], 3 | 11 | 12) {
        return None;
    }
    let q = &icmp[8..];
    if q.len() < 20 || q[0] >> 4 != 4 {
        return None;
    }
    let ihl = (q[0] & 0xf) as usize * 4;
    if ihl < 20 || q.len() < ihl + 8 {
        return None;
    }
    let proto = q[9];
    let src = [q[12], q[13], q[14], q[15]];
    let dst = [q[16], q[17], q[18], q[19]];
    let l4 = &q[ihl..];
    let (sport, dport) = match proto {
        6 | 17 => (be16(l4, 0), be16(l4, 2)),
        1 if l4[0] == 8 => (be16(l4, 4), 0),
        1 if l4[0] == 0 => (0, be16(l4, 4)),
        _ => (0, 0),
    };
    let header_ok = Sum16BitWords::new().add_slice(&q[..ihl]).ones_complement() == 0;
    let total = be16(q, 2) as usize;
    let frag = be16(q, 6) & 0x3fff != 0;
    let l4_ok = if !frag && total >= ihl && total <= q.len() {
        l4_sum_ok(src, dst, proto, &q[ihl..total])
    } else {
        None
    };
    Some(Quoted {
        tuple: Tuple {
            src: u32::from_be_bytes(src),
            dst: u32::from_be_bytes(dst),
            sport,
            dport,
            proto,
        },
        header_ok,
        l4_ok,
    })
}

pub fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// The 5-tuple of a packet the way natgw names it (ICMP echo id in
/// `sport` of a request, `dport` of a reply), read by the oracle itself.
pub fn tuple_of(s: &Ipv4<'_>) -> Tuple {
    let h = s.header();
    let proto = h.protocol().0;
    let p = s.payload().payload;
    let (mut sport, mut dport) = (0, 0);
    if !s.is_payload_fragmented() || h.fragments_offset().value() == 0 {
        match proto {
            6 | 17 if p.len() >= 4 => (sport, dport) = (be16(p, 0), be16(p, 2)),
            1 if p.len() >= 8 && p[0] == 8 => sport = be16(p, 4),
            1 if p.len() >= 8 && p[0] == 0 => dport = be16(p, 4),
            _ => {}
        }
    }
    Tuple {
        src: u32::from_be_bytes(h.source()),
        dst: u32::from_be_bytes(h.destination()),
        sport,
        dport,
        proto,
    }
}

/// Rewrites the IPv4 header checksum and (unfragmented) the TCP, UDP or
/// ICMP checksum of `f` so that they verify. Frames that are not IPv4 or
/// whose lengths do not fit are left alone. UDP checksum 0 stays 0.
pub fn fix_checksums(f: &mut [u8], link: Link) {
    let Some(off) = ip_offset(f, link) else {
        return;
    };
    let ip = &mut f[off..];
    if ip.len() < 20 {
        return;
    }
    let ihl = (ip[0] & 0xf) as usize * 4;
    let total = be16(ip, 2) as usize;
    if ihl < 20 || ip.len() < ihl || total < ihl || total > ip.len() {
        return;
    }
    // etherparse sums native-endian words: its result goes back with
    // `to_ne_bytes` (a checksum is endian-neutral that way).
    ip[10..12].fill(0);
    let c = Sum16BitWords::new().add_slice(&ip[..ihl]).ones_complement();
    ip[10..12].copy_from_slice(&c.to_ne_bytes());
    if be16(ip, 6) & 0x3fff != 0 {
        return;
    }
    let (src, dst, proto) = (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
        ip[9],
    );
    let l4 = &mut ip[ihl..total];
    match proto {
        6 if l4.len() >= 20 => {
            l4[16..18].fill(0);
            let c = pseudo(src, dst, 6, l4.len())
                .add_slice(l4)
                .ones_complement();
            l4[16..18].copy_from_slice(&c.to_ne_bytes());
        }
        17 if l4.len() >= 8 => {
            let ulen = be16(l4, 4) as usize;
            if l4[6..8] == [0, 0] || ulen < 8 || ulen > l4.len() {
                return;
            }
            l4[6..8].fill(0);
            let c = pseudo(src, dst, 17, ulen)
                .add_slice(&l4[..ulen])
                .to_ones_complement_with_no_zero();
            l4[6..8].copy_from_slice(&c.to_ne_bytes());
        }
        1 if l4.len() >= 8 => {
            l4[2..4].fill(0);
            let c = Sum16BitWords::new().add_slice(l4).ones_complement();
            l4[2..4].copy_from_slice(&c.to_ne_bytes());
        }
        _ => {}
    }
}

/// The answer a remote host would send to `f` (a frame natgw forwarded):
/// addresses and ports swapped, an echo request answered, TCP flags
/// `tcp_flags`, TTL 64, checksums valid. `None` if `f` is not an
/// unfragmented IPv4 TCP/UDP/echo-request packet.
pub fn reply_to(f: &[u8], link: Link, tcp_flags: u8) -> Option<Vec<u8>> {
    let s = ipv4(f, link)?;
    if s.is_payload_fragmented() {
        return None;
    }
    let off = ip_offset(f, link)?;
    let ihl = s.header().ihl() as usize * 4;
    let total = s.header().total_len() as usize;
    let mut r = f[..off + total].to_vec();
    if link == Link::Ethernet {
        let (a, b) = r.split_at_mut(6);
        a.swap_with_slice(&mut b[..6]);
    }
    let ip = &mut r[off..];
    ip[8] = 64;
    for i in 0..4 {
        ip.swap(12 + i, 16 + i);
    }
    let l4 = ihl;
    match ip[9] {
        6 if total >= ihl + 20 => {
            for i in 0..2 {
                ip.swap(l4 + i, l4 + 2 + i);
            }
            ip[l4 + 13] = tcp_flags;
        }
        17 if total >= ihl + 8 => {
            for i in 0..2 {
                ip.swap(l4 + i, l4 + 2 + i);
            }
        }
        1 if total >= ihl + 8 && ip[l4] == 8 => ip[l4] = 0,
        _ => return None,
    }
    fix_checksums(&mut r, link);
    Some(r)
}

/// An ICMP error (type `ty`, code `code`) from `from` about `f` (a frame
/// natgw forwarded), quoting its IP header and `extra` more bytes (at
/// least 8), as a router or the destination would send it back.
pub fn icmp_error_about(
    f: &[u8],
    link: Link,
    ty: u8,
    code: u8,
    from: Option<u32>,
    extra: usize,
) -> Option<Vec<u8>> {
    let s = ipv4(f, link)?;
    let off = ip_offset(f, link)?;
    let ihl = s.header().ihl() as usize * 4;
    let total = s.header().total_len() as usize;
    let quote_len = (ihl + extra.max(8)).min(total);
    let quote = &f[off..off + quote_len];
    let from = from.unwrap_or(u32::from_be_bytes(s.header().destination()));
    let mut r = Vec::with_capacity(off + 28 + quote_len);
    if link == Link::Ethernet {
        r.extend_from_slice(&f[6..12]);
        r.extend_from_slice(&f[0..6]);
        r.extend_from_slice(&[0x08, 0x00]);
    }
    let len = (28 + quote_len) as u16;
    r.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0]);
    r[off + 2..off + 4].copy_from_slice(&len.to_be_bytes());
    r.extend_from_slice(&from.to_be_bytes());
    r.extend_from_slice(&s.header().source());
    r.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(quote);
    fix_checksums(&mut r, link);
    Some(r)
}

/// A small valid frame: Ethernet, IPv4, UDP 10.0.0.2:5000 -> 198.51.100.7:53.
pub fn tiny_udp() -> Vec<u8> {
    udp(
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        [10, 0, 0, 2],
        [198, 51, 100, 7],
        5000,
        53,
        b"q",
    )
}

/// An Ethernet/IPv4/UDP frame built by etherparse.
pub fn udp(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut f, payload)
        .expect("writes into a Vec");
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw::packet::{L4, parse};

    #[test]
    fn built_frames_parse() {
        let f = tiny_udp();
        let e = icmp_error_about(&f, Link::Ethernet, 3, 3, None, 8).unwrap();
        let p = parse(&e, Link::Ethernet);
        assert!(
            matches!(p.map(|p| p.kind), Ok(L4::IcmpError { .. })),
            "{p:?} {e:02x?}"
        );
        let r = reply_to(&f, Link::Ethernet, 0).unwrap();
        let s = ipv4(&r, Link::Ethernet).unwrap();
        assert_eq!(l4_ok(&s), Some(true));
        assert!(parse(&r, Link::Ethernet).is_ok());
        // The checker agrees with etherparse's builder; fixing is a no-op.
        let mut t = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 2], [1, 2, 3, 4], 64)
            .tcp(1, 2, 3, 4)
            .syn()
            .write(&mut t, b"xyz")
            .unwrap();
        let s = ipv4(&t, Link::Ethernet).unwrap();
        assert!(ip_header_ok(&s));
        assert_eq!(l4_ok(&s), Some(true));
        let mut fixed = t.clone();
        fix_checksums(&mut fixed, Link::Ethernet);
        assert_eq!(fixed, t);
        let mut u = f.clone();
        fix_checksums(&mut u, Link::Ethernet);
        assert_eq!(u, f);
        let r = reply_to(&t, Link::Ethernet, 0x12).unwrap();
        let s = ipv4(&r, Link::Ethernet).unwrap();
        assert!(ip_header_ok(&s));
        assert_eq!(l4_ok(&s), Some(true));
    }
}
