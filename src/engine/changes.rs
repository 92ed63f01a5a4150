//! Flow-change notices for HA state sync.
//!
//! A worker that creates a flow or moves a TCP flow to another state
//! writes the flow's original tuple into a bounded lock-free ring (one per
//! counter lane, so two workers rarely share one); the sync thread
//! ([`crate::ha`]) drains the rings, reads each flow's current record from
//! the table and streams it to the peer. A notice costs the worker one
//! `push`; when a ring is full the notice is dropped and counted
//! ([`ChangeLog::missed`]), never waited for: the sync thread's periodic
//! refresh (flows touched since the last one) sends that flow anyway, only
//! later. Until [`ChangeLog::enable`] (no `[ha]` section) nothing is
//! allocated and a notice is one atomic load.

use crate::packet::Tuple;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Rings (workers pick theirs by counter lane, modulo this).
const RINGS: usize = 8;
/// Notices per ring (24 bytes each: 12 MiB for all). The sync thread
/// drains them every millisecond when idle, but a refresh or a bulk keeps
/// it busy for a while: at 125k new flows per second on one worker this
/// holds ~0.5 s of them (bench/ha.sh saw 16 Ki overflow, `tap_missed`).
const RING_CAP: usize = 64 * 1024;

struct Ring {
    q: ArrayQueue<Tuple>,
    missed: AtomicU64,
}

/// The rings; see the module docs.
#[derive(Default)]
pub struct ChangeLog {
    rings: OnceLock<Box<[CachePadded<Ring>]>>,
}

impl ChangeLog {
    /// Starts taking notices (idempotent).
    pub fn enable(&self) {
        self.rings.get_or_init(|| {
            (0..RINGS)
                .map(|_| {
                    CachePadded::new(Ring {
                        q: ArrayQueue::new(RING_CAP),
                        missed: AtomicU64::new(0),
                    })
                })
                .collect()
        });
    }

    /// True once [`enable`](Self::enable)d.
    pub fn enabled(&self) -> bool {
        self.rings.get().is_some()
    }

    /// The flow whose original tuple is `orig` was created or changed.
    #[inline]
    pub fn note(&self, lane: usize, orig: Tuple) {
        if let Some(rings) = self.rings.get() {
            let r = &rings[lane % RINGS];
            if r.q.push(orig).is_err() {
                r.missed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves every pending notice into `out`; returns how many.
    pub fn drain(&self, out: &mut Vec<Tuple>) -> usize {
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

    /// Notices dropped because their ring was full.
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
        log.enable();
        for n in 0..RING_CAP as u32 + 5 {
            log.note(3, t(n as u16));
        }
        log.note(4, t(9));
        assert_eq!(log.missed(), 5);
        assert_eq!(log.drain(&mut out), RING_CAP + 1);
        assert_eq!(out[0], t(0));
        assert_eq!(log.drain(&mut out), 0);
    }
}
