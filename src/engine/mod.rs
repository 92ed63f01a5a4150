//! The per-packet pipeline: parse, track, classify new flows, translate,
//! route, and return a [`Verdict`] for the I/O shell to carry out.
//!
//! `Engine::process` is the whole data path of a worker. It is pure in the
//! sense of the crate docs: frame bytes and `now` in, a verdict out; the
//! engine's state (flow table, NAT state, ruleset) is shared by all
//! workers and needs no lock held across a batch.
//!
//! Order of work for one packet, mirroring Linux's netfilter hooks:
//! 1. parse; non-IPv4 is passed or dropped (IPv6 by config);
//! 2. TTL check (a router's job): expiring packets get ICMP time-exceeded;
//! 3. flow lookup by tuple (either direction) — the fast path ends here
//!    with an in-place rewrite to the other direction's inverse tuple;
//! 4. on a miss: destination phase of the rules, route lookup, source phase
//!    of the rules, outside address/port choice, insert (both tuples);
//! 5. ICMP errors are matched on the datagram they quote and translated
//!    inside and out; non-first fragments reuse their first fragment's
//!    translation.

mod changes;
mod frag;
mod route;
mod sessions;
mod stats;
mod tunnel;

pub use changes::{CHANGE_RING_CAP, ChangeLog, LaneRings};
pub use sessions::{SESSION_RING_CAP, SessionEvent, SessionEventKind, SessionLog};

pub use frag::{FRAG_TIMEOUT_SECS, FragKey, FragTable};
pub use route::{Interface, NextHop, PolicyRoute, Role, Route, RouteTable, SharedRoutes};
pub use stats::{CounterSnapshot, Counters, DropReason};
pub use tunnel::{Tunnel, TunnelStats, set_tunnel_mtus};

use crate::conntrack::{
    FlowRecord, FlowTable, Lookup, NewFlow, PacketInfo, TcpSeg, TcpState, Time, Timeouts, flags,
};
use crate::lb::{ConnState, Forward, LbTable, NewConn, RealIds, RealState, ServiceStatus};
use crate::nat::{
    AllocError, DstNat, IfId, Meta, NatState, PortRange, Ruleset, Sets, Source, SrcNat, SrcRequest,
    nat_flags,
};
use crate::packet::{
    self, EtherKind, Frag, IcmpErrorInfo, L4, Link, ParseError, Parsed, Tuple, proto,
};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// What to do with IPv6 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Policy {
    /// Hand them to the host stack untranslated (counted as `passed`).
    Pass,
    /// Drop them (counted as `ipv6`).
    Drop,
}

/// What to do with new flows that no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Route them untranslated (Linux with `ip_forward=1` and no NAT rule).
    Forward,
    /// Drop them (counted as `unmatched`).
    Drop,
}

/// Everything the engine needs besides the ruleset.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub timeouts: Timeouts,
    pub max_flows: u32,
    /// Evict an unassured flow when the table is full (conntrack early drop).
    pub early_drop: bool,
    pub ipv6: Ipv6Policy,
    pub unmatched: Unmatched,
    /// Source-NAT DNATed flows that leave by the interface they came in on
    /// to that interface's address, so the server replies via natgw.
    pub hairpin: bool,
    /// ICMP errors natgw itself may send per second (time exceeded).
    pub icmp_rate: u32,
    /// Keys port choice and the load-balancing hashes (the same on both
    /// HA nodes and across a handover, so `sh`/`mh` pick the same server
    /// and a replay gives the same ports), and, mixed with a value each
    /// engine draws, the flow table's hash (so outsiders cannot aim
    /// colliding tuples at one shard: nothing outside the process knows
    /// the key; flows move between processes as records, never as a
    /// hash layout).
    pub seed: u64,
    /// IPIP/GRE tunnels natgw terminates; interface ids
    /// `interfaces.len()..` (see `engine/tunnel.rs`).
    pub tunnels: Vec<Tunnel>,
    /// Routes taken only from a source prefix or with a flow mark.
    pub policy_routes: Vec<PolicyRoute>,
    /// Live flows one source address may start (`None`: no limit);
    /// the only `[limits]` field a reload changes.
    pub flows_per_source: Option<u32>,
    /// `[gateway] tcp_window = "liberal"`: TCP segments are never refused
    /// for their window (Linux `nf_conntrack_tcp_be_liberal`).
    pub tcp_liberal: bool,
    /// `[gateway] tcp_loose`: a TCP segment other than a SYN may start a
    /// flow (picking up a connection mid-stream, Linux
    /// `nf_conntrack_tcp_loose`); off, it is dropped (`tcp_not_syn`).
    pub tcp_loose: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            interfaces: Vec::new(),
            routes: Vec::new(),
            timeouts: Timeouts::default(),
            max_flows: 262_144,
            early_drop: true,
            ipv6: Ipv6Policy::Pass,
            unmatched: Unmatched::Forward,
            hairpin: true,
            icmp_rate: 1000,
            seed: 0x6e61_7467_7700_0001,
            tunnels: Vec::new(),
            policy_routes: Vec::new(),
            flows_per_source: None,
            tcp_liberal: false,
            tcp_loose: true,
        }
    }
}

/// What the I/O shell must do with the frame.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the rewritten frame out of `oif` to `next_hop` (resolve its
    /// link-layer address; fill in the Ethernet header).
    Forward {
        oif: IfId,
        next_hop: u32,
    },
    /// The frame was replaced by a reply of `len` bytes (from the start of
    /// the buffer); send it like `Forward`.
    Reply {
        oif: IfId,
        next_hop: u32,
        len: usize,
    },
    /// Addressed to the gateway itself and not a NAT flow.
    Local,
    /// Not for natgw (ARP, IPv6 when passed): give it to the host unchanged.
    Pass,
    Drop(DropReason),
    /// A non-first fragment whose first fragment has not been translated
    /// yet (out of order). Keep the frame (bounded) and run it through
    /// [`Engine::process`] again once [`Engine::fragment_ready`]`(key)`,
    /// or drop it counted as `frag_timeout` / `frag_hold_full`. A caller
    /// that cannot hold frames drops it as `frag_no_flow`. Nothing is
    /// counted yet.
    HoldFragment {
        key: FragKey,
        /// `None`: the frame is unchanged, run it again as received.
        /// `Some((iif, len))`: it came through a tunnel and is now
        /// decapsulated in place (tunnel counters done): run its first
        /// `len` bytes again as arriving on the tunnel's interface `iif`.
        again_as: Option<(IfId, usize)>,
    },
}

