//! `natgw run`: start the backend's workers, then be the control thread —
//! serve the control socket, run expiry in bounded steps, and stop cleanly
//! on SIGINT/SIGTERM (workers joined, XDP programs detached, TUN devices
//! and routes removed, socket file removed).

use super::config::{Backend, Config};
use super::format::{FlowView, flow_line};
use super::socket::{self, FlowsReport, Request, StatsReport};
use crate::dataplane::{self, Running, sys};
use crate::engine::{CounterSnapshot, Engine};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Flow slots visited per expiry step (every 100 ms).
const EXPIRY_BUDGET: usize = 32_768;

pub fn run(config: &Path) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let engine = Arc::new(cfg.build_engine()?);
    let listener = socket::bind(&cfg.run.control_socket)?;
    let sock_path = cfg.run.control_socket.clone();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("signal handler: {e}"))?;
    let running = match dataplane::start(&cfg, engine.clone(), stop.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&sock_path);
            return Err(e.to_string());
        }
    };
    let backend = match cfg.run.backend {
        Backend::Afxdp => "afxdp",
        Backend::Tun => "tun",
    };
    log::info!(
        "natgw running: backend {backend}, {} worker(s), {} interface(s), {} rule(s), control socket {}",
        running.workers.len(),
        cfg.engine.interfaces.len(),
        cfg.ruleset.len(),
        sock_path.display()
    );
    let started = Instant::now();
    let mut last_prune = Instant::now();
    let mut lbc = LbControl::default();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                socket::serve_one(stream, |req| {
                    handle(req, &engine, &running, backend, started, &cfg, &mut lbc)
                });
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("control socket: {e}"),
        }
        if hup.swap(false, Ordering::Relaxed) {
            match reload(&engine, &cfg, config, false) {
                Ok(r) => log::info!(
                    "SIGHUP: reloaded {}: {} rules, {} sets; {} live flows keep their translation, {} of them match no rule now",
                    r.config,
                    r.report.rules,
                    r.report.sets,
                    r.report.flows,
                    r.report.unmatched_flows
                ),
                Err(e) => log::error!("SIGHUP: reload refused, nothing changed: {e}"),
            }
        }
        let now = sys::now();
        engine.expire(now, EXPIRY_BUDGET);
        lbc.tick(&engine, now);
        if last_prune.elapsed() >= Duration::from_secs(10) {
            last_prune = Instant::now();
            engine.prune_sets(now);
            if let Some(n) = &running.neigh {
                n.prune(now);
            }
        }
        // The workers are stopping if one of them died: stop everything.
        if running.workers.iter().any(|w| w.is_finished()) {
            log::error!("a worker stopped unexpectedly; shutting down");
            stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!("natgw stopping");
    stop.store(true, Ordering::Relaxed);
    let errors = running.shutdown();
    let _ = std::fs::remove_file(&sock_path);
    if errors.is_empty() {
        log::info!("natgw stopped cleanly");
        Ok(())
    } else {
        Err(format!("worker errors: {}", errors.join("; ")))
    }
}

