//! Control plane: the config file, offline replay, the control socket's
//! transport, and the text and JSON renderings the CLI prints.
//!
//! - [`config`]: the config file, parsed and validated (errors name file,
//!   line and field).
//! - [`socket`]: the control socket's transport (client [`socket::call`],
//!   daemon-side [`socket::Server`]); imports only [`crate::protocol`].
//! - [`format`](mod@format): replies and the config as text; imports the config and
//!   [`crate::protocol`] types, never the socket.
//! - [`replay`]: the engine over a pcap file (`natgw replay`).
//! - [`metrics`]: the Prometheus endpoint (`[metrics] listen`): the
//!   exposition rendered from protocol replies, and its HTTP thread, which
//!   asks the control loop through [`socket::Submitter`].
//!
//! The daemon (`natgw run`) is [`crate::daemon`], the health checker
//! [`crate::health`], the wire types [`crate::protocol`].

pub mod config;
pub mod format;
pub mod metrics;
pub mod replay;
pub mod socket;
