//! The control thread's request handling: [`Control::handle`] is the one
//! dispatcher, an exhaustive match over [`Request`] with one method per
//! request returning that request's reply type. Everything a handler
//! needs is in [`Control`] (no loose arguments). Handlers run one at a
//! time on the control thread.

use super::rates::LbControl;
use super::write_snapshot;
use crate::conntrack::Time;
use crate::control::config::Config;
use crate::control::format::flow_line;
use crate::control::metrics::{self, DaemonEvents, MetricsInput};
use crate::control::socket::Submitter;
use crate::dataplane::neigh::Neighbours;
use crate::dataplane::{Running, sys};
use crate::engine::{CounterSnapshot, Engine};
use crate::health::{self, Checker};
use crate::protocol::NeighbourEntry;
use crate::protocol::{
    self, Encoded, FlowView, FlowsReport, FlushReply, LbReply, MetricsReply, ReloadReply, Request,
    ServicesReport, SetOp, SetReport, SnapshotReply, StatsReport, StepKind, StepReply, answer,
};
use crate::sessionlog::{LogCounters, LoggingConfig, SessionLogger, Sinks};
use crate::snapshot::{self, Snapshot};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The control thread's view of the running gateway: everything a request
/// handler needs.
pub(super) struct Control {
    /// The config natgw started with (a reload changes the engine, not
    /// this: `natgw reload` without a file re-reads `cfg.path`).
    pub(super) cfg: Config,
    pub(super) engine: Arc<Engine>,
    /// `None` once handed over.
    pub(super) running: Option<Running>,
    pub(super) backend: &'static str,
    pub(super) started: Instant,
    pub(super) lb: LbControl,
    /// Counters carried over from the process natgw took over from.
    pub(super) carried: CounterSnapshot,
    pub(super) handed_over: bool,
    /// After a handover's cut: the old workers to join and programs to
    /// release once the answer is out.
    pub(super) finish: Option<crate::dataplane::Finish>,
    pub(super) stop: Arc<AtomicBool>,
    /// Health checks of real servers; `None` once stopped.
    pub(super) checker: Option<Checker>,
    /// The `[metrics]` endpoint, when on (a reload may move it).
    pub(super) metrics: Option<metrics::Server>,
    /// How the metrics endpoint reaches this loop.
    pub(super) submitter: Option<Submitter>,
    /// Reloads, snapshots, takeover: what `GET /metrics` reports of them.
    pub(super) events: DaemonEvents,
    /// The HA sync thread (`[ha]`), `None` for a single node.
    pub(super) ha: Option<crate::ha::Ha>,
    /// The session log's settings in force (a reload may change them).
    pub(super) logging: LoggingConfig,
    /// The session logger thread, when `[logging]` has an output.
    pub(super) logger: Option<SessionLogger>,
    /// What the session logger did (kept across reloads).
    pub(super) log_counters: Arc<LogCounters>,
}

impl Control {
    /// Counters summed over the workers, plus those carried over.
    pub(super) fn counters(&self) -> CounterSnapshot {
        let mut total = self.carried.clone();
        if let Some(r) = &self.running {
            for w in &r.stats {
                total.add(&w.snapshot().counters);
            }
        }
        total
    }

    /// The one dispatcher: every request is answered here, each by the
    /// method named after it, which returns that request's reply type
    /// (`protocol::answer` checks it). Requests are served one at a time
    /// on the control thread, so changes to the engine never interleave.
    pub(super) fn handle(&mut self, req: Request) -> Encoded {
        match req {
            Request::Stats(q) => answer(q, |q| self.stats(q)),
            Request::Flows(q) => answer(q, |q| self.flows(q)),
            Request::Reload(q) => answer(q, |q| self.reload(q)),
            Request::Set(q) => answer(q, |q| self.set(q)),
            Request::Flush(q) => answer(q, |q| self.flush(q)),
            Request::Handover(q) => answer(q, |q| self.handover(q)),
            Request::HandoverStep(q) => answer(q, |q| self.handover_step(q)),
            Request::Snapshot(q) => answer(q, |q| self.snapshot(q)),
            Request::Services(q) => answer(q, |q| self.services(q)),
            Request::Lb(q) => answer(q, |q| self.lb(q)),
            Request::Metrics(q) => answer(q, |q| self.metrics(q)),
            Request::Ha(q) => answer(q, |q| self.ha(q)),
        }
    }

