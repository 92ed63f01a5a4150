//! Choosing the outside address and port of a new flow.
//!
//! Uniqueness is the flow table's: a mapping is free when no live flow has
//! the reply tuple it would create (`remote -> outside addr:port`), which is
//! what Linux NAT checks (`nf_nat_used_tuple`). So one outside port can
//! serve several flows to different remote endpoints, the inside port is
//! kept whenever that tuple is free, and insertion itself is the atomic
//! check (two workers can never hand out the same mapping).
//!
//! On top of that:
//! - `persistent` pools hash the inside address alone, so a host always
//!   gets the same pool address; otherwise the hash includes the remote and
//!   other pool addresses are tried when one is exhausted;
//! - UDP endpoint-independent mapping (RFC 4787 EIM) keeps a table from
//!   inside endpoint to outside endpoint, reference-counted by the flows
//!   that use it; a port held by such a mapping is not given to anyone else;
//! - "same source" (RFC 4787 REQ-1, RFC 5382 REQ-1; Linux's
//!   `find_appropriate_src`): an inside endpoint that already has a mapping
//!   keeps it towards a new destination when it is free there, for every
//!   protocol and rule, with or without EIM configured. Only mappings that
//!   a new destination would not get anyway (the inside port could not be
//!   kept, or a non-persistent pool, whose address depends on the
//!   destination) are indexed, reference-counted by the flows that carry
//!   [`nat_flags::SAME_SRC`]; unlike EIM it reserves nothing, so a port
//!   taken towards that destination gives a fresh mapping (as Linux);
//! - per (outside address, protocol) counters of flows and exhaustion.

use super::addr::{AddrPool, PortRange};
use crate::conntrack::{
    FlowId, FlowRecord, FlowTable, InsertError, LANES, NewFlow, Time, flags, thread_lane,
};
use crate::packet::{Tuple, proto};
use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// NAT-layer flow flags (stored above `flags::USER_SHIFT`).
pub mod nat_flags {
    use super::flags::USER_SHIFT;
    /// The source was translated; counted in port usage of `reply.dst`.
    pub const SNAT: u32 = 1 << USER_SHIFT;
    /// The destination was translated.
    pub const DNAT: u32 = 1 << (USER_SHIFT + 1);
    /// Holds a reference on the EIM mapping of `orig.src:orig.sport`.
    pub const EIM: u32 = 1 << (USER_SHIFT + 2);
    /// Inbound flow let in by endpoint-independent filtering; holds a
    /// reference on the EIM mapping of `reply.src:reply.sport`.
    pub const EIF_IN: u32 = 1 << (USER_SHIFT + 3);
    /// Hairpinned: both addresses translated back into the inside network.
    pub const HAIRPIN: u32 = 1 << (USER_SHIFT + 4);
    /// Scheduled to a real server of a virtual service (`orig.dst:dport`
    /// is the VIP, `reply.src:sport` the real server).
    pub const LB: u32 = 1 << (USER_SHIFT + 5);
    /// Holds a reference on the same-source mapping of
    /// `orig.src:orig.sport` (protocol `orig.proto`) -> `reply.dst:dport`.
    pub const SAME_SRC: u32 = 1 << (USER_SHIFT + 6);
    /// The flow's mark (a rule's `set_mark`, 1-255; 0 none) lives in the
    /// top byte of the flag word, so it is listed and snapshotted with the
    /// flags (no new snapshot version).
    pub const MARK_SHIFT: u32 = 24;
    pub const MARK_MASK: u32 = 0xff << MARK_SHIFT;

    /// The mark in a flow's flag word.
    #[inline]
    pub const fn mark_of(flags: u32) -> u8 {
        (flags >> MARK_SHIFT) as u8
    }
}

/// Most ports tried per address before a new flow counts as exhausted.
const MAX_PORT_ATTEMPTS: u32 = 2048;
/// Most pool addresses tried (non-persistent pools).
const MAX_ADDR_ATTEMPTS: u64 = 16;

/// An outside address and protocol that has had translated flows.
#[derive(Default)]
struct Usage {
    exhausted: AtomicU64,
}

