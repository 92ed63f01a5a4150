//! Text renderings shared by the CLI commands: flows the way
//! `conntrack -L` prints them, and the effective config.

use super::config::Config;
use crate::conntrack::{FlowRecord, Time};
use crate::engine::flag_names;
use crate::nat::RuleDisplay;
use crate::packet::{Tuple, proto};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

fn tuple_fields(t: &Tuple) -> String {
    match t.proto {
        proto::ICMP => {
            let (ty, id) = if t.sport != 0 || t.dport == 0 {
                (8, t.sport)
            } else {
                (0, t.dport)
            };
            format!(
                "src={} dst={} type={ty} code=0 id={id}",
                t.src_ip(),
                t.dst_ip()
            )
        }
        proto::TCP | proto::UDP => format!(
            "src={} dst={} sport={} dport={}",
            t.src_ip(),
            t.dst_ip(),
            t.sport,
            t.dport
        ),
        _ => format!("src={} dst={}", t.src_ip(), t.dst_ip()),
    }
}

/// One flow in `conntrack -L` style:
/// `tcp 6 431999 ESTABLISHED src=.. dst=.. sport=.. dport=.. packets=.. bytes=.. src=.. ... [ASSURED]`.
pub fn flow_line(r: &FlowRecord, now: Time) -> String {
    let mut s = String::new();
    let p = r.orig.proto;
    let _ = write!(
        s,
        "{:<5} {:<2} {} ",
        crate::packet::proto_name(p),
        p,
        r.remaining(now).0 / 1_000_000_000
    );
    if p == proto::TCP {
        let _ = write!(s, "{} ", r.tcp_state.name());
    }
    let _ = write!(
        s,
        "{} packets={} bytes={} {} packets={} bytes={}",
        tuple_fields(&r.orig),
        r.packets[0],
        r.bytes[0],
        tuple_fields(&r.reply),
        r.packets[1],
        r.bytes[1]
    );
    for f in flag_names(r) {
        let _ = write!(s, " [{f}]");
    }
    s
}

/// A flow as JSON-friendly data.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct FlowView {
    pub proto: String,
    pub state: Option<String>,
    pub timeout_secs: u64,
    pub orig: TupleView,
    pub reply: TupleView,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TupleView {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl From<&Tuple> for TupleView {
    fn from(t: &Tuple) -> TupleView {
        TupleView {
            src: t.src_ip(),
            dst: t.dst_ip(),
            sport: t.sport,
            dport: t.dport,
        }
    }
}

impl FlowView {
    pub fn new(r: &FlowRecord, now: Time) -> FlowView {
        FlowView {
            proto: crate::packet::proto_name(r.orig.proto).into(),
            state: (r.orig.proto == proto::TCP).then(|| r.tcp_state.name().to_string()),
            timeout_secs: r.remaining(now).0 / 1_000_000_000,
            orig: (&r.orig).into(),
            reply: (&r.reply).into(),
            packets: r.packets,
            bytes: r.bytes,
            flags: flag_names(r).into_iter().map(String::from).collect(),
        }
    }
}

/// The effective config, as `natgw check` prints it.
pub fn config_summary(c: &Config) -> String {
    let mut s = String::new();
    let e = &c.engine;
    let _ = writeln!(s, "config {}: ok", c.path.display());
    let _ = writeln!(s, "interfaces:");
    for i in &e.interfaces {
        let role = match i.role {
            crate::engine::Role::Inside => "inside",
            crate::engine::Role::Outside => "outside",
        };
        let _ = write!(s, "  {:<15} {:<7} {}", i.name, role, i.addr);
        for a in &i.extra {
            let _ = write!(s, " +{}", Ipv4Addr::from(*a));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "routes:");
    let table = crate::engine::RouteTable::new(&e.interfaces, &e.routes);
    for r in table.routes() {
        let _ = writeln!(s, "  {r} dev {}", c.ifname(r.oif));
    }
    if !c.sets.is_empty() {
        let _ = writeln!(s, "sets:");
        let mut names: Vec<_> = c.sets.keys().collect();
        names.sort();
        for n in names {
            let set = &c.sets[n];
            let members: Vec<String> = set.list(Time(0)).into_iter().map(|m| m.prefix).collect();
            let _ = writeln!(
                s,
                "  {n} (default timeout {}s): {}",
                set.default_timeout(),
                if members.is_empty() {
                    "empty".to_string()
                } else {
                    members.join(", ")
                }
            );
        }
    }
    let _ = writeln!(
        s,
        "rules (first match wins; dnat before routing, snat after):"
    );
    if c.ruleset.rules.is_empty() {
        let _ = writeln!(
            s,
            "  none: every flow is {}",
            match e.unmatched {
                crate::engine::Unmatched::Forward => "forwarded untranslated",
                crate::engine::Unmatched::Drop => "dropped",
            }
        );
    }
    let ifname = |i| c.ifname(i);
    for (n, r) in c.ruleset.rules.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:>2}. {}  (line {})",
            n + 1,
            RuleDisplay {
                rule: r,
                ifname: &ifname
            },
            r.line
        );
    }
    let t = &e.timeouts;
    let _ = writeln!(
        s,
        "limits: max_flows {} early_drop {}; unmatched {:?}; ipv6 {:?}; hairpin {}",
        e.max_flows, e.early_drop, e.unmatched, e.ipv6, e.hairpin
    );
    let _ = writeln!(
        s,
        "timeouts (s): tcp syn_sent {} syn_recv {} established {} fin_wait {} close_wait {} last_ack {} time_wait {} close {}; udp {} stream {}; icmp {}",
        t.tcp_syn_sent,
        t.tcp_syn_recv,
        t.tcp_established,
        t.tcp_fin_wait,
        t.tcp_close_wait,
        t.tcp_last_ack,
        t.tcp_time_wait,
        t.tcp_close,
        t.udp,
        t.udp_stream,
        t.icmp
    );
    s
}
