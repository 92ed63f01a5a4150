//! Named address sets (like `ipset hash:net` with `timeout`): addresses and
//! prefixes that rules match against, changed at run time. Entries may
//! carry a deadline; an expired entry stops matching at once and is pruned
//! later. A rule holds an `Arc` to its set, so a change is seen by the next
//! new flow and a ruleset reload keeps the set's contents.

use super::addr::Prefix;
use crate::conntrack::Time;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One member as listed or snapshotted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEntry {
    pub prefix: String,
    /// Deadline on the engine clock, `None` for a permanent entry.
    pub expires: Option<Time>,
}

#[derive(Default)]
struct Members {
    /// Prefix length -> network -> deadline (0 = never).
    by_len: BTreeMap<u8, HashMap<u32, u64>>,
}

/// A named, mutable address set.
pub struct AddrSet {
    name: String,
    /// Timeout given to entries added without one (0 = permanent).
    default_timeout: u32,
    members: RwLock<Members>,
    /// The entries the config file lists (a reload replaces these and
    /// leaves entries added at run time alone).
    from_config: RwLock<Vec<Prefix>>,
}

impl AddrSet {
    pub fn new(name: &str, default_timeout: u32) -> AddrSet {
        AddrSet {
            name: name.to_string(),
            default_timeout,
            members: RwLock::default(),
            from_config: RwLock::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn default_timeout(&self) -> u32 {
        self.default_timeout
    }

    /// Adds (or refreshes) `p`. `timeout` `None` uses the set's default;
    /// `Some(0)` makes the entry permanent.
    pub fn add(&self, p: Prefix, timeout: Option<u32>, now: Time) {
        let t = timeout.unwrap_or(self.default_timeout);
        let deadline = if t == 0 { 0 } else { now.plus_secs(t).0.max(1) };
        self.members
            .write()
            .by_len
            .entry(p.len)
            .or_default()
            .insert(p.addr, deadline);
    }

    /// Adds a permanent entry listed in the config file.
    pub fn add_config(&self, p: Prefix) {
        self.add(p, Some(0), Time(0));
        self.from_config.write().push(p);
    }

    /// Makes the config-listed entries `new` (a reload): entries the old
    /// config listed and the new one does not are removed; entries added
    /// at run time stay.
    pub fn replace_config(&self, new: &[Prefix]) {
        let old = std::mem::take(&mut *self.from_config.write());
        for p in old.iter().filter(|p| !new.contains(p)) {
            self.del(*p);
        }
        for p in new {
            self.add_config(*p);
        }
    }

    /// The entries the config file lists.
    pub fn config_entries(&self) -> Vec<Prefix> {
        self.from_config.read().clone()
    }

    /// Removes `p`; returns whether it was a member.
    pub fn del(&self, p: Prefix) -> bool {
        let mut m = self.members.write();
        let found = m
            .by_len
            .get_mut(&p.len)
            .and_then(|t| t.remove(&p.addr))
            .is_some();
        m.by_len.retain(|_, t| !t.is_empty());
        found
    }

    pub fn flush(&self) {
        self.members.write().by_len.clear();
    }

    /// True if a live entry covers `addr` at `now`. Longest prefixes first.
    pub fn contains(&self, addr: u32, now: Time) -> bool {
        let m = self.members.read();
        m.by_len.iter().rev().any(|(&len, t)| {
            let p = Prefix::new(addr.into(), len);
            t.get(&p.addr).is_some_and(|&d| d == 0 || d > now.0)
        })
    }

    /// Drops expired entries; returns how many.
    pub fn prune(&self, now: Time) -> usize {
        let mut m = self.members.write();
        let mut n = 0;
        for t in m.by_len.values_mut() {
            let before = t.len();
            t.retain(|_, &mut d| d == 0 || d > now.0);
            n += before - t.len();
        }
        m.by_len.retain(|_, t| !t.is_empty());
        n
    }

    /// Live entries at `now`, sorted.
    pub fn list(&self, now: Time) -> Vec<SetEntry> {
        let m = self.members.read();
        let mut out: Vec<(Prefix, u64)> = m
            .by_len
            .iter()
            .flat_map(|(&len, t)| t.iter().map(move |(&a, &d)| (Prefix { addr: a, len }, d)))
            .filter(|&(_, d)| d == 0 || d > now.0)
            .collect();
        out.sort();
        out.into_iter()
            .map(|(p, d)| SetEntry {
                prefix: p.to_string(),
                expires: (d != 0).then_some(Time(d)),
            })
            .collect()
    }

    /// Live entries at `now` with their deadlines (`None`: permanent),
    /// sorted; what a snapshot stores.
    pub fn members(&self, now: Time) -> Vec<(Prefix, Option<Time>)> {
        let m = self.members.read();
        let mut out: Vec<(Prefix, Option<Time>)> = m
            .by_len
            .iter()
            .flat_map(|(&len, t)| t.iter().map(move |(&a, &d)| (Prefix { addr: a, len }, d)))
            .filter(|&(_, d)| d == 0 || d > now.0)
            .map(|(p, d)| (p, (d != 0).then_some(Time(d))))
            .collect();
        out.sort();
        out
    }

    /// Adds (or refreshes) `p` with a deadline on the engine clock
    /// (`None`: permanent); what a snapshot restore uses.
    pub fn add_until(&self, p: Prefix, deadline: Option<Time>) {
        let d = deadline.map_or(0, |t| t.0.max(1));
        self.members
            .write()
            .by_len
            .entry(p.len)
            .or_default()
            .insert(p.addr, d);
    }
}

/// All sets by name, shared between rulesets.
pub type Sets = HashMap<String, Arc<AddrSet>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> u32 {
        s.parse::<std::net::Ipv4Addr>().unwrap().into()
    }

    #[test]
    fn members_prefixes_and_timeouts() {
        let s = AddrSet::new("blocked", 300);
        let t0 = Time::from_secs(1000);
        s.add("192.0.2.0/24".parse().unwrap(), Some(0), t0);
        s.add("198.51.100.7".parse().unwrap(), None, t0);
        assert!(s.contains(a("192.0.2.200"), t0));
        assert!(s.contains(a("198.51.100.7"), t0));
        assert!(!s.contains(a("198.51.100.8"), t0));
        // The /32 lives 300 s; the /24 is permanent.
        assert!(s.contains(a("198.51.100.7"), t0.plus_secs(299)));
        assert!(!s.contains(a("198.51.100.7"), t0.plus_secs(300)));
        assert!(s.contains(a("192.0.2.1"), t0.plus_secs(10_000)));
        assert_eq!(s.list(t0.plus_secs(300)).len(), 1);
        assert_eq!(s.prune(t0.plus_secs(300)), 1);
        assert!(s.del("192.0.2.0/24".parse().unwrap()));
        assert!(!s.contains(a("192.0.2.1"), t0));
    }
}
