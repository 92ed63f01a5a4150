//! Text renderings shared by the CLI commands: flows the way
//! `conntrack -L` prints them, the effective config, and the replies of
//! the control protocol (`natgw stats`, `natgw services`, ...) as text or
//! JSON.
//!
//! Pure functions from data to text. May import the config, the
//! [`protocol`](crate::protocol) reply types and core data types; never
//! the socket or the daemon.

use super::config::Config;
use crate::conntrack::{FlowRecord, Time};
use crate::engine::flag_names;
use crate::nat::RuleDisplay;
use crate::packet::{Tuple, proto};
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
    let mark = crate::nat::nat_flags::mark_of(r.flags);
    if mark != 0 {
        let _ = write!(s, " mark={mark}");
    }
    for f in flag_names(r) {
        let _ = write!(s, " [{f}]");
    }
    s
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
    for p in &e.policy_routes {
        let _ = write!(s, "  {} dev {}", p.route, c.ifname(p.route.oif));
        if let Some(f) = p.from {
            let _ = write!(s, " from {f}");
        }
        if let Some(m) = p.mark {
            let _ = write!(s, " mark {m}");
        }
        let _ = writeln!(s);
    }
    if !e.tunnels.is_empty() {
        let _ = writeln!(s, "tunnels:");
        for t in &e.tunnels {
            let key = match t.mode {
                crate::packet::tunnel::Mode::Gre { key: Some(k) } => format!(" key {k}"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {:<15} {}{key} local {} remote {} mtu {}",
                t.name,
                t.mode.name(),
                Ipv4Addr::from(t.local),
                Ipv4Addr::from(t.remote),
                t.mtu
            );
        }
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
        "limits: max_flows {} early_drop {} flows_per_source {}; unmatched {:?}; ipv6 {:?}; hairpin {}; tcp_window {}; tcp_loose {}",
        e.max_flows,
        e.early_drop,
        e.flows_per_source
            .map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
        e.unmatched,
        e.ipv6,
        e.hairpin,
        if e.tcp_liberal { "liberal" } else { "strict" },
        e.tcp_loose
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
    if !c.services.is_empty() {
        let _ = writeln!(s, "services (checked before the dnat rules):");
        for svc in &c.services {
            let sp = &svc.spec;
            let _ = write!(
                s,
                "  {} {} {}",
                sp.key,
                sp.scheduler.name(),
                sp.forward.name()
            );
            if let Some(p) = sp.persistence {
                let _ = write!(s, " persistent {}s", p.timeout_secs);
                if let Some(m) = p.netmask {
                    let _ = write!(s, " /{m}");
                }
            }
            if let Some(ch) = &svc.check {
                let kind = match &ch.kind {
                    crate::health::CheckKind::Tcp => "tcp".to_string(),
                    crate::health::CheckKind::Http { path, status, .. } => {
                        format!("http GET {path} -> {status}")
                    }
                };
                let _ = write!(
                    s,
                    "; check {kind} every {:?} timeout {:?} rise {} fall {}",
                    ch.interval, ch.timeout, ch.rise, ch.fall
                );
            }
            let _ = writeln!(s);
            for r in &sp.reals {
                let _ = writeln!(
                    s,
                    "    -> {}:{} weight {}",
                    Ipv4Addr::from(r.addr),
                    r.port,
                    r.weight
                );
            }
        }
    }
    if let Some(p) = &c.run.snapshot.path {
        let _ = writeln!(
            s,
            "snapshot: {} every {}s",
            p.display(),
            c.run.snapshot.interval_secs
        );
    }
    if let Some(a) = &c.run.metrics.listen {
        let _ = writeln!(s, "metrics: http://{a}/metrics");
    }
    s
}

/// `natgw stats` as text.
pub fn stats_text(r: &crate::protocol::StatsReport) -> String {
    let mut s = String::new();
    let fill = if r.max_flows > 0 {
        100.0 * r.flows as f64 / r.max_flows as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "natgw: backend {}, up {:.0}s, {} worker(s)",
        r.backend,
        r.uptime_secs,
        r.workers.len()
    );
    let _ = writeln!(s, "flows: {} of {} ({fill:.1}%)", r.flows, r.max_flows);
    let _ = writeln!(
        s,
        "{:<6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "worker",
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "new_flows",
        "dropped",
        "p50_ns",
        "p99_ns",
        "p999_ns"
    );
    for w in &r.workers {
        let c = &w.counters;
        let _ = writeln!(
            s,
            "{:<6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>8} {:>8} {:>8}",
            w.name,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.flows_created,
            c.total_drops(),
            w.latency_ns[0],
            w.latency_ns[2],
            w.latency_ns[3]
        );
    }
    let t = &r.total;
    let _ = writeln!(
        s,
        "{:<6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}",
        "total",
        t.rx_packets,
        t.rx_bytes,
        t.tx_packets,
        t.tx_bytes,
        t.flows_created,
        t.total_drops()
    );
    let _ = writeln!(
        s,
        "fast path {}, icmp errors translated {}, fragments {}, ttl-exceeded sent {}, tcp invalid {}, early drops {}, local {}, passed {}, parked {}, coalescing sleeps {}",
        t.fast_path,
        t.icmp_errors_translated,
        t.frags_translated,
        t.ttl_exceeded_sent,
        t.tcp_invalid,
        t.early_drops,
        t.local,
        t.passed,
        t.parked,
        t.coalesce_sleeps
    );
    let ring: u64 = r
        .workers
        .iter()
        .map(|w| w.rx_ring_full + w.fill_ring_empty + w.kernel_dropped)
        .sum();
    if r.backend == "afxdp" {
        let _ = writeln!(
            s,
            "af_xdp rings: rx ring full {}, fill ring empty {}, kernel dropped {}{}",
            r.workers.iter().map(|w| w.rx_ring_full).sum::<u64>(),
            r.workers.iter().map(|w| w.fill_ring_empty).sum::<u64>(),
            r.workers.iter().map(|w| w.kernel_dropped).sum::<u64>(),
            if ring == 0 {
                ""
            } else {
                "\n  (frames the kernel dropped before natgw saw them: the worker did not keep its \
                 fill ring stocked, e.g. because it shares its CPU with the queue's receive softirq)"
            }
        );
    }
    for x in &r.xdp {
        let _ = writeln!(
            s,
            "xdp {}: redirected {}, to kernel {}, parked {}, park full {}, too big to park {}",
            x.interface, x.redirected, x.to_kernel, x.parked, x.park_full, x.park_too_big
        );
    }
    for tn in &r.tunnels {
        let why = if tn.drop_reasons.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = tn
                .drop_reasons
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            format!(" ({})", v.join(", "))
        };
        let _ = writeln!(
            s,
            "tunnel {} ({} {} > {}, mtu {}): decap {} packets {} bytes, encap {} packets {} bytes, dropped {}{why}",
            tn.name,
            tn.mode,
            tn.local,
            tn.remote,
            tn.mtu,
            tn.rx_packets,
            tn.rx_bytes,
            tn.tx_packets,
            tn.tx_bytes,
            tn.drops
        );
    }
    if let Some(l) = &r.session_log {
        let ev: Vec<String> = l.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "session log ({}): {}; {} IPFIX messages, {} syslog lines; lost: ring full {}, send failed {}",
            l.outputs.join(", "),
            ev.join(", "),
            l.ipfix_messages,
            l.syslog_lines,
            l.dropped_ring_full,
            l.dropped_send_failed
        );
    }
    if t.frag_needed_sent > 0 {
        let _ = writeln!(
            s,
            "fragmentation-needed sent (tunnel mtu): {}",
            t.frag_needed_sent
        );
    }
    let kernel: u64 = r.workers.iter().map(|w| w.kernel_dropped).sum();
    if t.drops.is_empty() && kernel > 0 {
        let _ = writeln!(
            s,
            "drops in natgw: none (the kernel dropped {kernel} frames first, see above)"
        );
    } else if t.drops.is_empty() {
        let _ = writeln!(s, "drops: none");
    } else {
        let _ = writeln!(s, "drops by reason:");
        for (k, v) in &t.drops {
            let why = crate::engine::DropReason::ALL
                .iter()
                .find(|r| r.name() == k)
                .map_or("", |r| r.describe());
            let _ = writeln!(s, "  {k:<22} {v:>10}  {why}");
        }
    }
    if !r.port_usage.is_empty() {
        let _ = writeln!(
            s,
            "port use (outside address, protocol: live flows, exhausted):"
        );
        for u in &r.port_usage {
            let _ = writeln!(
                s,
                "  {:<15} {:<4} {:>8} {:>8}",
                u.addr, u.proto, u.flows, u.exhausted
            );
        }
    }
    if let Some(l) = &r.source_limit {
        let _ = writeln!(
            s,
            "per-source limit: {} flows per source, {} source(s) with live flows",
            l.limit
                .map_or_else(|| "no limit (removed)".to_string(), |n| n.to_string()),
            l.sources
        );
        if !l.offenders.is_empty() {
            let _ = writeln!(
                s,
                "most refused sources (new flows refused, live flows; at most {}):",
                crate::conntrack::SOURCE_TOP
            );
            for o in &l.offenders {
                let err = if o.error > 0 {
                    format!("  (up to {} of it inherited)", o.error)
                } else {
                    String::new()
                };
                let _ = writeln!(s, "  {:<15} {:>10} {:>8}{err}", o.addr, o.refused, o.flows);
            }
        }
    }
    if !r.neighbours.is_empty() {
        let _ = writeln!(s, "neighbours:");
        for (i, a, m, age) in &r.neighbours {
            let _ = writeln!(s, "  {i:<15} {a:<15} {m}  {age}s");
        }
    }
    s
}