/// The NAT gateway's data path and shared state.
pub struct Engine {
    cfg: EngineConfig,
    routes: SharedRoutes,
    /// Address ranges the gateway owns: interface addresses, their
    /// `extra` addresses, SNAT pools and netmap outside prefixes.
    local: ArcSwap<Vec<(u32, u32)>>,
    table: FlowTable,
    nat: NatState,
    ruleset: ArcSwap<Ruleset>,
    sets: ArcSwap<Sets>,
    /// Virtual services (LVS-NAT); checked before the destination rules.
    lb: ArcSwap<LbTable>,
    /// Real servers by the id a load-balanced flow's mark carries (its
    /// upper 16 bits; see [`lb_mark`]), so each packet adds to its
    /// server's traffic counters without a lookup.
    reals: RealIds,
    frags: FragTable,
    tunnels: tunnel::Tunnels,
    icmp_window: AtomicU64,
    icmp_sent: AtomicU32,
    /// HA standby (`natgw ha role backup|fault`): transit packets are
    /// dropped (counted `standby`), only the interfaces' own addresses are
    /// answered. False without `[ha]`.
    standby: AtomicBool,
    /// Flow-change notices for the HA sync thread (off without `[ha]`).
    changes: ChangeLog,
    /// NAT session log events (off without `[logging]`).
    sessions: SessionLog,
}

impl Engine {
    pub fn new(cfg: EngineConfig, ruleset: Ruleset, sets: Sets) -> Engine {
        let routes = RouteTable::with_policy(&cfg.interfaces, &cfg.routes, &cfg.policy_routes);
        let local = local_ranges(&cfg, &ruleset, &[]);
        let table = FlowTable::new(cfg.max_flows, cfg.timeouts, table_seed(&cfg));
        table.set_source_limit(cfg.flows_per_source);
        table.set_liberal(cfg.tcp_liberal);
        Engine {
            table,
            nat: NatState::new(cfg.seed.rotate_left(29)),
            routes: SharedRoutes::new(routes),
            local: ArcSwap::from_pointee(local),
            ruleset: ArcSwap::from_pointee(ruleset),
            sets: ArcSwap::from_pointee(sets),
            lb: ArcSwap::from_pointee(LbTable::new(cfg.seed.rotate_left(13))),
            reals: RealIds::default(),
            frags: FragTable::new(4096),
            tunnels: tunnel::Tunnels::new(cfg.interfaces.len(), &cfg.tunnels),
            icmp_window: AtomicU64::new(0),
            icmp_sent: AtomicU32::new(0),
            standby: AtomicBool::new(false),
            changes: ChangeLog::default(),
            sessions: SessionLog::default(),
            cfg,
        }
    }

    /// Makes this node an HA standby (`true`: forward nothing) or active.
    pub fn set_standby(&self, on: bool) {
        self.standby.store(on, Relaxed);
    }

    /// True while this node is an HA standby.
    pub fn standby(&self) -> bool {
        self.standby.load(Relaxed)
    }

    /// The flow-change notices HA sync reads.
    pub fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    /// The NAT session log's events (see [`SessionLog`]).
    pub fn sessions(&self) -> &SessionLog {
        &self.sessions
    }

