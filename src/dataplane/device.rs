//! The batch device a [`Worker`](super::worker::Worker) drives, and the
//! clock it reads.
//!
//! A device has one or more *ports* (an AF_XDP socket per interface, one
//! TUN device, a queue pair in memory) that share one pool of frame
//! buffers, so a frame received on one port can be sent out of another
//! without a copy. A frame is a small `Copy` handle ([`Device::Frame`]):
//! an AF_XDP UMEM descriptor, or an index into a buffer arena. The worker
//! owns the handles it holds; every handle it was given goes back exactly
//! once, through [`Device::transmit`] or [`Device::free`].
//!
//! Wake-up hints: a device says how many frames it has in flight on a
//! port's transmit side ([`Device::tx_in_flight`]) and whether the kernel
//! must be kicked to send them ([`Device::needs_kick`]); [`Device::wait`]
//! sleeps until a port is readable. The worker decides when to call them.

use crate::conntrack::Time;
use crate::nat::IfId;
use crate::packet::Link;
use std::io;
use std::time::Duration;

use super::WorkerStats;

/// A multi-port batch frame device.
pub trait Device {
    /// A handle to one frame buffer (with its data length).
    type Frame: Copy + Default;
    /// Mutable access to a frame's bytes, borrowed from the device (a
    /// UMEM frame, an arena buffer): no copy.
    type Buf<'a>: AsMut<[u8]>
    where
        Self: 'a;

    /// Link layer of every frame of this device.
    fn link(&self) -> Link;
    /// Number of ports.
    fn ports(&self) -> usize;
    /// The interface (engine id) port `port` carries.
    fn ifid(&self, port: usize) -> IfId;
    /// The port that carries interface `oif`, if this device has one.
    fn port_of(&self, oif: IfId) -> Option<usize> {
        (0..self.ports()).find(|&p| self.ifid(p) == oif)
    }
    /// The port's own MAC address (Ethernet devices).
    fn mac(&self, port: usize) -> [u8; 6];
    /// The port's own IPv4 address (source of ARP requests).
    fn addr(&self, port: usize) -> u32;

    /// Takes up to `rx.len()` received frames off `port` into `rx`;
    /// returns how many. Never blocks.
    fn recv(&mut self, port: usize, rx: &mut [Self::Frame]) -> io::Result<usize>;
    /// Data length of `f`, read from the handle alone (valid for a copy of
    /// a handle that was transmitted or freed).
    fn len(&self, f: &Self::Frame) -> usize;
    /// The frame's bytes up to its length.
    fn data_mut<'a>(&'a mut self, f: &'a mut Self::Frame) -> Self::Buf<'a>;
    /// The frame's whole buffer (data, then room for a reply). The frame's
    /// length is unspecified afterwards until [`set_len`](Self::set_len).
    fn buf_mut<'a>(&'a mut self, f: &'a mut Self::Frame) -> Self::Buf<'a>;
    /// Sets the data length (capped at the buffer's size).
    fn set_len(&mut self, f: &mut Self::Frame, len: usize);
    /// A free frame for the worker to fill (an ARP request), if any.
    fn alloc(&mut self) -> Option<Self::Frame>;
    /// Gives a frame back to the device's pool.
    fn free(&mut self, f: Self::Frame);

    /// Queues `frames` for transmission on `port`. The device takes the
    /// ones it accepts, moves them to the front of `frames` and returns
    /// their number; the rest (TX full) stay the caller's.
    fn transmit(&mut self, port: usize, frames: &mut [Self::Frame]) -> io::Result<usize>;
    /// Takes back frames whose transmission completed; returns how many.
    fn complete(&mut self, port: usize) -> usize;
    /// Hands free frames to the receive side of `port` (the AF_XDP fill
    /// ring) and wakes the kernel for them if it asks.
    fn refill(&mut self, port: usize);
    /// Frames queued for transmission on `port` and not yet completed.
    fn tx_in_flight(&self, port: usize) -> usize;
    /// True if frames queued on `port` wait for a [`kick`](Self::kick).
    fn needs_kick(&self, port: usize) -> bool;
    /// Tells the kernel to transmit what is queued on `port`.
    fn kick(&mut self, port: usize) -> io::Result<()>;
    /// Sleeps until a port has frames to receive, or `timeout` passes.
    fn wait(&mut self, timeout: Duration);

    /// Once a second: device statistics into `stats`.
    fn housekeeping(&mut self, _stats: &WorkerStats) {}
    /// Checks (in debug builds) that every frame is accounted for, given
    /// that the worker holds `held`.
    fn check_frames(&self, _held: usize) {}
}

/// Where a worker reads the time.
pub trait Clock {
    fn now(&self) -> Time;
}

/// The host's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysClock;

impl Clock for SysClock {
    #[inline]
    fn now(&self) -> Time {
        super::sys::now()
    }
}
