//! The control socket: a Unix stream socket speaking one JSON request per
//! connection (a line), answered by one JSON response (a line).
//!
//! Requests: `{"cmd":"stats"}`, `{"cmd":"flows","filter":{...}}`.
//! Responses: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
//! The socket is created with mode 0600 (root's); a stale socket file left
//! by a dead process is replaced, a live one is refused ("already running").

use super::format::FlowView;
use crate::conntrack::{FlowRecord, TcpState};
use crate::dataplane::WorkerSnapshot;
use crate::engine::CounterSnapshot;
use crate::nat::{PortUsage, Prefix};
use crate::packet::proto;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Stats,
    Flows {
        #[serde(default)]
        filter: FlowFilter,
    },
    /// Re-read the config (`config`, or the file natgw started with).
    Reload {
        config: Option<std::path::PathBuf>,
        #[serde(default)]
        flush_unmatched: bool,
    },
    /// Change or list an address set.
    Set {
        op: SetOp,
        name: String,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        timeout: Option<u32>,
    },
    /// Remove the flows that match (like `conntrack -D`).
    Flush {
        #[serde(default)]
        filter: FlowFilter,
    },
    /// Hand over to a new natgw process (`natgw run --takeover`): stop
    /// the workers, write the state to `path`, give up the interfaces and
    /// the socket, exit.
    Handover {
        path: std::path::PathBuf,
    },
    /// Write a snapshot of the state now (to `path`, else the configured
    /// `[snapshot] path`).
    Snapshot {
        #[serde(default)]
        path: Option<std::path::PathBuf>,
    },
    /// List virtual services (`ipvsadm -L -n`, with stats and rates).
    Services,
    /// Change a virtual service or real server (`ipvsadm -A/-E/-D/-a/-e/-d`).
    Lb {
        change: crate::lb::Change,
        /// With `del_real`: also remove the server's flows (IPVS
        /// `expire_nodest_conn`); by default they carry on.
        #[serde(default)]
        expire_flows: bool,
    },
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
    pub checks: Vec<crate::control::health::CheckStatus>,
}

/// A persistence entry as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistView {
    pub service: crate::lb::ServiceKey,
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
    pub service: crate::lb::ServiceKey,
    #[serde(with = "crate::lb::ipv4_serde")]
    pub addr: u32,
    pub port: u16,
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

/// What an `lb` change did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbReply {
    pub changed: String,
    /// Flows removed with `expire_flows`.
    pub flushed: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SetOp {
    Add,
    Del,
    List,
    Flush,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// `conntrack -L`-style filters; every given field must match. Also the
/// `natgw flows` command-line options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, clap::Args)]
pub struct FlowFilter {
    /// Original-direction source (like conntrack `-s`).
    #[arg(long)]
    pub src: Option<String>,
    /// Original-direction destination (`-d`).
    #[arg(long)]
    pub dst: Option<String>,
    /// Reply-direction source (`-r`).
    #[arg(long)]
    pub reply_src: Option<String>,
    /// Reply-direction destination (`-q`).
    #[arg(long)]
    pub reply_dst: Option<String>,
    /// Any address of either tuple.
    #[arg(long)]
    pub addr: Option<String>,
    /// tcp, udp or icmp.
    #[arg(long, short)]
    pub proto: Option<String>,
    /// Original-direction source port.
    #[arg(long)]
    pub sport: Option<u16>,
    /// Original-direction destination port.
    #[arg(long)]
    pub dport: Option<u16>,
    /// Any port of either tuple.
    #[arg(long)]
    pub port: Option<u16>,
    /// TCP state name (ESTABLISHED, TIME_WAIT, ...).
    #[arg(long)]
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
    /// Checks every field; errors name the bad one.
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
    pub neighbours: Vec<(String, std::net::Ipv4Addr, String, u64)>,
}

/// What `natgw flows` returns.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FlowsReport {
    pub total: usize,
    pub flows: Vec<FlowView>,
    /// `conntrack -L`-style lines, same order.
    pub lines: Vec<String>,
}

/// Binds the control socket at `path`, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another natgw is running (its control socket {} answers); stop it first",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
    }
    let l =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    l.set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    Ok(l)
}

/// Serves one connection: reads a request line, answers with `handle`.
pub fn serve_one(
    stream: UnixStream,
    handle: impl FnOnce(Request) -> Result<serde_json::Value, String>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let resp = match reader.read_line(&mut line) {
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => match handle(req) {
                Ok(v) => Response {
                    ok: true,
                    error: None,
                    data: Some(v),
                },
                Err(e) => Response {
                    ok: false,
                    error: Some(e),
                    data: None,
                },
            },
            Err(e) => Response {
                ok: false,
                error: Some(format!("bad request: {e}")),
                data: None,
            },
        },
        Err(e) => Response {
            ok: false,
            error: Some(format!("reading request: {e}")),
            data: None,
        },
    };
    let mut w = &stream;
    if let Ok(s) = serde_json::to_string(&resp) {
        let _ = w.write_all(s.as_bytes());
        let _ = w.write_all(b"\n");
    }
}

/// Sends `req` to the daemon at `path` and returns its data.
pub fn call(path: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!("cannot reach natgw at {}: {e} (is `natgw run` running? --socket or --config names another socket)", path.display())
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let body = serde_json::to_string(req).map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes())
        .and_then(|_| s.write_all(b"\n"))
        .map_err(|e| format!("sending request: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("reading reply: {e}"))?;
    let resp: Response =
        serde_json::from_str(line.trim()).map_err(|e| format!("bad reply from natgw: {e}"))?;
    match (resp.ok, resp.data, resp.error) {
        (true, Some(d), _) => Ok(d),
        (_, _, Some(e)) => Err(e),
        _ => Err("empty reply from natgw".into()),
    }
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

/// What `natgw reload` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReply {
    pub config: String,
    pub report: crate::engine::ReloadReport,
    /// Flows removed because they no longer match (with --flush-unmatched).
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
