//! Bounded lock-free rings that workers write and one thread drains: the
//! flow-change notices of HA state sync ([`ChangeLog`]) and the NAT
//! session log's events ([`super::sessions::SessionLog`]).
//!
//! A worker writes into the ring of its counter lane (modulo [`RINGS`],
//! so two workers rarely share one). A write costs one `push`; when a ring
//! is full the item is dropped and counted ([`LaneRings::missed`]), never
//! waited for. Until [`LaneRings::enable`] nothing is allocated and a
//! write is one atomic load.
//!
//! HA sync: a worker that creates a flow or moves a TCP flow to another
//! state notes the flow's original tuple; the sync thread ([`crate::ha`])
//! drains the notices, reads each flow's current record from the table
//! and streams it to the peer. A notice lost to a full ring costs little:
//! the sync thread's periodic refresh (flows touched since the last one)
//! sends that flow anyway, only later.

use crate::packet::Tuple;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Rings (workers pick theirs by counter lane, modulo this).
pub const RINGS: usize = 8;
/// Notices per HA change ring (24 bytes each: 12 MiB for all). The sync
/// thread drains them every millisecond when idle, but a refresh or a
/// bulk keeps it busy for a while: at 125k new flows per second on one
/// worker this holds ~0.5 s of them (bench/ha.sh saw 16 Ki overflow,
/// `tap_missed`).
pub const CHANGE_RING_CAP: usize = 64 * 1024;

struct Ring<T> {
    q: ArrayQueue<T>,
    missed: AtomicU64,
}

/// The rings; see the module docs.
pub struct LaneRings<T> {
    rings: OnceLock<Box<[CachePadded<Ring<T>>]>>,
}

impl<T> Default for LaneRings<T> {
    fn default() -> Self {
        LaneRings {
            rings: OnceLock::new(),
        }
    }
}

/// HA sync's flow-change notices: original tuples of flows created or
/// changed.
pub type ChangeLog = LaneRings<Tuple>;

impl<T> LaneRings<T> {
    /// Starts taking items, `cap` per ring (idempotent: the first call's
    /// `cap` stays).
    pub fn enable(&self, cap: usize) {
        self.rings.get_or_init(|| {
            (0..RINGS)
                .map(|_| {
                    CachePadded::new(Ring {
                        q: ArrayQueue::new(cap.max(1)),
                        missed: AtomicU64::new(0),
                    })
                })
                .collect()
        });
    }

    /// True once [`enable`](Self::enable)d.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.rings.get().is_some()
    }

    /// Writes `item` into lane `lane`'s ring (dropped and counted when it
    /// is full; nothing when not enabled).
    #[inline]
    pub fn note(&self, lane: usize, item: T) {
        if let Some(rings) = self.rings.get() {
            let r = &rings[lane % RINGS];
            if r.q.push(item).is_err() {
                r.missed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves every pending item into `out`; returns how many.
    pub fn drain(&self, out: &mut Vec<T>) -> usize {
        let Some(rings) = self.rings.get() else {
            return 0;
        };
        let before = out.len();
        for r in rings.iter() {
            while let Some(t) = r.q.pop() {
                out.push(t);
            }
        }
        out.len() - before
    }

    /// Items waiting in lane `lane`'s ring.
    pub fn backlog(&self, lane: usize) -> usize {
        self.rings.get().map_or(0, |r| r[lane % RINGS].q.len())
    }

    /// Items dropped because their ring was full.
    pub fn missed(&self) -> u64 {
        self.rings
            .get()
            .map_or(0, |r| r.iter().map(|r| r.missed.load(Relaxed)).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u16) -> Tuple {
        Tuple {
            src: 1,
            dst: 2,
            sport: n,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn notices_are_kept_only_once_enabled_and_counted_when_full() {
        let log = ChangeLog::default();
        log.note(0, t(1));
        let mut out = Vec::new();
        assert_eq!(log.drain(&mut out), 0, "off: nothing kept");
        log.enable(CHANGE_RING_CAP);
        for n in 0..CHANGE_RING_CAP as u32 + 5 {
            log.note(3, t(n as u16));
        }
        log.note(4, t(9));
        assert_eq!(log.missed(), 5);
        assert_eq!(log.drain(&mut out), CHANGE_RING_CAP + 1);
        assert_eq!(out[0], t(0));
        assert_eq!(log.drain(&mut out), 0);
    }
}
