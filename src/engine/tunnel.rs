//! Tunnel interfaces: natgw as the IPIP/GRE endpoint at both ends.
//!
//! A `[[tunnel]]` is an interface without a device: its id follows the
//! physical interfaces' ids (`interfaces.len() + k`), so routes
//! (`dev = "tun1"`) and rules (`iif`/`oif`) name it like any other. The
//! data plane never sees a tunnel id: the engine turns every verdict that
//! would leave by a tunnel into one that leaves by the underlying interface.
//!
//! - **Input.** An IPIP/GRE packet addressed to one of the gateway's
//!   addresses is decapsulated when its outer source and destination are a
//!   tunnel's remote and local (and, for GRE, its key is the tunnel's);
//!   anything else to the tunnel protocols is dropped and counted by
//!   reason. The inner datagram then goes through the whole pipeline as if
//!   it had been received on the tunnel interface: flows, NAT, rules.
//! - **Output.** A datagram routed to a tunnel is checked against the
//!   tunnel MTU before it is translated (a DF datagram that does not fit
//!   gets ICMP fragmentation-needed with the tunnel MTU, quoting it as its
//!   sender sent it, like Linux; one without DF is dropped: natgw does not
//!   fragment), then translated, then encapsulated; the outer datagram is
//!   routed to the tunnel's remote by the main table (which must not lead
//!   into a tunnel).
//!
//! Counters per tunnel (packets and bytes of the inner datagrams each way,
//! drops by reason) are shared by the workers (relaxed atomic adds; unlike
//! the per-worker [`Counters`], a few nanoseconds per packet).

use super::{Counters, DropReason, Engine, NextHop, Verdict};
use crate::conntrack::Time;
use crate::nat::IfId;
use crate::packet::tunnel::{self, IPPROTO_GRE, IPPROTO_IPIP, Mode, OuterError};
use crate::packet::{Link, Parsed};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A configured tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub name: String,
    pub mode: Mode,
    /// Outer source: one of the gateway's addresses.
    pub local: u32,
    /// Outer destination: the other endpoint.
    pub remote: u32,
    /// Largest inner datagram: the underlying interface's MTU minus the
    /// encapsulation overhead.
    pub mtu: u16,
    /// `mtu` was not configured: it follows the underlying device's MTU
    /// (see [`set_tunnel_mtus`]; 1500 until then).
    pub mtu_auto: bool,
}

/// Sets the MTU of every tunnel whose config gives none from its
/// underlying interface's MTU (`device_mtu` of the interface the main table
/// routes its remote to) minus the overhead, as Linux derives a tunnel's
/// MTU. Pure: the caller reads the devices (`natgw run`, reload).
pub fn set_tunnel_mtus(cfg: &mut super::EngineConfig, device_mtu: impl Fn(&str) -> Option<u16>) {
    let table = super::RouteTable::new(&cfg.interfaces, &cfg.routes);
    for t in cfg.tunnels.iter_mut().filter(|t| t.mtu_auto) {
        let dev = table
            .lookup(t.remote)
            .and_then(|h| cfg.interfaces.get(usize::from(h.oif)))
            .and_then(|i| device_mtu(&i.name));
        if let Some(m) = dev {
            let oh = t.mode.overhead() as u16;
            t.mtu = m.saturating_sub(oh).max(68);
        }
    }
}

/// One tunnel's counters, as `natgw stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStats {
    pub name: String,
    pub mode: String,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub mtu: u16,
    /// Inner datagrams decapsulated / their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Inner datagrams encapsulated / their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets of this tunnel dropped, either way.
    pub drops: u64,
    /// The same by reason (non-zero ones; names as in the drop counters).
    #[serde(default)]
    pub drop_reasons: std::collections::BTreeMap<String, u64>,
}

struct TunnelCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: AtomicU64,
    /// By [`DropReason`] index.
    reasons: Vec<AtomicU64>,
}

/// The tunnels and their counters.
#[derive(Default)]
pub struct Tunnels {
    /// Id of the first tunnel (the number of physical interfaces).
    base: IfId,
    list: Vec<(Tunnel, TunnelCounters)>,
}

