//! AF_XDP backend: one worker thread per queue, each owning one UMEM shared
//! by its sockets on every configured interface (queue `q` of each).
//!
//! A frame received on one interface and forwarded out of another never
//! moves: its descriptor goes from that interface's RX ring to the other's
//! TX ring (XDP_SHARED_UMEM across devices; in copy mode the kernel copies
//! it once into an skb on transmit, in zero-copy mode not at all).
//!
//! Frame accounting: every frame is in exactly one place — the worker's
//! free pool, a fill ring (or the RX ring behind it), a TX ring, or the
//! worker's pending-TX list — and `pool + in_fill + in_tx + pending ==
//! frames` holds after every loop (checked in debug builds). TX back-
//! pressure drops frames back into the pool and counts `tx_full`.
//!
//! Wake-ups: sockets are bound with XDP_USE_NEED_WAKEUP; TX is kicked with
//! `sendto` only when the kernel asks (in copy mode each kick sends at
//! most 32 frames, so a busy worker kicks once per 32 outstanding); the
//! fill ring is kicked when flagged. An idle worker sleeps in `poll()` on
//! its RX sockets for up to 10 ms. No busy polling.
#![allow(unsafe_code)]

use super::config::{DataplaneConfig, XdpMode};
use super::device::{Device, SysClock};
use super::neigh::Neighbours;
use super::worker::{KICK_BATCH, Worker};
use super::xdp::{Attached, XdpProg};
use super::{DataplaneError, Running, WorkerStats, sys};
use crate::engine::Engine;
use crate::nat::{IfId, PortRange};
use crate::packet::Link;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xsk_rs::config::{
    BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

const FRAME_SIZE: u32 = 2048;

/// One interface's socket within a worker's device.
struct Port {
    ifid: IfId,
    mac: [u8; 6],
    addr: u32,
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    /// Frames handed to the kernel through the fill ring.
    in_fill: usize,
    /// Frames on the TX ring, not yet completed.
    in_tx: usize,
    fill_target: usize,
}

/// One worker's AF_XDP device: a socket per interface (its queue `q`),
/// all on one UMEM, and the pool of frames the worker may use.
pub struct XdpDevice {
    ports: Vec<Port>,
    pool: Vec<FrameDesc>,
    total: usize,
    /// Completion descriptors read in one go.
    cqbuf: Vec<FrameDesc>,
    /// Poll set of the RX sockets, built once.
    pollfds: Vec<libc::pollfd>,
    /// Declared after `ports`, so the sockets are dropped first.
    umem: Umem,
}

/// Validates the interfaces, attaches the XDP program, opens the sockets
/// and starts one worker per queue. Nothing is left attached on error.
pub fn start(
    cfg: &DataplaneConfig,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
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
    let mut progs = Vec::new();
    for (i, f) in ifs.iter().zip(&facts) {
        let p = XdpProg::attach(&i.name, f.0, native).map_err(|e| DataplaneError(e.to_string()))?;
        p.pass_to_kernel(&own, PortRange::HEALTH_CHECK)
            .map_err(|e| DataplaneError(format!("{}: {e}", i.name)))?;
        log::info!(
            "{}: XDP attached in {} mode",
            i.name,
            if p.mode == Attached::Native {
                "native"
            } else {
                "generic"
            }
        );
        progs.push(p);
    }

    let nports = ifs.len();
    let ring = ((a.frames as usize) / (2 * nports)).clamp(64, 4096);
    let ring = if ring.is_power_of_two() {
        ring
    } else {
        ring.next_power_of_two() / 2
    };
    let neigh = Arc::new(Neighbours::default());
    let mut workers = Vec::new();
    for q in 0..queues {
        let qs = QueueSize::new(ring as u32)
            .map_err(|e| DataplaneError(format!("ring size {ring}: {e}")))?;
        let ucfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| DataplaneError(e.to_string()))?)
            .fill_queue_size(qs)
            .comp_queue_size(qs)
            .build()
            .map_err(|e| DataplaneError(format!("UMEM config: {e}")))?;
        let frames =
            NonZeroU32::new(a.frames).ok_or_else(|| DataplaneError("afxdp.frames is 0".into()))?;
        let (umem, pool) = Umem::new(ucfg, frames, false)
            .map_err(|e| DataplaneError(format!("creating UMEM: {e}")))?;
        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        bind |= if a.zero_copy {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let mut ports = Vec::new();
        for (k, ((i, f), prog)) in ifs.iter().zip(&facts).zip(&progs).enumerate() {
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
            let ifname = i
                .name
                .parse()
                .map_err(|e| DataplaneError(format!("{}: {e}", i.name)))?;
            // SAFETY: the UMEM outlives the socket: both move into the
            // same XdpDevice, whose `ports` are dropped before `umem`
            // (field order), and each (interface, queue) is bound once.
            let (tx, rx, fqcq) = unsafe { Socket::new(scfg, &umem, &ifname, q) }.map_err(|e| {
                DataplaneError(format!("AF_XDP socket on {} queue {q}: {e}", i.name))
            })?;
            let Some((fq, cq)) = fqcq else {
                return Err(DataplaneError(format!(
                    "{} queue {q} is already bound",
                    i.name
                )));
            };
            prog.register(q, rx.fd().as_raw_fd())
                .map_err(|e| DataplaneError(format!("{}: {e}", i.name)))?;
            ports.push(Port {
                ifid: k as IfId,
                mac: f.1,
                addr: i.addr.addr,
                tx,
                rx,
                fq,
                cq,
                in_fill: 0,
                in_tx: 0,
                fill_target: ring,
            });
        }
        let total = pool.len();
        let stats = Arc::new(WorkerStats::new(format!("q{q}")));
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let dev = XdpDevice {
            ports,
            pool,
            total,
            cqbuf: vec![FrameDesc::default(); (a.batch as usize).max(KICK_BATCH)],
            pollfds,
            umem,
        };
        let w = Worker::new(
            dev,
            SysClock,
            engine.clone(),
            neigh.clone(),
            stats,
            a.batch as usize,
        );
        workers.push((q, w));
    }

    let ncpu = sys::cpus();
    let mut running = Running::default();
    for (q, w) in workers {
        let cpu = if a.cpus.is_empty() {
            q as usize % ncpu
        } else {
            a.cpus[q as usize % a.cpus.len()]
        };
        running.stats.push(w.stats().clone());
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("natgw-q{q}"))
            .spawn(move || {
                if let Err(e) = sys::pin_to_cpu(cpu) {
                    log::warn!("worker q{q}: cannot pin to CPU {cpu}: {e}");
                }
                w.run(&stop)
            })
            .map_err(|e| DataplaneError(format!("spawning worker: {e}")))?;
        running.workers.push(h);
    }
    running.neigh = Some(neigh);
    running.xdp = progs;
    Ok(running)
}