/// Live translated flows per (outside address, protocol), counted per
/// thread lane (a flow is counted up on the lane that created it and
/// down on the lane that removed it, so one lane's count may be negative;
/// the sum is right). One shared counter per address was written by every
/// new flow and every removal on every worker, and read under its map
/// shard's lock.
type LaneFlows = parking_lot::Mutex<std::collections::HashMap<(u32, u8), i64, ahash::RandomState>>;

/// Port use of one outside address and protocol, for `natgw stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUsage {
    pub addr: std::net::Ipv4Addr,
    pub proto: String,
    /// Live flows whose source was translated to this address.
    pub flows: u64,
    /// New flows refused because no port was free.
    pub exhausted: u64,
}

/// An endpoint-independent mapping (inside endpoint -> outside endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EimMapping {
    pub inside: (u32, u16),
    pub outside: (u32, u16),
    /// Flows using it.
    pub refs: u32,
    /// Endpoint-independent filtering: any remote may open a flow to it.
    pub eif: bool,
}

/// The outside endpoint an inside endpoint was last given where the
/// inside port could not be kept ("same source"; see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SameSrc {
    outside: (u32, u16),
    /// Flows carrying [`nat_flags::SAME_SRC`] with this outside endpoint.
    refs: u32,
}

/// Where a new flow's source goes.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// One address (masquerade, netmap, hairpin, untranslated).
    Addr(u32),
    /// A pool; `persistent` hashes the inside address only.
    Pool {
        pool: &'a AddrPool,
        persistent: bool,
    },
}

/// A source-NAT request for one new flow.
#[derive(Debug, Clone, Copy)]
pub struct SrcRequest<'a> {
    pub source: Source<'a>,
    /// Ports (or ICMP ids) to pick from when the inside one is taken.
    pub ports: PortRange,
    /// Try the inside port first even outside `ports` (no explicit range
    /// was configured, or the source is not translated).
    pub keep_any: bool,
    /// UDP EIM / EIF as configured on the rule.
    pub eim: bool,
    pub eif: bool,
    /// Whether the source counts as translated (for flags and usage).
    pub translated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// No free port on this outside address (the first of the pool's
    /// addresses tried) for the flow's protocol.
    Exhausted(u32),
    Full,
    OrigExists,
    /// The flow's source has `flows_per_source` live flows already.
    SourceLimit,
}

/// Shared NAT state besides the flows themselves.
pub struct NatState {
    usage: Map<(u32, u8), Usage>,
    flows: Box<[CachePadded<LaneFlows>]>,
    eim: Map<(u32, u16), EimMapping>,
    eim_rev: Map<(u32, u16), (u32, u16)>,
    /// Entries in `eim_rev`, readable without its locks (`DashMap::len`
    /// and `is_empty` lock every shard: per port tried, that bounced
    /// eight lock words between the workers creating flows).
    eim_rev_len: AtomicUsize,
    /// Same-source mappings by inside (address, port, protocol).
    same_src: Map<(u32, u16, u8), SameSrc>,
    /// Entries in `same_src` (see `eim_rev_len`).
    same_src_len: AtomicUsize,
    seed: u64,
}

/// The NAT state's maps, hashed with aHash keyed from the engine's seed
/// (SipHash, `DashMap`'s default, was ~100 of the ~2,400 instructions of
/// a new flow; its keys are inside endpoints, which inside hosts choose,
/// so the hash stays keyed).
type Map<K, V> = DashMap<K, V, ahash::RandomState>;

fn map<K: Eq + std::hash::Hash, V>(seed: u64, which: u64) -> Map<K, V> {
    DashMap::with_hasher(ahash::RandomState::with_seeds(
        seed,
        which,
        0x6e61_7467_775f_6e61,
        0x745f_6d61_7073_0000,
    ))
}

fn mix(a: u64, b: u64) -> u64 {
    let r = (a ^ 0x243f_6a88_85a3_08d3).wrapping_mul(b | 1) as u128 * 0x9e37_79b9_7f4a_7c15u128;
    (r as u64) ^ ((r >> 64) as u64)
}

