//! NAT session logging (`[logging]`): which inside endpoint held which
//! outside address and port, and when — what abuse desks and, in many
//! countries, the law ask operators of shared addresses for.
//!
//! Workers write events into bounded per-worker rings
//! ([`crate::engine::SessionLog`]); they never block or allocate for it,
//! and an event that finds its ring full is counted (`ring_full`), never
//! silently lost. This module's thread drains the rings every few
//! milliseconds, puts wall-clock times on the events and exports them:
//!
//! - IPFIX over UDP to a collector ([`ipfix`]: RFC 7011 messages with the
//!   NAT elements of RFC 8158; templates sent at start and every
//!   `template_refresh` seconds);
//! - syslog lines ([`syslog`]: RFC 5424, one datagram per event) to a UDP
//!   address or a local datagram socket such as `/dev/log`.
//!
//! Every session is logged (no sampling). A datagram the kernel refuses
//! to send (no collector listening, a full socket buffer) loses its
//! events, counted as `send_failed`.
//!
//! Layer: an I/O shell beside `dataplane` and `ha`; imports engine and
//! below, and the data plane's clock.

pub mod ipfix;
pub mod syslog;
pub mod tcp;

use crate::conntrack::Time;
use crate::dataplane::sys;
use crate::engine::{Engine, SessionEvent, SessionEventKind};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the thread drains the rings.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Syslog lines sent per `sendmmsg`.
const LINE_BATCH: usize = 64;

/// How long a batch of syslog lines waits for a full local socket.
const SYSLOG_WAIT: Duration = Duration::from_millis(20);

/// Syslog lines formatted and waiting to be sent, back to back in one
/// buffer (no allocation per line).
#[derive(Default)]
struct LineBatch {
    buf: Vec<u8>,
    /// Where each line ends in `buf`.
    ends: Vec<usize>,
}

impl LineBatch {
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Sends lines `from..` on the connected datagram socket `fd`, one
    /// datagram each; how many went.
    fn send(&self, fd: RawFd, from: usize) -> nix::Result<usize> {
        use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
        let slices: Vec<[IoSlice; 1]> = (from..self.ends.len())
            .map(|i| {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                [IoSlice::new(&self.buf[start..self.ends[i]])]
            })
            .collect();
        let addrs = vec![None::<SockaddrStorage>; slices.len()];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
        let no_cmsgs: [ControlMessage; 0] = [];
        let r = sendmmsg(
            fd,
            &mut headers,
            &slices,
            &addrs,
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(r.count())
    }
}

/// `[logging]`; off unless `ipfix` or `syslog` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggingConfig {
    /// IPFIX collector (UDP).
    pub ipfix: Option<SocketAddr>,
    /// IPFIX observation domain id.
    pub ipfix_domain: u32,
    /// Seconds between two sendings of the IPFIX templates.
    pub template_refresh_secs: u32,
    /// Largest IPFIX message (the path MTU minus 28).
    pub max_datagram: u16,
    /// Where syslog lines go.
    pub syslog: Option<SyslogTarget>,
    /// The lines' facility number (`local0` = 16 by default).
    pub syslog_facility: u8,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            ipfix: None,
            ipfix_domain: 1,
            template_refresh_secs: 60,
            max_datagram: 1472,
            syslog: None,
            syslog_facility: 16,
        }
    }
}

impl LoggingConfig {
    /// True if any output is configured.
    pub fn enabled(&self) -> bool {
        self.ipfix.is_some() || self.syslog.is_some()
    }
}

/// A syslog destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SyslogTarget {
    /// `HOST:PORT` over UDP (RFC 5426).
    Udp(SocketAddr),
    /// A local datagram socket (an absolute path, e.g. `/dev/log`).
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: a stream (RFC 6587 octet counting).
    Tcp(SocketAddr),
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Udp(a) => write!(f, "udp {a}"),
            SyslogTarget::Unix(p) => write!(f, "unix {}", p.display()),
            SyslogTarget::Tcp(a) => write!(f, "tcp {a}"),
        }
    }
}

