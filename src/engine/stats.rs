//! Per-worker counters and drop reasons.
//!
//! Every packet the engine does not forward ends in exactly one named
//! counter. Each worker owns one [`Counters`] (a single writer, so plain
//! load+store increments, no locked instructions); the control thread sums
//! them with [`Counters::snapshot`].

use crate::packet::ParseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $v:ident = $name:literal,)*) => {
        /// Why a packet was dropped. Each variant is its own counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $($(#[doc = $doc])* $v,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            pub const COUNT: usize = DropReason::ALL.len();
            /// Counter name in `natgw stats` and metrics.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
            /// One-line description (the doc comment).
            pub fn describe(self) -> &'static str {
                match self { $(DropReason::$v => concat!($($doc),*).trim_ascii(),)* }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header.
    EthTruncated = "eth_truncated",
    /// Ethertype is neither IPv4, IPv6 nor ARP.
    NonIp = "non_ip",
    /// IPv6 frame, and the config says `ipv6 = "drop"`.
    Ipv6 = "ipv6",
    /// Shorter than an IPv4 header.
    IpTruncated = "ip_truncated",
    /// IP version is not 4.
    IpBadVersion = "ip_bad_version",
    /// IHL below 5 or past the frame.
    IpBadIhl = "ip_bad_ihl",
    /// IP total length below the header or past the frame.
    IpBadLength = "ip_bad_length",
    /// IPv4 header checksum wrong.
    IpBadChecksum = "ip_bad_checksum",
    /// TCP/UDP/ICMP header cut short.
    L4Truncated = "l4_truncated",
    /// First fragment too small to hold the transport header.
    FragTooSmall = "frag_too_small",
    /// UDP length field below 8 or past the end of the IP payload.
    UdpBadLength = "udp_bad_length",
    /// Non-first fragment whose first fragment was not seen (or expired), where the caller cannot hold it (natgw's workers and `natgw replay` hold them: see `frag_hold_full`, `frag_timeout`).
    FragNoFlow = "frag_no_flow",
    /// ICMP error with a malformed or untrackable quoted datagram.
    IcmpInnerBad = "icmp_inner_bad",
    /// ICMP error about a flow natgw does not have.
    IcmpErrorNoFlow = "icmp_error_no_flow",
    /// ICMP echo reply without a matching request flow.
    IcmpReplyNoFlow = "icmp_reply_no_flow",
    /// TCP RST that matches no flow (nothing to reset).
    TcpRstNoFlow = "tcp_rst_no_flow",
    /// TCP segment outside its flow's window (sequence or acknowledgement number not plausible: a blind injection, a stale or forged segment). natgw sends no reset.
    TcpOutOfWindow = "tcp_out_of_window",
    /// TCP segment other than a SYN matching no flow, with `tcp_loose = false` (no pick-up mid-stream).
    TcpNotSyn = "tcp_not_syn",
    /// TTL would reach zero here (an ICMP time-exceeded went back unless rate-limited).
    TtlExceeded = "ttl_exceeded",
    /// No route to the (translated) destination.
    NoRoute = "no_route",
    /// Multicast or limited-broadcast destination (a gateway does not route these).
    NotUnicast = "not_unicast",
    /// IPIP/GRE to a gateway address from no configured tunnel remote.
    TunnelUnknown = "tunnel_unknown",
    /// GRE key differs from the tunnel's (or is missing / unexpected).
    TunnelKey = "tunnel_key",
    /// IPIP/GRE packet is an outer fragment (natgw does not reassemble).
    TunnelFragment = "tunnel_fragment",
    /// GRE header or inner IPv4 header cut short.
    TunnelTruncated = "tunnel_truncated",
    /// GRE version other than 0.
    TunnelGreVersion = "tunnel_gre_version",
    /// GRE routing bit or a reserved flag bit set.
    TunnelGreFlags = "tunnel_gre_flags",
    /// GRE checksum present and wrong.
    TunnelGreChecksum = "tunnel_gre_checksum",
    /// Tunnel payload is not IPv4.
    TunnelNotIpv4 = "tunnel_not_ipv4",
    /// Decapsulated datagram is itself IPIP/GRE to the gateway (one level only).
    TunnelNested = "tunnel_nested",
    /// Decapsulated datagram addressed to the gateway itself (not a NAT flow).
    TunnelInnerLocal = "tunnel_inner_local",
    /// Datagram larger than the tunnel MTU (DF: an ICMP fragmentation-needed went back unless rate-limited).
    TunnelTooBig = "tunnel_too_big",
    /// No route to the tunnel's remote, or it leads into a tunnel.
    TunnelNoRoute = "tunnel_no_route",
    /// New connection to a virtual service that no real server can take (all down or weight 0).
    LbNoServer = "lb_no_server",
    /// TCP segment without SYN starting a connection to a virtual service (IPVS drops these too).
    LbNotSyn = "lb_not_syn",
    /// A `drop` rule matched.
    RuleDrop = "rule_drop",
    /// No rule matched and the config says `unmatched = "drop"`.
    Unmatched = "unmatched",
    /// `max_flows` live flows and nothing could be evicted.
    FlowTableFull = "flow_table_full",
    /// No free outside port for the new flow.
    PortExhausted = "port_exhausted",
    /// New flow from a source that has `flows_per_source` live flows already.
    SourceLimit = "source_limit",
    /// Two workers created the same flow at once and this packet lost.
    FlowRace = "flow_race",
    /// Addressed to the gateway itself on a backend that cannot deliver it.
    LocalUndeliverable = "local_undeliverable",
    /// Next hop's link-layer address unknown (ARP pending or failed).
    NoNeighbour = "no_neighbour",
    /// Transmit ring full or the output device refused the frame.
    TxFull = "tx_full",
    /// Parked by the XDP program while no natgw read the queue, and older than `PARKED_MAX_AGE` when one did.
    ParkedStale = "parked_stale",
    /// Parked by the XDP program, but no free frame to process it in.
    ParkedNoFrame = "parked_no_frame",
    /// This node is the HA standby (`natgw ha role backup|fault`): it forwards nothing.
    Standby = "standby",
    /// Non-first fragment ahead of its first fragment, and this worker already holds `FRAG_HOLD_MAX` such fragments.
    FragHoldFull = "frag_hold_full",
    /// Non-first fragment held for its first fragment, which did not come (or created no flow) within `FRAG_HOLD_TIME`.
    FragTimeout = "frag_timeout",
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> DropReason {
        match e {
            ParseError::NotIpv4(_) => DropReason::NonIp,
            ParseError::EthTruncated => DropReason::EthTruncated,
            ParseError::IpTruncated => DropReason::IpTruncated,
            ParseError::IpBadVersion => DropReason::IpBadVersion,
            ParseError::IpBadIhl => DropReason::IpBadIhl,
            ParseError::IpBadLength => DropReason::IpBadLength,
            ParseError::IpBadChecksum => DropReason::IpBadChecksum,
            ParseError::L4Truncated => DropReason::L4Truncated,
            ParseError::FragTooSmall => DropReason::FragTooSmall,
            ParseError::UdpBadLength => DropReason::UdpBadLength,
            ParseError::IcmpInnerBad => DropReason::IcmpInnerBad,
        }
    }
}

