//! Health checks of real servers, like keepalived's TCP_CHECK and
//! HTTP_GET, run by the [`Checker`]'s own threads.
//!
//! # Using it
//!
//! ```ignore
//! let checker = Checker::start(engine.clone(), checks);   // Vec<(ServiceKey, CheckSpec)>
//! checker.set_neighbours(running.neigh.clone());         // AF_XDP: see "Plumbing"
//! checker.update(new_checks)?;                           // reload / run-time change
//! let rows: Vec<CheckStatus> = checker.status();         // `natgw services`
//! checker.stop();
//! ```
//!
//! # What it does
//!
//! - One scheduler thread wakes at least every [`TICK`]. Each time it reads
//!   the engine's current [`LbTable`](crate::lb::LbTable) (`engine.lb()`), so real servers
//!   added or removed at run time are picked up within a tick: a new
//!   server gets a check, a removed one loses it.
//! - Every real server of every checked service is checked every
//!   `interval` (measured from the start of one check to the start of the
//!   next; a check still running when the next is due delays it), each
//!   check in its own short-lived thread (at most [`MAX_IN_FLIGHT`] at
//!   once), bounded by `timeout`. The port is `check.port`, else the
//!   real's port; a real with port 0 (port-0 services) needs `check.port`
//!   ([`Checker::update`] refuses a set without it; a port-0 real that
//!   appears later shows the error in its status and is left alone).
//! - A server starts **up** (keepalived's default: alive until proven
//!   otherwise, so starting natgw or adding a check never removes a
//!   server by itself). `fall` consecutive failures take an up server
//!   down, `rise` consecutive successes bring a down server up; the
//!   checker calls [`LbTable::set_health`](crate::lb::LbTable::set_health),
//!   which flips the shared flag in place (no table rebuild, established
//!   flows untouched; a down server only stops getting new clients).
//!   Transitions are logged: `health: tcp 192.0.2.10:80 real 10.1.0.11:80
//!   DOWN after 2 failures: connection refused` (warn), `... UP after 2
//!   successes` (info).
//! - When a service loses its check ([`Checker::update`] without it), its
//!   servers are marked up again (an unchecked server is alive). A new
//!   check marks its servers up as it starts (a re-added server might
//!   otherwise come back with the down flag it left with).
//! - Checks that stay across [`Checker::update`] keep their state
//!   (health, counters, history); a changed spec applies from the next check.
//!
//! # The checks
//!
//! - TCP (TCP_CHECK): the handshake completes within `timeout`.
//! - HTTP (HTTP_GET): `GET path HTTP/1.0` with a `Host` header (the
//!   configured `host`, else the real's `addr:port`), then read until the
//!   server closes, the `Content-Length` body is complete, [`MAX_RESPONSE`]
//!   bytes have come, or `timeout` (counted from the connect) passes. The
//!   status code must equal `status`; if `body` is set, the body must
//!   contain it (bytes, case-sensitive).
//!
//! Each check is an ordinary kernel socket, bound before `connect` to a
//! source port from [`SOURCE_PORTS`] (61000-61999, `SO_REUSEADDR`; the
//! source address is that of the engine's output interface towards the
//! real when the host has it, else the kernel's choice), and closed with
//! an RST (`SO_LINGER` 0): no TIME_WAIT is left in the small port range,
//! as with HAProxy's checks. A real server application may log the reset
//! of a TCP check that it accepted.
//!
//! # Plumbing: checks while natgw owns the data interfaces
//!
//! The checks come from the gateway's kernel, but natgw owns the data
//! interfaces. What lets their replies through:
//!
//! - AF_XDP: the XDP program passes TCP to the gateway's interface
//!   addresses with a destination port in [`SOURCE_PORTS`] to the kernel
//!   (`bpf/natgw_xdp.c`, [`XdpProg::pass_to_kernel`]); everything else
//!   still goes to natgw.
//! - The stop guard (`inet natgw_guard`) accepts that port range.
//! - TUN: an `ip rule` before natgw's steering rules sends TCP with those
//!   destination ports to the `local` table (`src/dataplane/tun.rs`).
//! - natgw's source NAT never hands out a TCP port in that range (nor
//!   keeps an inside port in it), so no NAT flow's reply can be mistaken
//!   for a check's ([`PortRange::HEALTH_CHECK`](crate::nat::PortRange::HEALTH_CHECK)).
//! - ARP (AF_XDP only): natgw answers and learns all ARP on its
//!   interfaces, including the replies to the kernel's own requests, so the
//!   kernel never completes a resolution by itself. With
//!   [`Checker::set_neighbours`] the checker copies natgw's entries for
//!   the next hops it is about to use (and, each tick, for checks in
//!   flight) into the kernel's table ([`KernelNeighbours`]).
//!   A real natgw has never heard of is resolved by the kernel's own ARP
//!   request: natgw learns the reply and the next tick copies it, while the
//!   kernel still holds the SYN (it retries for about 3 s), so even the
//!   first check usually succeeds. The TUN backend leaves ARP to the
//!   kernel and needs none of this.
//!
//! //! # Parts
//!
//! - `spec.rs`: what a check is and which sets of checks are valid.
//! - `probe.rs`: running one check (socket, connect, HTTP exchange).
//! - this file: the [`Checker`] — the scheduler thread, per-server state,
//!   rise/fall counting, marking servers up and down in the `lb` table.
//!
//! May import the engine and its `lb` table, the dataplane's neighbour
//! table (AF_XDP plumbing above), and [`CheckStatus`] from the
//! [`protocol`](crate::protocol) (the row it reports); never the control
//! socket, the daemon or the CLI.
//!
//! [`XdpProg::pass_to_kernel`]: crate::dataplane::xdp::XdpProg::pass_to_kernel

