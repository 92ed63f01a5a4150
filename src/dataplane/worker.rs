//! The one worker loop, generic over the [`Device`] it drives and the
//! [`Clock`] it reads: receive a batch per port, run the engine on each
//! frame, carry out the verdict, transmit per port, and sleep only when
//! there is nothing to do.
//!
//! Verdicts on an Ethernet device (AF_XDP): `Forward` and `Reply` go out
//! of the port of `oif` to the next hop's MAC; `Pass` is ARP (learned
//! from; requests for the gateway's addresses answered in place); `Local`
//! is answered if it is a ping, else dropped as `local_undeliverable`.
//! On an IP device (TUN) every frame goes back out of the port it came in
//! on (the kernel routes it); `Local` is handed back only if the host has
//! its destination address.
//!
//! Next hops: a frame whose next hop's MAC is unknown is held (at most
//! [`HOLD_MAX`] per worker, for [`HOLD_TIME`]) while an ARP request goes
//! out; the reply releases it, and a frame still held at its deadline is
//! dropped as `no_neighbour`.
//!
//! Fragments: a non-first fragment that arrives before its first fragment
//! ([`Verdict::HoldFragment`]) is held unchanged, at most
//! [`FRAG_HOLD_MAX`] per worker for [`FRAG_HOLD_TIME`]; each round, held
//! fragments whose first fragment has been translated (by any worker) go
//! through the engine again and out. One that finds the hold full is
//! dropped as `frag_hold_full`, one whose first never comes as
//! `frag_timeout`.
//!
//! Wake-up policy: a port's transmit side is kicked only when the device
//! says it needs it, once per [`KICK_BATCH`] frames in flight (at most 16
//! times a round), reaping completions in between; the worker sleeps in
//! [`Device::wait`] only after a round without work and with nothing in
//! flight, for its idle wait, or 1 ms while frames are held.
//!
//! Receive coalescing (`with_coalesce`, `afxdp.coalesce_us`): after a
//! round that took less than a full batch off the rings and left nothing
//! in flight, the worker sleeps for the coalescing time before its next
//! round, as a NIC's interrupt moderation does, so that at moderate rates
//! one wake-up and one transmit kick serve several frames instead of one.
//! A frame that arrives at an idle worker is still handled at once (the
//! worker sleeps in `Device::wait`, woken by the frame); at full speed
//! every round takes a full batch and the worker never sleeps. A frame
//! waits at most the coalescing time (plus 1 µs of timer slack, set for
//! the worker's thread) longer than without it.

use super::WorkerStats;
use super::device::{Clock, Device};
use super::neigh::{Neighbours, Resolve};
use crate::conntrack::Time;
use crate::engine::{Counters, DropReason, Engine, FragKey, Verdict};
use crate::nat::IfId;
use crate::packet::{self, Link, arp};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Frames a worker holds while their next hop is being resolved.
pub const HOLD_MAX: usize = 256;
/// How long a held frame waits for its ARP reply.
pub const HOLD_TIME: Time = Time::from_millis(1000);
/// Out-of-order fragments a worker holds for their first fragment.
pub const FRAG_HOLD_MAX: usize = 64;
/// How long a held fragment waits for its first fragment.
pub const FRAG_HOLD_TIME: Time = Time::from_millis(2000);
/// Frames per kick in AF_XDP copy mode (the kernel's TX batch).
pub const KICK_BATCH: usize = 32;
/// Kicks per port per round at most.
const MAX_KICKS: usize = 16;
/// Sleep while frames are held (their replies are due soon).
const HELD_WAIT: Duration = Duration::from_millis(1);
/// A draining worker stops after this long without a frame.
pub const DRAIN_QUIET: Duration = Duration::from_millis(1);
/// A draining worker stops after this long whatever is left.
pub const DRAIN_MAX: Duration = Duration::from_millis(200);
/// How often the neighbour cache is cleared and device stats are read.
const HOUSEKEEPING: Time = Time::from_secs(1);

/// A frame waiting for its next hop's MAC.
#[derive(Debug, Clone, Copy)]
struct Held<F> {
    frame: F,
    oif: IfId,
    hop: u32,
    deadline: Time,
}

/// A non-first fragment waiting for its first fragment.
#[derive(Debug, Clone, Copy)]
struct HeldFrag<F> {
    frame: F,
    port: usize,
    /// The interface it is run again as: its port's, or a tunnel's for a
    /// fragment that came decapsulated.
    iif: IfId,
    key: FragKey,
    deadline: Time,
}

/// One worker: a device, the engine, and what the loop keeps between
/// rounds. Allocates only when it is built.
pub struct Worker<D: Device, C: Clock> {
    dev: D,
    clock: C,
    engine: Arc<Engine>,
    neigh: Arc<Neighbours>,
    stats: Arc<WorkerStats>,
    /// Receive buffer: one batch of handles.
    rx: Vec<D::Frame>,
    /// Frames to transmit at the end of this round, per port.
    pending: Vec<Vec<D::Frame>>,
    /// ARP requests to send this round: (interface, target).
    want_arp: Vec<(IfId, u32)>,
    /// This worker's copy of fresh neighbour entries, so the shared table
    /// is not locked per packet; cleared every second, which keeps the
    /// shared table's refresh and expiry in charge.
    nh_cache: ahash::AHashMap<(IfId, u32), [u8; 6]>,
    held: Vec<Held<D::Frame>>,
    /// Fragments ahead of their first fragment.
    frags: Vec<HeldFrag<D::Frame>>,
    /// IP devices: addresses the host has (`Local` packets for them go
    /// back to the kernel; others are dropped).
    host_addrs: Arc<[u32]>,
    idle_wait: Duration,
    /// Receive coalescing time (zero: off).
    coalesce: Duration,
    /// Frames the last round took off the receive rings.
    rx_last: usize,
    last_housekeeping: Time,
    /// Give the CPU up from the second round in a row that does not sleep (see
    /// [`set_yield_rounds`](Self::set_yield_rounds)).
    yield_rounds: bool,
}

impl<D: Device, C: Clock> Worker<D, C> {
    /// A worker that receives up to `batch` frames per port and round.
    pub fn new(
        dev: D,
        clock: C,
        engine: Arc<Engine>,
        neigh: Arc<Neighbours>,
        stats: Arc<WorkerStats>,
        batch: usize,
    ) -> Self {
        let batch = batch.max(1);
        let ports = dev.ports();
        let now = clock.now();
        Worker {
            rx: vec![D::Frame::default(); batch],
            pending: (0..ports).map(|_| Vec::with_capacity(batch * 2)).collect(),
            dev,
            clock,
            engine,
            neigh,
            stats,
            want_arp: Vec::with_capacity(batch),
            nh_cache: ahash::AHashMap::new(),
            held: Vec::with_capacity(HOLD_MAX),
            frags: Vec::with_capacity(FRAG_HOLD_MAX),
            host_addrs: Arc::from(Vec::new()),
            idle_wait: Duration::from_millis(10),
            coalesce: Duration::ZERO,
            rx_last: 0,
            last_housekeeping: now,
            yield_rounds: false,
        }
    }

