//! The I/O shells around the engine: AF_XDP (the fast path) and TUN (the
//! fallback), the XDP program, ARP and neighbours, and host facts.
//!
//! One worker loop ([`worker::Worker`]) runs every backend: it is generic
//! over a batch [`device::Device`] (receive a batch, transmit a batch,
//! wake-up hints) and a [`device::Clock`], and holds the verdict handling,
//! ARP and the hold queue, the stats and the wake-up policy. A backend's
//! `start` validates the host against the [`config::DataplaneConfig`]
//! (interfaces exist, addresses are on them, queues in range) before it
//! attaches or creates anything, then starts its workers and returns a
//! [`Running`] whose [`Running::shutdown`] joins them and removes what was
//! attached.
//!
//! | module | holds | may import |
//! |---|---|---|
//! | [`config`] | `DataplaneConfig`: what a backend needs, plain data | `engine` |
//! | [`device`] | the `Device` trait and the `Clock` | `conntrack`, `nat`, `packet` |
//! | [`worker`] | the worker loop over any device | `device`, `neigh`, `engine`, `packet`, `nat`, `conntrack` |
//! | [`mem`] | an in-memory device with fault injection, a virtual clock (tests) | `device` |
//! | [`afxdp`] | AF_XDP setup: host checks, XDP attach, a UMEM and a device per queue, worker threads | `sys`, `worker`, `config`, `guard` |
//! | [`bridge`] | forwards parked frames through AF_PACKET while a handover binds its sockets | `sys`, `worker`, `device`, `neigh` |
//! | [`tun`] | the TUN device (a `Device`), policy routing, proxy ARP, its guard | `host`, `sys`, `worker`, `config`, `guard` |
//! | `host` | running `ip`, parsing `ip -j` output, sysctls (TUN setup) | `nat` |
//! | [`neigh`] | the neighbour cache; copying it into the kernel's | `conntrack`, `nat` |
//! | [`guard`] | the nftables stop guard of the AF_XDP backend | `nat` |
//! | [`sys`] | host facts, `poll`, and all `unsafe`: [`sys::bpf`] (the XDP program, re-exported as `xdp`), [`sys::xsk`] (the AF_XDP device), [`sys::packet`] (AF_PACKET sends) | `device`, `nat`, `packet` |
//!
//! Nothing here imports `crate::control` (control builds a
//! `DataplaneConfig` and calls [`start`]); `unsafe` is allowed in [`sys`]
//! only, each block with a `// SAFETY:` comment naming its invariant.

pub mod afxdp;
pub mod bridge;
pub mod config;
pub mod device;
pub mod guard;
mod host;
pub mod mem;
pub mod neigh;
#[allow(unsafe_code)]
pub mod sys;
pub mod tun;
pub mod worker;

pub use sys::bpf as xdp;

use crate::engine::{CounterSnapshot, Counters, Engine};
use config::{Backend, DataplaneConfig};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::thread::JoinHandle;

/// A setup error, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataplaneError(pub String);

/// Counters and latency of one worker thread.
pub struct WorkerStats {
    pub name: String,
    pub counters: Counters,
    /// Fast-path processing time per packet (batch average), nanoseconds.
    latency: Mutex<Histogram<u64>>,
    ring_full: AtomicU64,
    fill_empty: AtomicU64,
    kernel_dropped: AtomicU64,
    frames_free: AtomicU64,
    frames_total: AtomicU64,
}

/// Plain copy of a worker's stats for `natgw stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerSnapshot {
    pub name: String,
    pub counters: CounterSnapshot,
    /// Per-packet processing time percentiles in ns: p50, p90, p99, p99.9, max.
    pub latency_ns: [u64; 5],
    pub latency_samples: u64,
    /// AF_XDP: frames the kernel dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// AF_XDP: times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
    /// AF_XDP: frames the kernel dropped for other reasons.
    pub kernel_dropped: u64,
    /// AF_XDP: UMEM frames free in the worker's pool / in total.
    pub frames_free: u64,
    pub frames_total: u64,
    /// The same per-packet times as a histogram for metrics: packets in
    /// each bucket of [`LATENCY_BUCKETS_NS`] (each bucket's own count, not
    /// cumulative), then those above the last bound.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
    /// Sum of the recorded per-packet times, ns.
    #[serde(default)]
    pub latency_sum_ns: f64,
}

