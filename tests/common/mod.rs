//! Shared helpers for the pure-core integration tests.
//!
//! - Frame builders (etherparse's `PacketBuilder`): TCP with flags, UDP,
//!   ICMP echo, ICMP errors quoting a given frame, fragments, IPv6.
//! - [`view`]: reads a frame back into plain fields (addresses, ports, ICMP
//!   type, the datagram an ICMP error quotes) so tests assert what a host on
//!   either side would see.
//! - [`verify_checksums`]: an independent checksum check (etherparse's
//!   header parsers and its RFC 1071 sum), done the way a receiving host
//!   does it: every checksummed region must sum to zero. It covers the IPv4
//!   header, TCP/UDP with the pseudo-header, ICMP, and for ICMP errors the
//!   quoted IPv4 header (and the quoted transport checksum when the whole
//!   datagram is quoted).
//! - [`Gw`]: an engine built from TOML text, a virtual clock, and one
//!   `send` that runs a frame through `Engine::process` and checks the
//!   checksums of whatever the gateway emits.
//! - [`ConfigText`]: the config text, built from the base interfaces and
//!   the rules, sets and services a test adds.
#![allow(dead_code)]

mod config_text;
pub use config_text::*;

use etherparse::checksum::Sum16BitWords;
use etherparse::icmpv4::{DestUnreachableHeader, ParameterProblemHeader, TimeExceededCode};
use etherparse::{
    EtherType, Icmpv4Type, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4HeaderSlice,
    PacketBuilder,
};
use natgw::conntrack::{FlowRecord, Time};
use natgw::control::config::Config;
use natgw::engine::{Counters, DropReason, Engine, Verdict};
use natgw::nat::IfId;
use natgw::packet::Link;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// MAC addresses are irrelevant to the core; fixed values keep frames stable.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ETH_HLEN: usize = 14;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAM_PROBLEM: u8 = 12;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

// ---------------------------------------------------------------------------
// Addresses

/// `"10.0.0.2:40000"` -> a socket address (panics on a typo in a test).
pub fn sa(s: &str) -> SocketAddrV4 {
    s.parse()
        .unwrap_or_else(|_| panic!("`{s}` is not addr:port"))
}

/// `"10.0.0.2"` -> an address (panics on a typo in a test).
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("`{s}` is not an address"))
}

// ---------------------------------------------------------------------------
// Frame builders

/// IPv4 header fields a test may want to choose.
#[derive(Debug, Clone)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Ip {
        Ip {
            src,
            dst,
            ttl: 64,
            id: 0x1234,
            options: Vec::new(),
        }
    }

    pub fn ttl(mut self, ttl: u8) -> Ip {
        self.ttl = ttl;
        self
    }

    pub fn id(mut self, id: u16) -> Ip {
        self.id = id;
        self
    }

    pub fn options(mut self, o: &[u8]) -> Ip {
        self.options = o.to_vec();
        self
    }

    fn headers(&self) -> IpHeaders {
        let mut h = Ipv4Header::new(
            0,
            self.ttl,
            IpNumber::UDP,
            self.src.octets(),
            self.dst.octets(),
        )
        .expect("empty payload fits");
        h.identification = self.id;
        h.dont_fragment = false;
        h.options = self.options[..]
            .try_into()
            .expect("IPv4 options: a multiple of 4 bytes, at most 40");
        IpHeaders::Ipv4(h, Ipv4Extensions::default())
    }

    fn builder(&self) -> etherparse::PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2(HOST_MAC, GW_MAC).ip(self.headers())
    }

    /// A TCP segment with `flags` (the `SYN`/`ACK`/... constants).
    pub fn tcp(
        &self,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = self.builder().tcp(sport, dport, seq, 64240);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & PSH != 0 {
            b = b.psh();
        }
        if flags & ACK != 0 {
            b = b.ack(ack);
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("tcp frame builds");
        out
    }

    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .udp(sport, dport)
            .write(&mut out, payload)
            .expect("udp frame builds");
        out
    }

    pub fn icmp(&self, ty: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .icmpv4(ty)
            .write(&mut out, payload)
            .expect("icmp frame builds");
        out
    }

    /// A datagram of IP protocol `proto` (GRE 47, 253, ...) carrying
    /// `payload` as it is.
    pub fn raw(&self, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .write(&mut out, IpNumber(proto), payload)
            .expect("raw IP frame builds");
        out
    }

    pub fn echo_request(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .icmpv4_echo_request(id, seq)
            .write(&mut out, payload)
            .expect("echo request builds");
        out
    }

    pub fn echo_reply(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.builder()
            .icmpv4_echo_reply(id, seq)
            .write(&mut out, payload)
            .expect("echo reply builds");
        out
    }
}