impl Device for XdpDevice {
    type Frame = FrameDesc;
    type Buf<'a> = DataMut<'a>;

    fn link(&self) -> Link {
        Link::Ethernet
    }

    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn ifid(&self, port: usize) -> IfId {
        self.ports[port].ifid
    }

    /// Port `k` carries interface `k`.
    #[inline]
    fn port_of(&self, oif: IfId) -> Option<usize> {
        let p = oif as usize;
        (p < self.ports.len()).then_some(p)
    }

    fn mac(&self, port: usize) -> [u8; 6] {
        self.ports[port].mac
    }

    fn addr(&self, port: usize) -> u32 {
        self.ports[port].addr
    }

    fn recv(&mut self, port: usize, rx: &mut [FrameDesc]) -> io::Result<usize> {
        let p = &mut self.ports[port];
        // SAFETY: rx entries are plain descriptors; consume() fills the
        // first n with frames of this device's UMEM.
        let n = unsafe { p.rx.consume(rx) };
        p.in_fill -= n;
        Ok(n)
    }

    #[inline]
    fn len(&self, f: &FrameDesc) -> usize {
        f.lengths().data()
    }

    #[inline]
    fn data_mut<'a>(&'a mut self, f: &'a mut FrameDesc) -> DataMut<'a> {
        // SAFETY: the worker passes only descriptors it owns: taken off an
        // RX ring of this UMEM or out of the pool, and not on any ring
        // until it hands them back; no other descriptor aliases the frame.
        unsafe { self.umem.data_mut(f) }
    }

