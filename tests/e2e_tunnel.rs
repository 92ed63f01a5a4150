//! SCENARIOS.md 7 end to end (issue 14): a service moves from server A
//! (its old address 5.5.5.5) to server B (2.2.2.2) while clients still use
//! the old address. natgw on A (the standard topology's gateway, AF_XDP)
//! keeps answering on 5.5.5.5.
//!
//! Recipe 1, double NAT on A, in and out of the same outside interface:
//!
//! ```text
//!   out 203.0.113.100 ──┐                  ┌── out2 203.0.113.101 + 2.2.2.2 ("B")
//!   (route 5.5.5.5      ├── brwan ── wan0 A (natgw, 203.0.113.1)
//!    via 203.0.113.1)   ┘   DNAT 5.5.5.5 -> 2.2.2.2, SNAT -> 203.0.113.1
//! ```
//!
//! Needs root (network namespaces); skipped with a message otherwise.

mod netns;

use netns::{Proc, Spec, Topology};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");

/// The service's old address (on A) and its new one (on B).
const OLD: &str = "5.5.5.5";
const NEW: &str = "2.2.2.2";
/// A's own outside address.
const A_ADDR: &str = "203.0.113.1";
const CLIENT: &str = "203.0.113.100";

/// asyncio line-echo server on a port.
const ECHO_SERVER: &str = r#"
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
const CHAT_CLIENTS: &str = r#"
import asyncio, json, sys, time
host, port, n, secs, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
st = {"conns": 0, "sent": 0, "ok": 0, "broken": 0, "errors": []}
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
            w.write(msg); await w.drain(); st["sent"] += 1
            line = await asyncio.wait_for(r.readline(), 20)
            if line != msg:
                raise Exception("bad echo %r" % line)
            st["ok"] += 1
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

/// Starts `natgw run --config CFG` in namespace `host` and waits for it.
fn spawn_natgw_with(t: &Topology, host: &str, cfg: &Path) -> Proc {
    let p = t.spawn(
        host,
        &format!("exec {NATGW} run --config {} 2>&1", cfg.display()),
    );
    if p.wait_for_line("natgw running", Duration::from_secs(20))
        .is_none()
    {
        panic!("natgw in {host} did not start:\n{}", p.stdout());
    }
    p
}

/// `natgw ARGS --socket SOCK`, which must succeed; returns stdout.
fn natgw_cli(sock: &Path, args: &[&str]) -> String {
    let out = Command::new(NATGW)
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .expect("run natgw");
    assert!(
        out.status.success(),
        "natgw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(t: &Topology, host: &str, url: &str) -> String {
    t.run(host, &format!("curl -sS --noproxy '*' --max-time 10 {url}"))
}

/// Runs a PY_TOOLS subcommand to completion and parses its JSON line.
fn py_json(t: &Topology, host: &str, args: &[&str], timeout: Duration) -> Value {
    let out = t.spawn_py(host, args).finish(timeout);
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("[{host}] {args:?}: bad output {out:?}: {e}"))
}

/// Recipe 1's rules on A: the standard config plus DNAT of the old address
/// to B, SNAT of what goes to B to A's own address, and B's route.
fn recipe1_config(sock: &Path, extra_rule: &str) -> String {
    let mut cfg = netns::natgw_config(sock, "");
    cfg += &format!(
        r#"
[[route]]
to = "{NEW}/32"
via = "203.0.113.101"

[[rule]]
name = "moved-dnat"
dst = "{OLD}"
action = "dnat"
to = "{NEW}"

[[rule]]
name = "moved-snat"
oif = "wan0"
dst = "{NEW}"
action = "snat"
to = "{A_ADDR}"
{extra_rule}
"#
    );
    cfg
}