/// Which `natgw services` table to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesView {
    /// `ipvsadm -L -n`, plus a health column.
    List,
    /// `ipvsadm -L -n --stats`.
    Stats,
    /// `ipvsadm -L -n --rate`.
    Rate,
    /// The list, then the persistence entries (`ipvsadm -L -n -c`).
    Persistence,
}

/// `natgw services` as text, laid out like `ipvsadm -L -n`.
pub fn services_text(r: &crate::protocol::ServicesReport, view: ServicesView) -> String {
    use crate::lb::{Health, Scheduler};
    let mut s = String::new();
    let sock = |a: u32, p: u16| std::net::SocketAddrV4::new(a.into(), p).to_string();
    let _ = writeln!(
        s,
        "natgw virtual services ({} service(s))",
        r.services.len()
    );
    match view {
        ServicesView::List | ServicesView::Persistence => {
            let _ = writeln!(s, "Prot LocalAddress:Port Scheduler Flags");
            let _ = writeln!(
                s,
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn Health"
            );
        }
        ServicesView::Stats => {
            let _ = writeln!(
                s,
                "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
            );
            let _ = writeln!(s, "  -> RemoteAddress:Port");
        }
        ServicesView::Rate => {
            let _ = writeln!(
                s,
                "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
            );
            let _ = writeln!(s, "  -> RemoteAddress:Port");
        }
    }
    for svc in &r.services {
        let head = svc.key.to_string();
        match view {
            ServicesView::List | ServicesView::Persistence => {
                let mut flags = String::new();
                match svc.scheduler {
                    Scheduler::Sh(o) | Scheduler::Dh(o) => {
                        if o.fallback {
                            flags.push_str(" (fallback)");
                        }
                        if o.port {
                            flags.push_str(" (port)");
                        }
                    }
                    Scheduler::Mh(o) => {
                        if o.fallback {
                            flags.push_str(" (fallback)");
                        }
                        if o.port {
                            flags.push_str(" (port)");
                        }
                    }
                    _ => {}
                }
                if let Some(p) = svc.persistence {
                    let _ = write!(flags, " persistent {}", p.timeout_secs);
                    if let Some(m) = p.netmask {
                        let mask = if m == 0 {
                            0
                        } else {
                            u32::MAX << (32 - m.min(32))
                        };
                        let _ = write!(flags, " mask {}", Ipv4Addr::from(mask));
                    }
                }
                let _ = writeln!(s, "{head} {}{flags}", svc.scheduler.name());
                for real in &svc.reals {
                    let health = match real.health {
                        Health::Up => "up",
                        Health::Down => "DOWN",
                    };
                    let _ = writeln!(
                        s,
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<9} {health}",
                        sock(real.addr, real.port),
                        svc.forward.name(),
                        real.weight,
                        real.active,
                        real.inactive
                    );
                }
            }
            ServicesView::Stats => {
                let sum =
                    |f: fn(&crate::lb::RealStatus) -> u64| -> u64 { svc.reals.iter().map(f).sum() };
                let _ = writeln!(
                    s,
                    "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    human(sum(|r| r.conns)),
                    human(sum(|r| r.packets_in)),
                    human(sum(|r| r.packets_out)),
                    human(sum(|r| r.bytes_in)),
                    human(sum(|r| r.bytes_out)),
                );
                for real in &svc.reals {
                    let _ = writeln!(
                        s,
                        "  -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        sock(real.addr, real.port),
                        human(real.conns),
                        human(real.packets_in),
                        human(real.packets_out),
                        human(real.bytes_in),
                        human(real.bytes_out),
                    );
                }
            }
            ServicesView::Rate => {
                let rates: Vec<_> = r.rates.iter().filter(|x| x.service == svc.key).collect();
                let sum = |f: fn(&crate::protocol::RealRate) -> f64| -> u64 {
                    rates.iter().map(|x| f(x)).sum::<f64>().round() as u64
                };
                let _ = writeln!(
                    s,
                    "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    sum(|x| x.cps),
                    sum(|x| x.in_pps),
                    sum(|x| x.out_pps),
                    sum(|x| x.in_bps),
                    sum(|x| x.out_bps),
                );
                for real in &svc.reals {
                    let x = rates
                        .iter()
                        .find(|x| x.addr == real.addr && x.port == real.port);
                    let v = |f: fn(&crate::protocol::RealRate) -> f64| {
                        x.map_or(0, |x| f(x).round() as u64)
                    };
                    let _ = writeln!(
                        s,
                        "  -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        sock(real.addr, real.port),
                        v(|x| x.cps),
                        v(|x| x.in_pps),
                        v(|x| x.out_pps),
                        v(|x| x.in_bps),
                        v(|x| x.out_bps),
                    );
                }
            }
        }
    }
    if view == ServicesView::Persistence {
        let _ = writeln!(s, "Persistence entries ({}):", r.persistence.len());
        let _ = writeln!(
            s,
            "  Service                   Client network      -> Real server           Expires"
        );
        for e in &r.persistence {
            let _ = writeln!(
                s,
                "  {:<25} {:<19} -> {:<21} {}s",
                e.service.to_string(),
                format!("{}/{}", e.client, e.netmask),
                e.real,
                e.expires_in
            );
        }
    }
    if view == ServicesView::List && !r.checks.is_empty() {
        let _ = writeln!(s, "Health checks:");
        for c in &r.checks {
            let _ = writeln!(s, "  {}", check_line(c));
        }
    }
    s
}

