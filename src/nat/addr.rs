//! Address prefixes, address pools and port ranges, with the textual forms
//! the config file uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix `a.b.c.d/len` (a bare address is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Prefix {
    pub fn new(addr: Ipv4Addr, len: u8) -> Prefix {
        let p = Prefix {
            addr: u32::from(addr),
            len: len.min(32),
        };
        Prefix {
            addr: p.addr & p.mask(),
            ..p
        }
    }

    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len as u32)
        }
    }

    #[inline]
    pub fn contains(&self, a: u32) -> bool {
        a & self.mask() == self.addr
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.len as u32)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => {
                let len: u8 = l
                    .parse()
                    .map_err(|_| format!("bad prefix length in `{s}`"))?;
                if len > 32 {
                    return Err(format!("prefix length {len} is over 32 in `{s}`"));
                }
                (a, len)
            }
            None => (s, 32),
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let p = Prefix::new(addr, l);
        if p.addr != u32::from(addr) {
            return Err(format!("`{s}` has host bits set (did you mean {p}?)"));
        }
        Ok(p)
    }
}

/// An interface address with its prefix length, host bits kept
/// (`10.0.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    pub addr: u32,
    pub len: u8,
}

impl IfAddr {
    pub fn network(&self) -> Prefix {
        Prefix::new(Ipv4Addr::from(self.addr), self.len)
    }
}

impl FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<IfAddr, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` needs a prefix length, like 10.0.0.1/24"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("bad prefix length in `{s}`"))?;
        if len > 32 {
            return Err(format!("prefix length {len} is over 32 in `{s}`"));
        }
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        Ok(IfAddr {
            addr: addr.into(),
            len,
        })
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// An inclusive port range `lo-hi` (a single port is `p-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };
    /// Default range for source NAT of TCP/UDP (unprivileged ports).
    pub const NAT_DEFAULT: PortRange = PortRange {
        lo: 1024,
        hi: 65535,
    };
    /// ICMP identifiers (any value).
    pub const ICMP_IDS: PortRange = PortRange { lo: 1, hi: 65535 };
    /// TCP source ports of natgw's health checks (`health`).
    /// Check connections are kernel sockets on the gateway, so replies
    /// to these ports on the gateway's interface addresses belong to the
    /// kernel: the XDP program passes them up, the stop guard accepts them,
    /// the TUN backend routes them to the `local` table, and natgw's own
    /// source NAT never hands out a TCP port from this range (nor keeps
    /// an inside port in it). Just above Linux's default ephemeral range
    /// (`ip_local_port_range` 32768-60999), so the kernel's own sockets
    /// normally stay out of it. Do not publish services on these ports
    /// of the gateway's interface addresses.
    pub const HEALTH_CHECK: PortRange = PortRange {
        lo: 61_000,
        hi: 61_999,
    };

    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }

    pub fn len(&self) -> u32 {
        self.hi as u32 - self.lo as u32 + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th port of the range, wrapping.
    #[inline]
    pub fn nth(&self, i: u32) -> u16 {
        (self.lo as u32 + i % self.len()) as u16
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let port = |t: &str| {
            t.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{t}` is not a port (0-65535)"))
        };
        let r = match s.split_once('-') {
            Some((a, b)) => PortRange {
                lo: port(a)?,
                hi: port(b)?,
            },
            None => {
                let p = port(s)?;
                PortRange { lo: p, hi: p }
            }
        };
        if r.lo > r.hi {
            return Err(format!("port range `{s}` runs backwards"));
        }
        Ok(r)
    }
}

/// A pool of source addresses: ranges `lo..=hi`, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrPool {
    ranges: Vec<(u32, u32)>,
    total: u64,
}

impl AddrPool {
    pub fn push(&mut self, lo: u32, hi: u32) {
        self.ranges.push((lo, hi));
        self.total += (hi - lo) as u64 + 1;
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    /// The pool as inclusive `(first, last)` address ranges.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `i`-th address of the pool (wrapping).
    pub fn nth(&self, i: u64) -> u32 {
        if self.total == 0 {
            return 0;
        }
        let mut i = i % self.total;
        for &(lo, hi) in &self.ranges {
            let n = (hi - lo) as u64 + 1;
            if i < n {
                return lo + i as u32;
            }
            i -= n;
        }
        self.ranges[0].0
    }

    pub fn contains(&self, a: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    /// Parses one pool element: an address, `a-b` range or a prefix.
    pub fn add_str(&mut self, s: &str) -> Result<(), String> {
        if let Some((a, b)) = s.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("`{b}` is not an IPv4 address"))?;
            if u32::from(a) > u32::from(b) {
                return Err(format!("address range `{s}` runs backwards"));
            }
            self.push(a.into(), b.into());
        } else {
            let p: Prefix = s.parse()?;
            self.push(p.addr, p.addr + (p.size() - 1) as u32);
        }
        Ok(())
    }
}

impl fmt::Display for AddrPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{}", Ipv4Addr::from(lo))?;
            } else {
                write!(f, "{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "10.0.0.0/24".parse().unwrap();
        assert!(p.contains(u32::from(Ipv4Addr::new(10, 0, 0, 77))));
        assert!(!p.contains(u32::from(Ipv4Addr::new(10, 0, 1, 1))));
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().mask(), 0);
        assert_eq!("1.2.3.4".parse::<Prefix>().unwrap().len, 32);
        assert!(
            "10.0.0.1/24"
                .parse::<Prefix>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "1024-65535".parse().unwrap();
        assert_eq!(r.len(), 64512);
        assert_eq!(r.nth(64512), 1024);
        assert_eq!(
            "80".parse::<PortRange>().unwrap(),
            PortRange { lo: 80, hi: 80 }
        );
        assert!("90-80".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn pools() {
        let mut p = AddrPool::default();
        p.add_str("198.51.100.10-198.51.100.11").unwrap();
        p.add_str("203.0.113.0/31").unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(Ipv4Addr::from(p.nth(2)), Ipv4Addr::new(203, 0, 113, 0));
        assert_eq!(Ipv4Addr::from(p.nth(5)), Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(
            p.to_string(),
            "198.51.100.10-198.51.100.11,203.0.113.0-203.0.113.1"
        );
    }
}
