//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` over plain
//! HTTP, in the Prometheus text format 0.0.4 (or OpenMetrics text when
//! the scraper asks for it), encoded by the `prometheus-client` crate and
//! served by `tiny_http`.
//!
//! # Who does what
//!
//! - An HTTP thread ([`Server`]) accepts scrapes and asks the control
//!   loop for the text through the control socket's own request queue
//!   ([`socket::Submitter`], request [`protocol::Metrics`]), so a scrape
//!   is answered on the control thread between two ticks, like `natgw
//!   stats`; workers never see it.
//! - [`render`] turns plain data the control thread already has
//!   ([`StatsReport`], [`ServicesReport`], [`DaemonEvents`]) into the
//!   exposition. Nothing here walks the flow table: flow counts, port use
//!   and real-server counters are kept as flows come and go.
//!
//! # Names
//!
//! Every name starts with `natgw_`; counters end in `_total`. They follow
//! what existing dashboards use: `natgw_conntrack_entries` /
//! `_entries_limit` as node_exporter's `node_nf_conntrack_entries` /
//! `_entries_limit`, `natgw_ipvs_*` with the labels of node_exporter's
//! IPVS collector (`local_address`, `local_port`, `remote_address`,
//! `remote_port`, `proto`). The full list is [`METRIC_NAMES`] (README
//! "Metrics" prints it too).
//!
//! What this module may import: [`crate::protocol`], the socket
//! transport, engine/dataplane plain data (drop reasons, bucket bounds).

use super::socket;
use crate::dataplane::LATENCY_BUCKETS_NS;
use crate::engine::{CounterSnapshot, DropReason};
use crate::lb::Health;
use crate::protocol::{self, MetricsReply, Response, ServicesReport, StatsReport};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the HTTP thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// What the daemon did besides forwarding: reloads, snapshots, the
/// takeover that started it. Kept by the control thread.
#[derive(Debug, Clone, Default)]
pub struct DaemonEvents {
    /// Unix time the process started, seconds.
    pub start_time: f64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Last reload that succeeded: when (Unix seconds) and how long it took.
    pub last_reload_success: Option<(f64, f64)>,
    pub snapshots_ok: u64,
    pub snapshots_failed: u64,
    /// Last snapshot written: when (Unix seconds), seconds it took, bytes.
    pub last_snapshot: Option<(f64, f64, u64)>,
    /// This process took over from a running natgw: seconds the takeover
    /// took and flows it restored.
    pub takeover: Option<(f64, usize)>,
    /// Counters carried over from the process this one took over from
    /// (or restored from a snapshot); `worker="carried"` in the output.
    pub carried: CounterSnapshot,
}

/// Every metric name `render` can emit (counters with their `_total`).
pub const METRIC_NAMES: &[&str] = &[
    "natgw_build_info",
    "natgw_start_time_seconds",
    "natgw_conntrack_entries",
    "natgw_conntrack_entries_limit",
    "natgw_packets_total",
    "natgw_bytes_total",
    "natgw_fast_path_packets_total",
    "natgw_flows_created_total",
    "natgw_early_drops_total",
    "natgw_drops_total",
    "natgw_tcp_invalid_total",
    "natgw_icmp_errors_translated_total",
    "natgw_fragments_translated_total",
    "natgw_ttl_exceeded_sent_total",
    "natgw_local_packets_total",
    "natgw_passed_packets_total",
    "natgw_parked_packets_total",
    "natgw_coalesce_sleeps_total",
    "natgw_nat_port_flows",
    "natgw_nat_port_exhausted_total",
    "natgw_source_flows_limit",
    "natgw_source_addresses",
    "natgw_source_refused_flows",
    "natgw_source_live_flows",
    "natgw_engine_packet_duration_seconds",
    "natgw_afxdp_rx_ring_full_total",
    "natgw_afxdp_fill_ring_empty_total",
    "natgw_afxdp_kernel_dropped_total",
    "natgw_afxdp_frames_free",
    "natgw_afxdp_frames",
    "natgw_xdp_redirected_total",
    "natgw_xdp_to_kernel_total",
    "natgw_xdp_parked_total",
    "natgw_xdp_park_full_total",
    "natgw_xdp_park_too_big_total",
    "natgw_tunnel_packets_total",
    "natgw_tunnel_bytes_total",
    "natgw_tunnel_drops_total",
    "natgw_ipvs_connections_total",
    "natgw_ipvs_incoming_packets_total",
    "natgw_ipvs_outgoing_packets_total",
    "natgw_ipvs_incoming_bytes_total",
    "natgw_ipvs_outgoing_bytes_total",
    "natgw_ipvs_backend_connections_active",
    "natgw_ipvs_backend_connections_inactive",
    "natgw_ipvs_backend_connections_persistent",
    "natgw_ipvs_backend_weight",
    "natgw_ipvs_backend_up",
    "natgw_ipvs_backend_connections_total",
    "natgw_ipvs_backend_incoming_packets_total",
    "natgw_ipvs_backend_outgoing_packets_total",
    "natgw_ipvs_backend_incoming_bytes_total",
    "natgw_ipvs_backend_outgoing_bytes_total",
    "natgw_ipvs_backend_check_failures_total",
    "natgw_reloads_total",
    "natgw_last_reload_success_timestamp_seconds",
    "natgw_last_reload_duration_seconds",
    "natgw_snapshots_total",
    "natgw_last_snapshot_timestamp_seconds",
    "natgw_last_snapshot_duration_seconds",
    "natgw_last_snapshot_bytes",
    "natgw_takeovers_total",
    "natgw_takeover_duration_seconds",
    "natgw_takeover_restored_flows",
    "natgw_ha_role",
    "natgw_ha_in_sync",
    "natgw_ha_peer_alive",
    "natgw_ha_lag_seconds",
    "natgw_ha_unacked_datagrams",
    "natgw_ha_refused_datagrams_total",
    "natgw_ha_sync_events_total",
    "natgw_session_log_events_total",
    "natgw_session_log_messages_total",
    "natgw_session_log_dropped_total",
];

