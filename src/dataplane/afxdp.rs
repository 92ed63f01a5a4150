//! AF_XDP backend: one worker thread per queue, each owning one UMEM shared
//! by its sockets on every configured interface (queue `q` of each).
//!
//! A frame received on one interface and forwarded out of another never
//! moves: its descriptor goes from that interface's RX ring to the other's
//! TX ring (XDP_SHARED_UMEM across devices; in copy mode the kernel copies
//! it once into an skb on transmit, in zero-copy mode not at all).
//!
//! This file sets the backend up (checks the host, attaches the XDP
//! program, makes a UMEM and a device per queue, starts the workers); the
//! device itself, with every `unsafe` ring operation, is
//! [`sys::xsk::XdpDevice`], and the loop is the generic
//! [`super::worker::Worker`].
//!
//! # Handover without loss
//!
//! Setup is split: [`prepare`] does everything up to the sockets (host
//! checks, stop guard, XDP program attached or adopted, UMEMs allocated),
//! [`Prepared::start`] binds the sockets and starts the workers. A
//! handover runs `prepare` while the old process still forwards; only
//! `start` is left for the cut.
//!
//! What the kernel allows decided the shape: a bound AF_XDP socket's rings
//! cannot be mapped again by another process (`xsk_mmap` returns EBUSY
//! once bound; the fill and completion rings belong to the buffer pool),
//! so the old process's sockets cannot be passed on, and a queue takes a
//! new socket only once the old one is closed (and the kernel has freed
//! the queue, in a work item shortly after the close: `start` retries the
//! bind for up to 500 ms). Something has to hold the frames that arrive
//! between the old socket leaving and the new one arriving. Options
//! weighed:
//!
//! - the XDP program passes them to the kernel: they would be forwarded
//!   untranslated or answered with resets — ruled out;
//! - two sockets sharing one UMEM across processes (XDP_SHARED_UMEM with
//!   the old socket's fd): the new process would need the old one's fill
//!   ring, which it cannot map;
//! - **the XDP program parks them** (chosen): while no socket is
//!   registered for a queue, it copies each frame into a BPF queue map
//!   (16384 frames of up to 1536 bytes per interface) and drops it; the
//!   new process pops them (`bpf(MAP_LOOKUP_AND_DELETE_ELEM)`, ~1–2 µs
//!   each) and processes them like received frames. The program and its
//!   maps are pinned in bpffs, so they outlive the process that attached
//!   them, and the next natgw adopts them (`bpf_link_update`, no detach).
//!   Costs nothing while natgw runs (one socket-map lookup per frame);
//!   the cut is bounded by the queue's size, not by a race.
//!
//! The cut, old side ([`super::Running::hand_over`]): delete its sockets
//! from the socket map (frames park from now on), wake the workers (an
//! eventfd in their `poll`), let each handle what is left on its RX rings
//! and finish its TX, and answer as soon as every worker has *drained* —
//! the workers close their sockets only after the answer is out and the
//! new process has hung up (closing an AF_XDP socket waits for an RCU
//! grace period, and the kernel frees the queue later still: 30–60 ms
//! here), then the programs are released (pins kept). New side: restore
//! the last changes and the neighbour cache, start the
//! [`bridge`](super::bridge) (it pops the park queues and forwards
//! through AF_PACKET, so frames flow again within milliseconds of the
//! cut, not after the bind), bind the sockets (retrying while the queue
//! is still held), end the bridge, then in each worker thread: fill the
//! fill rings, register the sockets, pop what was parked since in chunks
//! of [`PARKED_CHUNK`] with a round on the sockets in between (where ARP
//! replies arrive), then once more after 1 ms for frames parked just
//! before the registration. A frame parked longer than [`PARKED_MAX_AGE`]
//! is dropped (`parked_stale`). After `kill -9` the same program parks
//! until the next natgw starts; that one starts the bridge as soon as its
//! programs are adopted.
//!
//! Frame accounting: every frame is in exactly one place — the device's
//! free pool, a fill ring (or the RX ring behind it), a TX ring, or the
//! worker (held for a next hop) — and `pool + in_fill + in_tx + held ==
//! frames` holds after every round (checked in debug builds). TX back-
//! pressure drops frames back into the pool and counts `tx_full`.
//!
//! Wake-ups: sockets are bound with XDP_USE_NEED_WAKEUP; TX is kicked with
//! `sendto` only when the kernel asks (in copy mode each kick sends at
//! most 32 frames, so a busy worker kicks once per 32 outstanding); the
//! fill ring is kicked when flagged. An idle worker sleeps in `poll()` on
//! its RX sockets for up to 10 ms. No busy polling.