fn handle(
    req: Request,
    engine: &Engine,
    running: &Running,
    backend: &str,
    started: Instant,
    cfg: &Config,
    lbc: &mut LbControl,
) -> Result<serde_json::Value, String> {
    let now = sys::now();
    match req {
        Request::Services => {
            let r = socket::ServicesReport {
                services: engine.services(now),
                rates: lbc.rates.clone(),
                checks: Vec::new(),
            };
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
        Request::Lb {
            change,
            expire_flows,
        } => {
            let r = lb_change(engine, &change, expire_flows)?;
            log::info!("lb: {}", r.changed);
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
        Request::Reload {
            config: path,
            flush_unmatched,
        } => {
            let path = path.unwrap_or_else(|| cfg.path.clone());
            let r = reload(engine, cfg, &path, flush_unmatched)?;
            log::info!(
                "reloaded {}: {} rules, {} sets; {} live flows keep their translation, {} match no rule now, {} flushed",
                r.config,
                r.report.rules,
                r.report.sets,
                r.report.flows,
                r.report.unmatched_flows,
                r.flushed
            );
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
        Request::Set {
            op,
            name,
            prefix,
            timeout,
        } => {
            let r = set_op(engine, op, &name, prefix.as_deref(), timeout, now)?;
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
        Request::Flush { filter } => {
            let f = filter.compile()?;
            let n = engine.flush(|r| f.matches(r));
            log::info!("flushed {n} flow(s)");
            Ok(serde_json::json!({ "flushed": n }))
        }
        Request::Stats => {
            let workers: Vec<_> = running.stats.iter().map(|w| w.snapshot()).collect();
            let mut total = CounterSnapshot::default();
            for w in &workers {
                total.add(&w.counters);
            }
            let neighbours = running
                .neigh
                .as_ref()
                .map(|n| {
                    n.entries(now)
                        .into_iter()
                        .map(|(i, a, mac, age)| {
                            let m = mac
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<Vec<_>>()
                                .join(":");
                            (cfg.ifname(i), a.into(), m, age.0 / 1_000_000_000)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let r = StatsReport {
                backend: backend.into(),
                uptime_secs: started.elapsed().as_secs_f64(),
                flows: engine.table().len(),
                max_flows: engine.table().capacity(),
                workers,
                total,
                port_usage: engine.nat().port_usage(),
                neighbours,
            };
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
        Request::Flows { filter } => {
            let f = filter.compile()?;
            let mut flows: Vec<_> = engine
                .flows(now)
                .into_iter()
                .filter(|r| f.matches(r))
                .collect();
            flows.sort_by_key(|r| r.orig);
            let r = FlowsReport {
                total: engine.table().len(),
                lines: flows.iter().map(|r| flow_line(r, now)).collect(),
                flows: flows.iter().map(|r| FlowView::new(r, now)).collect(),
            };
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }
    }
}

/// Validates `path` completely, then applies it (see `Engine::reload`).
fn reload(
    engine: &Engine,
    cur: &Config,
    path: &Path,
    flush_unmatched: bool,
) -> Result<socket::ReloadReply, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    if new.run.backend != cur.run.backend || new.run.control_socket != cur.run.control_socket {
        return Err("the new config changes [gateway] backend or control_socket, which needs a restart; nothing was changed".into());
    }
    let now = sys::now();
    // Services: the new config is the truth (run-time changes made over
    // the socket are replaced); built aside so an error changes nothing.
    let lb = crate::lb::LbTable::build(&new.service_specs(), &engine.lb())
        .map_err(|e| format!("{}: {e}; nothing was changed", path.display()))?;
    let (report, unmatched) = engine.reload(&new.engine, new.ruleset, &new.sets, now)?;
    engine.swap_lb(lb);
    let flushed = if flush_unmatched {
        let gone: std::collections::HashSet<_> = unmatched.into_iter().map(|r| r.orig).collect();
        engine.flush(|r| gone.contains(&r.orig))
    } else {
        0
    };
    Ok(socket::ReloadReply {
        config: path.display().to_string(),
        report,
        flushed,
    })
}

fn set_op(
    engine: &Engine,
    op: socket::SetOp,
    name: &str,
    prefix: Option<&str>,
    timeout: Option<u32>,
    now: crate::conntrack::Time,
) -> Result<socket::SetReport, String> {
    use socket::SetOp;
    let sets = engine.sets();
    let set = sets.get(name).ok_or_else(|| {
        let mut names: Vec<&str> = sets.keys().map(String::as_str).collect();
        names.sort();
        format!(
            "no set named `{name}` (sets: {})",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )
    })?;
    let prefix = |need: bool| -> Result<Option<crate::nat::Prefix>, String> {
        match prefix {
            Some(p) => p.parse().map(Some).map_err(|e| format!("set {name}: {e}")),
            None if need => Err(format!("set {name}: an address or prefix is needed")),
            None => Ok(None),
        }
    };
    let changed = match op {
        SetOp::Add => {
            let p = prefix(true)?.ok_or("unreachable: prefix required")?;
            let existed = set.list(now).iter().any(|e| e.prefix == p.to_string());
            set.add(p, timeout, now);
            if existed {
                format!("refreshed {p}")
            } else {
                format!("added {p}")
            }
        }
        SetOp::Del => {
            let p = prefix(true)?.ok_or("unreachable: prefix required")?;
            if !set.del(p) {
                return Err(format!("set {name}: {p} is not a member"));
            }
            format!("deleted {p}")
        }
        SetOp::List => String::new(),
        SetOp::Flush => {
            let n = set.list(now).len();
            set.flush();
            format!("flushed {n}")
        }
    };
    Ok(socket::SetReport {
        name: name.to_string(),
        default_timeout: set.default_timeout(),
        entries: set
            .list(now)
            .into_iter()
            .map(|e| socket::SetEntryView {
                prefix: e.prefix,
                expires_in: e
                    .expires
                    .map(|t| t.saturating_sub(now).0.div_ceil(1_000_000_000)),
            })
            .collect(),
        changed,
    })
}

/// Applies one run-time change to the virtual services atomically: the new
/// table is built aside and swapped in; on error nothing changes.
fn lb_change(
    engine: &Engine,
    change: &crate::lb::Change,
    expire_flows: bool,
) -> Result<socket::LbReply, String> {
    use crate::lb::Change;
    let cur = engine.lb();
    let new = cur.apply(change).map_err(|e| e.to_string())?;
    engine.swap_lb(new);
    let sock = |a: u32, p: u16| std::net::SocketAddrV4::new(a.into(), p);
    let (changed, flushed) = match change {
        Change::AddService(s) => (
            format!("added service {} ({} real server(s))", s.key, s.reals.len()),
            0,
        ),
        Change::EditService { key, scheduler, .. } => (
            format!("edited service {key}: scheduler {}", scheduler.name()),
            0,
        ),
        Change::DelService { key } => (format!("deleted service {key}"), 0),
        Change::AddReal { service, real } => (
            format!(
                "service {service}: added real server {} weight {}",
                sock(real.addr, real.port),
                real.weight
            ),
            0,
        ),
        Change::EditReal { service, real } => (
            format!(
                "service {service}: real server {} weight {}{}",
                sock(real.addr, real.port),
                real.weight,
                if real.weight == 0 {
                    " (draining: no new connections)"
                } else {
                    ""
                }
            ),
            0,
        ),
        Change::DelReal {
            service,
            addr,
            port,
        } => {
            let n = if expire_flows {
                engine.flush(|r| {
                    r.has(crate::nat::nat_flags::LB)
                        && r.orig.dst == service.vip
                        && (service.port == 0 || r.orig.dport == service.port)
                        && r.orig.proto == service.proto
                        && r.reply.src == *addr
                        && (*port == 0 || r.reply.sport == *port)
                })
            } else {
                0
            };
            (
                format!(
                    "service {service}: deleted real server {}{}",
                    sock(*addr, *port),
                    if expire_flows {
                        format!(", {n} flow(s) removed")
                    } else {
                        ", its flows carry on".into()
                    }
                ),
                n,
            )
        }
    };
    Ok(socket::LbReply { changed, flushed })
}

/// Control-thread side of load balancing: rate sampling (and health
/// checks).
#[derive(Default)]
struct LbControl {
    last: Option<(
        Instant,
        std::collections::HashMap<(crate::lb::ServiceKey, u32, u16), [u64; 5]>,
    )>,
    rates: Vec<socket::RealRate>,
}

/// Seconds between two rate samples (`ipvsadm --rate` uses a 2 s estimator).
const RATE_WINDOW: Duration = Duration::from_secs(2);

impl LbControl {
    fn tick(&mut self, engine: &Engine, now: crate::conntrack::Time) {
        if matches!(&self.last, Some((t, _)) if t.elapsed() < RATE_WINDOW) {
            return;
        }
        if engine.lb().is_empty() {
            self.last = None;
            self.rates.clear();
            return;
        }
        let t = Instant::now();
        let mut cur = std::collections::HashMap::new();
        for s in engine.services(now) {
            for r in &s.reals {
                cur.insert(
                    (s.key, r.addr, r.port),
                    [
                        r.conns,
                        r.packets_in,
                        r.packets_out,
                        r.bytes_in,
                        r.bytes_out,
                    ],
                );
            }
        }
        if let Some((t0, prev)) = &self.last {
            let dt = t.duration_since(*t0).as_secs_f64().max(1e-3);
            self.rates = cur
                .iter()
                .map(|(&(service, addr, port), c)| {
                    let p = prev.get(&(service, addr, port)).copied().unwrap_or(*c);
                    let rate = |i: usize| c[i].saturating_sub(p[i]) as f64 / dt;
                    socket::RealRate {
                        service,
                        addr,
                        port,
                        cps: rate(0),
                        in_pps: rate(1),
                        out_pps: rate(2),
                        in_bps: rate(3),
                        out_bps: rate(4),
                    }
                })
                .collect();
        }
        self.last = Some((t, cur));
    }
}