// ---------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    /// Sum, count, and each bucket's own count by upper bound.
    Histogram(f64, u64, Vec<(f64, u64)>),
}

/// One metric family: its rows in the order they were added (the
/// output is stable from one scrape to the next).
#[derive(Debug)]
struct Rows {
    kind: MetricType,
    rows: Vec<(Labels, Value)>,
}

impl EncodeMetric for Rows {
    fn encode(&self, mut enc: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.rows {
            let mut e = enc.encode_family(labels)?;
            match v {
                Value::Counter(c) => e.encode_counter::<NoLabelSet, u64, u64>(c, None)?,
                // Whole numbers print as such ("3", not "3.0").
                Value::Gauge(g) if g.fract() == 0.0 && g.abs() < 9e15 => {
                    e.encode_gauge(&(*g as i64))?
                }
                Value::Gauge(g) => e.encode_gauge(g)?,
                Value::Histogram(sum, count, buckets) => {
                    e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Collects families, then registers them (names without the `natgw_`
/// prefix and, for counters, without `_total`: the encoder adds both).
struct Families {
    reg: Registry,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType, rows: Vec<(Labels, Value)>) {
        // The encoder ends the help text with a period itself.
        let help = help.trim_end_matches('.');
        self.reg.register(name, help, Rows { kind, rows });
    }

    fn counter(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let rows = rows
            .into_iter()
            .map(|(l, v)| (l, Value::Counter(v)))
            .collect();
        self.family(name, help, MetricType::Counter, rows);
    }

    fn gauge(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        let rows = rows
            .into_iter()
            .map(|(l, v)| (l, Value::Gauge(v)))
            .collect();
        self.family(name, help, MetricType::Gauge, rows);
    }
}

/// Everything [`render`] shows.
pub struct MetricsInput<'a> {
    pub stats: &'a StatsReport,
    pub services: &'a ServicesReport,
    pub events: &'a DaemonEvents,
    pub version: &'a str,
    /// The HA pair's state (`[ha]`), `None` for a single node.
    pub ha: Option<&'a crate::ha::HaStatus>,
}

/// The exposition: Prometheus text format 0.0.4, or OpenMetrics text.
pub fn render(m: &MetricsInput, openmetrics: bool) -> MetricsReply {
    let mut f = Families {
        reg: Registry::with_prefix("natgw"),
    };
    add_gateway(&mut f, m);
    add_workers(&mut f, m);
    add_ports_and_xdp(&mut f, m.stats);
    add_services(&mut f, m.services);
    add_events(&mut f, m.events);
    if let Some(h) = m.ha {
        add_ha(&mut f, h);
    }
    if let Some(l) = &m.stats.session_log {
        add_session_log(&mut f, l);
    }
    let mut text = String::new();
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, &f.reg)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, &f.reg)
    };
    if r.is_err() {
        // Writing into a String fails only if an encoder refuses a value
        // (none of ours); say so rather than send half a page.
        text = "# natgw: the metrics could not be encoded\n".into();
    }
    MetricsReply {
        content_type: if openmetrics {
            OPENMETRICS_TEXT
        } else {
            PROMETHEUS_TEXT
        }
        .into(),
        text,
    }
}

fn l1(k: &'static str, v: impl ToString) -> Labels {
    vec![(k, v.to_string())]
}

fn add_gateway(f: &mut Families, m: &MetricsInput) {
    let s = m.stats;
    f.gauge(
        "build_info",
        "natgw's version and data-plane backend (always 1).",
        vec![(
            vec![
                ("version", m.version.into()),
                ("backend", s.backend.clone()),
            ],
            1.0,
        )],
    );
    f.gauge(
        "start_time_seconds",
        "When this natgw process started, Unix seconds.",
        vec![(vec![], m.events.start_time)],
    );
    f.gauge(
        "conntrack_entries",
        "Live flows in the flow table (like node_nf_conntrack_entries).",
        vec![(vec![], s.flows as f64)],
    );
    f.gauge(
        "conntrack_entries_limit",
        "Most flows the table holds, limits.max_flows (like node_nf_conntrack_entries_limit).",
        vec![(vec![], s.max_flows as f64)],
    );
}

/// Per-worker counters; those carried over from a previous process (a
/// takeover or a snapshot) as `worker="carried"`, so sums stay monotonic.
fn add_workers(f: &mut Families, m: &MetricsInput) {
    let s = m.stats;
    let mut rows: Vec<(String, &CounterSnapshot)> = s
        .workers
        .iter()
        .map(|w| (w.name.clone(), &w.counters))
        .collect();
    if m.events.carried != CounterSnapshot::default() {
        rows.push(("carried".into(), &m.events.carried));
    }
    let per = |get: fn(&CounterSnapshot) -> u64| -> Vec<(Labels, u64)> {
        rows.iter()
            .map(|(w, c)| (l1("worker", w), get(c)))
            .collect()
    };
    let dir = |rx: fn(&CounterSnapshot) -> u64, tx: fn(&CounterSnapshot) -> u64| {
        let mut v = Vec::new();
        for (w, c) in &rows {
            for (d, get) in [("rx", rx), ("tx", tx)] {
                v.push((vec![("worker", w.clone()), ("direction", d.into())], get(c)));
            }
        }
        v
    };
    f.counter(
        "packets",
        "Frames received (rx) and sent (tx), per worker.",
        dir(|c| c.rx_packets, |c| c.tx_packets),
    );
    f.counter(
        "bytes",
        "Bytes received (rx) and sent (tx), per worker.",
        dir(|c| c.rx_bytes, |c| c.tx_bytes),
    );
    f.counter(
        "fast_path_packets",
        "Packets forwarded on an existing flow.",
        per(|c| c.fast_path),
    );
    f.counter(
        "flows_created",
        "New flows (like conntrack's new entries).",
        per(|c| c.flows_created),
    );
    f.counter(
        "early_drops",
        "Unassured flows evicted to make room when the table was full (conntrack early drop).",
        per(|c| c.early_drops),
    );
    let mut drops = Vec::new();
    for (w, c) in &rows {
        for r in DropReason::ALL {
            let n = c.drops.get(r.name()).copied().unwrap_or(0);
            drops.push((
                vec![("worker", w.clone()), ("reason", r.name().to_string())],
                n,
            ));
        }
    }
    f.counter(
        "drops",
        "Packets dropped, by reason (natgw stats explains each reason).",
        drops,
    );
    f.counter(
        "tcp_invalid",
        "TCP segments that did not fit the state machine (forwarded anyway).",
        per(|c| c.tcp_invalid),
    );
    f.counter(
        "icmp_errors_translated",
        "ICMP errors matched to a flow by the datagram they quote and translated.",
        per(|c| c.icmp_errors_translated),
    );
    f.counter(
        "fragments_translated",
        "Non-first IP fragments translated like their first fragment.",
        per(|c| c.frags_translated),
    );
    f.counter(
        "ttl_exceeded_sent",
        "ICMP time-exceeded messages natgw sent.",
        per(|c| c.ttl_exceeded_sent),
    );
    f.counter(
        "local_packets",
        "Packets addressed to the gateway itself, handed to the host.",
        per(|c| c.local),
    );
    f.counter(
        "passed_packets",
        "Frames handed to the host untouched (ARP, IPv6 when passed).",
        per(|c| c.passed),
    );
    f.counter(
        "parked_packets",
        "Frames the XDP program parked while no natgw read its queue, processed afterwards.",
        per(|c| c.parked),
    );
    f.counter(
        "coalesce_sleeps",
        "Receive-coalescing sleeps of the workers (afxdp.coalesce_us): rounds that took less than a batch and waited before the next.",
        per(|c| c.coalesce_sleeps),
    );

    let bounds: Vec<f64> = LATENCY_BUCKETS_NS
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .chain([f64::INFINITY])
        .collect();
    let hist = s
        .workers
        .iter()
        .filter(|w| w.latency_buckets.len() == bounds.len())
        .map(|w| {
            let buckets = bounds
                .iter()
                .copied()
                .zip(w.latency_buckets.iter().copied())
                .collect();
            let count = w.latency_buckets.iter().sum();
            (
                l1("worker", &w.name),
                Value::Histogram(w.latency_sum_ns / 1e9, count, buckets),
            )
        })
        .collect();
    f.family(
        "engine_packet_duration_seconds",
        "Engine time per packet (each batch's time over its packets), per worker.",
        MetricType::Histogram,
        hist,
    );

    let afxdp = s.backend == "afxdp";
    let ring = |get: fn(&crate::dataplane::WorkerSnapshot) -> u64| -> Vec<(Labels, u64)> {
        if !afxdp {
            return Vec::new();
        }
        s.workers
            .iter()
            .map(|w| (l1("worker", &w.name), get(w)))
            .collect()
    };
    f.counter(
        "afxdp_rx_ring_full",
        "AF_XDP: frames the kernel dropped because the RX ring was full.",
        ring(|w| w.rx_ring_full),
    );
    f.counter(
        "afxdp_fill_ring_empty",
        "AF_XDP: times the kernel found the fill ring empty.",
        ring(|w| w.fill_ring_empty),
    );
    f.counter(
        "afxdp_kernel_dropped",
        "AF_XDP: frames the kernel dropped for other reasons.",
        ring(|w| w.kernel_dropped),
    );
    // Only workers that report their UMEM (a size of 0 is "not known").
    let frames = |get: fn(&crate::dataplane::WorkerSnapshot) -> u64| {
        s.workers
            .iter()
            .filter(|w| afxdp && w.frames_total > 0)
            .map(|w| (l1("worker", &w.name), get(w) as f64))
            .collect()
    };
    f.gauge(
        "afxdp_frames_free",
        "AF_XDP: UMEM frames free in the worker's pool.",
        frames(|w| w.frames_free),
    );
    f.gauge(
        "afxdp_frames",
        "AF_XDP: UMEM frames of the worker in all.",
        frames(|w| w.frames_total),
    );
}

fn add_ports_and_xdp(f: &mut Families, s: &StatsReport) {
    let pl = |u: &crate::nat::PortUsage| -> Labels {
        vec![("address", u.addr.to_string()), ("proto", u.proto.clone())]
    };
    f.gauge(
        "nat_port_flows",
        "Live flows translated to this outside address, per protocol (port use).",
        s.port_usage
            .iter()
            .map(|u| (pl(u), u.flows as f64))
            .collect(),
    );
    f.counter(
        "nat_port_exhausted",
        "New flows refused because no outside port was free on this address, per protocol.",
        s.port_usage.iter().map(|u| (pl(u), u.exhausted)).collect(),
    );
    if let Some(l) = &s.source_limit {
        if let Some(n) = l.limit {
            f.gauge(
                "source_flows_limit",
                "Live flows one source address may have, limits.flows_per_source.",
                vec![(vec![], f64::from(n))],
            );
        }
        f.gauge(
            "source_addresses",
            "Source addresses with at least one live flow (counted while a per-source limit is set).",
            vec![(vec![], l.sources as f64)],
        );
        // A bounded label set: the most refused sources only (the total
        // is natgw_drops_total{reason="source_limit"}). A gauge, since an
        // address may leave the list.
        let al = |o: &protocol::SourceOffender| l1("address", o.addr);
        f.gauge(
            "source_refused_flows",
            "New flows refused by the per-source limit, for the most refused source addresses only (at most 16).",
            l.offenders.iter().map(|o| (al(o), o.refused as f64)).collect(),
        );
        f.gauge(
            "source_live_flows",
            "Live flows of each of the most refused source addresses.",
            l.offenders
                .iter()
                .map(|o| (al(o), f64::from(o.flows)))
                .collect(),
        );
    }
    let x = |get: fn(&crate::dataplane::XdpCounters) -> u64| -> Vec<(Labels, u64)> {
        s.xdp
            .iter()
            .map(|x| (l1("interface", &x.interface), get(x)))
            .collect()
    };
    f.counter(
        "xdp_redirected",
        "XDP program: frames sent to natgw's AF_XDP socket.",
        x(|x| x.redirected),
    );
    f.counter(
        "xdp_to_kernel",
        "XDP program: frames passed to the kernel.",
        x(|x| x.to_kernel),
    );
    f.counter(
        "xdp_parked",
        "XDP program: frames parked while no socket was registered.",
        x(|x| x.parked),
    );
    f.counter(
        "xdp_park_full",
        "XDP program: frames dropped because the park queue was full.",
        x(|x| x.park_full),
    );
    f.counter(
        "xdp_park_too_big",
        "XDP program: frames dropped because they were longer than a park slot.",
        x(|x| x.park_too_big),
    );
    let tl = |t: &crate::engine::TunnelStats, dir: &str| -> Labels {
        vec![("tunnel", t.name.clone()), ("direction", dir.to_string())]
    };
    f.counter(
        "tunnel_packets",
        "Inner datagrams a [[tunnel]] encapsulated (direction=\"encap\") and decapsulated (\"decap\").",
        s.tunnels
            .iter()
            .flat_map(|t| [(tl(t, "encap"), t.tx_packets), (tl(t, "decap"), t.rx_packets)])
            .collect(),
    );
    f.counter(
        "tunnel_bytes",
        "Bytes of the inner datagrams a [[tunnel]] encapsulated and decapsulated.",
        s.tunnels
            .iter()
            .flat_map(|t| [(tl(t, "encap"), t.tx_bytes), (tl(t, "decap"), t.rx_bytes)])
            .collect(),
    );
    f.counter(
        "tunnel_drops",
        "Packets of a [[tunnel]] dropped, either way (reasons in natgw_drops_total).",
        s.tunnels
            .iter()
            .map(|t| (l1("tunnel", &t.name), t.drops))
            .collect(),
    );
}

/// The IPVS collector's set, per virtual service and per real server.
fn add_services(f: &mut Families, r: &ServicesReport) {
    let proto = |p: u8| match p {
        crate::packet::proto::TCP => "TCP",
        crate::packet::proto::UDP => "UDP",
        _ => "other",
    };
    let vs = |k: &crate::lb::ServiceKey| -> Labels {
        vec![
            ("local_address", std::net::Ipv4Addr::from(k.vip).to_string()),
            ("local_port", k.port.to_string()),
            ("proto", proto(k.proto).to_string()),
        ]
    };
    // Per service: the servers' counters summed.
    type Get = fn(&crate::lb::RealStatus) -> u64;
    let svc = |get: Get| -> Vec<(Labels, u64)> {
        r.services
            .iter()
            .map(|s| (vs(&s.key), s.reals.iter().map(get).sum()))
            .collect()
    };
    let real = |get: &dyn Fn(&crate::lb::RealStatus) -> f64| -> Vec<(Labels, f64)> {
        let mut v = Vec::new();
        for s in &r.services {
            for rs in &s.reals {
                let mut l = vs(&s.key);
                l.insert(
                    2,
                    (
                        "remote_address",
                        std::net::Ipv4Addr::from(rs.addr).to_string(),
                    ),
                );
                l.insert(3, ("remote_port", rs.port.to_string()));
                v.push((l, get(rs)));
            }
        }
        v
    };
    let real_c = |get: Get| -> Vec<(Labels, u64)> {
        real(&|rs| get(rs) as f64)
            .into_iter()
            .map(|(l, v)| (l, v as u64))
            .collect()
    };
    f.counter(
        "ipvs_connections",
        "Connections scheduled to the virtual service's real servers.",
        svc(|r| r.conns),
    );
    f.counter(
        "ipvs_incoming_packets",
        "Packets client->server of the virtual service.",
        svc(|r| r.packets_in),
    );
    f.counter(
        "ipvs_outgoing_packets",
        "Packets server->client of the virtual service.",
        svc(|r| r.packets_out),
    );
    f.counter(
        "ipvs_incoming_bytes",
        "Bytes client->server of the virtual service.",
        svc(|r| r.bytes_in),
    );
    f.counter(
        "ipvs_outgoing_bytes",
        "Bytes server->client of the virtual service.",
        svc(|r| r.bytes_out),
    );
    f.gauge(
        "ipvs_backend_connections_active",
        "Established TCP connections to the real server (ipvsadm ActiveConn).",
        real(&|r| r.active as f64),
    );
    f.gauge(
        "ipvs_backend_connections_inactive",
        "Other connections to the real server (ipvsadm InActConn).",
        real(&|r| r.inactive as f64),
    );
    f.gauge(
        "ipvs_backend_connections_persistent",
        "Live persistence entries pointing at the real server.",
        real(&|r| r.persistent as f64),
    );
    f.gauge(
        "ipvs_backend_weight",
        "The real server's weight (0 drains).",
        real(&|r| r.weight as f64),
    );
    f.gauge(
        "ipvs_backend_up",
        "1 while the real server's health check passes (or it has none), 0 while it is down.",
        real(&|r| if r.health == Health::Up { 1.0 } else { 0.0 }),
    );
    f.counter(
        "ipvs_backend_connections",
        "Connections scheduled to the real server.",
        real_c(|r| r.conns),
    );
    f.counter(
        "ipvs_backend_incoming_packets",
        "Packets client->server through the real server's connections.",
        real_c(|r| r.packets_in),
    );
    f.counter(
        "ipvs_backend_outgoing_packets",
        "Packets server->client through the real server's connections.",
        real_c(|r| r.packets_out),
    );
    f.counter(
        "ipvs_backend_incoming_bytes",
        "Bytes client->server through the real server's connections.",
        real_c(|r| r.bytes_in),
    );
    f.counter(
        "ipvs_backend_outgoing_bytes",
        "Bytes server->client through the real server's connections.",
        real_c(|r| r.bytes_out),
    );
    f.counter(
        "ipvs_backend_check_failures",
        "Health checks of the real server that failed.",
        r.checks
            .iter()
            .map(|c| {
                (
                    vec![
                        (
                            "local_address",
                            std::net::Ipv4Addr::from(c.service.vip).to_string(),
                        ),
                        ("local_port", c.service.port.to_string()),
                        ("remote_address", c.real.ip().to_string()),
                        ("remote_port", c.real.port().to_string()),
                        ("proto", proto(c.service.proto).to_string()),
                    ],
                    c.checks_failed,
                )
            })
            .collect(),
    );
}

fn add_ha(f: &mut Families, h: &crate::ha::HaStatus) {
    let one = |v: bool| vec![(vec![], if v { 1.0 } else { 0.0 })];
    f.gauge(
        "ha_role",
        "This node's HA role: 1 on the role it has (master forwards; backup and fault forward nothing).",
        ["master", "backup", "fault"]
            .map(|r| (l1("role", r), if h.role == r { 1.0 } else { 0.0 }))
            .to_vec(),
    );
    f.gauge(
        "ha_in_sync",
        "1 if this node holds its peer's state (bulk resync complete, no gap since) or is the active node.",
        one(h.in_sync),
    );
    f.gauge(
        "ha_peer_alive",
        "1 if a valid sync datagram came from the peer within the last second.",
        one(h.peer_alive),
    );
    f.gauge(
        "ha_lag_seconds",
        "How long the oldest unacknowledged sync datagram has waited.",
        vec![(vec![], h.lag_ms as f64 / 1e3)],
    );
    f.gauge(
        "ha_unacked_datagrams",
        "Sync datagrams sent and not yet acknowledged (in flight) or not yet sent (queued).",
        vec![
            (l1("state", "in_flight"), h.in_flight as f64),
            (l1("state", "queued"), h.queued as f64),
        ],
    );
    let (refused, events): (Vec<_>, Vec<_>) = h
        .counters
        .iter()
        .partition(|(k, _)| k.starts_with("refused_"));
    f.counter(
        "ha_refused_datagrams",
        "Datagrams on the sync port dropped, by reason (foreign sender, bad magic/version/length/checksum/auth, stale epoch, bad body).",
        refused
            .into_iter()
            .map(|(k, v)| (l1("reason", k.trim_start_matches("refused_")), *v))
            .collect(),
    );
    f.counter(
        "ha_sync_events",
        "Sync counters by name, as natgw ha status shows them (datagrams and changes sent, applied, resent, NACKs, bulks, missed notices).",
        events
            .into_iter()
            .map(|(k, v)| (l1("event", k), *v))
            .collect(),
    );
}

fn add_session_log(f: &mut Families, l: &crate::sessionlog::SessionLogStats) {
    f.counter(
        "session_log_events",
        "NAT session log events exported, by event (create, delete, ports_exhausted, table_full).",
        l.events.iter().map(|(k, v)| (l1("event", k), *v)).collect(),
    );
    f.counter(
        "session_log_messages",
        "Datagrams the session log sent, by output (ipfix messages, syslog lines).",
        vec![
            (l1("output", "ipfix"), l.ipfix_messages),
            (l1("output", "syslog"), l.syslog_lines),
        ],
    );
    f.counter(
        "session_log_dropped",
        "NAT session log events lost, by reason: ring_full (the logger fell behind the workers), send_failed (the datagram could not be sent).",
        vec![
            (l1("reason", "ring_full"), l.dropped_ring_full),
            (l1("reason", "send_failed"), l.dropped_send_failed),
        ],
    );
}

fn add_events(f: &mut Families, e: &DaemonEvents) {
    let result = |ok: u64, failed: u64| {
        vec![
            (l1("result", "success"), ok),
            (l1("result", "failure"), failed),
        ]
    };
    f.counter(
        "reloads",
        "Reloads (natgw reload, SIGHUP) by result; a failed one changed nothing.",
        result(e.reloads_ok, e.reloads_failed),
    );
    let opt = |v: Option<f64>| v.map(|v| vec![(vec![], v)]).unwrap_or_default();
    f.gauge(
        "last_reload_success_timestamp_seconds",
        "When the last successful reload happened, Unix seconds.",
        opt(e.last_reload_success.map(|r| r.0)),
    );
    f.gauge(
        "last_reload_duration_seconds",
        "How long the last successful reload took.",
        opt(e.last_reload_success.map(|r| r.1)),
    );
    f.counter(
        "snapshots",
        "State snapshots written (periodic, natgw snapshot, at stop) by result.",
        result(e.snapshots_ok, e.snapshots_failed),
    );
    f.gauge(
        "last_snapshot_timestamp_seconds",
        "When the last snapshot was written, Unix seconds.",
        opt(e.last_snapshot.map(|s| s.0)),
    );
    f.gauge(
        "last_snapshot_duration_seconds",
        "How long writing the last snapshot took.",
        opt(e.last_snapshot.map(|s| s.1)),
    );
    f.gauge(
        "last_snapshot_bytes",
        "Size of the last snapshot written.",
        opt(e.last_snapshot.map(|s| s.2 as f64)),
    );
    f.counter(
        "takeovers",
        "Takeovers (natgw run --takeover) that started this process: 0 or 1.",
        vec![(vec![], u64::from(e.takeover.is_some()))],
    );
    f.gauge(
        "takeover_duration_seconds",
        "How long the takeover that started this process took, start to state in place.",
        opt(e.takeover.map(|t| t.0)),
    );
    f.gauge(
        "takeover_restored_flows",
        "Flows this process restored from the one it took over from.",
        opt(e.takeover.map(|t| t.1 as f64)),
    );
}

// ---------------------------------------------------------------------
// The HTTP side
// ---------------------------------------------------------------------

/// Binds the metrics address; the error names it and the cause
/// (`metrics.listen: cannot listen on 127.0.0.1:9469: Address already in
/// use`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("metrics.listen: cannot listen on {addr}: {e}"))
}