/// Upper bounds (ns) of the per-packet time histogram's buckets
/// ([`WorkerSnapshot::latency_buckets`]).
pub const LATENCY_BUCKETS_NS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl WorkerStats {
    pub fn new(name: String) -> WorkerStats {
        WorkerStats {
            name,
            counters: Counters::default(),
            // 1 ns .. 10 s, 3 significant digits; the bounds are valid, so
            // construction cannot fail.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds"),
            ),
            ring_full: AtomicU64::new(0),
            fill_empty: AtomicU64::new(0),
            kernel_dropped: AtomicU64::new(0),
            frames_free: AtomicU64::new(0),
            frames_total: AtomicU64::new(0),
        }
    }

    /// Records a batch of `n` packets that took `ns` in all.
    pub fn record_batch(&self, n: usize, ns: u64) {
        if n > 0 {
            let per = (ns / n as u64).max(1);
            let _ = self.latency.lock().record_n(per, n as u64);
        }
    }

    pub fn set_ring_stats(&self, full: u64, empty: u64, dropped: u64) {
        self.ring_full.store(full, Relaxed);
        self.fill_empty.store(empty, Relaxed);
        self.kernel_dropped.store(dropped, Relaxed);
    }

    pub fn set_frames(&self, free: u64, total: u64) {
        self.frames_free.store(free, Relaxed);
        self.frames_total.store(total, Relaxed);
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        let h = self.latency.lock();
        let q = |p: f64| h.value_at_quantile(p);
        WorkerSnapshot {
            name: self.name.clone(),
            counters: self.counters.snapshot(),
            latency_ns: [q(0.5), q(0.9), q(0.99), q(0.999), h.max()],
            latency_samples: h.len(),
            rx_ring_full: self.ring_full.load(Relaxed),
            fill_ring_empty: self.fill_empty.load(Relaxed),
            kernel_dropped: self.kernel_dropped.load(Relaxed),
            frames_free: self.frames_free.load(Relaxed),
            frames_total: self.frames_total.load(Relaxed),
            latency_buckets: {
                let mut lo = 0;
                let mut v: Vec<u64> = LATENCY_BUCKETS_NS
                    .iter()
                    .map(|&hi| {
                        let n = h.count_between(lo, hi);
                        lo = hi + 1;
                        n
                    })
                    .collect();
                let below: u64 = v.iter().sum();
                v.push(h.len().saturating_sub(below));
                v
            },
            latency_sum_ns: h.mean() * h.len() as f64,
        }
    }
}

/// What one interface's XDP program did (its per-CPU counters summed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct XdpCounters {
    pub interface: String,
    /// Sent to natgw's AF_XDP socket.
    pub redirected: u64,
    /// Passed to the kernel (not IPv4/ARP, health-check replies, too short).
    pub to_kernel: u64,
    /// No socket registered for the queue (a handover's cut, natgw
    /// restarting): kept in the park queue for the next natgw.
    pub parked: u64,
    /// No socket and the park queue full: dropped.
    pub park_full: u64,
    /// No socket and longer than a park slot: dropped.
    pub park_too_big: u64,
}