/// TCP segment `src -> dst` with `flags`; seq 1000, ack 1001 when ACK is
/// set. Both sides use the same numbers, so every such segment fits
/// the other side's window (each acknowledges the other's SYN, data is
/// at most resent): tests of other things pass window tracking.
pub fn tcp(src: &str, dst: &str, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_seq(src, dst, flags, 1000, 1001, payload)
}

pub fn tcp_seq(src: &str, dst: &str, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    Ip::new(*s.ip(), *d.ip()).tcp(s.port(), d.port(), flags, seq, ack, payload)
}

pub fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    Ip::new(*s.ip(), *d.ip()).udp(s.port(), d.port(), payload)
}

/// ICMP echo request (what `ping` sends).
pub fn ping(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
    Ip::new(ip(src), ip(dst)).echo_request(id, seq, b"natgw ping payload")
}

/// ICMP echo reply.
pub fn pong(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
    Ip::new(ip(src), ip(dst)).echo_reply(id, seq, b"natgw ping payload")
}

/// The ICMP errors a test can send (RFC 792 types natgw translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    PortUnreachable,
    ProtoUnreachable,
    HostUnreachable,
    FragNeeded { mtu: u16 },
    TimeExceeded,
    ParamProblem { pointer: u8 },
}

impl IcmpKind {
    pub fn icmp_type(self) -> Icmpv4Type {
        match self {
            IcmpKind::PortUnreachable => {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
            }
            IcmpKind::ProtoUnreachable => {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Protocol)
            }
            IcmpKind::HostUnreachable => {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)
            }
            IcmpKind::FragNeeded { mtu } => {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                })
            }
            IcmpKind::TimeExceeded => {
                Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
            }
            IcmpKind::ParamProblem { pointer } => {
                Icmpv4Type::ParameterProblem(ParameterProblemHeader::PointerIndicatesError(pointer))
            }
        }
    }

    /// (type, code) on the wire.
    pub fn type_code(self) -> (u8, u8) {
        match self {
            IcmpKind::PortUnreachable => (ICMP_DEST_UNREACH, 3),
            IcmpKind::ProtoUnreachable => (ICMP_DEST_UNREACH, 2),
            IcmpKind::HostUnreachable => (ICMP_DEST_UNREACH, 1),
            IcmpKind::FragNeeded { .. } => (ICMP_DEST_UNREACH, 4),
            IcmpKind::TimeExceeded => (ICMP_TIME_EXCEEDED, 0),
            IcmpKind::ParamProblem { .. } => (ICMP_PARAM_PROBLEM, 0),
        }
    }
}

/// How much of the offending datagram an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// IP header plus 8 bytes (RFC 792 minimum, old routers).
    HeaderPlus8,
    /// The whole datagram (Linux quotes up to 576 bytes).
    Full,
}

/// An ICMP error `from -> to` about `about` (an Ethernet frame as the
/// sender of the error received it).
pub fn icmp_error(from: &str, to: &str, kind: IcmpKind, about: &[u8], quote: Quote) -> Vec<u8> {
    let dgram = ip_datagram(about);
    let hlen = ((dgram[0] & 0x0f) as usize) * 4;
    let n = match quote {
        Quote::HeaderPlus8 => (hlen + 8).min(dgram.len()),
        Quote::Full => dgram.len(),
    };
    Ip::new(ip(from), ip(to)).icmp(kind.icmp_type(), &dgram[..n])
}

