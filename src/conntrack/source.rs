//! Per-source flow limits (`[limits] flows_per_source`): how many live
//! flows each source address started, and which sources were refused most.
//!
//! Memory stays bounded whatever the traffic: the live count is kept only
//! for addresses that have a live flow (so at most one entry per flow,
//! and never more than `max_flows`), and the refusals are kept for the
//! [`TOP`] most refused addresses only (the space-saving heavy-hitter
//! algorithm of Metwally et al.: an address that is not listed replaces
//! the least refused one and inherits its count, so a listed count may be
//! an overestimate by at most what it inherited, which is reported).
//!
//! The flow table owns one of these and keeps it exact: a flow is counted
//! when it is linked (a packet's new flow, a snapshot or HA restore) and
//! uncounted when it is removed (expiry, early drop, flush, a flow taken
//! over by a newer copy), whatever removed it. A flow carries
//! [`COUNTED`](super::table::flags) while it is counted, so a count turned
//! on at run time (a reload that adds the limit) can count the flows that
//! were already there without counting any twice.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

const SHARDS: usize = 64;
/// How many refused source addresses are remembered.
pub const TOP: usize = 16;

/// The answer to a new flow from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counting is off: the flow goes in uncounted.
    Uncounted,
    /// Counted; release it when the flow goes.
    Counted,
    /// The source has its limit of live flows already.
    Refused,
}

/// One row of the refused-sources list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offender {
    pub addr: u32,
    /// New flows refused (an overestimate by at most `error`).
    pub refused: u64,
    /// What the address inherited when it entered the list.
    pub error: u64,
    /// Its live flows now.
    pub flows: u32,
}

/// Live flows by source address, for the addresses that hash here.
type Shard = CachePadded<Mutex<HashMap<u32, u32>>>;

/// Live flows per source address and the most refused sources.
pub struct SourceCounts {
    /// 0: no limit (counts may still be kept).
    limit: AtomicU32,
    counting: AtomicBool,
    shards: Box<[Shard]>,
    top: Mutex<Vec<(u32, u64, u64)>>,
}

impl Default for SourceCounts {
    fn default() -> Self {
        SourceCounts {
            limit: AtomicU32::new(0),
            counting: AtomicBool::new(false),
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            top: Mutex::new(Vec::with_capacity(TOP)),
        }
    }
}

impl SourceCounts {
    fn shard(&self, src: u32) -> &Mutex<HashMap<u32, u32>> {
        // Fibonacci hashing of the address; the maps themselves use
        // SipHash with a random key, so spoofed sources cannot aim at
        // one map's buckets.
        &self.shards[(src.wrapping_mul(0x9e37_79b9) >> 26) as usize % SHARDS]
    }

    /// The limit now (`None`: unlimited).
    pub fn limit(&self) -> Option<u32> {
        Some(self.limit.load(Relaxed)).filter(|&n| n != 0)
    }

    /// True once counting is on (it stays on).
    pub fn counting(&self) -> bool {
        self.counting.load(Relaxed)
    }

    /// Sets the limit and turns counting on if it was not; returns true
    /// when it turned counting on (the caller must then count the flows
    /// already there, see `FlowTable::set_source_limit`).
    pub(super) fn set_limit(&self, limit: Option<u32>) -> bool {
        self.limit.store(limit.unwrap_or(0), Relaxed);
        limit.is_some() && !self.counting.swap(true, Relaxed)
    }

    /// Counts a new flow from `src` unless that would pass the limit.
    pub(super) fn admit(&self, src: u32) -> Admit {
        if !self.counting() {
            return Admit::Uncounted;
        }
        let limit = self.limit.load(Relaxed);
        let mut m = self.shard(src).lock();
        let n = m.get(&src).copied().unwrap_or(0);
        if limit != 0 && n >= limit {
            return Admit::Refused;
        }
        m.insert(src, n + 1);
        Admit::Counted
    }

