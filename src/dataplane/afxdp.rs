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

use super::config::{DataplaneConfig, XdpMode};
use super::device::SysClock;
use super::neigh::Neighbours;
use super::sys::xsk::XdpDevice;
use super::worker::{KICK_BATCH, Worker};
use super::xdp::{Attached, XdpProg};
use super::{DataplaneError, Running, WorkerStats, sys};
use crate::engine::Engine;
use crate::nat::{IfId, PortRange};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xsk_rs::Umem;
use xsk_rs::config::{
    BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};

const FRAME_SIZE: u32 = 2048;

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
        let mut dev = XdpDevice::new(umem, pool, (a.batch as usize).max(KICK_BATCH));
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
            let fd = dev
                .bind(k as IfId, f.1, i.addr.addr, &i.name, q, scfg, ring)
                .map_err(DataplaneError)?;
            prog.register(q, fd)
                .map_err(|e| DataplaneError(format!("{}: {e}", i.name)))?;
        }
        let stats = Arc::new(WorkerStats::new(format!("q{q}")));
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
