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

use super::neigh::{self, Neighbours, Resolve};
use super::xdp::{Attached, XdpProg};
use super::{DataplaneError, Running, WorkerStats, sys};
use crate::control::config::{Config, XdpMode};
use crate::engine::{Counters, DropReason, Engine, Verdict};
use crate::nat::{IfId, PortRange};
use crate::packet::{self, Link};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use xsk_rs::config::{
    BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

const FRAME_SIZE: u32 = 2048;
/// Frames a worker holds while their next hop is being resolved.
const HOLD_MAX: usize = 256;
/// How long a held frame waits for its ARP reply.
const HOLD_TIME: crate::conntrack::Time = crate::conntrack::Time::from_millis(1000);
/// Frames per `sendto` kick in copy mode (kernel TX batch).
const KICK_BATCH: usize = 32;

/// One interface's socket within a worker.
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
    /// Frames to put on the TX ring at the end of this batch.
    pending: Vec<FrameDesc>,
    fill_target: usize,
}

struct Worker {
    queue: u32,
    umem: Umem,
    pool: Vec<FrameDesc>,
    total: usize,
    ports: Vec<Port>,
    engine: Arc<Engine>,
    neigh: Arc<Neighbours>,
    stats: Arc<WorkerStats>,
    batch: usize,
    /// ARP requests to send after this batch: (interface, target).
    want_arp: Vec<(IfId, u32)>,
    /// This worker's copy of fresh neighbour entries, so the shared table
    /// is not locked per packet; cleared every second, which keeps the
    /// shared table's refresh and expiry in charge.
    nh_cache: ahash::AHashMap<(IfId, u32), [u8; 6]>,
    /// Frames waiting for their next hop's MAC: (frame, oif, next hop,
    /// length, deadline).
    held: Vec<(FrameDesc, IfId, u32, usize, crate::conntrack::Time)>,
}

