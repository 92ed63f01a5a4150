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
    let engine = Arc::new(Engine::new(
        cfg.engine.clone(),
        cfg.ruleset.clone(),
        cfg.sets.clone(),
    ));
    let listener = socket::bind(&cfg.run.control_socket)?;
    let sock_path = cfg.run.control_socket.clone();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
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
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                socket::serve_one(stream, |req| {
                    handle(req, &engine, &running, backend, started, &cfg)
                });
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("control socket: {e}"),
        }
        let now = sys::now();
        engine.expire(now, EXPIRY_BUDGET);
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
) -> Result<serde_json::Value, String> {
    let now = sys::now();
    match req {
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