/// Counters of one worker (or of the offline replay).
#[derive(Default)]
pub struct Counters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Packets forwarded on an existing flow.
    pub fast_path: AtomicU64,
    pub flows_created: AtomicU64,
    /// Unassured flows evicted to make room (conntrack early drop).
    pub early_drops: AtomicU64,
    /// TCP segments that did not fit the state machine (forwarded anyway).
    pub tcp_invalid: AtomicU64,
    pub icmp_errors_translated: AtomicU64,
    pub frags_translated: AtomicU64,
    pub ttl_exceeded_sent: AtomicU64,
    /// ICMP fragmentation-needed sent for datagrams too big for a tunnel.
    pub frag_needed_sent: AtomicU64,
    /// Handed to the host stack: addressed to the gateway itself.
    pub local: AtomicU64,
    /// Handed to the host stack untouched: ARP, IPv6 with `ipv6 = "pass"`.
    pub passed: AtomicU64,
    /// Frames the XDP program parked while no natgw read its queue (a
    /// handover's cut, a restart), taken and processed afterwards.
    pub parked: AtomicU64,
    /// Receive-coalescing sleeps of the worker (`afxdp.coalesce_us`).
    pub coalesce_sleeps: AtomicU64,
    drops: Drops,
    lane: Lane,
}