mod probe;
mod spec;

pub use probe::{MAX_RESPONSE, SOURCE_PORTS};
pub use spec::{CheckError, CheckKind, CheckSpec, validate};

use crate::dataplane::neigh::{KernelNeighbours, Neighbours};
use crate::dataplane::sys;
use crate::engine::Engine;
use crate::lb::{Health, ServiceKey};
use crate::nat::IfId;
use crate::packet::proto;
pub use crate::protocol::CheckStatus;
use parking_lot::{Condvar, Mutex};
use probe::{Job, check};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The scheduler looks at the table (new and removed servers), syncs
/// neighbours and starts due checks at least this often.
pub const TICK: Duration = Duration::from_millis(100);
/// Most checks running at once; due checks wait beyond that.
pub const MAX_IN_FLIGHT: usize = 256;

/// A real server of a service: (service, address, port as listed).
type TargetKey = (ServiceKey, u32, u16);

/// State of one checked server.
#[derive(Debug, Clone)]
struct Target {
    health: Health,
    ok: u32,
    fail: u32,
    last_error: Option<String>,
    since: Instant,
    last_transition: Option<SystemTime>,
    transitions: u64,
    runs: u64,
    failures: u64,
    last_done: Option<Instant>,
    last_ms: Option<f64>,
    next_due: Instant,
    running: bool,
    /// Bumped when the target is dropped and made again, so a result of
    /// a check started before is ignored.
    epoch: u64,
}

/// What one finished check changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    None,
    Up,
    Down,
}

impl Target {
    fn new(now: Instant, epoch: u64) -> Target {
        Target {
            health: Health::Up,
            ok: 0,
            fail: 0,
            last_error: None,
            since: now,
            last_transition: None,
            transitions: 0,
            runs: 0,
            failures: 0,
            last_done: None,
            last_ms: None,
            next_due: now,
            running: false,
            epoch,
        }
    }

    /// Counts one result against `rise`/`fall` (keepalived's counting:
    /// a result of the other kind restarts the count).
    fn record(&mut self, result: Result<(), String>, rise: u32, fall: u32) -> Transition {
        self.runs += 1;
        match result {
            Ok(()) => {
                self.ok = self.ok.saturating_add(1);
                self.fail = 0;
                if self.health == Health::Down && self.ok >= rise {
                    self.health = Health::Up;
                    return Transition::Up;
                }
            }
            Err(e) => {
                self.failures += 1;
                self.fail = self.fail.saturating_add(1);
                self.ok = 0;
                self.last_error = Some(e);
                if self.health == Health::Up && self.fail >= fall {
                    self.health = Health::Down;
                    return Transition::Down;
                }
            }
        }
        Transition::None
    }
}

struct State {
    checks: BTreeMap<ServiceKey, CheckSpec>,
    targets: BTreeMap<TargetKey, Target>,
    in_flight: usize,
    epoch: u64,
    stop: bool,
}

struct Shared {
    engine: Arc<Engine>,
    state: Mutex<State>,
    wake: Condvar,
    neigh: Mutex<Option<KernelNeighbours>>,
    /// Next source port to try (index into [`SOURCE_PORTS`]).
    port_cursor: AtomicU32,
}