use super::bridge::{Bridge, BridgePort, Bridged};
use super::config::{DataplaneConfig, XdpMode};
use super::device::SysClock;
use super::neigh::Neighbours;
use super::sys::packet::PacketTx;
use super::sys::xsk::XdpDevice;
use super::worker::{HOLD_MAX, HOLD_TIME, KICK_BATCH, Worker};
use super::xdp::{Attached, ParkQueue, XdpProg};
use super::{DataplaneError, Running, WorkerStats, sys};
use crate::engine::{DropReason, Engine};
use crate::nat::{IfId, PortRange};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xsk_rs::config::{
    BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{FrameDesc, Umem};

const FRAME_SIZE: u32 = 2048;

/// Frames parked longer than this are dropped (`parked_stale`) rather
/// than processed: nobody waits for them any more.
pub const PARKED_MAX_AGE: Duration = Duration::from_secs(5);
/// Parked frames processed between two rounds on the sockets.
pub const PARKED_CHUNK: usize = 32;
/// How long binding a queue is retried (see [`Prepared::start`]).
const BIND_RETRY: Duration = Duration::from_millis(500);

/// Everything up to the sockets: host checked, stop guard installed, XDP
/// attached (or adopted from the previous natgw), UMEMs allocated. A
/// handover prepares this while the old process still forwards; only
/// [`Prepared::start`] (bind the sockets, start the workers) is left for
/// the cut.
pub struct Prepared {
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    ifs: Vec<(String, IfId, [u8; 6], u32)>,
    progs: Vec<Arc<XdpProg>>,
    queues: Vec<QueuePrep>,
    ring: usize,
    batch: usize,
    /// Receive coalescing of the workers (`afxdp.coalesce_us`).
    coalesce: Duration,
    /// `SCHED_FIFO` priority of the workers (`afxdp.rt_priority`; 0: off).
    rt_priority: u32,
    zero_copy: bool,
    cpus: Vec<usize>,
    /// Shared by the bridge and the workers.
    neigh: Arc<Neighbours>,
    /// Forwards parked frames from the cut until the sockets are bound
    /// (programs adopted only; see [`super::bridge`]).
    bridge: Option<Bridge>,
}

/// One queue's UMEM, made before the cut.
struct QueuePrep {
    q: u32,
    umem: Umem,
    pool: Vec<FrameDesc>,
}

/// Validates the interfaces, attaches the XDP program (adopting the one a
/// previous natgw left attached), installs the stop guard and allocates
/// the UMEMs. Nothing new is left attached on error.
pub fn prepare(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Prepared, DataplaneError> {
    let a = &cfg.afxdp;
    let ifs = &cfg.interfaces;
    let mut facts = Vec::new();
    for i in ifs {
        let idx = sys::ifindex(&i.name)
            .map_err(|e| DataplaneError(format!("{e} (config interface `{}`)", i.name)))?;
        let mac = sys::mac(&i.name).map_err(|e| DataplaneError(e.to_string()))?;
        let rxq =
            sys::rx_queues(&i.name).map_err(|e| DataplaneError(format!("{}: {e}", i.name)))?;
        if !sys::has_ipv4(&i.name, i.addr.addr).map_err(|e| DataplaneError(e.to_string()))? {
            return Err(DataplaneError(format!(
                "address {} is not on interface `{}` (add it: ip addr add {} dev {})",
                std::net::Ipv4Addr::from(i.addr.addr),
                i.name,
                i.addr,
                i.name
            )));
        }
        facts.push((idx, mac, rxq));
    }
    let min_q = facts.iter().map(|f| f.2).min().unwrap_or(1);
    let queues = match a.queues {
        0 => min_q,
        n if n > min_q => {
            let (i, f) = ifs
                .iter()
                .zip(&facts)
                .find(|(_, f)| f.2 < n)
                .map(|(i, f)| (i, f.2))
                .unwrap_or((&ifs[0], min_q));
            return Err(DataplaneError(format!(
                "afxdp.queues = {n} is out of range: `{}` has {f} receive queue(s)",
                i.name
            )));
        }
        n => n,
    };
    let native = match a.mode {
        XdpMode::Auto => None,
        XdpMode::Native => Some(true),
        XdpMode::Generic => Some(false),
    };
    let names: Vec<String> = ifs.iter().map(|i| i.name.clone()).collect();
    match super::guard::install(&names) {
        Ok(()) => log::info!(
            "stop guard: nftables table inet {} drops NAT traffic on {} while natgw is not running",
            super::guard::TABLE,
            names.join(", ")
        ),
        Err(e) => log::warn!(
            "no stop guard ({e}): while natgw is stopped the kernel may reset NATed connections"
        ),
    }
    // Replies to the health checks' kernel sockets (see
    // `PortRange::HEALTH_CHECK`) on the interface addresses go to the kernel.
    let own: Vec<u32> = ifs.iter().map(|i| i.addr.addr).collect();
    let stale = super::xdp::remove_stale_pins();
    if stale > 0 {
        log::info!("removed {stale} pinned XDP program(s) of interfaces that are gone");
    }
    let mut progs: Vec<Arc<XdpProg>> = Vec::new();
    for (i, f) in ifs.iter().zip(&facts) {
        let p = match XdpProg::attach(&i.name, f.0, native) {
            Ok(p) => p,
            Err(e) => {
                release(progs);
                return Err(DataplaneError(e.to_string()));
            }
        };
        if let Err(e) = p.pass_to_kernel(&own, PortRange::HEALTH_CHECK) {
            release(progs);
            p.release();
            return Err(DataplaneError(format!("{}: {e}", i.name)));
        }
        log::info!(
            "{}: XDP {} in {} mode{}",
            i.name,
            if p.adopted() {
                "program taken over from the previous natgw"
            } else {
                "attached"
            },
            if p.mode == Attached::Native {
                "native"
            } else {
                "generic"
            },
            if p.pinned() {
                ""
            } else {
                " (not pinned: frames that arrive while no natgw runs are lost)"
            }
        );
        progs.push(Arc::new(p));
    }

    let nports = ifs.len();
    let ring = ((a.frames as usize) / (2 * nports)).clamp(64, 4096);
    let ring = if ring.is_power_of_two() {
        ring
    } else {
        ring.next_power_of_two() / 2
    };
    let mut prepared = Prepared {
        engine,
        stop,
        ifs: ifs
            .iter()
            .zip(&facts)
            .enumerate()
            .map(|(k, (i, f))| (i.name.clone(), k as IfId, f.1, i.addr.addr))
            .collect(),
        progs,
        queues: Vec::new(),
        ring,
        batch: a.batch as usize,
        coalesce: Duration::from_micros(a.coalesce_us.into()),
        rt_priority: a.rt_priority,
        zero_copy: a.zero_copy,
        cpus: a.cpus.clone(),
        neigh: Arc::new(Neighbours::default()),
        bridge: None,
    };
    for q in 0..queues {
        let umem = (|| {
            let qs = QueueSize::new(ring as u32)
                .map_err(|e| DataplaneError(format!("ring size {ring}: {e}")))?;
            let ucfg = UmemConfig::builder()
                .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| DataplaneError(e.to_string()))?)
                .fill_queue_size(qs)
                .comp_queue_size(qs)
                .build()
                .map_err(|e| DataplaneError(format!("UMEM config: {e}")))?;
            let frames = NonZeroU32::new(a.frames)
                .ok_or_else(|| DataplaneError("afxdp.frames is 0".into()))?;
            Umem::new(ucfg, frames, false)
                .map_err(|e| DataplaneError(format!("creating UMEM: {e}")))
        })();
        match umem {
            Ok((umem, pool)) => prepared.queues.push(QueuePrep { q, umem, pool }),
            Err(e) => {
                prepared.abandon();
                return Err(e);
            }
        }
    }
    prepared.bridge = spawn_bridge(&prepared);
    Ok(prepared)
}