/// Recipe 1 (SCENARIOS 7, issue 14): the client reaches the service on
/// 5.5.5.5 (through A, double NAT, in and out of wan0) and on 2.2.2.2
/// (straight) at the same time; B sees A's address for the first and the
/// client for the second; an ICMP error from B gets back to the client
/// translated; 100 concurrent connections and a long-lived one survive a
/// `natgw reload` on A, and new connections after the reload work too.
#[test]
fn recipe1_double_nat_same_interface() {
    let Some(t) = Topology::new_or_skip(Spec::standard(), "recipe1_double_nat") else {
        return;
    };
    // B: out2 also holds the new address; the client routes the old
    // address to A and the new one straight to B.
    t.run("out2", &format!("ip addr add {NEW}/32 dev lo"));
    t.run("out", &format!("ip route add {OLD}/32 via {A_ADDR}"));
    t.run("out", &format!("ip route add {NEW}/32 via 203.0.113.101"));
    let sock = t.natgw_control_socket();
    let cfg = t.write_file("a.toml", &recipe1_config(&sock, ""));
    let _a = spawn_natgw_with(&t, "gw", &cfg);

    let web = t.spawn_py("out2", &["http-server", "80"]).ready();
    let echo = t.write_file("echo.py", ECHO_SERVER);
    let _echo = t
        .spawn("out2", &format!("exec python3 {} 9100", echo.display()))
        .ready();

    // Both addresses at once: B sees A for the old one, the client for
    // the new one.
    for round in 0..3 {
        let old = curl(&t, "out", &format!("http://{OLD}/"));
        assert!(
            old.starts_with(&format!("peer {A_ADDR}:")),
            "round {round}: via {OLD} B saw {old:?}, expected A's address {A_ADDR}"
        );
        let new = curl(&t, "out", &format!("http://{NEW}/"));
        assert!(
            new.starts_with(&format!("peer {CLIENT}:")),
            "round {round}: via {NEW} B saw {new:?}, expected the client {CLIENT}"
        );
    }
    let gets = web.lines_starting("GET ", 6, Duration::from_secs(5));
    assert_eq!(gets.len(), 6, "server log: {gets:?}");

    // The flow A tracks: client -> old address, reply from B to A.
    let flows = natgw_cli(&sock, &["flows", "--dst", OLD]);
    assert!(
        flows.contains(&format!("src={CLIENT} dst={OLD}"))
            && flows.contains(&format!("src={NEW} dst={A_ADDR}"))
            && flows.contains("[SNAT]") | flows.contains("SNAT"),
        "natgw flows on A: {flows}"
    );

    // An ICMP error from B (UDP to a closed port) reaches the client's
    // socket: translated back from B/A to the old address/client.
    let r = py_json(
        &t,
        "out",
        &["udp-refused", OLD, "9"],
        Duration::from_secs(15),
    );
    assert_eq!(
        r["result"], "ECONNREFUSED",
        "UDP to a closed port of the moved service: {r}"
    );

    // 100 concurrent connections plus a long-lived one, across a reload.
    let chat = t.write_file("chat.py", CHAT_CLIENTS);
    let many = t.spawn(
        "out",
        &format!("exec python3 {} {OLD} 9100 100 10 0.05", chat.display()),
    );
    let long = t.spawn(
        "out",
        &format!("exec python3 {} {OLD} 9100 1 14 0.01", chat.display()),
    );
    assert!(
        many.wait_for_line("CONNECTED", Duration::from_secs(20))
            .is_some()
            && long
                .wait_for_line("CONNECTED", Duration::from_secs(20))
                .is_some(),
        "connections to {OLD}:9100 did not open: {} {}",
        many.stderr(),
        long.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    let cfg2 = t.write_file(
        "a2.toml",
        &recipe1_config(
            &sock,
            "\n[[rule]]\nname = \"unrelated\"\ndst = \"192.0.2.99\"\naction = \"drop\"\n",
        ),
    );
    let out = natgw_cli(&sock, &["reload", "--config", cfg2.to_str().unwrap()]);
    assert!(
        out.contains("keep their translation") && out.contains(" 0 match no rule now"),
        "reload said: {out}"
    );
    // New connections after the reload still go the new way.
    let old = curl(&t, "out", &format!("http://{OLD}/"));
    assert!(
        old.starts_with(&format!("peer {A_ADDR}:")),
        "after the reload: {old:?}"
    );
    for (what, p) in [("100 connections", many), ("long-lived", long)] {
        let s = p.finish(Duration::from_secs(40));
        let v: Value = serde_json::from_str(s.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{what}: bad output {s:?}: {e}"));
        assert_eq!(
            v["broken"], 0,
            "{what}: broken connections across the reload: {v}"
        );
        assert!(v["ok"].as_u64().unwrap() > 0, "{what}: {v}");
        assert_eq!(v["sent"], v["ok"], "{what}: lost echoes: {v}");
    }
    let stats = natgw_cli(&sock, &["stats"]);
    eprintln!("natgw stats on A:\n{stats}");
}
