//! The TOML config file: parse, validate, build the engine's inputs.
//!
//! Every error names the file, line and column, and the field at fault
//! (`natgw.toml:14:7: rule[2].oif: no interface named "wan1"`). Validation
//! is complete before anything is built, so a bad file changes nothing.
//! The format is documented in the README with a full example.

use crate::conntrack::{MAX_FLOWS_LIMIT, Timeouts};
use crate::engine::{EngineConfig, Interface, Ipv6Policy, Role, Route, Unmatched};
use crate::health::{CheckKind, CheckSpec};
use crate::lb::{Forward, Persistence, RealSpec, Scheduler, ServiceKey, ServiceSpec};
use crate::nat::{
    Action, AddrPool, AddrSet, IfAddr, IfId, Match, PortRange, Prefix, Rule, Ruleset, Sets,
    SnatSpec,
};
use crate::packet::proto;
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

mod tunnel;

/// A config error, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {msg}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
}

/// The validated config.
pub struct Config {
    pub path: PathBuf,
    pub engine: EngineConfig,
    pub ruleset: Ruleset,
    pub sets: Sets,
    /// Virtual services (LVS-NAT load balancing), in config order.
    pub services: Vec<ServiceConfig>,
    /// How `natgw run` moves packets and where it listens.
    pub run: RunConfig,
}

/// A `[[service]]`: the virtual service and its health check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceConfig {
    pub spec: ServiceSpec,
    pub check: Option<CheckSpec>,
}

// The data plane's own settings live with it (the data plane does not
// import control); re-exported here for the config's users.
pub use crate::dataplane::config::{
    AfxdpConfig, Backend, COALESCE_US_MAX, RT_PRIORITY_MAX, XdpMode,
};

/// Periodic snapshots (crash recovery) — `[snapshot]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotConfig {
    /// Where `natgw run` writes its state (atomically: temp file + rename);
    /// `None` writes nothing.
    pub path: Option<PathBuf>,
    /// Seconds between two periodic snapshots (0: only at a clean stop).
    pub interval_secs: u32,
}

pub use crate::dataplane::config::TunConfig;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunConfig {
    pub backend: Backend,
    pub control_socket: PathBuf,
    pub afxdp: AfxdpConfig,
    pub tun: TunConfig,
    pub snapshot: SnapshotConfig,
    pub metrics: MetricsConfig,
    /// `[ha]`: state sync with an HA peer; `None`: a single node.
    pub ha: Option<crate::ha::HaConfig>,
    /// `[logging]`: NAT session logging (off unless an output is given).
    pub logging: crate::sessionlog::LoggingConfig,
}

/// The Prometheus endpoint — `[metrics]`. Off unless `listen` is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (plain HTTP; `127.0.0.1:9469` keeps
    /// it on the box). `None`: no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// Where the control socket is when the config does not say.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/natgw/natgw.sock";

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            backend: Backend::Afxdp,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            afxdp: AfxdpConfig::default(),
            tun: TunConfig::default(),
            snapshot: SnapshotConfig {
                path: None,
                interval_secs: 10,
            },
            metrics: MetricsConfig::default(),
            ha: None,
            logging: crate::sessionlog::LoggingConfig::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAfxdp {
    mode: Option<Spanned<String>>,
    zero_copy: Option<bool>,
    frames: Option<Spanned<u32>>,
    batch: Option<Spanned<u32>>,
    queues: Option<u32>,
    cpus: Option<Vec<usize>>,
    coalesce_us: Option<Spanned<u32>>,
    rt_priority: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    path: Option<Spanned<String>>,
    interval: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    ipfix: Option<Spanned<String>>,
    ipfix_domain: Option<Spanned<u32>>,
    template_refresh: Option<Spanned<u32>>,
    max_datagram: Option<Spanned<u32>>,
    syslog: Option<Spanned<String>>,
    syslog_facility: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    local: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    refresh: Option<Spanned<u32>>,
    max_datagram: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTun {
    prefix: Option<Spanned<String>>,
    table_base: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    backend: Option<Spanned<String>>,
    control_socket: Option<String>,
    ipv6: Option<Spanned<String>>,
    unmatched: Option<Spanned<String>>,
    hairpin: Option<bool>,
    icmp_rate: Option<u32>,
    seed: Option<u64>,
    tcp_window: Option<Spanned<String>>,
    tcp_loose: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_flows: Option<Spanned<u32>>,
    early_drop: Option<bool>,
    flows_per_source: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    role: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    extra_addresses: Vec<Spanned<String>>,
    mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: Spanned<String>,
    via: Option<Spanned<String>>,
    dev: Option<Spanned<String>>,
    /// Policy routing: only from this source prefix / with this flow mark.
    from: Option<Spanned<String>>,
    mark: Option<Spanned<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    name: Spanned<String>,
    #[serde(default)]
    timeout: u32,
    #[serde(default)]
    elements: Vec<Spanned<String>>,
}

/// A port, or a range written as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPorts {
    One(u16),
    Range(String),
}

/// `to` as one string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawTo {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    iif: Option<Spanned<String>>,
    oif: Option<Spanned<String>>,
    src: Option<Spanned<String>>,
    dst: Option<Spanned<String>>,
    proto: Option<Spanned<String>>,
    sport: Option<Spanned<RawPorts>>,
    dport: Option<Spanned<RawPorts>>,
    src_set: Option<Spanned<String>>,
    dst_set: Option<Spanned<String>>,
    action: Spanned<String>,
    to: Option<Spanned<RawTo>>,
    ports: Option<Spanned<RawPorts>>,
    persistent: Option<Spanned<bool>>,
    mapping: Option<Spanned<String>>,
    filtering: Option<Spanned<String>>,
    /// Match the flow's mark (set by an earlier phase's rule).
    mark: Option<Spanned<u8>>,
    /// Set this mark on the new flow when the rule matches.
    set_mark: Option<Spanned<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    afxdp: RawAfxdp,
    #[serde(default)]
    tun: RawTun,
    #[serde(default)]
    snapshot: RawSnapshot,
    #[serde(default)]
    metrics: RawMetrics,
    ha: Option<Spanned<RawHa>>,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default, rename = "interface")]
    interfaces: Vec<Spanned<RawInterface>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default, rename = "tunnel")]
    tunnels: Vec<Spanned<tunnel::RawTunnel>>,
    #[serde(default, rename = "set")]
    sets: Vec<Spanned<RawSet>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    address: Spanned<String>,
    port: Spanned<u16>,
    proto: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    /// `sh`/`dh`/`mh`: fall back to another server when the hashed one is
    /// unavailable (default true).
    hash_fallback: Option<bool>,
    /// `sh`/`dh`/`mh`: hash the port too.
    hash_port: Option<bool>,
    mh_table_size: Option<Spanned<u32>>,
    forward: Option<Spanned<String>>,
    persistence: Option<Spanned<u32>>,
    persistence_netmask: Option<Spanned<u8>>,
    expire_quiescent: Option<bool>,
    #[serde(default, rename = "real")]
    reals: Vec<Spanned<RawReal>>,
    check: Option<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: Spanned<String>,
    port: Option<u16>,
    weight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    interval: Option<Spanned<f64>>,
    timeout: Option<Spanned<f64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    port: Option<u16>,
    path: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    host: Option<String>,
}

