//! Interfaces and the routing table the engine forwards by.
//!
//! Connected routes come from the interfaces' addresses; static routes from
//! the config. Lookup is longest-prefix match over a short list sorted by
//! prefix length (gateways have a handful of routes; a trie can replace it
//! without changing callers).

use crate::nat::{IfAddr, IfId, Prefix};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

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

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Longest prefix first.
    routes: Vec<Route>,
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
        RouteTable { routes }
    }

    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<NextHop> {
        self.routes
            .iter()
            .find(|r| r.prefix.contains(dst))
            .map(|r| NextHop {
                oif: r.oif,
                addr: r.via.unwrap_or(dst),
            })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
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
}