/// A started backend.
#[derive(Default)]
pub struct Running {
    pub workers: Vec<JoinHandle<Result<(), String>>>,
    pub stats: Vec<Arc<WorkerStats>>,
    pub neigh: Option<Arc<neigh::Neighbours>>,
    /// Attached XDP programs; dropping the last reference detaches (and
    /// unpins) them, [`Running::hand_over`] keeps them attached.
    xdp: Vec<Arc<xdp::XdpProg>>,
    /// Queues (workers) per interface, AF_XDP.
    queues: u32,
    /// Set to make the workers drain and end (a handover's cut).
    drain: Arc<AtomicBool>,
    /// Wakes workers sleeping in `poll` (AF_XDP): written with `drain`.
    wake: Option<Arc<nix::sys::eventfd::EventFd>>,
    /// A message from each worker once it has drained, before it closes
    /// its sockets (which takes the kernel tens of milliseconds).
    drained: Option<std::sync::mpsc::Receiver<()>>,
    /// One per worker: a drained worker keeps its sockets open until its
    /// sender is dropped (after a handover's answer is out, so closing
    /// them does not compete with it for the CPU).
    close: Vec<std::sync::mpsc::Sender<()>>,
    /// Interface names, in the order of `xdp`.
    xdp_names: Vec<String>,
    /// TUN devices and routes; dropping it removes them.
    tun: Option<tun::TunGuard>,
}

/// What [`Running::hand_over`] did.
#[derive(Debug, Default)]
pub struct HandedOver {
    pub errors: Vec<String>,
    /// The XDP programs stay attached and park frames until the next
    /// natgw registers its sockets: nothing is lost in between.
    pub parking: bool,
    /// Microseconds: sockets taken out of the XDP programs' maps; workers
    /// drained and joined; programs released.
    pub unregister_us: u64,
    pub drain_us: u64,
}

impl Running {
    /// The XDP programs' counters, per interface (AF_XDP; empty on TUN).
    pub fn xdp_counters(&self) -> Vec<XdpCounters> {
        self.xdp
            .iter()
            .zip(&self.xdp_names)
            .map(|(p, name)| {
                let c = p.counters();
                XdpCounters {
                    interface: name.clone(),
                    redirected: c[0],
                    to_kernel: c[1],
                    parked: c[4],
                    park_full: c[5],
                    park_too_big: c[6],
                }
            })
            .collect()
    }

    /// Joins the workers (the caller set the stop flag), then detaches and
    /// removes what the backend installed. Returns worker errors.
    pub fn shutdown(self) -> Vec<String> {
        if let Some(w) = &self.wake {
            let _ = w.write(1);
        }
        let errors = Finish {
            workers: self.workers,
            close: self.close,
            xdp: Vec::new(),
            tun: None,
        }
        .join();
        drop(self.xdp);
        drop(self.tun);
        errors
    }

    /// The old side of a handover's cut. AF_XDP: takes this process's
    /// sockets out of the XDP programs' socket maps (from then on the
    /// programs park arriving frames), wakes the workers, lets each handle
    /// what is on its receive rings and finish its transmissions, and
    /// returns once every worker has drained — before they close their
    /// sockets, which the kernel takes tens of milliseconds over: the
    /// returned [`Finish`] joins them and lets go of the programs without
    /// detaching them, for the next natgw to adopt, after the new process
    /// has its answer. TUN: stops the workers (frames that arrive until
    /// the next natgw opens the device are lost).
    pub fn hand_over(self, stop: &AtomicBool) -> (HandedOver, Finish) {
        let mut out = HandedOver {
            parking: !self.xdp.is_empty() && self.xdp.iter().all(|p| p.pinned()),
            ..HandedOver::default()
        };
        let t0 = std::time::Instant::now();
        if out.parking {
            for p in &self.xdp {
                for q in 0..self.queues {
                    if let Err(e) = p.unregister(q) {
                        out.errors
                            .push(format!("taking socket {q} out of the XDP map: {e}"));
                    }
                }
            }
            self.drain.store(true, Ordering::Release);
        } else {
            stop.store(true, Ordering::Relaxed);
        }
        if let Some(w) = &self.wake
            && let Err(e) = w.write(1)
        {
            out.errors.push(format!("waking the workers: {e}"));
        }
        out.unregister_us = t0.elapsed().as_micros() as u64;
        let mut finish = Finish {
            workers: self.workers,
            close: self.close,
            xdp: self.xdp,
            tun: self.tun,
        };
        match (&self.drained, out.parking) {
            (Some(rx), true) => {
                let deadline = t0 + worker::DRAIN_MAX + std::time::Duration::from_millis(300);
                for _ in 0..finish.workers.len() {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if rx.recv_timeout(left).is_err() {
                        out.errors.push("a worker did not drain in time".into());
                        break;
                    }
                }
            }
            _ => out.errors.extend(finish.join()),
        }
        out.drain_us = t0.elapsed().as_micros() as u64 - out.unregister_us;
        (out, finish)
    }
}