impl NatState {
    pub fn new(seed: u64) -> NatState {
        NatState {
            usage: map(seed, 1),
            flows: (0..LANES)
                .map(|_| CachePadded::new(LaneFlows::new(std::collections::HashMap::default())))
                .collect(),
            eim: map(seed, 2),
            eim_rev: map(seed, 3),
            eim_rev_len: AtomicUsize::new(0),
            same_src: map(seed, 4),
            same_src_len: AtomicUsize::new(0),
            seed,
        }
    }

    /// Creates the flow for `orig` whose destination becomes `dst:dport`,
    /// choosing its source per `req`. `base` carries everything else
    /// (flags, mark, first segment's TCP flags, length).
    pub fn create(
        &self,
        table: &FlowTable,
        base: &NewFlow,
        dst: u32,
        dport: u16,
        req: &SrcRequest<'_>,
        now: Time,
    ) -> Result<(FlowId, Tuple), AllocError> {
        let orig = base.orig;
        let p = orig.proto;
        // ICMP echo carries its id in sport (request) or dport (reply).
        let keep = orig.sport;
        let eim = req.eim && p == proto::UDP;
        if eim && let Some(m) = self.eim.get(&(orig.src, orig.sport)).map(|m| *m) {
            let mut nf = *base;
            nf.reply = Tuple {
                src: dst,
                dst: m.outside.0,
                sport: dport,
                dport: m.outside.1,
                proto: p,
            };
            nf.flags |= nat_flags::EIM | if req.translated { nat_flags::SNAT } else { 0 };
            match table.insert(&nf, now) {
                Ok(id) => {
                    if let Some(mut e) = self.eim.get_mut(&(orig.src, orig.sport)) {
                        e.refs += 1;
                    }
                    self.count_flow(&nf);
                    return Ok((id, nf.reply));
                }
                Err(InsertError::Full) => return Err(AllocError::Full),
                Err(InsertError::OrigExists) => return Err(AllocError::OrigExists),
                Err(InsertError::SourceLimit) => return Err(AllocError::SourceLimit),
                // The mapping's port is taken towards this remote by a
                // flow that is not ours: fall back to a fresh mapping.
                Err(InsertError::ReplyTaken) => {}
            }
        }
        let reserve_checks = p == proto::TCP && req.translated;
        // Same source: the mapping this inside endpoint already has, if it
        // is one this request may give and is free towards `dst:dport`.
        if req.translated
            && !eim
            && self.same_src_len.load(Relaxed) != 0
            && let Some(m) = self.same_src.get(&(orig.src, keep, p)).map(|m| *m)
        {
            let (addr, port) = m.outside;
            let addr_ok = match req.source {
                Source::Addr(x) => x == addr,
                Source::Pool { pool, .. } => pool.contains(addr),
            };
            let port_ok = req.ports.contains(port) || (req.keep_any && port == keep);
            let reserved = (reserve_checks && PortRange::HEALTH_CHECK.contains(port))
                || (p == proto::UDP && self.has_eim() && self.eim_rev.contains_key(&(addr, port)));
            if addr_ok && port_ok && !reserved {
                let mut nf = *base;
                nf.reply = Tuple {
                    src: dst,
                    dst: addr,
                    sport: dport,
                    dport: port,
                    proto: p,
                };
                nf.flags |= nat_flags::SNAT | nat_flags::SAME_SRC;
                match table.insert(&nf, now) {
                    Ok(id) => {
                        self.add_same_src((orig.src, keep, p), (addr, port));
                        self.count_flow(&nf);
                        return Ok((id, nf.reply));
                    }
                    Err(InsertError::Full) => return Err(AllocError::Full),
                    Err(InsertError::OrigExists) => return Err(AllocError::OrigExists),
                    Err(InsertError::SourceLimit) => return Err(AllocError::SourceLimit),
                    // Taken towards this remote: choose as if there were none.
                    Err(InsertError::ReplyTaken) => {}
                }
            }
        }
        // Pool position to start from, and how many addresses to try.
        let (base_idx, tries) = match req.source {
            Source::Addr(_) => (0, 1),
            Source::Pool {
                pool,
                persistent: true,
            } => (mix(orig.src as u64, self.seed), 1.min(pool.len())),
            Source::Pool {
                pool,
                persistent: false,
            } => (
                mix(((orig.src as u64) << 32) | dst as u64, self.seed),
                pool.len().min(MAX_ADDR_ATTEMPTS),
            ),
        };
        let addr_at = |a: u64| match req.source {
            Source::Addr(x) => x,
            Source::Pool { pool, .. } => pool.nth(base_idx.wrapping_add(a)),
        };
        let [w0, w1] = orig.pack();
        let start = mix(w0 ^ w1.rotate_left(17), self.seed) as u32;
        let attempts = req.ports.len().min(MAX_PORT_ATTEMPTS);
        // A mapping every destination gets first anyway needs no index:
        // the inside port on a destination-independent address.
        let fixed_addr = !matches!(
            req.source,
            Source::Pool {
                persistent: false,
                ..
            }
        );
        // After one port turned out taken, the next ones are looked up
        // (a read of one index shard) before a slot is filled and both
        // shards are write-locked for them: in a busy range most are taken.
        let mut collided = false;
        for a in 0..tries {
            let addr = addr_at(a);
            let keep_ok = req.keep_any || req.ports.contains(keep);
            for k in 0..attempts + keep_ok as u32 {
                let port = if keep_ok && k == 0 {
                    keep
                } else {
                    req.ports.nth(start.wrapping_add(k))
                };
                if keep_ok && k > 0 && port == keep {
                    continue;
                }
                // Health-check source ports belong to the gateway's kernel
                // (see `PortRange::HEALTH_CHECK`): never a translated TCP
                // source, kept or chosen.
                if reserve_checks && PortRange::HEALTH_CHECK.contains(port) {
                    continue;
                }
                if p == proto::UDP && self.has_eim() && self.eim_rev.contains_key(&(addr, port)) {
                    continue;
                }
                let mut nf = *base;
                let translated = Tuple {
                    src: addr,
                    sport: port,
                    dst,
                    dport,
                    proto: p,
                };
                nf.reply = translated.invert();
                if collided && table.contains(&nf.reply) {
                    continue;
                }
                if req.translated || addr != orig.src || port != orig.sport {
                    nf.flags |= nat_flags::SNAT;
                }
                if eim {
                    nf.flags |= nat_flags::EIM;
                }
                let same_src = req.translated && !eim && !(fixed_addr && port == keep);
                if same_src {
                    nf.flags |= nat_flags::SAME_SRC;
                }
                match table.insert(&nf, now) {
                    Ok(id) => {
                        if eim {
                            self.add_eim((orig.src, orig.sport), (addr, port), req.eif);
                        }
                        if same_src {
                            self.add_same_src((orig.src, keep, p), (addr, port));
                        }
                        self.count_flow(&nf);
                        return Ok((id, nf.reply));
                    }
                    Err(InsertError::ReplyTaken) => {
                        collided = true;
                        continue;
                    }
                    Err(InsertError::Full) => return Err(AllocError::Full),
                    Err(InsertError::OrigExists) => return Err(AllocError::OrigExists),
                    Err(InsertError::SourceLimit) => return Err(AllocError::SourceLimit),
                }
            }
        }
        self.usage
            .entry((addr_at(0), p))
            .or_default()
            .exhausted
            .fetch_add(1, Relaxed);
        Err(AllocError::Exhausted(addr_at(0)))
    }

