//! The control protocol: every request the control socket takes and the
//! reply each one gets, as plain typed data.
//!
//! # Wire shape
//!
//! One JSON request per connection, on one line, answered by one JSON
//! line:
//!
//! - request: `{"cmd":"stats"}`, `{"cmd":"flows","filter":{...}}`, ... —
//!   a [`Request`], tagged by `cmd`;
//! - reply: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}` — a
//!   [`Response`] whose `data` is the request's [`Query::Reply`].
//!
//! A newer natgw taking over from an older one (`natgw run --takeover`)
//! speaks this to the old process, so the shape only grows: new fields
//! get serde defaults, and [`Handover`] and its [`SnapshotReply`] stay
//! exactly as they are.
//!
//! # Typed both ways
//!
//! Each request is a struct (`Stats`, `Flows`, ...) that implements
//! [`Query`], naming its reply type. The client calls
//! `socket::call(path, Stats {})` and gets a `StatsReport` back; the
//! daemon's dispatcher answers through [`answer`], which only accepts a
//! handler returning that request's reply type. A request and its reply
//! cannot drift apart without a compile error.
//!
//! # What this module may import
//!
//! Plain data types of the core (`conntrack`, `nat`, `lb`, `engine`
//! counters), the dataplane's per-worker counters, and serde. No clap (the
//! command line's argument types live in `main.rs` and convert into these),
//! no sockets, no threads, nothing from `control`, `daemon` or `health`
//! (the health checker imports [`CheckStatus`] from here, not the other
//! way round).

use crate::conntrack::{FlowRecord, TcpState, Time};
use crate::dataplane::WorkerSnapshot;
use crate::engine::{CounterSnapshot, flag_names};
use crate::lb::{Health, ServiceKey};
use crate::nat::{PortUsage, Prefix};
use crate::packet::{Tuple, proto};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

// ---------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------

/// Every request the control socket takes (JSON: tagged by `cmd`, the
/// variant's fields beside the tag).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Stats(Stats),
    Flows(Flows),
    Reload(Reload),
    Set(Set),
    Flush(Flush),
    Handover(Handover),
    #[serde(rename = "handover_step")]
    HandoverStep(HandoverStep),
    Snapshot(Snapshot),
    Services(Services),
    Lb(Lb),
    Metrics(Metrics),
    Ha(Ha),
}

/// A request and the type of its reply's `data`.
pub trait Query: Into<Request> {
    type Reply: Serialize + DeserializeOwned;
}

/// Ties each request struct to its [`Request`] variant and reply type.
macro_rules! queries {
    ($($name:ident => $reply:ty),* $(,)?) => {$(
        impl From<$name> for Request {
            fn from(q: $name) -> Request {
                Request::$name(q)
            }
        }
        impl Query for $name {
            type Reply = $reply;
        }
    )*};
}

queries! {
    Stats => StatsReport,
    Flows => FlowsReport,
    Reload => ReloadReply,
    Set => SetReport,
    Flush => FlushReply,
    Handover => SnapshotReply,
    HandoverStep => StepReply,
    Snapshot => SnapshotReply,
    Services => ServicesReport,
    Lb => LbReply,
    Metrics => MetricsReply,
    Ha => crate::ha::HaStatus,
}

/// The HA pair (`[ha]`): set this node's role (keepalived's notify
/// script) or read the sync state. The reply is the status afterwards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ha {
    /// `None`: only read the status.
    #[serde(default)]
    pub role: Option<crate::ha::Role>,
}

/// Everything `GET /metrics` shows, rendered by the control thread (the
/// `[metrics]` endpoint asks this of the control loop like any client).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// OpenMetrics text instead of the Prometheus text format 0.0.4.
    #[serde(default)]
    pub openmetrics: bool,
}

/// The exposition, ready to send.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsReply {
    pub content_type: String,
    pub text: String,
}

/// Counters, drops, flow-table fill, port use (`natgw stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {}

/// The flows that match (`natgw flows`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flows {
    #[serde(default)]
    pub filter: FlowFilter,
    /// Only count the matching flows (`natgw flows --count`): no lines, no
    /// views — cheap at a million flows.
    #[serde(default)]
    pub count_only: bool,
}

/// Re-read the config (`config`, or the file natgw started with).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reload {
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub flush_unmatched: bool,
}

