//! Rules and the immutable ruleset.
//!
//! The first packet of a flow walks the ordered rule list twice, the way a
//! packet crosses nftables' `prerouting` and `postrouting` NAT chains:
//!
//! 1. **Destination phase** (before routing): `dnat`, the inbound half of
//!    `netmap`, `accept` and `drop`. Rules that match `oif` are skipped
//!    (the output interface is not known yet), and so are `snat` and
//!    `masquerade`.
//! 2. **Source phase** (after routing, seeing the translated destination):
//!    `snat`, `masquerade`, the outbound half of `netmap`, `accept` and
//!    `drop`; `dnat` rules are skipped.
//!
//! In each phase the first matching rule decides. `accept` means "no
//! translation in this phase"; `drop` drops the packet and creates no flow.
//! Later packets of the flow never see the rules again: they keep the
//! translation the flow was created with, whatever the ruleset becomes.

use super::addr::{AddrPool, PortRange, Prefix};
use super::sets::AddrSet;
use crate::conntrack::Time;
use crate::packet::Tuple;
use std::fmt;
use std::sync::Arc;

/// Index of an interface in the engine's interface table.
pub type IfId = u16;

/// What a rule matches. Empty fields match anything.
#[derive(Clone, Default)]
pub struct Match {
    pub iif: Option<IfId>,
    pub oif: Option<IfId>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub proto: Option<u8>,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
    pub src_set: Option<Arc<AddrSet>>,
    pub dst_set: Option<Arc<AddrSet>>,
    /// The flow's mark so far (set by the destination phase's rule).
    pub mark: Option<u8>,
    /// Not a match: the mark a matching rule sets on the new flow (like
    /// `ct mark set`); the source phase's rule overrides the destination
    /// phase's when both set one.
    pub set_mark: Option<u8>,
}

/// Source NAT parameters shared by `snat` and `masquerade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatSpec {
    /// Addresses to use; empty for masquerade (the output interface's).
    pub pool: AddrPool,
    /// Ports for TCP/UDP when given (ICMP identifiers use their whole
    /// range). `None`: keep the inside port when free, else 1024-65535.
    pub ports: Option<PortRange>,
    /// Same inside address -> same pool address, every time.
    pub persistent: bool,
    /// UDP endpoint-independent mapping (RFC 4787 EIM).
    pub eim: bool,
    /// With `eim`: let any outside host reach the mapping (EIF), not just
    /// hosts the inside endpoint has sent to.
    pub eif: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Snat(SnatSpec),
    Masquerade(SnatSpec),
    /// Destination to `addr`, and to `port` for TCP/UDP when given.
    Dnat {
        addr: u32,
        port: Option<u16>,
    },
    /// 1:1 prefix mapping: `inside` <-> `outside`, host bits kept.
    /// Outbound flows from `inside` get their source mapped; new inbound
    /// flows to `outside` get their destination mapped back.
    Netmap {
        inside: Prefix,
        outside: Prefix,
    },
    Accept,
    Drop,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Snat(_) => "snat",
            Action::Masquerade(_) => "masquerade",
            Action::Dnat { .. } => "dnat",
            Action::Netmap { .. } => "netmap",
            Action::Accept => "accept",
            Action::Drop => "drop",
        }
    }
}

#[derive(Clone)]
pub struct Rule {
    /// Optional name from the config, for listings and logs.
    pub name: Option<String>,
    pub m: Match,
    pub action: Action,
    /// Config line, for `natgw check` output.
    pub line: usize,
}

/// The facts a new flow is matched on.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The tuple as it stands in this phase (destination already
    /// translated in the source phase).
    pub tuple: Tuple,
    pub iif: IfId,
    /// Known in the source phase only.
    pub oif: Option<IfId>,
    pub now: Time,
    /// The new flow's mark so far (0: none).
    pub mark: u8,
}

/// Decision of the destination phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstNat {
    /// No rule matched (or `accept`): destination unchanged.
    None,
    To {
        addr: u32,
        port: Option<u16>,
    },
    Drop,
}