    /// For a worker under `SCHED_FIFO` (`afxdp.rt_priority`): at full
    /// load it never sleeps, and a FIFO thread keeps its CPU until it
    /// blocks or yields (sched(7)), so another real-time thread at its priority on that CPU
    /// (a second worker, or the old process's worker draining in a
    /// handover) would never run. Yielding after the second and every
    /// further round in a row that does not sleep lets them take turns;
    /// with no one else waiting it returns at once.
    pub fn set_yield_rounds(&mut self, on: bool) {
        self.yield_rounds = on;
    }

    /// Sets the host's addresses (IP devices; see [`Worker`]).
    pub fn with_host_addrs(mut self, a: Arc<[u32]>) -> Self {
        self.host_addrs = a;
        self
    }

    /// Sets how long an idle worker sleeps before it looks at its stop flag.
    pub fn with_idle_wait(mut self, d: Duration) -> Self {
        self.idle_wait = d;
        self
    }

    /// Sets the receive coalescing time (see the module docs; zero = off).
    pub fn with_coalesce(mut self, d: Duration) -> Self {
        self.coalesce = d;
        self
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Frames held for their next hop.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Fragments held for their first fragment.
    pub fn held_fragments(&self) -> usize {
        self.frags.len()
    }

    /// Runs rounds until `stop` is set, or until `drain` is set and the
    /// worker has drained (see [`drain_out`](Self::drain_out)).
    pub fn run(&mut self, stop: &AtomicBool, drain: &AtomicBool) -> Result<(), String> {
        if !self.coalesce.is_zero() {
            // Coalescing sleeps are short: 1 µs of timer slack instead of
            // the default 50 µs, for this thread only.
            if let Err(e) = nix::sys::prctl::set_timerslack(1000) {
                log::warn!(
                    "worker: timer slack not set ({e}): coalescing sleeps may last up to 50 us longer"
                );
            }
        }
        // Rounds in a row that did not sleep.
        let mut busy = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if drain.load(Ordering::Relaxed) {
                return self.drain_out();
            }
            let work = self.poll()?;
            let in_flight = (0..self.dev.ports()).any(|p| self.dev.tx_in_flight(p) > 0);
            busy = if work > 0 || in_flight {
                busy.saturating_add(1)
            } else {
                0
            };
            // Not after a wake-up's first round: at moderate rates the
            // next one finds nothing and the worker sleeps anyway.
            if self.yield_rounds && busy >= 2 {
                std::thread::yield_now();
            }
            if in_flight {
                continue;
            }
            let holding = !(self.held.is_empty() && self.frags.is_empty());
            if work == 0 {
                self.dev
                    .wait(if holding { HELD_WAIT } else { self.idle_wait });
            } else if !self.coalesce.is_zero() && !holding && self.rx_last < self.rx.len() {
                Counters::bump(&self.stats.counters.coalesce_sleeps);
                std::thread::sleep(self.coalesce);
            }
        }
        Ok(())
    }

