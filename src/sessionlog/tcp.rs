//! Syslog over TCP (RFC 6587, octet counting: each line goes as
//! `LENGTH SP LINE` on one stream), for rates a datagram per line cannot
//! carry and for receivers that must not lose lines to a full socket.
//!
//! Lines wait in a bounded buffer ([`MAX_PENDING`]) while the stream is
//! slow or down; the stream is reconnected at most once a second. A line
//! is counted sent once the kernel took all of it; a line cut by a broken
//! connection, or refused by a full buffer, is counted lost. Lines the
//! kernel took but the receiver never read when the connection broke are
//! lost without being known (TCP has no receipts; RELP would).

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bytes of framed lines kept while the receiver is slow or away (about
/// 20,000 lines).
pub const MAX_PENDING: usize = 4 << 20;

/// How long a connection attempt may take at start (and on reload).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a reconnection may hold the logger thread (events wait in the
/// workers' rings meanwhile).
const RECONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Between two reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What one [`TcpSink::flush`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Lines the kernel took whole.
    pub sent: usize,
    /// Lines cut by a broken connection.
    pub lost: usize,
    /// Why the connection broke or could not be made.
    pub error: Option<String>,
}

/// A syslog stream and the lines waiting for it.
pub struct TcpSink {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Framed lines: `buf[head..]` waits, of which `buf[head..written]`
    /// was taken by the kernel (the oldest line, partly).
    buf: Vec<u8>,
    head: usize,
    written: usize,
    /// Where each waiting line's frame ends in `buf`, oldest first.
    ends: VecDeque<usize>,
    last_attempt: Instant,
}

fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl TcpSink {
    /// Connects to `addr`; the error says why not.
    pub fn connect(addr: SocketAddr) -> Result<TcpSink, String> {
        let stream =
            open(addr, CONNECT_TIMEOUT).map_err(|e| format!("logging.syslog tcp:{addr}: {e}"))?;
        Ok(TcpSink {
            addr,
            stream: Some(stream),
            buf: Vec::new(),
            head: 0,
            written: 0,
            ends: VecDeque::new(),
            last_attempt: Instant::now(),
        })
    }

    /// Queues `line` (framed); false when the buffer is full.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if self.buf.len() - self.head + line.len() + 8 > MAX_PENDING {
            return false;
        }
        let _ = write!(self.buf, "{} ", line.len());
        self.buf.extend_from_slice(line);
        self.ends.push_back(self.buf.len());
        true
    }

    /// Lines queued and not yet sent whole.
    pub fn pending(&self) -> usize {
        self.ends.len()
    }

    /// Writes what the kernel takes now, reconnecting first if the stream
    /// is down and an attempt is due.
    pub fn flush(&mut self) -> Flushed {
        let mut f = Flushed::default();
        if self.ends.is_empty() {
            return f;
        }
        if self.stream.is_none() {
            if self.last_attempt.elapsed() < RECONNECT_EVERY {
                return f;
            }
            self.last_attempt = Instant::now();
            match open(self.addr, RECONNECT_TIMEOUT) {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    f.error = Some(format!("tcp:{}: {e}", self.addr));
                    return f;
                }
            }
        }
        while let Some(s) = self.stream.as_mut()
            && self.written < self.buf.len()
        {
            match s.write(&self.buf[self.written..]) {
                Ok(0) => {
                    f.error = Some(format!("tcp:{}: connection closed", self.addr));
                    f.lost += self.broken();
                }
                Ok(n) => {
                    self.written += n;
                    while let Some(&end) = self.ends.front()
                        && end <= self.written
                    {
                        self.ends.pop_front();
                        self.head = end;
                        f.sent += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    f.error = Some(format!("tcp:{}: {e}", self.addr));
                    f.lost += self.broken();
                }
            }
        }
        self.compact();
        f
    }

    /// The stream broke: a line it cut is lost (the receiver drops the
    /// cut frame with the connection); the rest wait for the next one.
    fn broken(&mut self) -> usize {
        self.stream = None;
        self.last_attempt = Instant::now();
        if self.written > self.head
            && let Some(end) = self.ends.pop_front()
        {
            self.head = end;
            self.written = end;
            return 1;
        }
        0
    }

    /// Drops the bytes of sent lines once they are most of the buffer.
    fn compact(&mut self) {
        if self.head == 0 || self.head < self.buf.len() / 2 {
            return;
        }
        self.buf.drain(..self.head);
        self.written -= self.head;
        for e in &mut self.ends {
            *e -= self.head;
        }
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// Reads octet-counted frames until `n` lines arrived.
    fn read_frames(s: &mut TcpStream, n: usize) -> Vec<String> {
        let mut data = Vec::new();
        let mut lines = Vec::new();
        let mut chunk = [0u8; 65536];
        while lines.len() < n {
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0, "closed after {} lines", lines.len());
            data.extend_from_slice(&chunk[..k]);
            while let Some(sp) = data.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
                if data.len() < sp + 1 + len {
                    break;
                }
                lines.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
                data.drain(..sp + 1 + len);
            }
        }
        lines
    }

    /// Every line arrives framed and in order, also when the receiver is
    /// slower than the sender (the kernel buffer fills and lines wait).
    #[test]
    fn lines_arrive_octet_counted_and_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sink = TcpSink::connect(l.local_addr().unwrap()).unwrap();
        let (mut rx, _) = l.accept().unwrap();
        let want: Vec<String> = (0..20_000)
            .map(|i| {
                format!(
                    "<134>1 - h natgw 1 create - line {i} {}",
                    "x".repeat(i % 97)
                )
            })
            .collect();
        let mut sent = 0;
        for w in &want {
            assert!(sink.push(w.as_bytes()));
        }
        let reader = std::thread::spawn(move || read_frames(&mut rx, 20_000));
        let until = Instant::now() + Duration::from_secs(20);
        while sink.pending() > 0 {
            let f = sink.flush();
            assert_eq!((f.lost, f.error), (0, None));
            sent += f.sent;
            assert!(
                Instant::now() < until,
                "stuck with {} pending",
                sink.pending()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sent, 20_000);
        assert_eq!(reader.join().unwrap(), want);
        assert_eq!(sink.buf.len(), 0, "sent bytes are dropped");
    }

    /// A refused connection is an error that names the address; a full
    /// buffer refuses lines; a broken stream is reconnected and the lines
    /// that waited go out on the new one.
    #[test]
    fn refusals_full_buffer_and_reconnection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = TcpSink::connect(addr).err().unwrap();
        assert!(
            e.starts_with(&format!("logging.syslog tcp:{addr}: ")),
            "{e}"
        );

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sink = TcpSink::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        let line = vec![b'x'; 1000];
        let mut taken = 0;
        while sink.push(&line) {
            taken += 1;
        }
        assert!(
            (4000..4200).contains(&taken),
            "{taken} lines of 1000 bytes in 4 MiB"
        );
        // The receiver goes away: what the kernel had taken is gone, the
        // cut line is lost, the rest wait.
        drop(rx);
        let mut f = Flushed::default();
        let until = Instant::now() + Duration::from_secs(10);
        while f.error.is_none() {
            let g = sink.flush();
            f.sent += g.sent;
            f.lost += g.lost;
            f.error = g.error;
            assert!(Instant::now() < until, "no error from a closed peer");
        }
        assert!(f.lost <= 1, "{f:?}");
        let waiting = sink.pending();
        assert_eq!(f.sent + f.lost + waiting, taken);
        assert!(waiting > 0);
        // Back: the waiting lines go out on a new connection.
        sink.last_attempt = Instant::now() - RECONNECT_EVERY;
        let g = sink.flush();
        assert_eq!(g.error, None);
        let (mut rx, _) = l.accept().unwrap();
        let reader = std::thread::spawn(move || read_frames(&mut rx, waiting));
        while sink.pending() > 0 {
            let g = sink.flush();
            assert_eq!(g.error, None);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reader.join().unwrap().len(), waiting);
    }
}