/// Change or list an address set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    pub op: SetOp,
    pub name: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// Remove the flows that match (like `conntrack -D`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Flush {
    #[serde(default)]
    pub filter: FlowFilter,
}

/// Hand over to a new natgw process (`natgw run --takeover`): stop the
/// workers, write the state to `path`, give up the interfaces and the
/// socket, exit. Its shape never changes (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    pub path: PathBuf,
}

/// One step of a handover without loss (`natgw run --takeover` from a
/// natgw that knows it; an older one answers "unknown variant" and the new
/// process falls back to [`Handover`]). The new process asks, in order:
///
/// 1. [`StepKind::Copy`]: write the whole state to `path`, while the
///    workers forward as usual;
/// 2. [`StepKind::Changes`] (zero or more times): write the flows touched
///    since `since_ns` (the `at_ns` of the previous reply);
/// 3. [`StepKind::Cut`]: take the sockets out of the XDP programs (they
///    park what arrives), drain the workers, write the flows touched since
///    `since_ns` and the counters, keep the XDP programs attached, free
///    the socket path and exit.
///
/// Until the cut, the old process is unchanged: a new process that gives
/// up leaves it forwarding as before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoverStep {
    pub step: StepKind,
    pub path: PathBuf,
    /// The old process's clock (ns), from the previous step's reply.
    #[serde(default)]
    pub since_ns: u64,
}

/// See [`HandoverStep`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Copy,
    Changes,
    Cut,
}

/// What one step of a handover wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReply {
    pub path: String,
    pub flows: usize,
    pub bytes: u64,
    /// The old process's clock when the capture began: the `since_ns` of
    /// the next step.
    pub at_ns: u64,
    /// Cut only: the XDP programs stay attached and park frames until the
    /// new process registers its sockets (false: TUN, or bpffs missing:
    /// what arrives in between is lost).
    #[serde(default)]
    pub parking: bool,
    /// Step timings, microseconds, in order (name, time).
    #[serde(default)]
    pub timings_us: Vec<(String, u64)>,
    /// The old process's neighbour cache (AF_XDP), so the new one need not
    /// ask ARP again for the next hops of the first frames it forwards.
    #[serde(default)]
    pub neighbours: Vec<NeighbourEntry>,
}

/// One learnt neighbour, handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourEntry {
    pub interface: String,
    pub addr: std::net::Ipv4Addr,
    pub mac: [u8; 6],
    /// Time since it was learnt, milliseconds.
    pub age_ms: u64,
}

/// Write a snapshot of the state now (to `path`, else the configured
/// `[snapshot] path`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// List virtual services (`ipvsadm -L -n`, with stats and rates).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Services {}

/// Change a virtual service or real server (`ipvsadm -A/-E/-D/-a/-e/-d`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lb {
    pub change: crate::lb::Change,
    /// With `del_real`: also remove the server's flows (IPVS
    /// `expire_nodest_conn`); by default they carry on.
    #[serde(default)]
    pub expire_flows: bool,
}

/// What `natgw set` does to the set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SetOp {
    Add,
    Del,
    List,
    Flush,
}

/// `conntrack -L`-style filters; every given field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FlowFilter {
    /// Original-direction source (like conntrack `-s`).
    pub src: Option<String>,
    /// Original-direction destination (`-d`).
    pub dst: Option<String>,
    /// Reply-direction source (`-r`).
    pub reply_src: Option<String>,
    /// Reply-direction destination (`-q`).
    pub reply_dst: Option<String>,
    /// Any address of either tuple.
    pub addr: Option<String>,
    /// tcp, udp or icmp.
    pub proto: Option<String>,
    /// Original-direction source port.
    pub sport: Option<u16>,
    /// Original-direction destination port.
    pub dport: Option<u16>,
    /// Any port of either tuple.
    pub port: Option<u16>,
    /// TCP state name (ESTABLISHED, TIME_WAIT, ...).
    pub state: Option<String>,
}

/// A filter with its strings parsed.
pub struct CompiledFilter {
    src: Option<Prefix>,
    dst: Option<Prefix>,
    reply_src: Option<Prefix>,
    reply_dst: Option<Prefix>,
    addr: Option<Prefix>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
    port: Option<u16>,
    state: Option<TcpState>,
}

