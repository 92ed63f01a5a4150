//! ARP and the neighbour cache (pure: frames and `now` in, frames out).
//!
//! With the AF_XDP backend natgw owns its data interfaces: the XDP program
//! sends it ARP as well as IPv4, and natgw
//! - answers ARP requests for the addresses it owns on that interface's
//!   network (interface address, extra addresses, SNAT pool addresses);
//! - learns neighbours from the sender fields of every ARP request and
//!   reply it sees (unmodified hosts, no static entries);
//! - resolves next hops itself: a packet whose next hop is unknown is
//!   dropped and counted (`no_neighbour`) and an ARP request goes out, at
//!   most one per next hop per second; entries older than `STALE` are used
//!   while a refresh request goes out, and dropped after `EXPIRE`.

use crate::conntrack::Time;
use crate::nat::IfId;
use dashmap::DashMap;

/// Age after which an entry is refreshed (still used meanwhile).
pub const STALE_SECS: u64 = 60;
/// Age after which an entry is forgotten.
pub const EXPIRE_SECS: u64 = 300;
const REQUEST_INTERVAL: Time = Time::from_secs(1);

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet (no VLAN tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: u32,
    pub tha: [u8; 6],
    pub tpa: u32,
}

/// Parses an ARP frame (Ethernet, IPv4 over Ethernet hardware).
pub fn parse_arp(f: &[u8]) -> Option<Arp> {
    if f.len() < 42 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_ARP {
        return None;
    }
    let a = &f[14..42];
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let mac = |o: usize| -> [u8; 6] { [a[o], a[o + 1], a[o + 2], a[o + 3], a[o + 4], a[o + 5]] };
    let ip = |o: usize| u32::from_be_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    Some(Arp {
        op: u16::from_be_bytes([a[6], a[7]]),
        sha: mac(8),
        spa: ip(14),
        tha: mac(18),
        tpa: ip(24),
    })
}

/// Writes an ARP packet with its Ethernet header into `buf`; returns the
/// frame length (42), or `None` if `buf` is too small.
pub fn write_arp(buf: &mut [u8], eth_dst: [u8; 6], eth_src: [u8; 6], a: &Arp) -> Option<usize> {
    let f = buf.get_mut(..42)?;
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&eth_src);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    f[20..22].copy_from_slice(&a.op.to_be_bytes());
    f[22..28].copy_from_slice(&a.sha);
    f[28..32].copy_from_slice(&a.spa.to_be_bytes());
    f[32..38].copy_from_slice(&a.tha);
    f[38..42].copy_from_slice(&a.tpa.to_be_bytes());
    Some(42)
}

/// The reply to `req`, from `mac` (the owner of `req.tpa`).
pub fn reply_to(req: &Arp, mac: [u8; 6]) -> Arp {
    Arp {
        op: ARP_REPLY,
        sha: mac,
        spa: req.tpa,
        tha: req.sha,
        tpa: req.spa,
    }
}

/// A request for `target` from `mac`/`ip`.
pub fn request_for(target: u32, mac: [u8; 6], ip: u32) -> Arp {
    Arp {
        op: ARP_REQUEST,
        sha: mac,
        spa: ip,
        tha: [0; 6],
        tpa: target,
    }
}

pub fn is_request(a: &Arp) -> bool {
    a.op == ARP_REQUEST
}

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

    /// Forgets expired entries.
    pub fn prune(&self, now: Time) {
        self.map
            .retain(|_, e| now.saturating_sub(e.learned) < Time::from_secs(EXPIRE_SECS));
        self.asked
            .retain(|_, t| now.saturating_sub(*t) < Time::from_secs(10));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_round_trip() {
        let mut buf = [0u8; 64];
        let req = request_for(0x0a000001, [2, 0, 0, 0, 0, 9], 0x0a00000a);
        let n = write_arp(&mut buf, [0xff; 6], [2, 0, 0, 0, 0, 9], &req).unwrap();
        let parsed = parse_arp(&buf[..n]).unwrap();
        assert_eq!(parsed, req);
        assert!(is_request(&parsed));
        let rep = reply_to(&parsed, [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            (rep.spa, rep.tpa, rep.tha),
            (0x0a000001, 0x0a00000a, [2, 0, 0, 0, 0, 9])
        );
        assert!(parse_arp(&buf[..41]).is_none());
    }

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
}
