//! What the data plane needs to know, as plain data. The control layer
//! builds it from its config file (`Config::dataplane`); nothing here
//! reads a file.

use crate::engine::Interface;

/// Which I/O shell carries packets in `natgw run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_XDP sockets on the interfaces' queues (the fast path).
    Afxdp,
    /// TUN devices that policy routing steers traffic through (fallback).
    Tun,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver has it, else generic.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AfxdpConfig {
    pub mode: XdpMode,
    /// Ask for zero-copy (needs a NIC driver that supports it; veth does not).
    pub zero_copy: bool,
    /// UMEM frames per worker (shared by that worker's sockets).
    pub frames: u32,
    /// Frames per receive/transmit batch.
    pub batch: u32,
    /// Queues per interface to serve (0 = all of the interface's RX queues).
    pub queues: u32,
    /// CPU for worker i is `cpus[i % len]`; empty = worker i on CPU i.
    pub cpus: Vec<usize>,
    /// Receive coalescing in microseconds (0 = off): see
    /// [`Worker`](super::worker::Worker)'s module docs.
    pub coalesce_us: u32,
    /// `SCHED_FIFO` priority of the worker threads (1-99), 0 = ordinary
    /// threads (the default): see the README, "Latency at low rates".
    pub rt_priority: u32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TunConfig {
    /// TUN device name prefix; the device for interface X is prefix + X.
    pub prefix: String,
    /// First policy-routing table and rule preference natgw uses.
    pub table_base: u32,
}

/// The default of `afxdp.coalesce_us`.
pub const COALESCE_US_DEFAULT: u32 = 0;
/// The largest `afxdp.coalesce_us` accepted (1 ms).
pub const COALESCE_US_MAX: u32 = 1000;
/// The largest `afxdp.rt_priority` (Linux's highest `SCHED_FIFO` priority).
pub const RT_PRIORITY_MAX: u32 = 99;

impl Default for AfxdpConfig {
    /// natgw's defaults (the `[afxdp]` table when left out).
    fn default() -> Self {
        AfxdpConfig {
            mode: XdpMode::Auto,
            zero_copy: false,
            frames: 8192,
            batch: 64,
            queues: 0,
            cpus: vec![],
            coalesce_us: COALESCE_US_DEFAULT,
            rt_priority: 0,
        }
    }
}

impl Default for TunConfig {
    /// natgw's defaults (the `[tun]` table when left out).
    fn default() -> Self {
        TunConfig {
            prefix: "ngw-".into(),
            table_base: 7100,
        }
    }
}

/// Everything a backend's `start` needs besides the engine.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub backend: Backend,
    /// The data interfaces, in config order (index = `IfId`).
    pub interfaces: Vec<Interface>,
    pub afxdp: AfxdpConfig,
    pub tun: TunConfig,
    /// Address ranges (inclusive) the gateway owns: interface and extra
    /// addresses, SNAT pools, netmap outside prefixes, virtual services.
    /// The TUN backend answers ARP for those on an interface's network.
    pub owned: Vec<(u32, u32)>,
}