/// An event with wall-clock times, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEvent {
    pub ev: SessionEvent,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// When the flow was created (a `Delete`'s start), same clock.
    pub born_ms: u64,
    /// The table's limit (what a `TableFull` reports).
    pub max_flows: u32,
    /// `flows_per_source` (what a `SourceLimit` reports; 0: none).
    pub per_source: u32,
}

/// What the logger did, kept across reloads (one per process).
#[derive(Default)]
pub struct LogCounters {
    events: [AtomicU64; 5],
    ipfix_messages: AtomicU64,
    syslog_lines: AtomicU64,
    send_failed: AtomicU64,
}

/// The logger's counters as plain data (`natgw stats`, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLogStats {
    /// Where events go ("ipfix 10.0.0.9:4739", "syslog udp ...").
    pub outputs: Vec<String>,
    /// Events exported, by kind (`create`, `delete`, ...).
    pub events: Vec<(String, u64)>,
    pub ipfix_messages: u64,
    pub syslog_lines: u64,
    /// Events lost: their ring was full (the logger fell behind).
    pub dropped_ring_full: u64,
    /// Events lost: the datagram carrying them could not be sent.
    pub dropped_send_failed: u64,
}

impl LogCounters {
    /// The counters, with `ring_full` from the engine's rings.
    pub fn snapshot(&self, engine: &Engine, cfg: &LoggingConfig) -> SessionLogStats {
        let mut outputs = Vec::new();
        if let Some(a) = cfg.ipfix {
            outputs.push(format!("ipfix {a}"));
        }
        if let Some(t) = &cfg.syslog {
            outputs.push(format!("syslog {t}"));
        }
        SessionLogStats {
            outputs,
            events: SessionEventKind::ALL
                .iter()
                .zip(&self.events)
                .map(|(k, n)| (k.name().to_string(), n.load(Relaxed)))
                .collect(),
            ipfix_messages: self.ipfix_messages.load(Relaxed),
            syslog_lines: self.syslog_lines.load(Relaxed),
            dropped_ring_full: engine.sessions().missed(),
            dropped_send_failed: self.send_failed.load(Relaxed),
        }
    }
}

enum SyslogSock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
    Tcp(tcp::TcpSink),
}

/// The outputs' sockets, opened (and checked) before anything starts.
pub struct Sinks {
    cfg: LoggingConfig,
    ipfix: Option<UdpSocket>,
    syslog: Option<SyslogSock>,
}

impl Sinks {
    /// Opens a socket per output; the error names the output and why.
    pub fn open(cfg: &LoggingConfig) -> Result<Sinks, String> {
        let udp = |what: &str, to: SocketAddr| {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = UdpSocket::bind(any).map_err(|e| format!("logging.{what} {to}: {e}"))?;
            s.connect(to)
                .map_err(|e| format!("logging.{what} {to}: {e}"))?;
            s.set_nonblocking(true)
                .map_err(|e| format!("logging.{what} {to}: {e}"))?;
            Ok::<_, String>(s)
        };
        let ipfix = cfg.ipfix.map(|a| udp("ipfix", a)).transpose()?;
        let syslog = match &cfg.syslog {
            None => None,
            Some(SyslogTarget::Udp(a)) => Some(SyslogSock::Udp(udp("syslog", *a)?)),
            Some(SyslogTarget::Unix(p)) => Some(SyslogSock::Unix(unix_connect(p)?)),
            Some(SyslogTarget::Tcp(a)) => Some(SyslogSock::Tcp(tcp::TcpSink::connect(*a)?)),
        };
        Ok(Sinks {
            cfg: cfg.clone(),
            ipfix,
            syslog,
        })
    }

    /// The config these sinks were opened for.
    pub fn config(&self) -> &LoggingConfig {
        &self.cfg
    }
}