/// Turns byte spans into `file:line:col` errors.
struct Src<'a> {
    file: String,
    text: &'a str,
}

impl Src<'_> {
    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        let at = span.start.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            col,
            msg: msg.into(),
        }
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// Parses a spanned string with `f`, locating its error.
    fn parse<T>(
        &self,
        field: &str,
        v: &Spanned<String>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        f(v.get_ref()).map_err(|e| self.err(v.span(), format!("{field}: {e}")))
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: path.display().to_string(),
            source: e,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config `text` (named `path` in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Src {
            file: path.display().to_string(),
            text,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            src.err(span, e.message().trim().to_string())
        })?;
        build(raw, &src, path)
    }

    /// Name of interface `id` (for listings).
    pub fn ifname(&self, id: IfId) -> String {
        let n = self.engine.interfaces.len();
        match self.engine.interfaces.get(id as usize) {
            Some(i) => i.name.clone(),
            None => (id as usize)
                .checked_sub(n)
                .and_then(|k| self.engine.tunnels.get(k))
                .map_or_else(|| format!("#{id}"), |t| t.name.clone()),
        }
    }
}

fn build(raw: RawConfig, src: &Src<'_>, path: &Path) -> Result<Config, ConfigError> {
    let mut cfg = EngineConfig {
        timeouts: raw.timeouts,
        ..EngineConfig::default()
    };

    // [gateway]
    let g = &raw.gateway;
    if let Some(v) = &g.ipv6 {
        cfg.ipv6 = src.parse("gateway.ipv6", v, |s| match s {
            "pass" => Ok(Ipv6Policy::Pass),
            "drop" => Ok(Ipv6Policy::Drop),
            _ => Err(format!("`{s}` is not one of \"pass\", \"drop\"")),
        })?;
    }
    if let Some(v) = &g.unmatched {
        cfg.unmatched = src.parse("gateway.unmatched", v, |s| match s {
            "forward" => Ok(Unmatched::Forward),
            "drop" => Ok(Unmatched::Drop),
            _ => Err(format!("`{s}` is not one of \"forward\", \"drop\"")),
        })?;
    }
    cfg.hairpin = g.hairpin.unwrap_or(cfg.hairpin);
    cfg.icmp_rate = g.icmp_rate.unwrap_or(cfg.icmp_rate);
    cfg.seed = g.seed.unwrap_or(cfg.seed);
    if let Some(v) = &g.tcp_window {
        cfg.tcp_liberal = src.parse("gateway.tcp_window", v, |s| match s {
            "strict" => Ok(false),
            "liberal" => Ok(true),
            _ => Err(format!("`{s}` is not one of \"strict\", \"liberal\"")),
        })?;
    }
    cfg.tcp_loose = g.tcp_loose.unwrap_or(cfg.tcp_loose);

    // [limits]
    if let Some(m) = &raw.limits.max_flows {
        let v = *m.get_ref();
        if v == 0 || v > MAX_FLOWS_LIMIT {
            return Err(src.err(
                m.span(),
                format!("limits.max_flows: must be 1..={MAX_FLOWS_LIMIT}, not {v}"),
            ));
        }
        cfg.max_flows = v;
    }
    cfg.early_drop = raw.limits.early_drop.unwrap_or(cfg.early_drop);
    if let Some(m) = &raw.limits.flows_per_source {
        let v = *m.get_ref();
        if v == 0 || v > cfg.max_flows {
            return Err(src.err(
                m.span(),
                format!(
                    "limits.flows_per_source: must be 1..={} (max_flows), not {v}; leave it out for no limit",
                    cfg.max_flows
                ),
            ));
        }
        cfg.flows_per_source = Some(v);
    }

    // [[interface]]
    if raw.interfaces.is_empty() {
        return Err(src.err(
            0..0,
            "no [[interface]] sections: natgw needs at least one interface",
        ));
    }
    let mut names: HashMap<String, IfId> = HashMap::new();
    for (i, ri) in raw.interfaces.iter().enumerate() {
        let r = ri.get_ref();
        let f = |name: &str| format!("interface[{i}].{name}");
        let name = r.name.get_ref().clone();
        if name.is_empty() || name.len() > 15 {
            return Err(src.err(
                r.name.span(),
                format!("{}: interface names are 1-15 characters", f("name")),
            ));
        }
        if names.insert(name.clone(), i as IfId).is_some() {
            return Err(src.err(
                r.name.span(),
                format!("{}: interface `{name}` is listed twice", f("name")),
            ));
        }
        let role = src.parse(&f("role"), &r.role, |s| match s {
            "inside" => Ok(Role::Inside),
            "outside" => Ok(Role::Outside),
            _ => Err(format!("`{s}` is not one of \"inside\", \"outside\"")),
        })?;
        let addr: IfAddr = src.parse(&f("address"), &r.address, |s| s.parse())?;
        let extra = r
            .extra_addresses
            .iter()
            .map(|a| src.parse(&f("extra_addresses"), a, parse_addr))
            .collect::<Result<Vec<u32>, _>>()?;
        let mac = match &r.mac {
            Some(m) => Some(src.parse(&f("mac"), m, parse_mac)?),
            None => None,
        };
        cfg.interfaces.push(Interface {
            name,
            role,
            addr,
            extra,
            mac,
        });
    }
    cfg.tunnels = tunnel::build_tunnels(&raw.tunnels, src, &cfg.interfaces, &mut names)?;
    let iface = |field: &str, v: &Spanned<String>| -> Result<IfId, ConfigError> {
        names.get(v.get_ref()).copied().ok_or_else(|| {
            let known: Vec<&str> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
            src.err(
                v.span(),
                format!(
                    "{field}: no interface named `{}` (known: {})",
                    v.get_ref(),
                    known.join(", ")
                ),
            )
        })
    };

    // [[route]]
    let connected = crate::engine::RouteTable::new(&cfg.interfaces, &[]);
    let mut routes = Vec::new();
    for (i, rr) in raw.routes.iter().enumerate() {
        let r = rr.get_ref();
        let f = |name: &str| format!("route[{i}].{name}");
        let prefix: Prefix = src.parse(&f("to"), &r.to, |s| s.parse())?;
        let via = match &r.via {
            Some(v) => Some(src.parse(&f("via"), v, parse_addr)?),
            None => None,
        };
        let oif = match (&r.dev, via) {
            (Some(d), _) => iface(&f("dev"), d)?,
            (None, Some(v)) => match connected.lookup(v) {
                Some(h) => h.oif,
                None => {
                    let span = r.via.as_ref().map_or(rr.span(), |v| v.span());
                    return Err(src.err(
                        span,
                        format!(
                            "{}: gateway is on no interface's network; add `dev`",
                            f("via")
                        ),
                    ));
                }
            },
            (None, None) => {
                return Err(src.err(rr.span(), format!("route[{i}]: needs `via`, `dev` or both")));
            }
        };
        let route = Route { prefix, oif, via };
        let from = match &r.from {
            Some(v) => Some(src.parse(&f("from"), v, |s| s.parse::<Prefix>())?),
            None => None,
        };
        if let Some(m) = &r.mark
            && *m.get_ref() == 0
        {
            return Err(src.err(m.span(), format!("{}: marks are 1-255", f("mark"))));
        }
        let mark = r.mark.as_ref().map(|m| *m.get_ref());
        if from.is_some() || mark.is_some() {
            cfg.policy_routes
                .push(crate::engine::PolicyRoute { route, from, mark });
        } else {
            routes.push(route);
        }
    }
    tunnel::check_underlay(&raw.tunnels, &cfg.tunnels, src, &cfg.interfaces, &routes)?;
    cfg.routes = routes;

    // [[set]]
    let mut sets: Sets = HashMap::new();
    for (i, rs) in raw.sets.iter().enumerate() {
        let r = rs.get_ref();
        let name = r.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(src.err(
                r.name.span(),
                format!("set[{i}].name: use letters, digits, `_` and `-`"),
            ));
        }
        let set = AddrSet::new(name, r.timeout);
        for e in &r.elements {
            let p: Prefix = src.parse(&format!("set[{i}].elements"), e, |s| s.parse())?;
            // Elements written in the config are permanent.
            set.add_config(p);
        }
        if sets.insert(name.clone(), Arc::new(set)).is_some() {
            return Err(src.err(
                r.name.span(),
                format!("set[{i}].name: set `{name}` is defined twice"),
            ));
        }
    }

    // [[rule]]
    let mut rules = Vec::new();
    for (i, rr) in raw.rules.iter().enumerate() {
        rules.push(build_rule(i, rr, src, &iface, &sets)?);
    }
    let run = build_run(&raw, src)?;
    let mut services: Vec<ServiceConfig> = Vec::new();
    for (i, rs) in raw.services.iter().enumerate() {
        let svc = build_service(i, rs, src)?;
        let k = svc.spec.key;
        let owned = cfg
            .interfaces
            .iter()
            .any(|f| f.addr.addr == k.vip || f.extra.contains(&k.vip));
        if owned && k.proto == proto::TCP && PortRange::HEALTH_CHECK.contains(k.port) {
            return Err(src.err(
                rs.span(),
                format!(
                    "service[{i}]: TCP ports {}-{} of the gateway's own addresses are reserved for health-check sockets",
                    PortRange::HEALTH_CHECK.lo,
                    PortRange::HEALTH_CHECK.hi
                ),
            ));
        }
        if services.iter().any(|s| s.spec.key == svc.spec.key) {
            return Err(src.err(
                rs.span(),
                format!("service[{i}]: service {} is defined twice", svc.spec.key),
            ));
        }
        services.push(svc);
    }
    Ok(Config {
        path: path.to_path_buf(),
        engine: cfg,
        ruleset: Ruleset { rules },
        sets,
        services,
        run,
    })
}