    /// Whether any EIM mapping exists (one atomic load).
    #[inline]
    fn has_eim(&self) -> bool {
        self.eim_rev_len.load(Relaxed) != 0
    }

    fn rev_insert(&self, outside: (u32, u16), inside: (u32, u16)) {
        if self.eim_rev.insert(outside, inside).is_none() {
            self.eim_rev_len.fetch_add(1, Relaxed);
        }
    }

    /// Removes `outside`'s reverse entry if it still points at `inside`.
    fn rev_remove(&self, outside: (u32, u16), inside: (u32, u16)) {
        if self
            .eim_rev
            .remove_if(&outside, |_, v| *v == inside)
            .is_some()
        {
            self.eim_rev_len.fetch_sub(1, Relaxed);
        }
    }

    fn add_eim(&self, inside: (u32, u16), outside: (u32, u16), eif: bool) {
        use dashmap::mapref::entry::Entry;
        match self.eim.entry(inside) {
            Entry::Vacant(v) => {
                v.insert(EimMapping {
                    inside,
                    outside,
                    refs: 1,
                    eif,
                });
                self.rev_insert(outside, inside);
            }
            Entry::Occupied(mut o) => {
                // Normally the mapping is ours; if a concurrent flow created
                // it with another port first, this flow keeps its own port
                // and still holds a reference so release() stays balanced.
                o.get_mut().refs += 1;
            }
        }
    }

