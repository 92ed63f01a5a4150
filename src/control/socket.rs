//! The control socket: a Unix stream socket carrying the
//! [`protocol`](crate::protocol): one JSON request per connection (a
//! line), answered by one JSON reply (a line).
//!
//! The socket is created with mode 0600 (root's); a stale socket file left
//! by a dead process is replaced, a live one is refused ("already running").
//!
//! This module moves bytes only: it may import [`crate::protocol`] and
//! std, nothing else of natgw (what a request does is the daemon's
//! business, how a reply looks on a terminal is `control::format`'s).

use crate::protocol::{Encoded, Query, Request, Response, error_reply};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

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

/// Serves one connection: reads a request line, answers with `handle`.
/// A request that cannot be read or parsed gets an error reply.
pub fn serve_one(stream: UnixStream, handle: impl FnOnce(Request) -> Encoded) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let reply = match reader.read_line(&mut line) {
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => handle(req),
            Err(e) => error_reply(format!("bad request: {e}")),
        },
        Err(e) => error_reply(format!("reading request: {e}")),
    };
    let mut w = &stream;
    let _ = w.write_all(reply.0.as_bytes());
    let _ = w.write_all(b"\n");
}

/// Sends `query` to the daemon at `path` and returns its typed reply.
pub fn call<Q: Query>(path: &Path, query: Q) -> Result<Q::Reply, String> {
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
    resp.into_result()
}
