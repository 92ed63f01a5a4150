//! Load balancing, LVS-NAT style: virtual services, real servers,
//! schedulers, persistence, draining and health. Pure: time is passed in,
//! nothing here reads a clock, opens a socket or starts a thread, and the
//! only hashing key that varies is the table's seed.
//!
//! # Shape
//!
//! - [`LbTable`] maps `(vip, port, proto)` to a [`VirtualService`]. Like the
//!   NAT ruleset it is immutable once built: a change (`ipvsadm -a/-e/-d`
//!   and friends, see [`Change`]) builds a new table with
//!   [`LbTable::apply`], and the control thread swaps an `Arc` (see
//!   `engine::Engine::swap_ruleset` for the pattern). Only the changed
//!   service is rebuilt; the others are shared.
//! - [`VirtualService::schedule`] is what the data path calls for the first
//!   packet of a flow to a VIP: persistence first, then the scheduler. It
//!   returns a [`RealIdx`]; the flow keeps that server for its whole life
//!   (the flow table's job), whatever versions come later.
//!
//! # Where the mutable parts live
//!
//! Workers schedule concurrently on a shared `&VirtualService`, so
//! everything that changes per flow sits behind atomics or short locks,
//! and outlives table versions where that matters:
//!
//! - [`RealState`] (health, active and inactive connection counts) is
//!   shared through an `Arc` by every version that has the server, so a
//!   weight change does not reset the counts that `lc`/`wlc` read. A server
//!   removed while it still has connections moves to the service's trash,
//!   as in IPVS, so closing flows still find their counters (and a re-added
//!   server gets them back). Its packets and bytes are counted per packet
//!   through [`RealIds`]: the engine puts the server's id in the flow's
//!   mark, so reading them (`natgw services`, metrics) never walks the
//!   flow table.
//! - Persistence entries (IPVS "templates") live in a sharded table that is
//!   carried from version to version while the service keeps its netmask;
//!   entries of removed servers are dropped on the change.
//! - Scheduler positions (`rr`, `wrr`) are single atomic words updated by
//!   compare-and-swap, so concurrent picks stay an exact round robin.
//! - Health is an atomic flag flipped in place ([`LbTable::set_health`]):
//!   health checks flap, and a flap must not rebuild tables or reshuffle
//!   hash schedulers. A down server is skipped the way IPVS skips an
//!   overloaded one.
//!
//! # Eligibility
//!
//! A server takes new clients when its weight is above 0 and it is up.
//! Weight 0 is IPVS's "quiesced": no new clients, established flows carry
//! on. Persistent clients of a quiesced server still go to it until their
//! entry expires, as in IPVS (unless
//! [`Persistence::expire_quiescent`], IPVS's `expire_quiescent_template`);
//! persistent clients of a down server are placed afresh.
//!
//! # Differences from IPVS, on purpose
//!
//! - Hash schedulers (`sh`, `dh`, `mh`) fall back to another server when
//!   the hashed one is unavailable by default (IPVS needs `sh-fallback` /
//!   `mh-fallback`), because natgw's health checks mark servers down where
//!   keepalived would remove them. Turn it off for IPVS's strict behaviour.
//! - A persistence entry lives `timeout` after the client's last new
//!   connection; IPVS also keeps a template while connections it placed are
//!   alive. [`VirtualService::touch`] lets the engine extend an entry when
//!   a persistent flow ends, which gives the same effect for flows shorter
//!   than the timeout plus one timeout after longer ones.
//! - No upper/lower connection thresholds (`-x`/`-y`) yet.

mod hash;
mod persist;
mod sched;
mod service;
mod table;

pub use persist::{PersistEntry, Sweep};
pub use sched::{HashOpts, MAX_MH_TABLE, MhOpts, Scheduler};
pub use service::{
    ConnState, Forward, Health, NewConn, Persistence, RealIds, RealIdx, RealServer, RealSpec,
    RealState, ServiceKey, ServiceSpec, VirtualService,
};
pub use table::{Change, LbError, LbTable, RealStatus, ServiceStatus};

/// Most real servers in one service (hash tables store `u16` indices).
pub const MAX_REALS: usize = u16::MAX as usize - 1;

/// Largest weight, as in `ipvsadm`.
pub const MAX_WEIGHT: u32 = 65_535;

pub use ipv4 as ipv4_serde;

/// Serde for addresses held as `u32`: written as dotted quads.
pub mod ipv4 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::net::Ipv4Addr;

    pub fn serialize<S: Serializer>(a: &u32, s: S) -> Result<S::Ok, S::Error> {
        Ipv4Addr::from(*a).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        Ipv4Addr::deserialize(d).map(u32::from)
    }
}
