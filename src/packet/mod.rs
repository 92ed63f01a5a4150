//! Packet layer: parse a frame once into offsets and a 5-tuple, then rewrite
//! addresses, ports and ICMP identifiers in place with incremental checksums.
//!
//! Everything here is pure: byte slices in, values out. [`parse`] validates
//! every length it later relies on, so the rewrite functions index the frame
//! without further checks and never panic on a frame that parsed.
//!
//! Supported: Ethernet II with up to two 802.1Q/802.1ad tags or a raw IP
//! packet (TUN), IPv4 with options, TCP, UDP, ICMP echo and the ICMP errors
//! that carry an inner datagram (destination unreachable, time exceeded,
//! parameter problem). IPv6 and other ethertypes are recognised and reported
//! as such; non-first IPv4 fragments are reported with their IP id so the
//! caller can apply the translation of their first fragment.

pub mod arp;
pub mod checksum;
mod parse;
mod rewrite;
pub mod tunnel;

pub use parse::{
    EtherKind, Frag, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpErrorInfo, L4, Link, ParseError,
    Parsed, be16, be32, parse,
};
pub use rewrite::{
    build_time_exceeded, echo_reply_in_place, rewrite_icmp_error, rewrite_l3_only, rewrite_tuple,
};

use std::fmt;
use std::net::Ipv4Addr;

/// IP protocol numbers natgw tracks.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// A flow's 5-tuple as seen on the wire in one direction.
///
/// For ICMP echo the identifier stands in for a port: an echo request has
/// it in `sport` (and `dport` 0), an echo reply in `dport` (and `sport` 0),
/// so a request and its reply have inverse tuples like TCP and UDP do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> Tuple {
        Tuple {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
            proto,
        }
    }

    /// The tuple of a packet going the other way.
    #[inline]
    pub fn invert(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    pub fn src_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src)
    }

    pub fn dst_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst)
    }

    /// Packs the tuple into two words (used as hash-table key material).
    #[inline]
    pub fn pack(&self) -> [u64; 2] {
        [
            ((self.src as u64) << 32) | self.dst as u64,
            ((self.sport as u64) << 32) | ((self.dport as u64) << 16) | self.proto as u64,
        ]
    }

    #[inline]
    pub fn unpack(w: [u64; 2]) -> Tuple {
        Tuple {
            src: (w[0] >> 32) as u32,
            dst: w[0] as u32,
            sport: (w[1] >> 32) as u16,
            dport: (w[1] >> 16) as u16,
            proto: w[1] as u8,
        }
    }

    pub fn proto_name(&self) -> &'static str {
        proto_name(self.proto)
    }
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "ip",
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            proto::ICMP => write!(
                f,
                "icmp {} > {} id={}",
                self.src_ip(),
                self.dst_ip(),
                self.sport.max(self.dport)
            ),
            _ => write!(
                f,
                "{} {}:{} > {}:{}",
                self.proto_name(),
                self.src_ip(),
                self.sport,
                self.dst_ip(),
                self.dport
            ),
        }
    }
}
