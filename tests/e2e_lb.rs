//! SCENARIOS 3 end to end: natgw as an LVS-NAT director (AF_XDP) in front
//! of three real HTTP servers that each answer with their own name, with
//! outside clients fetching through the VIP.
//!
//! ```text
//!   r1 10.0.0.21 ─┐                                       ┌─ out  203.0.113.100
//!   r2 10.0.0.22 ─┼─ lan0 10.0.0.1  natgw  wan0 203.0.113.1 ┤
//!   r3 10.0.0.23 ─┘                 VIP 203.0.113.10      └─ out2 203.0.113.101
//! ```
//!
//! Needs root (network namespaces); skipped with a message otherwise.

mod netns;

use netns::{Host, Spec, Topology};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");
const VIP: &str = "203.0.113.10";
const REALS: [(&str, &str); 3] = [
    ("r1", "10.0.0.21"),
    ("r2", "10.0.0.22"),
    ("r3", "10.0.0.23"),
];

/// An HTTP server answering `NAME` on port 80 and a line-echo server on
/// 9100 that prints `conn PEER` per connection.
const NAMED_SERVER: &str = r#"
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name = sys.argv[1]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer.allow_reuse_address = True
web = ThreadingHTTPServer(("0.0.0.0", 80), H)
threading.Thread(target=web.serve_forever, daemon=True).start()
echo = socket.socket(); echo.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
echo.bind(("0.0.0.0", 9100)); echo.listen(64)
print("READY", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(line); f.flush()
while True:
    c, peer = echo.accept()
    print("conn %s:%d" % peer, flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `N` GETs of a URL, one connection each; prints the answers counted by
/// body and the failures.
const LB_CLIENT: &str = r#"
import json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
counts, errors, last = {}, 0, None
for i in range(n):
    try:
        body = urllib.request.urlopen(url, timeout=3).read().decode().strip()
        counts[body] = counts.get(body, 0) + 1
    except Exception as e:
        errors += 1; last = repr(e)
print(json.dumps({"counts": counts, "errors": errors, "last_error": last}), flush=True)
"#;

/// A chatty TCP client: one connection, a line every 10 ms for `secs`
/// seconds, each echo checked. Prints one JSON line.
const CHAT_CLIENT: &str = r#"
import json, socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
print("CONNECTED %s:%d" % s.getsockname(), flush=True)
f = s.makefile("rwb")
sent = ok = 0
err = None
end = time.time() + secs
try:
    while time.time() < end:
        msg = b"msg %d\n" % sent
        f.write(msg); f.flush(); sent += 1
        if f.readline() == msg:
            ok += 1
        time.sleep(0.01)
except Exception as e:
    err = repr(e)
print(json.dumps({"sent": sent, "ok": ok, "error": err}), flush=True)
"#;

struct Lb {
    t: Topology,
    _natgw: netns::Proc,
    servers: Vec<netns::Proc>,
}

/// Builds the topology, starts the three named servers and natgw with
/// `services` appended to the standard e2e config.
fn director(test: &str, services: &str) -> Option<Lb> {
    let spec = Spec {
        inside: REALS.iter().map(|&(n, a)| Host::new(n, a)).collect(),
        outside: vec![Host::new("out", netns::OUT), Host::new("out2", netns::OUT2)],
        switched: true,
        router: false,
        ha: false,
    };
    let t = Topology::new_or_skip(spec, test)?;
    let srv = t.write_file("named.py", NAMED_SERVER);
    t.write_file("lbclient.py", LB_CLIENT);
    t.write_file("chat.py", CHAT_CLIENT);
    let servers = REALS
        .iter()
        .map(|&(n, _)| {
            t.spawn(n, &format!("exec python3 -u {} {n}", srv.display()))
                .ready()
        })
        .collect();
    let cfg = format!(
        "{}\n{services}",
        netns::natgw_config(&t.natgw_control_socket(), "")
    );
    let path = t.write_file("lb.toml", &cfg);
    let natgw = t.spawn(
        "gw",
        &format!("exec {NATGW} run --config {} 2>&1", path.display()),
    );
    if natgw
        .wait_for_line("natgw running", Duration::from_secs(20))
        .is_none()
    {
        panic!("natgw did not start:\n{}", natgw.stdout());
    }
    Some(Lb {
        t,
        _natgw: natgw,
        servers,
    })
}

/// A `[[service]]` for VIP:`port` over the three servers (port 80).
fn service(port: u16, sched: &str, extra: &str, weights: [u32; 3]) -> String {
    let mut s = format!(
        "[[service]]\naddress = \"{VIP}\"\nport = {port}\nscheduler = \"{sched}\"\n{extra}\n"
    );
    let real_port = if port == 9100 { 9100 } else { 80 };
    for ((_, a), w) in REALS.iter().zip(weights) {
        s += &format!("[[service.real]]\naddress = \"{a}\"\nport = {real_port}\nweight = {w}\n");
    }
    s
}

impl Lb {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(NATGW)
            .args(args)
            .arg("--socket")
            .arg(self.t.natgw_control_socket())
            .output()
            .expect("run natgw");
        assert!(
            out.status.success(),
            "natgw {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `n` sequential GETs of VIP:`port` from `host`: answers by server name.
    fn fetch(&self, host: &str, port: u16, n: usize) -> (BTreeMap<String, u64>, u64) {
        let script = self.t.dir().join("lbclient.py");
        let out = self.t.run(
            host,
            &format!("python3 {} http://{VIP}:{port}/ {n}", script.display()),
        );
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("client output {out:?}: {e}"));
        let counts = v["counts"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        (counts, v["errors"].as_u64().unwrap())
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// (Issue test 1) rr spreads 300 requests exactly evenly; wrr follows the weights; sh
/// keeps each client on one server; `natgw services` shows it all.
#[test]
fn schedulers_spread_requests_like_ipvs() {
    let services = format!(
        "{}{}{}",
        service(80, "rr", "", [1, 1, 1]),
        service(81, "wrr", "", [3, 2, 1]),
        service(82, "sh", "", [1, 1, 1]),
    );
    // (VIP:81 and VIP:82 go to port 80 of the servers: port mapping.)
    let Some(lb) = director("lb_schedulers", &services) else {
        return;
    };
    let (c, errors) = lb.fetch("out", 80, 300);
    assert_eq!(errors, 0);
    assert_eq!(
        c,
        counts(&[("r1", 100), ("r2", 100), ("r3", 100)]),
        "{}\n{}",
        lb.cli(&["services"]),
        lb.cli(&["stats"])
    );

    let (c, errors) = lb.fetch("out", 81, 600);
    assert_eq!(errors, 0);
    assert_eq!(
        c,
        counts(&[("r1", 300), ("r2", 200), ("r3", 100)]),
        "{}\n{}",
        lb.cli(&["services"]),
        lb.cli(&["stats"])
    );

    let (a, _) = lb.fetch("out", 82, 20);
    let (b, _) = lb.fetch("out2", 82, 20);
    assert_eq!(a.len(), 1, "sh moved client out between servers: {a:?}");
    assert_eq!(b.len(), 1, "sh moved client out2 between servers: {b:?}");

    let list = lb.cli(&["services"]);
    assert!(list.contains("TCP  203.0.113.10:80 rr"), "{list}");
    assert!(list.contains("TCP  203.0.113.10:81 wrr"), "{list}");
    assert!(list.contains("-> 10.0.0.21:80"), "{list}");
    assert!(list.contains("Masq"), "{list}");
    let v: Value = serde_json::from_str(&lb.cli(&["services", "--json"])).unwrap();
    let rr = &v["services"][0];
    assert_eq!(rr["key"]["port"], 80);
    let conns: Vec<u64> = rr["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["conns"].as_u64().unwrap())
        .collect();
    assert_eq!(conns, vec![100, 100, 100], "{v}");
    let stats = lb.cli(&["services", "--stats"]);
    assert!(stats.contains("Conns"), "{stats}");
    let _ = &lb.servers;
}

/// (Issue test 2) Port mapping VIP:8080 -> RIP:80; persistence keeps a client on its
/// server and is listed.
#[test]
fn port_mapping_and_client_address() {
    let svc = format!(
        "{}{}",
        service(8080, "rr", "", [1, 1, 1]),
        service(8081, "rr", "persistence = 60", [1, 1, 1])
    );
    let Some(lb) = director("lb_portmap", &svc) else {
        return;
    };
    // Persistence: rr, but the same client keeps its server, and the
    // entry is listed.
    let (c, errors) = lb.fetch("out", 8081, 10);
    assert_eq!((c.len(), errors), (1, 0), "{c:?}");
    let list = lb.cli(&["services", "--persistent"]);
    assert!(list.contains("persistent 60"), "{list}");
    assert!(list.contains("203.0.113.100/32"), "{list}");
    let (c, errors) = lb.fetch("out", 8080, 30);
    assert_eq!(errors, 0);
    assert_eq!(c.values().sum::<u64>(), 30);
    assert_eq!(c.len(), 3);
    // The echo port is not a service: nothing answers on the VIP there.
    let out = lb.t.exec_timeout(
        "out",
        &format!("curl -s --max-time 1 http://{VIP}:9100/"),
        Duration::from_secs(5),
    );
    assert!(!out.status.success());
}

/// (Issue test 4) Weight 0 on the server holding a long-lived connection: the
/// connection carries on to its end; no new connection reaches the server.
#[test]
fn weight_zero_drains_without_breaking_connections() {
    let svc = service(9100, "rr", "", [1, 1, 1]);
    let Some(lb) = director("lb_drain", &svc) else {
        return;
    };
    let chat = lb.t.dir().join("chat.py");
    let long = lb.t.spawn(
        "out",
        &format!("exec python3 {} {VIP} 9100 5", chat.display()),
    );
    long.wait_for_line("CONNECTED", Duration::from_secs(5))
        .expect("long-lived connection opened");
    // Which server got it: the one whose echo server logged a connection.
    let deadline = Instant::now() + Duration::from_secs(3);
    let holder = loop {
        if let Some(i) = lb.servers.iter().position(|s| s.stdout().contains("conn ")) {
            break i;
        }
        assert!(Instant::now() < deadline, "no server saw the connection");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (name, addr) = REALS[holder];
    let out = lb.cli(&[
        "real",
        "edit",
        "--tcp",
        &format!("{VIP}:9100"),
        "--real",
        &format!("{addr}:9100"),
        "--weight",
        "0",
    ]);
    assert!(out.contains("draining"), "{out}");
    let before = lb.servers[holder].stdout().matches("conn ").count();
    // 30 short connections: none reaches the drained server.
    let script = "import socket\nfor i in range(30):\n    s = socket.create_connection(('203.0.113.10', 9100), timeout=3)\n    s.sendall(b'x\\n'); s.recv(10); s.close()\nprint('DONE')";
    let done = lb.t.run("out2", &format!("python3 -c \"{script}\""));
    assert!(done.contains("DONE"));
    let after = lb.servers[holder].stdout().matches("conn ").count();
    assert_eq!(before, after, "{name} got new connections while drained");
    let others: usize = (0..3)
        .filter(|&i| i != holder)
        .map(|i| lb.servers[i].stdout().matches("conn ").count())
        .sum();
    assert_eq!(others, 30);
    let r = long.finish(Duration::from_secs(15));
    let v: Value = serde_json::from_str(r.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{r:?}: {e}"));
    assert_eq!(v["error"], Value::Null, "long-lived connection broke: {v}");
    assert_eq!(v["sent"], v["ok"], "lost echoes: {v}");
    assert!(v["sent"].as_u64().unwrap() > 100, "{v}");
    let list = lb.cli(&["services"]);
    assert!(list.contains(&format!("-> {addr}:9100")), "{list}");
}

/// (Issue test 5) Full NAT: real servers without any route back to the client still
/// serve, because they see the director's inside address.
#[test]
fn fullnat_serves_without_a_route_back() {
    let svc = service(80, "rr", "forward = \"fullnat\"", [1, 1, 1]);
    let Some(lb) = director("lb_fullnat", &svc) else {
        return;
    };
    for (n, _) in REALS {
        lb.t.run(n, "ip route del default || true");
    }
    let (c, errors) = lb.fetch("out", 80, 30);
    assert_eq!(errors, 0);
    assert_eq!(c, counts(&[("r1", 10), ("r2", 10), ("r3", 10)]));
    let list = lb.cli(&["services"]);
    assert!(list.contains("FullNat"), "{list}");
}

/// Run-time changes: add a service and servers over the control socket,
/// remove one server, and refuse nonsense with a clear error.
#[test]
fn services_change_at_run_time() {
    let Some(lb) = director("lb_runtime", "") else {
        return;
    };
    let vip = format!("{VIP}:80");
    lb.cli(&["service", "add", "--tcp", &vip, "--scheduler", "rr"]);
    for (_, a) in REALS {
        lb.cli(&["real", "add", "--tcp", &vip, "--real", &format!("{a}:80")]);
    }
    let (c, errors) = lb.fetch("out", 80, 30);
    assert_eq!((c.len(), errors), (3, 0), "{c:?}");
    lb.cli(&["real", "del", "--tcp", &vip, "--real", "10.0.0.22:80"]);
    let (c, errors) = lb.fetch("out", 80, 20);
    assert_eq!(errors, 0);
    assert_eq!(c, counts(&[("r1", 10), ("r3", 10)]));
    // A server that does not exist: refused, nothing changes.
    let out = Command::new(NATGW)
        .args([
            "real",
            "del",
            "--tcp",
            &vip,
            "--real",
            "10.0.0.99:80",
            "--socket",
        ])
        .arg(lb.t.natgw_control_socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no real server 10.0.0.99:80"), "{err}");
    lb.cli(&["service", "del", "--tcp", &vip]);
    let (_, errors) = lb.fetch("out", 80, 2);
    assert_eq!(errors, 2, "the deleted service no longer answers");
}

/// (Issue test 3) Health checks: stop one server and within fall × interval
/// (plus one timeout) the HTTP check takes it out, no request fails after
/// that, and established connections to the other servers carry on; start
/// it again and it rejoins.
#[test]
fn health_checks_take_a_dead_server_out_and_back() {
    let check = "[service.check]\ntype = \"http\"\npath = \"/\"\nstatus = 200\ninterval = 0.5\ntimeout = 0.5\nrise = 2\nfall = 2\n";
    // The check table must follow the reals: put it after them.
    let svc = format!(
        "{}{check}{}",
        service(80, "rr", "", [1, 1, 1]),
        service(9100, "rr", "", [1, 1, 1])
    );
    let Some(mut lb) = director("lb_health", &svc) else {
        return;
    };
    let health = |lb: &Lb| -> Vec<String> {
        let v: Value = serde_json::from_str(&lb.cli(&["services", "--json"])).unwrap();
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["real"].as_str().unwrap(),
                    c["health"].as_str().unwrap()
                )
            })
            .collect()
    };
    let wait_for = |lb: &Lb, want: &str, limit: Duration| -> Duration {
        let t0 = Instant::now();
        loop {
            if health(lb).iter().any(|h| h == want) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "no `{want}` within {limit:?}: {:?}",
                health(lb)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Checks start with natgw; every server passes.
    let t0 = Instant::now();
    loop {
        let h = health(&lb);
        if h.len() == 3 && h.iter().all(|x| x.ends_with("up")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "checks: {h:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One long-lived connection per server (rr: r1, r2, r3 in order).
    let chat = lb.t.dir().join("chat.py");
    let chats: Vec<_> = (0..3)
        .map(|_| {
            let p = lb.t.spawn(
                "out",
                &format!("exec python3 {} {VIP} 9100 6", chat.display()),
            );
            p.wait_for_line("CONNECTED", Duration::from_secs(5))
                .expect("connected");
            p
        })
        .collect();
    for (i, s) in lb.servers.iter().enumerate() {
        assert!(
            s.wait_for_line("conn ", Duration::from_secs(3)).is_some(),
            "r{} got no connection",
            i + 1
        );
    }
    // Stop r2.
    lb.servers[1].kill();
    let took = wait_for(&lb, "10.0.0.22:80 down", Duration::from_secs(5));
    eprintln!("r2 marked down after {took:?}");
    assert!(
        took <= Duration::from_millis(2 * 500 + 500 + 500),
        "took {took:?}"
    );
    let (c, errors) = lb.fetch("out2", 80, 60);
    assert_eq!(errors, 0, "requests failed after the check took r2 out");
    assert_eq!(c, counts(&[("r1", 30), ("r3", 30)]));
    let list = lb.cli(&["services"]);
    assert!(list.contains("DOWN"), "{list}");
    assert!(list.contains("Health checks:"), "{list}");
    // The connections to r1 and r3 were not disturbed.
    for (i, p) in chats.into_iter().enumerate() {
        let out = p.finish(Duration::from_secs(15));
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{out:?}: {e}"));
        if i == 1 {
            continue; // its server was killed
        }
        assert_eq!(v["error"], Value::Null, "r{} connection broke: {v}", i + 1);
        assert_eq!(v["sent"], v["ok"], "{v}");
    }
    // Start r2 again: it rejoins.
    let srv = lb.t.dir().join("named.py");
    lb.servers[1] =
        lb.t.spawn("r2", &format!("exec python3 -u {} r2", srv.display()))
            .ready();
    wait_for(&lb, "10.0.0.22:80 up", Duration::from_secs(5));
    let (c, errors) = lb.fetch("out2", 80, 30);
    assert_eq!(errors, 0);
    assert_eq!(c, counts(&[("r1", 10), ("r2", 10), ("r3", 10)]));
}
