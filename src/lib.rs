//! natgw: a userspace NAT gateway.
//!
//! Layers, from the wire inwards (pure parts never touch a socket, a clock
//! or a thread; time is passed in):
//!
//! - [`packet`]: views over frame bytes, in-place rewrite, checksums. Pure.
//! - [`conntrack`]: flow keys, entries, TCP state, timeouts, the sharded
//!   flow table. Pure.
//! - [`nat`]: rules, actions, address sets, port allocation, mapping
//!   behaviour. Pure.
//! - [`lb`]: virtual services, real servers, schedulers, persistence. Pure.
//! - [`engine`]: the per-packet pipeline that ties the three together
//!   (parse, track, classify, translate, route) and returns a verdict. Pure.
//! - [`control`]: config file, offline replay, CLI output. Reads files.
//! - [`snapshot`]: the versioned snapshot file; capture from and restore
//!   into an engine (handover, crash recovery).
//!
//! The binary (`src/main.rs`) is a thin clap front end.

pub mod conntrack;
pub mod control;
pub mod dataplane;
pub mod engine;
pub mod lb;
pub mod nat;
pub mod packet;
pub mod snapshot;