/// The IP datagram inside an Ethernet frame (without padding).
pub fn ip_datagram(frame: &[u8]) -> &[u8] {
    let d = &frame[ETH_HLEN..];
    let total = u16::from_be_bytes([d[2], d[3]]) as usize;
    &d[..total.min(d.len())]
}

/// Splits an unfragmented IPv4 frame into two fragments: the first carries
/// `at` bytes of the IP payload (a multiple of 8), the second the rest.
/// Both keep the IP id of the original.
pub fn fragment(frame: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(at % 8, 0, "fragment boundaries are multiples of 8 bytes");
    let (h, payload) = Ipv4Header::from_slice(&frame[ETH_HLEN..]).expect("an IPv4 frame");
    let payload = &payload[..h.payload_len().expect("total length consistent") as usize];
    assert!(at < payload.len(), "split inside the payload");
    let build = |data: &[u8], offset: usize, more: bool| {
        let mut fh = h.clone();
        fh.more_fragments = more;
        fh.dont_fragment = false;
        fh.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).unwrap();
        let mut out = Vec::new();
        PacketBuilder::ethernet2(HOST_MAC, GW_MAC)
            .ip(IpHeaders::Ipv4(fh, Ipv4Extensions::default()))
            .write(&mut out, h.protocol, data)
            .expect("fragment builds");
        out
    };
    (
        build(&payload[..at], 0, true),
        build(&payload[at..], at, false),
    )
}

/// What a receiver does with fragments: puts the payloads back together
/// (by offset) under the first fragment's header. Returns an unfragmented
/// frame, whose checksums [`verify_checksums`] can then check end to end.
pub fn reassemble(frags: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<(usize, Ipv4Header, Vec<u8>)> = frags
        .iter()
        .map(|f| {
            let (h, p) = Ipv4Header::from_slice(&f[ETH_HLEN..]).expect("an IPv4 fragment");
            let n = h.payload_len().unwrap() as usize;
            (
                h.fragment_offset.byte_offset() as usize,
                h.clone(),
                p[..n].to_vec(),
            )
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut data = Vec::new();
    for (off, h, p) in &parts {
        assert_eq!(*off, data.len(), "fragments must be contiguous");
        data.extend_from_slice(p);
        let _ = h;
    }
    let mut h = parts[0].1.clone();
    h.more_fragments = false;
    h.fragment_offset = etherparse::IpFragOffset::ZERO;
    for (_, o, _) in &parts[1..] {
        assert_eq!(
            (o.source, o.destination, o.protocol, o.identification),
            (h.source, h.destination, h.protocol, h.identification),
            "all fragments of one datagram carry the same addresses, protocol and id"
        );
    }
    let mut out = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, GW_MAC)
        .ip(IpHeaders::Ipv4(h.clone(), Ipv4Extensions::default()))
        .write(&mut out, h.protocol, &data)
        .expect("reassembled frame builds");
    out
}

/// An IPv6 UDP frame.
pub fn ipv6_udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, GW_MAC)
        .ipv6(s.octets(), d.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, b"v6")
        .unwrap();
    out
}

/// Recomputes the IPv4 header checksum of an Ethernet frame in place
/// (after a test edited the header on purpose). Uses the header length the
/// IHL claims, clamped to the frame.
pub fn fix_ip_checksum(frame: &mut [u8]) {
    if frame.len() < ETH_HLEN + 20 {
        return;
    }
    let hlen = (((frame[ETH_HLEN] & 0x0f) as usize) * 4)
        .max(20)
        .min(frame.len() - ETH_HLEN);
    frame[ETH_HLEN + 10] = 0;
    frame[ETH_HLEN + 11] = 0;
    // etherparse sums in native byte order: write the result back as such.
    let c = Sum16BitWords::new()
        .add_slice(&frame[ETH_HLEN..ETH_HLEN + hlen])
        .ones_complement();
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_ne_bytes());
}

