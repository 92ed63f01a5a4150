//! Which flow-table slots are free.
//!
//! Every thread takes and returns slot numbers through its own stripe (a
//! free list behind a lock of its own; one per thread lane), so workers
//! creating flows on different cores never wait on one another's lock nor
//! bounce one shared lock word between them (a single free list did: a
//! new flow took its mutex once per port tried, and again to give back a
//! slot whose reply tuple turned out taken).
//!
//! Freed slots are reused before the table grows: a stripe that runs dry
//! takes a batch from another stripe (the sweeper frees expired flows into
//! its own), and only when none has any does it take a batch of never-used
//! slots from the high-water mark.

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Acquire, Ordering::Relaxed};

/// One stripe per thread lane.
const STRIPES: usize = super::brlock::LANES;
/// Slots a dry stripe takes at once, from another stripe or fresh.
const BATCH: u32 = 64;

struct Stripe {
    free: Mutex<Vec<u32>>,
    /// `free.len()`, readable without the lock (to skip empty stripes).
    len: AtomicUsize,
}

impl Stripe {
    fn set_len(&self, v: &[u32]) {
        self.len.store(v.len(), Relaxed);
    }
}

/// Free-slot lists of a table of `cap` slots.
pub(super) struct SlotAlloc {
    /// Slots `0..next` have left the high-water mark (in batches, so some
    /// may still wait unused on a stripe); the rest were never used.
    next: AtomicU32,
    cap: u32,
    stripes: Box<[CachePadded<Stripe>]>,
}

impl SlotAlloc {
    pub(super) fn new(cap: u32) -> SlotAlloc {
        SlotAlloc {
            next: AtomicU32::new(0),
            cap,
            stripes: (0..STRIPES)
                .map(|_| {
                    CachePadded::new(Stripe {
                        free: Mutex::new(Vec::new()),
                        len: AtomicUsize::new(0),
                    })
                })
                .collect(),
        }
    }

    /// Every slot that was ever used is below `high()` (scans of the table
    /// stop there).
    pub(super) fn high(&self) -> u32 {
        self.next.load(Acquire)
    }

    /// A free slot, or `None` when all `cap` are in use.
    pub(super) fn take(&self) -> Option<u32> {
        let h = super::brlock::lane();
        let mine = &self.stripes[h];
        {
            let mut f = mine.free.lock();
            if let Some(i) = f.pop() {
                mine.set_len(&f);
                return Some(i);
            }
        }
        // Another stripe's freed slots, then fresh ones; at the limit, look
        // again at every stripe whatever its length said.
        for check_len in [true, false] {
            for k in 1..STRIPES {
                let other = &self.stripes[(h + k) % STRIPES];
                if check_len && other.len.load(Relaxed) == 0 {
                    continue;
                }
                let batch = {
                    let mut f = other.free.lock();
                    let keep = f.len().saturating_sub(BATCH as usize);
                    let b = f.split_off(keep);
                    other.set_len(&f);
                    b
                };
                if let Some(i) = self.keep_rest(mine, batch) {
                    return Some(i);
                }
            }
            if check_len
                && let Ok(n) = self.next.fetch_update(Relaxed, Relaxed, |n| {
                    (n < self.cap).then(|| n.saturating_add(BATCH).min(self.cap))
                })
            {
                let end = n.saturating_add(BATCH).min(self.cap);
                return self.keep_rest(mine, (n..end).rev().collect());
            }
        }
        None
    }

    /// Returns the last of `batch` and puts the rest on `mine`.
    fn keep_rest(&self, mine: &Stripe, mut batch: Vec<u32>) -> Option<u32> {
        let i = batch.pop()?;
        if !batch.is_empty() {
            let mut f = mine.free.lock();
            f.append(&mut batch);
            mine.set_len(&f);
        }
        Some(i)
    }

    /// Gives slot `idx` back (to this thread's stripe).
    pub(super) fn put(&self, idx: u32) {
        let mine = &self.stripes[super::brlock::lane()];
        let mut f = mine.free.lock();
        f.push(idx);
        mine.set_len(&f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hands_out_every_slot_once_then_none() {
        let a = SlotAlloc::new(1000);
        let got: HashSet<u32> = (0..1000).map(|_| a.take().expect("free")).collect();
        assert_eq!(got.len(), 1000);
        assert!(got.iter().all(|&i| i < 1000));
        assert_eq!(a.take(), None);
        assert_eq!(a.high(), 1000);
        a.put(17);
        assert_eq!(a.take(), Some(17));
        assert_eq!(a.take(), None);
    }

    #[test]
    fn slots_freed_on_another_thread_are_reused_before_the_table_grows() {
        let a = SlotAlloc::new(1 << 20);
        let taken: Vec<u32> = (0..500).map(|_| a.take().expect("free")).collect();
        let high = a.high();
        // Another thread (the sweeper) frees them all into its stripe.
        std::thread::scope(|s| {
            s.spawn(|| taken.iter().for_each(|&i| a.put(i)));
        });
        let mut again: Vec<u32> = (0..500).map(|_| a.take().expect("free")).collect();
        assert_eq!(a.high(), high, "no fresh slot while freed ones are left");
        again.sort_unstable();
        let mut want = taken.clone();
        want.sort_unstable();
        // The batch left on this stripe at the first take is part of it.
        let reused = again
            .iter()
            .filter(|i| want.binary_search(i).is_ok())
            .count();
        assert!(reused >= 500 - BATCH as usize, "reused {reused}");
    }

    #[test]
    fn threads_taking_and_freeing_at_once_never_share_a_slot() {
        let a = SlotAlloc::new(4096);
        let owner: Vec<AtomicUsize> = (0..4096).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for t in 1..=4usize {
                let (a, owner) = (&a, &owner);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..20_000 {
                        if held.len() < 800 && round % 3 != 0 {
                            let i = a.take().expect("4 x 800 < 4096");
                            let prev = owner[i as usize].swap(t, Relaxed);
                            assert_eq!(prev, 0, "slot {i} handed out twice");
                            held.push(i);
                        } else if let Some(i) = held.pop() {
                            owner[i as usize].store(0, Relaxed);
                            a.put(i);
                        }
                    }
                });
            }
        });
    }
}