    /// Counts a flow whatever the limit (restored flows: they exist
    /// already, refusing them would break connections).
    pub(super) fn force(&self, src: u32) {
        *self.shard(src).lock().entry(src).or_insert(0) += 1;
    }

    /// Uncounts a flow that was counted.
    pub(super) fn release(&self, src: u32) {
        let mut m = self.shard(src).lock();
        if let Some(n) = m.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                m.remove(&src);
            }
        }
    }

    /// True if a new flow from `src` would be refused now (a cheap check
    /// before a NAT port is chosen; `admit` decides).
    pub fn full(&self, src: u32) -> bool {
        let limit = self.limit.load(Relaxed);
        limit != 0 && self.counting() && self.flows(src) >= limit
    }

    /// Live flows of `src` (0 while counting is off).
    pub fn flows(&self, src: u32) -> u32 {
        self.shard(src).lock().get(&src).copied().unwrap_or(0)
    }

    /// Addresses with at least one live flow.
    pub fn sources(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Records a refused new flow from `src`.
    pub fn note_refused(&self, src: u32) {
        let mut top = self.top.lock();
        if let Some(e) = top.iter_mut().find(|e| e.0 == src) {
            e.1 += 1;
        } else if top.len() < TOP {
            top.push((src, 1, 0));
        } else if let Some(min) = top.iter_mut().min_by_key(|e| e.1) {
            // Space-saving: take the least refused entry's place.
            *min = (src, min.1 + 1, min.1);
        }
    }

    /// The most refused sources, most refused first.
    pub fn offenders(&self) -> Vec<Offender> {
        let mut v: Vec<Offender> = self
            .top
            .lock()
            .iter()
            .map(|&(addr, refused, error)| Offender {
                addr,
                refused,
                error,
                flows: 0,
            })
            .collect();
        for o in &mut v {
            o.flows = self.flows(o.addr);
        }
        v.sort_by(|a, b| b.refused.cmp(&a.refused).then(a.addr.cmp(&b.addr)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_and_forgets_sources_without_flows() {
        let s = SourceCounts::default();
        assert_eq!(s.admit(1), Admit::Uncounted);
        assert!(s.set_limit(Some(2)));
        assert!(!s.set_limit(Some(2)), "counting was on already");
        assert_eq!(s.admit(1), Admit::Counted);
        assert_eq!(s.admit(1), Admit::Counted);
        assert_eq!(s.admit(1), Admit::Refused);
        assert!(s.full(1));
        assert_eq!(s.admit(2), Admit::Counted);
        assert_eq!((s.flows(1), s.sources()), (2, 2));
        s.release(1);
        assert!(!s.full(1));
        s.release(1);
        s.release(2);
        assert_eq!(
            s.sources(),
            0,
            "no entry is kept for a source without flows"
        );
        // No limit: counted, never refused.
        s.set_limit(None);
        for _ in 0..5 {
            assert_eq!(s.admit(7), Admit::Counted);
        }
        s.force(7);
        assert_eq!(s.flows(7), 6);
    }

    #[test]
    fn refused_sources_list_is_bounded_and_keeps_the_heavy_hitter() {
        let s = SourceCounts::default();
        // 100k other sources with one refusal each, and one source with a
        // refusal for every ten of theirs: more than a 16th of all, so
        // space-saving must keep it (its count within what it inherited).
        for a in 0..100_000u32 {
            s.note_refused(1_000_000 + a);
            if a % 10 == 0 {
                s.note_refused(42);
            }
        }
        let top = s.offenders();
        assert_eq!(top.len(), TOP);
        assert_eq!(top[0].addr, 42);
        assert!(top[0].refused - top[0].error <= 10_000 && top[0].refused >= 10_000);
        // Everyone else had one refusal: what is listed beyond it was
        // inherited, and says so.
        assert!(top[1..].iter().all(|o| o.refused - o.error <= 1));
    }
}