    #[inline]
    fn buf_mut<'a>(&'a mut self, f: &'a mut FrameDesc) -> DataMut<'a> {
        // SAFETY: as in `data_mut`.
        let mut d = unsafe { self.umem.data_mut(f) };
        let mut cur = d.cursor();
        let cap = cur.buf_len();
        cur.set_pos(cap);
        d
    }

    #[inline]
    fn set_len(&mut self, f: &mut FrameDesc, len: usize) {
        // SAFETY: as in `data_mut`.
        unsafe { self.umem.data_mut(f) }.cursor().set_pos(len);
    }

    fn alloc(&mut self) -> Option<FrameDesc> {
        self.pool.pop()
    }

    #[inline]
    fn free(&mut self, f: FrameDesc) {
        self.pool.push(f);
    }

    fn transmit(&mut self, port: usize, frames: &mut [FrameDesc]) -> io::Result<usize> {
        let p = &mut self.ports[port];
        // SAFETY: the frames are the worker's (from RX or the pool) and
        // are handed to the kernel exactly once here; the ones beyond `n`
        // stay the caller's.
        let n = unsafe { p.tx.produce(frames) };
        p.in_tx += n;
        Ok(n)
    }

    /// Completed transmissions go back to the pool.
    fn complete(&mut self, port: usize) -> usize {
        let p = &mut self.ports[port];
        // SAFETY: completion descriptors are frames of this UMEM that the
        // kernel has finished with.
        let n = unsafe { p.cq.consume(&mut self.cqbuf) };
        self.pool.extend_from_slice(&self.cqbuf[..n]);
        p.in_tx -= n;
        n
    }

    /// Keeps the fill ring topped up from the pool.
    fn refill(&mut self, port: usize) {
        let p = &mut self.ports[port];
        let want = p.fill_target.saturating_sub(p.in_fill).min(self.pool.len());
        if want >= 16 || (want > 0 && p.in_fill == 0) {
            let start = self.pool.len() - want;
            // SAFETY: the frames come from the pool, so no one else owns them.
            let n = unsafe { p.fq.produce(&self.pool[start..]) };
            self.pool.truncate(self.pool.len() - n);
            p.in_fill += n;
        }
        if p.fq.needs_wakeup() {
            let _ = p.fq.wakeup(p.rx.fd_mut(), 0);
        }
    }

    fn tx_in_flight(&self, port: usize) -> usize {
        self.ports[port].in_tx
    }

    fn needs_kick(&self, port: usize) -> bool {
        self.ports[port].tx.needs_wakeup()
    }

    fn kick(&mut self, port: usize) -> io::Result<()> {
        self.ports[port].tx.wakeup()
    }

    /// Waits for a frame on any port.
    fn wait(&mut self, timeout: Duration) {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        sys::poll_in(&mut self.pollfds, ms);
    }

    /// Kernel ring statistics and the pool's size into `stats`.
    fn housekeeping(&mut self, stats: &WorkerStats) {
        let (mut full, mut empty, mut dropped) = (0, 0, 0);
        for port in &self.ports {
            if let Ok(s) = port.rx.fd().xdp_statistics() {
                full += s.rx_ring_full();
                empty += s.rx_fill_ring_empty_descs();
                dropped += s.rx_dropped();
            }
        }
        stats.set_ring_stats(full, empty, dropped);
        stats.set_frames(self.pool.len() as u64, self.total as u64);
    }

    fn check_frames(&self, held: usize) {
        debug_assert_eq!(
            self.pool.len()
                + held
                + self
                    .ports
                    .iter()
                    .map(|p| p.in_fill + p.in_tx)
                    .sum::<usize>(),
            self.total,
            "AF_XDP frame accounting"
        );
    }
}
