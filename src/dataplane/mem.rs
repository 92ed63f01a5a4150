//! A [`Device`] in memory, for driving a [`Worker`](super::worker::Worker)
//! without a network: tests put frames on a port's receive queue
//! ([`MemDevice::inject`]) and take what the worker transmitted off its
//! wire ([`MemDevice::take_sent`]).
//!
//! Like AF_XDP it has one pool of fixed-size buffers shared by its ports,
//! a bounded transmit ring per port whose frames stay in flight until
//! they complete, and (optionally) a kernel that transmits only when
//! kicked. Faults, drawn from a seeded generator so a test replays
//! exactly, can be injected on the way in and on the way out: drop,
//! duplicate, reorder (a frame overtakes the one before it) and corrupt
//! (one bit flipped).

use super::WorkerStats;
use super::device::{Clock, Device};
use crate::conntrack::Time;
use crate::nat::IfId;
use crate::packet::Link;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    pub fn new(t: Time) -> VirtualClock {
        VirtualClock(Arc::new(AtomicU64::new(t.0)))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Time {
        Time(self.0.load(Ordering::Relaxed))
    }
}

/// Fault probabilities in percent (0..=100), applied in this order: a
/// dropped frame is gone; a duplicated one is delivered twice; a
/// corrupted one has one bit flipped; a reordered one waits until the
/// next frame has gone first (or [`MemDevice::release_delayed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub drop_pct: u8,
    pub duplicate_pct: u8,
    pub corrupt_pct: u8,
    pub reorder_pct: u8,
}

/// What the faults did, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
}

/// A frame handle: an arena buffer and its data length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemFrame {
    idx: u32,
    len: u32,
}

/// One port's identity.
#[derive(Debug, Clone, Copy)]
pub struct MemPortSpec {
    pub ifid: IfId,
    pub mac: [u8; 6],
    pub addr: u32,
}

#[derive(Debug)]
struct Port {
    spec: MemPortSpec,
    rx: VecDeque<MemFrame>,
    tx: VecDeque<MemFrame>,
    /// Frames at the front of `tx` that a kick released.
    kicked: usize,
    tx_capacity: usize,
    stalled: bool,
    need_kick: bool,
    kicks: u64,
    wire: VecDeque<Vec<u8>>,
    rx_delayed: Option<Vec<u8>>,
    tx_delayed: Option<Vec<u8>>,
}

/// The in-memory device.
#[derive(Debug)]
pub struct MemDevice {
    link: Link,
    ports: Vec<Port>,
    bufs: Vec<Box<[u8]>>,
    free: Vec<u32>,
    rx_faults: Faults,
    tx_faults: Faults,
    /// What the faults did: receive side, transmit side.
    pub rx_fault_counts: FaultCounts,
    pub tx_fault_counts: FaultCounts,
    /// Frames injected while no buffer was free (lost, like a full ring).
    pub rx_no_buffer: u64,
    rng: u64,
}

impl MemDevice {
    /// A device of `ports` with `frames` buffers of `frame_size` bytes.
    pub fn new(link: Link, ports: &[MemPortSpec], frames: usize, frame_size: usize) -> MemDevice {
        MemDevice {
            link,
            ports: ports
                .iter()
                .map(|&spec| Port {
                    spec,
                    rx: VecDeque::new(),
                    tx: VecDeque::new(),
                    kicked: 0,
                    tx_capacity: usize::MAX,
                    stalled: false,
                    need_kick: false,
                    kicks: 0,
                    wire: VecDeque::new(),
                    rx_delayed: None,
                    tx_delayed: None,
                })
                .collect(),
            bufs: (0..frames)
                .map(|_| vec![0u8; frame_size].into_boxed_slice())
                .collect(),
            free: (0..frames as u32).rev().collect(),
            rx_faults: Faults::default(),
            tx_faults: Faults::default(),
            rx_fault_counts: FaultCounts::default(),
            tx_fault_counts: FaultCounts::default(),
            rx_no_buffer: 0,
            rng: 0x853c_49e6_748f_ea9b,
        }
    }

    /// Faults on frames coming in and going out; `seed` keys the choices.
    pub fn set_faults(&mut self, rx: Faults, tx: Faults, seed: u64) {
        self.rx_faults = rx;
        self.tx_faults = tx;
        self.rng = seed | 1;
    }

