//! The handover bridge: forwards parked frames while the queues' AF_XDP
//! sockets cannot be bound yet.
//!
//! After a handover's cut (or a `kill -9`) the XDP program parks every
//! frame (see [`afxdp`](super::afxdp)), but the new process can bind a
//! queue's socket only once the kernel has let go of the old one: the
//! old socket's close waits for an RCU grace period and frees the queue
//! in a work item, 30–60 ms on this kind of machine. Frames waiting that
//! long in the park queue are not lost, but they are late: a gap at the
//! receivers.
//!
//! The bridge closes that gap: from the moment the new process has the
//! old one's last changes, one thread pops the park queues
//! ([`ParkQueue::pop`]), runs each frame through a normal
//! [`Worker`] (engine, ARP, hold queue — the same code as the AF_XDP
//! workers) and sends what comes out through a send-only AF_PACKET
//! socket per interface ([`PacketTx`]), while the sockets are being
//! bound. When they are, the bridge empties the park queues once more
//! and ends; the AF_XDP workers register their sockets and take what
//! was parked after that. Frames stay in arrival order through the
//! bridge (the park queue is FIFO); the neighbours it learnt are shared
//! with the workers.
//!
//! Cost: a syscall per frame each way (~1–3 µs), so several times slower
//! than AF_XDP — enough for the few tens of milliseconds it runs.

use super::device::{Device, SysClock};
use super::neigh::Neighbours;
use super::sys::packet::PacketTx;
use super::worker::Worker;
use super::xdp::ParkQueue;
use super::{WorkerStats, sys};
use crate::engine::{Counters, DropReason, Engine};
use crate::nat::IfId;
use crate::packet::Link;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Frames in the bridge's arena (held frames plus one batch per port).
const FRAMES: usize = 1024;
const FRAME_SIZE: usize = 2048;
/// Once told to end, the bridge empties the park queues and its hold
/// queue for at most this long.
const FINISH_MAX: Duration = Duration::from_millis(20);

/// One interface as the bridge sees it.
pub struct BridgePort {
    pub ifid: IfId,
    pub mac: [u8; 6],
    pub addr: u32,
    pub park: ParkQueue,
    pub tx: PacketTx,
}

/// A frame of the bridge's arena.
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgeFrame {
    idx: u32,
    len: u32,
}

/// A [`Device`] whose receive side is the XDP programs' park queues and
/// whose transmit side is AF_PACKET. Transmission is synchronous: nothing
/// is ever in flight.
pub struct ParkDevice {
    ports: Vec<BridgePort>,
    bufs: Vec<Box<[u8]>>,
    free: Vec<u32>,
    stats: Arc<WorkerStats>,
    /// Frames popped off the park queues.
    taken: u64,
    max_age: Duration,
}

impl ParkDevice {
    /// `stats`: where popped frames (`parked`) and stale ones
    /// (`parked_stale`, older than `max_age`) are counted.
    pub fn new(ports: Vec<BridgePort>, stats: Arc<WorkerStats>, max_age: Duration) -> ParkDevice {
        ParkDevice {
            ports,
            bufs: (0..FRAMES)
                .map(|_| vec![0u8; FRAME_SIZE].into_boxed_slice())
                .collect(),
            free: (0..FRAMES as u32).rev().collect(),
            stats,
            taken: 0,
            max_age,
        }
    }
}

impl Device for ParkDevice {
    type Frame = BridgeFrame;
    type Buf<'a> = &'a mut [u8];

    fn link(&self) -> Link {
        Link::Ethernet
    }

    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn ifid(&self, port: usize) -> IfId {
        self.ports[port].ifid
    }

    fn mac(&self, port: usize) -> [u8; 6] {
        self.ports[port].mac
    }

    fn addr(&self, port: usize) -> u32 {
        self.ports[port].addr
    }

    fn recv(&mut self, port: usize, rx: &mut [BridgeFrame]) -> io::Result<usize> {
        let mut n = 0;
        while n < rx.len() {
            let Some(&idx) = self.free.last() else { break };
            let Some(p) = self.ports[port].park.pop(&mut self.bufs[idx as usize])? else {
                break;
            };
            self.taken += 1;
            if Duration::from_nanos(p.age_ns) > self.max_age {
                self.stats.counters.drop(DropReason::ParkedStale);
                continue;
            }
            self.free.pop();
            Counters::bump(&self.stats.counters.parked);
            rx[n] = BridgeFrame {
                idx,
                len: p.len as u32,
            };
            n += 1;
        }
        Ok(n)
    }

    fn len(&self, f: &BridgeFrame) -> usize {
        f.len as usize
    }

    fn data_mut<'a>(&'a mut self, f: &'a mut BridgeFrame) -> &'a mut [u8] {
        let b = &mut self.bufs[f.idx as usize];
        let n = (f.len as usize).min(b.len());
        &mut b[..n]
    }

    fn buf_mut<'a>(&'a mut self, f: &'a mut BridgeFrame) -> &'a mut [u8] {
        &mut self.bufs[f.idx as usize]
    }

    fn set_len(&mut self, f: &mut BridgeFrame, len: usize) {
        f.len = len.min(FRAME_SIZE) as u32;
    }

    fn alloc(&mut self) -> Option<BridgeFrame> {
        self.free.pop().map(|idx| BridgeFrame { idx, len: 0 })
    }