impl FlowFilter {
    /// Checks every field; errors name the bad one (as its command-line
    /// option).
    pub fn compile(&self) -> Result<CompiledFilter, String> {
        let pre = |name: &str, v: &Option<String>| -> Result<Option<Prefix>, String> {
            v.as_deref()
                .map(|s| s.parse::<Prefix>().map_err(|e| format!("--{name}: {e}")))
                .transpose()
        };
        let proto = match self.proto.as_deref() {
            None => None,
            Some("tcp") => Some(proto::TCP),
            Some("udp") => Some(proto::UDP),
            Some("icmp") => Some(proto::ICMP),
            Some(p) => return Err(format!("--proto: `{p}` is not one of tcp, udp, icmp")),
        };
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(TcpState::parse(s).ok_or_else(|| {
                let names: Vec<&str> = TcpState::ALL[1..].iter().map(|t| t.name()).collect();
                format!("--state: `{s}` is not a TCP state ({})", names.join(", "))
            })?),
        };
        Ok(CompiledFilter {
            src: pre("src", &self.src)?,
            dst: pre("dst", &self.dst)?,
            reply_src: pre("reply-src", &self.reply_src)?,
            reply_dst: pre("reply-dst", &self.reply_dst)?,
            addr: pre("addr", &self.addr)?,
            proto,
            sport: self.sport,
            dport: self.dport,
            port: self.port,
            state,
        })
    }
}

impl CompiledFilter {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        let (o, y) = (&r.orig, &r.reply);
        let has_ports = matches!(o.proto, proto::TCP | proto::UDP);
        self.src.is_none_or(|p| p.contains(o.src))
            && self.dst.is_none_or(|p| p.contains(o.dst))
            && self.reply_src.is_none_or(|p| p.contains(y.src))
            && self.reply_dst.is_none_or(|p| p.contains(y.dst))
            && self
                .addr
                .is_none_or(|p| [o.src, o.dst, y.src, y.dst].iter().any(|&a| p.contains(a)))
            && self.proto.is_none_or(|p| p == o.proto)
            && self.sport.is_none_or(|p| has_ports && o.sport == p)
            && self.dport.is_none_or(|p| has_ports && o.dport == p)
            && self
                .port
                .is_none_or(|p| has_ports && [o.sport, o.dport, y.sport, y.dport].contains(&p))
            && self
                .state
                .is_none_or(|s| o.proto == proto::TCP && r.tcp_state == s)
    }
}

// ---------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------

/// One reply line: `data` on success, `error` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response<T> {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Response<T> {
    pub fn from_result(r: Result<T, String>) -> Response<T> {
        match r {
            Ok(d) => Response {
                ok: true,
                error: None,
                data: Some(d),
            },
            Err(e) => Response {
                ok: false,
                error: Some(e),
                data: None,
            },
        }
    }

    /// What the client makes of a reply.
    pub fn into_result(self) -> Result<T, String> {
        match (self.ok, self.data, self.error) {
            (true, Some(d), _) => Ok(d),
            (_, _, Some(e)) => Err(e),
            _ => Err("empty reply from natgw".into()),
        }
    }
}

/// A reply encoded as its JSON line (without the newline), ready to
/// write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub String);

/// An error reply for a request that never reached a handler (unreadable
/// or malformed).
pub fn error_reply(e: String) -> Encoded {
    encode(Response::<()>::from_result(Err(e)))
}

/// Runs `handler` on `q` and encodes its result as `q`'s reply: the only
/// way the dispatcher produces a reply, so a handler must return the
/// reply type its request names.
pub fn answer<Q: Query>(q: Q, handler: impl FnOnce(Q) -> Result<Q::Reply, String>) -> Encoded {
    encode(Response::from_result(handler(q)))
}

fn encode<T: Serialize>(r: Response<T>) -> Encoded {
    match serde_json::to_string(&r) {
        Ok(s) => Encoded(s),
        Err(e) => Encoded(
            serde_json::json!({"ok": false, "error": format!("encoding reply: {e}")}).to_string(),
        ),
    }
}