fn build_service(
    i: usize,
    rs: &Spanned<RawService>,
    src: &Src<'_>,
) -> Result<ServiceConfig, ConfigError> {
    let r = rs.get_ref();
    let f = |name: &str| format!("service[{i}].{name}");
    let vip = src.parse(&f("address"), &r.address, parse_addr)?;
    let proto = match &r.proto {
        Some(p) => src.parse(&f("proto"), p, |s| match s {
            "tcp" => Ok(proto::TCP),
            "udp" => Ok(proto::UDP),
            _ => Err(format!("`{s}` is not one of \"tcp\", \"udp\"")),
        })?,
        None => proto::TCP,
    };
    let mut scheduler = match &r.scheduler {
        Some(s) => src.parse(&f("scheduler"), s, |s| s.parse::<Scheduler>())?,
        None => Scheduler::Wlc,
    };
    match &mut scheduler {
        Scheduler::Sh(o) | Scheduler::Dh(o) => {
            o.fallback = r.hash_fallback.unwrap_or(o.fallback);
            o.port = r.hash_port.unwrap_or(o.port);
        }
        Scheduler::Mh(o) => {
            o.fallback = r.hash_fallback.unwrap_or(o.fallback);
            o.port = r.hash_port.unwrap_or(o.port);
            if let Some(t) = &r.mh_table_size {
                o.table_size = *t.get_ref();
            }
        }
        _ => {}
    }
    let forward = match &r.forward {
        Some(v) => src.parse(&f("forward"), v, |s| match s {
            "masq" | "nat" => Ok(Forward::Masq),
            "fullnat" => Ok(Forward::Fullnat),
            _ => Err(format!("`{s}` is not one of \"masq\", \"fullnat\"")),
        })?,
        None => Forward::Masq,
    };
    let persistence = match &r.persistence {
        Some(t) => Some(Persistence {
            timeout_secs: *t.get_ref(),
            netmask: r.persistence_netmask.as_ref().map(|m| *m.get_ref()),
            expire_quiescent: r.expire_quiescent.unwrap_or(false),
        }),
        None => {
            if let Some(m) = &r.persistence_netmask {
                return Err(src.err(
                    m.span(),
                    format!(
                        "{}: needs `persistence` (seconds)",
                        f("persistence_netmask")
                    ),
                ));
            }
            None
        }
    };
    let mut reals = Vec::new();
    for (j, rr) in r.reals.iter().enumerate() {
        let re = rr.get_ref();
        let addr = src.parse(
            &format!("service[{i}].real[{j}].address"),
            &re.address,
            parse_addr,
        )?;
        let weight = re.weight.as_ref().map_or(1, |w| *w.get_ref());
        reals.push(RealSpec {
            addr,
            port: re.port.unwrap_or(*r.port.get_ref()),
            weight,
        });
    }
    let spec = ServiceSpec {
        key: ServiceKey {
            vip,
            port: *r.port.get_ref(),
            proto,
        },
        scheduler,
        persistence,
        reals,
        forward,
    };
    spec.validate()
        .map_err(|e| src.err(rs.span(), format!("service[{i}]: {e}")))?;
    let check = match &r.check {
        Some(c) => Some(build_check(i, c, src)?),
        None => None,
    };
    Ok(ServiceConfig { spec, check })
}

