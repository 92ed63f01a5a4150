//! Health checks of real servers, run by the control thread's helper
//! thread, like keepalived's TCP_CHECK and HTTP_GET.
//!
//! (Types first; the checker itself follows.)

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A health check as configured (`[service.check]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Connect (and, for HTTP, whole-exchange) deadline of one check.
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    /// Port to check instead of the real server's own.
    pub port: Option<u16>,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// The TCP handshake completes (keepalived TCP_CHECK).
    Tcp,
    /// `GET path` answers with `status` and, if given, a body containing
    /// `body` (keepalived HTTP_GET).
    Http {
        path: String,
        status: u16,
        body: Option<String>,
        host: Option<String>,
    },
}

impl Default for CheckSpec {
    fn default() -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
            port: None,
        }
    }
}
