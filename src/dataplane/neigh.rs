//! The neighbour cache (pure: addresses and `now` in, decisions out; the
//! ARP frames themselves are [`crate::packet::arp`]).
//!
//! With the AF_XDP backend natgw owns its data interfaces: the XDP program
//! sends it ARP as well as IPv4, and natgw
//! - answers ARP requests for the addresses it owns on that interface's
//!   network (interface address, extra addresses, SNAT pool addresses);
//! - learns neighbours from the sender fields of every ARP request and
//!   reply it sees (unmodified hosts, no static entries);
//! - resolves next hops itself: a packet whose next hop is unknown is held
//!   by its worker (see [`worker`](super::worker)) while an ARP request
//!   goes out, at most one per next hop per second, and dropped and counted
//!   (`no_neighbour`) if no reply comes in time; entries older than `STALE`
//!   are used while a refresh request goes out, and dropped after `EXPIRE`.
//!
//! The kernel's own sockets on a data interface (natgw's health checks)
//! need the neighbours too, but the XDP program hands every ARP frame to
//! natgw, so the kernel never hears the answers to its own requests.
//! natgw does (it learns from every ARP reply it sees, whoever asked), and
//! [`KernelNeighbours`] copies what it learned into the kernel's table
//! (`ip neigh replace ADDR lladdr MAC dev IF nud reachable`) for the next
//! hops the checker is about to use.

use crate::conntrack::Time;
use crate::nat::IfId;
use dashmap::DashMap;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Age after which an entry is refreshed (still used meanwhile).
pub const STALE_SECS: u64 = 60;
/// Age after which an entry is forgotten.
pub const EXPIRE_SECS: u64 = 300;
const REQUEST_INTERVAL: Time = Time::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: [u8; 6],
    learned: Time,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Use this MAC.
    Known([u8; 6]),
    /// Use this MAC, and send a refresh request (entry is stale).
    Refresh([u8; 6]),
    /// Unknown: send a request now.
    Request,
    /// Unknown, and a request went out less than a second ago.
    Pending,
}

/// Neighbours of all interfaces, shared by the workers.
#[derive(Default)]
pub struct Neighbours {
    map: DashMap<(IfId, u32), Entry>,
    asked: DashMap<(IfId, u32), Time>,
}

impl Neighbours {
    pub fn learn(&self, ifid: IfId, ip: u32, mac: [u8; 6], now: Time) {
        if ip == 0 || mac[0] & 1 != 0 {
            return; // ARP probes (sender 0.0.0.0) and multicast senders teach nothing
        }
        self.map.insert((ifid, ip), Entry { mac, learned: now });
        self.asked.remove(&(ifid, ip));
    }

    /// Looks up `ip` on `ifid`, deciding whether a request should go out.
    pub fn resolve(&self, ifid: IfId, ip: u32, now: Time) -> Resolve {
        if let Some(e) = self.map.get(&(ifid, ip)) {
            let age = now.saturating_sub(e.learned);
            if age < Time::from_secs(STALE_SECS) {
                return Resolve::Known(e.mac);
            }
            if age < Time::from_secs(EXPIRE_SECS) {
                let mac = e.mac;
                drop(e);
                return if self.ask(ifid, ip, now) {
                    Resolve::Refresh(mac)
                } else {
                    Resolve::Known(mac)
                };
            }
        }
        if self.ask(ifid, ip, now) {
            Resolve::Request
        } else {
            Resolve::Pending
        }
    }

    /// True (and records it) if no request for `ip` went out in the last second.
    fn ask(&self, ifid: IfId, ip: u32, now: Time) -> bool {
        let mut e = self.asked.entry((ifid, ip)).or_insert(Time(0));
        if e.0 != 0 && now.saturating_sub(*e) < REQUEST_INTERVAL {
            return false;
        }
        *e = now;
        true
    }

