//! Reader-writer locks for the flow table's index shards whose readers
//! write only their own thread's cache lines ("big-reader" locks).
//!
//! A plain reader-writer lock has one lock word that every reader writes
//! (an atomic add on lock and on unlock). Two workers reading the same
//! shards (a packet of any flow may take any shard) make that word's line
//! bounce between their cores on every packet, although their flows are
//! disjoint: two threads on one table reached x0.7–1.1 of one thread on
//! table lookups alone (perf/core-microbench.md, "Two threads").
//!
//! Here each thread has a lane (one of [`LANES`], given out in turn at its
//! first lock) with a reader count per shard, in memory no other lane
//! writes. A reader adds one to its count, then checks that no writer holds
//! the shard; a writer takes the shard's mutex, raises the shard's
//! `writing` flag, then waits until every lane's count for the shard is
//! zero. Both sides use sequentially consistent operations, so at least one
//! of a reader and a writer that race sees the other (the reader then backs
//! off until the writer is done). Threads that share a lane (more than
//! [`LANES`] threads) are still correct, since the counts are counts; they
//! only share a line again.
//!
//! Crossbeam's `ShardedLock` does the same with a whole `RwLock` per lane;
//! its writer takes all eight of them, which made a new flow (two shard
//! write locks) ~460 instructions dearer and 35–50% slower. A writer here
//! is a mutex, two stores and one load per lane.
//!
//! As with most reader-writer locks, a thread must not take a shard it
//! already holds again (reading or writing): that deadlocks.

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};

/// Lanes of reader counts. Threads beyond this many share lanes.
pub const LANES: usize = 8;

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's lane (given out in turn at its first call).
#[inline]
pub(crate) fn lane() -> usize {
    LANE.with(|l| {
        let v = l.get();
        if v != usize::MAX {
            return v;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let v = NEXT.fetch_add(1, Relaxed) % LANES;
        l.set(v);
        v
    })
}

struct Shard<T> {
    writer: Mutex<()>,
    writing: AtomicBool,
    data: UnsafeCell<T>,
}

/// `n` shards of `T`, each with its own big-reader lock.
pub struct ShardLocks<T> {
    shards: Box<[CachePadded<Shard<T>>]>,
    /// Reader counts, lane after lane, `pairs` blocks per lane: no two
    /// lanes share a line, nor a pair of lines (adjacent-line prefetch
    /// fetches lines in pairs).
    readers: Box<[Block]>,
    pairs: usize,
}

/// Reader counts of 32 shards of one lane: a 128-byte pair of lines.
#[repr(align(128))]
struct Block([AtomicU32; 32]);

// SAFETY: the data of a shard is only reached through the guards below,
// which give shared access to readers and exclusive access to one writer,
// as `RwLock<T>` does (hence the same bounds).
unsafe impl<T: Send> Send for ShardLocks<T> {}
// SAFETY: as above: shared access only under a reader count, exclusive
// access only to the writer holding the mutex with no reader inside.
unsafe impl<T: Send + Sync> Sync for ShardLocks<T> {}

impl<T> ShardLocks<T> {
    pub fn new(n: usize, mut init: impl FnMut() -> T) -> ShardLocks<T> {
        let pairs = n.div_ceil(32);
        ShardLocks {
            shards: (0..n)
                .map(|_| {
                    CachePadded::new(Shard {
                        writer: Mutex::new(()),
                        writing: AtomicBool::new(false),
                        data: UnsafeCell::new(init()),
                    })
                })
                .collect(),
            readers: (0..LANES * pairs)
                .map(|_| Block(std::array::from_fn(|_| AtomicU32::new(0))))
                .collect(),
            pairs,
        }
    }

    #[inline]
    fn count(&self, lane: usize, i: usize) -> &AtomicU32 {
        &self.readers[lane * self.pairs + i / 32].0[i % 32]
    }

    /// Shared access to shard `i`.
    #[inline]
    pub fn read(&self, i: usize) -> ReadGuard<'_, T> {
        let shard = &self.shards[i];
        let count = self.count(lane(), i);
        loop {
            count.fetch_add(1, SeqCst);
            if !shard.writing.load(SeqCst) {
                return ReadGuard { shard, count };
            }
            count.fetch_sub(1, Release);
            wait_while(|| shard.writing.load(Relaxed));
        }
    }

    /// Exclusive access to shard `i`.
    pub fn write(&self, i: usize) -> WriteGuard<'_, T> {
        let shard = &self.shards[i];
        let held = shard.writer.lock();
        shard.writing.store(true, SeqCst);
        // Shard i's count in every lane, `pairs` blocks apart.
        let j = i % 32;
        let mut k = i / 32;
        while let Some(block) = self.readers.get(k) {
            wait_while(|| block.0[j].load(SeqCst) != 0);
            k += self.pairs;
        }
        WriteGuard { shard, _held: held }
    }
}

/// Spins briefly, then yields, until `busy` is false.
#[inline]
fn wait_while(busy: impl Fn() -> bool) {
    let mut spins = 0u32;
    while busy() {
        if spins < 64 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

pub struct ReadGuard<'a, T> {
    shard: &'a Shard<T>,
    count: &'a AtomicU32,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: our count is non-zero and no writer holds the shard; a
        // writer waits for the count to drop before it touches the data.
        unsafe { &*self.shard.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.count.fetch_sub(1, Release);
    }
}

pub struct WriteGuard<'a, T> {
    shard: &'a Shard<T>,
    _held: MutexGuard<'a, ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `writing` is set and every reader count was zero after
        // it was: no reader is inside, and new ones back off.
        unsafe { &*self.shard.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and the mutex excludes other writers.
        unsafe { &mut *self.shard.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        self.shard.writing.store(false, Release);
        // `_held` unlocks the writers' mutex after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Writers keep two counters of a shard equal while they hold it; no
    /// reader on any thread ever sees them differ, and no update is lost.
    /// More threads than lanes, so lanes are shared too.
    #[test]
    fn readers_never_see_a_write_half_done() {
        let locks = ShardLocks::new(4, || (0u64, 0u64));
        let torn = AtomicU64::new(0);
        let threads = LANES + 4;
        let per = 2_000u64;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (locks, torn) = (&locks, &torn);
                s.spawn(move || {
                    for k in 0..per {
                        let i = (k as usize + t) % 4;
                        if t % 2 == 0 {
                            let mut g = locks.write(i);
                            g.0 += 1;
                            for _ in 0..50 {
                                std::hint::spin_loop();
                            }
                            g.1 += 1;
                        } else {
                            let g = locks.read(i);
                            if g.0 != g.1 {
                                torn.fetch_add(1, Relaxed);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(torn.load(Relaxed), 0);
        let total: u64 = (0..4).map(|i| locks.read(i).0).sum();
        assert_eq!(total, (threads as u64 / 2) * per);
        assert!((0..4).all(|i| locks.read(i).0 == locks.read(i).1));
    }

    /// Another shard's writer does not wait for this shard's readers.
    #[test]
    fn a_reader_blocks_only_its_own_shard() {
        let locks = ShardLocks::new(2, || 0u32);
        let r = locks.read(0);
        std::thread::scope(|s| {
            s.spawn(|| *locks.write(1) += 1).join().unwrap();
        });
        assert_eq!(*r, 0);
        drop(r);
        *locks.write(0) += 5;
        assert_eq!((*locks.read(0), *locks.read(1)), (5, 1));
    }
}
