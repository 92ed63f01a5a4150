//! natgw: a userspace NAT gateway.
//!
//! `ls src` is the architecture. Layers, from the wire inwards; each may
//! import only the layers listed above it (never one below), so the
//! arrows point one way:
//!
//! | layer | module | what it holds | may import |
//! |---|---|---|---|
//! | frames | [`packet`] | views over frame bytes, in-place rewrite, checksums, ARP frames | — |
//! | state | [`conntrack`] | flow keys, entries, TCP state, timeouts, the sharded flow table | packet |
//! | policy | [`nat`] | rules, actions, address sets, port allocation, mapping behaviour | packet, conntrack |
//! | policy | [`lb`] | virtual services, real servers, schedulers, persistence | packet, conntrack, nat |
//! | pipeline | [`engine`] | the per-packet pipeline (parse, track, classify, translate, route) returning a verdict | the four above |
//! | state file | [`snapshot`] | the versioned snapshot format, a chain of version upgrades; capture from / restore into an engine | engine and below |
//! | I/O shell | [`dataplane`] | a batch [`dataplane::device::Device`] trait (AF_XDP, TUN, in-memory with fault injection), one generic worker loop, ARP/neighbours, the XDP program, host setup; its own `DataplaneConfig`; the only `unsafe` (in `dataplane::sys`) | engine and below |
//! | wire | [`protocol`] | the control socket's requests and typed replies, plain data (no clap, no I/O) | types of the layers above (engine, lb, dataplane stats) |
//! | I/O shell | [`ha`] | HA state sync with a peer: the sync thread, its wire format and reliable stream | engine, snapshot and below, dataplane's clock |
//! | I/O shell | [`sessionlog`] | NAT session logging: drains the engine's event rings, exports IPFIX (RFC 8158) and syslog (RFC 5424) | engine and below, dataplane's clock |
//! | I/O shell | [`health`] | health checks of real servers (own threads, kernel sockets) | protocol (its status row), dataplane (neighbours, sys), engine and below; its tests read configs |
//! | control | [`control`] | the config file (builds the engine and the dataplane config), offline replay, text/JSON renderings, the control socket's transport, the Prometheus endpoint (`control::metrics`) | everything above except daemon |
//! | top | [`daemon`] | `natgw run`: process lifecycle, signals, the control loop and its one request dispatcher, handover, periodic snapshots | everything; nothing imports it |
//!
//! The pure layers (packet to engine) never touch a socket, a clock or a
//! thread: time is passed in, so they are tested with a virtual clock.
//! The binary (`src/main.rs`) is a thin clap front end over [`protocol`]
//! and [`control`]. Each module's own doc says what it may import.

pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod ha;
pub mod health;
pub mod lb;
pub mod nat;
pub mod packet;
pub mod protocol;
pub mod sessionlog;
pub mod snapshot;