/// One health-check status as a line: server, check, state, streaks,
/// the latest error.
fn check_line(c: &crate::protocol::CheckStatus) -> String {
    use crate::lb::Health;
    let state = match c.health {
        Health::Up => "up",
        Health::Down => "DOWN",
    };
    let mut s = format!(
        "{} -> {:<21} {:<4} {:<4} for {:.0}s  ok {}/{} fail {}/{}  checks {} failed {}",
        c.service,
        c.real.to_string(),
        c.kind,
        state,
        c.health_age_secs,
        c.consecutive_ok,
        c.rise,
        c.consecutive_fail,
        c.fall,
        c.checks_run,
        c.checks_failed
    );
    if let Some(e) = &c.last_error
        && c.consecutive_fail > 0
    {
        let _ = write!(s, "  last error: {e}");
    }
    s
}

/// `ipvsadm`-style short numbers: 1234 -> 1234, 12345 -> 12K, ...
fn human(v: u64) -> String {
    match v {
        0..=99_999 => v.to_string(),
        100_000..=99_999_999 => format!("{}K", v / 1000),
        100_000_000..=99_999_999_999 => format!("{}M", v / 1_000_000),
        _ => format!("{}G", v / 1_000_000_000),
    }
}

/// A reply as `--json` prints it: pretty, keys sorted at every level (as
/// natgw has always printed its replies).
pub fn json<T: serde::Serialize>(r: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(r)?)
}