/// Lets go of programs without detaching them (their pins stay).
fn release(progs: Vec<Arc<XdpProg>>) {
    for p in progs {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.release();
        }
    }
}

impl Prepared {
    /// Lets the bridge forward parked frames now (also done by `start`).
    pub fn bridge_go(&mut self) {
        if let Some(b) = &mut self.bridge {
            b.go();
        }
    }

    /// The neighbour cache the bridge and the workers share.
    pub fn neighbours(&self) -> &Arc<Neighbours> {
        &self.neigh
    }

    /// Gives up before the cut: the XDP programs stay attached as they
    /// were (the running natgw goes on using them); the UMEMs are freed.
    pub fn abandon(self) {
        release(self.progs);
    }

    /// Binds a socket per interface and queue and starts one worker per
    /// queue. Each worker first processes what the XDP program parked
    /// while no socket was registered (a handover's cut, a restart), then
    /// registers its sockets, then takes what was parked meanwhile, then
    /// runs. On error, what was bound is closed and the programs stay
    /// attached (pinned), parking.
    pub fn start(self) -> Result<Running, DataplaneError> {
        let Prepared {
            engine,
            stop,
            ifs,
            progs,
            queues,
            ring,
            batch,
            coalesce,
            rt_priority,
            zero_copy,
            cpus,
            neigh,
            mut bridge,
        } = self;
        if let Some(b) = &mut bridge {
            b.go();
        }
        let drain = Arc::new(AtomicBool::new(false));
        let (bound, bridged) = bind_queues(
            queues, &ifs, &progs, ring, batch, coalesce, zero_copy, &engine, &neigh, bridge,
        );
        let mut running = Running::default();
        if let Some(b) = bridged {
            match &b.error {
                None => log::info!(
                    "bridge: {} parked frame(s) forwarded through AF_PACKET while the sockets were bound, in {} us",
                    b.frames,
                    b.us
                ),
                Some(e) => log::warn!("bridge: {e}"),
            }
            running.stats.push(b.stats);
        }
        let workers = match bound {
            Ok(w) => w,
            Err(e) => {
                release(progs);
                return Err(e);
            }
        };

        let ncpu = sys::cpus();
        let wake = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map(Arc::new)
        .map_err(|e| DataplaneError(format!("eventfd: {e}")));
        let wake = match wake {
            Ok(w) => w,
            Err(e) => {
                release(progs);
                return Err(e);
            }
        };
        let (drained_tx, drained_rx) = std::sync::mpsc::channel();
        for (q, mut w, regs, parks) in workers {
            w.device_mut()
                .wake_on(std::os::fd::AsRawFd::as_raw_fd(&*wake));
            let (wake, drained_tx) = (wake.clone(), drained_tx.clone());
            let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
            running.close.push(close_tx);
            let cpu = if cpus.is_empty() {
                q as usize % ncpu
            } else {
                cpus[q as usize % cpus.len()]
            };
            running.stats.push(w.stats().clone());
            let (stop, drain) = (stop.clone(), drain.clone());
            let h = std::thread::Builder::new()
                .name(format!("natgw-q{q}"))
                .spawn(move || {
                    if let Err(e) = sys::pin_to_cpu(cpu) {
                        log::warn!("worker q{q}: cannot pin to CPU {cpu}: {e}");
                    }
                    if rt_priority > 0 {
                        match sys::set_realtime(rt_priority) {
                            Ok(()) => {
                                w.set_yield_rounds(true);
                                log::info!(
                                    "worker q{q}: real-time priority {rt_priority} (SCHED_FIFO)"
                                )
                            }
                            Err(e) => log::warn!(
                                "worker q{q}: afxdp.rt_priority = {rt_priority} not applied ({e}): the worker runs as an ordinary thread"
                            ),
                        }
                    }
                    // Fill rings first, so registered sockets get frames.
                    w.poll()?;
                    let t0 = std::time::Instant::now();
                    for (prog, fd) in &regs {
                        prog.register(q, *fd)
                            .map_err(|e| format!("worker q{q}: {e}"))?;
                    }
                    let mut buf = vec![0u8; ParkQueue::MAX_FRAME];
                    let mut taken = take_parked(&mut w, &parks, &mut buf)?;
                    // A frame parked by another CPU just before the
                    // registration lands within microseconds.
                    std::thread::sleep(Duration::from_millis(1));
                    taken += take_parked(&mut w, &parks, &mut buf)?;
                    w.flush_all()?;
                    if taken > 0 {
                        log::info!(
                            "worker q{q}: processed {taken} frame(s) parked while no natgw read the queue, in {} us",
                            t0.elapsed().as_micros()
                        );
                    }
                    drop(regs);
                    let r = w.run(&stop, &drain);
                    // Drained: the old side of a handover answers now;
                    // closing the sockets (dropping `w`) takes longer and
                    // waits until the answer is out (`close`).
                    let _ = drained_tx.send(());
                    if r.is_ok() && drain.load(std::sync::atomic::Ordering::Acquire) {
                        let _ = close_rx.recv();
                    }
                    drop(w);
                    drop(wake);
                    r
                })
                .map_err(|e| DataplaneError(format!("spawning worker: {e}")))?;
            running.workers.push(h);
        }
        running.neigh = Some(neigh);
        running.xdp = progs;
        running.xdp_names = ifs.iter().map(|i| i.0.clone()).collect();
        running.drain = drain;
        running.wake = Some(wake);
        running.drained = Some(drained_rx);
        running.queues = running.workers.len() as u32;
        Ok(running)
    }
}