impl Tunnels {
    pub fn new(base: usize, list: &[Tunnel]) -> Tunnels {
        Tunnels {
            base: base as IfId,
            list: list
                .iter()
                .map(|t| {
                    let c = TunnelCounters {
                        rx_packets: AtomicU64::new(0),
                        rx_bytes: AtomicU64::new(0),
                        tx_packets: AtomicU64::new(0),
                        tx_bytes: AtomicU64::new(0),
                        drops: AtomicU64::new(0),
                        reasons: (0..DropReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
                    };
                    (t.clone(), c)
                })
                .collect(),
        }
    }

    /// The tunnel interface `id` names, if it is one.
    #[inline]
    fn get(&self, id: IfId) -> Option<(usize, &Tunnel)> {
        let k = usize::from(id.checked_sub(self.base)?);
        self.list.get(k).map(|(t, _)| (k, t))
    }

    /// The tunnel whose endpoints an outer header names.
    pub(super) fn find(&self, src: u32, dst: u32, proto: u8) -> Option<usize> {
        self.list
            .iter()
            .position(|(t, _)| t.remote == src && t.local == dst && t.mode.proto() == proto)
    }

    /// Counts a packet of tunnel `k` dropped for `r`; returns the verdict.
    fn drop(&self, k: usize, r: DropReason) -> Verdict {
        if let Some((_, c)) = self.list.get(k) {
            c.drops.fetch_add(1, Relaxed);
            if let Some(n) = c.reasons.get(r as usize) {
                n.fetch_add(1, Relaxed);
            }
        }
        Verdict::Drop(r)
    }

    pub fn stats(&self) -> Vec<TunnelStats> {
        self.list
            .iter()
            .map(|(t, c)| TunnelStats {
                name: t.name.clone(),
                mode: t.mode.name().into(),
                local: t.local.into(),
                remote: t.remote.into(),
                mtu: t.mtu,
                rx_packets: c.rx_packets.load(Relaxed),
                rx_bytes: c.rx_bytes.load(Relaxed),
                tx_packets: c.tx_packets.load(Relaxed),
                tx_bytes: c.tx_bytes.load(Relaxed),
                drops: c.drops.load(Relaxed),
                drop_reasons: DropReason::ALL
                    .iter()
                    .map(|&r| (r.name().to_string(), c.reasons[r as usize].load(Relaxed)))
                    .filter(|&(_, n)| n > 0)
                    .collect(),
            })
            .collect()
    }
}

impl From<OuterError> for DropReason {
    fn from(e: OuterError) -> DropReason {
        match e {
            OuterError::Fragment => DropReason::TunnelFragment,
            OuterError::Truncated => DropReason::TunnelTruncated,
            OuterError::GreVersion => DropReason::TunnelGreVersion,
            OuterError::GreFlags => DropReason::TunnelGreFlags,
            OuterError::GreChecksum => DropReason::TunnelGreChecksum,
            OuterError::NotIpv4 => DropReason::TunnelNotIpv4,
        }
    }
}

/// True for the protocols natgw decapsulates.
#[inline]
pub(super) fn is_tunnel_proto(proto: u8) -> bool {
    proto == IPPROTO_IPIP || proto == IPPROTO_GRE
}

impl Engine {
    /// Counters of every tunnel, for `natgw stats`.
    pub fn tunnel_stats(&self) -> Vec<TunnelStats> {
        self.tunnels.stats()
    }

    /// The tunnel interface `id` names, if it is one.
    pub fn tunnel(&self, id: IfId) -> Option<&Tunnel> {
        self.tunnels.get(id).map(|(_, t)| t)
    }

    /// The tunnel a flow's packets leave by, either way (for listings).
    pub fn flow_tunnel(&self, r: &crate::conntrack::FlowRecord) -> Option<&str> {
        if self.tunnels.list.is_empty() {
            return None;
        }
        let mark = crate::nat::nat_flags::mark_of(r.flags);
        // The original direction leaves as the reply tuple inverted, the
        // reply direction as the original tuple inverted.
        let orig_out = self.route_from(r.reply.src, r.orig.src, 0);
        let reply_out = self.route_from(r.orig.src, r.reply.src, mark);
        [orig_out, reply_out]
            .into_iter()
            .flatten()
            .find_map(|h| self.tunnel(h.oif))
            .map(|t| t.name.as_str())
    }

    /// The address natgw speaks from on interface `id` (a tunnel: its
    /// local address), or 0 when there is no such interface.
    pub(super) fn if_addr(&self, id: IfId) -> u32 {
        match self.interface(id) {
            Some(i) => i.addr.addr,
            None => self.tunnel(id).map_or(0, |t| t.local),
        }
    }

