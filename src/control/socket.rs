//! The control socket: a Unix stream socket carrying the
//! [`protocol`](crate::protocol): one JSON request per connection (a
//! line), answered by one JSON reply (a line).
//!
//! The daemon serves it with a [`Server`] (a listener thread; see there
//! why a slow client cannot stall the control loop); the CLI uses
//! [`call`].
//!
//! The socket is created with mode 0600 (root's); a stale socket file left
//! by a dead process is replaced, a live one is refused ("already running").
//!
//! This module moves bytes only: it may import [`crate::protocol`], std
//! and `log`, nothing else of natgw (what a request does is the daemon's
//! business, how a reply looks on a terminal is `control::format`'s).

use crate::protocol::{Encoded, Query, Request, Response, error_reply};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Binds the control socket at `path`, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another natgw is running (its control socket {} answers); stop it first",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale socket {}: {e}", path.display()))?;
    }
    let l =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    l.set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    Ok(l)
}

/// Sends `query` to the daemon at `path` and returns its typed reply.
pub fn call<Q: Query>(path: &Path, query: Q) -> Result<Q::Reply, String> {
    call_keep(path, query).map(|(r, _)| r)
}

/// Like [`call`], and hands back the connection: the daemon's side of it
/// stays until it is dropped (up to a second), which a handover uses to
/// hold the old process back until the new one forwards.
pub fn call_keep<Q: Query>(path: &Path, query: Q) -> Result<(Q::Reply, UnixStream), String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!("cannot reach natgw at {}: {e} (is `natgw run` running? --socket or --config names another socket)", path.display())
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req: Request = query.into();
    let body = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes())
        .and_then(|_| s.write_all(b"\n"))
        .map_err(|e| format!("sending request: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("reading reply: {e}"))?;
    let resp: Response<Q::Reply> =
        serde_json::from_str(line.trim()).map_err(|e| format!("bad reply from natgw: {e}"))?;
    resp.into_result().map(|r| (r, s))
}

// ---------------------------------------------------------------------
// The daemon's side: a listener thread that never blocks the control loop
// ---------------------------------------------------------------------

/// Connections read or answered at once. When that many are open, a new
/// one takes the place of the oldest that is still sending its request
/// (which is told so); only when all of them wait for their answer does a
/// new one wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// A client has this long, from `accept`, to send its whole request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;
/// A reply must be written within this (large `natgw flows` replies to a
/// client that reads slowly).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Longest the listener waits in `poll` for a connection before it looks
/// at the stop flag (a connection wakes it at once).
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// How soon the listener looks again when all connection threads are busy
/// or `accept` failed.
const BUSY_POLL: Duration = Duration::from_millis(5);
/// How long a connection thread waits for its client to close after the
/// reply.
const LINGER: Duration = Duration::from_secs(1);
/// How long [`Server::shutdown`] waits for replies still being written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A request read off the socket, waiting for the control loop's answer.
pub struct Pending {
    request: Request,
    reply: mpsc::SyncSender<Encoded>,
}

impl Pending {
    /// Answers the request with `handle` (run on the caller's thread: the
    /// control loop, so requests never run concurrently). The reply is
    /// written by the connection's own thread.
    pub fn serve(self, handle: impl FnOnce(Request) -> Encoded) {
        let reply = handle(self.request);
        // The connection thread waits for this; it only goes away at
        // shutdown, and then nobody is left to tell.
        let _ = self.reply.send(reply);
    }
}

/// The control socket's server side.
///
/// How it keeps the control loop (expiry, rates, snapshots) going:
///
/// - A listener thread accepts connections and gives each its own short
///   thread (at most [`MAX_CONNECTIONS`] at once), which reads the request
///   line within [`REQUEST_DEADLINE`] (in total, not per read: a client
///   that trickles bytes is cut off too) and of at most [`MAX_REQUEST`]
///   bytes. A client that is slow, half-written or silent only holds its
///   own thread; when [`MAX_CONNECTIONS`] are open, the oldest one still
///   sending is cut off for a new one, so many slow clients cannot keep
///   a quick one waiting either.
/// - A request that cannot be read or parsed is answered by that thread
///   with an error; a good one is queued for the control loop, which
///   takes it with [`Server::next`] between its ticks and answers it with
///   [`Pending::serve`]. So requests are served one at a time, in
///   order, on the control thread: changes to the engine stay serialised.
/// - The connection thread writes the reply (within 30 s), so a client
///   that reads slowly does not hold up the loop either.
pub struct Server {
    requests: Option<mpsc::Receiver<Pending>>,
    /// The queue's sending side, for requests that come another way (the
    /// metrics endpoint): see [`Server::submitter`].
    queue: mpsc::Sender<Pending>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `listener` (from [`bind`]).
    pub fn start(listener: UnixListener) -> Result<Server, String> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let queue = tx.clone();
        let thread = std::thread::Builder::new()
            .name("natgw-control".into())
            .spawn(move || listen(listener, tx, &s))
            .map_err(|e| format!("control socket thread: {e}"))?;
        Ok(Server {
            requests: Some(rx),
            queue,
            stop,
            thread: Some(thread),
        })
    }

    /// The next request, waiting at most `timeout` for one.
    /// A handle that puts requests into the same queue as the socket's
    /// clients (answered by the control loop, one at a time).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            queue: self.queue.clone(),
        }
    }

    pub fn next(&self, timeout: Duration) -> Option<Pending> {
        let rx = self.requests.as_ref()?;
        if timeout.is_zero() {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(timeout).ok()
        }
    }

    /// Stops accepting, answers requests still queued with "natgw is
    /// stopping", and waits (a few seconds at most) for replies being
    /// written — a handover's reply among them.
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the queue drops each waiting request's reply channel.
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Asks the control loop a request from another thread, as a socket
/// client would (see [`Server::submitter`]).
#[derive(Clone)]
pub struct Submitter {
    queue: mpsc::Sender<Pending>,
}