    /// At most `n` frames in flight on `port`'s transmit ring.
    pub fn set_tx_capacity(&mut self, port: usize, n: usize) {
        self.ports[port].tx_capacity = n;
    }

    /// While stalled, nothing on `port`'s transmit ring completes.
    pub fn set_stalled(&mut self, port: usize, stalled: bool) {
        self.ports[port].stalled = stalled;
    }

    /// Frames on `port` complete only after a kick (AF_XDP need-wakeup).
    pub fn set_need_kick(&mut self, port: usize, on: bool) {
        self.ports[port].need_kick = on;
    }

    pub fn kicks(&self, port: usize) -> u64 {
        self.ports[port].kicks
    }

    /// Frames not in the pool: queued to receive, in flight, or the caller's.
    pub fn frames_out(&self) -> usize {
        self.bufs.len() - self.free.len()
    }

    /// Puts `frame` on `port`'s receive queue (through the receive faults).
    pub fn inject(&mut self, port: usize, frame: &[u8]) {
        let f = self.rx_faults;
        let mut counts = self.rx_fault_counts;
        let mut delayed = self.ports[port].rx_delayed.take();
        let mut out = Vec::with_capacity(3);
        fault(f, &mut self.rng, &mut counts, &mut delayed, frame, &mut out);
        self.rx_fault_counts = counts;
        self.ports[port].rx_delayed = delayed;
        for bytes in out {
            self.enqueue_rx(port, &bytes);
        }
    }

    /// Delivers frames the reorder fault still holds back.
    pub fn release_delayed(&mut self) {
        for p in 0..self.ports.len() {
            if let Some(b) = self.ports[p].rx_delayed.take() {
                self.enqueue_rx(p, &b);
            }
            if let Some(b) = self.ports[p].tx_delayed.take() {
                self.ports[p].wire.push_back(b);
            }
        }
    }

    fn enqueue_rx(&mut self, port: usize, bytes: &[u8]) {
        let Some(idx) = self.free.pop() else {
            self.rx_no_buffer += 1;
            return;
        };
        let buf = &mut self.bufs[idx as usize];
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.ports[port]
            .rx
            .push_back(MemFrame { idx, len: n as u32 });
    }

    /// Takes what went out of `port` (completed transmissions, in order).
    pub fn take_sent(&mut self, port: usize) -> Vec<Vec<u8>> {
        self.ports[port].wire.drain(..).collect()
    }

    /// Frames waiting on `port`'s receive queue.
    pub fn rx_queued(&self, port: usize) -> usize {
        self.ports[port].rx.len()
    }
}