    /// The MAC of `ip` on `ifid` and when it was learned, without asking
    /// for it (no side effects), unless it has expired.
    pub fn lookup(&self, ifid: IfId, ip: u32, now: Time) -> Option<([u8; 6], Time)> {
        let e = self.map.get(&(ifid, ip))?;
        (now.saturating_sub(e.learned) < Time::from_secs(EXPIRE_SECS)).then_some((e.mac, e.learned))
    }

    /// Forgets expired entries.
    pub fn prune(&self, now: Time) {
        self.map
            .retain(|_, e| now.saturating_sub(e.learned) < Time::from_secs(EXPIRE_SECS));
        self.asked
            .retain(|_, t| now.saturating_sub(*t) < Time::from_secs(10));
    }

    /// Learns an entry another process learnt `age` ago (a handover);
    /// too old ones are ignored.
    pub fn learn_aged(&self, ifid: IfId, ip: u32, mac: [u8; 6], age: Time, now: Time) {
        if age < Time::from_secs(EXPIRE_SECS) && now >= age {
            self.learn(ifid, ip, mac, Time(now.0 - age.0));
        }
    }

    /// Current entries: (interface, address, MAC, age).
    pub fn entries(&self, now: Time) -> Vec<(IfId, u32, [u8; 6], Time)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|e| (e.key().0, e.key().1, e.mac, now.saturating_sub(e.learned)))
            .collect();
        v.sort_by_key(|e| (e.0, e.1));
        v
    }
}

/// How often an unchanged entry is written into the kernel again (only
/// when natgw has heard from the neighbour since the last write).
pub const KERNEL_REFRESH_SECS: u64 = 15;

/// One neighbour entry for the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pushed {
    mac: [u8; 6],
    /// natgw's `learned` of the entry written.
    learned: Time,
    at: Time,
}

/// Copies neighbours natgw learned into the kernel's neighbour table, so
/// that kernel sockets on the data interfaces (the health checks) can
/// reach them while natgw owns ARP there (AF_XDP backend). Only entries
/// natgw heard from within [`STALE_SECS`] are written, as `nud reachable`:
/// the kernel then uses them for its reachable time and re-validates them
/// itself after that (its unicast probes are answered to natgw, which
/// learns from the answer, and the next sync writes the entry again).
pub struct KernelNeighbours {
    neigh: Arc<Neighbours>,
    /// Kernel interface names by [`IfId`].
    ifnames: Vec<String>,
    pushed: parking_lot::Mutex<HashMap<(IfId, u32), Pushed>>,
}