/// Validates the interfaces, attaches the XDP program, opens the sockets
/// and starts one worker per queue. Nothing is left attached on error.
pub fn start(
    cfg: &Config,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> Result<Running, DataplaneError> {
    let a = &cfg.run.afxdp;
    let ifs = &cfg.engine.interfaces;
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
            // same Worker, whose `ports` are dropped before `umem`
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
                pending: Vec::with_capacity(a.batch as usize * 2),
                fill_target: ring,
            });
        }
        let total = pool.len();
        let stats = Arc::new(WorkerStats::new(format!("q{q}")));
        workers.push(Worker {
            queue: q,
            umem,
            pool,
            total,
            ports,
            engine: engine.clone(),
            neigh: neigh.clone(),
            stats,
            batch: a.batch as usize,
            want_arp: Vec::new(),
            nh_cache: ahash::AHashMap::new(),
            held: Vec::new(),
        });
    }

    let ncpu = sys::cpus();
    let mut running = Running::default();
    for w in workers {
        let cpu = if a.cpus.is_empty() {
            w.queue as usize % ncpu
        } else {
            a.cpus[w.queue as usize % a.cpus.len()]
        };
        running.stats.push(w.stats.clone());
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("natgw-q{}", w.queue))
            .spawn(move || {
                if let Err(e) = sys::pin_to_cpu(cpu) {
                    log::warn!("worker q{}: cannot pin to CPU {cpu}: {e}", w.queue);
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

impl Worker {
    fn run(mut self, stop: &AtomicBool) -> Result<(), String> {
        let mut rxbuf = vec![FrameDesc::default(); self.batch];
        let mut cqbuf = vec![FrameDesc::default(); self.batch.max(KICK_BATCH)];
        let mut last_housekeeping = sys::now();
        while !stop.load(Ordering::Relaxed) {
            let mut work = 0;
            for p in 0..self.ports.len() {
                work += self.reap(p, &mut cqbuf);
                self.refill(p);
            }
            for p in 0..self.ports.len() {
                // SAFETY: rxbuf entries are plain descriptors; consume()
                // fills the first n with frames of this worker's UMEM.
                let n = unsafe { self.ports[p].rx.consume(&mut rxbuf) };
                if n == 0 {
                    continue;
                }
                work += n;
                self.ports[p].in_fill -= n;
                let t0 = sys::now();
                for d in rxbuf.iter_mut().take(n) {
                    self.handle(p, *d, t0);
                }
                let t1 = sys::now();
                self.stats.record_batch(n, t1.saturating_sub(t0).0);
            }
            if !self.held.is_empty() {
                self.release_held(sys::now());
            }
            for p in 0..self.ports.len() {
                self.flush(p, &mut cqbuf)
                    .map_err(|e| format!("transmit: {e}"))?;
            }
            debug_assert_eq!(
                self.pool.len()
                    + self.held.len()
                    + self
                        .ports
                        .iter()
                        .map(|p| p.in_fill + p.in_tx + p.pending.len())
                        .sum::<usize>(),
                self.total,
                "AF_XDP frame accounting"
            );
            let now = sys::now();
            if now.saturating_sub(last_housekeeping).0 >= 1_000_000_000 {
                last_housekeeping = now;
                self.housekeeping();
            }
            if work == 0 && self.ports.iter().all(|p| p.in_tx == 0) {
                self.sleep(if self.held.is_empty() { 10 } else { 1 });
            }
        }
        Ok(())
    }

    /// Completed transmissions go back to the pool.
    fn reap(&mut self, p: usize, buf: &mut [FrameDesc]) -> usize {
        let port = &mut self.ports[p];
        // SAFETY: completion descriptors are frames of this UMEM that the
        // kernel has finished with.
        let n = unsafe { port.cq.consume(buf) };
        self.pool.extend_from_slice(&buf[..n]);
        port.in_tx -= n;
        n
    }

    /// Keeps the fill ring topped up from the pool.
    fn refill(&mut self, p: usize) {
        let port = &mut self.ports[p];
        let want = port
            .fill_target
            .saturating_sub(port.in_fill)
            .min(self.pool.len());
        if want >= 16 || (want > 0 && port.in_fill == 0) {
            let start = self.pool.len() - want;
            // SAFETY: the frames come from the pool, so no one else owns them.
            let n = unsafe { port.fq.produce(&self.pool[start..]) };
            self.pool.truncate(self.pool.len() - n);
            port.in_fill += n;
        }
        if port.fq.needs_wakeup() {
            let _ = port.fq.wakeup(port.rx.fd_mut(), 0);
        }
    }

    /// One received frame: run the engine, then queue, answer or recycle it.
    fn handle(&mut self, p: usize, mut d: FrameDesc, now: crate::conntrack::Time) {
        let iif = self.ports[p].ifid;
        let c = &self.stats.counters;
        // SAFETY: `d` came off this worker's RX ring, so it is a frame of
        // `self.umem` that the kernel has handed over; no other descriptor
        // aliases it.
        let mut data = unsafe { self.umem.data_mut(&mut d) };
        let len = data.contents().len();
        Counters::bump(&c.rx_packets);
        Counters::add(&c.rx_bytes, len as u64);
        // Give the engine the whole frame as room for a reply.
        let cap = {
            let mut cur = data.cursor();
            let cap = cur.buf_len();
            cur.set_pos(cap);
            cap
        };
        let buf = &mut data.contents_mut()[..cap];
        let v = self.engine.process(buf, len, Link::Ethernet, iif, now, c);
        let out = match v {
            Verdict::Forward { oif, next_hop } => Some((oif, next_hop, len, None)),
            Verdict::Reply { oif, next_hop, len } => Some((oif, next_hop, len, None)),
            Verdict::Pass => self.arp(p, buf, len, now).map(|l| (iif, 0, l, Some(()))),
            Verdict::Local => self.ping_me(p, buf, len),
            Verdict::Drop(_) => None,
        };
        let Some((oif, next_hop, out_len, direct)) = out else {
            self.pool.push(d);
            return;
        };
        let Some(port_out) = self.ports.get(oif as usize) else {
            self.stats.counters.drop(DropReason::NoRoute);
            self.pool.push(d);
            return;
        };
        if direct.is_none() {
            // Routed: find the next hop's MAC.
            let cached = self.nh_cache.get(&(oif, next_hop)).copied();
            let resolved = match cached {
                Some(m) => Resolve::Known(m),
                None => self.neigh.resolve(oif, next_hop, now),
            };
            let mac = match resolved {
                Resolve::Known(m) => {
                    if cached.is_none() {
                        self.nh_cache.insert((oif, next_hop), m);
                    }
                    m
                }
                Resolve::Refresh(m) => {
                    self.want_arp.push((oif, next_hop));
                    m
                }
                r @ (Resolve::Request | Resolve::Pending) => {
                    if r == Resolve::Request {
                        self.want_arp.push((oif, next_hop));
                    }
                    data.cursor().set_pos(out_len);
                    // Hold the frame until the reply comes (or drop it).
                    if self.held.len() < HOLD_MAX {
                        self.held
                            .push((d, oif, next_hop, out_len, now.saturating_add(HOLD_TIME)));
                    } else {
                        self.stats.counters.drop(DropReason::NoNeighbour);
                        self.pool.push(d);
                    }
                    return;
                }
            };
            let buf = data.contents_mut();
            buf[0..6].copy_from_slice(&mac);
            buf[6..12].copy_from_slice(&port_out.mac);
        }
        data.cursor().set_pos(out_len);
        self.ports[oif as usize].pending.push(d);
    }

    /// ARP on port `p`: learn the sender; answer requests for addresses
    /// the gateway owns on this interface's network. Returns the reply's
    /// length (written in place) if there is one.
    fn arp(
        &self,
        p: usize,
        buf: &mut [u8],
        len: usize,
        now: crate::conntrack::Time,
    ) -> Option<usize> {
        let port = &self.ports[p];
        let a = neigh::parse_arp(&buf[..len])?;
        self.neigh.learn(port.ifid, a.spa, a.sha, now);
        let iface = self.engine.interface(port.ifid)?;
        let ours = a.tpa == iface.addr.addr
            || (self.engine.is_local(a.tpa) && iface.addr.network().contains(a.tpa));
        if !neigh::is_request(&a) || !ours {
            return None;
        }
        let reply = neigh::reply_to(&a, port.mac);
        let n = neigh::write_arp(buf, a.sha, port.mac, &reply)?;
        // Pad to the Ethernet minimum.
        let padded = 60.min(buf.len());
        buf[n..padded].fill(0);
        Some(padded)
    }

    /// A packet for the gateway itself: answer pings, count the rest.
    fn ping_me(
        &self,
        p: usize,
        buf: &mut [u8],
        len: usize,
    ) -> Option<(IfId, u32, usize, Option<()>)> {
        let port = &self.ports[p];
        let ok = packet::parse(&buf[..len], Link::Ethernet)
            .ok()
            .is_some_and(|parsed| packet::echo_reply_in_place(buf, &parsed));
        if !ok {
            self.stats.counters.drop(DropReason::LocalUndeliverable);
            return None;
        }
        // Back to the sender's MAC, from ours.
        let (dst, src) = (buf[6..12].to_vec(), port.mac);
        buf[0..6].copy_from_slice(&dst);
        buf[6..12].copy_from_slice(&src);
        Some((port.ifid, 0, len, Some(())))
    }

    /// Sends queued ARP requests, then puts pending frames on the TX ring
    /// and kicks the kernel as needed.
    fn flush(&mut self, p: usize, cqbuf: &mut [FrameDesc]) -> std::io::Result<()> {
        if p == 0 {
            for (oif, target) in std::mem::take(&mut self.want_arp) {
                let Some(mut d) = self.pool.pop() else { break };
                let Some(port) = self.ports.get(oif as usize) else {
                    self.pool.push(d);
                    continue;
                };
                let req = neigh::request_for(target, port.mac, port.addr);
                // SAFETY: `d` came from the pool: a frame of this UMEM owned by us.
                let mut data = unsafe { self.umem.data_mut(&mut d) };
                let mut cur = data.cursor();
                let cap = cur.buf_len();
                cur.set_pos(cap);
                let buf = data.contents_mut();
                match neigh::write_arp(buf, [0xff; 6], port.mac, &req) {
                    Some(n) => {
                        buf[n..60].fill(0);
                        data.cursor().set_pos(60);
                        self.ports[oif as usize].pending.push(d);
                    }
                    None => {
                        self.pool.push(d);
                    }
                }
            }
        }
        let c = &self.stats.counters;
        let port = &mut self.ports[p];
        if !port.pending.is_empty() {
            // SAFETY: pending frames are ours (from RX or the pool) and are
            // handed to the kernel exactly once here.
            let n = unsafe { port.tx.produce(&port.pending) };
            for d in &port.pending[..n] {
                Counters::bump(&c.tx_packets);
                Counters::add(&c.tx_bytes, d.lengths().data() as u64);
            }
            port.in_tx += n;
            for d in &port.pending[n..] {
                c.drop(DropReason::TxFull);
                self.pool.push(*d);
            }
            port.pending.clear();
        }
        // Copy mode sends at most KICK_BATCH frames per kick: kick once per
        // batch outstanding, reaping completions in between.
        let mut kicks = port.in_tx.div_ceil(KICK_BATCH).min(16);
        while kicks > 0 && port.in_tx > 0 && port.tx.needs_wakeup() {
            port.tx.wakeup()?;
            // SAFETY: as in `reap`.
            let n = unsafe { port.cq.consume(cqbuf) };
            self.pool.extend_from_slice(&cqbuf[..n]);
            port.in_tx -= n;
            kicks -= 1;
        }
        Ok(())
    }

    /// Sends held frames whose next hop is now known; drops (and counts)
    /// those that waited too long.
    fn release_held(&mut self, now: crate::conntrack::Time) {
        let mut i = 0;
        while i < self.held.len() {
            let (mut d, oif, hop, len, deadline) = self.held[i];
            let mac = match self.neigh.resolve(oif, hop, now) {
                Resolve::Known(m) | Resolve::Refresh(m) => Some(m),
                Resolve::Request => {
                    self.want_arp.push((oif, hop));
                    None
                }
                Resolve::Pending => None,
            };
            match mac {
                Some(mac) => {
                    self.held.swap_remove(i);
                    let src = self.ports[oif as usize].mac;
                    // SAFETY: a held frame is ours (taken off an RX ring).
                    let mut data = unsafe { self.umem.data_mut(&mut d) };
                    let buf = data.contents_mut();
                    buf[0..6].copy_from_slice(&mac);
                    buf[6..12].copy_from_slice(&src);
                    data.cursor().set_pos(len);
                    self.ports[oif as usize].pending.push(d);
                }
                None if now >= deadline => {
                    self.held.swap_remove(i);
                    self.stats.counters.drop(DropReason::NoNeighbour);
                    self.pool.push(d);
                }
                None => i += 1,
            }
        }
    }

    /// Once a second: kernel ring statistics into the worker's counters.
    fn housekeeping(&mut self) {
        self.nh_cache.clear();
        let (mut full, mut empty, mut dropped) = (0, 0, 0);
        for port in &self.ports {
            if let Ok(s) = port.rx.fd().xdp_statistics() {
                full += s.rx_ring_full();
                empty += s.rx_fill_ring_empty_descs();
                dropped += s.rx_dropped();
            }
        }
        self.stats.set_ring_stats(full, empty, dropped);
        self.stats
            .set_frames(self.pool.len() as u64, self.total as u64);
    }

    /// Waits up to `ms` for a frame on any port.
    fn sleep(&mut self, ms: i32) {
        let mut fds: Vec<libc::pollfd> = self
            .ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }
}