fn build_check(i: usize, rc: &Spanned<RawCheck>, src: &Src<'_>) -> Result<CheckSpec, ConfigError> {
    let c = rc.get_ref();
    let f = |name: &str| format!("service[{i}].check.{name}");
    let kind = src.parse(&f("type"), &c.kind, |s| match s {
        "tcp" => Ok(CheckKind::Tcp),
        "http" => Ok(CheckKind::Http {
            path: c.path.clone().unwrap_or_else(|| "/".into()),
            status: c.status.unwrap_or(200),
            body: c.body.clone(),
            host: c.host.clone(),
        }),
        _ => Err(format!("`{s}` is not one of \"tcp\", \"http\"")),
    })?;
    let mut spec = CheckSpec {
        kind,
        ..CheckSpec::default()
    };
    if matches!(spec.kind, CheckKind::Tcp)
        && (c.path.is_some() || c.status.is_some() || c.body.is_some())
    {
        return Err(src.err(
            rc.span(),
            format!("{}: path/status/body need type = \"http\"", f("type")),
        ));
    }
    let secs = |name: &str, v: &Option<Spanned<f64>>, d: std::time::Duration| match v {
        Some(v) if !(0.01..=3600.0).contains(v.get_ref()) => Err(src.err(
            v.span(),
            format!("{}: seconds between 0.01 and 3600", f(name)),
        )),
        Some(v) => Ok(std::time::Duration::from_secs_f64(*v.get_ref())),
        None => Ok(d),
    };
    spec.interval = secs("interval", &c.interval, spec.interval)?;
    spec.timeout = secs("timeout", &c.timeout, spec.timeout)?;
    for (name, v, out) in [
        ("rise", &c.rise, &mut spec.rise),
        ("fall", &c.fall, &mut spec.fall),
    ] {
        if let Some(v) = v {
            if *v.get_ref() == 0 || *v.get_ref() > 100 {
                return Err(src.err(v.span(), format!("{}: 1..=100", f(name))));
            }
            *out = *v.get_ref();
        }
    }
    spec.port = c.port;
    Ok(spec)
}

impl Config {
    /// The engine this config describes: rules, sets and virtual services.
    pub fn build_engine(&self) -> Result<crate::engine::Engine, String> {
        let engine = crate::engine::Engine::new(
            self.engine.clone(),
            self.ruleset.clone(),
            self.sets.clone(),
        );
        let lb = crate::lb::LbTable::build(&self.service_specs(), &engine.lb())
            .map_err(|e| e.to_string())?;
        engine.swap_lb(lb);
        Ok(engine)
    }

    /// The virtual service addresses (the gateway owns them).
    pub fn vips(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.services.iter().map(|s| s.spec.key.vip).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The health checks the services ask for.
    pub fn checks(&self) -> Vec<(ServiceKey, CheckSpec)> {
        self.services
            .iter()
            .filter_map(|s| s.check.clone().map(|c| (s.spec.key, c)))
            .collect()
    }

    /// The virtual services as specs for `LbTable::build`.
    pub fn service_specs(&self) -> Vec<ServiceSpec> {
        self.services.iter().map(|s| s.spec.clone()).collect()
    }

    /// What the data plane needs: backend, interfaces, backend settings
    /// and the addresses the gateway owns.
    pub fn dataplane(&self) -> crate::dataplane::config::DataplaneConfig {
        crate::dataplane::config::DataplaneConfig {
            backend: self.run.backend,
            interfaces: self.engine.interfaces.clone(),
            afxdp: self.run.afxdp.clone(),
            tun: self.run.tun.clone(),
            owned: crate::engine::local_ranges(&self.engine, &self.ruleset, &self.vips()),
        }
    }
}

/// Resolves an interface name field to its id.
type IfaceLookup<'a> = dyn Fn(&str, &Spanned<String>) -> Result<IfId, ConfigError> + 'a;

fn build_run(raw: &RawConfig, src: &Src<'_>) -> Result<RunConfig, ConfigError> {
    let mut run = RunConfig::default();
    if let Some(b) = &raw.gateway.backend {
        run.backend = src.parse("gateway.backend", b, |s| match s {
            "afxdp" => Ok(Backend::Afxdp),
            "tun" => Ok(Backend::Tun),
            _ => Err(format!("`{s}` is not one of \"afxdp\", \"tun\"")),
        })?;
    }
    if let Some(p) = &raw.gateway.control_socket {
        run.control_socket = PathBuf::from(p);
    }
    let a = &raw.afxdp;
    if let Some(m) = &a.mode {
        run.afxdp.mode = src.parse("afxdp.mode", m, |s| match s {
            "auto" => Ok(XdpMode::Auto),
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            _ => Err(format!(
                "`{s}` is not one of \"auto\", \"native\", \"generic\""
            )),
        })?;
    }
    run.afxdp.zero_copy = a.zero_copy.unwrap_or(false);
    if let Some(f) = &a.frames {
        let v = *f.get_ref();
        if !(256..=1 << 20).contains(&v) || !v.is_power_of_two() {
            return Err(src.err(
                f.span(),
                format!("afxdp.frames: a power of two from 256 to 1048576, not {v}"),
            ));
        }
        run.afxdp.frames = v;
    }
    if let Some(b) = &a.batch {
        let v = *b.get_ref();
        if !(1..=256).contains(&v) {
            return Err(src.err(b.span(), format!("afxdp.batch: 1 to 256, not {v}")));
        }
        run.afxdp.batch = v;
    }
    // Settings that are 0 when off, up to a maximum.
    let up_to = |key: &str, v: &Option<Spanned<u32>>, max: u32, dflt: u32| match v {
        Some(c) if *c.get_ref() > max => Err(src.err(
            c.span(),
            format!("afxdp.{key}: 0 (off) to {max}, not {}", c.get_ref()),
        )),
        Some(c) => Ok(*c.get_ref()),
        None => Ok(dflt),
    };
    run.afxdp.coalesce_us = up_to(
        "coalesce_us",
        &a.coalesce_us,
        COALESCE_US_MAX,
        run.afxdp.coalesce_us,
    )?;
    run.afxdp.rt_priority = up_to(
        "rt_priority",
        &a.rt_priority,
        RT_PRIORITY_MAX,
        run.afxdp.rt_priority,
    )?;
    run.afxdp.queues = a.queues.unwrap_or(0);
    run.afxdp.cpus = a.cpus.clone().unwrap_or_default();
    if let Some(p) = &raw.tun.prefix {
        let longest = raw
            .interfaces
            .iter()
            .map(|i| i.get_ref().name.get_ref().len())
            .max()
            .unwrap_or(0);
        if p.get_ref().len() + longest > 15 {
            return Err(src.err(
                p.span(),
                format!(
                    "tun.prefix: `{}` + the longest interface name is over 15 characters",
                    p.get_ref()
                ),
            ));
        }
        run.tun.prefix = p.get_ref().clone();
    }
    run.tun.table_base = raw.tun.table_base.unwrap_or(run.tun.table_base);
    if let Some(p) = &raw.snapshot.path {
        let path = PathBuf::from(p.get_ref());
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(src.err(
                p.span(),
                "snapshot.path: an absolute file path (its directory is created if missing)",
            ));
        }
        run.snapshot.path = Some(path);
    }
    if let Some(i) = &raw.snapshot.interval {
        if run.snapshot.path.is_none() {
            return Err(src.err(i.span(), "snapshot.interval: needs snapshot.path"));
        }
        run.snapshot.interval_secs = *i.get_ref();
    }
    if let Some(l) = &raw.metrics.listen {
        let a = l
            .get_ref()
            .trim()
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                src.err(
                    l.span(),
                    format!(
                        "metrics.listen: `{}` is not ADDRESS:PORT (e.g. \"127.0.0.1:9469\")",
                        l.get_ref()
                    ),
                )
            })?;
        if a.port() == 0 {
            return Err(src.err(
                l.span(),
                "metrics.listen: port 0 (Prometheus needs a fixed port)",
            ));
        }
        run.metrics.listen = Some(a);
    }
    if let Some(h) = &raw.ha {
        run.ha = Some(build_ha(h, &raw.timeouts, src)?);
    }
    run.logging = build_logging(&raw.logging, src)?;
    Ok(run)
}