/// `natgw snapshot` as text.
pub fn snapshot_text(r: &crate::protocol::SnapshotReply) -> String {
    format!(
        "wrote {} flow(s), {} bytes to {}\n",
        r.flows, r.bytes, r.path
    )
}

/// `natgw reload` as text; `flush_unmatched` says whether it was asked to
/// flush.
pub fn reload_text(r: &crate::protocol::ReloadReply, flush_unmatched: bool) -> String {
    format!(
        "reloaded {}: {} rule(s), {} set(s); {} live flow(s) keep their translation, {} match no rule now{}\n",
        r.config,
        r.report.rules,
        r.report.sets,
        r.report.flows,
        r.report.unmatched_flows,
        if flush_unmatched {
            format!(", {} flushed", r.flushed)
        } else {
            String::new()
        }
    )
}

/// `natgw set` as text: what changed, then (for `list`) the entries.
pub fn set_text(r: &crate::protocol::SetReport, list: bool) -> String {
    let mut s = String::new();
    if !r.changed.is_empty() {
        let _ = writeln!(s, "set {}: {}", r.name, r.changed);
    }
    if list {
        let _ = writeln!(
            s,
            "set {} (default timeout {}s), {} entries:",
            r.name,
            r.default_timeout,
            r.entries.len()
        );
        for e in &r.entries {
            match e.expires_in {
                Some(t) => {
                    let _ = writeln!(s, "  {} timeout {t}", e.prefix);
                }
                None => {
                    let _ = writeln!(s, "  {}", e.prefix);
                }
            }
        }
    }
    s
}

/// `natgw ha status`.
pub fn ha_text(s: &crate::ha::HaStatus) -> String {
    let mut o = String::new();
    let peer_role = s.peer_role.as_deref().unwrap_or("unknown");
    let _ = writeln!(o, "role      {}", s.role);
    let _ = writeln!(
        o,
        "peer      {} ({}, {})",
        s.peer,
        if s.peer_alive { "alive" } else { "silent" },
        peer_role
    );
    let _ = writeln!(
        o,
        "sync      {} (local {})",
        if s.in_sync { "in sync" } else { "NOT in sync" },
        s.local
    );
    let _ = writeln!(
        o,
        "sending   epoch {} next seq {} acked {} in flight {} queued {} lag {} ms",
        s.epoch, s.next_seq, s.acked_seq, s.in_flight, s.queued, s.lag_ms
    );
    match s.peer_epoch {
        Some(e) => {
            let _ = writeln!(
                o,
                "receiving epoch {e} next seq expected {}",
                s.peer_expected
            );
        }
        None => {
            let _ = writeln!(o, "receiving nothing yet");
        }
    }
    for (k, v) in &s.counters {
        let _ = writeln!(o, "  {k:<28} {v}");
    }
    o
}
