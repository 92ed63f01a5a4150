//! Persistence entries (IPVS "templates"): client network -> real server,
//! with a deadline.
//!
//! The table is split into shards by client so that workers placing
//! different clients rarely meet on a lock; a lock is held only while one
//! client is looked up, scheduled and written. A shard keeps its entries in
//! a dense vector plus an index, so the expiry sweep can resume where it
//! stopped and look at exactly `budget` entries per call (the way
//! `FlowTable::sweep` walks slots).

use super::hash::mix64;
use super::ipv4;
use super::service::ServiceKey;
use crate::conntrack::Time;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const SHARDS: usize = 16;

/// One entry as listed or snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistEntry {
    pub service: ServiceKey,
    /// Client network (the address masked by `netmask`).
    #[serde(with = "ipv4")]
    pub client: u32,
    /// The service's netmask when listed (a restore uses the service's).
    pub netmask: u8,
    #[serde(with = "ipv4")]
    pub real: u32,
    pub port: u16,
    /// Deadline on the engine clock.
    pub expires: Time,
}

/// What an expiry sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Entries looked at (at most the budget).
    pub visited: usize,
    pub removed: usize,
}

/// An entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub client: u32,
    pub addr: u32,
    pub port: u16,
    pub expires: Time,
}

struct Shard {
    index: HashMap<u32, usize, ahash::RandomState>,
    slots: Vec<Slot>,
}

/// The persistence entries of one service.
pub(super) struct PersistTable {
    seed: u64,
    shards: Box<[Mutex<Shard>]>,
    /// Where the expiry sweep goes on: (shard, position).
    cursor: Mutex<(usize, usize)>,
}

impl PersistTable {
    pub(super) fn new(seed: u64) -> PersistTable {
        let shard = |i: usize| {
            let h = ahash::RandomState::with_seeds(seed, i as u64, 0x6c62, 0x7065);
            Mutex::new(Shard {
                index: HashMap::with_hasher(h),
                slots: Vec::new(),
            })
        };
        PersistTable {
            seed,
            shards: (0..SHARDS).map(shard).collect(),
            cursor: Mutex::new((0, 0)),
        }
    }

    /// Places `client` under its shard's lock: the recorded server when
    /// the entry is live and `keep` accepts it (returning its position),
    /// else what `pick` chooses, recorded. Either way the deadline becomes
    /// `deadline`. An entry nobody can replace is removed.
    pub(super) fn place(
        &self,
        client: u32,
        now: Time,
        deadline: Time,
        keep: impl FnOnce(u32, u16) -> Option<usize>,
        pick: impl FnOnce() -> Option<(usize, u32, u16)>,
    ) -> Option<usize> {
        let mut sh = self.shard(client).lock();
        let at = sh.index.get(&client).copied();
        if let Some(p) = at {
            let s = sh.slots[p];
            if s.expires > now
                && let Some(i) = keep(s.addr, s.port)
            {
                sh.slots[p].expires = deadline;
                return Some(i);
            }
        }
        let Some((i, addr, port)) = pick() else {
            if let Some(p) = at {
                sh.remove_at(p);
            }
            return None;
        };
        let slot = Slot {
            client,
            addr,
            port,
            expires: deadline,
        };
        sh.put(slot);
        Some(i)
    }

    /// Pushes the deadline of `client`'s entry to at least `deadline`.
    pub(super) fn touch(&self, client: u32, deadline: Time) -> bool {
        let mut sh = self.shard(client).lock();
        let Some(p) = sh.index.get(&client).copied() else {
            return false;
        };
        let e = &mut sh.slots[p].expires;
        *e = (*e).max(deadline);
        true
    }

    /// Writes an entry (restore from a snapshot).
    pub(super) fn insert(&self, s: Slot) {
        self.shard(s.client).lock().put(s);
    }