/// Sets the TTL of an IPv4 frame and fixes the header checksum.
pub fn set_ttl(frame: &mut [u8], ttl: u8) {
    frame[ETH_HLEN + 8] = ttl;
    fix_ip_checksum(frame);
}

// ---------------------------------------------------------------------------
// Reading frames back

/// An ICMP header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    pub ty: u8,
    pub code: u8,
    /// Bytes 4..8: echo id and sequence, the next-hop MTU of
    /// fragmentation-needed, the pointer of parameter-problem.
    pub rest: [u8; 4],
}

impl Icmp {
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }
    pub fn echo_seq(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }
    pub fn mtu(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }
}

/// An IPv4 datagram as a host would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub ip_id: u16,
    pub more_fragments: bool,
    pub frag_offset: u16,
    /// TCP/UDP ports (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp: Option<Icmp>,
    /// Bytes after the transport header (TCP/UDP/ICMP), as far as present.
    pub payload: Vec<u8>,
    /// The datagram an ICMP error quotes.
    pub inner: Option<Box<View>>,
}

impl View {
    pub fn src_sa(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.src, self.sport)
    }
    pub fn dst_sa(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.dst, self.dport)
    }
    pub fn inner(&self) -> &View {
        self.inner
            .as_deref()
            .expect("an ICMP error quoting a datagram")
    }
    pub fn icmp(&self) -> Icmp {
        self.icmp.expect("an ICMP message")
    }
}

/// Reads an Ethernet + IPv4 frame.
pub fn view(frame: &[u8]) -> View {
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    assert_eq!(et, u16::from(EtherType::IPV4), "not an IPv4 frame");
    view_ip(&frame[ETH_HLEN..], false)
}

/// Reads an IPv4 datagram; `quoted` allows it to be cut short (as in an
/// ICMP error, where only the header and 8 bytes may be present).
fn view_ip(d: &[u8], quoted: bool) -> View {
    let h = Ipv4HeaderSlice::from_slice(d)
        .expect("an IPv4 header")
        .to_header();
    let hlen = h.header_len();
    let total = h.total_len as usize;
    let end = if quoted { total.min(d.len()) } else { total };
    let l4 = &d[hlen..end];
    let mut v = View {
        src: Ipv4Addr::from(h.source),
        dst: Ipv4Addr::from(h.destination),
        ttl: h.time_to_live,
        proto: h.protocol.0,
        ip_id: h.identification,
        more_fragments: h.more_fragments,
        frag_offset: h.fragment_offset.value(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp: None,
        payload: Vec::new(),
        inner: None,
    };
    if v.frag_offset != 0 {
        v.payload = l4.to_vec();
        return v;
    }
    let be16 = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    match v.proto {
        PROTO_TCP | PROTO_UDP if l4.len() >= 4 => {
            v.sport = be16(0);
            v.dport = be16(2);
            if v.proto == PROTO_TCP && l4.len() >= 20 {
                v.tcp_flags = l4[13];
                let doff = (l4[12] >> 4) as usize * 4;
                v.payload = l4[doff.min(l4.len())..].to_vec();
            } else if v.proto == PROTO_UDP && l4.len() >= 8 {
                v.payload = l4[8..].to_vec();
            }
        }
        PROTO_ICMP if l4.len() >= 8 => {
            let icmp = Icmp {
                ty: l4[0],
                code: l4[1],
                rest: [l4[4], l4[5], l4[6], l4[7]],
            };
            v.icmp = Some(icmp);
            v.payload = l4[8..].to_vec();
            if matches!(
                icmp.ty,
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
            ) && !quoted
            {
                v.inner = Some(Box::new(view_ip(&l4[8..], true)));
            }
        }
        _ => v.payload = l4.to_vec(),
    }
    v
}

// ---------------------------------------------------------------------------
// Independent checksum verification

/// Checks every checksum of an Ethernet + IPv4 frame the way a receiving
/// host does, with etherparse's parsers and sum: the IPv4 header; TCP and
/// UDP with their pseudo-header (a zero UDP checksum means "none"); ICMP
/// over the whole message; for ICMP errors also the quoted IPv4 header, and
/// the quoted datagram's own transport checksum when it is quoted whole.
/// Fragments only get their IPv4 header checked (see [`reassemble`]).
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    if frame.len() < ETH_HLEN {
        return Err("shorter than an Ethernet header".into());
    }
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    if et != u16::from(EtherType::IPV4) {
        return Err(format!("ethertype {et:#06x} is not IPv4"));
    }
    verify_ip(&frame[ETH_HLEN..], "")
}