impl Submitter {
    /// The control loop's reply; "natgw is stopping" once it no longer
    /// serves requests.
    pub fn ask(&self, request: Request) -> Encoded {
        let (tx, rx) = mpsc::sync_channel(1);
        let stopping = || error_reply("natgw is stopping".into());
        match self.queue.send(Pending { request, reply: tx }) {
            Ok(()) => rx.recv().unwrap_or_else(|_| stopping()),
            Err(_) => stopping(),
        }
    }
}

/// A connection's thread as the listener sees it.
struct Conn {
    thread: JoinHandle<()>,
    /// The same socket, to cut the connection off (see [`MAX_CONNECTIONS`]).
    stream: Option<UnixStream>,
    /// [`READING`], [`READ`] or [`EVICTED`]: whichever of the connection
    /// thread (done reading) and the listener (cutting it off) comes
    /// first decides.
    state: Arc<AtomicU8>,
}

const READING: u8 = 0;
const READ: u8 = 1;
const EVICTED: u8 = 2;

/// The listener thread: accept, hand each connection its own thread.
fn listen(listener: UnixListener, tx: mpsc::Sender<Pending>, stop: &AtomicBool) {
    let mut conns: Vec<Conn> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        conns.retain(|c| !c.thread.is_finished());
        if conns.len() >= MAX_CONNECTIONS && !evict_oldest_reader(&conns) {
            std::thread::sleep(BUSY_POLL);
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let tx = tx.clone();
                let state = Arc::new(AtomicU8::new(READING));
                let st = state.clone();
                let clone = stream.try_clone().ok();
                match std::thread::Builder::new()
                    .name("natgw-control-conn".into())
                    .spawn(move || serve_connection(stream, &tx, &st))
                {
                    Ok(thread) => conns.push(Conn {
                        thread,
                        stream: clone,
                        state,
                    }),
                    Err(e) => log::warn!("control socket: no thread for a connection: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(&listener),
            Err(e) => {
                log::warn!("control socket: {e}");
                std::thread::sleep(BUSY_POLL);
            }
        }
    }
    drop(listener);
    let until = Instant::now() + SHUTDOWN_GRACE;
    for c in conns.into_iter().map(|c| c.thread) {
        while !c.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if c.is_finished() {
            let _ = c.join();
        }
    }
}

/// Cuts off the oldest connection still sending its request (its thread
/// answers it with an error); false if every connection has sent its
/// request already. The connection leaves the list when its thread ends.
fn evict_oldest_reader(conns: &[Conn]) -> bool {
    // `conns` is in accept order: the first reader is the oldest.
    let Some(c) = conns.iter().find(|c| {
        c.state
            .compare_exchange(READING, EVICTED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) else {
        return false;
    };
    if let Some(s) = &c.stream {
        // Its blocked read returns at once (end of file).
        let _ = s.shutdown(std::net::Shutdown::Read);
    }
    true
}

/// Waits until a connection is waiting on `listener` or [`ACCEPT_POLL`]
/// passes (to look at the stop flag).
fn wait_readable(listener: &UnixListener) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = ACCEPT_POLL.as_millis() as u16;
    if poll(&mut fds, PollTimeout::from(ms)).is_err() {
        std::thread::sleep(ACCEPT_POLL);
    }
}

/// One connection: read the request, have the control loop answer it,
/// write the reply, then wait (up to [`LINGER`]) for the client to close:
/// a handover's new process closes only once it has taken over, and the
/// old one lets go of its sockets after its connections ended.
fn serve_connection(stream: UnixStream, queue: &mpsc::Sender<Pending>, state: &AtomicU8) {
    let read = read_request(&stream);
    let evicted = state
        .compare_exchange(READING, READ, Ordering::AcqRel, Ordering::Relaxed)
        .is_err();
    let read = if evicted {
        Err(format!(
            "control socket busy: {MAX_CONNECTIONS} connections open; yours had not sent a complete request line and was closed for a newer one"
        ))
    } else {
        read
    };
    let reply = match read {
        Ok(request) => {
            let (tx, rx) = mpsc::sync_channel(1);
            let stopping = || error_reply("natgw is stopping".into());
            match queue.send(Pending { request, reply: tx }) {
                Ok(()) => rx.recv().unwrap_or_else(|_| stopping()),
                Err(_) => stopping(),
            }
        }
        Err(e) => error_reply(e),
    };
    let _ = stream.set_write_timeout(Some(WRITE_DEADLINE));
    let mut w = &stream;
    let written = w
        .write_all(reply.0.as_bytes())
        .and_then(|_| w.write_all(b"\n"));
    if written.is_ok() && stream.set_read_timeout(Some(LINGER)).is_ok() {
        let mut b = [0u8; 64];
        let until = Instant::now() + LINGER;
        while Instant::now() < until && matches!((&stream).read(&mut b), Ok(n) if n > 0) {}
    }
}

/// Reads one request line within [`REQUEST_DEADLINE`] (the line may also
/// end at end of file) and parses it.
fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let _ = stream.set_nonblocking(false);
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow());
        }
        let _ = stream.set_read_timeout(Some(left));
        match (&*stream).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let got = &chunk[..n];
                if let Some(end) = got.iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&got[..end]);
                    break;
                }
                buf.extend_from_slice(got);
                if buf.len() > MAX_REQUEST {
                    return Err(format!(
                        "bad request: longer than {MAX_REQUEST} bytes without a newline"
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(too_slow());
            }
            Err(e) => return Err(format!("reading request: {e}")),
        }
    }
    let line = std::str::from_utf8(&buf).map_err(|e| format!("bad request: {e}"))?;
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