    /// `natgw ha role|status|check`.
    fn ha(&mut self, q: protocol::Ha) -> Result<crate::ha::HaStatus, String> {
        let ha = self
            .ha
            .as_ref()
            .ok_or("this natgw runs no HA pair (its config has no [ha] section)")?;
        if let Some(r) = q.role {
            ha.set_role(r);
        }
        Ok(ha.status())
    }

    /// The exposition for `GET /metrics`: the same data as `natgw stats`
    /// and `natgw services` (neither walks the flow table) plus the
    /// daemon's events.
    fn metrics(&self, q: protocol::Metrics) -> Result<MetricsReply, String> {
        let stats = self.stats(protocol::Stats {})?;
        let services = self.services(protocol::Services {})?;
        let mut events = self.events.clone();
        events.carried = self.carried.clone();
        let ha = self.ha.as_ref().map(|h| h.status());
        let input = MetricsInput {
            stats: &stats,
            services: &services,
            events: &events,
            version: env!("CARGO_PKG_VERSION"),
            ha: ha.as_ref(),
        };
        Ok(metrics::render(&input, q.openmetrics))
    }

    /// Counts a snapshot written (or not) for the metrics.
    pub(super) fn count_snapshot(&mut self, r: &Result<SnapshotReply, String>, secs: f64) {
        match r {
            Ok(r) => {
                self.events.snapshots_ok += 1;
                self.events.last_snapshot = Some((unix_now(), secs, r.bytes));
            }
            Err(_) => self.events.snapshots_failed += 1,
        }
    }

    /// A reload (request or SIGHUP) of `path`: the config is validated and
    /// applied by [`reload`], and a changed `[metrics] listen` is bound
    /// before anything is applied (an address it cannot listen on changes
    /// nothing); counted for the metrics.
    pub(super) fn reload_from(
        &mut self,
        path: &Path,
        flush_unmatched: bool,
    ) -> Result<ReloadReply, String> {
        let t0 = Instant::now();
        let r = self.reload_inner(path, flush_unmatched);
        match &r {
            Ok(_) => {
                self.events.reloads_ok += 1;
                self.events.last_reload_success = Some((unix_now(), t0.elapsed().as_secs_f64()));
            }
            Err(_) => self.events.reloads_failed += 1,
        }
        r
    }

    fn reload_inner(&mut self, path: &Path, flush_unmatched: bool) -> Result<ReloadReply, String> {
        let mut new = Config::load(path).map_err(|e| format!("{e}; nothing was changed"))?;
        crate::engine::set_tunnel_mtus(&mut new.engine, super::device_mtu);
        let want = new.run.metrics.listen;
        let have = self.metrics.as_ref().map(|m| m.addr());
        // A new endpoint is bound first: if it cannot be, nothing changes.
        let listener = match want {
            Some(a) if Some(a) != have => Some(
                metrics::bind(a)
                    .map_err(|e| format!("{}: {e}; nothing was changed", path.display()))?,
            ),
            _ => None,
        };
        // So are the session log's new outputs.
        let want_log = new.run.logging.clone();
        let sinks = match want_log != self.logging && want_log.enabled() {
            true => Some(
                Sinks::open(&want_log)
                    .map_err(|e| format!("{}: {e}; nothing was changed", path.display()))?,
            ),
            false => None,
        };
        let r = reload(
            &self.engine,
            &self.cfg,
            path,
            flush_unmatched,
            self.checker.as_ref(),
        )?;
        if want_log != self.logging {
            if !want_log.enabled() {
                self.engine.sessions().disable();
            }
            // The old thread exports what the rings hold before it ends;
            // events meanwhile wait in the rings for the new one.
            if let Some(l) = self.logger.take() {
                l.stop();
            }
            if let Some(s) = sinks {
                self.logger = Some(SessionLogger::start(
                    s,
                    self.engine.clone(),
                    self.log_counters.clone(),
                ));
            }
            log::info!("session log: {}", describe_logging(&want_log));
            self.logging = want_log;
        }
        if want != have {
            if let Some(m) = self.metrics.take() {
                m.stop();
                log::info!(
                    "metrics: no longer serving on {}",
                    have.map_or(String::new(), |a| a.to_string())
                );
            }
            if let (Some(l), Some(sub)) = (listener, &self.submitter) {
                match metrics::Server::start(l, sub.clone()) {
                    Ok(m) => self.metrics = Some(m),
                    Err(e) => log::error!("metrics: {e}"),
                }
            }
        }
        Ok(r)
    }

