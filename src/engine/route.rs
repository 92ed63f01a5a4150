//! Interfaces and the routing table the engine forwards by.
//!
//! Connected routes come from the interfaces' addresses; static routes from
//! the config. Lookup is longest-prefix match over a short list sorted by
//! prefix length (gateways have a handful of routes; a trie can replace it
//! without changing callers).
//!
//! Policy routes ([`PolicyRoute`]) are routes that apply only to packets
//! from a source prefix and/or of flows with a mark: the equivalent of
//! `ip rule from ADDR lookup T` / `ip rule fwmark M lookup T` with the
//! route in table T. They are looked at first (longest destination prefix
//! among those whose selectors match); when none matches, the main table
//! decides, as Linux falls through to `main` when table T has no route.

use crate::conntrack::{HOP_TAG_BITS, HOP_TAG_MASK};
use crate::nat::{IfAddr, IfId, Prefix};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Faces the private network(s).
    Inside,
    /// Faces the public side.
    Outside,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub role: Role,
    /// Primary address (masquerade uses it; ICMP errors come from it).
    pub addr: IfAddr,
    /// Further local addresses (e.g. SNAT pool or DNAT public addresses
    /// that replies and new inbound flows arrive on).
    pub extra: Vec<u32>,
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    pub oif: IfId,
    /// Gateway; `None` for a connected route (next hop is the destination).
    pub via: Option<u32>,
}

/// Result of a route lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub oif: IfId,
    pub addr: u32,
}

/// A route that only packets from `from` and/or of flows marked `mark`
/// take (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRoute {
    pub route: Route,
    /// Source prefix the packet must have (before translation, as Linux
    /// routes in prerouting).
    pub from: Option<Prefix>,
    /// Mark the packet's flow must carry (a rule's `set_mark`).
    pub mark: Option<u8>,
}

impl PolicyRoute {
    #[inline]
    fn selects(&self, dst: u32, src: u32, mark: u8) -> bool {
        self.route.prefix.contains(dst)
            && self.from.is_none_or(|f| f.contains(src))
            && self.mark.is_none_or(|m| m == mark)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Set by [`SharedRoutes::store`]: unique among every table any engine
    /// of this process published (0 before).
    version: u64,
    /// Longest prefix first.
    routes: Vec<Route>,
    /// `(network, mask)` of each of `routes`, in the same order: what the
    /// per-packet scan compares (the mask is not rebuilt from the prefix
    /// length for every route of every packet).
    keys: Vec<(u32, u32)>,
    /// Longest prefix first; empty on most gateways.
    policy: Vec<PolicyRoute>,
}

impl RouteTable {
    /// Connected routes for `ifaces` plus `extra` static routes.
    pub fn new(ifaces: &[Interface], extra: &[Route]) -> RouteTable {
        let mut routes: Vec<Route> = ifaces
            .iter()
            .enumerate()
            .map(|(i, f)| Route {
                prefix: f.addr.network(),
                oif: i as IfId,
                via: None,
            })
            .collect();
        routes.extend_from_slice(extra);
        // Stable: among equal prefixes the first listed wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len));
        RouteTable {
            version: 0,
            keys: routes
                .iter()
                .map(|r| (r.prefix.addr, r.prefix.mask()))
                .collect(),
            routes,
            policy: Vec::new(),
        }
    }

    /// [`RouteTable::new`] plus policy routes.
    pub fn with_policy(
        ifaces: &[Interface],
        extra: &[Route],
        policy: &[PolicyRoute],
    ) -> RouteTable {
        let mut t = RouteTable::new(ifaces, extra);
        t.policy = policy.to_vec();
        t.policy
            .sort_by_key(|r| std::cmp::Reverse(r.route.prefix.len));
        t
    }

    /// The route of a packet to `dst` from `src` whose flow has `mark`:
    /// policy routes first, then the main table.
    #[inline]
    pub fn lookup_from(&self, dst: u32, src: u32, mark: u8) -> Option<NextHop> {
        if !self.policy.is_empty()
            && let Some(r) = self.policy.iter().find(|r| r.selects(dst, src, mark))
        {
            return Some(NextHop {
                oif: r.route.oif,
                addr: r.route.via.unwrap_or(dst),
            });
        }
        self.lookup(dst)
    }

