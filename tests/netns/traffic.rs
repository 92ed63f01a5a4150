//! The long-lived traffic of the hitless and HA tests: a line-echo
//! server, clients that keep connections busy and check every echo, and a
//! paced UDP stream that reports what never came back and when.

use serde_json::Value;

/// asyncio line-echo server on a port.
pub const ECHO_SERVER: &str = r#"
import asyncio, sys
async def handle(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                break
            w.write(line)
            await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=512)
    print("READY", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"#;

/// `N` connections to HOST:PORT, each sending a line every `gap` seconds
/// for `secs` seconds and checking every echo. Prints CONNECTED once all
/// are open, then one JSON line with the results.
pub const CHAT_CLIENTS: &str = r#"
import asyncio, json, sys, time
host, port, n, secs, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
st = {"conns": 0, "sent": 0, "ok": 0, "broken": 0, "errors": [], "max_wait_ms": 0.0}
async def one(i, end):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except Exception as e:
        st["broken"] += 1; st["errors"].append("connect %d: %r" % (i, e)); return
    st["conns"] += 1
    if st["conns"] == n:
        print("CONNECTED", flush=True)
    k = 0
    try:
        while time.time() < end:
            msg = b"%d %d\n" % (i, k); k += 1
            t = time.time()
            w.write(msg); await w.drain(); st["sent"] += 1
            line = await asyncio.wait_for(r.readline(), 40)
            if line != msg:
                raise Exception("bad echo %r" % line)
            st["ok"] += 1
            st["max_wait_ms"] = max(st["max_wait_ms"], (time.time() - t) * 1000)
            await asyncio.sleep(gap)
        w.close()
    except Exception as e:
        st["broken"] += 1; st["errors"].append("conn %d: %r" % (i, e))
async def main():
    end = time.time() + secs
    await asyncio.gather(*(one(i, end) for i in range(n)))
    st["errors"] = st["errors"][:5]
    print(json.dumps(st), flush=True)
asyncio.run(main())
"#;

/// A UDP stream: datagram number k every 2 ms for `secs` to HOST:PORT
/// (an echo server), then 1 s for the last echoes. Reports what was sent
/// and echoed, the longest time without an echo, and when (wall clock)
/// each datagram that never came back was sent.
pub const UDP_STREAM: &str = r#"
import json, socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port)); s.setblocking(False)
sent = 0; seen = set(); sent_at = []; last = time.time(); gap = 0.0; gap_end = last
end = time.time() + secs; nxt = time.time()
while time.time() < end + 1.0:
    now = time.time()
    if now >= nxt and now < end:
        try:
            s.send(b"%d" % sent); sent_at.append(now); sent += 1
        except OSError:
            pass
        nxt += 0.002
    try:
        while True:
            d = s.recv(2048)
            try:
                seen.add(int(d.split()[0]))
            except ValueError:
                pass
            t = time.time()
            if t - last > gap:
                gap = t - last; gap_end = t
            last = t
    except (BlockingIOError, ConnectionRefusedError):
        pass
    time.sleep(0.0005)
lost = [sent_at[k] for k in range(sent) if k not in seen]
print(json.dumps({"sent": sent, "got": len(seen), "longest_gap_ms": gap * 1000, "longest_gap_end": gap_end, "lost_at": lost}), flush=True)
"#;

/// Datagrams the stream `u` sent.
pub fn sent_of(u: &Value) -> usize {
    u["sent"].as_u64().unwrap() as usize
}

/// Wall-clock time, seconds since the epoch (as the stream reports it).
pub fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Datagrams of the stream `u` sent between `from` and `to` that never
/// came back.
pub fn lost_between(u: &Value, from: f64, to: f64) -> usize {
    u["lost_at"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_f64())
        .filter(|&t| t >= from && t <= to)
        .count()
}