impl KernelNeighbours {
    /// `ifnames[i]` is the kernel name of interface `i` (config order).
    pub fn new(neigh: Arc<Neighbours>, ifnames: Vec<String>) -> KernelNeighbours {
        KernelNeighbours {
            neigh,
            ifnames,
            pushed: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The `ip -batch` lines that bring the kernel up to date for next
    /// hops `hops` (interface, address), and marks them written. Entries
    /// natgw does not know (or has not heard from lately) are left to the
    /// kernel's own resolution: natgw learns from the reply to the
    /// kernel's request, and a later sync writes it.
    pub fn plan(&self, hops: &[(IfId, u32)], now: Time) -> Vec<String> {
        let mut pushed = self.pushed.lock();
        let refresh = Time::from_secs(KERNEL_REFRESH_SECS);
        let mut lines = Vec::new();
        for &(ifid, ip) in hops {
            let Some(name) = self.ifnames.get(ifid as usize) else {
                continue;
            };
            let Some((mac, learned)) = self.neigh.lookup(ifid, ip, now) else {
                continue;
            };
            if now.saturating_sub(learned) >= Time::from_secs(STALE_SECS) {
                continue;
            }
            let due = match pushed.get(&(ifid, ip)) {
                None => true,
                Some(p) => {
                    p.mac != mac || (learned > p.learned && now.saturating_sub(p.at) >= refresh)
                }
            };
            if !due {
                continue;
            }
            pushed.insert(
                (ifid, ip),
                Pushed {
                    mac,
                    learned,
                    at: now,
                },
            );
            lines.push(format!(
                "neigh replace {} lladdr {} dev {name} nud reachable",
                Ipv4Addr::from(ip),
                mac_str(&mac)
            ));
        }
        pushed.retain(|_, p| now.saturating_sub(p.at) < Time::from_secs(EXPIRE_SECS));
        lines
    }

    /// Writes what [`plan`](Self::plan) finds with one `ip -batch -`.
    /// Returns how many entries were written; on error nothing counts as
    /// written, so the next sync tries again.
    pub fn sync(&self, hops: &[(IfId, u32)], now: Time) -> Result<usize, String> {
        let lines = self.plan(hops, now);
        if lines.is_empty() {
            return Ok(0);
        }
        match ip_batch(&lines) {
            Ok(()) => Ok(lines.len()),
            Err(e) => {
                self.pushed.lock().clear();
                Err(e)
            }
        }
    }
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip -force -batch -` with `lines` on stdin.
fn ip_batch(lines: &[String]) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = lines.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip -batch -` ({}, ...) failed: {}",
            lines[0],
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_learns_refreshes_and_rate_limits() {
        let n = Neighbours::default();
        let t = Time::from_secs(100);
        assert_eq!(n.resolve(0, 7, t), Resolve::Request);
        assert_eq!(n.resolve(0, 7, t.plus_secs(0)), Resolve::Pending);
        n.learn(0, 7, [2, 0, 0, 0, 0, 7], t);
        assert_eq!(n.resolve(0, 7, t), Resolve::Known([2, 0, 0, 0, 0, 7]));
        assert_eq!(
            n.resolve(1, 7, t),
            Resolve::Request,
            "neighbours are per interface"
        );
        let stale = t.plus_secs(STALE_SECS as u32);
        assert_eq!(n.resolve(0, 7, stale), Resolve::Refresh([2, 0, 0, 0, 0, 7]));
        assert_eq!(n.resolve(0, 7, stale), Resolve::Known([2, 0, 0, 0, 0, 7]));
        assert_eq!(
            n.resolve(0, 7, t.plus_secs(EXPIRE_SECS as u32)),
            Resolve::Request
        );
        n.learn(0, 8, [1, 0, 0, 0, 0, 0], t);
        assert_eq!(
            n.resolve(0, 8, t),
            Resolve::Request,
            "multicast sender not learned"
        );
    }

    #[test]
    fn kernel_copy_writes_fresh_entries_once_then_on_change_or_refresh() {
        let n = Arc::new(Neighbours::default());
        let k = KernelNeighbours::new(n.clone(), vec!["lan0".into(), "lan1".into()]);
        let t = Time::from_secs(1000);
        let ip = u32::from(Ipv4Addr::new(10, 1, 0, 11));
        let hops = [(0, ip), (1, ip + 1), (7, ip)];
        assert!(k.plan(&hops, t).is_empty(), "nothing known yet");
        n.learn(0, ip, [2, 0, 0, 0, 0, 0x11], t);
        assert_eq!(
            k.plan(&hops, t),
            vec!["neigh replace 10.1.0.11 lladdr 02:00:00:00:00:11 dev lan0 nud reachable"]
        );
        assert!(k.plan(&hops, t.plus_secs(1)).is_empty(), "written already");
        // Heard from again, but within the refresh time: not yet.
        n.learn(0, ip, [2, 0, 0, 0, 0, 0x11], t.plus_secs(5));
        assert!(k.plan(&hops, t.plus_secs(6)).is_empty());
        assert_eq!(k.plan(&hops, t.plus_secs(16)).len(), 1, "refreshed");
        // A new MAC is written at once.
        n.learn(0, ip, [2, 0, 0, 0, 0, 0x12], t.plus_secs(17));
        assert_eq!(k.plan(&hops, t.plus_secs(17)).len(), 1);
        // Not heard from for STALE_SECS: left to the kernel.
        let later = t.plus_secs(17 + STALE_SECS as u32 + KERNEL_REFRESH_SECS as u32);
        assert!(k.plan(&hops, later).is_empty());
        assert_eq!(n.lookup(1, ip + 1, later), None);
    }
}