/// The health checker: see the module docs.
pub struct Checker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts checking `checks` (one per service key) against the real
    /// servers `engine.lb()` lists, in a new thread. Every server starts
    /// up. Entries that [`validate`] would refuse still run: a port-0 real
    /// without `check.port` shows the error in its status, a duplicate key
    /// keeps the last spec; use [`validate`] first to refuse them.
    pub fn start(engine: Arc<Engine>, checks: Vec<(ServiceKey, CheckSpec)>) -> Checker {
        let shared = Arc::new(Shared {
            engine,
            state: Mutex::new(State {
                checks: checks.into_iter().collect(),
                targets: BTreeMap::new(),
                in_flight: 0,
                epoch: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            neigh: Mutex::new(None),
            port_cursor: AtomicU32::new(std::process::id().wrapping_mul(7919)),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("natgw-health".into())
            .spawn(move || s.run())
            .map_err(|e| log::error!("health: cannot start the checker thread: {e}"))
            .ok();
        Checker { shared, thread }
    }

    /// AF_XDP backend: natgw's neighbour table (`Running::neigh`), whose
    /// entries the checker copies into the kernel's for the servers it
    /// checks (see the module docs). `None` (TUN backend, tests) copies
    /// nothing.
    pub fn set_neighbours(&self, neigh: Option<Arc<Neighbours>>) {
        let names = self
            .shared
            .engine
            .config()
            .interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect();
        *self.shared.neigh.lock() = neigh.map(|n| KernelNeighbours::new(n, names));
    }

    /// Replaces the set of checks (config reload, run-time change). Checks
    /// of services that stay keep their state; servers of services that
    /// lose their check are marked up. Refused (nothing changes) if
    /// [`validate`] refuses it against the current table.
    pub fn update(&self, checks: Vec<(ServiceKey, CheckSpec)>) -> Result<(), CheckError> {
        validate(&self.shared.engine.lb(), &checks)?;
        let mut st = self.shared.state.lock();
        st.checks = checks.into_iter().collect();
        self.shared.reconcile(&mut st, Instant::now());
        drop(st);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// The checks in force, by service.
    pub fn checks(&self) -> Vec<(ServiceKey, CheckSpec)> {
        let st = self.shared.state.lock();
        st.checks.iter().map(|(k, c)| (*k, c.clone())).collect()
    }

    /// One row per checked real server, by service and server.
    pub fn status(&self) -> Vec<CheckStatus> {
        let now = Instant::now();
        let st = self.shared.state.lock();
        st.targets
            .iter()
            .filter_map(|(&(key, addr, port), t)| {
                let spec = st.checks.get(&key)?;
                let real = SocketAddrV4::new(addr.into(), port);
                let check_port = spec.port.unwrap_or(port);
                Some(CheckStatus {
                    service: key,
                    real,
                    target: (check_port != 0).then(|| SocketAddrV4::new(addr.into(), check_port)),
                    kind: spec.kind.name().into(),
                    health: t.health,
                    consecutive_ok: t.ok,
                    consecutive_fail: t.fail,
                    rise: spec.rise,
                    fall: spec.fall,
                    last_error: t.last_error.clone(),
                    health_age_secs: now.saturating_duration_since(t.since).as_secs_f64(),
                    last_transition_unix: t.last_transition.map(|w| {
                        w.duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64()
                    }),
                    transitions: t.transitions,
                    checks_run: t.runs,
                    checks_failed: t.failures,
                    last_check_age_secs: t
                        .last_done
                        .map(|d| now.saturating_duration_since(d).as_secs_f64()),
                    last_check_ms: t.last_ms,
                })
            })
            .collect()
    }

    /// Stops the scheduler and waits for it. Checks still running finish
    /// on their own (within their timeout) and their results are dropped.
    /// Servers keep the health they have.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Shared {
    /// The scheduler loop.
    fn run(self: Arc<Self>) {
        let mut st = self.state.lock();
        let mut reconciled: Option<Instant> = None;
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            if reconciled.is_none_or(|r| now.duration_since(r) >= TICK) {
                self.reconcile(&mut st, now);
                reconciled = Some(now);
            }
            let jobs = self.due(&mut st, now);
            // Next hops of the checks about to run and of those in flight
            // (a neighbour natgw learned meanwhile helps a waiting SYN).
            let hops: Vec<(IfId, u32)> = if self.neigh.lock().is_some() {
                let mut v: Vec<(IfId, u32)> = st
                    .targets
                    .iter()
                    .filter(|(_, t)| t.running)
                    .filter_map(|(k, _)| self.engine.route(k.1).map(|h| (h.oif, h.addr)))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            } else {
                Vec::new()
            };
            let wait = st
                .targets
                .values()
                .filter(|t| !t.running)
                .map(|t| t.next_due.saturating_duration_since(now))
                .min()
                .unwrap_or(TICK)
                .clamp(Duration::from_millis(1), TICK);
            drop(st);
            if !hops.is_empty()
                && let Some(k) = &*self.neigh.lock()
            {
                match k.sync(&hops, sys::now()) {
                    Ok(0) => {}
                    Ok(n) => log::debug!("health: copied {n} neighbour(s) into the kernel"),
                    Err(e) => log::warn!("health: copying neighbours into the kernel: {e}"),
                }
            }
            for job in jobs {
                self.spawn(job);
            }
            st = self.state.lock();
            if !st.stop {
                self.wake.wait_for(&mut st, wait);
            }
        }
    }

    /// Makes the targets match the table and the check set: new servers
    /// get a target (up), removed ones lose it, services without a check
    /// have their servers marked up.
    fn reconcile(&self, st: &mut State, now: Instant) {
        let lb = self.engine.lb();
        let mut want: Vec<TargetKey> = Vec::new();
        for key in st.checks.keys() {
            if let Some(svc) = lb.service(key) {
                want.extend(svc.reals().iter().map(|r| (*key, r.addr, r.port)));
            }
        }
        want.sort_unstable();
        want.dedup();
        // Gone: the server left the table, or its service lost the check.
        let gone: Vec<TargetKey> = st
            .targets
            .keys()
            .filter(|k| want.binary_search(k).is_err())
            .copied()
            .collect();
        for k in gone {
            let t = st.targets.remove(&k);
            let (svc, addr, port) = k;
            if !st.checks.contains_key(&svc)
                && t.is_some_and(|t| t.health == Health::Down)
                && lb.set_health(svc, addr, port, Health::Up).unwrap_or(false)
            {
                log::info!(
                    "health: {} real {} no longer checked: marked UP",
                    service_name(&svc),
                    SocketAddrV4::new(addr.into(), port)
                );
            }
        }
        let new: Vec<TargetKey> = want
            .into_iter()
            .filter(|k| !st.targets.contains_key(k))
            .collect();
        for (i, &k) in new.iter().enumerate() {
            // First checks spread over up to a second (or the interval).
            let spread = st
                .checks
                .get(&k.0)
                .map_or(Duration::ZERO, |c| c.interval.min(Duration::from_secs(1)));
            st.epoch += 1;
            let mut t = Target::new(now, st.epoch);
            t.next_due = now + spread.mul_f64(i as f64 / new.len() as f64);
            st.targets.insert(k, t);
            let (svc, addr, port) = k;
            if lb.set_health(svc, addr, port, Health::Up).unwrap_or(false) {
                log::info!(
                    "health: {} real {} starts being checked: marked UP until its checks fail",
                    service_name(&svc),
                    SocketAddrV4::new(addr.into(), port)
                );
            }
        }
    }

    /// Marks due targets running and returns their jobs.
    fn due(&self, st: &mut State, now: Instant) -> Vec<Job> {
        let room = MAX_IN_FLIGHT.saturating_sub(st.in_flight);
        let mut jobs = Vec::new();
        let State {
            checks, targets, ..
        } = st;
        for (&key, t) in targets.iter_mut() {
            if jobs.len() >= room {
                break;
            }
            if t.running || t.next_due > now {
                continue;
            }
            let Some(spec) = checks.get(&key.0) else {
                continue;
            };
            let port = spec.port.unwrap_or(key.2);
            t.next_due = now + spec.interval;
            if port == 0 {
                let e = "real server has port 0 and the check has no port".to_string();
                if t.last_error.as_ref() != Some(&e) {
                    log::warn!(
                        "health: {} real {}: {e}; not checked",
                        service_name(&key.0),
                        SocketAddrV4::new(key.1.into(), key.2)
                    );
                    t.last_error = Some(e);
                }
                continue;
            }
            t.running = true;
            let source = self
                .engine
                .route(key.1)
                .and_then(|h| self.engine.interface(h.oif))
                .map_or(Ipv4Addr::UNSPECIFIED, |i| i.addr.addr.into());
            jobs.push(Job {
                key,
                epoch: t.epoch,
                spec: spec.clone(),
                target: SocketAddrV4::new(key.1.into(), port),
                source,
            });
        }
        st.in_flight += jobs.len();
        jobs
    }

    fn spawn(self: &Arc<Self>, job: Job) {
        let s = self.clone();
        let key = job.key;
        let epoch = job.epoch;
        let r = std::thread::Builder::new()
            .name("natgw-check".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // Signals go to other threads: a check's blocking calls are
                // bounded by socket timeouts, which a signal would cut short.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                let t0 = Instant::now();
                let r = check(&job, &s.port_cursor);
                s.finish(job.key, job.epoch, r, t0);
            });
        if let Err(e) = r {
            log::warn!("health: cannot start a check thread: {e}");
            let mut st = self.state.lock();
            st.in_flight -= 1;
            if let Some(t) = st.targets.get_mut(&key).filter(|t| t.epoch == epoch) {
                t.running = false;
            }
        }
    }

    /// Records a finished check and applies a transition.
    fn finish(&self, key: TargetKey, epoch: u64, r: Result<(), String>, t0: Instant) {
        let mut st = self.state.lock();
        st.in_flight -= 1;
        if st.stop {
            return;
        }
        let Some(spec) = st.checks.get(&key.0).cloned() else {
            return;
        };
        let Some(t) = st.targets.get_mut(&key).filter(|t| t.epoch == epoch) else {
            return;
        };
        let now = Instant::now();
        t.running = false;
        t.last_done = Some(now);
        t.last_ms = Some(now.duration_since(t0).as_secs_f64() * 1e3);
        if let Err(e) = &r {
            log::debug!(
                "health: {} real {}: check failed: {e}",
                service_name(&key.0),
                SocketAddrV4::new(key.1.into(), key.2)
            );
        }
        let tr = t.record(r, spec.rise, spec.fall);
        if tr == Transition::None {
            if t.next_due <= now {
                // Overdue (the check ran past its interval): start the next.
                self.wake.notify_all();
            }
            return;
        }
        t.since = now;
        t.last_transition = Some(SystemTime::now());
        t.transitions += 1;
        let (svc, addr, port) = key;
        let health = t.health;
        let real = SocketAddrV4::new(addr.into(), port);
        let what = match spec.port {
            Some(p) if p != port => format!(
                "{} {} real {real} (port {p})",
                spec.kind.name(),
                service_name(&svc)
            ),
            _ => format!("{} {} real {real}", spec.kind.name(), service_name(&svc)),
        };
        match tr {
            Transition::Down => log::warn!(
                "health: {} DOWN after {} failure{}: {}",
                what,
                t.fail,
                plural(t.fail),
                t.last_error.as_deref().unwrap_or("?")
            ),
            _ => log::info!(
                "health: {} UP after {} success{}",
                what,
                t.ok,
                if t.ok == 1 { "" } else { "es" }
            ),
        }
        drop(st);
        if let Err(e) = self.engine.lb().set_health(svc, addr, port, health) {
            log::warn!("health: {e}");
        }
        self.wake.notify_all();
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `192.0.2.10:80` (TCP) or `192.0.2.10:53/udp`, for the log.
fn service_name(k: &ServiceKey) -> String {
    let a = SocketAddrV4::new(k.vip.into(), k.port);
    if k.proto == proto::UDP {
        format!("{a}/udp")
    } else {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::probe::*;
    use super::*;
    use crate::control::config::Config;
    use crate::lb::{Change, RealSpec};
    use crate::nat::PortRange;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::Path;

    const BASE: &str = r#"
[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"
"#;

    /// An engine whose services are `(vip, reals as (addr, port))`.
    fn engine(services: &[(&str, &[(&str, u16)])]) -> (Arc<Engine>, Vec<ServiceKey>) {
        let mut text = BASE.to_string();
        for (vip, reals) in services {
            text += &format!("\n[[service]]\naddress = \"{vip}\"\nport = 80\nscheduler = \"rr\"\n");
            for (a, p) in *reals {
                text += &format!("[[service.real]]\naddress = \"{a}\"\nport = {p}\n");
            }
        }
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        let keys = cfg.services.iter().map(|s| s.spec.key).collect();
        (Arc::new(cfg.build_engine().unwrap()), keys)
    }

    fn spec(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            kind,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            port: None,
        }
    }

    fn http(path: &str, status: u16, body: Option<&str>) -> CheckKind {
        CheckKind::Http {
            path: path.into(),
            status,
            body: body.map(String::from),
            host: None,
        }
    }

    /// Polls `f` until it is true or 10 s pass.
    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn row(c: &Checker, key: ServiceKey, port: u16) -> Option<CheckStatus> {
        c.status()
            .into_iter()
            .find(|s| s.service == key && s.real.port() == port)
    }

    fn lb_health(e: &Engine, key: ServiceKey, port: u16) -> Health {
        let lb = e.lb();
        let svc = lb.service(&key).unwrap();
        let i = svc.find_real(u32::from(Ipv4Addr::LOCALHOST), port).unwrap();
        svc.real(i).health()
    }

    /// A listener that accepts and drops connections, in its own thread.
    fn accepting(l: TcpListener) {
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
    }

    /// A free port on 127.0.0.1 (nothing listens there afterwards).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn rise_and_fall_count_consecutive_results() {
        let t0 = Instant::now();
        let mut t = Target::new(t0, 1);
        let fail = || Err::<(), String>("connection refused".into());
        assert_eq!(t.health, Health::Up, "a server starts up");
        assert_eq!(t.record(fail(), 3, 2), Transition::None);
        assert_eq!(t.record(Ok(()), 3, 2), Transition::None, "a success resets");
        assert_eq!(t.record(fail(), 3, 2), Transition::None);
        assert_eq!(t.record(fail(), 3, 2), Transition::Down);
        assert_eq!(t.record(fail(), 3, 2), Transition::None, "down stays down");
        assert_eq!((t.fail, t.ok), (3, 0));
        assert_eq!(t.record(Ok(()), 3, 2), Transition::None);
        assert_eq!(t.record(Ok(()), 3, 2), Transition::None);
        assert_eq!(t.record(fail(), 3, 2), Transition::None, "a failure resets");
        assert_eq!(t.record(Ok(()), 3, 2), Transition::None);
        assert_eq!(t.record(Ok(()), 3, 2), Transition::None);
        assert_eq!(t.record(Ok(()), 3, 2), Transition::Up);
        assert_eq!((t.runs, t.failures), (11, 5));
        assert_eq!(t.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn tcp_check_takes_a_dead_server_down_and_back_up() {
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let p1 = live.local_addr().unwrap().port();
        accepting(live);
        let p2 = closed_port();
        let (e, keys) = engine(&[("203.0.113.10", &[("127.0.0.1", p1), ("127.0.0.1", p2)])]);
        let key = keys[0];
        // Slow enough that no further check lands between the transition
        // and the look at the counts.
        let mut slow = spec(CheckKind::Tcp);
        slow.interval = Duration::from_millis(250);
        let c = Checker::start(e.clone(), vec![(key, slow)]);
        wait_for("the dead server to go down", || {
            row(&c, key, p2).is_some_and(|r| r.health == Health::Down)
        });
        let dead = row(&c, key, p2).unwrap();
        assert_eq!(
            dead.consecutive_fail, 2,
            "down after exactly `fall` failures"
        );
        assert_eq!(dead.transitions, 1);
        assert!(dead.last_transition_unix.is_some());
        assert_eq!(dead.last_error.as_deref(), Some("connection refused"));
        assert_eq!(
            dead.target,
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p2))
        );
        assert_eq!(lb_health(&e, key, p2), Health::Down);
        wait_for("more checks of the live server", || {
            row(&c, key, p1).is_some_and(|r| r.checks_run >= 3)
        });
        let alive = row(&c, key, p1).unwrap();
        assert_eq!((alive.health, alive.checks_failed), (Health::Up, 0));
        assert_eq!(lb_health(&e, key, p1), Health::Up);

        // The server comes back: up after `rise` successes.
        let back = TcpListener::bind(("127.0.0.1", p2)).unwrap();
        accepting(back);
        wait_for("the server to come back", || {
            row(&c, key, p2).is_some_and(|r| r.health == Health::Up)
        });
        let r = row(&c, key, p2).unwrap();
        assert_eq!((r.consecutive_ok, r.consecutive_fail), (2, 0));
        assert_eq!(r.transitions, 2);
        assert_eq!(lb_health(&e, key, p2), Health::Up);
        c.stop();
    }

    /// An HTTP server for the tests: `/ok` 200 "hello world" (close),
    /// `/err` 500, `/keep` a 200 with Content-Length that stays open,
    /// `/slow` never answers.
    fn http_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&buf).into_owned();
                    assert!(req.contains("\r\nHost: 127.0.0.1:"), "{req}");
                    let path = req.split(' ').nth(1).unwrap_or("").to_string();
                    let _ = match path.as_str() {
                        "/ok" => c.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world\n",
                        ),
                        "/err" => c.write_all(b"HTTP/1.0 500 Internal Server Error\r\n\r\noops"),
                        "/keep" => {
                            let _ =
                                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                            std::thread::sleep(Duration::from_secs(3));
                            Ok(())
                        }
                        _ => {
                            std::thread::sleep(Duration::from_secs(3));
                            Ok(())
                        }
                    };
                });
            }
        });
        port
    }

    #[test]
    fn http_check_compares_status_and_body_and_times_out() {
        let p = http_server();
        let real: &[(&str, u16)] = &[("127.0.0.1", p)];
        let (e, keys) = engine(&[
            ("203.0.113.10", real),
            ("203.0.113.11", real),
            ("203.0.113.12", real),
            ("203.0.113.13", real),
            ("203.0.113.14", real),
        ]);
        let mut slow = spec(http("/slow", 200, None));
        slow.timeout = Duration::from_millis(200);
        let checks = vec![
            (keys[0], spec(http("/ok", 200, Some("world")))),
            (keys[1], spec(http("/ok", 200, Some("nope")))),
            (keys[2], spec(http("/err", 200, None))),
            (keys[3], slow),
            (keys[4], spec(http("/keep", 200, Some("hell")))),
        ];
        let c = Checker::start(e.clone(), checks);
        for k in &keys[1..4] {
            wait_for("failing HTTP checks to take their server down", || {
                row(&c, *k, p).is_some_and(|r| r.health == Health::Down)
            });
        }
        let err = |k: ServiceKey| row(&c, k, p).unwrap().last_error.unwrap_or_default();
        assert_eq!(
            err(keys[1]),
            "body (12 bytes) does not contain \"nope\"",
            "body mismatch"
        );
        assert_eq!(err(keys[2]), "HTTP status 500, want 200");
        assert!(err(keys[3]).starts_with("timeout"), "{}", err(keys[3]));
        wait_for("good HTTP checks to run a few times", || {
            row(&c, keys[0], p).is_some_and(|r| r.checks_run >= 3)
                && row(&c, keys[4], p).is_some_and(|r| r.checks_run >= 3)
        });
        for k in [keys[0], keys[4]] {
            let r = row(&c, k, p).unwrap();
            assert_eq!((r.health, r.checks_failed), (Health::Up, 0), "{r:?}");
            assert_eq!(r.kind, "http");
        }
        c.stop();
    }

    #[test]
    fn update_keeps_state_follows_the_table_and_refuses_port_0_without_a_port() {
        let p1 = closed_port();
        let (e, keys) = engine(&[
            ("203.0.113.10", &[("127.0.0.1", p1)]),
            ("203.0.113.11", &[("127.0.0.1", p1)]),
        ]);
        let (a, b) = (keys[0], keys[1]);
        let c = Checker::start(e.clone(), vec![(a, spec(CheckKind::Tcp))]);
        wait_for("down", || {
            row(&c, a, p1).is_some_and(|r| r.health == Health::Down)
        });
        assert!(row(&c, b, p1).is_none(), "b is not checked");
        // Keep a, add b: a stays down with its history.
        let before = row(&c, a, p1).unwrap();
        c.update(vec![(a, spec(CheckKind::Tcp)), (b, spec(CheckKind::Tcp))])
            .unwrap();
        let after = row(&c, a, p1).unwrap();
        assert_eq!(after.health, Health::Down);
        assert!(after.checks_run >= before.checks_run);
        assert_eq!(after.transitions, 1);
        wait_for("b down too", || {
            row(&c, b, p1).is_some_and(|r| r.health == Health::Down)
        });
        // Drop a's check: its server is alive again as far as the table goes.
        c.update(vec![(b, spec(CheckKind::Tcp))]).unwrap();
        assert!(row(&c, a, p1).is_none());
        assert_eq!(lb_health(&e, a, p1), Health::Up);
        assert_eq!(lb_health(&e, b, p1), Health::Down);

        // A server added at run time is checked; a removed one is not.
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let p2 = live.local_addr().unwrap().port();
        accepting(live);
        let add = Change::AddReal {
            service: b,
            real: RealSpec {
                addr: Ipv4Addr::LOCALHOST.into(),
                port: p2,
                weight: 1,
            },
        };
        e.swap_lb(e.lb().apply(&add).unwrap());
        wait_for("the new server to be checked", || {
            row(&c, b, p2).is_some_and(|r| r.checks_run >= 1)
        });
        let del = Change::DelReal {
            service: b,
            addr: Ipv4Addr::LOCALHOST.into(),
            port: p1,
        };
        e.swap_lb(e.lb().apply(&del).unwrap());
        wait_for("the removed server to go", || row(&c, b, p1).is_none());
        assert_eq!(row(&c, b, p2).unwrap().health, Health::Up);

        // Port-0 reals need the check's port.
        let zero = Change::AddService(crate::lb::ServiceSpec {
            key: ServiceKey {
                vip: u32::from(Ipv4Addr::new(203, 0, 113, 20)),
                port: 0,
                proto: proto::TCP,
            },
            scheduler: crate::lb::Scheduler::Rr,
            persistence: Some(crate::lb::Persistence {
                timeout_secs: 300,
                netmask: None,
                expire_quiescent: false,
            }),
            reals: vec![RealSpec {
                addr: Ipv4Addr::LOCALHOST.into(),
                port: 0,
                weight: 1,
            }],
            forward: Default::default(),
        });
        e.swap_lb(e.lb().apply(&zero).unwrap());
        let zkey = e.lb().specs().iter().find(|s| s.key.port == 0).unwrap().key;
        let err = c
            .update(vec![
                (b, spec(CheckKind::Tcp)),
                (zkey, spec(CheckKind::Tcp)),
            ])
            .unwrap_err();
        assert!(matches!(err, CheckError::NeedsPort { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:0 has port 0"), "{err}");
        assert_eq!(c.checks().len(), 1, "a refused update changes nothing");
        let mut with_port = spec(CheckKind::Tcp);
        with_port.port = Some(p2);
        c.update(vec![(b, spec(CheckKind::Tcp)), (zkey, with_port)])
            .unwrap();
        wait_for("the port-0 server checked on the check's port", || {
            row(&c, zkey, 0).is_some_and(|r| r.checks_run >= 2)
        });
        let r = row(&c, zkey, 0).unwrap();
        assert_eq!(r.target, Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p2)));
        assert_eq!(r.health, Health::Up);

        let dup = c.update(vec![(b, spec(CheckKind::Tcp)), (b, spec(CheckKind::Tcp))]);
        assert_eq!(dup, Err(CheckError::Duplicate(b)));
        let mut zero_rise = spec(CheckKind::Tcp);
        zero_rise.rise = 0;
        assert!(c.update(vec![(b, zero_rise)]).is_err());
        c.stop();
    }

    #[test]
    fn status_serialises_for_the_control_socket() {
        let p = closed_port();
        let (e, keys) = engine(&[("203.0.113.10", &[("127.0.0.1", p)])]);
        let c = Checker::start(e, vec![(keys[0], spec(CheckKind::Tcp))]);
        wait_for("down", || {
            row(&c, keys[0], p).is_some_and(|r| r.health == Health::Down)
        });
        let v = serde_json::to_value(c.status()).unwrap();
        let r = &v[0];
        assert_eq!(r["health"], "down");
        assert_eq!(r["kind"], "tcp");
        assert_eq!(r["real"], format!("127.0.0.1:{p}"));
        assert_eq!(r["service"]["vip"], "203.0.113.10");
        assert!(r["consecutive_fail"].as_u64().unwrap() >= 2);
        let back: Vec<CheckStatus> = serde_json::from_value(v).unwrap();
        assert_eq!(back.len(), 1);
        c.stop();
    }

    #[test]
    fn source_nat_never_uses_the_check_ports_for_tcp() {
        use crate::conntrack::{FlowTable, NewFlow, Time, Timeouts};
        use crate::nat::{NatState, Source, SrcRequest};
        use crate::packet::Tuple;
        let table = FlowTable::new(10_000, Timeouts::default(), 1);
        let nat = NatState::new(7);
        let gw = u32::from(Ipv4Addr::new(203, 0, 113, 1));
        let flow = |p: u8, sport: u16, ports: PortRange, keep_any: bool| {
            let orig = Tuple {
                src: u32::from(Ipv4Addr::new(10, 0, 0, 10)),
                dst: u32::from(Ipv4Addr::new(198, 51, 100, 9)),
                sport,
                dport: 443,
                proto: p,
            };
            let base = NewFlow {
                orig,
                reply: orig.invert(),
                tcp_flags: (p == proto::TCP).then_some(0x02),
                seg: None,
                flags: 0,
                mark: 0,
                len: 60,
            };
            let req = SrcRequest {
                source: Source::Addr(gw),
                ports,
                keep_any,
                eim: false,
                eif: false,
                translated: true,
            };
            let (_, reply) = nat
                .create(
                    &table,
                    &base,
                    orig.dst,
                    orig.dport,
                    &req,
                    Time::from_secs(1),
                )
                .unwrap();
            reply.dport
        };
        // The inside port is kept when it is free, but not in the range.
        assert_eq!(flow(proto::TCP, 40000, PortRange::NAT_DEFAULT, true), 40000);
        for sport in [61000, 61500, 61999] {
            let out = flow(proto::TCP, sport, PortRange::NAT_DEFAULT, true);
            assert!(!SOURCE_PORTS.contains(out), "{sport} -> {out}");
        }
        // UDP is not affected.
        assert_eq!(flow(proto::UDP, 61500, PortRange::NAT_DEFAULT, true), 61500);
        // An explicit range overlapping the reserved one skips it.
        let r: PortRange = "60990-61010".parse().unwrap();
        for i in 0..10u16 {
            let out = flow(proto::TCP, 1000 + i, r, false);
            assert!(r.contains(out) && !SOURCE_PORTS.contains(out), "{out}");
        }
    }
}