fn verify_ip(d: &[u8], what: &str) -> Result<(), String> {
    let hs = Ipv4HeaderSlice::from_slice(d).map_err(|e| format!("{what}IPv4 header: {e}"))?;
    let h = hs.to_header();
    let hlen = h.header_len();
    if sum_is_zero(Sum16BitWords::new(), &d[..hlen]).is_err() {
        return Err(format!(
            "{what}IPv4 header checksum {:#06x}, etherparse computes {:#06x}",
            h.header_checksum,
            h.calc_header_checksum()
        ));
    }
    let total = h.total_len as usize;
    if total > d.len() || total < hlen {
        return Err(format!(
            "{what}IPv4 total length {total} vs {} bytes",
            d.len()
        ));
    }
    if h.more_fragments || h.fragment_offset.value() != 0 {
        return Ok(());
    }
    verify_l4(&h, &d[hlen..total], what)
}

/// Receiver-style check: the ones'-complement sum over the region
/// (checksum field included) must be all ones. On failure returns the
/// complement of the sum (how far off the stored checksum is).
fn sum_is_zero(init: Sum16BitWords, bytes: &[u8]) -> Result<(), u16> {
    // etherparse sums in native byte order; zero is zero in both.
    let c = init.add_slice(bytes).ones_complement();
    if c == 0 {
        Ok(())
    } else {
        Err(u16::from_be_bytes(c.to_ne_bytes()))
    }
}

fn pseudo(h: &Ipv4Header, proto: u8, len: usize) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_4bytes(h.source)
        .add_4bytes(h.destination)
        .add_2bytes([0, proto])
        .add_2bytes((len as u16).to_be_bytes())
}