/// What `natgw stats` shows.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StatsReport {
    pub backend: String,
    pub uptime_secs: f64,
    pub flows: usize,
    pub max_flows: usize,
    pub workers: Vec<WorkerSnapshot>,
    /// All workers summed.
    pub total: CounterSnapshot,
    pub port_usage: Vec<PortUsage>,
    /// Neighbours natgw resolved (AF_XDP): interface, address, MAC, age.
    pub neighbours: Vec<(String, Ipv4Addr, String, u64)>,
    /// AF_XDP: what each interface's XDP program did with the frames it
    /// saw (counted since it was first attached, across handovers).
    #[serde(default)]
    pub xdp: Vec<crate::dataplane::XdpCounters>,
    /// Per `[[tunnel]]`: packets, bytes, drops.
    #[serde(default)]
    pub tunnels: Vec<crate::engine::TunnelStats>,
    /// The NAT session log, when `[logging]` has an output.
    #[serde(default)]
    pub session_log: Option<crate::sessionlog::SessionLogStats>,
    /// Per-source limit (`[limits] flows_per_source`): `None` while no
    /// limit was ever set.
    #[serde(default)]
    pub source_limit: Option<SourceLimitReport>,
}

/// The per-source flow limit and its most refused sources.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct SourceLimitReport {
    /// Live flows one source may have (`None`: the limit was removed by a
    /// reload; counting goes on).
    pub limit: Option<u32>,
    /// Source addresses with at least one live flow.
    pub sources: usize,
    /// The most refused sources (at most `conntrack::source::TOP`), most
    /// refused first.
    pub offenders: Vec<SourceOffender>,
}

/// One refused source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceOffender {
    pub addr: Ipv4Addr,
    /// New flows refused (may overstate by up to `error`, what it
    /// inherited when it entered the bounded list).
    pub refused: u64,
    pub error: u64,
    /// Its live flows now.
    pub flows: u32,
}

impl SourceLimitReport {
    /// What the flow table's per-source counts say now (`None` if no
    /// limit was ever set).
    pub fn of(s: &crate::conntrack::SourceCounts) -> Option<SourceLimitReport> {
        s.counting().then(|| SourceLimitReport {
            limit: s.limit(),
            sources: s.sources(),
            offenders: s
                .offenders()
                .into_iter()
                .map(|o| SourceOffender {
                    addr: Ipv4Addr::from(o.addr),
                    refused: o.refused,
                    error: o.error,
                    flows: o.flows,
                })
                .collect(),
        })
    }
}

/// What `natgw flows` returns.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FlowsReport {
    pub total: usize,
    /// Flows that match the filter (absent from natgw before `count_only`).
    #[serde(default)]
    pub matched: Option<usize>,
    pub flows: Vec<FlowView>,
    /// `conntrack -L`-style lines, same order.
    pub lines: Vec<String>,
}

/// A flow as JSON-friendly data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowView {
    pub proto: String,
    pub state: Option<String>,
    pub timeout_secs: u64,
    pub orig: TupleView,
    pub reply: TupleView,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub flags: Vec<String>,
    /// The flow's mark (a rule's `set_mark`; 0 none).
    #[serde(default)]
    pub mark: u8,
    /// The `[[tunnel]]` its packets leave by, either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
            mark: crate::nat::nat_flags::mark_of(r.flags),
            tunnel: None,
        }
    }
}

/// What `natgw reload` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub config: String,
    pub report: crate::engine::ReloadReport,
    /// Flows removed because they no longer match (with --flush-unmatched).
    pub flushed: usize,
}

/// What `natgw set` returns.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SetReport {
    pub name: String,
    pub default_timeout: u32,
    pub entries: Vec<SetEntryView>,
    /// What the operation changed (`added`, `refreshed`, `deleted`, `flushed N`).
    pub changed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SetEntryView {
    pub prefix: String,
    /// Seconds left, `None` for a permanent entry.
    pub expires_in: Option<u64>,
}

/// What `natgw flush` removed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct FlushReply {
    pub flushed: usize,
}

/// What the old process of a handover (or a snapshot request) wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReply {
    pub path: String,
    pub flows: usize,
    pub bytes: u64,
    /// Time the workers stood still (handover), or 0.
    #[serde(default)]
    pub paused_ms: f64,
}

/// `natgw services`: the virtual services, their servers' counters, rates
/// over the last sampling window, and health-check state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesReport {
    pub services: Vec<crate::lb::ServiceStatus>,
    /// Live persistence entries (IPVS templates).
    #[serde(default)]
    pub persistence: Vec<PersistView>,
    /// Per real server: rates over the last window (`ipvsadm --rate`).
    pub rates: Vec<RealRate>,
    /// Health-check state per checked real server.
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

