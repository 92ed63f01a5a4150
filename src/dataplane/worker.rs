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
//! Wake-up policy: a port's transmit side is kicked only when the device
//! says it needs it, once per [`KICK_BATCH`] frames in flight (at most 16
//! times a round), reaping completions in between; the worker sleeps in
//! [`Device::wait`] only after a round without work and with nothing in
//! flight, for its idle wait, or 1 ms while frames are held.

use super::WorkerStats;
use super::device::{Clock, Device};
use super::neigh::{Neighbours, Resolve};
use crate::conntrack::Time;
use crate::engine::{Counters, DropReason, Engine, Verdict};
use crate::nat::IfId;
use crate::packet::{self, Link, arp};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Frames a worker holds while their next hop is being resolved.
pub const HOLD_MAX: usize = 256;
/// How long a held frame waits for its ARP reply.
pub const HOLD_TIME: Time = Time::from_millis(1000);
/// Frames per kick in AF_XDP copy mode (the kernel's TX batch).
pub const KICK_BATCH: usize = 32;
/// Kicks per port per round at most.
const MAX_KICKS: usize = 16;
/// Sleep while frames are held (their replies are due soon).
const HELD_WAIT: Duration = Duration::from_millis(1);
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
    /// IP devices: addresses the host has (`Local` packets for them go
    /// back to the kernel; others are dropped).
    host_addrs: Arc<[u32]>,
    idle_wait: Duration,
    last_housekeeping: Time,
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
            host_addrs: Arc::from(Vec::new()),
            idle_wait: Duration::from_millis(10),
            last_housekeeping: now,
        }
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

    /// Runs rounds until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), String> {
        while !stop.load(Ordering::Relaxed) {
            let work = self.poll()?;
            if work == 0 && (0..self.dev.ports()).all(|p| self.dev.tx_in_flight(p) == 0) {
                let t = if self.held.is_empty() {
                    self.idle_wait
                } else {
                    HELD_WAIT
                };
                self.dev.wait(t);
            }
        }
        Ok(())
    }

    /// One round: reap and refill, receive and handle a batch per port,
    /// release held frames, send ARP requests, transmit per port.
    /// Returns the work done (frames received and completed).
    pub fn poll(&mut self) -> Result<usize, String> {
        let ports = self.dev.ports();
        let mut work = 0;
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
            let t0 = self.clock.now();
            for i in 0..n {
                let f = self.rx[i];
                self.handle(p, f, t0);
            }
            let t1 = self.clock.now();
            self.stats.record_batch(n, t1.saturating_sub(t0).0);
        }
        if !self.held.is_empty() {
            self.release_held(self.clock.now());
        }
        self.send_arp_requests();
        for p in 0..ports {
            self.flush(p)?;
        }
        self.dev.check_frames(self.held.len());
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
    fn handle(&mut self, p: usize, mut f: D::Frame, now: Time) {
        let c = &self.stats.counters;
        let len = self.dev.len(&f);
        Counters::bump(&c.rx_packets);
        Counters::add(&c.rx_bytes, len as u64);
        let iif = self.dev.ifid(p);
        let link = self.dev.link();
        let mac = self.dev.mac(p);
        let mut b = self.dev.buf_mut(&mut f);
        let buf = b.as_mut();
        let len = len.min(buf.len());
        let v = self.engine.process(buf, len, link, iif, now, c);
        if link == Link::Ip {
            let out = match v {
                Verdict::Forward { .. } | Verdict::Pass => Some(len),
                Verdict::Reply { len, .. } => Some(len),
                Verdict::Local if self.host_addrs.contains(&ipv4_dst(buf)) => Some(len),
                Verdict::Local => {
                    c.drop(DropReason::LocalUndeliverable);
                    None
                }
                Verdict::Drop(_) => None,
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
            Verdict::Drop(_) => None,
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
    let ours = a.tpa == iface.addr.addr
        || (engine.is_local(a.tpa) && iface.addr.network().contains(a.tpa));
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