    /// True if `a` is the primary address of one of the interfaces (what a
    /// standby still answers).
    pub fn is_interface_addr(&self, a: u32) -> bool {
        self.cfg.interfaces.iter().any(|i| i.addr.addr == a)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    pub fn nat(&self) -> &NatState {
        &self.nat
    }

    /// The address sets by name (the map a reload may replace).
    pub fn sets(&self) -> Arc<Sets> {
        self.sets.load_full()
    }

    pub fn ruleset(&self) -> Arc<Ruleset> {
        self.ruleset.load_full()
    }

    /// The virtual services in force.
    pub fn lb(&self) -> Arc<LbTable> {
        self.lb.load_full()
    }

    /// Replaces the virtual services atomically (build the new table from
    /// the current one with `LbTable::apply`/`build` so runtime state
    /// carries over). Existing flows keep their real server.
    pub fn swap_lb(&self, t: LbTable) {
        self.local.store(Arc::new(local_ranges(
            &self.cfg,
            &self.ruleset.load(),
            &t.vips(),
        )));
        self.lb.store(Arc::new(t));
    }

    /// `ipvsadm -L -n --stats`: services with their servers' counters,
    /// packets and bytes including live flows.
    pub fn services(&self, now: Time) -> Vec<ServiceStatus> {
        // Servers' packets and bytes are counted as packets pass (see
        // `reals`): no walk over the flow table here.
        self.lb.load().status(now)
    }

    /// Puts back a flow from a snapshot (its `expires` already moved onto
    /// this process's clock): the flow table entry and its real server's
    /// connection count. The NAT side (port usage, EIM references) is the
    /// caller's, through [`NatState`].
    pub fn restore_flow(&self, r: &FlowRecord) -> Result<(), crate::conntrack::InsertError> {
        self.restore_flow_over(r, None)
    }

    /// [`restore_flow`](Engine::restore_flow) of a newer copy of a flow
    /// that `prev` was (taken out with [`take_flow`](Engine::take_flow)):
    /// its real server's traffic grows by the difference only.
    pub fn restore_flow_over(
        &self,
        r: &FlowRecord,
        prev: Option<&FlowRecord>,
    ) -> Result<(), crate::conntrack::InsertError> {
        if !r.has(nat_flags::LB) {
            self.table.insert_record(r)?;
            return Ok(());
        }
        // The mark's server id is the writing process's: give the flow
        // this process's id of its server.
        let st = self.lb_real(&r.orig, &r.reply);
        let id = st.as_ref().map_or(0, |st| self.reals.id_of(st));
        let rec = FlowRecord {
            mark: lb_mark(id, r.mark),
            ..r.clone()
        };
        self.table.insert_record(&rec)?;
        if let Some(st) = st {
            st.transition(None, Some(ConnState::of(r.orig.proto, r.tcp_state)));
            let (p0, b0) = prev.map_or(([0; 2], [0; 2]), |p| (p.packets, p.bytes));
            st.add_traffic(
                [
                    r.packets[0].saturating_sub(p0[0]),
                    r.packets[1].saturating_sub(p0[1]),
                ],
                [
                    r.bytes[0].saturating_sub(b0[0]),
                    r.bytes[1].saturating_sub(b0[1]),
                ],
            );
        }
        Ok(())
    }

    /// Removes the flow whose original tuple is `orig`, with everything
    /// that goes with it (port, EIM references, real-server counts).
    /// Returns whether there was one. State moving between processes
    /// (snapshot restore, HA sync) uses it: not logged as the flow's end.
    pub fn remove_flow(&self, orig: &Tuple) -> bool {
        self.take_flow(orig).is_some()
    }

    /// [`remove_flow`](Engine::remove_flow), returning the flow removed.
    pub fn take_flow(&self, orig: &Tuple) -> Option<FlowRecord> {
        let id = self.table.find(orig)?;
        let r = self.table.remove(id, None)?;
        self.release(&r);
        Some(r)
    }

    /// [`release`](Self::release) of a flow that ended at `now` (`Time(0)`:
    /// unknown): also logged, unless this node is an HA standby.
    fn end(&self, r: &FlowRecord, lane: usize, now: Time) {
        self.release(r);
        if !self.standby() {
            self.sessions.deleted(lane, r, now);
        }
    }

    /// Everything that must happen when a flow goes: its outside port and
    /// EIM references go back to the pool, its real server's counts drop.
    fn release(&self, r: &FlowRecord) {
        self.nat.release(r);
        if r.has(nat_flags::LB)
            && let Some(st) = self.lb_real(&r.orig, &r.reply)
        {
            st.transition(Some(ConnState::of(r.orig.proto, r.tcp_state)), None);
            // A flow with a server id had each packet counted already.
            if r.mark >> 16 == 0 {
                st.add_traffic(r.packets, r.bytes);
            }
        }
    }

    /// The shared state of the real server a load-balanced flow went to
    /// (also when the server was removed and still has connections).
    fn lb_real(&self, orig: &Tuple, reply: &Tuple) -> Option<Arc<crate::lb::RealState>> {
        let lb = self.lb.load();
        let svc = lb.lookup(orig.dst, orig.dport, orig.proto)?;
        svc.real_state(reply.src, reply.sport)
            .or_else(|| svc.real_state(reply.src, 0))
            .cloned()
    }

    /// A TCP flow of a virtual service changed state: move its count
    /// between active and inactive.
    #[cold]
    fn lb_transition(&self, orig: &Tuple, reply: &Tuple, from: TcpState, to: TcpState) {
        if let Some(st) = self.lb_real(orig, reply) {
            st.transition(
                Some(ConnState::of(orig.proto, from)),
                Some(ConnState::of(orig.proto, to)),
            );
        }
    }

    /// Replaces the ruleset atomically. Existing flows keep their
    /// translation; the next new flow sees the new rules.
    pub fn swap_ruleset(&self, rs: Ruleset) {
        self.local.store(Arc::new(local_ranges(
            &self.cfg,
            &rs,
            &self.lb.load().vips(),
        )));
        self.ruleset.store(Arc::new(rs));
    }

    pub fn interface(&self, id: IfId) -> Option<&Interface> {
        self.cfg.interfaces.get(id as usize)
    }

    pub fn interface_id(&self, name: &str) -> Option<IfId> {
        self.cfg
            .interfaces
            .iter()
            .position(|i| i.name == name)
            .map(|i| i as IfId)
    }

    pub fn route(&self, dst: u32) -> Option<NextHop> {
        self.routes.with(|t| t.lookup(dst))
    }

    /// The route of a packet to `dst` from `src` (before translation)
    /// with `mark`: policy routes first, then the main table. The mark is
    /// the flow's for packets of its reply direction and 0 otherwise, as
    /// Linux's `CONNMARK --restore-mark` on the reply path + `ip rule
    /// fwmark M` steers the replies of a marked connection.
    #[inline]
    pub fn route_from(&self, dst: u32, src: u32, mark: u8) -> Option<NextHop> {
        self.routes.with(|t| t.lookup_from(dst, src, mark))
    }

    /// Replaces the routing table (e.g. after reading the kernel's).
    pub fn set_routes(&self, extra: &[Route]) {
        self.set_routes_policy(extra, self.routes.load().policy());
    }

    /// Replaces the routing table, policy routes included.
    pub fn set_routes_policy(&self, extra: &[Route], policy: &[PolicyRoute]) {
        let before = self.routes.version();
        self.routes
            .store(RouteTable::with_policy(&self.cfg.interfaces, extra, policy));
        // Flows cache next hops tagged with the low bits of a version: when
        // those bits wrap, old tags could match again, so they go.
        if before >> crate::conntrack::HOP_TAG_BITS
            != self.routes.version() >> crate::conntrack::HOP_TAG_BITS
        {
            self.table.clear_hops();
        }
    }

    /// True for addresses the gateway owns (see [`local_ranges`]).
    #[inline]
    pub fn is_local(&self, a: u32) -> bool {
        self.local.load().iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    /// Handles one frame of `len` bytes at the start of `buf` (the rest of
    /// `buf` is room for a reply), received on `iif`.
    pub fn process(
        &self,
        buf: &mut [u8],
        len: usize,
        link: Link,
        iif: IfId,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        let v = self.process_inner(buf, len.min(buf.len()), link, iif, now, c);
        match v {
            Verdict::Drop(r) => c.drop(r),
            Verdict::Local => Counters::bump(&c.local),
            Verdict::Pass => Counters::bump(&c.passed),
            Verdict::Forward { .. } | Verdict::Reply { .. } | Verdict::HoldFragment { .. } => {}
        }
        v
    }

    /// True once the first fragment of datagram `key` was translated (a
    /// held later fragment of it now goes through [`process`](Self::process)).
    pub fn fragment_ready(&self, key: FragKey, now: Time) -> bool {
        self.frags.lookup(key, now).is_some()
    }

    fn process_inner(
        &self,
        buf: &mut [u8],
        len: usize,
        link: Link,
        iif: IfId,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        // Matched by reference: moving the parsed headers out of the
        // Result copied them (~66 instructions a packet under callgrind:
        // 909 -> 843 per UDP packet, perf/core-microbench.md).
        let parsed = packet::parse(&buf[..len], link);
        let p = match &parsed {
            Ok(p) => p,
            Err(ParseError::NotIpv4(EtherKind::Arp)) => return Verdict::Pass,
            Err(ParseError::NotIpv4(EtherKind::Ipv6)) => {
                return match self.cfg.ipv6 {
                    Ipv6Policy::Pass => Verdict::Pass,
                    Ipv6Policy::Drop => Verdict::Drop(DropReason::Ipv6),
                };
            }
            Err(e) => return Verdict::Drop((*e).into()),
        };
        // 224.0.0.0/4 and 255.255.255.255: link-local chatter (IGMP, mDNS, ...).
        if p.tuple.dst >> 28 == 0xe || p.tuple.dst == u32::MAX {
            return Verdict::Drop(DropReason::NotUnicast);
        }
        if self.standby.load(Relaxed) && !self.is_interface_addr(p.tuple.dst) {
            return Verdict::Drop(DropReason::Standby);
        }
        // IPIP/GRE to the gateway: natgw is the tunnel endpoint, unless the
        // packet comes from no configured tunnel's remote and is the reply
        // of a NAT flow (an inside host's own GRE/IPIP, passed through as
        // Linux's NAT does).
        if tunnel::is_tunnel_proto(p.tuple.proto)
            && self.is_local(p.tuple.dst)
            && (self
                .tunnels
                .find(p.tuple.src, p.tuple.dst, p.tuple.proto)
                .is_some()
                || self.table.peek(&p.tuple, now).is_none())
        {
            return self.decapsulate(buf, len, p, link, now, c);
        }
        if p.ttl <= 1 {
            return self.ttl_expired(buf, p, iif, now, c);
        }
        if p.frag == Frag::Later {
            return self.later_fragment(buf, len, p, now, c);
        }
        // Built in place, one arm per kind, and lent to the table: built
        // from a `(flags, seg)` pair and moved in by value, it was copied
        // twice a packet (~20 instructions under callgrind).
        let dlen = (p.end - p.l3) as u32;
        let info = match p.kind {
            L4::Tcp { flags } => PacketInfo {
                tcp_flags: Some(flags),
                len: dlen,
                seg: TcpSeg::parse(&buf[p.l4..p.end]),
            },
            L4::IcmpError { .. } => {
                return match p.icmp_error_info(&buf[..len]) {
                    Some(e) => self.icmp_error(buf, len, p, &e, now, c),
                    None => Verdict::Drop(DropReason::IcmpInnerBad),
                };
            }
            _ => PacketInfo {
                tcp_flags: None,
                len: dlen,
                seg: None,
            },
        };
        // The flow's cached next hop is taken while the routing table it
        // was looked up in is the published one (see `route::pack_hop`).
        let route_tag = route::hop_tag(self.routes.version());
        let src = p.tuple.src;
        // The packet leaves to the other direction's source.
        let fill = |dir, to: u32, flags: u32| {
            let mark = match dir {
                crate::conntrack::Dir::Reply => nat_flags::mark_of(flags),
                crate::conntrack::Dir::Orig => 0,
            };
            self.routes.with(|t| {
                t.lookup_from(to, src, mark)
                    .map_or(0, |hop| route::pack_hop(hop, t.version()))
            })
        };
        let out = match self
            .table
            .track_routed(&p.tuple, &info, now, route_tag, fill)
        {
            Lookup::OutOfWindow => return Verdict::Drop(DropReason::TcpOutOfWindow),
            Lookup::Hit(h) if !self.lb_reuse(&h) => {
                if h.tcp_invalid {
                    Counters::bump(&c.tcp_invalid);
                }
                if let Some((from, to)) = h.tcp_change {
                    let (orig, reply) = match h.dir {
                        crate::conntrack::Dir::Orig => (p.tuple, h.other),
                        crate::conntrack::Dir::Reply => (h.other, p.tuple),
                    };
                    self.changes.note(c.lane(), orig);
                    if h.flags & nat_flags::LB != 0 {
                        self.lb_transition(&orig, &reply, from, to);
                    }
                }
                if h.flags & nat_flags::LB != 0
                    && let Some(st) = self.reals.get((h.mark >> 16) as u16)
                {
                    st.count(c.lane(), h.dir.index(), info.len as u64);
                }
                Counters::bump(&c.fast_path);
                // A flow's mark routes its replies (see `route_from`).
                let mark = match h.dir {
                    crate::conntrack::Dir::Reply => nat_flags::mark_of(h.flags),
                    crate::conntrack::Dir::Orig => 0,
                };
                (h.other.invert(), mark, h.hop)
            }
            // No live flow for the packet, or one that must give way: an
            // expired one, or a finished load-balanced connection that a
            // client reopens with the same 4-tuple (SYN on TIME_WAIT or
            // CLOSE), which is scheduled afresh, as IPVS's conn_reuse_mode
            // 1 does, rather than pinned to the old one's server.
            stale => {
                let old = match stale {
                    Lookup::Hit(h) => Some((h.id, None)),
                    Lookup::Expired(id) => Some((id, Some(now))),
                    Lookup::Miss | Lookup::OutOfWindow => None,
                };
                if let Some((id, if_expired)) = old
                    && let Some(r) = self.table.remove(id, if_expired)
                {
                    self.end(&r, c.lane(), now);
                }
                match self.new_flow(p, iif, info, now, c) {
                    Ok(t) => {
                        self.changes.note(c.lane(), p.tuple);
                        (t, 0, 0)
                    }
                    Err(v) => return v,
                }
            }
        };
        let (out, mark, cached) = out;
        let hop = if cached != 0 {
            route::unpack_hop(cached)
        } else {
            let Some(hop) = self.route_from(out.dst, p.tuple.src, mark) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            hop
        };
        let tunneled = self.tunnel(hop.oif).is_some();
        if tunneled && let Some(v) = self.tunnel_too_big(buf, p, hop, iif, now, c) {
            return v;
        }
        packet::rewrite_tuple(&mut buf[..len], p, &out);
        if p.frag == Frag::First {
            let key = (p.tuple.src, p.tuple.dst, p.tuple.proto, p.ip_id);
            self.frags.record(key, out.src, out.dst, now);
        }
        if tunneled {
            return self.output(buf, p.l3, p.end, hop);
        }
        Verdict::Forward {
            oif: hop.oif,
            next_hop: hop.addr,
        }
    }

    /// True when `h` is a SYN that reopened a finished load-balanced TCP
    /// connection (TIME_WAIT or CLOSE to SYN_SENT).
    fn lb_reuse(&self, h: &crate::conntrack::Hit) -> bool {
        h.flags & nat_flags::LB != 0
            && h.dir == crate::conntrack::Dir::Orig
            && matches!(
                h.tcp_change,
                Some((TcpState::TimeWait | TcpState::Close, TcpState::SynSent))
            )
    }

    /// Creates the flow of a packet that matched none; returns the tuple
    /// the packet leaves with, or the verdict to give instead.
    fn new_flow(
        &self,
        p: &Parsed,
        iif: IfId,
        info: PacketInfo,
        now: Time,
        c: &Counters,
    ) -> Result<Tuple, Verdict> {
        let key = p.tuple;
        let PacketInfo { tcp_flags, seg, .. } = info;
        match p.kind {
            L4::Tcp { flags } if flags & crate::conntrack::TCP_RST != 0 => {
                return Err(Verdict::Drop(DropReason::TcpRstNoFlow));
            }
            L4::Tcp { flags }
                if !self.cfg.tcp_loose
                    && flags & (crate::conntrack::TCP_SYN | crate::conntrack::TCP_ACK)
                        != crate::conntrack::TCP_SYN =>
            {
                return Err(Verdict::Drop(DropReason::TcpNotSyn));
            }
            L4::IcmpEcho if p.icmp_type == packet::ICMP_ECHO_REPLY => {
                return Err(Verdict::Drop(DropReason::IcmpReplyNoFlow));
            }
            _ => {}
        }
        // Per-source limit: refuse before a port is chosen (the table's
        // insert decides exactly; this spares a limited source's flood
        // the NAT work).
        if self.table.sources().full(key.src) {
            return Err(self.source_refused(&key, now, c));
        }
        let len = (p.end - p.l3) as u32;
        let mut base = NewFlow {
            orig: key,
            reply: key.invert(),
            tcp_flags,
            seg,
            flags: 0,
            mark: 0,
            len,
        };

        // Endpoint-independent filtering: a remote reaching an EIM mapping.
        if key.proto == proto::UDP
            && self.is_local(key.dst)
            && let Some(inside) = self.nat.eif_target(key.dst, key.dport)
        {
            return self.eif_flow(&base, inside, now, c);
        }

        let rs = self.ruleset.load();
        let meta = Meta {
            tuple: key,
            iif,
            oif: None,
            now,
            mark: 0,
        };
        // Virtual services come before the destination rules (IPVS sees
        // packets to a VIP first too).
        let lb = self.lb.load();
        let svc = match key.proto {
            proto::TCP | proto::UDP if !lb.is_empty() => lb.lookup(key.dst, key.dport, key.proto),
            _ => None,
        };
        let mut real = None;
        let (dnat, pre_rule) = match svc {
            Some(svc) => {
                if let Some(f) = tcp_flags
                    && (f & crate::conntrack::TCP_SYN == 0 || f & crate::conntrack::TCP_ACK != 0)
                {
                    return Err(Verdict::Drop(DropReason::LbNotSyn));
                }
                let conn = NewConn {
                    client: key.src,
                    client_port: key.sport,
                    dst: key.dst,
                    dst_port: key.dport,
                };
                let Some(i) = svc.schedule_conn(&conn, now) else {
                    return Err(Verdict::Drop(DropReason::LbNoServer));
                };
                let r = svc.real(i);
                real = Some((r, svc.forward));
                base.flags |= nat_flags::LB;
                let port = (r.port != 0).then_some(r.port);
                (DstNat::To { addr: r.addr, port }, None)
            }
            None => rs.dst_nat(&meta),
        };
        let set_mark = |flags: &mut u32, rule: Option<usize>| {
            if let Some(m) = rule
                .and_then(|i| rs.rules.get(i))
                .and_then(|r| r.m.set_mark)
            {
                *flags = (*flags & !nat_flags::MARK_MASK) | (u32::from(m) << nat_flags::MARK_SHIFT);
            }
        };
        set_mark(&mut base.flags, pre_rule);
        let (mut dst, mut dport) = (key.dst, key.dport);
        match dnat {
            DstNat::Drop => return Err(Verdict::Drop(DropReason::RuleDrop)),
            DstNat::To { addr, port } => {
                dst = addr;
                if let (Some(pt), proto::TCP | proto::UDP) = (port, key.proto) {
                    dport = pt;
                }
                base.flags |= nat_flags::DNAT;
            }
            DstNat::None => {
                if self.is_local(dst) {
                    return Err(Verdict::Local);
                }
            }
        }
        let Some(hop) = self.route_from(dst, key.src, 0) else {
            return Err(Verdict::Drop(DropReason::NoRoute));
        };
        let meta = Meta {
            tuple: Tuple { dst, dport, ..key },
            iif,
            oif: Some(hop.oif),
            now,
            mark: nat_flags::mark_of(base.flags),
        };
        let (snat, post_rule) = rs.src_nat(&meta);
        set_mark(&mut base.flags, post_rule);
        let default_ports = match p.kind {
            L4::Tcp { .. } | L4::Udp => PortRange::NAT_DEFAULT,
            L4::IcmpEcho => PortRange::ICMP_IDS,
            _ => PortRange { lo: 0, hi: 0 },
        };
        let has_ports = matches!(p.kind, L4::Tcp { .. } | L4::Udp);
        // An explicit range binds TCP/UDP; otherwise the inside port is
        // kept when free (Linux keeps privileged ports like 123 too).
        let ports_of = |r: Option<PortRange>| match r {
            Some(r) if has_ports => (r, false),
            _ => (default_ports, true),
        };
        let iface_addr = |i: IfId| self.if_addr(i);
        let keep = |translated| SrcRequest {
            source: Source::Addr(key.src),
            ports: default_ports,
            keep_any: true,
            eim: false,
            eif: false,
            translated,
        };
        let req = match snat {
            SrcNat::Drop => return Err(Verdict::Drop(DropReason::RuleDrop)),
            SrcNat::Snat(s) => SrcRequest {
                source: Source::Pool {
                    pool: &s.pool,
                    persistent: s.persistent,
                },
                ports: ports_of(s.ports).0,
                keep_any: ports_of(s.ports).1,
                eim: s.eim,
                eif: s.eif,
                translated: true,
            },
            SrcNat::Masquerade(s) => SrcRequest {
                source: Source::Addr(iface_addr(hop.oif)),
                ports: ports_of(s.ports).0,
                keep_any: ports_of(s.ports).1,
                eim: s.eim,
                eif: s.eif,
                translated: true,
            },
            SrcNat::Addr(a) => SrcRequest {
                source: Source::Addr(a),
                ..keep(true)
            },
            SrcNat::Accept | SrcNat::Unmatched
                if self.cfg.hairpin && base.flags & nat_flags::DNAT != 0 && hop.oif == iif =>
            {
                base.flags |= nat_flags::HAIRPIN;
                SrcRequest {
                    source: Source::Addr(iface_addr(iif)),
                    ..keep(true)
                }
            }
            _ if matches!(real, Some((_, Forward::Fullnat))) => SrcRequest {
                source: Source::Addr(iface_addr(hop.oif)),
                ..keep(true)
            },
            SrcNat::Unmatched
                if pre_rule.is_none()
                    && real.is_none()
                    && self.cfg.unmatched == Unmatched::Drop =>
            {
                return Err(Verdict::Drop(DropReason::Unmatched));
            }
            SrcNat::Accept | SrcNat::Unmatched => keep(false),
        };
        let rule_no = |r: Option<usize>| r.map_or(0, |i| i as u32 + 1);
        base.mark = (rule_no(pre_rule) << 16) | rule_no(post_rule);
        // A load-balanced flow has no destination rule: the upper half
        // names its real server instead.
        let real_state: Option<&RealState> = real.map(|(r, _)| r.state());
        if let Some((r, _)) = real {
            base.mark = lb_mark(self.reals.id_of(r.state_arc()), base.mark);
        }

        let mut evicted = false;
        loop {
            match self.nat.create(&self.table, &base, dst, dport, &req, now) {
                Ok((_, reply)) => {
                    Counters::bump(&c.flows_created);
                    self.sessions.created(c.lane(), key, reply, now, len);
                    if let Some(st) = real_state {
                        st.count_conn();
                        st.transition(None, Some(ConnState::Inactive));
                        // The first packet (the flow's own counters start
                        // with it too).
                        if base.mark >> 16 != 0 {
                            st.count(c.lane(), 0, len as u64);
                        }
                    }
                    return Ok(reply.invert());
                }
                Err(AllocError::Full) if self.cfg.early_drop && !evicted => {
                    evicted = true;
                    match self.table.evict_unassured(now) {
                        Some(r) => {
                            self.end(&r, c.lane(), now);
                            Counters::bump(&c.early_drops);
                        }
                        None => return Err(self.table_full(&key, now, c)),
                    }
                }
                Err(AllocError::Full) => return Err(self.table_full(&key, now, c)),
                Err(AllocError::Exhausted(addr)) => {
                    let xlat = Tuple { src: addr, ..key };
                    self.sessions
                        .alarm(c.lane(), SessionEventKind::PortsExhausted, key, xlat, now);
                    return Err(Verdict::Drop(DropReason::PortExhausted));
                }
                Err(AllocError::SourceLimit) => return Err(self.source_refused(&key, now, c)),
                Err(AllocError::OrigExists) => {
                    // Another worker created this flow a moment ago: use it.
                    let info = PacketInfo {
                        tcp_flags,
                        len,
                        seg: None,
                    };
                    return match self.table.track(&key, &info, now) {
                        Lookup::Hit(h) => Ok(h.other.invert()),
                        _ => Err(Verdict::Drop(DropReason::FlowRace)),
                    };
                }
            }
        }
    }

    /// The verdict for a new flow that found the table full (logged).
    #[cold]
    fn table_full(&self, key: &Tuple, now: Time, c: &Counters) -> Verdict {
        self.sessions
            .alarm(c.lane(), SessionEventKind::TableFull, *key, *key, now);
        Verdict::Drop(DropReason::FlowTableFull)
    }

    /// Inbound flow to an EIM mapping with endpoint-independent filtering.
    fn eif_flow(
        &self,
        base: &NewFlow,
        inside: (u32, u16),
        now: Time,
        c: &Counters,
    ) -> Result<Tuple, Verdict> {
        let mut nf = *base;
        let out = Tuple {
            dst: inside.0,
            dport: inside.1,
            ..base.orig
        };
        nf.reply = out.invert();
        nf.flags |= nat_flags::DNAT | nat_flags::EIF_IN;
        match self.table.insert(&nf, now) {
            Ok(_) => {
                self.nat.eif_ref(inside);
                Counters::bump(&c.flows_created);
                self.sessions
                    .created(c.lane(), base.orig, nf.reply, now, base.len);
                Ok(out)
            }
            Err(crate::conntrack::InsertError::Full) => Err(self.table_full(&base.orig, now, c)),
            Err(crate::conntrack::InsertError::SourceLimit) => {
                Err(self.source_refused(&nf.orig, now, c))
            }
            Err(_) => Err(Verdict::Drop(DropReason::FlowRace)),
        }
    }

    /// A new flow from `src` refused for `flows_per_source`: remembered
    /// among the most refused sources, dropped as `source_limit`.
    #[cold]
    fn source_refused(&self, key: &Tuple, now: Time, c: &Counters) -> Verdict {
        self.table.sources().note_refused(key.src);
        self.sessions
            .alarm(c.lane(), SessionEventKind::SourceLimit, *key, *key, now);
        Verdict::Drop(DropReason::SourceLimit)
    }

    /// Translates an ICMP error by the flow of the datagram it quotes.
    ///
    /// The error travels opposite to the quoted datagram, so the quoted
    /// tuple inverted is the tuple of direction `d` of the flow. The quoted
    /// datagram is restored to how its sender sent it (the other
    /// direction's tuple), and the outer addresses are translated the way
    /// a packet of direction `d` is — as Linux's
    /// `nf_nat_icmp_reply_translation` does: the outer source is rewritten
    /// only when direction `d` has its source translated.
    fn icmp_error(
        &self,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        e: &IcmpErrorInfo,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        let key = e.inner.invert();
        let Some((dir, other, flow_flags)) = self.table.peek_flags(&key, now) else {
            if self.is_local(p.tuple.dst) {
                return Verdict::Local;
            }
            return Verdict::Drop(DropReason::IcmpErrorNoFlow);
        };
        let src = if key.src != other.dst {
            other.dst
        } else {
            p.tuple.src
        };
        let dst = if key.dst != other.src {
            other.src
        } else {
            p.tuple.dst
        };
        // An error travelling with the replies takes their route (mark).
        let mark = match dir {
            crate::conntrack::Dir::Reply => nat_flags::mark_of(flow_flags),
            crate::conntrack::Dir::Orig => 0,
        };
        let Some(hop) = self.route_from(dst, p.tuple.src, mark) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        packet::rewrite_icmp_error(&mut buf[..len], p, e, src, dst, &other);
        Counters::bump(&c.icmp_errors_translated);
        if self.tunnel(hop.oif).is_some() {
            return self.output(buf, p.l3, p.end, hop);
        }
        Verdict::Forward {
            oif: hop.oif,
            next_hop: hop.addr,
        }
    }

    fn later_fragment(
        &self,
        buf: &mut [u8],
        len: usize,
        p: &Parsed,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        let key = (p.tuple.src, p.tuple.dst, p.tuple.proto, p.ip_id);
        let Some((src, dst)) = self.frags.lookup(key, now) else {
            return Verdict::HoldFragment {
                key,
                again_as: None,
            };
        };
        let Some(hop) = self.route_from(dst, p.tuple.src, 0) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        packet::rewrite_l3_only(&mut buf[..len], p, src, dst);
        Counters::bump(&c.frags_translated);
        if self.tunnel(hop.oif).is_some() {
            return self.output(buf, p.l3, p.end, hop);
        }
        Verdict::Forward {
            oif: hop.oif,
            next_hop: hop.addr,
        }
    }

    /// A packet whose TTL would reach zero if forwarded. Packets for the
    /// gateway itself are delivered; the rest get an ICMP time-exceeded
    /// from the input interface's address (rate-limited) and create no flow.
    fn ttl_expired(
        &self,
        buf: &mut [u8],
        p: &Parsed,
        iif: IfId,
        now: Time,
        c: &Counters,
    ) -> Verdict {
        let to_me = self.is_local(p.tuple.dst);
        if to_me && self.table.peek(&p.tuple, now).is_none() {
            // Not a reply of a NAT flow; a new flow a DNAT rule would take
            // is forwarded too (and so expires here), anything else is ours.
            let meta = Meta {
                tuple: p.tuple,
                iif,
                oif: None,
                now,
                mark: 0,
            };
            if !matches!(self.ruleset.load().dst_nat(&meta).0, DstNat::To { .. }) {
                return Verdict::Local;
            }
        }
        // Never answer an ICMP error with another.
        if matches!(p.kind, L4::IcmpError { .. }) || !self.icmp_allowed(now) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let from = self.if_addr(iif);
        if from == 0 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let Some(hop) = self.route_from(p.tuple.src, p.tuple.dst, 0) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        match packet::build_time_exceeded(buf, p, from) {
            Some(len) => {
                Counters::bump(&c.ttl_exceeded_sent);
                if self.tunnel(hop.oif).is_some() {
                    return self.output(buf, p.l3, len, hop);
                }
                Verdict::Reply {
                    oif: hop.oif,
                    next_hop: hop.addr,
                    len,
                }
            }
            None => Verdict::Drop(DropReason::TtlExceeded),
        }
    }

    /// Token check for ICMP messages natgw originates (per second window).
    fn icmp_allowed(&self, now: Time) -> bool {
        let sec = now.0 / 1_000_000_000;
        if self.icmp_window.swap(sec, Relaxed) != sec {
            self.icmp_sent.store(0, Relaxed);
        }
        self.icmp_sent.fetch_add(1, Relaxed) < self.cfg.icmp_rate
    }

    /// Replaces rules, sets, routes and `flows_per_source` with those of a
    /// new config, all validated before anything changes; everything else
    /// (interfaces, the other limits, timeouts, policies, backend) must be
    /// unchanged, because it needs a restart. Sets keep their run-time entries; rules are rebuilt
    /// to point at the live sets. Existing flows keep their translation.
    /// Also returns the live flows no rule of the new ruleset matches.
    pub fn reload(
        &self,
        cfg: &EngineConfig,
        mut ruleset: Ruleset,
        sets: &Sets,
        now: Time,
    ) -> Result<(ReloadReport, Vec<FlowRecord>), String> {
        let old = &self.cfg;
        let mut fixed = Vec::new();
        if cfg.interfaces != old.interfaces {
            fixed.push("[[interface]]");
        }
        if cfg.tunnels != old.tunnels {
            fixed.push("[[tunnel]]");
        }
        if cfg.max_flows != old.max_flows || cfg.early_drop != old.early_drop {
            fixed.push("[limits]");
        }
        if cfg.timeouts != old.timeouts {
            fixed.push("[timeouts]");
        }
        if (
            cfg.ipv6,
            cfg.unmatched,
            cfg.hairpin,
            cfg.icmp_rate,
            cfg.seed,
            cfg.tcp_liberal,
            cfg.tcp_loose,
        ) != (
            old.ipv6,
            old.unmatched,
            old.hairpin,
            old.icmp_rate,
            old.seed,
            old.tcp_liberal,
            old.tcp_loose,
        ) {
            fixed.push("[gateway]");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "the new config changes {} which a reload cannot apply (restart natgw to change them); nothing was changed",
                fixed.join(", ")
            ));
        }
        // Keep live sets (and their run-time entries) where the name stays.
        let live = self.sets.load();
        let mut merged: Sets = Sets::new();
        for (name, new) in sets {
            let keep = match live.get(name) {
                Some(cur) if cur.default_timeout() == new.default_timeout() => {
                    cur.replace_config(&new.config_entries());
                    cur.clone()
                }
                _ => new.clone(),
            };
            merged.insert(name.clone(), keep);
        }
        for r in &mut ruleset.rules {
            for s in [&mut r.m.src_set, &mut r.m.dst_set].into_iter().flatten() {
                if let Some(live) = merged.get(s.name()) {
                    *s = live.clone();
                }
            }
        }
        let unmatched = self.unmatched_flows(&ruleset, now);
        self.table.set_source_limit(cfg.flows_per_source);
        self.set_routes_policy(&cfg.routes, &cfg.policy_routes);
        self.swap_ruleset(ruleset);
        self.sets.store(Arc::new(merged));
        let report = ReloadReport {
            rules: self.ruleset.load().len(),
            sets: self.sets.load().len(),
            flows: self.table.len(),
            unmatched_flows: unmatched.len(),
        };
        Ok((report, unmatched))
    }