/// `[logging]`, checked.
fn build_logging(
    r: &RawLogging,
    src: &Src<'_>,
) -> Result<crate::sessionlog::LoggingConfig, ConfigError> {
    use crate::sessionlog::{LoggingConfig, SyslogTarget};
    let mut l = LoggingConfig::default();
    let addr = |field: &str, v: &Spanned<String>| {
        let a = v
            .get_ref()
            .trim()
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                src.err(
                    v.span(),
                    format!(
                        "logging.{field}: `{}` is not ADDRESS:PORT (e.g. \"192.0.2.10:4739\")",
                        v.get_ref()
                    ),
                )
            })?;
        if a.port() == 0 || a.ip().is_unspecified() {
            return Err(src.err(
                v.span(),
                format!("logging.{field}: `{a}` needs an address and a port other than 0"),
            ));
        }
        Ok(a)
    };
    if let Some(v) = &r.ipfix {
        l.ipfix = Some(addr("ipfix", v)?);
    }
    if let Some(v) = &r.syslog {
        let t = v.get_ref().trim();
        let bad = || {
            src.err(
                v.span(),
                format!(
                    "logging.syslog: `{t}` is neither ADDRESS:PORT (UDP, e.g. \"127.0.0.1:514\"), tcp:ADDRESS:PORT (e.g. \"tcp:192.0.2.10:514\") nor an absolute path of a local socket (e.g. \"/dev/log\")"
                ),
            )
        };
        l.syslog = Some(if t.starts_with('/') {
            SyslogTarget::Unix(PathBuf::from(t))
        } else if let Some(a) = t.strip_prefix("tcp:") {
            let a = Spanned::new(v.span(), a.to_string());
            SyslogTarget::Tcp(addr("syslog", &a).map_err(|_| bad())?)
        } else {
            SyslogTarget::Udp(addr("syslog", v).map_err(|_| bad())?)
        });
    }
    if let Some(v) = &r.syslog_facility {
        l.syslog_facility = crate::sessionlog::syslog::facility(v.get_ref()).ok_or_else(|| {
            src.err(
                v.span(),
                format!(
                    "logging.syslog_facility: `{}` is not one of local0..local7, user, daemon, authpriv",
                    v.get_ref()
                ),
            )
        })?;
    }
    if let Some(d) = &r.ipfix_domain {
        l.ipfix_domain = *d.get_ref();
    }
    if let Some(v) = &r.template_refresh {
        if !(1..=3600).contains(v.get_ref()) {
            return Err(src.err(
                v.span(),
                format!(
                    "logging.template_refresh: {} s; between 1 and 3600",
                    v.get_ref()
                ),
            ));
        }
        l.template_refresh_secs = *v.get_ref();
    }
    if let Some(v) = &r.max_datagram {
        if !(576..=9000).contains(v.get_ref()) {
            return Err(src.err(
                v.span(),
                format!(
                    "logging.max_datagram: {} bytes; between 576 and 9000 (the path MTU to the collector minus 28)",
                    v.get_ref()
                ),
            ));
        }
        l.max_datagram = *v.get_ref() as u16;
    }
    let ipfix_only = [
        ("ipfix_domain", r.ipfix_domain.as_ref().map(|v| v.span())),
        (
            "template_refresh",
            r.template_refresh.as_ref().map(|v| v.span()),
        ),
        ("max_datagram", r.max_datagram.as_ref().map(|v| v.span())),
    ];
    if l.ipfix.is_none()
        && let Some((f, Some(span))) = ipfix_only.iter().find(|(_, s)| s.is_some())
    {
        return Err(src.err(
            span.clone(),
            format!("logging.{f}: needs logging.ipfix (the collector's address)"),
        ));
    }
    if l.syslog.is_none()
        && let Some(v) = &r.syslog_facility
    {
        return Err(src.err(
            v.span(),
            "logging.syslog_facility: needs logging.syslog (where the lines go)",
        ));
    }
    Ok(l)
}

/// `[ha]`, checked.
fn build_ha(
    h: &Spanned<RawHa>,
    t: &Timeouts,
    src: &Src<'_>,
) -> Result<crate::ha::HaConfig, ConfigError> {
    let addr = |field: &str, v: &Option<Spanned<String>>| {
        let Some(v) = v else {
            return Err(src.err(
                h.span(),
                format!("ha.{field}: missing (this node's / the peer's sync address, e.g. \"10.9.0.1:7450\")"),
            ));
        };
        let a = v
            .get_ref()
            .trim()
            .parse::<std::net::SocketAddrV4>()
            .map_err(|_| {
                src.err(
                    v.span(),
                    format!(
                        "ha.{field}: `{}` is not IPV4:PORT (e.g. \"10.9.0.1:7450\")",
                        v.get_ref()
                    ),
                )
            })?;
        if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
            return Err(src.err(
                v.span(),
                format!("ha.{field}: `{a}` needs a unicast address and a port other than 0"),
            ));
        }
        Ok(a)
    };
    let r = h.get_ref();
    let local = addr("local", &r.local)?;
    let peer = addr("peer", &r.peer)?;
    if local == peer {
        return Err(src.err(
            r.peer.as_ref().map_or(h.span(), |p| p.span()),
            "ha.peer: the same address as ha.local (the peer is the other node)",
        ));
    }
    let key = match &r.key {
        Some(k) if k.get_ref().len() < 16 => {
            return Err(src.err(
                k.span(),
                "ha.key: at least 16 characters (the same on both nodes)",
            ));
        }
        Some(k) => Some(k.get_ref().as_bytes().to_vec()),
        None => None,
    };
    // A flow a packet touches right after a refresh reaches the standby
    // one refresh later: its timer there must outlast that.
    let shortest = [t.udp, t.icmp, t.generic, t.tcp_established]
        .into_iter()
        .min()
        .unwrap_or(30);
    let refresh = match &r.refresh {
        Some(v) if *v.get_ref() == 0 || v.get_ref() * 2 > shortest => {
            return Err(src.err(
                v.span(),
                format!(
                    "ha.refresh: {} s; between 1 and half the shortest of the udp, icmp, generic and tcp_established timeouts ({shortest} s), or the standby's timers run out before a refresh",
                    v.get_ref()
                ),
            ));
        }
        Some(v) => *v.get_ref(),
        None => 5.min(shortest / 2).max(1),
    };
    let max_datagram = match &r.max_datagram {
        Some(v) if !(576..=9000).contains(v.get_ref()) => {
            return Err(src.err(
                v.span(),
                format!(
                    "ha.max_datagram: {} bytes; between 576 and 9000 (the sync link's MTU minus 28)",
                    v.get_ref()
                ),
            ));
        }
        Some(v) => *v.get_ref() as u16,
        None => 1472,
    };
    Ok(crate::ha::HaConfig {
        local,
        peer,
        key,
        refresh_secs: refresh,
        max_datagram,
    })
}