fn too_slow() -> String {
    format!(
        "reading request: no complete request line within {} s",
        REQUEST_DEADLINE.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, StatsReport, answer};

    /// A control socket's path in a fresh scratch directory, removed when
    /// the returned guard is dropped (keep it for the test's life).
    fn sock(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::Builder::new()
            .prefix(&format!("natgw-sock-{name}-"))
            .tempdir()
            .unwrap();
        let path = d.path().join("ctl.sock");
        (d, path)
    }

    /// Answers requests on this thread, like the control loop, until `n`
    /// have been served.
    fn serve_n(server: &Server, n: usize) {
        let mut served = 0;
        let until = Instant::now() + Duration::from_secs(10);
        while served < n && Instant::now() < until {
            if let Some(p) = server.next(Duration::from_millis(10)) {
                p.serve(|req| match req {
                    Request::Stats(q) => answer(q, |_| {
                        Ok(StatsReport {
                            backend: "test".into(),
                            ..Default::default()
                        })
                    }),
                    _ => error_reply("only stats here".into()),
                });
                served += 1;
            }
        }
    }

    #[test]
    fn a_silent_client_holds_up_neither_the_loop_nor_other_clients() {
        let (_dir, path) = sock("silent");
        let server = Server::start(bind(&path).unwrap()).unwrap();
        // Connected, says nothing.
        let _silent = UnixStream::connect(&path).unwrap();
        // Half a request, never finished.
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(br#"{"cmd":"st"#).unwrap();
        let t0 = Instant::now();
        let p = path.clone();
        let client = std::thread::spawn(move || call(&p, protocol::Stats {}));
        serve_n(&server, 1);
        let r = client.join().unwrap().unwrap();
        assert_eq!(r.backend, "test");
        assert!(t0.elapsed() < REQUEST_DEADLINE, "{:?}", t0.elapsed());
        // The half-written one is cut off at the deadline with an error.
        let mut line = String::new();
        BufReader::new(&half).read_line(&mut line).unwrap();
        assert!(line.contains("no complete request line"), "{line}");
        server.shutdown();
    }

    #[test]
    fn many_slow_clients_do_not_keep_a_quick_one_waiting() {
        let (_dir, path) = sock("many");
        let server = Server::start(bind(&path).unwrap()).unwrap();
        // More half-written requests than the server has connections for.
        let mut slow = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 8 {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(br#"{"cmd":"st"#).unwrap();
            slow.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let p = path.clone();
        let client = std::thread::spawn(move || call(&p, protocol::Stats {}));
        serve_n(&server, 1);
        assert_eq!(client.join().unwrap().unwrap().backend, "test");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        // The oldest slow ones were cut off with a reason.
        let mut line = String::new();
        BufReader::new(&slow[0]).read_line(&mut line).unwrap();
        assert!(line.contains("control socket busy"), "{line}");
        server.shutdown();
    }

    #[test]
    fn a_huge_request_is_refused_without_reading_it_all() {
        let (_dir, path) = sock("huge");
        let server = Server::start(bind(&path).unwrap()).unwrap();
        let s = UnixStream::connect(&path).unwrap();
        let mut w = s.try_clone().unwrap();
        // Bytes without a newline, for as long as the server takes them;
        // it answers once it has 1 MiB and hangs up soon after.
        let writer = std::thread::spawn(move || {
            let block = vec![b'x'; 64 * 1024];
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if w.write_all(&block).is_err() {
                    return Some(t0.elapsed());
                }
            }
            None
        });
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("longer than 1048576 bytes"), "{line}");
        let cut = writer.join().unwrap().expect("the server never hung up");
        assert!(cut < LINGER + Duration::from_secs(2), "{cut:?}");
        server.shutdown();
    }

    #[test]
    fn bad_requests_get_an_error_reply() {
        let (_dir, path) = sock("bad");
        let server = Server::start(bind(&path).unwrap()).unwrap();
        for (req, want) in [
            (&b"not json\n"[..], "bad request"),
            (br#"{"cmd":"fly"}"#, "bad request"),
            (b"\xff\xfe\n", "bad request"),
        ] {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(req).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let r: Response<()> = serde_json::from_str(&line).unwrap();
            assert!(!r.ok);
            assert!(r.error.unwrap().starts_with(want), "{line}");
        }
        server.shutdown();
    }

    #[test]
    fn requests_waiting_at_shutdown_are_told() {
        let (_dir, path) = sock("shutdown");
        let server = Server::start(bind(&path).unwrap()).unwrap();
        let p = path.clone();
        let client = std::thread::spawn(move || call(&p, protocol::Stats {}));
        // Wait until the request is queued, then stop without serving it.
        let until = Instant::now() + Duration::from_secs(5);
        while server.requests.as_ref().unwrap().try_recv().is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.shutdown();
        assert_eq!(client.join().unwrap().unwrap_err(), "natgw is stopping");
    }
}
