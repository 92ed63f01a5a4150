//! One pass over a frame: validate, find offsets, extract the 5-tuple.

use super::{Tuple, checksum, proto};

/// What the frame buffer starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// An Ethernet II header (AF_XDP, pcap linktype 1).
    Ethernet,
    /// A bare IP packet (TUN with IFF_NO_PI, pcap linktype 101/228).
    Ip,
}

/// Frames that are not IPv4, by what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherKind {
    Ipv6,
    Arp,
    Other,
}

/// Why a frame could not be handled. Each variant is a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4; the caller decides (pass to the kernel, or drop).
    NotIpv4(EtherKind),
    /// Shorter than an Ethernet header (plus its VLAN tags).
    EthTruncated,
    /// Shorter than a minimal IPv4 header.
    IpTruncated,
    /// IP version field is not 4 (raw IP link) or the header is not IPv4.
    IpBadVersion,
    /// IHL below 5 or past the end of the frame.
    IpBadIhl,
    /// Total length shorter than the header or longer than the frame.
    IpBadLength,
    /// IPv4 header checksum does not verify.
    IpBadChecksum,
    /// TCP/UDP/ICMP header cut short (or a bad TCP data offset).
    L4Truncated,
    /// A first fragment too small to hold the transport header.
    FragTooSmall,
    /// UDP length field below 8, or (unfragmented) past the IP payload.
    UdpBadLength,
    /// An ICMP error whose embedded datagram is cut short or malformed.
    IcmpInnerBad,
}

/// Fragment position of the datagram this frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    No,
    /// Offset 0 with more fragments: carries the transport header.
    First,
    /// Offset > 0: no transport header; `Parsed::ip_id` names the datagram.
    Later,
}

/// The transport part of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        flags: u8,
    },
    Udp,
    /// ICMP echo request or reply (the id is in the tuple).
    IcmpEcho,
    /// ICMP error carrying part of the datagram that caused it; parse has
    /// checked the quoted datagram, and [`Parsed::icmp_error_info`] reads
    /// where it sits. (Not carried here: a 40-byte variant made every
    /// parsed packet's result that much bigger to write and move.)
    IcmpError {
        ty: u8,
        code: u8,
    },
    /// Any other ICMP message (timestamp, redirect, ...): not tracked.
    IcmpOther {
        ty: u8,
    },
    /// Another IP protocol, or a non-first fragment.
    Other,
}

/// Where the datagram embedded in an ICMP error sits, and its tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorInfo {
    pub ty: u8,
    pub code: u8,
    /// Offset of the inner IPv4 header in the frame.
    pub inner_l3: usize,
    /// Offset of the inner transport header.
    pub inner_l4: usize,
    /// Tuple of the inner datagram as it was sent.
    pub inner: Tuple,
}

/// Offsets and fields of a valid IPv4 frame. Every offset is inside the
/// frame: `l3 + 20 <= l4 <= end <= frame.len()`, and the transport header
/// (or, for ICMP errors, the inner IP header plus 8 bytes) fits before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the transport header (after IP options).
    pub l4: usize,
    /// End of the IP datagram (frames may carry padding after it).
    pub end: usize,
    /// Tuple of the packet; ports are 0 for later fragments and other protocols.
    pub tuple: Tuple,
    pub ttl: u8,
    pub ip_id: u16,
    pub frag: Frag,
    pub kind: L4,
    /// VLAN id of the outer 802.1Q tag, if any.
    pub vlan: Option<u16>,
    /// ICMP type for ICMP messages (0 otherwise).
    pub icmp_type: u8,
}

impl Parsed {
    /// True if the transport header is present and carries the tuple's ports.
    pub fn has_ports(&self) -> bool {
        matches!(self.kind, L4::Tcp { .. } | L4::Udp | L4::IcmpEcho)
    }

    /// Where the datagram quoted in an ICMP error sits in `frame` (the frame
    /// this was parsed from), and its tuple; `None` unless `kind` is
    /// [`L4::IcmpError`].
    pub fn icmp_error_info(&self, frame: &[u8]) -> Option<IcmpErrorInfo> {
        match self.kind {
            L4::IcmpError { ty, .. } => icmp_error(frame, self.l4, self.end, ty).ok(),
            _ => None,
        }
    }
}