/// The HTTP thread serving `GET /metrics`.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` (from [`bind`]), asking `submit` (the control
    /// loop) for each scrape's text.
    pub fn start(listener: TcpListener, submit: socket::Submitter) -> Result<Server, String> {
        let addr = listener
            .local_addr()
            .map_err(|e| format!("metrics.listen: {e}"))?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| format!("metrics.listen: {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("natgw-metrics".into())
            .spawn(move || serve(&http, &submit, &s))
            .map_err(|e| format!("metrics thread: {e}"))?;
        log::info!("metrics: serving http://{addr}/metrics");
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the thread closes the listening socket within
    /// [`POLL`] of finishing the scrape it is on. Not joined: that scrape
    /// may be waiting for the control loop, which is the caller.
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

fn serve(http: &tiny_http::Server, submit: &socket::Submitter, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let req = match http.recv_timeout(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("metrics: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("");
        let get = matches!(
            req.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let (status, ctype, body) = if path != "/metrics" {
            (
                404,
                "text/plain",
                "not found: natgw serves /metrics\n".to_string(),
            )
        } else if !get {
            (405, "text/plain", "only GET /metrics\n".to_string())
        } else {
            let openmetrics = req.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let reply = submit.ask(protocol::Metrics { openmetrics }.into());
            match serde_json::from_str::<Response<MetricsReply>>(&reply.0)
                .map_err(|e| e.to_string())
                .and_then(|r| r.into_result())
            {
                Ok(m) => (200, leak_ctype(&m.content_type), m.text),
                Err(e) => (503, "text/plain", format!("natgw: {e}\n")),
            }
        };
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes());
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = header {
            resp = resp.with_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::debug!("metrics: writing a reply: {e}");
        }
    }
}

/// The content type as a `'static` str (one of the two we send).
fn leak_ctype(c: &str) -> &'static str {
    if c == OPENMETRICS_TEXT {
        OPENMETRICS_TEXT
    } else {
        PROMETHEUS_TEXT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::WorkerSnapshot;

    fn input_stats() -> StatsReport {
        let mut c = CounterSnapshot {
            rx_packets: 10,
            tx_packets: 9,
            flows_created: 3,
            ..CounterSnapshot::default()
        };
        c.drops.insert("no_route".into(), 1);
        StatsReport {
            backend: "tun".into(),
            flows: 3,
            max_flows: 1000,
            workers: vec![WorkerSnapshot {
                name: "tun0".into(),
                counters: c.clone(),
                latency_buckets: vec![0; LATENCY_BUCKETS_NS.len() + 1],
                ..WorkerSnapshot::default()
            }],
            total: c,
            ..StatsReport::default()
        }
    }

    #[test]
    fn names_follow_the_conventions_and_are_listed() {
        let mut stats = input_stats();
        stats.tunnels = vec![crate::engine::TunnelStats {
            name: "tun1".into(),
            mode: "gre".into(),
            local: std::net::Ipv4Addr::new(203, 0, 113, 1),
            remote: std::net::Ipv4Addr::new(203, 0, 113, 50),
            mtu: 1472,
            rx_packets: 5,
            rx_bytes: 500,
            tx_packets: 7,
            tx_bytes: 700,
            drops: 2,
            drop_reasons: Default::default(),
        }];
        stats.source_limit = Some(protocol::SourceLimitReport {
            limit: Some(64),
            sources: 900,
            offenders: vec![protocol::SourceOffender {
                addr: std::net::Ipv4Addr::new(10, 0, 0, 66),
                refused: 1234,
                error: 0,
                flows: 64,
            }],
        });
        let services = ServicesReport {
            services: Vec::new(),
            persistence: Vec::new(),
            rates: Vec::new(),
            checks: Vec::new(),
        };
        let events = DaemonEvents::default();
        let ha = crate::ha::HaStatus {
            role: "backup".into(),
            in_sync: true,
            counters: [("refused_bad_auth", 2u64), ("resent", 5)]
                .map(|(k, v)| (k.to_string(), v))
                .into(),
            ..Default::default()
        };
        let m = MetricsInput {
            stats: &stats,
            services: &services,
            events: &events,
            version: "0.1.0",
            ha: Some(&ha),
        };
        let text = render(&m, false).text;
        for want in [
            "natgw_ha_role{role=\"backup\"} 1\n",
            "natgw_ha_role{role=\"master\"} 0\n",
            "natgw_ha_in_sync 1\n",
            "natgw_ha_refused_datagrams_total{reason=\"bad_auth\"} 2\n",
            "natgw_ha_sync_events_total{event=\"resent\"} 5\n",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(text.contains("natgw_conntrack_entries 3\n"), "{text}");
        for want in [
            "natgw_source_flows_limit 64\n",
            "natgw_source_addresses 900\n",
            "natgw_source_refused_flows{address=\"10.0.0.66\"} 1234\n",
            "natgw_source_live_flows{address=\"10.0.0.66\"} 64\n",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(
            text.contains("natgw_conntrack_entries_limit 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("natgw_packets_total{worker=\"tun0\",direction=\"rx\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("natgw_drops_total{worker=\"tun0\",reason=\"no_route\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE natgw_drops_total counter"), "{text}");
        assert!(
            text.contains("natgw_tunnel_packets_total{tunnel=\"tun1\",direction=\"encap\"} 7\n")
                && text.contains(
                    "natgw_tunnel_bytes_total{tunnel=\"tun1\",direction=\"decap\"} 500\n"
                )
                && text.contains("natgw_tunnel_drops_total{tunnel=\"tun1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "natgw_engine_packet_duration_seconds_bucket{worker=\"tun0\",le=\"+Inf\"} 0"
            ),
            "{text}"
        );
        // Every family shown is in METRIC_NAMES; counters end in _total.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut w = line.split(' ').skip(2);
            let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            assert!(METRIC_NAMES.contains(&name), "{name} not in METRIC_NAMES");
            assert!(name.starts_with("natgw_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
        let om = render(&m, true);
        assert_eq!(om.content_type, OPENMETRICS_TEXT);
        assert!(om.text.ends_with("# EOF\n"), "{}", om.text);
    }
}