/// Decision of the source phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrcNat<'a> {
    /// No rule matched.
    Unmatched,
    /// An `accept` rule: leave the source alone.
    Accept,
    Snat(&'a SnatSpec),
    Masquerade(&'a SnatSpec),
    /// Netmap: this exact address (port kept if free).
    Addr(u32),
    Drop,
}

impl Match {
    fn matches(&self, m: &Meta, src_addr_check: bool) -> bool {
        let t = &m.tuple;
        let has_ports = matches!(
            t.proto,
            crate::packet::proto::TCP | crate::packet::proto::UDP
        );
        self.iif.is_none_or(|i| i == m.iif)
            && self.oif.is_none_or(|o| Some(o) == m.oif)
            && (!src_addr_check || self.src.is_none_or(|p| p.contains(t.src)))
            && self.dst.is_none_or(|p| p.contains(t.dst))
            && self.proto.is_none_or(|p| p == t.proto)
            && self.sport.is_none_or(|r| has_ports && r.contains(t.sport))
            && self.dport.is_none_or(|r| has_ports && r.contains(t.dport))
            && self
                .src_set
                .as_ref()
                .is_none_or(|s| s.contains(t.src, m.now))
            && self
                .dst_set
                .as_ref()
                .is_none_or(|s| s.contains(t.dst, m.now))
            && self.mark.is_none_or(|k| k == m.mark)
    }
}

/// An ordered, immutable list of rules. Replacing the ruleset means
/// building a new one and swapping an `Arc` (see `engine::Engine`).
#[derive(Clone, Default)]
pub struct Ruleset {
    pub rules: Vec<Rule>,
}

impl Ruleset {
    /// Destination phase; returns the decision and the deciding rule.
    pub fn dst_nat(&self, m: &Meta) -> (DstNat, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.m.oif.is_some() {
                continue;
            }
            let d = match &r.action {
                Action::Snat(_) | Action::Masquerade(_) => continue,
                Action::Netmap { inside, outside } => {
                    // Inbound half: match the destination against `outside`
                    // (the rule's `src` is the inside prefix, not a match).
                    if !outside.contains(m.tuple.dst) || !r.m.matches(m, false) {
                        continue;
                    }
                    let host = m.tuple.dst & !outside.mask();
                    DstNat::To {
                        addr: inside.addr | host,
                        port: None,
                    }
                }
                _ if !r.m.matches(m, true) => continue,
                Action::Dnat { addr, port } => DstNat::To {
                    addr: *addr,
                    port: *port,
                },
                Action::Accept => DstNat::None,
                Action::Drop => DstNat::Drop,
            };
            return (d, Some(i));
        }
        (DstNat::None, None)
    }

    /// Source phase; returns the decision and the deciding rule.
    pub fn src_nat(&self, m: &Meta) -> (SrcNat<'_>, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if matches!(r.action, Action::Dnat { .. }) || !r.m.matches(m, true) {
                continue;
            }
            let d = match &r.action {
                Action::Snat(s) => SrcNat::Snat(s),
                Action::Masquerade(s) => SrcNat::Masquerade(s),
                Action::Netmap { inside, outside } => {
                    SrcNat::Addr(outside.addr | (m.tuple.src & !inside.mask()))
                }
                Action::Accept => SrcNat::Accept,
                Action::Drop => SrcNat::Drop,
                Action::Dnat { .. } => continue,
            };
            return (d, Some(i));
        }
        (SrcNat::Unmatched, None)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Renders a rule the way `natgw check` prints the effective ruleset.
pub struct RuleDisplay<'a> {
    pub rule: &'a Rule,
    pub ifname: &'a dyn Fn(IfId) -> String,
}

impl fmt::Display for RuleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.rule;
        let m = &r.m;
        let mut parts: Vec<String> = Vec::new();
        if let Some(i) = m.iif {
            parts.push(format!("iif {}", (self.ifname)(i)));
        }
        if let Some(o) = m.oif {
            parts.push(format!("oif {}", (self.ifname)(o)));
        }
        if let Some(p) = m.proto {
            parts.push(crate::packet::proto_name(p).to_string());
        }
        if let Some(p) = m.src {
            parts.push(format!("src {p}"));
        }
        if let Some(p) = m.dst {
            parts.push(format!("dst {p}"));
        }
        if let Some(s) = &m.src_set {
            parts.push(format!("src @{}", s.name()));
        }
        if let Some(s) = &m.dst_set {
            parts.push(format!("dst @{}", s.name()));
        }
        if let Some(r) = m.sport {
            parts.push(format!("sport {r}"));
        }
        if let Some(r) = m.dport {
            parts.push(format!("dport {r}"));
        }
        if parts.is_empty() {
            parts.push("any".into());
        }
        let action = match &r.action {
            Action::Snat(s) => format!("snat to {}{}", s.pool, snat_opts(s)),
            Action::Masquerade(s) => format!("masquerade{}", snat_opts(s)),
            Action::Dnat { addr, port } => match port {
                Some(p) => format!("dnat to {}:{p}", std::net::Ipv4Addr::from(*addr)),
                None => format!("dnat to {}", std::net::Ipv4Addr::from(*addr)),
            },
            Action::Netmap { inside, outside } => format!("netmap {inside} <-> {outside}"),
            Action::Accept => "accept".into(),
            Action::Drop => "drop".into(),
        };
        write!(f, "{} -> {action}", parts.join(" "))?;
        if let Some(n) = &r.name {
            write!(f, "  # {n}")?;
        }
        Ok(())
    }
}

fn snat_opts(s: &SnatSpec) -> String {
    let mut o = match s.ports {
        Some(p) => format!(" ports {p}"),
        None => String::new(),
    };
    if s.persistent {
        o.push_str(" persistent");
    }
    if s.eim {
        o.push_str(if s.eif {
            " udp-mapping endpoint-independent (filtering open)"
        } else {
            " udp-mapping endpoint-independent"
        });
    }
    o
}