#[inline]
pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[inline]
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAM_PROBLEM: u8 = 12;

/// Parses `frame` and validates everything the rewrite functions touch.
pub fn parse(frame: &[u8], link: Link) -> Result<Parsed, ParseError> {
    match plain(frame, link) {
        Some(p) => Ok(p),
        None => general(frame, link),
    }
}

/// The usual frame, read in one pass with its fields at fixed offsets:
/// Ethernet II without VLAN tags (or bare IP), IPv4 without options and
/// with a verifying header checksum, not fragmented, carrying a whole UDP
/// or TCP header. `None` for every other frame, which [`general`] then
/// parses; for the frames this takes it gives what `general` gives (tested
/// byte by byte in `plain_agrees_with_general`). ~50 instructions fewer
/// per packet than `general` alone (callgrind).
#[inline(always)]
fn plain(frame: &[u8], link: Link) -> Option<Parsed> {
    let l3 = match link {
        Link::Ethernet if frame.get(12..14)? == [0x08, 0x00] => ETH_HLEN,
        Link::Ethernet => return None,
        Link::Ip => 0,
    };
    let h = frame.get(l3..)?.first_chunk::<20>()?;
    // Version 4, IHL 5; MF clear and offset 0 (DF and the reserved bit
    // are not looked at, as in `general`).
    if h[0] != 0x45 || h[6] & 0x3f != 0 || h[7] != 0 {
        return None;
    }
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    let end = l3 + total;
    if total < 20 || frame.len() < end || sum20(h) != 0xffff {
        return None;
    }
    let l4 = l3 + 20;
    let avail = total - 20;
    let t = frame.get(l4..)?;
    let (kind, ports) = match h[9] {
        proto::UDP => {
            let u = t.first_chunk::<8>()?;
            let ulen = u16::from_be_bytes([u[4], u[5]]) as usize;
            if avail < 8 || ulen < 8 || ulen > avail {
                return None;
            }
            (L4::Udp, [u[0], u[1], u[2], u[3]])
        }
        proto::TCP => {
            let th = t.first_chunk::<20>()?;
            let doff = (th[12] >> 4) as usize * 4;
            if avail < 20 || doff < 20 || doff > avail {
                return None;
            }
            (L4::Tcp { flags: th[13] }, [th[0], th[1], th[2], th[3]])
        }
        _ => return None,
    };
    Some(Parsed {
        l3,
        l4,
        end,
        tuple: Tuple {
            src: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            dst: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
            sport: u16::from_be_bytes([ports[0], ports[1]]),
            dport: u16::from_be_bytes([ports[2], ports[3]]),
            proto: h[9],
        },
        ttl: h[8],
        ip_id: u16::from_be_bytes([h[4], h[5]]),
        frag: Frag::No,
        kind,
        vlan: None,
        icmp_type: 0,
    })
}

/// [`parse`] of any frame: VLAN tags, IP options, fragments, ICMP, other
/// protocols, and the reason a frame is refused.
#[inline(never)]
fn general(frame: &[u8], link: Link) -> Result<Parsed, ParseError> {
    let (l3, vlan) = match link {
        Link::Ethernet => ether(frame)?,
        Link::Ip => match frame.first().map(|b| b >> 4) {
            Some(4) => (0, None),
            Some(6) => return Err(ParseError::NotIpv4(EtherKind::Ipv6)),
            Some(_) => return Err(ParseError::IpBadVersion),
            None => return Err(ParseError::IpTruncated),
        },
    };
    let ip = ipv4(frame, l3)?;
    let IpHeader {
        l4,
        end,
        src,
        dst,
        proto: p,
        ttl,
        id,
        frag,
    } = ip;
    let mut tuple = Tuple {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: p,
    };
    let kind = if frag == Frag::Later {
        L4::Other
    } else {
        match transport(frame, l4, end, p, &mut tuple) {
            Err(ParseError::L4Truncated) if frag == Frag::First => {
                return Err(ParseError::FragTooSmall);
            }
            k => k?,
        }
    };
    if kind == L4::Udp {
        // RFC 768: the length covers header and data. Less than the IP
        // payload is padding (legal); more is a lie, unless this is a first
        // fragment (the length then covers the whole datagram).
        let ulen = be16(frame, l4 + 4) as usize;
        if ulen < 8 || (frag == Frag::No && ulen > end - l4) {
            return Err(ParseError::UdpBadLength);
        }
    }
    let icmp_type = if p == proto::ICMP && frag != Frag::Later {
        frame[l4]
    } else {
        0
    };
    Ok(Parsed {
        l3,
        l4,
        end,
        tuple,
        ttl,
        ip_id: id,
        frag,
        kind,
        vlan,
        icmp_type,
    })
}