    /// Live flows that a rule created and that no rule of `rs` matches
    /// (their ingress interface is taken to be the one that routes back
    /// to their source).
    pub fn unmatched_flows(&self, rs: &Ruleset, now: Time) -> Vec<FlowRecord> {
        self.flows(now)
            .into_iter()
            .filter(|r| rule_mark(r) != 0)
            .filter(|r| {
                // The replies' route (policy routes included: a flow that
                // came in by a tunnel goes back into it).
                let iif = self
                    .route_from(r.orig.src, r.reply.src, nat_flags::mark_of(r.flags))
                    .map_or(0, |h| h.oif);
                let meta = Meta {
                    tuple: r.orig,
                    iif,
                    oif: None,
                    now,
                    mark: 0,
                };
                let (_, pre) = rs.dst_nat(&meta);
                let out = r.reply.invert();
                let oif = self.route_from(out.dst, r.orig.src, 0).map(|h| h.oif);
                let meta = Meta {
                    tuple: Tuple {
                        dst: out.dst,
                        dport: out.dport,
                        ..r.orig
                    },
                    iif,
                    oif,
                    now,
                    mark: nat_flags::mark_of(r.flags),
                };
                let (_, post) = rs.src_nat(&meta);
                pre.is_none() && post.is_none()
            })
            .collect()
    }