fn unix_connect(p: &std::path::Path) -> Result<UnixDatagram, String> {
    let s = UnixDatagram::unbound().map_err(|e| format!("logging.syslog {}: {e}", p.display()))?;
    s.connect(p)
        .map_err(|e| format!("logging.syslog {}: {e}", p.display()))?;
    s.set_nonblocking(true)
        .map_err(|e| format!("logging.syslog {}: {e}", p.display()))?;
    Ok(s)
}

/// The running logger thread.
pub struct SessionLogger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SessionLogger {
    /// Starts taking events from `engine` (its rings are enabled now, if
    /// they were not) and exporting them through `sinks`.
    pub fn start(sinks: Sinks, engine: Arc<Engine>, counters: Arc<LogCounters>) -> SessionLogger {
        engine.sessions().enable();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("natgw-sessionlog".into())
            .spawn(move || Thread::new(sinks, engine, counters).run(&st))
            .expect("spawning the session log thread");
        SessionLogger {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread after it exported what the rings hold (as
    /// dropping it does).
    pub fn stop(self) {}
}

impl Drop for SessionLogger {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Thread {
    sinks: Sinks,
    engine: Arc<Engine>,
    counters: Arc<LogCounters>,
    exporter: ipfix::Exporter,
    writer: syslog::LineWriter,
    lines: LineBatch,
    last_templates: Option<Instant>,
    last_warning: Option<Instant>,
    last_reconnect: Instant,
}

impl Thread {
    fn new(sinks: Sinks, engine: Arc<Engine>, counters: Arc<LogCounters>) -> Thread {
        let exporter =
            ipfix::Exporter::new(sinks.cfg.ipfix_domain, sinks.cfg.max_datagram as usize);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Thread {
            writer: syslog::LineWriter::new(sinks.cfg.syslog_facility, &host, std::process::id()),
            lines: LineBatch::default(),
            sinks,
            engine,
            counters,
            exporter,
            last_templates: None,
            last_warning: None,
            last_reconnect: Instant::now(),
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Vec::with_capacity(4096);
        loop {
            let stopping = stop.load(Relaxed);
            events.clear();
            self.engine.sessions().drain(&mut events);
            self.export(&events);
            if stopping {
                break;
            }
            std::thread::sleep(DRAIN_EVERY);
        }
        // Lines still waiting for a syslog stream get a moment to go;
        // what is left then is lost, and counted.
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(SyslogSock::Tcp(t)) = &self.sinks.syslog
            && t.pending() > 0
        {
            if Instant::now() >= until {
                let left = t.pending() as u64;
                self.counters.send_failed.fetch_add(left, Relaxed);
                break;
            }
            std::thread::sleep(DRAIN_EVERY);
            self.flush_syslog();
        }
    }

    fn export(&mut self, events: &[SessionEvent]) {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mono = sys::now();
        // Engine time -> wall time: the same distance back from now.
        let wall = |t: Time| {
            if t.0 == 0 {
                wall_ms
            } else {
                wall_ms.saturating_sub(mono.0.saturating_sub(t.0) / 1_000_000)
            }
        };
        let export_secs = (wall_ms / 1000) as u32;
        let refresh = Duration::from_secs(self.sinks.cfg.template_refresh_secs.max(1) as u64);
        if self.sinks.ipfix.is_some() && self.last_templates.is_none_or(|t| t.elapsed() >= refresh)
        {
            self.last_templates = Some(Instant::now());
            let m = self.exporter.templates(export_secs);
            self.send_ipfix(&m, 0);
        }
        let max_flows = self.engine.table().capacity() as u32;
        let per_source = self.engine.table().sources().limit().unwrap_or(0);
        for ev in events {
            let e = LogEvent {
                ev: *ev,
                at_ms: wall(ev.at),
                born_ms: wall(ev.born),
                max_flows,
                per_source,
            };
            // `ALL` lists the kinds in declaration order.
            self.counters.events[ev.kind as usize].fetch_add(1, Relaxed);
            if self.sinks.ipfix.is_some() {
                let before = self.exporter.sequence();
                if let Some(m) = self.exporter.push(&e, export_secs) {
                    let n = self.exporter.sequence().wrapping_sub(before);
                    self.send_ipfix(&m, n as u64);
                }
            }
            if self.sinks.syslog.is_some() {
                self.writer.write(&e, &mut self.lines.buf);
                self.lines.ends.push(self.lines.buf.len());
                if self.lines.ends.len() >= LINE_BATCH {
                    self.flush_syslog();
                }
            }
        }
        self.flush_syslog();
        let before = self.exporter.sequence();
        if let Some(m) = self.exporter.take() {
            let n = self.exporter.sequence().wrapping_sub(before);
            self.send_ipfix(&m, n as u64);
        }
    }

    fn send_ipfix(&mut self, m: &[u8], records: u64) {
        let Some(s) = &self.sinks.ipfix else { return };
        match s.send(m) {
            Ok(_) => {
                self.counters.ipfix_messages.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.counters.send_failed.fetch_add(records, Relaxed);
                self.warn(&format!("ipfix: {e}"));
            }
        }
    }

    /// Sends the batched syslog lines, one datagram each, with as few
    /// `sendmmsg` calls as the socket takes. A full local socket (the
    /// syslog daemon is behind) is waited on for up to [`SYSLOG_WAIT`]
    /// per batch; what cannot go then is counted as `send_failed`.
    fn flush_syslog(&mut self) {
        let n = self.lines.ends.len();
        let fd = match &mut self.sinks.syslog {
            Some(SyslogSock::Tcp(t)) => {
                let mut refused = 0;
                let mut start = 0;
                for &end in &self.lines.ends {
                    if !t.push(&self.lines.buf[start..end]) {
                        refused += 1;
                    }
                    start = end;
                }
                self.lines.clear();
                let f = t.flush();
                self.counters.syslog_lines.fetch_add(f.sent as u64, Relaxed);
                self.counters
                    .send_failed
                    .fetch_add((f.lost + refused) as u64, Relaxed);
                if let Some(e) = f.error {
                    self.warn(&format!("syslog {e}"));
                }
                if refused > 0 {
                    self.warn("syslog tcp: receiver too slow or away, buffer full");
                }
                return;
            }
            _ if n == 0 => return,
            Some(SyslogSock::Udp(s)) => s.as_raw_fd(),
            Some(SyslogSock::Unix(s)) => s.as_raw_fd(),
            None => {
                self.lines.clear();
                return;
            }
        };
        let (mut done, mut failed) = (0, 0);
        let mut waited = Duration::ZERO;
        while done < n {
            match self.lines.send(fd, done) {
                Ok(k) if k > 0 => done += k,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if waited < SYSLOG_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                    waited += Duration::from_millis(1);
                }
                Err(e) => {
                    // EAGAIN after the wait: the rest of the batch is
                    // lost. Any other error loses this line only.
                    let lost = if e == Errno::EAGAIN { n - done } else { 1 };
                    failed += lost;
                    done += lost;
                    self.warn(&format!("syslog: {}", e.desc()));
                    self.reconnect_syslog();
                }
            }
        }
        self.counters
            .syslog_lines
            .fetch_add((n - failed) as u64, Relaxed);
        self.counters.send_failed.fetch_add(failed as u64, Relaxed);
        self.lines.clear();
    }

    /// A local syslog daemon that restarted has a new socket.
    fn reconnect_syslog(&mut self) {
        if let Some(SyslogTarget::Unix(p)) = &self.sinks.cfg.syslog
            && self.last_reconnect.elapsed() >= Duration::from_secs(1)
        {
            self.last_reconnect = Instant::now();
            if let Ok(s) = unix_connect(p) {
                self.sinks.syslog = Some(SyslogSock::Unix(s));
            }
        }
    }

    /// Logs a send failure at most every 10 s.
    fn warn(&mut self, what: &str) {
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_warning = Some(Instant::now());
            log::warn!(
                "session log: {what} (events lost, counted as send_failed; further failures for 10 s are counted only)"
            );
        }
    }
}