fn parse_addr(s: &str) -> Result<u32, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    match bytes {
        Some(b) if b.len() == 6 && parts.iter().all(|p| p.len() == 2) => {
            Ok([b[0], b[1], b[2], b[3], b[4], b[5]])
        }
        _ => Err(format!("`{s}` is not a MAC address like 02:00:00:00:00:01")),
    }
}

fn ports(src: &Src<'_>, field: &str, v: &Spanned<RawPorts>) -> Result<PortRange, ConfigError> {
    match v.get_ref() {
        RawPorts::One(p) => Ok(PortRange { lo: *p, hi: *p }),
        RawPorts::Range(s) => s
            .parse()
            .map_err(|e| src.err(v.span(), format!("{field}: {e}"))),
    }
}

fn build_rule(
    i: usize,
    rr: &Spanned<RawRule>,
    src: &Src<'_>,
    iface: &IfaceLookup<'_>,
    sets: &Sets,
) -> Result<Rule, ConfigError> {
    let r = rr.get_ref();
    let f = |name: &str| format!("rule[{i}].{name}");
    let prefix = |name: &str, v: &Option<Spanned<String>>| -> Result<Option<Prefix>, ConfigError> {
        v.as_ref()
            .map(|v| src.parse(&f(name), v, |s| s.parse()))
            .transpose()
    };
    let set =
        |name: &str, v: &Option<Spanned<String>>| -> Result<Option<Arc<AddrSet>>, ConfigError> {
            v.as_ref()
                .map(|v| {
                    sets.get(v.get_ref()).cloned().ok_or_else(|| {
                        src.err(
                            v.span(),
                            format!("{}: no [[set]] named `{}`", f(name), v.get_ref()),
                        )
                    })
                })
                .transpose()
        };
    let mut m = Match {
        iif: r.iif.as_ref().map(|v| iface(&f("iif"), v)).transpose()?,
        oif: r.oif.as_ref().map(|v| iface(&f("oif"), v)).transpose()?,
        src: prefix("src", &r.src)?,
        dst: prefix("dst", &r.dst)?,
        proto: None,
        sport: r
            .sport
            .as_ref()
            .map(|v| ports(src, &f("sport"), v))
            .transpose()?,
        dport: r
            .dport
            .as_ref()
            .map(|v| ports(src, &f("dport"), v))
            .transpose()?,
        src_set: set("src_set", &r.src_set)?,
        dst_set: set("dst_set", &r.dst_set)?,
        mark: None,
        set_mark: None,
    };
    for (name, v, slot) in [
        ("mark", &r.mark, &mut m.mark),
        ("set_mark", &r.set_mark, &mut m.set_mark),
    ] {
        if let Some(v) = v {
            if *v.get_ref() == 0 {
                return Err(src.err(v.span(), format!("{}: marks are 1-255", f(name))));
            }
            *slot = Some(*v.get_ref());
        }
    }
    if let Some(p) = &r.proto {
        m.proto = Some(src.parse(&f("proto"), p, |s| match s {
            "tcp" => Ok(proto::TCP),
            "udp" => Ok(proto::UDP),
            "icmp" => Ok(proto::ICMP),
            _ => Err(format!("`{s}` is not one of \"tcp\", \"udp\", \"icmp\"")),
        })?);
    }
    let l4 = matches!(m.proto, Some(proto::TCP | proto::UDP));
    for (name, v) in [("sport", &r.sport), ("dport", &r.dport)] {
        if let Some(v) = v
            && !l4
        {
            return Err(src.err(
                v.span(),
                format!("{}: port matches need proto = \"tcp\" or \"udp\"", f(name)),
            ));
        }
    }

    let action_name = r.action.get_ref().as_str();
    const ACTIONS: [&str; 6] = ["snat", "masquerade", "dnat", "netmap", "accept", "drop"];
    if !ACTIONS.contains(&action_name) {
        return Err(src.err(
            r.action.span(),
            format!(
                "{}: `{action_name}` is not one of {}",
                f("action"),
                ACTIONS.join(", ")
            ),
        ));
    }
    let is_snat = matches!(action_name, "snat" | "masquerade");
    // Options that only some actions take.
    let reject = |name: &str, span: Option<Range<usize>>| -> Result<(), ConfigError> {
        match span {
            Some(s) => Err(src.err(
                s,
                format!("{}: not allowed with action = \"{action_name}\"", f(name)),
            )),
            None => Ok(()),
        }
    };
    if !is_snat {
        reject("ports", r.ports.as_ref().map(|v| v.span()))?;
        reject("persistent", r.persistent.as_ref().map(|v| v.span()))?;
        reject("mapping", r.mapping.as_ref().map(|v| v.span()))?;
        reject("filtering", r.filtering.as_ref().map(|v| v.span()))?;
    }
    let to_strings = |need: bool| -> Result<Vec<(String, Range<usize>)>, ConfigError> {
        match &r.to {
            None if need => Err(src.err(
                r.action.span(),
                format!("{}: action = \"{action_name}\" needs `to`", f("to")),
            )),
            None => Ok(vec![]),
            Some(v) => {
                let list = match v.get_ref() {
                    RawTo::One(s) => vec![s.clone()],
                    RawTo::Many(l) => l.clone(),
                };
                if list.is_empty() {
                    return Err(src.err(v.span(), format!("{}: empty list", f("to"))));
                }
                Ok(list.into_iter().map(|s| (s, v.span())).collect())
            }
        }
    };
    let snat_spec = |pool: AddrPool| -> Result<SnatSpec, ConfigError> {
        let ports = r
            .ports
            .as_ref()
            .map(|v| ports(src, &f("ports"), v))
            .transpose()?;
        let eim = match &r.mapping {
            Some(v) => src.parse(&f("mapping"), v, |s| match s {
                "endpoint-independent" => Ok(true),
                "address-and-port-dependent" => Ok(false),
                _ => Err(format!(
                    "`{s}` is not one of \"endpoint-independent\", \"address-and-port-dependent\""
                )),
            })?,
            None => false,
        };
        let eif = match &r.filtering {
            Some(v) => {
                let open = src.parse(&f("filtering"), v, |s| match s {
                    "endpoint-independent" => Ok(true),
                    "address-and-port-dependent" => Ok(false),
                    _ => Err(format!("`{s}` is not one of \"endpoint-independent\", \"address-and-port-dependent\"")),
                })?;
                if open && !eim {
                    return Err(src.err(v.span(), format!("{}: endpoint-independent filtering needs mapping = \"endpoint-independent\"", f("filtering"))));
                }
                open
            }
            None => false,
        };
        Ok(SnatSpec {
            pool,
            ports,
            persistent: r.persistent.as_ref().is_some_and(|p| *p.get_ref()),
            eim,
            eif,
        })
    };
    let action = match action_name {
        "snat" => {
            let mut pool = AddrPool::default();
            for (s, span) in to_strings(true)? {
                pool.add_str(&s)
                    .map_err(|e| src.err(span, format!("{}: {e}", f("to"))))?;
            }
            if pool.len() > 1 << 24 {
                return Err(src.err(
                    r.action.span(),
                    format!("{}: pool larger than a /8", f("to")),
                ));
            }
            Action::Snat(snat_spec(pool)?)
        }
        "masquerade" => {
            if let Some(v) = &r.to {
                return Err(src.err(v.span(), format!("{}: masquerade takes the output interface's address; use action = \"snat\" to name one", f("to"))));
            }
            if let Some(v) = &r.persistent {
                return Err(src.err(
                    v.span(),
                    format!(
                        "{}: masquerade has one address; persistent is for snat pools",
                        f("persistent")
                    ),
                ));
            }
            Action::Masquerade(snat_spec(AddrPool::default())?)
        }
        "dnat" => {
            let to = to_strings(true)?;
            let (s, span) = &to[0];
            if to.len() > 1 {
                return Err(src.err(
                    span.clone(),
                    format!("{}: dnat takes one address[:port]", f("to")),
                ));
            }
            let (a, port) = match s.split_once(':') {
                Some((a, p)) => {
                    let p: u16 = p.parse().map_err(|_| {
                        src.err(span.clone(), format!("{}: `{p}` is not a port", f("to")))
                    })?;
                    if !l4 {
                        return Err(src.err(
                            span.clone(),
                            format!("{}: a port needs proto = \"tcp\" or \"udp\"", f("to")),
                        ));
                    }
                    (a, Some(p))
                }
                None => (s.as_str(), None),
            };
            let addr =
                parse_addr(a).map_err(|e| src.err(span.clone(), format!("{}: {e}", f("to"))))?;
            Action::Dnat { addr, port }
        }
        "netmap" => {
            let to = to_strings(true)?;
            let (s, span) = &to[0];
            let outside: Prefix = s
                .parse()
                .map_err(|e| src.err(span.clone(), format!("{}: {e}", f("to"))))?;
            let Some(inside) = m.src else {
                return Err(src.err(
                    r.action.span(),
                    format!("{}: netmap maps `src` 1:1 onto `to`; set src", f("src")),
                ));
            };
            if inside.len != outside.len {
                return Err(src.err(
                    span.clone(),
                    format!("{}: {outside} and src {inside} differ in size", f("to")),
                ));
            }
            Action::Netmap { inside, outside }
        }
        "accept" | "drop" => {
            if let Some(v) = &r.to {
                return Err(src.err(
                    v.span(),
                    format!("{}: not allowed with action = \"{action_name}\"", f("to")),
                ));
            }
            if action_name == "accept" {
                Action::Accept
            } else {
                Action::Drop
            }
        }
        _ => unreachable!("action names were checked against ACTIONS above"),
    };
    Ok(Rule {
        name: r.name.clone(),
        m,
        action,
        line: src.line_of(&rr.span()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
ipv6 = "drop"

[limits]
max_flows = 1000

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"

[[set]]
name = "vip"
elements = ["10.0.0.0/28"]

[[rule]]
iif = "wan0"
proto = "tcp"
dport = 8080
action = "dnat"
to = "10.0.0.5:80"

[[rule]]
oif = "wan0"
src_set = "vip"
action = "snat"
to = ["198.51.100.10-198.51.100.11"]
persistent = true

[[rule]]
oif = "wan0"
src = "10.0.0.0/24"
action = "masquerade"
mapping = "endpoint-independent"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("t.toml"))
    }

    #[test]
    fn good_config_builds() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.engine.interfaces.len(), 2);
        assert_eq!(c.engine.max_flows, 1000);
        assert_eq!(c.engine.ipv6, Ipv6Policy::Drop);
        assert_eq!(c.engine.routes[0].oif, 1);
        assert_eq!(c.ruleset.rules.len(), 3);
        assert!(matches!(
            c.ruleset.rules[0].action,
            Action::Dnat { port: Some(80), .. }
        ));
        assert_eq!(
            c.ruleset.rules[0].line, 26,
            "the line of the [[rule]] header"
        );
    }

    fn err_of(s: &str) -> String {
        match parse(s) {
            Ok(_) => panic!("config should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = GOOD.replace(
            "oif = \"wan0\"\nsrc = \"10.0.0.0/24\"",
            "oif = \"wan1\"\nsrc = \"10.0.0.0/24\"",
        );
        let e = err_of(&bad);
        assert!(
            e.starts_with("t.toml:41:7: rule[2].oif: no interface named `wan1`"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("to = \"10.0.0.5:80\"", "to = \"10.0.0.5:http\""));
        assert!(e.contains("rule[0].to: `http` is not a port"), "{e}");

        let e = err_of(&GOOD.replace("max_flows = 1000", "max_flows = 0"));
        assert!(e.starts_with("t.toml:6:13: limits.max_flows"), "{e}");

        let e = err_of(&GOOD.replace("action = \"masquerade\"", "action = \"masq\""));
        assert!(e.contains("`masq` is not one of snat, masquerade"), "{e}");

        let e = err_of(&GOOD.replace("[limits]", "[limits]\nmax_flow = 5"));
        assert!(
            e.starts_with("t.toml:6:1:") && e.contains("unknown field `max_flow`"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("10.0.0.0/28", "10.0.0.1/28"));
        assert!(
            e.contains("set[0].elements: `10.0.0.1/28` has host bits set"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("dport = 8080\n", "dport = 8080\nports = \"1-2\"\n"));
        assert!(
            e.contains("rule[0].ports: not allowed with action = \"dnat\""),
            "{e}"
        );

        let e = err_of("[gateway]\nipv6 = \"pass\"\n");
        assert!(e.contains("no [[interface]] sections"), "{e}");

        let e = err_of(&GOOD.replace("[[set]]", "[[set]\n"));
        assert!(e.starts_with("t.toml:22:"), "{e}");
    }

    #[test]
    fn afxdp_coalescing_is_checked() {
        let with = |body: &str| GOOD.replace("[limits]", &format!("[afxdp]\n{body}\n\n[limits]"));
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.run.afxdp.coalesce_us,
            crate::dataplane::config::COALESCE_US_DEFAULT
        );
        assert_eq!(
            parse(&with("coalesce_us = 0"))
                .unwrap()
                .run
                .afxdp
                .coalesce_us,
            0
        );
        assert_eq!(
            parse(&with("coalesce_us = 1000"))
                .unwrap()
                .run
                .afxdp
                .coalesce_us,
            1000
        );
        let e = err_of(&with("coalesce_us = 1001"));
        assert!(
            e.contains("afxdp.coalesce_us: 0 (off) to 1000, not 1001"),
            "{e}"
        );
        let e = err_of(&with("coalesce_us = -5"));
        assert!(e.contains("-5"), "{e}");
    }

    #[test]
    fn afxdp_rt_priority_is_off_by_default_and_checked() {
        let with = |body: &str| GOOD.replace("[limits]", &format!("[afxdp]\n{body}\n\n[limits]"));
        assert_eq!(parse(GOOD).unwrap().run.afxdp.rt_priority, 0);
        for v in [0, 1, 50, 99] {
            let c = parse(&with(&format!("rt_priority = {v}"))).unwrap();
            assert_eq!(c.run.afxdp.rt_priority, v);
        }
        let e = err_of(&with("rt_priority = 100"));
        assert!(
            e.contains("afxdp.rt_priority: 0 (off) to 99, not 100"),
            "{e}"
        );
        let e = err_of(&with("rt_priority = -1"));
        assert!(e.contains("`-1`, expected u32"), "{e}");
    }

    #[test]
    fn ha_is_off_by_default_and_every_field_is_checked() {
        assert!(parse(GOOD).unwrap().run.ha.is_none());
        let with = |body: &str| GOOD.replace("[limits]", &format!("[ha]\n{body}\n\n[limits]"));
        let c = parse(&with(
            "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.2:7450\"\nkey = \"0123456789abcdef\"",
        ))
        .unwrap();
        let h = c.run.ha.unwrap();
        assert_eq!(h.local, "10.9.0.1:7450".parse().unwrap());
        assert_eq!(h.peer, "10.9.0.2:7450".parse().unwrap());
        assert_eq!(h.key.as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!((h.refresh_secs, h.max_datagram), (5, 1472));
        for (body, want) in [
            ("peer = \"10.9.0.2:7450\"", "ha.local: missing"),
            (
                "local = \"10.9.0.1\"\npeer = \"10.9.0.2:7450\"",
                "ha.local: `10.9.0.1` is not IPV4:PORT",
            ),
            (
                "local = \"10.9.0.1:0\"\npeer = \"10.9.0.2:7450\"",
                "needs a unicast address and a port other than 0",
            ),
            (
                "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.1:7450\"",
                "ha.peer: the same address as ha.local",
            ),
            (
                "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.2:7450\"\nkey = \"short\"",
                "ha.key: at least 16 characters",
            ),
            (
                "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.2:7450\"\nrefresh = 20",
                "ha.refresh: 20 s; between 1 and half the shortest",
            ),
            (
                "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.2:7450\"\nmax_datagram = 100",
                "ha.max_datagram: 100 bytes",
            ),
            (
                "local = \"10.9.0.1:7450\"\npeer = \"10.9.0.2:7450\"\nrole = \"master\"",
                "unknown field `role`",
            ),
        ] {
            let e = err_of(&with(body));
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.starts_with("t.toml:"), "names the file: {e}");
        }
    }

    #[test]
    fn logging_is_off_by_default_and_every_field_is_checked() {
        use crate::sessionlog::SyslogTarget;
        let c = parse(GOOD).unwrap();
        assert!(!c.run.logging.enabled());
        let with = |body: &str| GOOD.replace("[limits]", &format!("[logging]\n{body}\n[limits]"));
        let c = parse(&with(
            "ipfix = \"192.0.2.10:4739\"\nipfix_domain = 7\ntemplate_refresh = 30\nmax_datagram = 1400\n\
             syslog = \"/dev/log\"\nsyslog_facility = \"local5\"\n",
        ))
        .unwrap();
        let l = &c.run.logging;
        assert_eq!(l.ipfix, Some("192.0.2.10:4739".parse().unwrap()));
        assert_eq!(
            (l.ipfix_domain, l.template_refresh_secs, l.max_datagram),
            (7, 30, 1400)
        );
        assert_eq!(l.syslog, Some(SyslogTarget::Unix("/dev/log".into())));
        assert_eq!(l.syslog_facility, 21);
        let c = parse(&with("syslog = \"127.0.0.1:514\"\n")).unwrap();
        assert_eq!(
            c.run.logging.syslog,
            Some(SyslogTarget::Udp("127.0.0.1:514".parse().unwrap()))
        );
        assert_eq!(c.run.logging.ipfix, None);
        let c = parse(&with("syslog = \"tcp:192.0.2.10:6514\"\n")).unwrap();
        assert_eq!(
            c.run.logging.syslog,
            Some(SyslogTarget::Tcp("192.0.2.10:6514".parse().unwrap()))
        );
        for (body, want) in [
            (
                "ipfix = \"collector\"",
                "t.toml:6:9: logging.ipfix: `collector` is not ADDRESS:PORT",
            ),
            (
                "ipfix = \"0.0.0.0:4739\"",
                "logging.ipfix: `0.0.0.0:4739` needs an address and a port other than 0",
            ),
            (
                "syslog = \"dev/log\"",
                "t.toml:6:10: logging.syslog: `dev/log` is neither ADDRESS:PORT",
            ),
            (
                "syslog = \"tcp:loghost\"",
                "t.toml:6:10: logging.syslog: `tcp:loghost` is neither ADDRESS:PORT",
            ),
            (
                "syslog = \"127.0.0.1:514\"\nsyslog_facility = \"local9\"",
                "t.toml:7:19: logging.syslog_facility: `local9` is not one of",
            ),
            (
                "syslog_facility = \"local1\"",
                "logging.syslog_facility: needs logging.syslog",
            ),
            (
                "syslog = \"/dev/log\"\nipfix_domain = 3",
                "t.toml:7:16: logging.ipfix_domain: needs logging.ipfix",
            ),
            (
                "ipfix = \"192.0.2.1:4739\"\ntemplate_refresh = 0",
                "logging.template_refresh: 0 s; between 1 and 3600",
            ),
            (
                "ipfix = \"192.0.2.1:4739\"\nmax_datagram = 100",
                "logging.max_datagram: 100 bytes; between 576 and 9000",
            ),
            ("ipfix_port = 4739", "unknown field `ipfix_port`"),
        ] {
            let e = err_of(&with(body));
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.run.metrics.listen, None);
        let on = GOOD.replace(
            "[limits]",
            "[metrics]\nlisten = \"127.0.0.1:9469\"\n\n[limits]",
        );
        let c = parse(&on).unwrap();
        assert_eq!(
            c.run.metrics.listen,
            Some("127.0.0.1:9469".parse().unwrap())
        );
        let on6 = GOOD.replace("[limits]", "[metrics]\nlisten = \"[::1]:9469\"\n\n[limits]");
        assert!(parse(&on6).unwrap().run.metrics.listen.is_some());

        let e = err_of(&GOOD.replace("[limits]", "[metrics]\nlisten = \"localhost\"\n\n[limits]"));
        assert!(
            e.starts_with("t.toml:6:10: metrics.listen: `localhost` is not ADDRESS:PORT"),
            "{e}"
        );
        let e = err_of(&GOOD.replace(
            "[limits]",
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[limits]",
        ));
        assert!(e.contains("metrics.listen: port 0"), "{e}");
        let e = err_of(&GOOD.replace("[limits]", "[metrics]\nport = 9469\n\n[limits]"));
        assert!(e.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = Config::load(Path::new("/nonexistent/natgw.toml"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("/nonexistent/natgw.toml: cannot read"), "{e}");
    }
}