    /// Bounded expiry work: visits up to `budget` flow slots, removes the
    /// flows whose timer ran out, and prunes fragment and set entries.
    /// Returns the number of flows removed.
    pub fn expire(&self, now: Time, budget: usize) -> usize {
        // Each slot visited may end a flow, and the session log takes its
        // end through lane 0's ring: visit no more slots than it has room
        // for, so a backlog of expired flows (after a stall) waits in the
        // table for the logger instead of overflowing the ring. Until
        // then such a flow is dead to packets (its timer ran out).
        let budget = budget.min(self.sessions.room(0));
        if budget == 0 {
            return 0;
        }
        let n = self.table.sweep(now, budget, |r| self.end(&r, 0, now));
        self.frags.prune(now);
        n
    }

    /// Removes expired entries from every address set.
    pub fn prune_sets(&self, now: Time) -> usize {
        self.sets.load().values().map(|s| s.prune(now)).sum()
    }

    /// A moment's list of live flows.
    /// At a stop after which no process carries the flows on (no snapshot,
    /// no HA peer): logs every live flow's end, as if it expired now. The
    /// workers must have stopped. Returns how many.
    pub fn log_ends_at_stop(&self, now: Time) -> usize {
        if self.standby() || !self.sessions.enabled() {
            return 0;
        }
        let mut n = 0;
        self.table.for_each(|_, r| {
            if r.expires > now {
                self.sessions
                    .deleted_waiting(&r, now, std::time::Duration::from_millis(100));
                n += 1;
            }
        });
        n
    }