    /// A flow carrying [`nat_flags::SAME_SRC`] maps `inside` to `outside`:
    /// a reference on that mapping, which becomes the inside endpoint's
    /// when it has none. (One that has another keeps it; this flow then
    /// holds no reference, and [`release`](Self::release) sees that.)
    fn add_same_src(&self, inside: (u32, u16, u8), outside: (u32, u16)) {
        use dashmap::mapref::entry::Entry;
        match self.same_src.entry(inside) {
            Entry::Vacant(v) => {
                v.insert(SameSrc { outside, refs: 1 });
                self.same_src_len.fetch_add(1, Relaxed);
            }
            Entry::Occupied(mut o) if o.get().outside == outside => o.get_mut().refs += 1,
            Entry::Occupied(_) => {}
        }
    }

    /// The same-source mapping of an inside endpoint, if it has one.
    pub fn same_source(&self, addr: u32, port: u16, proto: u8) -> Option<(u32, u16)> {
        self.same_src.get(&(addr, port, proto)).map(|m| m.outside)
    }

    /// Inside endpoints with a same-source mapping.
    pub fn same_source_len(&self) -> usize {
        self.same_src_len.load(Relaxed)
    }

    fn count_flow(&self, nf: &NewFlow) {
        if nf.flags & nat_flags::SNAT != 0 {
            self.count((nf.reply.dst, nf.orig.proto), 1);
        }
    }

    /// Adds `n` to the live flows of `key` on this thread's lane; the
    /// address's first flow on a lane also makes sure it is listed.
    fn count(&self, key: (u32, u8), n: i64) {
        let mut lane = self.flows[thread_lane()].lock();
        match lane.get_mut(&key) {
            Some(v) => *v += n,
            None => {
                lane.insert(key, n);
                drop(lane);
                self.usage.entry(key).or_default();
            }
        }
    }

    /// The EIM mapping that owns outside endpoint `addr:port`, if it lets
    /// any remote in (endpoint-independent filtering).
    pub fn eif_target(&self, addr: u32, port: u16) -> Option<(u32, u16)> {
        if !self.has_eim() {
            return None;
        }
        let inside = *self.eim_rev.get(&(addr, port))?;
        self.eim.get(&inside).filter(|m| m.eif).map(|m| m.inside)
    }

    /// Takes a reference on the EIM mapping of `inside` for an EIF flow.
    pub fn eif_ref(&self, inside: (u32, u16)) -> bool {
        self.eim.get_mut(&inside).map(|mut m| m.refs += 1).is_some()
    }

    /// Bookkeeping when a flow goes away (expiry, eviction, flush).
    pub fn release(&self, r: &FlowRecord) {
        if r.flags & nat_flags::SNAT != 0 {
            self.count((r.reply.dst, r.orig.proto), -1);
        }
        if r.flags & nat_flags::SAME_SRC != 0 {
            let k = (r.orig.src, r.orig.sport, r.orig.proto);
            let outside = (r.reply.dst, r.reply.dport);
            let gone = self.same_src.remove_if_mut(&k, |_, m| {
                if m.outside == outside {
                    m.refs = m.refs.saturating_sub(1);
                }
                m.refs == 0
            });
            if gone.is_some() {
                self.same_src_len.fetch_sub(1, Relaxed);
            }
        }
        let key = if r.flags & nat_flags::EIM != 0 {
            Some((r.orig.src, r.orig.sport))
        } else if r.flags & nat_flags::EIF_IN != 0 {
            Some((r.reply.src, r.reply.sport))
        } else {
            None
        };
        if let Some(k) = key {
            let gone = self.eim.get_mut(&k).map(|mut m| {
                m.refs = m.refs.saturating_sub(1);
                (m.refs == 0).then_some(m.outside)
            });
            if let Some(Some(outside)) = gone {
                self.eim.remove_if(&k, |_, m| m.refs == 0);
                self.rev_remove(outside, k);
            }
        }
    }