    /// Live entries, by client.
    pub(super) fn entries(&self, now: Time) -> Vec<Slot> {
        let mut out: Vec<Slot> = self
            .shards
            .iter()
            .flat_map(|sh| {
                let sh = sh.lock();
                sh.slots
                    .iter()
                    .filter(|s| s.expires > now)
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|s| s.client);
        out
    }

    /// Looks at up to `budget` entries from where the last sweep stopped
    /// and removes those that expired by `now` or whose server `exists`
    /// no longer knows.
    pub(super) fn expire(
        &self,
        now: Time,
        budget: usize,
        exists: impl Fn(u32, u16) -> bool,
    ) -> Sweep {
        let mut cur = self.cursor.lock();
        let mut sw = Sweep::default();
        // Each shard at most once more than a full round, so an empty or
        // small table ends the call.
        for _ in 0..=SHARDS {
            if sw.visited >= budget {
                break;
            }
            let mut sh = self.shards[cur.0].lock();
            while cur.1 < sh.slots.len() && sw.visited < budget {
                sw.visited += 1;
                let s = sh.slots[cur.1];
                if s.expires <= now || !exists(s.addr, s.port) {
                    // The last entry moves here; look at this position again.
                    sh.remove_at(cur.1);
                    sw.removed += 1;
                } else {
                    cur.1 += 1;
                }
            }
            if cur.1 >= sh.slots.len() {
                *cur = ((cur.0 + 1) % SHARDS, 0);
            }
        }
        sw
    }

    /// Removes every entry whose server `gone` names; returns how many.
    pub(super) fn purge(&self, gone: impl Fn(u32, u16) -> bool) -> usize {
        let mut n = 0;
        for sh in self.shards.iter() {
            let mut sh = sh.lock();
            let mut p = 0;
            while p < sh.slots.len() {
                if gone(sh.slots[p].addr, sh.slots[p].port) {
                    sh.remove_at(p);
                    n += 1;
                } else {
                    p += 1;
                }
            }
        }
        n
    }

    fn shard(&self, client: u32) -> &Mutex<Shard> {
        &self.shards[(mix64(self.seed ^ client as u64) % SHARDS as u64) as usize]
    }
}

impl Shard {
    fn put(&mut self, s: Slot) {
        match self.index.get(&s.client) {
            Some(&p) => self.slots[p] = s,
            None => {
                self.index.insert(s.client, self.slots.len());
                self.slots.push(s);
            }
        }
    }

    fn remove_at(&mut self, p: usize) {
        let gone = self.slots.swap_remove(p);
        self.index.remove(&gone.client);
        if let Some(moved) = self.slots.get(p) {
            self.index.insert(moved.client, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(t: &PersistTable, n: u32, expires: impl Fn(u32) -> u64) {
        for c in 0..n {
            t.insert(Slot {
                client: c,
                addr: 1,
                port: 80,
                expires: Time(expires(c)),
            });
        }
    }

    #[test]
    fn place_keeps_replaces_and_forgets() {
        let t = PersistTable::new(9);
        let (now, later) = (Time(10), Time(100));
        assert_eq!(
            t.place(7, now, later, |_, _| unreachable!(), || Some((2, 5, 80))),
            Some(2)
        );
        // Live and accepted: kept.
        assert_eq!(
            t.place(
                7,
                now,
                later,
                |a, p| (a == 5 && p == 80).then_some(2),
                || None
            ),
            Some(2)
        );
        // Refused: re-picked and rewritten.
        assert_eq!(
            t.place(7, now, later, |_, _| None, || Some((0, 6, 80))),
            Some(0)
        );
        assert_eq!(t.entries(now)[0].addr, 6);
        // Refused and nothing to pick: forgotten.
        assert_eq!(t.place(7, now, later, |_, _| None, || None), None);
        assert!(t.entries(now).is_empty());
        // Expired entries are never kept.
        t.place(8, now, Time(20), |_, _| None, || Some((1, 5, 80)));
        let kept = |_, _| -> Option<usize> { panic!("expired entry offered") };
        assert_eq!(
            t.place(8, Time(20), later, kept, || Some((3, 7, 80))),
            Some(3)
        );
    }

    #[test]
    fn sweep_is_bounded_and_covers_everything() {
        let t = PersistTable::new(1);
        fill(&t, 1000, |c| if c % 2 == 0 { 5 } else { 50 });
        let now = Time(10);
        let mut removed = 0;
        for _ in 0..20 {
            let sw = t.expire(now, 64, |_, _| true);
            assert!(sw.visited <= 64);
            removed += sw.removed;
        }
        assert_eq!(removed, 500);
        assert_eq!(t.entries(now).len(), 500);
        // Entries of a server that went are swept too.
        let sw = t.expire(now, 10_000, |a, _| a != 1);
        assert_eq!(sw.removed, 500);
        // An empty table returns at once.
        assert_eq!(t.expire(now, 100, |_, _| true), Sweep::default());
    }

    #[test]
    fn touch_and_purge() {
        let t = PersistTable::new(1);
        fill(&t, 10, |_| 100);
        assert!(t.touch(3, Time(500)));
        assert!(t.touch(4, Time(50)));
        assert!(!t.touch(99, Time(500)));
        let live = t.entries(Time(100));
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].client, 3);
        assert_eq!(t.purge(|a, _| a == 1), 10);
        assert!(t.entries(Time(0)).is_empty());
    }

    #[test]
    fn entries_round_trip_through_serde() {
        let e = PersistEntry {
            service: ServiceKey {
                vip: 0xc000_0201,
                port: 80,
                proto: 6,
            },
            client: 0x0a01_0200,
            netmask: 24,
            real: 0x0a00_0001,
            port: 8080,
            expires: Time::from_secs(5),
        };
        let j = serde_json::to_string(&e).unwrap();
        assert!(
            j.contains("\"10.1.2.0\"") && j.contains("\"192.0.2.1\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<PersistEntry>(&j).unwrap(), e);
    }
}