/// The rest of a handover's cut on the old side, after the new process
/// has its answer: joins the workers (their sockets close) and lets go of
/// the XDP programs without detaching them. Dropping it does the same.
pub struct Finish {
    workers: Vec<JoinHandle<Result<(), String>>>,
    close: Vec<std::sync::mpsc::Sender<()>>,
    xdp: Vec<Arc<xdp::XdpProg>>,
    tun: Option<tun::TunGuard>,
}

impl Finish {
    fn join(&mut self) -> Vec<String> {
        self.close.clear();
        let mut errors = Vec::new();
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push("a worker thread panicked".into()),
            }
        }
        errors
    }

    /// Joins the workers and releases the programs; returns what went
    /// wrong.
    pub fn complete(mut self) -> Vec<String> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<String> {
        let mut errors = self.join();
        for p in self.xdp.drain(..) {
            match Arc::try_unwrap(p) {
                Ok(p) => p.release(),
                Err(_) => errors.push("an XDP program is still in use".into()),
            }
        }
        self.tun.take();
        errors
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        for e in self.finish() {
            log::warn!("after the handover: {e}");
        }
    }
}

/// A backend made ready up to its sockets (see [`afxdp::Prepared`]); TUN
/// does everything in [`Prepared::start`].
pub enum Prepared {
    Afxdp(afxdp::Prepared),
    Tun {
        cfg: Box<DataplaneConfig>,
        engine: Arc<Engine>,
        stop: Arc<AtomicBool>,
    },
}

impl Prepared {
    /// Binds the sockets (or opens the TUN device) and starts the workers.
    pub fn start(self) -> Result<Running, DataplaneError> {
        match self {
            Prepared::Afxdp(p) => p.start(),
            Prepared::Tun { cfg, engine, stop } => tun::start(&cfg, engine, stop),
        }
    }

    /// The neighbour cache the workers will use (AF_XDP), to seed with
    /// the previous process's before the start.
    pub fn neighbours(&self) -> Option<&Arc<neigh::Neighbours>> {
        match self {
            Prepared::Afxdp(p) => Some(p.neighbours()),
            Prepared::Tun { .. } => None,
        }
    }

    /// Starts forwarding parked frames (AF_XDP with adopted programs: see
    /// [`bridge`]) ahead of [`start`](Self::start); once the flows of the
    /// cut are restored.
    pub fn bridge_go(&mut self) {
        if let Prepared::Afxdp(p) = self {
            p.bridge_go()
        }
    }

    /// Gives up before starting; an adopted XDP program stays attached.
    pub fn abandon(self) {
        if let Prepared::Afxdp(p) = self {
            p.abandon()
        }
    }
}

/// Prepares the backend the config names.
pub fn prepare(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Prepared, DataplaneError> {
    match cfg.backend {
        Backend::Afxdp => afxdp::prepare(cfg, engine, stop).map(Prepared::Afxdp),
        Backend::Tun => Ok(Prepared::Tun {
            cfg: Box::new(cfg.clone()),
            engine,
            stop,
        }),
    }
}

/// Starts the backend the config names.
pub fn start(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
    prepare(cfg, engine, stop)?.start()
}