/// Next value of a xorshift64* generator.
fn next(rng: &mut u64) -> u64 {
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn chance(rng: &mut u64, pct: u8) -> bool {
    pct > 0 && next(rng) % 100 < pct as u64
}

/// Applies faults `f` to `frame`; what comes out (0 to 3 frames, in
/// order) is appended to `out`.
fn fault(
    f: Faults,
    rng: &mut u64,
    counts: &mut FaultCounts,
    delayed: &mut Option<Vec<u8>>,
    frame: &[u8],
    out: &mut Vec<Vec<u8>>,
) {
    if chance(rng, f.drop_pct) {
        counts.dropped += 1;
        return;
    }
    let mut bytes = frame.to_vec();
    if chance(rng, f.corrupt_pct) && !bytes.is_empty() {
        let at = next(rng) as usize % bytes.len();
        bytes[at] ^= 1 << (next(rng) % 8);
        counts.corrupted += 1;
    }
    let copies = if chance(rng, f.duplicate_pct) {
        counts.duplicated += 1;
        2
    } else {
        1
    };
    if delayed.is_none() && chance(rng, f.reorder_pct) {
        counts.reordered += 1;
        if copies == 2 {
            out.push(bytes.clone());
        }
        *delayed = Some(bytes);
        return;
    }
    for _ in 1..copies {
        out.push(bytes.clone());
    }
    out.push(bytes);
    if let Some(d) = delayed.take() {
        out.push(d);
    }
}

impl Device for MemDevice {
    type Frame = MemFrame;
    type Buf<'a> = &'a mut [u8];

    fn link(&self) -> Link {
        self.link
    }

    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn ifid(&self, port: usize) -> IfId {
        self.ports[port].spec.ifid
    }

    fn mac(&self, port: usize) -> [u8; 6] {
        self.ports[port].spec.mac
    }

    fn addr(&self, port: usize) -> u32 {
        self.ports[port].spec.addr
    }

    fn recv(&mut self, port: usize, rx: &mut [MemFrame]) -> io::Result<usize> {
        let q = &mut self.ports[port].rx;
        let n = rx.len().min(q.len());
        for (slot, f) in rx.iter_mut().zip(q.drain(..n)) {
            *slot = f;
        }
        Ok(n)
    }

    fn len(&self, f: &MemFrame) -> usize {
        f.len as usize
    }

    fn data_mut<'a>(&'a mut self, f: &'a mut MemFrame) -> &'a mut [u8] {
        let b = &mut self.bufs[f.idx as usize];
        let n = (f.len as usize).min(b.len());
        &mut b[..n]
    }

    fn buf_mut<'a>(&'a mut self, f: &'a mut MemFrame) -> &'a mut [u8] {
        // As on AF_XDP, the length is unspecified afterwards (the whole
        // buffer) until `set_len`: a worker that forgets it is caught.
        let b = &mut self.bufs[f.idx as usize];
        f.len = b.len() as u32;
        b
    }

    fn set_len(&mut self, f: &mut MemFrame, len: usize) {
        f.len = len.min(self.bufs[f.idx as usize].len()) as u32;
    }

    fn alloc(&mut self) -> Option<MemFrame> {
        self.free.pop().map(|idx| MemFrame { idx, len: 0 })
    }

    fn free(&mut self, f: MemFrame) {
        debug_assert!(!self.free.contains(&f.idx), "frame freed twice");
        self.free.push(f.idx);
    }

    fn transmit(&mut self, port: usize, frames: &mut [MemFrame]) -> io::Result<usize> {
        let p = &mut self.ports[port];
        let n = frames.len().min(p.tx_capacity.saturating_sub(p.tx.len()));
        p.tx.extend(frames[..n].iter().copied());
        Ok(n)
    }

    fn complete(&mut self, port: usize) -> usize {
        let p = &self.ports[port];
        if p.stalled {
            return 0;
        }
        let n = if p.need_kick { p.kicked } else { p.tx.len() };
        for _ in 0..n {
            let Some(f) = self.ports[port].tx.pop_front() else {
                break;
            };
            let bytes = &self.bufs[f.idx as usize][..f.len as usize];
            let mut out = Vec::with_capacity(3);
            let mut delayed = self.ports[port].tx_delayed.take();
            fault(
                self.tx_faults,
                &mut self.rng,
                &mut self.tx_fault_counts,
                &mut delayed,
                bytes,
                &mut out,
            );
            let p = &mut self.ports[port];
            p.tx_delayed = delayed;
            p.wire.extend(out);
            self.free.push(f.idx);
        }
        let p = &mut self.ports[port];
        p.kicked = p.kicked.saturating_sub(n);
        n
    }

    fn refill(&mut self, _port: usize) {}

    fn tx_in_flight(&self, port: usize) -> usize {
        self.ports[port].tx.len()
    }

    fn needs_kick(&self, port: usize) -> bool {
        let p = &self.ports[port];
        p.need_kick && p.kicked < p.tx.len()
    }

    fn kick(&mut self, port: usize) -> io::Result<()> {
        let p = &mut self.ports[port];
        p.kicks += 1;
        p.kicked = p.tx.len();
        Ok(())
    }

    fn wait(&mut self, _timeout: Duration) {}

    fn housekeeping(&mut self, stats: &WorkerStats) {
        stats.set_frames(self.free.len() as u64, self.bufs.len() as u64);
    }

    /// Every buffer is free, queued, in flight or held by the worker.
    fn check_frames(&self, held: usize) {
        let queued: usize = self.ports.iter().map(|p| p.rx.len() + p.tx.len()).sum();
        assert_eq!(
            self.free.len() + queued + held,
            self.bufs.len(),
            "in-memory device frame accounting"
        );
    }
}