    /// Port use per outside address and protocol, sorted.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        let mut live: std::collections::HashMap<(u32, u8), i64> = Default::default();
        for lane in self.flows.iter() {
            for (k, n) in lane.lock().iter() {
                *live.entry(*k).or_default() += n;
            }
        }
        let mut v: Vec<PortUsage> = self
            .usage
            .iter()
            .map(|e| PortUsage {
                addr: e.key().0.into(),
                proto: crate::packet::proto_name(e.key().1).into(),
                flows: live.get(e.key()).copied().unwrap_or(0).max(0) as u64,
                exhausted: e.value().exhausted.load(Relaxed),
            })
            .collect();
        v.sort_by(|a, b| (a.addr, &a.proto).cmp(&(b.addr, &b.proto)));
        v
    }

    /// Live EIM mappings.
    pub fn eim_mappings(&self) -> Vec<EimMapping> {
        let mut v: Vec<EimMapping> = self.eim.iter().map(|e| *e.value()).collect();
        v.sort_by_key(|m| m.inside);
        v
    }

    /// Snapshot restore, step 1: puts back the EIM mapping `inside ->
    /// outside` with no references yet (step 2 counts them). Refused
    /// (false) when `inside` already has a mapping or `outside` belongs to
    /// another one.
    pub fn adopt_eim(&self, inside: (u32, u16), outside: (u32, u16), eif: bool) -> bool {
        use dashmap::mapref::entry::Entry;
        if self.eim_rev.get(&outside).is_some_and(|i| *i != inside) {
            return false;
        }
        match self.eim.entry(inside) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(EimMapping {
                    inside,
                    outside,
                    refs: 0,
                    eif,
                });
                self.rev_insert(outside, inside);
                true
            }
        }
    }

    /// Snapshot restore, step 2: the NAT bookkeeping of a flow just put
    /// back into the flow table, as [`create`](Self::create) would have
    /// done it: port use of its outside address, and a reference on its
    /// EIM mapping (which is recreated from the flow if step 1 did not
    /// bring it back), so that [`release`](Self::release) stays balanced.
    pub fn adopt_flow(&self, r: &FlowRecord) {
        if r.flags & nat_flags::SNAT != 0 {
            self.count((r.reply.dst, r.orig.proto), 1);
        }
        if r.flags & nat_flags::SAME_SRC != 0 {
            self.add_same_src(
                (r.orig.src, r.orig.sport, r.orig.proto),
                (r.reply.dst, r.reply.dport),
            );
        }
        let (inside, outside, eif) = if r.flags & nat_flags::EIM != 0 {
            (
                (r.orig.src, r.orig.sport),
                (r.reply.dst, r.reply.dport),
                false,
            )
        } else if r.flags & nat_flags::EIF_IN != 0 {
            (
                (r.reply.src, r.reply.sport),
                (r.orig.dst, r.orig.dport),
                true,
            )
        } else {
            return;
        };
        if let Some(mut m) = self.eim.get_mut(&inside) {
            m.refs += 1;
            return;
        }
        self.add_eim(inside, outside, eif);
    }

    /// Snapshot restore, step 3: removes the mappings that no restored
    /// flow references (all their flows expired meanwhile); returns how
    /// many.
    pub fn drop_unreferenced_eim(&self) -> usize {
        let idle: Vec<EimMapping> = self
            .eim
            .iter()
            .filter(|e| e.refs == 0)
            .map(|e| *e.value())
            .collect();
        for m in &idle {
            self.eim.remove_if(&m.inside, |_, m| m.refs == 0);
            self.rev_remove(m.outside, m.inside);
        }
        idle.len()
    }
}