    pub fn flows(&self, now: Time) -> Vec<FlowRecord> {
        let mut v = Vec::new();
        self.table.for_each(|_, r| {
            if r.expires > now {
                v.push(r)
            }
        });
        v
    }

    /// Removes every flow matching `pred`; returns how many.
    pub fn flush(&self, mut pred: impl FnMut(&FlowRecord) -> bool) -> usize {
        let mut ids = Vec::new();
        self.table.for_each(|id, r| {
            if pred(&r) {
                ids.push(id)
            }
        });
        ids.into_iter()
            .filter_map(|id| self.table.remove(id, None))
            .inspect(|r| {
                self.end(r, 0, Time(0));
                self.changes.note(0, r.orig);
            })
            .count()
    }
}

/// The flow table's hash key: `seed` mixed with a value drawn from the
/// OS's randomness (through ahash's runtime-seeded `RandomState`).
fn table_seed(cfg: &EngineConfig) -> u64 {
    cfg.seed ^ ahash::RandomState::new().hash_one(cfg.seed)
}

/// Addresses a packet can be sent to and be "for the gateway": interface
/// addresses and their extras, SNAT pool addresses and netmap outside
/// prefixes (replies and new inbound flows arrive there), and the virtual
/// service addresses `vips`.
pub fn local_ranges(cfg: &EngineConfig, rs: &Ruleset, vips: &[u32]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = cfg
        .interfaces
        .iter()
        .flat_map(|i| std::iter::once(i.addr.addr).chain(i.extra.iter().copied()))
        .chain(vips.iter().copied())
        .map(|a| (a, a))
        .collect();
    for r in &rs.rules {
        match &r.action {
            crate::nat::Action::Snat(s) => v.extend_from_slice(s.pool.ranges()),
            crate::nat::Action::Netmap { outside, .. } => {
                v.push((outside.addr, outside.addr | !outside.mask()))
            }
            _ => {}
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    pub rules: usize,
    pub sets: usize,
    /// Live flows, all of which keep their translation.
    pub flows: usize,
    /// Live flows created by a rule that no rule of the new ruleset matches.
    pub unmatched_flows: usize,
}

/// Which flag bits a record shows in listings.
pub fn flag_names(r: &FlowRecord) -> Vec<&'static str> {
    let mut v = Vec::new();
    if r.has(flags::ASSURED) {
        v.push("ASSURED");
    } else if !r.has(flags::SEEN_REPLY) {
        v.push("UNREPLIED");
    }
    for (bit, name) in [
        (nat_flags::SNAT, "SNAT"),
        (nat_flags::DNAT, "DNAT"),
        (nat_flags::HAIRPIN, "HAIRPIN"),
        (nat_flags::EIM, "EIM"),
        (nat_flags::EIF_IN, "EIF"),
    ] {
        if r.has(bit) {
            v.push(name);
        }
    }
    v
}

/// The mark of a load-balanced flow: its real server's [`RealIds`] id in
/// the upper 16 bits (a virtual service comes before the destination
/// rules, so that half names no rule), the source rule in the lower.
fn lb_mark(real_id: u16, mark: u32) -> u32 {
    (u32::from(real_id) << 16) | (mark & 0xffff)
}

/// The rule numbers a flow's mark holds (destination rule << 16 | source
/// rule); a load-balanced flow's upper half is its server id, not a rule.
fn rule_mark(r: &FlowRecord) -> u32 {
    if r.has(nat_flags::LB) {
        r.mark & 0xffff
    } else {
        r.mark
    }
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    #[test]
    fn each_engine_draws_its_own_flow_table_key() {
        let cfg = EngineConfig::default();
        let keys: std::collections::HashSet<u64> = (0..8).map(|_| table_seed(&cfg)).collect();
        assert_eq!(
            keys.len(),
            8,
            "the table key must not be the config's fixed seed"
        );
        assert!(!keys.contains(&cfg.seed));
    }
}
