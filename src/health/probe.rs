//! Running one check: a kernel TCP socket from the reserved source ports
//! ([`SOURCE_PORTS`]), a connect within the deadline and, for HTTP, one
//! `GET` and its response read and judged. No state, no scheduling: the
//! scheduler (`health/mod.rs`) hands a [`Job`] to [`check`] on a thread of
//! its own. May import the spec types, the `nat` port range and the
//! dataplane's clock-free system helpers; nothing of the scheduler.

use super::TargetKey;
use super::spec::{CheckKind, CheckSpec};
use crate::nat::PortRange;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Instant;

/// Source ports of the check sockets (see the module docs).
pub const SOURCE_PORTS: PortRange = PortRange::HEALTH_CHECK;
/// Most bytes of an HTTP response read (status line, headers and body).
pub const MAX_RESPONSE: usize = 1 << 20;
/// Source ports tried per check when the ones tried are busy.
const PORT_TRIES: u32 = 16;

/// A check to run: everything the check thread needs.
pub(super) struct Job {
    pub(super) key: TargetKey,
    pub(super) epoch: u64,
    pub(super) spec: CheckSpec,
    pub(super) target: SocketAddrV4,
    pub(super) source: Ipv4Addr,
}

/// Runs one check to its end; `Err` says why it failed, in a few words.
pub(super) fn check(job: &Job, cursor: &AtomicU32) -> Result<(), String> {
    let deadline = Instant::now() + job.spec.timeout;
    let stream = connect(job, cursor, deadline)?;
    match &job.spec.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Http {
            path,
            status,
            body,
            host,
        } => {
            let host = host.clone().unwrap_or_else(|| match job.target.port() {
                80 => job.target.ip().to_string(),
                _ => job.target.to_string(),
            });
            http_get(stream, path, &host, *status, body.as_deref(), deadline)
        }
    }
}

/// A connected socket from a [`SOURCE_PORTS`] port to the target, within
/// the deadline.
pub(super) fn connect(
    job: &Job,
    cursor: &AtomicU32,
    deadline: Instant,
) -> Result<TcpStream, String> {
    use nix::errno::Errno;
    let mut source = job.source;
    let mut last = String::from("no free source port");
    for _ in 0..PORT_TRIES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timeout".into());
        }
        let port = SOURCE_PORTS.nth(cursor.fetch_add(1, Relaxed));
        let fd = socket().map_err(|e| format!("socket: {e}"))?;
        let s = nix::sys::socket::SockaddrIn::from(SocketAddrV4::new(source, port));
        match nix::sys::socket::bind(fd.as_raw_fd(), &s) {
            Ok(()) => {}
            Err(Errno::EADDRNOTAVAIL) if !source.is_unspecified() => {
                // The host does not have the engine's interface address:
                // let the kernel choose the source.
                source = Ipv4Addr::UNSPECIFIED;
                continue;
            }
            Err(Errno::EADDRINUSE) => {
                last = format!("source port {port} in use");
                continue;
            }
            Err(e) => return Err(format!("bind {source}:{port}: {}", errno_text(e))),
        }
        let tv =
            nix::sys::time::TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
        // Linux bounds a blocking connect() by SO_SNDTIMEO.
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SendTimeout, &tv)
            .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
        let t = nix::sys::socket::SockaddrIn::from(job.target);
        match nix::sys::socket::connect(fd.as_raw_fd(), &t) {
            Ok(()) => return Ok(TcpStream::from(fd)),
            // This 4-tuple is taken (another check, or TIME_WAIT).
            Err(Errno::EADDRNOTAVAIL) | Err(Errno::EADDRINUSE) => {
                last = format!("source port {port} busy towards {}", job.target);
                continue;
            }
            Err(Errno::EINPROGRESS) | Err(Errno::EAGAIN) | Err(Errno::ETIMEDOUT) => {
                return Err("timeout (no answer to connect)".into());
            }
            Err(e) => return Err(errno_text(e)),
        }
    }
    Err(last)
}