fn ether(frame: &[u8]) -> Result<(usize, Option<u16>), ParseError> {
    if frame.len() < ETH_HLEN {
        return Err(ParseError::EthTruncated);
    }
    let mut off = 12;
    let mut vlan = None;
    let mut ethertype = be16(frame, off);
    // Up to two tags (802.1ad outer + 802.1Q inner).
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        if frame.len() < off + 6 {
            return Err(ParseError::EthTruncated);
        }
        vlan.get_or_insert(be16(frame, off + 2) & 0x0fff);
        off += 4;
        ethertype = be16(frame, off);
    }
    match ethertype {
        ETHERTYPE_IPV4 => Ok((off + 2, vlan)),
        ETHERTYPE_IPV6 => Err(ParseError::NotIpv4(EtherKind::Ipv6)),
        ETHERTYPE_ARP => Err(ParseError::NotIpv4(EtherKind::Arp)),
        _ => Err(ParseError::NotIpv4(EtherKind::Other)),
    }
}

struct IpHeader {
    l4: usize,
    end: usize,
    src: u32,
    dst: u32,
    proto: u8,
    ttl: u8,
    id: u16,
    frag: Frag,
}

/// Validates an IPv4 header at `l3` (outer or inner) and returns its fields.
/// `verify` controls the header checksum check (inner headers are not
/// verified: routers may have changed them before quoting).
fn ipv4_at(b: &[u8], l3: usize, verify: bool) -> Result<IpHeader, ParseError> {
    // The fixed header as an array: its fields are read without bounds
    // checks.
    let Some(h) = b.get(l3..).and_then(|r| r.first_chunk::<20>()) else {
        return Err(ParseError::IpTruncated);
    };
    if h[0] >> 4 != 4 {
        return Err(ParseError::IpBadVersion);
    }
    let hlen = ((h[0] & 0x0f) as usize) * 4;
    if hlen < 20 || b.len() < l3 + hlen {
        return Err(ParseError::IpBadIhl);
    }
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total < hlen || b.len() < l3 + total {
        return Err(ParseError::IpBadLength);
    }
    if verify {
        let ok = if hlen == 20 {
            sum20(h) == 0xffff
        } else {
            checksum::checksum(&b[l3..l3 + hlen]) == 0
        };
        if !ok {
            return Err(ParseError::IpBadChecksum);
        }
    }
    let fo = u16::from_be_bytes([h[6], h[7]]);
    let frag = match (fo & 0x1fff, fo & 0x2000 != 0) {
        (0, false) => Frag::No,
        (0, true) => Frag::First,
        _ => Frag::Later,
    };
    Ok(IpHeader {
        l4: l3 + hlen,
        end: l3 + total,
        src: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        ttl: h[8],
        id: u16::from_be_bytes([h[4], h[5]]),
        frag,
    })
}

/// The folded ones'-complement sum of a 20-byte IPv4 header (0xffff when
/// its checksum is right): five 32-bit words added in 64 bits, then folded
/// (RFC 1071: the sum may be taken over wider words).
// Always inlined: as a call it cost ~8 instructions of its ~23.
#[inline(always)]
fn sum20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    checksum::fold64(w(0) + w(4) + w(8) + w(12) + w(16))
}