    fn free(&mut self, f: BridgeFrame) {
        self.free.push(f.idx);
    }

    /// Sends in order until the socket refuses one (its queue full): the
    /// rest stay the caller's (counted `tx_full` by the worker).
    fn transmit(&mut self, port: usize, frames: &mut [BridgeFrame]) -> io::Result<usize> {
        let mut n = 0;
        for f in frames.iter() {
            let b = &self.bufs[f.idx as usize][..f.len as usize];
            if self.ports[port].tx.send(b).is_err() {
                break;
            }
            n += 1;
        }
        for f in &frames[..n] {
            self.free.push(f.idx);
        }
        Ok(n)
    }

    fn complete(&mut self, _port: usize) -> usize {
        0
    }

    fn refill(&mut self, _port: usize) {}

    fn tx_in_flight(&self, _port: usize) -> usize {
        0
    }

    fn needs_kick(&self, _port: usize) -> bool {
        false
    }

    fn kick(&mut self, _port: usize) -> io::Result<()> {
        Ok(())
    }

    /// A park queue cannot be waited on: naps briefly.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }
}

/// A running bridge (see the module docs).
pub struct Bridge {
    end: Arc<AtomicBool>,
    /// The thread's result, sent before it closes its sockets: closing an
    /// AF_PACKET socket waits for an RCU grace period (tens of ms), which
    /// the workers need not wait for.
    done: std::sync::mpsc::Receiver<Result<u64, String>>,
    /// Sent to start popping (dropped unsent: the thread ends at once).
    go: Option<std::sync::mpsc::Sender<()>>,
    stats: Arc<WorkerStats>,
    started: Instant,
}

/// What a bridge did.
pub struct Bridged {
    /// Frames popped off the park queues (stale ones included).
    pub frames: u64,
    /// Microseconds it ran.
    pub us: u64,
    /// Its counters, to be shown with the workers'.
    pub stats: Arc<WorkerStats>,
    pub error: Option<String>,
}

impl Bridge {
    /// Starts the bridge thread (pinned to `cpu` if given), which waits
    /// for [`go`](Self::go) before it touches a park queue: spawned ahead
    /// of a handover's cut, it costs the cut nothing but a message.
    pub fn spawn(
        ports: Vec<BridgePort>,
        engine: Arc<Engine>,
        neigh: Arc<Neighbours>,
        batch: usize,
        max_age: Duration,
        cpu: Option<usize>,
    ) -> io::Result<Bridge> {
        let stats = Arc::new(WorkerStats::new("bridge".to_string()));
        let end = Arc::new(AtomicBool::new(false));
        let (st, e) = (stats.clone(), end.clone());
        let (tx, done) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let body = move || -> Result<(u64, Worker<ParkDevice, SysClock>), String> {
            if let Some(cpu) = cpu
                && let Err(err) = sys::pin_to_cpu(cpu)
            {
                log::warn!("bridge: cannot pin to CPU {cpu}: {err}");
            }
            let dev = ParkDevice::new(ports, st.clone(), max_age);
            let mut w = Worker::new(dev, SysClock, engine, neigh, st, batch);
            if go_rx.recv().is_err() {
                return Ok((0, w));
            }
            let mut ending: Option<Instant> = None;
            loop {
                let work = w.poll()?;
                if ending.is_none() && e.load(Ordering::Acquire) {
                    ending = Some(Instant::now());
                }
                if let Some(t) = ending
                    && ((work == 0 && w.held() == 0) || t.elapsed() >= FINISH_MAX)
                {
                    break;
                }
                if work == 0 {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            w.flush_all()?;
            let held = w.drop_held();
            if held > 0 {
                log::warn!(
                    "bridge: {held} frame(s) still waited for their next hop when it ended (dropped, no_neighbour)"
                );
            }
            let frags = w.drop_held_fragments();
            if frags > 0 {
                log::warn!(
                    "bridge: {frags} fragment(s) still waited for their first fragment when it ended (dropped, frag_timeout)"
                );
            }
            Ok((w.device().taken, w))
        };
        std::thread::Builder::new()
            .name("natgw-bridge".into())
            .spawn(move || match body() {
                Ok((n, w)) => {
                    let _ = tx.send(Ok(n));
                    drop(w);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })?;
        Ok(Bridge {
            end,
            done,
            go: Some(go),
            stats,
            started: Instant::now(),
        })
    }

    /// Starts popping the park queues.
    pub fn go(&mut self) {
        if let Some(g) = self.go.take() {
            self.started = Instant::now();
            let _ = g.send(());
        }
    }

    /// Tells the bridge to empty the park queues once more and end; waits
    /// (not for its sockets to close).
    pub fn finish(self) -> Bridged {
        self.end.store(true, Ordering::Release);
        let r = self.done.recv();
        let us = self.started.elapsed().as_micros() as u64;
        let (frames, error) = match r {
            Ok(Ok(n)) => (n, None),
            Ok(Err(e)) => (0, Some(e)),
            Err(_) => (0, Some("the bridge thread ended without a word".into())),
        };
        Bridged {
            frames,
            us,
            stats: self.stats.clone(),
            error,
        }
    }
}

impl Drop for Bridge {
    /// Never started (a handover given up before the cut), or finished:
    /// the thread ends.
    fn drop(&mut self) {
        self.end.store(true, Ordering::Release);
        self.go.take();
    }
}
