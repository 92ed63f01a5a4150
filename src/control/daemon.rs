//! `natgw run`: start the backend's workers, then be the control thread —
//! serve the control socket, run expiry in bounded steps, and stop cleanly
//! on SIGINT/SIGTERM (workers joined, XDP programs detached, TUN devices
//! and routes removed, socket file removed).

use super::config::{Backend, Config};
use super::format::{FlowView, flow_line};
use super::health::{self, Checker};
use super::socket::{self, FlowsReport, Request, StatsReport};
use crate::dataplane::{self, Running, sys};
use crate::engine::{CounterSnapshot, Engine};
use crate::snapshot::{self, RestoreOptions, Snapshot};
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Flow slots visited per expiry step (every 100 ms).
const EXPIRY_BUDGET: usize = 32_768;

/// How `natgw run` starts (see `natgw run --help`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Restore this snapshot before the workers start.
    pub snapshot: Option<PathBuf>,
    /// Take over from the natgw running on the config's control socket.
    pub takeover: bool,
    /// Start with no state when the snapshot is missing or unreadable
    /// (otherwise that is an error and nothing starts).
    pub allow_empty: bool,
}

pub fn run(config: &Path, opts: &RunOptions) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let engine = Arc::new(cfg.build_engine()?);
    let sock_path = cfg.run.control_socket.clone();
    let max_bytes = snapshot::max_bytes_for(cfg.engine.max_flows);
    let mut carried = CounterSnapshot::default();

    // State to start from: the running natgw's (takeover) or a file.
    let state = if opts.takeover {
        let tmp = handover_path(&sock_path);
        let t0 = Instant::now();
        let data = socket::call(&sock_path, &Request::Handover { path: tmp.clone() })
            .map_err(|e| format!("takeover: {e}"))?;
        let r: socket::SnapshotReply =
            serde_json::from_value(data).map_err(|e| format!("takeover: bad reply: {e}"))?;
        let snap = snapshot::read(&tmp, max_bytes).map_err(|e| format!("takeover: {e}"));
        let _ = std::fs::remove_file(&tmp);
        log::info!(
            "takeover: the old natgw stopped and handed over {} flow(s) ({} bytes) in {:.1} ms",
            r.flows,
            r.bytes,
            t0.elapsed().as_secs_f64() * 1e3
        );
        Some(snap?)
    } else if let Some(p) = &opts.snapshot {
        match snapshot::read(p, max_bytes) {
            Ok(s) => Some(s),
            Err(e) if opts.allow_empty => {
                log::warn!("{e}; starting with no state (--allow-empty)");
                None
            }
            Err(e) => {
                return Err(format!(
                    "{e}; nothing started (pass --allow-empty to start with no state)"
                ));
            }
        }
    } else {
        None
    };
    if let Some(snap) = &state {
        let r = snap
            .restore(&engine, sys::now(), RestoreOptions::default())
            .map_err(|e| e.to_string())?;
        if let Some(c) = &snap.counters {
            carried = c.clone();
        }
        log::info!(
            "restored {} flow(s) ({} expired, {} duplicate, {} over max_flows), {} EIM mapping(s), {} set entr(ies), {} persistence entr(ies); timers moved on by {} ms",
            r.flows,
            r.flows_expired,
            r.flows_duplicate,
            r.flows_table_full,
            r.eim,
            r.set_entries,
            r.persistence,
            r.elapsed_ms
        );
    }

    let checks = cfg.checks();
    health::validate(&engine.lb(), &checks).map_err(|e| e.to_string())?;
    let listener = socket::bind(&sock_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("signal handler: {e}"))?;
    let running = match dataplane::start(&cfg.dataplane(), engine.clone(), stop.clone()) {
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
        "natgw running: backend {backend}, {} worker(s), {} interface(s), {} rule(s), {} service(s), control socket {}",
        running.workers.len(),
        cfg.engine.interfaces.len(),
        cfg.ruleset.len(),
        engine.lb().len(),
        sock_path.display()
    );
    let checker = Checker::start(engine.clone(), checks);
    checker.set_neighbours(running.neigh.clone());
    let mut ctl = Control {
        checker: Some(checker),
        engine: engine.clone(),
        running: Some(running),
        backend,
        started: Instant::now(),
        lb: LbControl::default(),
        carried,
        handed_over: false,
        stop: stop.clone(),
    };
    let mut last_prune = Instant::now();
    let mut last_snapshot = Instant::now();
    let mut writer: Option<std::thread::JoinHandle<()>> = None;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                socket::serve_one(stream, |req| ctl.handle(req, &cfg));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("control socket: {e}"),
        }
        if hup.swap(false, Ordering::Relaxed) {
            match reload(&engine, &cfg, config, false, ctl.checker.as_ref()) {
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
        engine.lb().expire(now, EXPIRY_BUDGET);
        ctl.lb.tick(&engine, now);
        if last_prune.elapsed() >= Duration::from_secs(10) {
            last_prune = Instant::now();
            engine.prune_sets(now);
            if let Some(n) = ctl.running.as_ref().and_then(|r| r.neigh.as_ref()) {
                n.prune(now);
            }
        }
        // Periodic snapshot, written by a helper thread so the control
        // loop (expiry) keeps going; one at a time.
        let snap = &cfg.run.snapshot;
        if let Some(path) = &snap.path
            && snap.interval_secs > 0
            && last_snapshot.elapsed() >= Duration::from_secs(snap.interval_secs as u64)
            && writer.as_ref().is_none_or(|w| w.is_finished())
        {
            last_snapshot = Instant::now();
            let (engine, path, counters) = (engine.clone(), path.clone(), ctl.counters());
            writer = Some(std::thread::spawn(move || {
                if let Err(e) = write_snapshot(&engine, &path, counters) {
                    log::error!("periodic snapshot: {e}");
                }
            }));
        }
        // The workers are stopping if one of them died: stop everything.
        if ctl
            .running
            .as_ref()
            .is_some_and(|r| r.workers.iter().any(|w| w.is_finished()))
        {
            log::error!("a worker stopped unexpectedly; shutting down");
            stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    if let Some(c) = ctl.checker.take() {
        c.stop();
    }
    if ctl.handed_over {
        log::info!("natgw handed over; exiting");
        return Ok(());
    }
    log::info!("natgw stopping");
    stop.store(true, Ordering::Relaxed);
    let counters = ctl.counters();
    let errors = ctl.running.take().map(|r| r.shutdown()).unwrap_or_default();
    let _ = std::fs::remove_file(&sock_path);
    // A last snapshot once the workers stood still, for the next start.
    if let Some(path) = &cfg.run.snapshot.path {
        match write_snapshot(&engine, path, counters) {
            Ok(r) => log::info!("final snapshot: {} flow(s) to {}", r.flows, r.path),
            Err(e) => log::error!("final snapshot: {e}"),
        }
    }
    if errors.is_empty() {
        log::info!("natgw stopped cleanly");
        Ok(())
    } else {
        Err(format!("worker errors: {}", errors.join("; ")))
    }
}

/// Where a takeover asks the old process to write its state: beside the
/// control socket (same filesystem, root-only directory).
fn handover_path(sock: &Path) -> PathBuf {
    let dir = sock.parent().filter(|d| !d.as_os_str().is_empty());
    dir.unwrap_or(Path::new("."))
        .join(format!("natgw-handover-{}.snap", std::process::id()))
}

/// Captures the engine's state with `counters` and writes it atomically.
fn write_snapshot(
    engine: &Engine,
    path: &Path,
    counters: CounterSnapshot,
) -> Result<socket::SnapshotReply, String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut snap = Snapshot::capture(engine, sys::now());
    snap.counters = Some(counters);
    let bytes = snapshot::write_atomic(path, &snap).map_err(|e| e.to_string())?;
    Ok(socket::SnapshotReply {
        path: path.display().to_string(),
        flows: snap.flows.len(),
        bytes,
        paused_ms: 0.0,
    })
}

/// The control thread's view of the running gateway.
struct Control {
    engine: Arc<Engine>,
    /// `None` once handed over.
    running: Option<Running>,
    backend: &'static str,
    started: Instant,
    lb: LbControl,
    /// Counters carried over from the process natgw took over from.
    carried: CounterSnapshot,
    handed_over: bool,
    stop: Arc<AtomicBool>,
    /// Health checks of real servers; `None` once stopped.
    checker: Option<Checker>,
}

impl Control {
    /// Counters summed over the workers, plus those carried over.
    fn counters(&self) -> CounterSnapshot {
        let mut total = self.carried.clone();
        if let Some(r) = &self.running {
            for w in &r.stats {
                total.add(&w.snapshot().counters);
            }
        }
        total
    }

    fn handle(&mut self, req: Request, cfg: &Config) -> Result<serde_json::Value, String> {
        match req {
            Request::Handover { path } => {
                let r = self.handover(&path, cfg)?;
                serde_json::to_value(&r).map_err(|e| e.to_string())
            }
            Request::Snapshot { path } => {
                let path = path
                    .or_else(|| cfg.run.snapshot.path.clone())
                    .ok_or("no path given and no [snapshot] path in the config")?;
                let r = write_snapshot(&self.engine, &path, self.counters())?;
                log::info!(
                    "snapshot: {} flow(s), {} bytes to {}",
                    r.flows,
                    r.bytes,
                    r.path
                );
                serde_json::to_value(&r).map_err(|e| e.to_string())
            }
            Request::Services => {
                let now = sys::now();
                let r = socket::ServicesReport {
                    services: self.engine.services(now),
                    persistence: persistence_view(&self.engine, now),
                    rates: self.lb.rates.clone(),
                    checks: self
                        .checker
                        .as_ref()
                        .map(|c| c.status())
                        .unwrap_or_default(),
                };
                serde_json::to_value(&r).map_err(|e| e.to_string())
            }
            Request::Reload {
                config: path,
                flush_unmatched,
            } => {
                let path = path.unwrap_or_else(|| cfg.path.clone());
                let r = reload(
                    &self.engine,
                    cfg,
                    &path,
                    flush_unmatched,
                    self.checker.as_ref(),
                )?;
                log::info!(
                    "reloaded {}: {} rules, {} sets, {} services; {} live flows keep their translation, {} match no rule now, {} flushed",
                    r.config,
                    r.report.rules,
                    r.report.sets,
                    self.engine.lb().len(),
                    r.report.flows,
                    r.report.unmatched_flows,
                    r.flushed
                );
                serde_json::to_value(&r).map_err(|e| e.to_string())
            }
            Request::Lb {
                change,
                expire_flows,
            } => {
                let r = lb_change(&self.engine, &change, expire_flows)?;
                // A deleted service's check goes with it.
                if let (crate::lb::Change::DelService { key }, Some(c)) = (&change, &self.checker) {
                    let left: Vec<_> = c.checks().into_iter().filter(|(k, _)| k != key).collect();
                    if let Err(e) = c.update(left) {
                        log::warn!("health checks after deleting {key}: {e}");
                    }
                }
                log::info!("lb: {}", r.changed);
                serde_json::to_value(&r).map_err(|e| e.to_string())
            }
            req => {
                let Some(running) = &self.running else {
                    return Err("natgw is handing over".into());
                };
                handle(
                    req,
                    &self.engine,
                    running,
                    self.backend,
                    self.started,
                    cfg,
                    &self.carried,
                )
            }
        }
    }

    /// The old side of a takeover: stop the workers (the data path goes
    /// quiet: XDP programs detached, so the kernel's guard table drops
    /// what arrives), write the state, free the interfaces and the socket
    /// path, and tell the main loop to exit.
    fn handover(&mut self, path: &Path, cfg: &Config) -> Result<socket::SnapshotReply, String> {
        let Some(running) = self.running.take() else {
            return Err("already handed over".into());
        };
        log::info!("handover requested: stopping the workers");
        let t0 = Instant::now();
        if let Some(c) = self.checker.take() {
            c.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        let counters = {
            let mut total = self.carried.clone();
            for w in &running.stats {
                total.add(&w.snapshot().counters);
            }
            total
        };
        let errors = running.shutdown();
        if !errors.is_empty() {
            log::warn!("worker errors while handing over: {}", errors.join("; "));
        }
        let mut r = write_snapshot(&self.engine, path, counters)?;
        r.paused_ms = t0.elapsed().as_secs_f64() * 1e3;
        // Free the path before answering: the new process binds it next.
        let _ = std::fs::remove_file(&cfg.run.control_socket);
        self.handed_over = true;
        log::info!(
            "handed over {} flow(s) ({} bytes) in {:.1} ms",
            r.flows,
            r.bytes,
            r.paused_ms
        );
        Ok(r)
    }
}

fn handle(
    req: Request,
    engine: &Engine,
    running: &Running,
    backend: &str,
    started: Instant,
    cfg: &Config,
    carried: &CounterSnapshot,
) -> Result<serde_json::Value, String> {
    let now = sys::now();
    match req {
        Request::Handover { .. }
        | Request::Snapshot { .. }
        | Request::Services
        | Request::Lb { .. }
        | Request::Reload { .. } => Err("handled by the control loop".into()),
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
            let mut total = carried.clone();
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
    checker: Option<&Checker>,
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
    let checks = new.checks();
    health::validate(&lb, &checks)
        .map_err(|e| format!("{}: {e}; nothing was changed", path.display()))?;
    let (report, unmatched) = engine.reload(&new.engine, new.ruleset, &new.sets, now)?;
    engine.swap_lb(lb);
    if let Some(c) = checker
        && let Err(e) = c.update(checks)
    {
        log::warn!("health checks after reload: {e}");
    }
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

fn persistence_view(engine: &Engine, now: crate::conntrack::Time) -> Vec<socket::PersistView> {
    engine
        .lb()
        .entries(now)
        .into_iter()
        .map(|e| socket::PersistView {
            service: e.service,
            client: std::net::Ipv4Addr::from(e.client).to_string(),
            netmask: e.netmask,
            real: std::net::SocketAddrV4::new(e.real.into(), e.port).to_string(),
            expires_in: e.expires.saturating_sub(now).0.div_ceil(1_000_000_000),
        })
        .collect()
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
    last: Option<(Instant, RealTotals)>,
    rates: Vec<socket::RealRate>,
}

/// Connections, packets in/out, bytes in/out per (service, real server).
type RealTotals = std::collections::HashMap<(crate::lb::ServiceKey, u32, u16), [u64; 5]>;

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