fn ipv4(b: &[u8], l3: usize) -> Result<IpHeader, ParseError> {
    ipv4_at(b, l3, true)
}

/// Parses the transport header at `l4` (bounded by `end`), filling the ports.
fn transport(b: &[u8], l4: usize, end: usize, p: u8, t: &mut Tuple) -> Result<L4, ParseError> {
    let avail = end - l4;
    match p {
        proto::TCP => {
            if avail < 20 {
                return Err(ParseError::L4Truncated);
            }
            let Some(h) = b.get(l4..).and_then(|r| r.first_chunk::<20>()) else {
                return Err(ParseError::L4Truncated);
            };
            let doff = (h[12] >> 4) as usize * 4;
            if doff < 20 || doff > avail {
                return Err(ParseError::L4Truncated);
            }
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            Ok(L4::Tcp { flags: h[13] })
        }
        proto::UDP => {
            let h = match b.get(l4..).and_then(|r| r.first_chunk::<8>()) {
                Some(h) if avail >= 8 => h,
                _ => return Err(ParseError::L4Truncated),
            };
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            Ok(L4::Udp)
        }
        proto::ICMP => {
            if avail < 8 {
                return Err(ParseError::L4Truncated);
            }
            let ty = b[l4];
            match ty {
                ICMP_ECHO_REQUEST => {
                    t.sport = be16(b, l4 + 4);
                    Ok(L4::IcmpEcho)
                }
                ICMP_ECHO_REPLY => {
                    t.dport = be16(b, l4 + 4);
                    Ok(L4::IcmpEcho)
                }
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM => {
                    let e = icmp_error(b, l4, end, ty)?;
                    Ok(L4::IcmpError { ty, code: e.code })
                }
                _ => Ok(L4::IcmpOther { ty }),
            }
        }
        _ => Ok(L4::Other),
    }
}