    /// An IPIP/GRE packet to one of the gateway's addresses: decapsulate it
    /// when it comes from a tunnel's remote, then process the inner
    /// datagram as received on that tunnel.
    pub(super) fn decapsulate(
        &self,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        link: Link,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        let k = self.tunnels.find(p.tuple.src, p.tuple.dst, p.tuple.proto);
        let o = match tunnel::outer(&buf[..len], p) {
            Ok(o) => o,
            Err(e) => {
                return match k {
                    Some(k) => self.tunnels.drop(k, e.into()),
                    None => Verdict::Drop(e.into()),
                };
            }
        };
        let Some(k) = k else {
            return Verdict::Drop(DropReason::TunnelUnknown);
        };
        let (t, tc) = &self.tunnels.list[k];
        let key_ok = match t.mode {
            Mode::Ipip => true,
            Mode::Gre { key } => key == o.key,
        };
        if !key_ok {
            return self.tunnels.drop(k, DropReason::TunnelKey);
        }
        // Inner IPv4 header (20 bytes at least: `outer` checked) carrying a
        // tunnel protocol to us again: natgw decapsulates one level only.
        let ip = &buf[o.inner..o.end];
        let inner_dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        if is_tunnel_proto(ip[9]) && self.is_local(inner_dst) {
            return self.tunnels.drop(k, DropReason::TunnelNested);
        }
        let new_len = tunnel::decap(buf, p.l3, &o);
        tc.rx_packets.fetch_add(1, Relaxed);
        tc.rx_bytes.fetch_add((new_len - p.l3) as u64, Relaxed);
        let iif = self.tunnels.base + k as IfId;
        match self.process_inner(buf, new_len, link, iif, now, c) {
            Verdict::Forward { oif, next_hop } => Verdict::Reply {
                oif,
                next_hop,
                len: new_len,
            },
            v @ Verdict::Reply { .. } => v,
            Verdict::Local | Verdict::Pass => self.tunnels.drop(k, DropReason::TunnelInnerLocal),
            Verdict::Drop(r) => self.tunnels.drop(k, r),
            // Decapsulated in place: held, it is run again as the inner
            // datagram arriving on the tunnel.
            Verdict::HoldFragment { key, .. } => Verdict::HoldFragment {
                key,
                again_as: Some((iif, new_len)),
            },
        }
    }

    /// Before a datagram routed to `hop` is translated: when `hop` is a
    /// tunnel the datagram does not fit, the verdict to give instead (ICMP
    /// fragmentation-needed back to the sender for a DF datagram, a drop
    /// otherwise).
    pub(super) fn tunnel_too_big(
        &self,
        buf: &mut [u8],
        p: &Parsed,
        hop: NextHop,
        iif: IfId,
        now: Time,
        c: &Counters,
    ) -> Option<Verdict> {
        let (k, t) = self.tunnels.get(hop.oif)?;
        if p.end - p.l3 <= usize::from(t.mtu) {
            return None;
        }
        // Counted as dropped for the tunnel whether or not the sender is
        // told (the datagram does not go through).
        let dropped = self.tunnels.drop(k, DropReason::TunnelTooBig);
        let df = tunnel::dont_fragment(buf, p);
        // Never answer an ICMP error with another.
        if !df || matches!(p.kind, crate::packet::L4::IcmpError { .. }) || !self.icmp_allowed(now) {
            return Some(dropped);
        }
        let from = self.if_addr(iif);
        let Some(back) = self.route_from(p.tuple.src, p.tuple.dst, 0) else {
            return Some(Verdict::Drop(DropReason::NoRoute));
        };
        let mtu = t.mtu;
        let Some(len) = tunnel::build_frag_needed(buf, p, from, mtu) else {
            return Some(dropped);
        };
        Counters::bump(&c.frag_needed_sent);
        Some(self.output(buf, p.l3, len, back))
    }

    /// The verdict for a datagram at `l3..end` of `buf`, routed to `hop`
    /// and ready to leave: sent as it is, or encapsulated when `hop` is a
    /// tunnel and sent towards the tunnel's remote.
    pub(super) fn output(&self, buf: &mut [u8], l3: usize, end: usize, hop: NextHop) -> Verdict {
        let Some((k, t)) = self.tunnels.get(hop.oif) else {
            return Verdict::Reply {
                oif: hop.oif,
                next_hop: hop.addr,
                len: end,
            };
        };
        // The outer datagram goes by the main table, never into a tunnel.
        let under = match self.route(t.remote) {
            Some(h) if self.tunnels.get(h.oif).is_none() => h,
            _ => return self.tunnels.drop(k, DropReason::TunnelNoRoute),
        };
        let Some(len) = tunnel::encap(buf, l3, end, t.mode, t.local, t.remote) else {
            return self.tunnels.drop(k, DropReason::TunnelTooBig);
        };
        let tc = &self.tunnels.list[k].1;
        tc.tx_packets.fetch_add(1, Relaxed);
        tc.tx_bytes.fetch_add((end - l3) as u64, Relaxed);
        Verdict::Reply {
            oif: under.oif,
            next_hop: under.addr,
            len,
        }
    }
}