    /// The last rounds of a worker whose sockets no longer get frames (a
    /// handover's cut: the XDP program parks new frames from now on):
    /// handles what is still on the receive rings, sends it, and waits for
    /// every transmission to complete, so nothing received is lost. Ends
    /// after [`DRAIN_QUIET`] without a frame and with nothing in flight, or
    /// after [`DRAIN_MAX`] whatever is left (counted as it is dropped).
    pub fn drain_out(&mut self) -> Result<(), String> {
        let start = std::time::Instant::now();
        let mut quiet = std::time::Instant::now();
        loop {
            let work = self.poll()?;
            let in_flight = (0..self.dev.ports()).any(|p| self.dev.tx_in_flight(p) > 0);
            if work > 0 || in_flight {
                quiet = std::time::Instant::now();
            }
            if quiet.elapsed() >= DRAIN_QUIET || start.elapsed() >= DRAIN_MAX {
                // Held frames wait for ARP replies that now park for the
                // next process: counted as they are dropped.
                self.drop_held();
                self.drop_held_fragments();
                return Ok(());
            }
            if work == 0 && !in_flight {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Handles a frame that did not come off `port`'s receive ring (the
    /// XDP program parked it while no natgw read the queue) as if it had:
    /// copies `bytes` into a free frame first. Sends what is pending and
    /// reaps completions when no frame is free; false (counted as
    /// `parked_no_frame`) if there is still none.
    pub fn inject(&mut self, port: usize, bytes: &[u8]) -> Result<bool, String> {
        let f = match self.dev.alloc() {
            Some(f) => Some(f),
            None => {
                self.flush_all()?;
                for p in 0..self.dev.ports() {
                    self.dev.complete(p);
                }
                self.dev.alloc()
            }
        };
        let Some(mut f) = f else {
            self.stats.counters.drop(DropReason::ParkedNoFrame);
            return Ok(false);
        };
        let n = {
            let mut buf = self.dev.buf_mut(&mut f);
            let buf = buf.as_mut();
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            n
        };
        self.dev.set_len(&mut f, n);
        Counters::bump(&self.stats.counters.parked);
        let now = self.clock.now();
        self.handle(port, f, now);
        if self.pending.iter().any(|q| q.len() >= self.rx.len()) {
            self.flush_all()?;
        }
        Ok(true)
    }

    /// Sends ARP requests and every port's pending frames now.
    pub fn flush_all(&mut self) -> Result<(), String> {
        if !self.frags.is_empty() {
            self.release_fragments(self.clock.now());
        }
        if !self.held.is_empty() {
            self.release_held(self.clock.now());
        }
        self.send_arp_requests();
        for p in 0..self.dev.ports() {
            self.flush(p)?;
        }
        Ok(())
    }

    /// One round: reap and refill, receive and handle a batch per port,
    /// release held frames, send ARP requests, transmit per port.
    /// Returns the work done (frames received and completed).
    pub fn poll(&mut self) -> Result<usize, String> {
        let ports = self.dev.ports();
        let mut work = 0;
        self.rx_last = 0;
        for p in 0..ports {
            work += self.dev.complete(p);
            self.dev.refill(p);
        }
        for p in 0..ports {
            let n = self
                .dev
                .recv(p, &mut self.rx)
                .map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                continue;
            }
            work += n;
            self.rx_last = self.rx_last.max(n);
            let t0 = self.clock.now();
            for i in 0..n {
                let f = self.rx[i];
                self.handle(p, f, t0);
            }
            let t1 = self.clock.now();
            self.stats.record_batch(n, t1.saturating_sub(t0).0);
        }
        if !self.frags.is_empty() {
            self.release_fragments(self.clock.now());
        }
        if !self.held.is_empty() {
            self.release_held(self.clock.now());
        }
        self.send_arp_requests();
        for p in 0..ports {
            self.flush(p)?;
        }
        self.dev.check_frames(self.held.len() + self.frags.len());
        let now = self.clock.now();
        if now.saturating_sub(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            self.nh_cache.clear();
            self.dev.housekeeping(&self.stats);
        }
        Ok(work)
    }

    /// One received frame: run the engine, then queue, answer, hold or
    /// free it.
    fn handle(&mut self, p: usize, f: D::Frame, now: Time) {
        let c = &self.stats.counters;
        let len = self.dev.len(&f);
        Counters::bump(&c.rx_packets);
        Counters::add(&c.rx_bytes, len as u64);
        self.dispatch(p, f, now, None);
    }

    /// Runs the engine on a frame received on port `p` and carries out
    /// the verdict. `again`: a held fragment run again (never held twice),
    /// with the interface it is run as.
    fn dispatch(&mut self, p: usize, mut f: D::Frame, now: Time, again: Option<IfId>) {
        let c = &self.stats.counters;
        let len = self.dev.len(&f);
        let iif = again.unwrap_or_else(|| self.dev.ifid(p));
        let link = self.dev.link();
        let mac = self.dev.mac(p);
        let mut b = self.dev.buf_mut(&mut f);
        let buf = b.as_mut();
        let len = len.min(buf.len());
        let v = self.engine.process(buf, len, link, iif, now, c);
        if let Verdict::HoldFragment { key, again_as } = v {
            drop(b);
            // `buf_mut` left the length unspecified: the frame is kept as
            // it came (or as decapsulated), to be run again.
            self.dev.set_len(&mut f, again_as.map_or(len, |(_, l)| l));
            if again.is_some() {
                c.drop(DropReason::FragTimeout);
                self.dev.free(f);
            } else if self.frags.len() < FRAG_HOLD_MAX {
                self.frags.push(HeldFrag {
                    frame: f,
                    port: p,
                    iif: again_as.map_or(iif, |(i, _)| i),
                    key,
                    deadline: now.saturating_add(FRAG_HOLD_TIME),
                });
            } else {
                c.drop(DropReason::FragHoldFull);
                self.dev.free(f);
            }
            return;
        }
        if link == Link::Ip {
            let out = match v {
                Verdict::Forward { .. } | Verdict::Pass => Some(len),
                Verdict::Reply { len, .. } => Some(len),
                Verdict::Local if self.host_addrs.contains(&ipv4_dst(buf)) => Some(len),
                Verdict::Local => {
                    c.drop(DropReason::LocalUndeliverable);
                    None
                }
                Verdict::Drop(_) | Verdict::HoldFragment { .. } => None,
            };
            drop(b);
            match out {
                Some(l) => {
                    self.dev.set_len(&mut f, l);
                    self.pending[p].push(f);
                }
                None => self.dev.free(f),
            }
            return;
        }
        // Ethernet: (oif, next hop, length, routed).
        let out = match v {
            Verdict::Forward { oif, next_hop } => Some((oif, next_hop, len, true)),
            Verdict::Reply { oif, next_hop, len } => Some((oif, next_hop, len, true)),
            Verdict::Pass => answer_arp(&self.engine, &self.neigh, iif, mac, buf, len, now)
                .map(|l| (iif, 0, l, false)),
            Verdict::Local => {
                if ping_me(buf, len, mac) {
                    Some((iif, 0, len, false))
                } else {
                    c.drop(DropReason::LocalUndeliverable);
                    None
                }
            }
            Verdict::Drop(_) | Verdict::HoldFragment { .. } => None,
        };
        drop(b);
        let Some((oif, hop, out_len, routed)) = out else {
            self.dev.free(f);
            return;
        };
        let Some(q) = self.dev.port_of(oif) else {
            c.drop(DropReason::NoRoute);
            self.dev.free(f);
            return;
        };
        self.dev.set_len(&mut f, out_len);
        if routed {
            let cached = self.nh_cache.get(&(oif, hop)).copied();
            let resolved = match cached {
                Some(m) => Resolve::Known(m),
                None => self.neigh.resolve(oif, hop, now),
            };
            let dst = match resolved {
                Resolve::Known(m) => {
                    if cached.is_none() {
                        self.nh_cache.insert((oif, hop), m);
                    }
                    m
                }
                Resolve::Refresh(m) => {
                    self.want_arp.push((oif, hop));
                    m
                }
                r @ (Resolve::Request | Resolve::Pending) => {
                    if r == Resolve::Request {
                        self.want_arp.push((oif, hop));
                    }
                    // Hold the frame until the reply comes (or drop it).
                    if self.held.len() < HOLD_MAX {
                        self.held.push(Held {
                            frame: f,
                            oif,
                            hop,
                            deadline: now.saturating_add(HOLD_TIME),
                        });
                    } else {
                        c.drop(DropReason::NoNeighbour);
                        self.dev.free(f);
                    }
                    return;
                }
            };
            let src = self.dev.mac(q);
            set_macs(self.dev.data_mut(&mut f).as_mut(), dst, src);
        }
        self.pending[q].push(f);
    }

    /// Queues held frames whose next hop is now known; drops (and counts)
    /// those that waited too long.
    fn release_held(&mut self, now: Time) {
        let mut i = 0;
        while i < self.held.len() {
            let h = self.held[i];
            let mac = match self.neigh.resolve(h.oif, h.hop, now) {
                Resolve::Known(m) | Resolve::Refresh(m) => Some(m),
                Resolve::Request => {
                    self.want_arp.push((h.oif, h.hop));
                    None
                }
                Resolve::Pending => None,
            };
            match mac {
                Some(mac) => {
                    self.held.swap_remove(i);
                    let mut f = h.frame;
                    match self.dev.port_of(h.oif) {
                        Some(q) => {
                            let src = self.dev.mac(q);
                            set_macs(self.dev.data_mut(&mut f).as_mut(), mac, src);
                            self.pending[q].push(f);
                        }
                        None => {
                            self.stats.counters.drop(DropReason::NoRoute);
                            self.dev.free(f);
                        }
                    }
                }
                None if now >= h.deadline => {
                    self.held.swap_remove(i);
                    self.stats.counters.drop(DropReason::NoNeighbour);
                    self.dev.free(h.frame);
                }
                None => i += 1,
            }
        }
    }

    /// Runs held fragments whose first fragment has been translated
    /// through the engine again; drops (and counts) those that waited too
    /// long.
    fn release_fragments(&mut self, now: Time) {
        let mut i = 0;
        while i < self.frags.len() {
            let h = self.frags[i];
            if self.engine.fragment_ready(h.key, now) {
                self.frags.swap_remove(i);
                self.dispatch(h.port, h.frame, now, Some(h.iif));
            } else if now >= h.deadline {
                self.frags.swap_remove(i);
                self.stats.counters.drop(DropReason::FragTimeout);
                self.dev.free(h.frame);
            } else {
                i += 1;
            }
        }
    }

    /// Gives up on every held fragment (the worker is ending), counted as
    /// `frag_timeout`. Returns how many.
    pub fn drop_held_fragments(&mut self) -> usize {
        let n = self.frags.len();
        for h in self.frags.drain(..) {
            self.stats.counters.drop(DropReason::FragTimeout);
            self.dev.free(h.frame);
        }
        n
    }

    /// Gives up on every held frame (the worker is ending): each is
    /// dropped and counted as `no_neighbour`. Returns how many.
    pub fn drop_held(&mut self) -> usize {
        let n = self.held.len();
        for h in self.held.drain(..) {
            self.stats.counters.drop(DropReason::NoNeighbour);
            self.dev.free(h.frame);
        }
        n
    }

    /// Builds the ARP requests asked for this round into free frames.
    fn send_arp_requests(&mut self) {
        for i in 0..self.want_arp.len() {
            let (oif, target) = self.want_arp[i];
            let Some(q) = self.dev.port_of(oif) else {
                continue;
            };
            let Some(mut f) = self.dev.alloc() else {
                break;
            };
            let (mac, addr) = (self.dev.mac(q), self.dev.addr(q));
            let req = arp::Arp::request(target, mac, addr);
            let n = arp::write(self.dev.buf_mut(&mut f).as_mut(), [0xff; 6], mac, &req);
            match n {
                Some(n) => {
                    self.dev.set_len(&mut f, n);
                    self.pending[q].push(f);
                }
                None => self.dev.free(f),
            }
        }
        self.want_arp.clear();
    }

    /// Transmits port `p`'s pending frames (counting what the device
    /// refuses as `tx_full`), then kicks it as the wake-up policy says.
    fn flush(&mut self, p: usize) -> Result<(), String> {
        let c = &self.stats.counters;
        let pending = &mut self.pending[p];
        if !pending.is_empty() {
            let n = self
                .dev
                .transmit(p, pending)
                .map_err(|e| format!("transmit: {e}"))?;
            for f in &pending[..n] {
                Counters::bump(&c.tx_packets);
                Counters::add(&c.tx_bytes, self.dev.len(f) as u64);
            }
            for &f in &pending[n..] {
                c.drop(DropReason::TxFull);
                self.dev.free(f);
            }
            pending.clear();
        }
        // Copy mode sends at most KICK_BATCH frames per kick: kick once per
        // batch outstanding, reaping completions in between.
        let mut kicks = self.dev.tx_in_flight(p).div_ceil(KICK_BATCH).min(MAX_KICKS);
        while kicks > 0 && self.dev.tx_in_flight(p) > 0 && self.dev.needs_kick(p) {
            self.dev.kick(p).map_err(|e| format!("transmit: {e}"))?;
            self.dev.complete(p);
            kicks -= 1;
        }
        Ok(())
    }
}

/// Writes the Ethernet destination and source.
fn set_macs(buf: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    if let Some(h) = buf.get_mut(..12) {
        h[0..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
    }
}

/// ARP received on interface `ifid` (MAC `mac`): learn the sender; answer
/// requests for addresses the gateway owns on this interface's network.
/// Returns the reply's length (written in place) if there is one.
fn answer_arp(
    engine: &Engine,
    neigh: &Neighbours,
    ifid: IfId,
    mac: [u8; 6],
    buf: &mut [u8],
    len: usize,
    now: Time,
) -> Option<usize> {
    let a = arp::parse(buf.get(..len)?)?;
    neigh.learn(ifid, a.spa, a.sha, now);
    let iface = engine.interface(ifid)?;
    // An HA standby answers for its own address only: the shared (virtual)
    // addresses are the active node's.
    let ours = a.tpa == iface.addr.addr
        || (!engine.standby() && engine.is_local(a.tpa) && iface.addr.network().contains(a.tpa));
    if !a.is_request() || !ours {
        return None;
    }
    arp::write(buf, a.sha, mac, &a.reply(mac))
}

/// A packet for the gateway itself: turns a ping into its reply, back to
/// the sender's MAC from `mac`. False for anything else.
fn ping_me(buf: &mut [u8], len: usize, mac: [u8; 6]) -> bool {
    let Some(frame) = buf.get(..len) else {
        return false;
    };
    let ok = packet::parse(frame, Link::Ethernet)
        .ok()
        .is_some_and(|parsed| packet::echo_reply_in_place(buf, &parsed));
    if ok {
        buf.copy_within(6..12, 0);
        buf[6..12].copy_from_slice(&mac);
    }
    ok
}

/// Destination of the IPv4 packet at the start of `b` (0 if short).
fn ipv4_dst(b: &[u8]) -> u32 {
    match b.get(16..20) {
        Some(d) => u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::mem::{Faults, MemDevice, MemPortSpec, VirtualClock};
    use crate::engine::{EngineConfig, Interface, Role, Route};
    use crate::nat::{Action, AddrPool, IfAddr, Match, Prefix, Rule, Ruleset, SnatSpec};
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
    use std::net::Ipv4Addr;

    const GW_LAN: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const GW_WAN: [u8; 6] = [2, 0, 0, 0, 1, 1];
    const HOST: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const ROUTER: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    /// lan0 (port 0, 10.0.0.1/24) and wan0 (port 1, 203.0.113.1/24), a
    /// default route via 203.0.113.254, masquerade of 10.0.0.0/24 on wan0.
    fn engine() -> Arc<Engine> {
        engine_with(vec![])
    }

    fn engine_with(tunnels: Vec<crate::engine::Tunnel>) -> Arc<Engine> {
        let iface = |name: &str, role, addr: &str| Interface {
            name: name.into(),
            role,
            addr: IfAddr {
                addr: ip(addr),
                len: 24,
            },
            extra: vec![],
            mac: None,
        };
        let cfg = EngineConfig {
            interfaces: vec![
                iface("lan0", Role::Inside, "10.0.0.1"),
                iface("wan0", Role::Outside, "203.0.113.1"),
            ],
            routes: vec![Route {
                prefix: Prefix::new(Ipv4Addr::UNSPECIFIED, 0),
                oif: 1,
                via: Some(ip("203.0.113.254")),
            }],
            seed: 7,
            tunnels,
            ..EngineConfig::default()
        };
        let masq = Rule {
            name: None,
            m: Match {
                oif: Some(1),
                src: Some(Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 24)),
                ..Match::default()
            },
            action: Action::Masquerade(SnatSpec {
                pool: AddrPool::default(),
                ports: None,
                persistent: false,
                eim: false,
                eif: false,
            }),
            line: 1,
        };
        let rs = Ruleset { rules: vec![masq] };
        Arc::new(Engine::new(cfg, rs, Default::default()))
    }

    struct Rig {
        w: Worker<MemDevice, VirtualClock>,
        clock: VirtualClock,
        neigh: Arc<Neighbours>,
    }

    fn rig_with(frames: usize, batch: usize) -> Rig {
        rig_of(frames, batch, engine())
    }

    fn rig_of(frames: usize, batch: usize, engine: Arc<Engine>) -> Rig {
        let ports = [
            MemPortSpec {
                ifid: 0,
                mac: GW_LAN,
                addr: ip("10.0.0.1"),
            },
            MemPortSpec {
                ifid: 1,
                mac: GW_WAN,
                addr: ip("203.0.113.1"),
            },
        ];
        let dev = MemDevice::new(Link::Ethernet, &ports, frames, 2048);
        let clock = VirtualClock::new(Time::from_secs(1000));
        let neigh = Arc::new(Neighbours::default());
        let stats = Arc::new(WorkerStats::new("mem".into()));
        let w = Worker::new(dev, clock.clone(), engine, neigh.clone(), stats, batch);
        Rig { w, clock, neigh }
    }

    fn rig() -> Rig {
        rig_with(64, 16)
    }

    impl Rig {
        fn now(&self) -> Time {
            self.clock.now()
        }
        fn dev(&mut self) -> &mut MemDevice {
            self.w.device_mut()
        }
        fn poll(&mut self) -> usize {
            self.w.poll().unwrap()
        }
        fn counters(&self) -> crate::engine::CounterSnapshot {
            self.w.stats().counters.snapshot()
        }
        fn drops(&self, r: DropReason) -> u64 {
            self.w.stats().counters.drops(r)
        }
        /// Completes what is in flight on `port` and takes it off the wire.
        fn sent(&mut self, port: usize) -> Vec<Vec<u8>> {
            self.dev().complete(port);
            self.dev().take_sent(port)
        }
        fn learn_router(&self) {
            self.neigh.learn(1, ip("203.0.113.254"), ROUTER, self.now());
        }
    }

    fn udp(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: &str,
        dst: &str,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(
                src.parse::<Ipv4Addr>().unwrap().octets(),
                dst.parse::<Ipv4Addr>().unwrap().octets(),
                64,
            )
            .udp(sport, dport)
            .write(&mut out, b"hello natgw")
            .unwrap();
        out
    }

    fn from_host(sport: u16) -> Vec<u8> {
        udp(HOST, GW_LAN, "10.0.0.2", "198.51.100.7", sport, 53)
    }

    /// (eth dst, eth src, ip src, ip dst, sport, dport) of a UDP frame
    /// whose IPv4 and UDP checksums etherparse recomputes and agrees with.
    fn checked_udp(f: &[u8]) -> ([u8; 6], [u8; 6], u32, u32, u16, u16) {
        let h = PacketHeaders::from_ethernet_slice(f).expect("parses");
        let eth = h
            .link
            .as_ref()
            .and_then(|l| l.clone().ethernet2())
            .expect("Ethernet II");
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4")
        };
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 checksum"
        );
        let Some(TransportHeader::Udp(u)) = &h.transport else {
            panic!("not UDP")
        };
        let payload = h.payload.slice();
        assert_eq!(
            u.checksum,
            u.calc_checksum_ipv4(ip, payload).unwrap(),
            "UDP checksum"
        );
        (
            eth.destination,
            eth.source,
            u32::from_be_bytes(ip.source),
            u32::from_be_bytes(ip.destination),
            u.source_port,
            u.destination_port,
        )
    }

    fn arp_frame(
        op_request: bool,
        sha: [u8; 6],
        spa: &str,
        tpa: &str,
        eth_dst: [u8; 6],
    ) -> Vec<u8> {
        let a = if op_request {
            arp::Arp::request(ip(tpa), sha, ip(spa))
        } else {
            arp::Arp::request(ip(spa), [0; 6], ip(tpa)).reply(sha)
        };
        let mut b = vec![0u8; 60];
        let n = arp::write(&mut b, eth_dst, sha, &a).unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn forwards_translated_frames_both_ways_with_valid_checksums() {
        let mut r = rig();
        r.learn_router();
        r.neigh.learn(0, ip("10.0.0.2"), HOST, r.now());
        let out_frame = from_host(5000);
        r.dev().inject(0, &out_frame);
        assert_eq!(r.poll(), 1);
        assert!(r.sent(0).is_empty());
        let sent = r.sent(1);
        assert_eq!(sent.len(), 1);
        let (dmac, smac, src, dst, sport, dport) = checked_udp(&sent[0]);
        assert_eq!((dmac, smac), (ROUTER, GW_WAN));
        assert_eq!(
            (src, dst, dport),
            (ip("203.0.113.1"), ip("198.51.100.7"), 53)
        );

        // The answer comes back to the masquerade address and port.
        let back = udp(ROUTER, GW_WAN, "198.51.100.7", "203.0.113.1", 53, sport);
        r.dev().inject(1, &back);
        r.poll();
        let sent = r.sent(0);
        assert_eq!(sent.len(), 1);
        let (dmac, smac, src, dst, sport, dport) = checked_udp(&sent[0]);
        assert_eq!((dmac, smac), (HOST, GW_LAN));
        assert_eq!(
            (src, dst, sport, dport),
            (ip("198.51.100.7"), ip("10.0.0.2"), 53, 5000)
        );

        let c = r.counters();
        assert_eq!((c.rx_packets, c.tx_packets), (2, 2));
        assert_eq!(c.rx_bytes, (out_frame.len() + back.len()) as u64);
        assert_eq!(c.tx_bytes, c.rx_bytes, "same sizes out as in");
        assert_eq!(r.dev().frames_out(), 0, "every frame back in the pool");
    }

    /// `f` (Ethernet + IPv4 + UDP, no options) cut into a first fragment
    /// of `at` bytes of IP payload (a multiple of 8) and the rest.
    fn split(f: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
        let (hdr, payload) = f.split_at(34);
        let part = |body: &[u8], off: usize, more: bool| {
            let mut v = hdr.to_vec();
            v.extend_from_slice(body);
            let total = (20 + body.len()) as u16;
            v[16..18].copy_from_slice(&total.to_be_bytes());
            let fo = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
            v[20..22].copy_from_slice(&fo.to_be_bytes());
            v[24..26].copy_from_slice(&[0, 0]);
            let c = crate::packet::checksum::checksum(&v[14..34]);
            v[24..26].copy_from_slice(&c.to_be_bytes());
            v
        };
        (
            part(&payload[..at], 0, true),
            part(&payload[at..], at, false),
        )
    }

    fn big_udp(sport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(HOST, GW_LAN)
            .ipv4([10, 0, 0, 2], [198, 51, 100, 7], 64)
            .udp(sport, 53)
            .write(&mut out, &[0x5a; 300])
            .unwrap();
        out
    }

    /// The last fragment first: it is held, then sent right after its first
    /// fragment with the same translation; the datagram reassembles with
    /// valid checksums.
    #[test]
    fn fragment_ahead_of_its_first_is_held_and_sent_after_it() {
        let mut r = rig();
        r.learn_router();
        let (first, last) = split(&big_udp(5000), 160);
        r.dev().inject(0, &last);
        r.poll();
        assert_eq!(r.w.held_fragments(), 1);
        assert!(r.sent(1).is_empty());
        r.dev().inject(0, &first);
        r.poll();
        assert_eq!(r.w.held_fragments(), 0);
        let sent = r.sent(1);
        assert_eq!(sent.len(), 2, "first, then the held last fragment");
        // Reassemble: the first's header, both payloads.
        let mut whole = sent[0][..34].to_vec();
        whole.extend_from_slice(&sent[0][34..]);
        whole.extend_from_slice(&sent[1][34..]);
        assert_eq!(&sent[1][26..34], &sent[0][26..34], "same addresses");
        let total = (whole.len() - 14) as u16;
        whole[16..18].copy_from_slice(&total.to_be_bytes());
        whole[20..22].copy_from_slice(&[0, 0]);
        whole[24..26].copy_from_slice(&[0, 0]);
        let c = crate::packet::checksum::checksum(&whole[14..34]);
        whole[24..26].copy_from_slice(&c.to_be_bytes());
        let (_, _, src, dst, sport, dport) = checked_udp(&whole);
        assert_eq!(
            (src, dst, dport),
            (ip("203.0.113.1"), ip("198.51.100.7"), 53)
        );
        assert_eq!(sport, 5000);
        let c = r.counters();
        assert_eq!(c.frags_translated, 1);
        assert_eq!(c.total_drops(), 0);
        assert_eq!(r.dev().frames_out(), 0);
    }

    /// The same through an IPIP tunnel (ends at 203.0.113.50): the last
    /// fragment of an inside datagram comes decapsulated ahead of its
    /// first, is held as the inner datagram, and leaves translated right
    /// after the first.
    #[test]
    fn tunneled_fragment_ahead_of_its_first_is_held_and_sent_after_it() {
        let tun = crate::engine::Tunnel {
            name: "tun1".into(),
            mode: crate::packet::tunnel::Mode::Ipip,
            local: ip("203.0.113.1"),
            remote: ip("203.0.113.50"),
            mtu: 1480,
            mtu_auto: false,
        };
        let mut r = rig_of(64, 16, engine_with(vec![tun]));
        r.learn_router();
        let ipip = |inner: &[u8]| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2(ROUTER, GW_WAN)
                .ipv4([203, 0, 113, 50], [203, 0, 113, 1], 64)
                .write(&mut out, etherparse::IpNumber(4), &inner[14..])
                .unwrap();
            out
        };
        let (first, last) = split(&big_udp(5000), 160);
        r.dev().inject(1, &ipip(&last));
        r.poll();
        assert_eq!(r.w.held_fragments(), 1);
        assert!(r.sent(1).is_empty());
        r.dev().inject(1, &ipip(&first));
        r.poll();
        assert_eq!(r.w.held_fragments(), 0);
        let sent = r.sent(1);
        assert_eq!(sent.len(), 2, "first, then the held last fragment");
        for f in &sent {
            assert_eq!(f[23], 17, "decapsulated: the inner UDP datagram");
            assert_eq!(&f[26..30], &[203, 0, 113, 1], "translated source");
            assert_eq!(&f[30..34], &[198, 51, 100, 7]);
        }
        assert_eq!(sent[1].len(), last.len(), "the held one, decapsulated");
        let c = r.counters();
        assert_eq!(c.frags_translated, 1);
        assert_eq!(c.total_drops(), 0, "{:?}", c.drops);
        assert_eq!(r.dev().frames_out(), 0);
    }

    /// A held fragment whose first never comes is dropped after
    /// FRAG_HOLD_TIME as frag_timeout; past FRAG_HOLD_MAX they are dropped
    /// at once as frag_hold_full; every frame goes back to the pool.
    #[test]
    fn held_fragments_are_bounded_in_number_and_time() {
        let mut r = rig_with(256, 128);
        r.learn_router();
        for i in 0..FRAG_HOLD_MAX + 3 {
            let (_, last) = split(&big_udp(6000 + i as u16), 160);
            r.dev().inject(0, &last);
        }
        r.poll();
        assert_eq!(r.w.held_fragments(), FRAG_HOLD_MAX);
        assert_eq!(r.drops(DropReason::FragHoldFull), 3);
        r.clock.advance(Duration::from_millis(1999));
        r.poll();
        assert_eq!(r.w.held_fragments(), FRAG_HOLD_MAX);
        r.clock.advance(Duration::from_millis(1));
        r.poll();
        assert_eq!(r.w.held_fragments(), 0);
        assert_eq!(r.drops(DropReason::FragTimeout), FRAG_HOLD_MAX as u64);
        assert!(r.sent(1).is_empty());
        assert_eq!(r.dev().frames_out(), 0);
    }

    #[test]
    fn unknown_next_hop_is_held_until_the_arp_reply() {
        let mut r = rig();
        r.dev().inject(0, &from_host(5000));
        r.poll();
        assert_eq!(r.w.held(), 1);
        let sent = r.sent(1);
        assert_eq!(sent.len(), 1, "one ARP request, no data yet");
        let req = arp::parse(&sent[0]).expect("an ARP request");
        assert!(req.is_request());
        assert_eq!(&sent[0][0..6], &[0xff; 6], "broadcast");
        assert_eq!(
            (req.sha, req.spa, req.tpa),
            (GW_WAN, ip("203.0.113.1"), ip("203.0.113.254"))
        );

        // A second frame for the same hop waits too, without another request.
        r.dev().inject(0, &from_host(5001));
        r.poll();
        assert_eq!(r.w.held(), 2);
        assert!(r.sent(1).is_empty());

        let reply = arp_frame(false, ROUTER, "203.0.113.254", "203.0.113.1", GW_WAN);
        r.dev().inject(1, &reply);
        r.poll();
        assert_eq!(r.w.held(), 0);
        let sent = r.sent(1);
        assert_eq!(sent.len(), 2, "both held frames released");
        for f in &sent {
            let (dmac, smac, src, ..) = checked_udp(f);
            assert_eq!((dmac, smac, src), (ROUTER, GW_WAN, ip("203.0.113.1")));
        }
        assert_eq!(r.drops(DropReason::NoNeighbour), 0);
        let c = r.counters();
        assert_eq!(
            (c.rx_packets, c.tx_packets),
            (3, 3),
            "2 frames + the request out"
        );
        assert_eq!(r.dev().frames_out(), 0);
    }

    #[test]
    fn held_frame_without_reply_expires_as_no_neighbour() {
        let mut r = rig();
        r.dev().inject(0, &from_host(5000));
        r.poll();
        assert_eq!(r.w.held(), 1);
        assert_eq!(r.sent(1).len(), 1, "the request");
        r.clock.advance(Duration::from_millis(999));
        r.poll();
        assert_eq!(
            (r.w.held(), r.drops(DropReason::NoNeighbour)),
            (1, 0),
            "not yet"
        );
        assert!(r.sent(1).is_empty(), "no second request within a second");
        r.clock.advance(Duration::from_millis(1));
        r.poll();
        assert_eq!((r.w.held(), r.drops(DropReason::NoNeighbour)), (0, 1));
        assert_eq!(r.sent(1).len(), 1, "asked again, a second after the first");
        assert_eq!(r.dev().frames_out(), 0, "the frame went back to the pool");
        assert_eq!(r.counters().tx_packets, 2, "only the requests left");
    }

    #[test]
    fn hold_queue_overflow_is_counted_as_no_neighbour() {
        let mut r = rig_with(HOLD_MAX + 64, 64);
        let n = HOLD_MAX + 10;
        for sport in 0..n as u16 {
            r.dev().inject(0, &from_host(1000 + sport));
            if sport % 64 == 63 {
                r.poll();
            }
        }
        r.poll();
        assert_eq!(r.w.held(), HOLD_MAX);
        assert_eq!(r.drops(DropReason::NoNeighbour), 10);
    }

    #[test]
    fn answers_arp_for_its_own_address_and_learns_the_asker() {
        let mut r = rig();
        let who_has = arp_frame(true, HOST, "10.0.0.2", "10.0.0.1", [0xff; 6]);
        r.dev().inject(0, &who_has);
        r.poll();
        let sent = r.sent(0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].len(), 60, "padded to the Ethernet minimum");
        let rep = arp::parse(&sent[0]).unwrap();
        assert!(!rep.is_request());
        assert_eq!(
            (rep.sha, rep.spa, rep.tha, rep.tpa),
            (GW_LAN, ip("10.0.0.1"), HOST, ip("10.0.0.2"))
        );
        assert_eq!((&sent[0][0..6], &sent[0][6..12]), (&HOST[..], &GW_LAN[..]));
        assert_eq!(
            r.neigh.lookup(0, ip("10.0.0.2"), r.now()).map(|e| e.0),
            Some(HOST)
        );
        // Not ours: learned from, not answered.
        let other = arp_frame(true, HOST, "10.0.0.2", "10.0.0.9", [0xff; 6]);
        r.dev().inject(0, &other);
        r.poll();
        assert!(r.sent(0).is_empty());
        assert_eq!(r.dev().frames_out(), 0);
    }