/// Parses the datagram quoted in an ICMP error: inner IPv4 header plus at
/// least 8 bytes of its transport header, all before the outer `end`. The
/// inner tuple has ports for TCP/UDP, the id for ICMP echo, and none for
/// other protocols; an inner ICMP message other than echo is refused
/// (errors are never answered or matched on errors).
fn icmp_error(b: &[u8], l4: usize, end: usize, ty: u8) -> Result<IcmpErrorInfo, ParseError> {
    let inner_l3 = l4 + 8;
    let region = &b[..end];
    if region.len() < inner_l3 + 20 || region[inner_l3] >> 4 != 4 {
        return Err(ParseError::IcmpInnerBad);
    }
    let hlen = ((region[inner_l3] & 0x0f) as usize) * 4;
    // Quoted datagrams are usually truncated, so the inner total length is
    // not checked against what is present; only the 8 L4 bytes must be.
    if hlen < 20 || region.len() < inner_l3 + hlen + 8 {
        return Err(ParseError::IcmpInnerBad);
    }
    let fo = be16(region, inner_l3 + 6);
    if fo & 0x1fff != 0 {
        // A non-first fragment quoted: no ports to match on.
        return Err(ParseError::IcmpInnerBad);
    }
    let inner_l4 = inner_l3 + hlen;
    let p = region[inner_l3 + 9];
    let mut inner = Tuple {
        src: be32(region, inner_l3 + 12),
        dst: be32(region, inner_l3 + 16),
        sport: 0,
        dport: 0,
        proto: p,
    };
    match p {
        proto::TCP | proto::UDP => {
            inner.sport = be16(region, inner_l4);
            inner.dport = be16(region, inner_l4 + 2);
        }
        proto::ICMP => match region[inner_l4] {
            ICMP_ECHO_REQUEST => inner.sport = be16(region, inner_l4 + 4),
            ICMP_ECHO_REPLY => inner.dport = be16(region, inner_l4 + 4),
            _ => return Err(ParseError::IcmpInnerBad),
        },
        // Any other protocol (GRE, ESP, SCTP, 253, ...): natgw's flows of
        // those are address-only (RFC 5508 4.1: translate every quoted
        // datagram whose flow is known).
        _ => {}
    }
    Ok(IcmpErrorInfo {
        ty,
        code: b[l4 + 1],
        inner_l3,
        inner_l4,
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP 10.0.0.2:1234 -> 192.0.2.1:53, payload "hi".
    pub(crate) fn udp_frame() -> Vec<u8> {
        let mut f = vec![
            0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, // eth
            0x45, 0x00, 0x00, 0x1e, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // ip
            10, 0, 0, 2, 192, 0, 2, 1, //
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, // udp
            b'h', b'i',
        ];
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn parses_udp_over_ethernet() {
        let f = udp_frame();
        let p = parse(&f, Link::Ethernet).unwrap();
        assert_eq!((p.l3, p.l4, p.end), (14, 34, 44));
        assert_eq!(p.tuple.to_string(), "udp 10.0.0.2:1234 > 192.0.2.1:53");
        assert_eq!(p.kind, L4::Udp);
        assert_eq!(p.frag, Frag::No);
        assert_eq!(p.ttl, 64);
    }

    /// Every frame the fast path takes parses the same the general way:
    /// valid UDP and TCP frames (bare IP too), each header byte set to
    /// values that matter (and each cut short), the IP checksum made to
    /// verify again or left wrong.
    #[test]
    fn plain_agrees_with_general() {
        let mut tcp = udp_frame();
        tcp.truncate(34);
        tcp[23] = proto::TCP;
        tcp.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0]);
        tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, b'h', b'i']);
        tcp[16..18].copy_from_slice(&42u16.to_be_bytes());
        let fix = |f: &mut Vec<u8>, l3: usize| {
            if f.len() >= l3 + 20 {
                f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&f[l3..l3 + 20]);
                f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
        };
        fix(&mut tcp, 14);
        let mut taken = 0;
        for base in [udp_frame(), tcp] {
            for (link, f0) in [
                (Link::Ethernet, base.clone()),
                (Link::Ip, base[14..].to_vec()),
            ] {
                let l3 = if link == Link::Ethernet { 14 } else { 0 };
                let mut cases = vec![f0.clone()];
                for n in 0..f0.len() {
                    cases.push(f0[..n].to_vec());
                }
                for i in 0..f0.len() {
                    for v in [
                        0x00, 0x01, 0x06, 0x08, 0x11, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x50, 0x80,
                        0xff,
                    ] {
                        let mut f = f0.clone();
                        f[i] = v;
                        cases.push(f.clone());
                        fix(&mut f, l3);
                        cases.push(f);
                    }
                }
                for f in &cases {
                    if let Some(p) = plain(f, link) {
                        taken += 1;
                        assert_eq!(Ok(p), general(f, link), "{f:02x?}");
                    }
                }
            }
        }
        assert!(taken > 500, "the fast path took only {taken} frames");
    }

    #[test]
    fn parses_raw_ip_and_vlan() {
        let f = udp_frame();
        let p = parse(&f[14..], Link::Ip).unwrap();
        assert_eq!((p.l3, p.l4), (0, 20));
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        v.extend_from_slice(&f[12..]);
        let p = parse(&v, Link::Ethernet).unwrap();
        assert_eq!((p.l3, p.vlan), (18, Some(42)));
    }

    #[test]
    fn rejects_malformed_headers() {
        let f = udp_frame();
        assert_eq!(
            parse(&f[..10], Link::Ethernet),
            Err(ParseError::EthTruncated)
        );
        assert_eq!(
            parse(&f[..30], Link::Ethernet),
            Err(ParseError::IpTruncated)
        );
        let mut bad = f.clone();
        bad[14] = 0x44; // IHL 4
        assert_eq!(parse(&bad, Link::Ethernet), Err(ParseError::IpBadIhl));
        let mut bad = f.clone();
        bad[17] = 0xff; // total length past the frame
        assert_eq!(parse(&bad, Link::Ethernet), Err(ParseError::IpBadLength));
        let mut bad = f.clone();
        bad[26] ^= 1; // source address changed, checksum not
        assert_eq!(parse(&bad, Link::Ethernet), Err(ParseError::IpBadChecksum));
        let mut v6 = f.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(
            parse(&v6, Link::Ethernet),
            Err(ParseError::NotIpv4(EtherKind::Ipv6))
        );
    }

    #[test]
    fn truncated_udp_and_tiny_first_fragment() {
        let mut f = udp_frame();
        // Claim a total length of 24: only 4 bytes of UDP.
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&f, Link::Ethernet), Err(ParseError::L4Truncated));
        // Same, but as a first fragment (MF set).
        f[20] = 0x20;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&f, Link::Ethernet), Err(ParseError::FragTooSmall));
    }

    #[test]
    fn udp_length_past_the_payload_or_below_8() {
        let mut f = udp_frame();
        assert_eq!(be16(&f, 38), 10);
        for bad in [11u16, 0xffff, 7, 0] {
            f[38..40].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                parse(&f, Link::Ethernet),
                Err(ParseError::UdpBadLength),
                "{bad}"
            );
        }
        // Shorter than the payload: trailing padding, fine.
        for ok in [8u16, 9] {
            f[38..40].copy_from_slice(&ok.to_be_bytes());
            assert_eq!(parse(&f, Link::Ethernet).unwrap().kind, L4::Udp);
        }
        // A first fragment's UDP length covers the whole datagram.
        f[38..40].copy_from_slice(&1000u16.to_be_bytes());
        f[20] = 0x20;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&f, Link::Ethernet).unwrap().frag, Frag::First);
    }

    /// An ICMP error (protocol unreachable) quoting a datagram of another
    /// protocol has an address-only inner tuple; one quoting an ICMP
    /// error or a later fragment is refused.
    #[test]
    fn icmp_error_quoting_other_protocols() {
        let quote = |proto: u8, fo: u16, inner_icmp_type: u8| {
            let mut inner = vec![
                0x45,
                0,
                0,
                28,
                0,
                1,
                (fo >> 8) as u8,
                fo as u8,
                64,
                proto,
                0,
                0, //
                203,
                0,
                113,
                1,
                198,
                51,
                100,
                9,
            ];
            inner.extend_from_slice(&[inner_icmp_type, 0, 0, 0, 0, 0, 0, 0]);
            let mut f = vec![
                0x45, 0, 0, 0, 0, 2, 0, 0, 64, 1, 0, 0, 198, 51, 100, 9, 203, 0, 113, 1,
            ];
            f.extend_from_slice(&[3, 2, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&inner);
            let n = f.len() as u16;
            f[2..4].copy_from_slice(&n.to_be_bytes());
            let c = checksum::checksum(&f[..20]);
            f[10..12].copy_from_slice(&c.to_be_bytes());
            parse(&f, Link::Ip).map(|p| (p, p.icmp_error_info(&f)))
        };
        for proto in [47u8, 50, 132, 253] {
            let (p, e) = quote(proto, 0, 0).unwrap();
            let Some(e) = e else {
                panic!("{proto}: {:?}", p.kind)
            };
            assert_eq!(e.inner.proto, proto);
            assert_eq!((e.inner.sport, e.inner.dport), (0, 0));
            assert_eq!(e.inner.src, u32::from_be_bytes([203, 0, 113, 1]));
        }
        assert_eq!(quote(47, 0x0010, 0), Err(ParseError::IcmpInnerBad));
        assert_eq!(quote(proto::ICMP, 0, 3), Err(ParseError::IcmpInnerBad));
        assert!(quote(proto::ICMP, 0, 8).is_ok());
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let mut f = udp_frame();
        f[20..22].copy_from_slice(&0x0001u16.to_be_bytes()); // offset 8 bytes
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let p = parse(&f, Link::Ethernet).unwrap();
        assert_eq!(p.frag, Frag::Later);
        assert_eq!(p.kind, L4::Other);
        assert_eq!((p.tuple.sport, p.tuple.dport, p.ip_id), (0, 0, 0x1234));
    }
}
