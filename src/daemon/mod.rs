//! `natgw run`: the daemon's life — start the backend's workers (from a
//! snapshot or a takeover), then be the control thread: serve the control
//! socket's requests, run expiry, rate sampling and set pruning in bounded
//! steps, write periodic snapshots, reload on SIGHUP, and stop cleanly on
//! SIGINT/SIGTERM (workers joined, XDP programs detached, TUN devices and
//! routes removed, socket file removed) or after handing over.
//!
//! # Parts
//!
//! - this file: process lifecycle, signals, the control loop, snapshots
//!   and the new side of a takeover;
//! - `control.rs`: the request dispatcher — one handler per
//!   [`Request`](crate::protocol::Request), and the old side of a
//!   handover;
//! - `rates.rs`: per-real-server rates for `natgw services --rate`.
//!
//! The daemon is the top of the library: it may import everything below
//! it (`control::{config, socket, format}`, `health`, `dataplane`,
//! `engine`, `snapshot`, `protocol`); nothing imports it but `main.rs`.

mod control;
mod rates;

use crate::control::config::{Backend, Config};
use crate::control::{metrics, socket};
use crate::dataplane::{self, sys};
use crate::engine::{CounterSnapshot, Engine};
use crate::health::{self, Checker};
use crate::protocol::{self, SnapshotReply};
use crate::snapshot::{self, RestoreOptions, Snapshot};
use control::Control;
use rates::LbControl;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Flow slots visited per expiry step (every [`TICK`]).
const EXPIRY_BUDGET: usize = 32_768;
/// Time between two steps of the control loop's periodic work (expiry,
/// rates, set pruning, snapshots); requests are served in between.
const TICK: Duration = Duration::from_millis(20);
/// Most requests served between two ticks.
const REQUESTS_PER_TICK: usize = 16;

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
    // A takeover refused this early has asked nothing of the running natgw.
    let carry_on = |e: String| {
        if opts.takeover {
            format!("takeover: {e}; the running natgw carries on")
        } else {
            e
        }
    };
    let mut cfg = Config::load(config).map_err(|e| carry_on(e.to_string()))?;
    crate::engine::set_tunnel_mtus(&mut cfg.engine, device_mtu);
    let engine = Arc::new(cfg.build_engine().map_err(carry_on)?);
    // The metrics port is bound before anything starts, so a port in use
    // stops natgw here. A takeover binds it after the cut instead: the
    // running natgw holds it until then.
    let mut metrics_listener = match cfg.run.metrics.listen {
        Some(a) if !opts.takeover => Some(metrics::bind(a)?),
        _ => None,
    };
    let t_start = Instant::now();
    let sock_path = cfg.run.control_socket.clone();
    let max_bytes = snapshot::max_bytes_for(cfg.engine.max_flows);
    let mut carried = CounterSnapshot::default();

    let stop = Arc::new(AtomicBool::new(false));
    // An HA node taking over keeps the running one's role (keepalived
    // tells only once).
    let ha_role = match (&cfg.run.ha, opts.takeover) {
        (Some(_), true) => match socket::call(&sock_path, protocol::Ha { role: None }) {
            Ok(s) if s.role == "master" => crate::ha::Role::Master,
            Ok(s) if s.role == "fault" => crate::ha::Role::Fault,
            Ok(_) => crate::ha::Role::Backup,
            Err(e) => {
                log::warn!(
                    "takeover: cannot read the running natgw's HA role ({e}); starting as backup"
                );
                crate::ha::Role::Backup
            }
        },
        _ => crate::ha::Role::Backup,
    };
    // The sync socket before anything else is asked of a running natgw
    // (an address this host lacks stops here).
    let ha_sock = match &cfg.run.ha {
        Some(h) => Some(crate::ha::bind(h.local).map_err(carry_on)?),
        None => None,
    };
    // So are the session log's outputs (a path that is no socket, ...).
    let log_sinks = match cfg.run.logging.enabled() {
        true => Some(crate::sessionlog::Sinks::open(&cfg.run.logging).map_err(carry_on)?),
        false => None,
    };
    // An HA node forwards nothing before its role says so: not even the
    // frames the XDP programs parked while no natgw ran (they are stale,
    // and the active node has those flows).
    engine.set_standby(cfg.run.ha.is_some() && ha_role != crate::ha::Role::Master);
    // State to start from: the running natgw's (takeover) or a file. A
    // takeover in steps also prepares the data plane before its cut.
    let mut prepared = None;
    let state = if opts.takeover
        && let Some(p) =
            takeover_in_steps(&cfg, &engine, &sock_path, max_bytes, &stop, &mut carried)?
    {
        prepared = Some(p);
        None
    } else if opts.takeover {
        let tmp = handover_path(&sock_path);
        let t0 = Instant::now();
        let r = socket::call(&sock_path, protocol::Handover { path: tmp.clone() })
            .map_err(|e| format!("takeover: {e}"))?;
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
            "restored {} flow(s) ({} expired, {} duplicate, {} over max_flows, {} bad skipped, {} timer(s) cut to the longest timeout), {} EIM mapping(s), {} set entr(ies), {} persistence entr(ies); timers moved on by {} ms",
            r.flows,
            r.flows_expired,
            r.flows_duplicate,
            r.flows_table_full,
            r.flows_bad,
            r.flows_clamped,
            r.eim,
            r.set_entries,
            r.persistence,
            r.elapsed_ms
        );
    }

    let checks = cfg.checks();
    health::validate(&engine.lb(), &checks).map_err(|e| e.to_string())?;
    let listener = socket::bind(&sock_path)?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("signal handler: {e}"))?;
    // Flows are logged from the first packet on: the thread that exports
    // the events starts later and finds them waiting.
    if log_sinks.is_some() {
        engine.sessions().enable();
    }
    let started = match prepared {
        Some(p) => p.start(),
        None => dataplane::start(&cfg.dataplane(), engine.clone(), stop.clone()),
    };
    let running = match started {
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
    let ha = match (cfg.run.ha.clone(), ha_sock) {
        (Some(h), Some(sock)) => {
            let (local, peer) = (h.local, h.peer);
            match crate::ha::Ha::start_on(sock, h, engine.clone(), ha_role) {
                Ok(ha) => {
                    log::info!("ha: sync {local} <-> {peer}, role {}", ha.role().name());
                    Some(ha)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&sock_path);
                    stop.store(true, Ordering::Relaxed);
                    let errors = running.shutdown();
                    return Err(format!(
                        "{e}{}",
                        errors.iter().map(|e| format!("; {e}")).collect::<String>()
                    ));
                }
            }
        }
        _ => None,
    };
    let checker = Checker::start(engine.clone(), checks);
    checker.set_neighbours(running.neigh.clone());
    if log_sinks.is_some() {
        log::info!(
            "session log: {}",
            control::describe_logging(&cfg.run.logging)
        );
    }
    let logging_cfg = cfg.run.logging.clone();
    let mut ctl = Control {
        cfg,
        checker: Some(checker),
        engine: engine.clone(),
        running: Some(running),
        backend,
        started: Instant::now(),
        lb: LbControl::default(),
        carried,
        handed_over: false,
        finish: None,
        stop: stop.clone(),
        metrics: None,
        submitter: None,
        ha,
        logging: logging_cfg,
        logger: None,
        log_counters: Default::default(),
        events: metrics::DaemonEvents {
            start_time: control::unix_now() - t_start.elapsed().as_secs_f64(),
            takeover: opts
                .takeover
                .then(|| (t_start.elapsed().as_secs_f64(), engine.table().len())),
            ..metrics::DaemonEvents::default()
        },
    };
    ctl.logger = log_sinks.map(|s| {
        crate::sessionlog::SessionLogger::start(s, engine.clone(), ctl.log_counters.clone())
    });
    // Clients are read and answered off this thread (see `socket::Server`);
    // their requests are served here, between ticks, one at a time.
    let server = socket::Server::start(listener)?;
    ctl.submitter = Some(server.submitter());
    if opts.takeover
        && let Some(a) = ctl.cfg.run.metrics.listen
    {
        // The old natgw frees the port at the cut and exits just after.
        metrics_listener = bind_retrying(a, Duration::from_secs(3))
            .map_err(|e| log::error!("{e}; natgw runs without its metrics endpoint"))
            .ok();
    }
    if let Some(l) = metrics_listener
        && let Some(sub) = &ctl.submitter
    {
        match metrics::Server::start(l, sub.clone()) {
            Ok(m) => ctl.metrics = Some(m),
            // After a takeover's cut the old natgw is gone: forward anyway.
            Err(e) if opts.takeover => {
                log::error!("{e}; natgw runs without its metrics endpoint")
            }
            Err(e) => {
                server.shutdown();
                let _ = std::fs::remove_file(&sock_path);
                stop.store(true, Ordering::Relaxed);
                let errors = ctl.running.take().map(|r| r.shutdown()).unwrap_or_default();
                return Err(format!(
                    "{e}{}",
                    errors.iter().map(|e| format!("; {e}")).collect::<String>()
                ));
            }
        }
    }
    let mut last_prune = Instant::now();
    let mut last_snapshot = Instant::now();
    type Written = (Result<SnapshotReply, String>, f64);
    let mut writer: Option<std::thread::JoinHandle<Written>> = None;
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Until the tick is due: serve what comes (bounded, so a stream
        // of requests cannot starve expiry).
        for _ in 0..REQUESTS_PER_TICK {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let Some(p) = server.next(wait) else { break };
            p.serve(|req| ctl.handle(req));
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        next_tick = Instant::now() + TICK;
        if hup.swap(false, Ordering::Relaxed) {
            match ctl.reload_from(config, false) {
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
        let snap = &ctl.cfg.run.snapshot;
        if let Some(path) = &snap.path
            && snap.interval_secs > 0
            && last_snapshot.elapsed() >= Duration::from_secs(snap.interval_secs as u64)
            && writer.as_ref().is_none_or(|w| w.is_finished())
        {
            last_snapshot = Instant::now();
            let (engine, path, counters) = (engine.clone(), path.clone(), ctl.counters());
            writer = Some(std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = write_snapshot(&engine, &path, counters);
                if let Err(e) = &r {
                    log::error!("periodic snapshot: {e}");
                }
                (r, t0.elapsed().as_secs_f64())
            }));
        }
        if let Some(w) = writer.take_if(|w| w.is_finished())
            && let Ok((r, secs)) = w.join()
        {
            ctl.count_snapshot(&r, secs);
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
    }
    // Stop taking requests; a handover's reply is written before this
    // returns.
    server.shutdown();
    ctl.stop_metrics();
    if let Some(w) = writer {
        let _ = w.join();
    }
    if let Some(c) = ctl.checker.take() {
        c.stop();
    }
    if ctl.handed_over {
        if let Some(f) = ctl.finish.take() {
            let t = Instant::now();
            let errors = f.complete();
            log::info!(
                "handover: workers joined, sockets closed in {} us{}",
                t.elapsed().as_micros(),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join("; "))
                }
            );
        }
        log::info!("natgw handed over; exiting");
        return Ok(());
    }
    log::info!("natgw stopping");
    stop.store(true, Ordering::Relaxed);
    let counters = ctl.counters();
    let errors = ctl.running.take().map(|r| r.shutdown()).unwrap_or_default();
    let _ = std::fs::remove_file(&sock_path);
    // With nothing to carry the flows on (no snapshot for the next start,
    // no HA peer), they end here: the session log says so.
    if ctl.logger.is_some() && ctl.cfg.run.snapshot.path.is_none() && ctl.cfg.run.ha.is_none() {
        let n = engine.log_ends_at_stop(sys::now());
        if n > 0 {
            log::info!("session log: {n} live flow(s) logged as ended at the stop");
        }
    }
    // A last snapshot once the workers stood still, for the next start.
    if let Some(path) = &ctl.cfg.run.snapshot.path {
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

/// The new side of a handover without loss (see
/// [`protocol::HandoverStep`]): copy the old process's state while it
/// forwards, then its changes until they are few, validate, prepare the
/// data plane (XDP program adopted, UMEMs allocated), and only then cut.
/// Returns the prepared data plane to start, or `None` when the old
/// process is an older natgw that only knows the one-shot handover. An
/// error before the cut leaves the old process forwarding as before.
fn takeover_in_steps(
    cfg: &Config,
    engine: &Arc<Engine>,
    sock: &Path,
    max_bytes: u64,
    stop: &Arc<AtomicBool>,
    carried: &mut CounterSnapshot,
) -> Result<Option<dataplane::Prepared>, String> {
    use protocol::{HandoverStep, StepKind};
    // The TUN backend hands over the old way (stop, write, start): its
    // devices, ip rules and policy tables have fixed names that the old
    // process removes when it exits, so they cannot be set up beside it.
    if cfg.run.backend == Backend::Tun {
        return Ok(None);
    }
    let tmp = handover_path(sock);
    let step = |step: StepKind, since_ns: u64| {
        let t = Instant::now();
        let r = socket::call_keep(
            sock,
            HandoverStep {
                step,
                path: tmp.clone(),
                since_ns,
            },
        );
        let snap = r.and_then(|(r, conn)| {
            let s = snapshot::read(&tmp, max_bytes).map_err(|e| e.to_string());
            let _ = std::fs::remove_file(&tmp);
            Ok((r, s?, conn))
        });
        (snap, t.elapsed().as_micros())
    };
    let t0 = Instant::now();
    let (copy, us) = step(StepKind::Copy, 0);
    let (r, snap, _) = match copy {
        Err(e) if e.contains("unknown variant") => {
            log::info!(
                "takeover: the running natgw is an older one (no handover in steps); it stops, then this one starts: frames that arrive in between are lost"
            );
            return Ok(None);
        }
        Err(e) => return Err(format!("takeover: {e}; the running natgw carries on")),
        Ok(x) => x,
    };
    let rep = snap
        .restore(engine, sys::now(), RestoreOptions::default())
        .map_err(|e| format!("takeover: {e}; the running natgw carries on"))?;
    log::info!(
        "takeover: copied {} flow(s) ({} bytes) in {us} us while the old natgw forwards; restored {}",
        r.flows,
        r.bytes,
        rep.flows
    );
    let replace = RestoreOptions {
        replace: true,
        ..RestoreOptions::default()
    };
    let mut since = r.at_ns;
    // Copy the changes until they are few, so the cut has little to do.
    for _ in 0..3 {
        let (ch, us) = step(StepKind::Changes, since);
        let (r, snap, _) =
            ch.map_err(|e| format!("takeover: {e}; the running natgw carries on"))?;
        snap.restore(engine, sys::now(), replace)
            .map_err(|e| format!("takeover: {e}; the running natgw carries on"))?;
        log::info!(
            "takeover: {} flow(s) changed meanwhile, copied in {us} us",
            r.flows
        );
        since = r.at_ns;
        if r.flows < 1000 {
            break;
        }
    }
    health::validate(&engine.lb(), &cfg.checks())
        .map_err(|e| format!("takeover: {e}; the running natgw carries on"))?;
    let tp = Instant::now();
    let mut prepared = dataplane::prepare(&cfg.dataplane(), engine.clone(), stop.clone())
        .map_err(|e| format!("takeover: {e}; the running natgw carries on"))?;
    log::info!(
        "takeover: data plane prepared in {} us; cutting over",
        tp.elapsed().as_micros()
    );
    let (cut, us) = step(StepKind::Cut, since);
    let (r, snap, conn) = match cut {
        Ok(x) => x,
        Err(e) => {
            prepared.abandon();
            return Err(format!("takeover: the cut failed: {e}"));
        }
    };
    let tr = Instant::now();
    match snap.restore(engine, sys::now(), replace) {
        Ok(rep) => log::info!(
            "takeover: cut in {us} us: {} flow(s) changed ({} restored in {} us); old natgw: {}",
            r.flows,
            rep.flows,
            tr.elapsed().as_micros(),
            r.timings_us
                .iter()
                .map(|(k, v)| format!("{k} {v} us"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => log::error!("takeover: the last changes could not be restored: {e}"),
    }
    if let Some(c) = &snap.counters {
        *carried = c.clone();
    }
    let mut learnt = 0;
    if let Some(n) = prepared.neighbours() {
        let ifs = cfg.dataplane().interfaces;
        let now = sys::now();
        for e in &r.neighbours {
            if let Some(k) = ifs.iter().position(|i| i.name == e.interface) {
                let age = crate::conntrack::Time(e.age_ms.saturating_mul(1_000_000));
                n.learn_aged(k as crate::nat::IfId, u32::from(e.addr), e.mac, age, now);
                learnt += 1;
            }
        }
    }
    // Forward the parked frames now; then let the old process close its
    // sockets (it waits for this connection to end), so that work does
    // not compete with ours for the CPU before we forward.
    prepared.bridge_go();
    drop(conn);
    log::info!("takeover: {learnt} neighbour(s) taken over");
    if !r.parking {
        log::warn!(
            "takeover: the old natgw could not leave its XDP programs parking frames; frames that arrived during the cut are lost"
        );
    }
    log::info!(
        "takeover: state in place {} ms after the start of the handover",
        t0.elapsed().as_millis()
    );
    Ok(Some(prepared))
}

/// Binds the metrics address, trying again for up to `within` while it is
/// in use (the natgw taken over from frees it as it exits).
fn bind_retrying(
    a: std::net::SocketAddr,
    within: Duration,
) -> Result<std::net::TcpListener, String> {
    let until = Instant::now() + within;
    loop {
        match metrics::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
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
) -> Result<SnapshotReply, String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut snap = Snapshot::capture(engine, sys::now());
    snap.counters = Some(counters);
    let bytes = snapshot::write_atomic(path, &snap).map_err(|e| e.to_string())?;
    Ok(SnapshotReply {
        path: path.display().to_string(),
        flows: snap.flows.len(),
        bytes,
        paused_ms: 0.0,
    })
}

/// A network device's MTU in this namespace (for tunnels whose MTU follows
/// their underlying interface), or None when it cannot be read.
pub(crate) fn device_mtu(ifname: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .map(|m| m.min(u32::from(u16::MAX)) as u16)
}