    #[test]
    fn tx_full_is_counted_and_frames_return_to_the_pool() {
        let mut r = rig();
        r.learn_router();
        r.dev().set_tx_capacity(1, 2);
        r.dev().set_stalled(1, true);
        for i in 0..5 {
            r.dev().inject(0, &from_host(6000 + i));
        }
        r.poll();
        assert_eq!(r.drops(DropReason::TxFull), 3);
        let c = r.counters();
        assert_eq!((c.rx_packets, c.tx_packets), (5, 2));
        assert_eq!(r.dev().frames_out(), 2, "two in flight");
        assert!(r.sent(1).is_empty());
        r.dev().set_stalled(1, false);
        r.poll();
        assert_eq!(r.sent(1).len(), 2);
        assert_eq!(r.dev().frames_out(), 0);
    }

    /// Runs `w`'s loop on another thread for 50 ms, then stops it.
    fn run_for_50ms(w: &mut Worker<MemDevice, VirtualClock>) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| w.run(&stop, &AtomicBool::new(false)));
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
    }

    /// A worker that yields after its busy rounds (real-time workers)
    /// still sends every frame.
    #[test]
    fn yielding_rounds_send_everything() {
        let mut r = rig();
        r.learn_router();
        r.neigh.learn(0, ip("10.0.0.2"), HOST, r.now());
        for sport in 0..60 {
            r.dev().inject(0, &from_host(6000 + sport));
        }
        let mut w = r.w;
        w.set_yield_rounds(true);
        run_for_50ms(&mut w);
        assert_eq!(w.stats().counters.snapshot().tx_packets, 60);
        assert_eq!(w.device_mut().take_sent(1).len(), 60);
    }

    /// Two real-time (SCHED_FIFO) workers pinned to one CPU, each with
    /// more frames waiting than it can send in the time given: both send
    /// some. Without the yield the first to run keeps the CPU until it
    /// blocks, which a worker with frames waiting never does, and the
    /// other sends nothing. Needs root (CAP_SYS_NICE) and two CPUs.
    #[test]
    fn two_real_time_workers_on_one_cpu_both_send() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !nix::unistd::geteuid().is_root() || cpus < 2 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root on two CPUs or more"
            );
            eprintln!("skipped: needs root and two CPUs");
            return;
        }
        const FRAMES: usize = 50_000;
        let mut ws: Vec<_> = (0..2)
            .map(|_| {
                let mut r = rig_with(FRAMES + 64, 16);
                r.learn_router();
                r.neigh.learn(0, ip("10.0.0.2"), HOST, r.now());
                for k in 0..FRAMES {
                    r.dev().inject(0, &from_host(1024 + (k % 60_000) as u16));
                }
                let mut w = r.w;
                w.set_yield_rounds(true);
                w
            })
            .collect();
        let (worker_cpu, main_cpu) = (cpus - 1, 0);
        let stop = AtomicBool::new(false);
        // Both are real-time before either runs (an ordinary thread would
        // not get onto a CPU where a real-time one is busy).
        let ready = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            // This thread must not share the workers' CPU: it stops them.
            crate::dataplane::sys::pin_to_cpu(main_cpu).expect("pin the test thread");
            for w in ws.iter_mut() {
                let (stop, ready) = (&stop, &ready);
                s.spawn(move || {
                    crate::dataplane::sys::pin_to_cpu(worker_cpu).expect("pin");
                    crate::dataplane::sys::set_realtime(10).expect("SCHED_FIFO as root");
                    ready.wait();
                    w.run(stop, &AtomicBool::new(false))
                });
            }
            std::thread::sleep(Duration::from_millis(15));
            stop.store(true, Ordering::Relaxed);
        });
        let sent: Vec<u64> = ws
            .iter()
            .map(|w| w.stats().counters.snapshot().tx_packets)
            .collect();
        assert!(
            sent.iter().all(|&n| n > 0),
            "each worker sent some: {sent:?}"
        );
        assert!(
            sent.iter().all(|&n| (n as usize) < FRAMES),
            "the workers ran out of frames, so they slept and this proves nothing: {sent:?}"
        );
    }

    /// With receive coalescing, a round that took less than a batch and
    /// left nothing in flight is followed by one sleep (counted); without
    /// it, none. Every frame goes out either way.
    #[test]
    fn coalescing_sleeps_after_a_small_batch_only_when_on() {
        for coalesce_us in [0, 2000] {
            let mut r = rig();
            r.learn_router();
            r.neigh.learn(0, ip("10.0.0.2"), HOST, r.now());
            for sport in 0..3 {
                r.dev().inject(0, &from_host(6000 + sport));
            }
            let mut w = r.w.with_coalesce(Duration::from_micros(coalesce_us));
            run_for_50ms(&mut w);
            let c = w.stats().counters.snapshot();
            assert_eq!(c.tx_packets, 3, "coalesce {coalesce_us} us");
            assert_eq!(
                c.coalesce_sleeps,
                (coalesce_us > 0) as u64,
                "coalesce {coalesce_us} us"
            );
            assert_eq!(w.device_mut().take_sent(1).len(), 3);
        }
    }

    #[test]
    fn kicks_only_when_the_device_asks() {
        let mut r = rig_with(128, 64);
        r.learn_router();
        for i in 0..40 {
            r.dev().inject(0, &from_host(7000 + i));
        }
        r.poll();
        assert_eq!(r.dev().kicks(1), 0, "no need-wakeup: no kick");
        assert_eq!(r.dev().take_sent(1).len(), 0, "completes at the next round");
        r.poll();
        assert_eq!(r.dev().take_sent(1).len(), 40);

        r.dev().set_need_kick(1, true);
        for i in 0..40 {
            r.dev().inject(0, &from_host(7000 + i));
        }
        r.poll();
        assert_eq!(
            r.dev().kicks(1),
            1,
            "one kick sent the lot and completed it"
        );
        assert_eq!(r.dev().take_sent(1).len(), 40);
        assert_eq!(r.dev().kicks(0), 0, "an idle port is not kicked");
    }

    #[test]
    fn drops_duplicates_and_reorders_are_all_accounted_for() {
        let mut r = rig_with(256, 32);
        r.learn_router();
        let f = Faults {
            drop_pct: 10,
            duplicate_pct: 10,
            corrupt_pct: 0,
            reorder_pct: 10,
        };
        r.dev().set_faults(f, f, 42);
        let n = 300u64;
        let mut wire = Vec::new();
        for i in 0..n {
            r.dev().inject(0, &from_host(10_000 + (i % 50) as u16));
            if i % 20 == 19 {
                r.poll();
                r.poll();
                wire.extend(r.sent(1));
            }
        }
        r.dev().release_delayed();
        r.poll();
        r.poll();
        r.dev().release_delayed();
        wire.extend(r.sent(1));
        let rx = r.dev().rx_fault_counts;
        let tx = r.dev().tx_fault_counts;
        assert!(
            rx.dropped > 0 && rx.duplicated > 0 && rx.reordered > 0,
            "{rx:?}"
        );
        let c = r.counters();
        assert_eq!(c.rx_packets, n - rx.dropped + rx.duplicated);
        assert_eq!(c.tx_packets, c.rx_packets, "every frame received went out");
        assert_eq!(wire.len() as u64, c.tx_packets - tx.dropped + tx.duplicated);
        for f in &wire {
            let (dmac, _, src, ..) = checked_udp(f);
            assert_eq!((dmac, src), (ROUTER, ip("203.0.113.1")));
        }
        assert_eq!(r.dev().frames_out(), 0);
    }

    #[test]
    fn corrupted_frames_never_panic_and_each_ends_in_one_counter() {
        let mut r = rig_with(256, 32);
        r.learn_router();
        r.neigh.learn(0, ip("10.0.0.2"), HOST, r.now());
        let f = Faults {
            corrupt_pct: 100,
            ..Faults::default()
        };
        r.dev().set_faults(f, Faults::default(), 7);
        let n = 400u64;
        let mut arp_out = 0;
        for i in 0..n {
            let frame = if i % 2 == 0 {
                from_host(20_000 + (i % 64) as u16)
            } else {
                arp_frame(true, HOST, "10.0.0.2", "10.0.0.1", [0xff; 6])
            };
            r.dev().inject(0, &frame);
            if i % 16 == 15 {
                r.poll();
            }
        }
        // Past any hold time, so held frames are released or dropped.
        r.clock.advance(Duration::from_secs(2));
        r.poll();
        r.poll();
        for p in 0..2 {
            for f in r.sent(p) {
                if arp::parse(&f).is_some() {
                    arp_out += 1;
                }
            }
        }
        assert_eq!(r.dev().rx_fault_counts.corrupted, n);
        let c = r.counters();
        let drops: u64 = DropReason::ALL.iter().map(|&d| r.drops(d)).sum();
        assert_eq!(c.rx_packets, n);
        assert_eq!(
            c.rx_packets,
            c.tx_packets - arp_out + drops + c.passed,
            "each frame sent, dropped (by reason) or passed (ARP, answered or \
             not; requests are natgw's own): {c:?}"
        );
        assert_eq!(r.dev().frames_out(), 0);
    }

    #[test]
    fn ip_device_sends_every_frame_back_out_of_its_port() {
        let ports = [MemPortSpec {
            ifid: 0,
            mac: [0; 6],
            addr: 0,
        }];
        let dev = MemDevice::new(Link::Ip, &ports, 16, 2048);
        let clock = VirtualClock::new(Time::from_secs(1000));
        let stats = Arc::new(WorkerStats::new("tun".into()));
        let host: Arc<[u32]> = vec![ip("10.0.0.1")].into();
        let mut w =
            Worker::new(dev, clock, engine(), Arc::default(), stats, 8).with_host_addrs(host);
        let strip = |f: Vec<u8>| f[14..].to_vec();
        let out = strip(from_host(5000));
        // For the host: handed back. For a pool address the host lacks: dropped.
        let mine = strip(udp(HOST, GW_LAN, "10.0.0.2", "10.0.0.1", 5000, 22));
        let not_on_host = strip(udp(HOST, GW_LAN, "10.0.0.2", "203.0.113.1", 5000, 22));
        w.device_mut().inject(0, &out);
        w.device_mut().inject(0, &mine);
        w.device_mut().inject(0, &not_on_host);
        w.poll().unwrap();
        w.device_mut().complete(0);
        let sent = w.device_mut().take_sent(0);
        assert_eq!(sent.len(), 2);
        assert_eq!(
            &sent[0][12..16],
            &Ipv4Addr::new(203, 0, 113, 1).octets(),
            "translated"
        );
        assert_eq!(sent[1], mine, "local traffic unchanged");
        let c = w.stats().counters.snapshot();
        assert_eq!((c.rx_packets, c.tx_packets), (3, 2));
        assert_eq!(w.stats().counters.drops(DropReason::LocalUndeliverable), 1);
        assert_eq!(w.device().frames_out(), 0);
    }
}