/// Spawns the bridge for `p` (held until [`Bridge::go`]) if its programs
/// were adopted: only then can frames be parked.
fn spawn_bridge(p: &Prepared) -> Option<Bridge> {
    if !p.progs.iter().any(|p| p.adopted()) {
        return None;
    }
    let ports = p
        .ifs
        .iter()
        .zip(&p.progs)
        .map(|((name, ifid, mac, addr), prog)| {
            Ok(BridgePort {
                ifid: *ifid,
                mac: *mac,
                addr: *addr,
                park: prog.park_queue()?,
                tx: PacketTx::open(sys::ifindex(name)?)?,
            })
        })
        .collect::<std::io::Result<Vec<_>>>()
        .and_then(|ports| {
            Bridge::spawn(
                ports,
                p.engine.clone(),
                p.neigh.clone(),
                p.batch,
                PARKED_MAX_AGE,
                p.cpus.first().copied(),
            )
        });
    match ports {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!("no bridge for parked frames ({e}): they wait until the sockets are bound");
            None
        }
    }
}

type Bound = Vec<(
    u32,
    Worker<XdpDevice, SysClock>,
    Vec<(Arc<XdpProg>, i32)>,
    Vec<ParkQueue>,
)>;

/// Binds a socket per interface for each queue and builds its worker,
/// while `bridge` (started) forwards the parked frames; the bridge ends
/// once every socket is bound (or binding failed) and its report comes
/// back with the result.
#[allow(clippy::too_many_arguments)]
fn bind_queues(
    queues: Vec<QueuePrep>,
    ifs: &[(String, IfId, [u8; 6], u32)],
    progs: &[Arc<XdpProg>],
    ring: usize,
    batch: usize,
    coalesce: Duration,
    zero_copy: bool,
    engine: &Arc<Engine>,
    neigh: &Arc<Neighbours>,
    bridge: Option<Bridge>,
) -> (Result<Bound, DataplaneError>, Option<Bridged>) {
    let bound = (|| {
        let mut workers = Vec::new();
        for QueuePrep { q, umem, pool } in queues {
            let qs = match QueueSize::new(ring as u32) {
                Ok(qs) => qs,
                Err(e) => return Err(DataplaneError(format!("ring size {ring}: {e}"))),
            };
            let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
            bind |= if zero_copy {
                BindFlags::XDP_ZEROCOPY
            } else {
                BindFlags::XDP_COPY
            };
            let mut dev = XdpDevice::new(umem, pool, batch.max(KICK_BATCH));
            let mut regs = Vec::new();
            for ((name, ifid, mac, addr), prog) in ifs.iter().zip(progs) {
                let xdp_flags = match prog.mode {
                    Attached::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
                    Attached::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
                };
                let scfg = SocketConfig::builder()
                    .rx_queue_size(qs)
                    .tx_queue_size(qs)
                    .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                    .xdp_flags(xdp_flags)
                    .bind_flags(bind)
                    .build();
                // The kernel frees a closed socket's hold on its queue in a
                // work item, shortly after the close: after a handover's
                // cut the queue may still be busy for a moment (frames
                // park meanwhile).
                let t = std::time::Instant::now();
                let fd = loop {
                    match dev.bind(*ifid, *mac, *addr, name, q, scfg, ring) {
                        Ok(fd) => break fd,
                        Err(_) if t.elapsed() < BIND_RETRY => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => return Err(DataplaneError(e)),
                    }
                };
                if t.elapsed() > Duration::from_millis(1) {
                    log::info!(
                        "{name} queue {q}: bound after {} us (the previous socket was still letting go)",
                        t.elapsed().as_micros()
                    );
                }
                regs.push((prog.clone(), fd));
            }
            let parks = match progs
                .iter()
                .map(|p| p.park_queue())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(v) => v,
                Err(e) => return Err(DataplaneError(format!("XDP park queue: {e}"))),
            };
            let stats = Arc::new(WorkerStats::new(format!("q{q}")));
            let w = Worker::new(dev, SysClock, engine.clone(), neigh.clone(), stats, batch)
                .with_coalesce(coalesce);
            workers.push((q, w, regs, parks));
        }
        Ok(workers)
    })();
    (bound, bridge.map(Bridge::finish))
}