/// One counter per [`DropReason`] (more than `Default` derives for arrays).
struct Drops([AtomicU64; DropReason::COUNT]);

impl Default for Drops {
    fn default() -> Self {
        Drops(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// Which lane of shared counters (a real server's traffic) this worker
/// adds to: each [`Counters`] takes the next one when it is made, so
/// workers write different cache lines.
#[derive(Debug)]
struct Lane(usize);

impl Default for Lane {
    fn default() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Lane(NEXT.fetch_add(1, Relaxed))
    }
}

impl Counters {
    /// Increments a counter owned by this worker (single writer).
    #[inline]
    pub fn bump(c: &AtomicU64) {
        c.store(c.load(Relaxed) + 1, Relaxed);
    }

    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed) + n, Relaxed);
    }

    #[inline]
    pub fn drop(&self, r: DropReason) {
        Counters::bump(&self.drops.0[r as usize]);
    }

    /// This worker's lane for shared per-server counters (see
    /// `lb::RealState::count`).
    #[inline]
    pub fn lane(&self) -> usize {
        self.lane.0
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops.0[r as usize].load(Relaxed)
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Relaxed);
        CounterSnapshot {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            fast_path: l(&self.fast_path),
            flows_created: l(&self.flows_created),
            early_drops: l(&self.early_drops),
            tcp_invalid: l(&self.tcp_invalid),
            icmp_errors_translated: l(&self.icmp_errors_translated),
            frags_translated: l(&self.frags_translated),
            ttl_exceeded_sent: l(&self.ttl_exceeded_sent),
            frag_needed_sent: l(&self.frag_needed_sent),
            local: l(&self.local),
            passed: l(&self.passed),
            parked: l(&self.parked),
            coalesce_sleeps: l(&self.coalesce_sleeps),
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r.name().to_string(), self.drops(r)))
                .filter(|&(_, v)| v > 0)
                .collect(),
        }
    }
}

/// Plain copy of [`Counters`], summable and serialisable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub fast_path: u64,
    pub flows_created: u64,
    pub early_drops: u64,
    pub tcp_invalid: u64,
    pub icmp_errors_translated: u64,
    pub frags_translated: u64,
    pub ttl_exceeded_sent: u64,
    /// See [`Counters::frag_needed_sent`].
    #[serde(default)]
    pub frag_needed_sent: u64,
    pub local: u64,
    pub passed: u64,
    /// See [`Counters::parked`].
    #[serde(default)]
    pub parked: u64,
    /// See [`Counters::coalesce_sleeps`].
    #[serde(default)]
    pub coalesce_sleeps: u64,
    /// Non-zero drop counters by name.
    pub drops: BTreeMap<String, u64>,
}

impl CounterSnapshot {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    pub fn add(&mut self, o: &CounterSnapshot) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.fast_path += o.fast_path;
        self.flows_created += o.flows_created;
        self.early_drops += o.early_drops;
        self.tcp_invalid += o.tcp_invalid;
        self.icmp_errors_translated += o.icmp_errors_translated;
        self.frags_translated += o.frags_translated;
        self.ttl_exceeded_sent += o.ttl_exceeded_sent;
        self.frag_needed_sent += o.frag_needed_sent;
        self.local += o.local;
        self.passed += o.passed;
        self.parked += o.parked;
        self.coalesce_sleeps += o.coalesce_sleeps;
        for (k, v) in &o.drops {
            *self.drops.entry(k.clone()).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_name_and_description() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert!(DropReason::ALL.iter().all(|r| !r.describe().is_empty()));
        assert_eq!(
            DropReason::PortExhausted.describe(),
            "No free outside port for the new flow."
        );
    }

    #[test]
    fn snapshot_lists_nonzero_drops() {
        let c = Counters::default();
        c.drop(DropReason::IpBadChecksum);
        c.drop(DropReason::IpBadChecksum);
        let s = c.snapshot();
        assert_eq!(s.drops.get("ip_bad_checksum"), Some(&2));
        assert_eq!(s.total_drops(), 2);
    }
}