/// A TCP socket with SO_REUSEADDR and an abortive close (SO_LINGER 0).
pub(super) fn socket() -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{self as so, sockopt};
    let fd = so::socket(
        so::AddressFamily::Inet,
        so::SockType::Stream,
        so::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    so::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    so::setsockopt(
        &fd,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    Ok(fd)
}

/// Short lower-case text for the errors a check meets.
pub(super) fn errno_text(e: nix::errno::Errno) -> String {
    use nix::errno::Errno;
    match e {
        Errno::ECONNREFUSED => "connection refused".into(),
        Errno::EHOSTUNREACH => "host unreachable".into(),
        Errno::ENETUNREACH => "network unreachable".into(),
        Errno::ECONNRESET => "connection reset".into(),
        Errno::ETIMEDOUT => "timeout".into(),
        e => e.desc().to_lowercase(),
    }
}

pub(super) fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => "timeout".into(),
        _ => match e.raw_os_error() {
            Some(n) => errno_text(nix::errno::Errno::from_raw(n)),
            None => e.to_string(),
        },
    }
}

/// `GET path HTTP/1.0`, then the response's status and body against
/// what is expected.
pub(super) fn http_get(
    mut s: TcpStream,
    path: &str,
    host: &str,
    want_status: u16,
    want_body: Option<&str>,
    deadline: Instant,
) -> Result<(), String> {
    let left = |what: &str| {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(format!("timeout ({what})"))
        } else {
            Ok(d)
        }
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: natgw-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    s.set_write_timeout(Some(left("sending the request")?))
        .map_err(|e| io_text(&e))?;
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending the request: {}", io_text(&e)))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let complete = loop {
        if let Some(r) = Response::parse(&buf)
            && r.complete(buf.len())
        {
            break true;
        }
        if buf.len() >= MAX_RESPONSE {
            break false;
        }
        let d = match left("reading the response") {
            Ok(d) => d,
            Err(e) => return Err(format!("{e}: {} bytes read", buf.len())),
        };
        s.set_read_timeout(Some(d)).map_err(|e| io_text(&e))?;
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_RESPONSE - buf.len())]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "timeout (reading the response: {} bytes read)",
                    buf.len()
                ));
            }
            Err(e) => return Err(format!("reading the response: {}", io_text(&e))),
        }
    };
    let Some(r) = Response::parse(&buf) else {
        return Err(if buf.is_empty() {
            "empty response".into()
        } else {
            format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(40)])
            )
        });
    };
    if r.status != want_status {
        return Err(format!("HTTP status {}, want {want_status}", r.status));
    }
    if let Some(want) = want_body {
        let body = &buf[r.body_at..];
        if !contains(body, want.as_bytes()) {
            return Err(format!(
                "body ({} bytes{}) does not contain {want:?}",
                body.len(),
                if complete { "" } else { ", truncated" }
            ));
        }
    }
    Ok(())
}

/// The parts of an HTTP response head the check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Response {
    status: u16,
    /// Offset of the body in the buffer.
    body_at: usize,
    content_length: Option<usize>,
}

impl Response {
    /// Parses a complete head (through the blank line); `None` until then
    /// or if it is not HTTP.
    pub(super) fn parse(buf: &[u8]) -> Option<Response> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&buf[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        if !parts.next()?.starts_with("HTTP/") {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        let content_length = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        });
        Some(Response {
            status,
            body_at: end + 4,
            content_length,
        })
    }

    /// Whether `len` bytes hold the whole response (known length only).
    pub(super) fn complete(&self, len: usize) -> bool {
        self.content_length
            .is_some_and(|n| len >= self.body_at.saturating_add(n))
    }
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_heads() {
        let r = Response::parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.content_length), (204, Some(0)));
        assert!(r.complete(r.body_at));
        assert!(
            Response::parse(b"HTTP/1.0 200 OK\r\nX: y\r\n").is_none(),
            "head unfinished"
        );
        assert!(Response::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        let r = Response::parse(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap();
        assert_eq!((r.body_at, r.content_length), (19, None));
        assert!(!r.complete(100), "no length: read to the end");
        assert!(contains(b"hello world", b"o w") && !contains(b"hello", b"world"));
    }
}