/// A persistence entry as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistView {
    pub service: ServiceKey,
    /// Client network (address masked by `netmask`).
    pub client: String,
    pub netmask: u8,
    pub real: String,
    /// Seconds left.
    pub expires_in: u64,
}

/// Rates of one real server of one service.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RealRate {
    pub service: ServiceKey,
    #[serde(with = "crate::lb::ipv4_serde")]
    pub addr: u32,
    pub port: u16,
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

/// One checked real server, for `natgw services` (JSON as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub service: ServiceKey,
    /// The real server as the service lists it.
    pub real: SocketAddrV4,
    /// Where the check connects; `None` when it cannot (port 0).
    pub target: Option<SocketAddrV4>,
    /// `tcp` or `http`.
    pub kind: String,
    pub health: Health,
    /// Successes in a row (0 after a failure).
    pub consecutive_ok: u32,
    /// Failures in a row (0 after a success).
    pub consecutive_fail: u32,
    pub rise: u32,
    pub fall: u32,
    /// Why the latest failing check failed (kept after a success, for
    /// the record; `consecutive_fail` says whether it is current).
    pub last_error: Option<String>,
    /// Seconds since the current health began: the last transition, or
    /// the start of checking when there was none.
    pub health_age_secs: f64,
    /// Wall clock (Unix seconds) of the last up/down transition, if any.
    pub last_transition_unix: Option<f64>,
    /// Up/down transitions so far.
    pub transitions: u64,
    pub checks_run: u64,
    pub checks_failed: u64,
    /// Seconds since the latest check finished, and how long it took.
    pub last_check_age_secs: Option<f64>,
    pub last_check_ms: Option<f64>,
}

/// What an `lb` change did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbReply {
    pub changed: String,
    /// Flows removed with `expire_flows`.
    pub flushed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request lines natgw has always sent still parse, and encode
    /// back to the same JSON (a takeover talks to an older natgw).
    #[test]
    fn request_wire_shape_is_unchanged() {
        for line in [
            r#"{"cmd":"stats"}"#,
            r#"{"cmd":"services"}"#,
            r#"{"cmd":"handover","path":"/run/natgw/h.snap"}"#,
            r#"{"cmd":"snapshot","path":null}"#,
            r#"{"cmd":"reload","config":"/etc/natgw.toml","flush_unmatched":true}"#,
            r#"{"cmd":"set","op":"add","name":"blocked","prefix":"10.0.0.0/8","timeout":30}"#,
        ] {
            let req: Request = serde_json::from_str(line).unwrap();
            let back = serde_json::to_string(&req).unwrap();
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(line).unwrap(),
                serde_json::from_str(&back).unwrap(),
            );
            assert_eq!(a, b, "{line}");
        }
        // Optional fields may be left out.
        let req: Request = serde_json::from_str(r#"{"cmd":"flows"}"#).unwrap();
        assert!(
            matches!(req, Request::Flows(Flows { filter, count_only: false }) if filter == FlowFilter::default())
        );
        let req: Request = serde_json::from_str(r#"{"cmd":"snapshot"}"#).unwrap();
        assert!(matches!(req, Request::Snapshot(Snapshot { path: None })));
    }

    #[test]
    fn replies_are_ok_data_or_error() {
        let ok = answer(Flush::default(), |_| Ok(FlushReply { flushed: 3 }));
        assert_eq!(ok.0, r#"{"ok":true,"data":{"flushed":3}}"#);
        let err = answer(Stats {}, |_| Err("nope".into()));
        assert_eq!(err.0, r#"{"ok":false,"error":"nope"}"#);
        let r: Response<FlushReply> = serde_json::from_str(&ok.0).unwrap();
        assert_eq!(r.into_result().unwrap().flushed, 3);
        let r: Response<StatsReport> = serde_json::from_str(&err.0).unwrap();
        assert_eq!(r.into_result().unwrap_err(), "nope");
        let r: Response<StatsReport> = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!(r.into_result().unwrap_err(), "empty reply from natgw");
    }

    #[test]
    fn handover_reply_shape_is_unchanged() {
        let r = SnapshotReply {
            path: "/x".into(),
            flows: 2,
            bytes: 10,
            paused_ms: 1.5,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"path":"/x","flows":2,"bytes":10,"paused_ms":1.5}"#
        );
    }
}