    /// The workers, unless they were handed over.
    fn running(&self) -> Result<&Running, String> {
        self.running
            .as_ref()
            .ok_or_else(|| "natgw is handing over".to_string())
    }

    fn stats(&self, _: protocol::Stats) -> Result<StatsReport, String> {
        let running = self.running()?;
        let now = sys::now();
        let workers: Vec<_> = running.stats.iter().map(|w| w.snapshot()).collect();
        let mut total = self.carried.clone();
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
                        (self.cfg.ifname(i), a.into(), m, age.0 / 1_000_000_000)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let engine = &self.engine;
        Ok(StatsReport {
            backend: self.backend.into(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            flows: engine.table().len(),
            max_flows: engine.table().capacity(),
            workers,
            total,
            port_usage: engine.nat().port_usage(),
            neighbours,
            xdp: running.xdp_counters(),
            tunnels: engine.tunnel_stats(),
            session_log: self
                .logging
                .enabled()
                .then(|| self.log_counters.snapshot(engine, &self.logging)),
            source_limit: protocol::SourceLimitReport::of(engine.table().sources()),
        })
    }

    fn flows(&self, q: protocol::Flows) -> Result<FlowsReport, String> {
        self.running()?;
        let now = sys::now();
        let f = q.filter.compile()?;
        if q.count_only {
            let mut n = 0;
            self.engine.table().for_each(|_, r| {
                if r.expires > now && f.matches(&r) {
                    n += 1;
                }
            });
            return Ok(FlowsReport {
                total: self.engine.table().len(),
                matched: Some(n),
                flows: Vec::new(),
                lines: Vec::new(),
            });
        }
        let mut flows: Vec<_> = self
            .engine
            .flows(now)
            .into_iter()
            .filter(|r| f.matches(r))
            .collect();
        flows.sort_by_key(|r| r.orig);
        Ok(FlowsReport {
            total: self.engine.table().len(),
            matched: Some(flows.len()),
            lines: flows
                .iter()
                .map(|r| match self.engine.flow_tunnel(r) {
                    Some(t) => format!("{} tunnel={t}", flow_line(r, now)),
                    None => flow_line(r, now),
                })
                .collect(),
            flows: flows
                .iter()
                .map(|r| FlowView {
                    tunnel: self.engine.flow_tunnel(r).map(String::from),
                    ..FlowView::new(r, now)
                })
                .collect(),
        })
    }

    fn set(&self, q: protocol::Set) -> Result<SetReport, String> {
        self.running()?;
        set_op(
            &self.engine,
            q.op,
            &q.name,
            q.prefix.as_deref(),
            q.timeout,
            sys::now(),
        )
    }

    fn flush(&self, q: protocol::Flush) -> Result<FlushReply, String> {
        self.running()?;
        let f = q.filter.compile()?;
        let n = self.engine.flush(|r| f.matches(r));
        log::info!("flushed {n} flow(s)");
        Ok(FlushReply { flushed: n })
    }

    fn snapshot(&mut self, q: protocol::Snapshot) -> Result<SnapshotReply, String> {
        let path = q
            .path
            .or_else(|| self.cfg.run.snapshot.path.clone())
            .ok_or("no path given and no [snapshot] path in the config")?;
        let t0 = Instant::now();
        let r = write_snapshot(&self.engine, &path, self.counters());
        self.count_snapshot(&r, t0.elapsed().as_secs_f64());
        let r = r?;
        log::info!(
            "snapshot: {} flow(s), {} bytes to {}",
            r.flows,
            r.bytes,
            r.path
        );
        Ok(r)
    }

    fn services(&self, _: protocol::Services) -> Result<ServicesReport, String> {
        // Servers' counters are kept as flows come and go: no walk here.
        let now = sys::now();
        Ok(ServicesReport {
            services: self.engine.services(now),
            persistence: persistence_view(&self.engine, now),
            rates: self.lb.rates.clone(),
            checks: self
                .checker
                .as_ref()
                .map(|c| c.status())
                .unwrap_or_default(),
        })
    }

    fn reload(&mut self, q: protocol::Reload) -> Result<ReloadReply, String> {
        let path = q.config.unwrap_or_else(|| self.cfg.path.clone());
        let r = self.reload_from(&path, q.flush_unmatched)?;
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
        Ok(r)
    }

    fn lb(&self, q: protocol::Lb) -> Result<LbReply, String> {
        let r = lb_change(&self.engine, &q.change, q.expire_flows)?;
        // A deleted service's check goes with it.
        if let (crate::lb::Change::DelService { key }, Some(c)) = (&q.change, &self.checker) {
            let left: Vec<_> = c.checks().into_iter().filter(|(k, _)| k != key).collect();
            if let Err(e) = c.update(left) {
                log::warn!("health checks after deleting {key}: {e}");
            }
        }
        log::info!("lb: {}", r.changed);
        Ok(r)
    }

    /// The old side of a takeover: stop the workers (the data path goes
    /// quiet: XDP programs detached, so the kernel's guard table drops
    /// what arrives), write the state, free the interfaces and the socket
    /// path, and tell the main loop to exit.
    fn handover(&mut self, q: protocol::Handover) -> Result<SnapshotReply, String> {
        let path = &q.path;
        let Some(running) = self.running.take() else {
            return Err("already handed over".into());
        };
        log::info!("handover requested: stopping the workers");
        let t0 = Instant::now();
        self.stop_metrics();
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
        let _ = std::fs::remove_file(&self.cfg.run.control_socket);
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

impl Control {
    /// The old side of a handover without loss, one step at a time (see
    /// [`protocol::HandoverStep`]).
    fn handover_step(&mut self, q: protocol::HandoverStep) -> Result<StepReply, String> {
        let since = Time(q.since_ns);
        let t0 = Instant::now();
        if q.step != StepKind::Cut {
            self.running()?;
            let at = sys::now();
            let snap = match q.step {
                StepKind::Copy => Snapshot::capture(&self.engine, at),
                _ => Snapshot::capture_touched(&self.engine, at, since),
            };
            let bytes = snapshot::write_transient(&q.path, &snap).map_err(|e| e.to_string())?;
            let took = t0.elapsed().as_micros() as u64;
            log::info!(
                "handover {:?}: {} flow(s), {bytes} bytes in {took} us",
                q.step,
                snap.flows.len()
            );
            let neigh = self.running.as_ref().and_then(|r| r.neigh.clone());
            return Ok(StepReply {
                path: q.path.display().to_string(),
                flows: snap.flows.len(),
                bytes,
                at_ns: at.0,
                parking: false,
                timings_us: vec![("capture+write".into(), took)],
                neighbours: self.neighbour_entries(neigh.as_deref()),
            });
        }
        let Some(running) = self.running.take() else {
            return Err("already handed over".into());
        };
        log::info!("handover cut: taking the sockets out of the XDP programs");
        self.stop_metrics();
        if let Some(c) = self.checker.take() {
            c.stop();
        }
        let t_checker = t0.elapsed().as_micros() as u64;
        let stats = running.stats.clone();
        let neigh = running.neigh.clone();
        let (h, finish) = running.hand_over(&self.stop);
        self.finish = Some(finish);
        if !h.errors.is_empty() {
            log::warn!("while handing over: {}", h.errors.join("; "));
        }
        let mut counters = self.carried.clone();
        for w in &stats {
            counters.add(&w.snapshot().counters);
        }
        let t1 = Instant::now();
        let at = sys::now();
        let mut snap = Snapshot::capture_touched(&self.engine, at, since);
        snap.counters = Some(counters);
        let capture_us = t1.elapsed().as_micros() as u64;
        let t2 = Instant::now();
        let written = snapshot::write_transient(&q.path, &snap).map_err(|e| e.to_string());
        let write_us = t2.elapsed().as_micros() as u64;
        // Free the path before answering: the new process binds it next.
        let _ = std::fs::remove_file(&self.cfg.run.control_socket);
        self.handed_over = true;
        self.stop.store(true, Ordering::Relaxed);
        let bytes = written?;
        let timings_us = vec![
            ("health checks stopped".to_string(), t_checker),
            ("sockets out of the XDP maps".to_string(), h.unregister_us),
            ("workers drained".to_string(), h.drain_us),
            ("changes captured".to_string(), capture_us),
            ("changes written".to_string(), write_us),
        ];
        log::info!(
            "handover cut: {} flow(s) changed since the copy, {bytes} bytes; {}; frames meanwhile {}",
            snap.flows.len(),
            timings_us
                .iter()
                .map(|(k, v)| format!("{k} {v} us"))
                .collect::<Vec<_>>()
                .join(", "),
            if h.parking {
                "park in the XDP programs"
            } else {
                "are lost (no pinned XDP program)"
            }
        );
        Ok(StepReply {
            path: q.path.display().to_string(),
            flows: snap.flows.len(),
            bytes,
            at_ns: at.0,
            parking: h.parking,
            timings_us,
            neighbours: self.neighbour_entries(neigh.as_deref()),
        })
    }

    /// The neighbour cache as the next process reads it (interfaces by
    /// name: its interface numbers may differ).
    fn neighbour_entries(&self, neigh: Option<&Neighbours>) -> Vec<NeighbourEntry> {
        let Some(n) = neigh else {
            return Vec::new();
        };
        let ifs = self.cfg.dataplane().interfaces;
        n.entries(sys::now())
            .into_iter()
            .filter_map(|(ifid, ip, mac, age)| {
                Some(NeighbourEntry {
                    interface: ifs.get(ifid as usize)?.name.clone(),
                    addr: std::net::Ipv4Addr::from(ip),
                    mac,
                    age_ms: age.0 / 1_000_000,
                })
            })
            .collect()
    }
}

impl Control {
    /// Frees the metrics port (the process taking over binds it next).
    pub(super) fn stop_metrics(&mut self) {
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
    }
}

/// Wall-clock time, Unix seconds.
pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where session log events go, for the log.
pub(super) fn describe_logging(l: &LoggingConfig) -> String {
    let mut v = Vec::new();
    if let Some(a) = l.ipfix {
        v.push(format!("IPFIX to {a} (domain {})", l.ipfix_domain));
    }
    if let Some(t) = &l.syslog {
        v.push(format!("syslog to {t}"));
    }
    if v.is_empty() {
        "off".into()
    } else {
        v.join(", ")
    }
}

/// Validates `path` completely, then applies it (see `Engine::reload`).
pub(super) fn reload(
    engine: &Engine,
    cur: &Config,
    path: &Path,
    flush_unmatched: bool,
    checker: Option<&Checker>,
) -> Result<ReloadReply, String> {
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    crate::engine::set_tunnel_mtus(&mut new.engine, super::device_mtu);
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
    Ok(ReloadReply {
        config: path.display().to_string(),
        report,
        flushed,
    })
}

fn set_op(
    engine: &Engine,
    op: SetOp,
    name: &str,
    prefix: Option<&str>,
    timeout: Option<u32>,
    now: crate::conntrack::Time,
) -> Result<SetReport, String> {
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
    Ok(SetReport {
        name: name.to_string(),
        default_timeout: set.default_timeout(),
        entries: set
            .list(now)
            .into_iter()
            .map(|e| protocol::SetEntryView {
                prefix: e.prefix,
                expires_in: e
                    .expires
                    .map(|t| t.saturating_sub(now).0.div_ceil(1_000_000_000)),
            })
            .collect(),
        changed,
    })
}

fn persistence_view(engine: &Engine, now: crate::conntrack::Time) -> Vec<protocol::PersistView> {
    engine
        .lb()
        .entries(now)
        .into_iter()
        .map(|e| protocol::PersistView {
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
) -> Result<LbReply, String> {
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
    Ok(LbReply { changed, flushed })
}