    /// Names this table among every table the process published (0: not
    /// published).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn policy(&self) -> &[PolicyRoute] {
        &self.policy
    }

    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<NextHop> {
        let i = self
            .keys
            .iter()
            .position(|&(net, mask)| dst & mask == net)?;
        let r = self.routes.get(i)?;
        Some(NextHop {
            oif: r.oif,
            addr: r.via.unwrap_or(dst),
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Versions of published tables, process-wide, so that a version names
/// one table of one engine.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The table this thread read last, kept until its engine publishes
    /// another (a worker thread serves one engine).
    static CACHED: RefCell<Option<Arc<RouteTable>>> = const { RefCell::new(None) };
}

/// The routing table as the workers read it, once per packet.
///
/// An `ArcSwap` load costs about a hundred instructions (its debt list);
/// here a packet pays one atomic load of the published version and a
/// comparison with the table its thread holds, and goes through the
/// `ArcSwap` only when the table changed (a route or address change, a
/// reload). Writers are rare and go through [`store`](Self::store).
pub struct SharedRoutes {
    table: ArcSwap<RouteTable>,
    /// The version of the table last stored (written after it).
    version: AtomicU64,
}

impl SharedRoutes {
    pub fn new(t: RouteTable) -> SharedRoutes {
        let s = SharedRoutes {
            table: ArcSwap::from_pointee(RouteTable::default()),
            version: AtomicU64::new(0),
        };
        s.store(t);
        s
    }

    /// Publishes `t`; every thread's next lookup sees it.
    pub fn store(&self, mut t: RouteTable) {
        t.version = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
        let v = t.version;
        self.table.store(Arc::new(t));
        self.version.store(v, Ordering::Release);
    }

    /// The version of the table published last.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current table (an `ArcSwap` load: for the control side).
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Runs `f` on the current table, from this thread's copy when it is
    /// still the published one.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&RouteTable) -> R) -> R {
        let v = self.version.load(Ordering::Acquire);
        CACHED.with_borrow_mut(|c| match c {
            Some(t) if t.version == v => f(t),
            _ => {
                // A table at least as new as `v` (stored before `v` was).
                let t = c.insert(self.table.load_full());
                f(t)
            }
        })
    }
}

/// A next hop as a flow caches it ([`crate::conntrack::Hit::hop`]): the
/// address, the interface and the low [`HOP_TAG_BITS`] of the version of
/// the table it was looked up in; the flow's next packets take it while
/// that table is the published one. 0 (nothing cached) when the tag bits
/// are 0 or the interface does not fit in 8 bits.
#[inline]
pub fn pack_hop(hop: NextHop, version: u64) -> u64 {
    let tag = version & HOP_TAG_MASK;
    if tag == 0 || hop.oif > 0xff {
        return 0;
    }
    (hop.addr as u64) << 32 | (hop.oif as u64) << HOP_TAG_BITS | tag
}

/// The next hop of a non-zero [`pack_hop`] word.
#[inline]
pub fn unpack_hop(w: u64) -> NextHop {
    NextHop {
        oif: ((w >> HOP_TAG_BITS) & 0xff) as IfId,
        addr: (w >> 32) as u32,
    }
}

/// The tag a cached next hop must carry to be taken while `version` is
/// the published table.
#[inline]
pub fn hop_tag(version: u64) -> u32 {
    (version & HOP_TAG_MASK) as u32
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.prefix)?;
        if let Some(v) = self.via {
            write!(f, " via {}", Ipv4Addr::from(v))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, a: &str) -> Interface {
        Interface {
            name: name.into(),
            role: Role::Inside,
            addr: a.parse().unwrap(),
            extra: vec![],
            mac: None,
        }
    }

    /// A worker's copy of the table follows every store, on its own thread
    /// and on another one, and two tables (two engines) read on one thread
    /// never answer for each other.
    #[test]
    fn shared_routes_follow_stores() {
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        let oif = |r: &SharedRoutes| r.with(|t| t.lookup(a("198.51.100.7")).map(|h| h.oif));
        let lan = iface("lan", "10.0.0.1/24");
        let via = |o: IfId| Route {
            prefix: "198.51.100.0/24".parse().unwrap(),
            oif: o,
            via: None,
        };
        let one = SharedRoutes::new(RouteTable::new(std::slice::from_ref(&lan), &[via(1)]));
        let two = SharedRoutes::new(RouteTable::new(std::slice::from_ref(&lan), &[via(2)]));
        assert_eq!((oif(&one), oif(&two)), (Some(1), Some(2)));
        one.store(RouteTable::new(std::slice::from_ref(&lan), &[via(3)]));
        assert_eq!(
            (oif(&one), oif(&two), oif(&one)),
            (Some(3), Some(2), Some(3))
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(oif(&one), Some(3));
                one.store(RouteTable::new(std::slice::from_ref(&lan), &[]));
                assert_eq!(oif(&one), None);
            });
        });
        assert_eq!(oif(&one), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let ifs = [iface("lan", "10.0.0.1/24"), iface("wan", "203.0.113.1/24")];
        let def = Route {
            prefix: "0.0.0.0/0".parse().unwrap(),
            oif: 1,
            via: Some(0xcb0071fe),
        };
        let t = RouteTable::new(&ifs, &[def]);
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            t.lookup(a("10.0.0.5")),
            Some(NextHop {
                oif: 0,
                addr: a("10.0.0.5")
            })
        );
        assert_eq!(
            t.lookup(a("203.0.113.9")),
            Some(NextHop {
                oif: 1,
                addr: a("203.0.113.9")
            })
        );
        assert_eq!(
            t.lookup(a("8.8.8.8")),
            Some(NextHop {
                oif: 1,
                addr: a("203.0.113.254")
            })
        );
        let t = RouteTable::new(&ifs, &[]);
        assert_eq!(t.lookup(a("8.8.8.8")), None);
    }

    #[test]
    fn policy_routes_by_source_and_mark_then_main() {
        let ifs = [iface("lan", "10.0.0.1/24"), iface("wan", "203.0.113.1/24")];
        let a = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        let def = Route {
            prefix: "0.0.0.0/0".parse().unwrap(),
            oif: 1,
            via: Some(a("203.0.113.254")),
        };
        let to_tun = |from: Option<&str>, mark| PolicyRoute {
            route: Route {
                prefix: "0.0.0.0/0".parse().unwrap(),
                oif: 2,
                via: None,
            },
            from: from.map(|f| f.parse().unwrap()),
            mark,
        };
        let t = RouteTable::with_policy(
            &ifs,
            &[def],
            &[to_tun(Some("5.5.5.5/32"), None), to_tun(None, Some(3))],
        );
        let c = a("198.51.100.7");
        // From 5.5.5.5: into the tunnel (oif 2), next hop the destination.
        assert_eq!(
            t.lookup_from(c, a("5.5.5.5"), 0),
            Some(NextHop { oif: 2, addr: c })
        );
        // Marked 3: the tunnel too, whatever the source.
        assert_eq!(t.lookup_from(c, a("2.2.2.2"), 3).map(|h| h.oif), Some(2));
        // Neither: the main table.
        assert_eq!(
            t.lookup_from(c, a("2.2.2.2"), 1),
            Some(NextHop {
                oif: 1,
                addr: a("203.0.113.254")
            })
        );
        // A policy route with a narrower prefix than the destination's
        // falls through to main.
        let narrow = PolicyRoute {
            route: Route {
                prefix: "192.0.2.0/24".parse().unwrap(),
                oif: 2,
                via: None,
            },
            from: None,
            mark: Some(3),
        };
        let t = RouteTable::with_policy(&ifs, &[def], &[narrow]);
        assert_eq!(t.lookup_from(c, 0, 3).map(|h| h.oif), Some(1));
        assert_eq!(t.lookup_from(a("192.0.2.9"), 0, 3).map(|h| h.oif), Some(2));
    }

    #[test]
    fn a_packed_hop_unpacks_to_itself_or_is_not_cached() {
        let hop = NextHop {
            oif: 3,
            addr: u32::from(Ipv4Addr::new(203, 0, 113, 254)),
        };
        let w = pack_hop(hop, (1 << 40) + 77);
        assert_eq!(unpack_hop(w), hop);
        assert_eq!(w & HOP_TAG_MASK, hop_tag(77) as u64);
        // Tags whose low bits are 0 would match an empty word's: not cached.
        assert_eq!(pack_hop(hop, 1 << HOP_TAG_BITS), 0);
        // Interfaces past 255 do not fit the word: not cached.
        assert_eq!(pack_hop(NextHop { oif: 256, ..hop }, 77), 0);
        let all = NextHop {
            oif: 255,
            addr: u32::MAX,
        };
        assert_eq!(unpack_hop(pack_hop(all, HOP_TAG_MASK)), all);
    }
}
