//! One AF_XDP worker's device: a socket per interface (the worker's queue
//! on each), all sharing one UMEM, and the pool of frames the worker may
//! use. Every `unsafe` call into xsk-rs is here, and each rests on one
//! invariant: a descriptor is owned by exactly one of the pool, a fill
//! ring (or the RX ring behind it), a TX ring, or the worker, and only
//! its owner touches the frame. The worker keeps its side of that by the
//! [`Device`] contract (every handle it is given goes back once, through
//! `transmit` or `free`).
//!
//! A frame received on one interface and forwarded out of another never
//! moves: its descriptor goes from that interface's RX ring to the
//! other's TX ring (XDP_SHARED_UMEM across devices).

use crate::dataplane::WorkerStats;
use crate::dataplane::device::Device;
use crate::nat::IfId;
use crate::packet::Link;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use xsk_rs::config::SocketConfig;
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

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

impl XdpDevice {
    /// A device with no ports yet over `umem`, whose frames are `pool`;
    /// `cq_batch` completions are read at a time.
    /// Makes [`Device::wait`] also return when `fd` becomes readable (an
    /// eventfd the control thread writes to wake a sleeping worker). The
    /// caller keeps `fd` open for the device's life.
    pub fn wake_on(&mut self, fd: std::os::fd::RawFd) {
        self.pollfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }

    pub fn new(umem: Umem, pool: Vec<FrameDesc>, cq_batch: usize) -> XdpDevice {
        XdpDevice {
            ports: Vec::new(),
            total: pool.len(),
            pool,
            cqbuf: vec![FrameDesc::default(); cq_batch.max(1)],
            pollfds: Vec::new(),
            umem,
        }
    }

    /// Binds an AF_XDP socket on `ifname` queue `queue` to this device's
    /// UMEM, as the next port (interface `ifid`, with `mac` and `addr`);
    /// keeps up to `fill_target` frames on its fill ring. Returns the
    /// socket's fd (for the XDP program's socket map).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &mut self,
        ifid: IfId,
        mac: [u8; 6],
        addr: u32,
        ifname: &str,
        queue: u32,
        cfg: SocketConfig,
        fill_target: usize,
    ) -> Result<RawFd, String> {
        let name = ifname.parse().map_err(|e| format!("{ifname}: {e}"))?;
        // SAFETY: the UMEM outlives the socket: both belong to this
        // device, whose `ports` are dropped before `umem` (field order),
        // and the caller binds each (interface, queue) once.
        let (tx, rx, fqcq) = unsafe { Socket::new(cfg, &self.umem, &name, queue) }
            .map_err(|e| format!("AF_XDP socket on {ifname} queue {queue}: {e}"))?;
        let Some((fq, cq)) = fqcq else {
            return Err(format!("{ifname} queue {queue} is already bound"));
        };
        let fd = rx.fd().as_raw_fd();
        self.pollfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        self.ports.push(Port {
            ifid,
            mac,
            addr,
            tx,
            rx,
            fq,
            cq,
            in_fill: 0,
            in_tx: 0,
            fill_target,
        });
        Ok(fd)
    }
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
        super::poll_in(&mut self.pollfds, ms);
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
