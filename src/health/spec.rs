//! What a health check is: its spec as configured ([`CheckSpec`],
//! [`CheckKind`]) and the rules a set of checks must follow
//! ([`validate`]). Plain data; may import the `lb` table types only.

use crate::lb::{LbTable, ServiceKey};
use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;
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

impl CheckKind {
    /// `tcp` or `http`, as the config and the log name it.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
        }
    }
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

/// Shortest interval and timeout accepted.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Why a check set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("service {service}: real server {real} has port 0, so its check needs a port")]
    NeedsPort {
        service: ServiceKey,
        real: SocketAddrV4,
    },
    #[error("service {0} has two checks")]
    Duplicate(ServiceKey),
    #[error("service {service}: {reason}")]
    Invalid { service: ServiceKey, reason: String },
}
/// Checks a check set against a table (the engine's current one, or the
/// one a reload is about to swap in): one check per service, sane
/// numbers, an HTTP path that fits a request line, and a port for every
/// port-0 real server. Services the table does not have are accepted
/// (they may be added later).
pub fn validate(lb: &LbTable, checks: &[(ServiceKey, CheckSpec)]) -> Result<(), CheckError> {
    let mut seen = std::collections::BTreeSet::new();
    for (key, spec) in checks {
        if !seen.insert(*key) {
            return Err(CheckError::Duplicate(*key));
        }
        let bad = |reason: &str| CheckError::Invalid {
            service: *key,
            reason: reason.into(),
        };
        if spec.rise == 0 || spec.fall == 0 {
            return Err(bad("check rise and fall must be at least 1"));
        }
        if spec.interval < MIN_PERIOD || spec.timeout < MIN_PERIOD {
            return Err(bad("check interval and timeout must be at least 10 ms"));
        }
        if let CheckKind::Http { path, .. } = &spec.kind
            && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace()))
        {
            return Err(bad(
                "check path must start with `/` and contain no white space",
            ));
        }
        if spec.port.is_some_and(|p| p != 0) {
            continue;
        }
        if let Some(svc) = lb.service(key)
            && let Some(r) = svc.reals().iter().find(|r| r.port == 0)
        {
            return Err(CheckError::NeedsPort {
                service: *key,
                real: r.socket_addr(),
            });
        }
    }
    Ok(())
}