fn verify_l4(h: &Ipv4Header, l4: &[u8], what: &str) -> Result<(), String> {
    match h.protocol.0 {
        PROTO_TCP => {
            let (th, _) = etherparse::TcpHeader::from_slice(l4)
                .map_err(|e| format!("{what}TCP header: {e}"))?;
            sum_is_zero(pseudo(h, PROTO_TCP, l4.len()), l4)
                .map_err(|c| format!("{what}TCP checksum {:#06x} is off by {c:#06x}", th.checksum))
        }
        PROTO_UDP => {
            let (uh, _) = etherparse::UdpHeader::from_slice(l4)
                .map_err(|e| format!("{what}UDP header: {e}"))?;
            if uh.checksum == 0 {
                return Ok(());
            }
            if uh.length as usize != l4.len() {
                return Err(format!("{what}UDP length {} vs {}", uh.length, l4.len()));
            }
            sum_is_zero(pseudo(h, PROTO_UDP, l4.len()), l4)
                .map_err(|c| format!("{what}UDP checksum {:#06x} is off by {c:#06x}", uh.checksum))
        }
        PROTO_ICMP => {
            if l4.len() < 8 {
                return Err(format!("{what}ICMP shorter than 8 bytes"));
            }
            sum_is_zero(Sum16BitWords::new(), l4)
                .map_err(|c| format!("{what}ICMP checksum is off by {c:#06x}"))?;
            if !matches!(
                l4[0],
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
            ) || !what.is_empty()
            {
                return Ok(());
            }
            let inner = &l4[8..];
            let ih = Ipv4HeaderSlice::from_slice(inner)
                .map_err(|e| format!("quoted IPv4 header: {e}"))?
                .to_header();
            let ihlen = ih.header_len();
            if sum_is_zero(Sum16BitWords::new(), &inner[..ihlen]).is_err() {
                return Err(format!(
                    "quoted IPv4 header checksum {:#06x}, etherparse computes {:#06x}",
                    ih.header_checksum,
                    ih.calc_header_checksum()
                ));
            }
            // Whole datagram quoted: its transport checksum must hold too.
            let itotal = ih.total_len as usize;
            if itotal == inner.len() && !ih.more_fragments && ih.fragment_offset.value() == 0 {
                verify_l4(&ih, &inner[ihlen..], "quoted ")?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Panics with the frame in hex if a checksum is wrong.
pub fn assert_checksums(frame: &[u8]) {
    if let Err(e) = verify_checksums(frame) {
        panic!("{e}\nframe: {}", hex(frame));
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The gateway fixture

/// A config: `[gateway]` with `gateway` lines (a fixed seed unless given),
/// the base interfaces and routes, then `rest` (rules, limits, timeouts).
pub fn config(gateway: &str, rest: &str) -> String {
    let base = if gateway.contains("seed") {
        ConfigText::base()
    } else {
        ConfigText::seeded()
    };
    base.gateway_lines(gateway).raw(rest).text()
}

/// What became of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Sent out of `oif` towards `next_hop`, as `frame`.
    Forward {
        oif: IfId,
        next_hop: Ipv4Addr,
        frame: Vec<u8>,
    },
    /// The gateway answered instead (e.g. ICMP time exceeded).
    Reply {
        oif: IfId,
        next_hop: Ipv4Addr,
        frame: Vec<u8>,
    },
    Local,
    Pass,
    Drop(DropReason),
    /// A later fragment ahead of its first: the worker holds it and runs
    /// it again once its first fragment was translated.
    HeldFragment,
}

impl Out {
    /// The forwarded frame; panics (with what happened instead) otherwise.
    #[track_caller]
    pub fn forwarded(&self) -> &[u8] {
        match self {
            Out::Forward { frame, .. } => frame,
            other => panic!("expected the frame to be forwarded, got {}", other.short()),
        }
    }

    /// The forwarded frame, read back.
    #[track_caller]
    pub fn seen(&self) -> View {
        view(self.forwarded())
    }

    #[track_caller]
    pub fn oif(&self) -> IfId {
        match self {
            Out::Forward { oif, .. } | Out::Reply { oif, .. } => *oif,
            other => panic!("expected a frame to leave, got {}", other.short()),
        }
    }

    #[track_caller]
    pub fn next_hop(&self) -> Ipv4Addr {
        match self {
            Out::Forward { next_hop, .. } | Out::Reply { next_hop, .. } => *next_hop,
            other => panic!("expected a frame to leave, got {}", other.short()),
        }
    }

    pub fn is_forward(&self) -> bool {
        matches!(self, Out::Forward { .. })
    }

    pub fn short(&self) -> String {
        match self {
            Out::Forward {
                oif,
                next_hop,
                frame,
            } => {
                format!("Forward(oif {oif}, via {next_hop}, {:?})", view(frame))
            }
            Out::Reply {
                oif,
                next_hop,
                frame,
            } => {
                format!("Reply(oif {oif}, via {next_hop}, {:?})", view(frame))
            }
            Out::Local => "Local".into(),
            Out::Pass => "Pass".into(),
            Out::Drop(r) => format!("Drop({})", r.name()),
            Out::HeldFragment => "HeldFragment".into(),
        }
    }
}

/// An engine built from a config, a virtual clock and the drop counters.
pub struct Gw {
    pub engine: Engine,
    pub counters: Counters,
    pub now: Time,
    pub lan: IfId,
    pub wan: IfId,
}

impl Gw {
    /// Builds the engine from TOML text (panics on a config error).
    pub fn new(toml: &str) -> Gw {
        let cfg = Config::parse(toml, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("config refused: {e}\n{toml}"));
        let engine = cfg.build_engine().unwrap();
        let lan = engine.interface_id("lan0").unwrap_or(0);
        let wan = engine.interface_id("wan0").unwrap_or(1);
        Gw {
            engine,
            counters: Counters::default(),
            // Start away from zero so "t - 1ns" is always meaningful.
            now: Time::from_secs(1_000),
            lan,
            wan,
        }
    }

    /// [`config`] plus [`Gw::new`].
    pub fn with(gateway: &str, rest: &str) -> Gw {
        Gw::new(&config(gateway, rest))
    }

    /// [`Gw::new`] of a built config.
    pub fn of(c: ConfigText) -> Gw {
        Gw::new(&c.text())
    }

    pub fn advance_secs(&mut self, s: u64) {
        self.now = Time(self.now.0 + s * 1_000_000_000);
    }

    pub fn advance_nanos(&mut self, n: u64) {
        self.now = Time(self.now.0 + n);
    }

    /// Runs one frame received on `iif` through the engine. Whatever the
    /// gateway emits must pass [`verify_checksums`].
    #[track_caller]
    pub fn send(&self, iif: IfId, frame: &[u8]) -> Out {
        let mut buf = vec![0u8; frame.len().max(1514) + 128];
        buf[..frame.len()].copy_from_slice(frame);
        let v = self.engine.process(
            &mut buf,
            frame.len(),
            Link::Ethernet,
            iif,
            self.now,
            &self.counters,
        );
        match v {
            Verdict::Forward { oif, next_hop } => {
                let out = buf[..frame.len()].to_vec();
                assert_checksums(&out);
                Out::Forward {
                    oif,
                    next_hop: Ipv4Addr::from(next_hop),
                    frame: out,
                }
            }
            Verdict::Reply { oif, next_hop, len } => {
                let out = buf[..len].to_vec();
                assert_checksums(&out);
                Out::Reply {
                    oif,
                    next_hop: Ipv4Addr::from(next_hop),
                    frame: out,
                }
            }
            Verdict::Local => Out::Local,
            Verdict::Pass => Out::Pass,
            Verdict::Drop(r) => Out::Drop(r),
            Verdict::HoldFragment { .. } => Out::HeldFragment,
        }
    }

    /// A frame from an inside host.
    #[track_caller]
    pub fn on_lan(&self, frame: &[u8]) -> Out {
        self.send(self.lan, frame)
    }

    /// A frame from the outside.
    #[track_caller]
    pub fn on_wan(&self, frame: &[u8]) -> Out {
        self.send(self.wan, frame)
    }

    /// Sweeps the whole table once (bounded work, generous budget).
    pub fn sweep(&self) -> usize {
        self.engine.expire(self.now, 1 << 20)
    }

    /// Live flows at the current time.
    pub fn flows(&self) -> Vec<FlowRecord> {
        self.engine.flows(self.now)
    }

    /// The earliest deadline of a live flow.
    pub fn next_deadline(&self) -> Option<Time> {
        self.flows().iter().map(|f| f.expires).min()
    }

    /// Jumps the clock to the next flow deadline and sweeps (quinn-style
    /// `step`). Returns how many flows went away.
    pub fn step_to_next_deadline(&mut self) -> usize {
        match self.next_deadline() {
            Some(t) => {
                self.now = self.now.max(t);
                self.sweep()
            }
            None => 0,
        }
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.counters.drops(r)
    }

    /// Drop counters that are not zero, by name.
    pub fn nonzero_drops(&self) -> Vec<(String, u64)> {
        self.counters.snapshot().drops.into_iter().collect()
    }
}