/// Takes every frame parked on `parks` (one queue per port) and has the
/// worker process it; returns how many were processed. The sockets are
/// registered by then: every [`PARKED_CHUNK`] frames the worker also runs
/// a round on its sockets, where the ARP replies to its requests arrive (a
/// new process knows no neighbours yet: parked frames to a next hop it
/// has not resolved wait in its hold queue), and while the hold queue is
/// half full it waits for those replies (up to [`HOLD_TIME`]) instead of
/// overflowing it. Frames that arrived after the parked ones may so be
/// handled before some of them: reordered, not lost.
fn take_parked(
    w: &mut Worker<XdpDevice, SysClock>,
    parks: &[ParkQueue],
    buf: &mut [u8],
) -> Result<usize, String> {
    let mut n = 0;
    for (port, pq) in parks.iter().enumerate() {
        loop {
            let p = match pq.pop(buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("reading parked frames: {e}");
                    break;
                }
            };
            if Duration::from_nanos(p.age_ns) > PARKED_MAX_AGE {
                w.stats().counters.drop(DropReason::ParkedStale);
                continue;
            }
            if w.inject(port, &buf[..p.len.min(buf.len())])? {
                n += 1;
            }
            if n % PARKED_CHUNK == 0 {
                w.flush_all()?;
                w.poll()?;
                let t = std::time::Instant::now();
                while w.held() >= HOLD_MAX / 2 && t.elapsed() < Duration::from_nanos(HOLD_TIME.0) {
                    if w.poll()? == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
        }
    }
    Ok(n)
}

/// Validates, attaches and starts at once (no handover).
pub fn start(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
    prepare(cfg, engine, stop)?.start()
}
