//! The e2e scenarios (tests/netns/scenarios.rs) with natgw as the gateway,
//! on both backends: the same functions the kernel reference passes in
//! tests/e2e_kernel.rs, so together the two files are the differential
//! test (natgw must give the observable results the kernel gives).
//!
//! Plus what only natgw has: `natgw flows` over 1000 TCP connections, the
//! state after SIGTERM (no XDP program, no socket file), and refusing a
//! config it cannot apply before touching anything.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

mod netns;

use netns::{Spec, Topology, scenarios};
use std::process::Command;
use std::time::Duration;

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");

/// Starts natgw on `backend` in a fresh standard topology.
fn natgw_gateway(test: &str, backend: &str) -> Option<(Topology, netns::Proc)> {
    let t = Topology::new_or_skip(Spec::standard(), test)?;
    if backend == "tun" {
        // The kernel routes into and out of the TUN devices: two more hops.
        t.set_gw_ttl_cost(3);
    }
    let gw = t.spawn_natgw(NATGW, &format!("backend = \"{backend}\""));
    Some((t, gw))
}

macro_rules! natgw_scenarios {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let test = concat!(stringify!($backend), "_", stringify!($name));
                    let Some((t, _gw)) = natgw_gateway(test, stringify!($backend)) else { return };
                    scenarios::$name(&t);
                }
            )*
        }
    };
}

natgw_scenarios!(afxdp:
    masquerade_http,
    udp_1000_flows,
    ping_two_hosts,
    dnat_port_forward,
    hairpin,
    icmp_errors,
    same_source_mapping,
    icmp_errors_other_protocols,
    fragments_out_of_order,
);

natgw_scenarios!(tun:
    masquerade_http,
    udp_1000_flows,
    ping_two_hosts,
    dnat_port_forward,
    hairpin,
    icmp_errors,
    same_source_mapping,
    icmp_errors_other_protocols,
    fragments_out_of_order,
    tcp_out_of_window,
);

fn natgw_cli(t: &Topology, args: &[&str]) -> String {
    let sock = t.natgw_control_socket();
    let out = Command::new(NATGW)
        .args(args)
        .arg("--socket")
        .arg(&sock)
        .output()
        .expect("run natgw");
    assert!(
        out.status.success(),
        "natgw {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 1000 concurrent TCP connections transfer data and close cleanly; then
/// `natgw flows` lists all 1000 as established-then-closed (ASSURED, in
/// TIME_WAIT) and `natgw stats` shows no drops.
fn thousand_connections_listed_closing(backend: &str) {
    let test = format!("{backend}_tcp_1000_connections");
    let Some((t, _gw)) = natgw_gateway(&test, backend) else {
        return;
    };
    scenarios::tcp_1000_connections(&t);
    let json = natgw_cli(
        &t,
        &["flows", "--proto", "tcp", "--dport", "9000", "--json"],
    );
    let flows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("flows json");
    assert_eq!(
        flows.len(),
        1000,
        "natgw flows should list the 1000 connections"
    );
    let mut states = std::collections::BTreeMap::new();
    for f in &flows {
        *states
            .entry(f["state"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    eprintln!("{backend}: states of the 1000 flows: {states:?}");
    for f in &flows {
        let flags: Vec<&str> = f["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            flags.contains(&"ASSURED") && flags.contains(&"SNAT"),
            "flow {f} never established"
        );
        // The test server's kernel resets some connections after its
        // echo (seen with tcpdump on the server; the kernel gateway sees
        // the same), so CLOSE is a closed state too.
        assert!(
            matches!(f["state"].as_str(), Some("TIME_WAIT" | "CLOSE")),
            "flow {f} is not closed"
        );
        assert_eq!(f["reply"]["dst"], "203.0.113.1");
    }
    let count = |state: &str| -> usize {
        natgw_cli(
            &t,
            &["flows", "--state", state, "--dport", "9000", "--count"],
        )
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(count("TIME_WAIT") + count("CLOSE"), 1000);
    assert_eq!(count("ESTABLISHED"), 0);
    let stats: serde_json::Value =
        serde_json::from_str(&natgw_cli(&t, &["stats", "--json"])).unwrap();
    let drops = &stats["total"]["drops"];
    for bad in [
        "port_exhausted",
        "flow_table_full",
        "tx_full",
        "flow_race",
        "tcp_out_of_window",
    ] {
        assert!(
            drops.get(bad).is_none(),
            "{bad} drops during the run: {drops}"
        );
    }
}

/// Window tracking: the blind injection of `scenarios::tcp_out_of_window`
/// (a data segment and a RST half the sequence space away, from the
/// outside) never reaches the inside host, is counted as
/// `tcp_out_of_window`, and the connection carries on. With `tcp_window
/// = "liberal"` both are forwarded to it again (its own stack then
/// discards them) and nothing is counted.
#[test]
fn afxdp_tcp_out_of_window_is_dropped_and_counted_unless_liberal() {
    let Some((t, mut gw)) = natgw_gateway("afxdp_tcp_out_of_window", "afxdp") else {
        return;
    };
    scenarios::tcp_out_of_window(&t);
    let stats: serde_json::Value =
        serde_json::from_str(&natgw_cli(&t, &["stats", "--json"])).unwrap();
    assert_eq!(
        stats["total"]["drops"]["tcp_out_of_window"], 2,
        "{}",
        stats["total"]["drops"]
    );
    gw.terminate(Duration::from_secs(10));
    let _gw = t.spawn_natgw(NATGW, "backend = \"afxdp\"\ntcp_window = \"liberal\"");
    let p = scenarios::tcp_out_of_window_probe(&t);
    assert!(
        p.client["saw_injected"] == true && p.client["saw_rst"] == true,
        "liberal: {}",
        p.client
    );
    assert!(p.carried_on(), "liberal: {} {}", p.client, p.server);
    let stats: serde_json::Value =
        serde_json::from_str(&natgw_cli(&t, &["stats", "--json"])).unwrap();
    assert!(stats["total"]["drops"].get("tcp_out_of_window").is_none());
}

#[test]
fn afxdp_tcp_1000_connections_listed_then_closing() {
    thousand_connections_listed_closing("afxdp");
}

#[test]
fn tun_tcp_1000_connections_listed_then_closing() {
    thousand_connections_listed_closing("tun");
}

/// After SIGTERM natgw exits 0 and leaves no XDP program on any interface
/// and no control socket; the stop guard keeps NAT traffic from leaking
/// untranslated while it is down; the TUN backend can take over after it.
#[test]
fn afxdp_sigterm_leaves_nothing_attached() {
    let Some((t, mut gw)) = natgw_gateway("afxdp_sigterm", "afxdp") else {
        return;
    };
    scenarios::masquerade_http(&t);
    let links = t.run("gw", "ip -d link show");
    assert!(
        links.contains("prog/xdp"),
        "natgw should have XDP attached while running:\n{links}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status();
    let status = gw.wait(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "natgw exit status");
    let links = t.run("gw", "ip -d link show");
    assert!(
        !links.contains("prog/xdp") && !links.contains("xdp"),
        "XDP left after SIGTERM:\n{links}"
    );
    assert!(
        !t.natgw_control_socket().exists(),
        "control socket left behind"
    );
    // Even with kernel forwarding on, nothing crosses untranslated while stopped.
    t.set_gw_forwarding(true);
    let out = t.exec_timeout(
        "cl1",
        "curl -s --max-time 2 http://203.0.113.100/",
        Duration::from_secs(5),
    );
    assert!(!out.status.success(), "traffic crossed a stopped gateway");
    // Switching backends: a TUN run after the AF_XDP one forwards (it
    // replaces the AF_XDP guard with its own protection).
    t.set_gw_ttl_cost(3);
    let tun = t.spawn_natgw(NATGW, "backend = \"tun\"");
    scenarios::masquerade_http(&t);
    assert!(
        tun.stdout().contains("removed the AF_XDP stop guard"),
        "{}",
        tun.stdout()
    );
}

/// The TUN backend, pinned to CPU 0 (`taskset`), moves the kernel's
/// receive processing of its data interfaces (RPS) to the other CPUs, so a
/// flood's receive work does not starve its workers (perf/tun.md); traffic
/// still flows, and SIGTERM puts the old masks back.
#[test]
fn tun_pinned_moves_receive_work_off_its_cpus_and_back() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" || online.trim().is_empty() {
        eprintln!("skipped: needs 2 online CPUs");
        return;
    }
    let Some(t) = Topology::new_or_skip(Spec::standard(), "tun_rps") else {
        return;
    };
    t.set_gw_ttl_cost(3);
    let masks = |t: &Topology| {
        t.run(
            "gw",
            "cat /sys/class/net/lan0/queues/rx-*/rps_cpus /sys/class/net/wan0/queues/rx-*/rps_cpus",
        )
    };
    let before = masks(&t);
    let cfg = t.natgw_config_file("backend = \"tun\"");
    let mut gw = t.spawn(
        "gw",
        &format!(
            "exec taskset -c 0 {NATGW} run --config {} 2>&1",
            cfg.display()
        ),
    );
    assert!(
        gw.wait_for_line("natgw running", Duration::from_secs(20))
            .is_some(),
        "natgw did not start:\n{}",
        gw.stdout()
    );
    assert!(
        gw.stdout()
            .contains("receive processing of lan0, wan0 moved to CPU(s)"),
        "{}",
        gw.stdout()
    );
    let during = masks(&t);
    for m in during.lines() {
        let low = u32::from_str_radix(m.rsplit(',').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("rps_cpus `{m}`: {e}"));
        assert!(
            low & 1 == 0
                && m.split(',')
                    .any(|g| u32::from_str_radix(g.trim(), 16).unwrap_or(0) != 0),
            "receive work should be off CPU 0 and on another CPU:\n{during}"
        );
    }
    scenarios::masquerade_http(&t);
    let status = gw.terminate(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "natgw exit status");
    assert_eq!(masks(&t), before, "RPS masks not put back at stop");
}

/// A config natgw cannot apply is refused with a clear error before
/// anything is attached.
/// `(policy, rt_priority)` of each thread of process `pid`, by name
/// (/proc/PID/task/TID/stat fields 41 and 40; policy 1 = SCHED_FIFO).
fn thread_policies(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = e.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: the 3rd field is first.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |x| x.1)
            .split_whitespace()
            .collect();
        let field = |n: usize| {
            rest.get(n - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u32::MAX)
        };
        out.push((comm.trim().to_string(), field(41), field(40)));
    }
    out
}

/// `[afxdp] rt_priority = 10`: the workers run under SCHED_FIFO at 10 (so
/// a frame's wake-up preempts ordinary threads on their CPU), the rest of
/// natgw stays ordinary, and traffic flows.
#[test]
fn afxdp_rt_priority_runs_the_workers_real_time() {
    let Some(t) = Topology::new_or_skip(Spec::standard(), "afxdp_rt_priority") else {
        return;
    };
    let gw = t.spawn_natgw_tables(
        NATGW,
        "backend = \"afxdp\"",
        "\n[afxdp]\nrt_priority = 10\n",
    );
    scenarios::ping_two_hosts(&t);
    let threads = thread_policies(gw.pid());
    let workers: Vec<_> = threads
        .iter()
        .filter(|t| t.0.starts_with("natgw-q"))
        .collect();
    assert!(!workers.is_empty(), "no worker threads: {threads:?}");
    for w in &workers {
        assert_eq!(
            (w.1, w.2),
            (1, 10),
            "worker {} not SCHED_FIFO 10: {threads:?}",
            w.0
        );
    }
    let main = threads
        .iter()
        .find(|t| t.0 == "natgw")
        .expect("main thread");
    assert_eq!(main.1, 0, "the main thread stays ordinary: {threads:?}");
    assert!(
        gw.stdout().contains("real-time priority 10 (SCHED_FIFO)"),
        "{}",
        gw.stdout()
    );
}

#[test]
fn config_it_cannot_apply_is_refused_before_attaching() {
    let Some(t) = Topology::new_or_skip(Spec::minimal(), "refuse_bad_config") else {
        return;
    };
    for (extra, want) in [
        ("", ""),
        ("[afxdp]\nqueues = 8\n", "afxdp.queues = 8 is out of range"),
    ] {
        let mut cfg = netns::natgw_config(&t.natgw_control_socket(), "");
        if want.is_empty() {
            // An interface the gateway does not have.
            cfg = cfg
                .replace("name = \"wan0\"", "name = \"wan9\"")
                .replace("oif = \"wan0\"", "oif = \"wan9\"");
        } else {
            cfg.push_str(extra);
        }
        let path = t.write_file("bad.toml", &cfg);
        let out = t.exec_timeout(
            "gw",
            &format!("{NATGW} run --config {} 2>&1", path.display()),
            Duration::from_secs(20),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "natgw accepted a config it cannot apply:\n{text}"
        );
        let want = if want.is_empty() {
            "interface `wan9`"
        } else {
            want
        };
        assert!(text.contains(want), "error should say `{want}`:\n{text}");
        let links = t.run("gw", "ip -d link show");
        assert!(!links.contains("xdp"), "something was attached:\n{links}");
    }
    // An address the interface does not carry.
    let cfg = netns::natgw_config(&t.natgw_control_socket(), "")
        .replace("203.0.113.1/24", "203.0.113.9/24");
    let path = t.write_file("bad2.toml", &cfg);
    let out = t.exec_timeout(
        "gw",
        &format!("{NATGW} run --config {} 2>&1", path.display()),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("address 203.0.113.9 is not on interface `wan0`"),
        "{text}"
    );
}

/// A chatty TCP client: one connection, a line every 10 ms for `secs`
/// seconds, each echo checked. Prints one JSON line.
const CHAT_CLIENT: &str = r#"
import json, socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
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

/// Line echo server for CHAT_CLIENT.
const CHAT_SERVER: &str = r#"
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(64)
print("READY", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(line); f.flush()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// SCENARIOS.md 4: `natgw reload` swaps the ruleset while a connection
/// carries on untouched; a set change affects new flows only, and set
/// entries expire on time.
#[test]
fn afxdp_reload_and_sets_keep_established_connections() {
    let Some((t, _gw)) = natgw_gateway("afxdp_reload_sets", "afxdp") else {
        return;
    };
    let srv = t.write_file("chat_server.py", CHAT_SERVER);
    let cli = t.write_file("chat_client.py", CHAT_CLIENT);
    let _server = t
        .spawn("out", &format!("exec python3 {} 9100", srv.display()))
        .ready();
    let web = t.spawn_py("out", &["http-server", "8000"]).ready();
    let chat = t.spawn(
        "cl1",
        &format!("exec python3 {} 203.0.113.100 9100 6", cli.display()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let fetch = |host: &str| {
        t.exec_timeout(
            host,
            "curl -s --max-time 2 http://203.0.113.100:8000/",
            Duration::from_secs(5),
        )
        .status
        .success()
    };
    assert!(fetch("cl2"), "cl2 reaches the server before the reload");

    // A new config: hosts in set "blocked" (cl2 listed) may not leave.
    let extra_rules = "\n[[set]]\nname = \"blocked\"\ntimeout = 2\nelements = [\"10.0.0.11\"]\n\n\
                       [[rule]]\nsrc_set = \"blocked\"\naction = \"drop\"\n";
    let mut cfg = netns::natgw_config(&t.natgw_control_socket(), "");
    let first_rule = cfg.find("[[rule]]").expect("config has rules");
    cfg.insert_str(first_rule, &format!("{}\n", extra_rules.trim_start()));
    let new = t.write_file("reload.toml", &cfg);
    let out = natgw_cli(&t, &["reload", "--config", new.to_str().unwrap()]);
    assert!(out.contains("live flow(s) keep their translation"), "{out}");
    assert!(
        !fetch("cl2"),
        "the new drop rule applies to cl2's new flows"
    );
    assert!(fetch("cl1"), "cl1 is not in the set");

    // A run-time set entry with a 2 s timeout: cl1's new flows are dropped,
    // its established connection is not; after 2 s cl1 gets out again.
    let out = natgw_cli(
        &t,
        &["set", "add", "blocked", "10.0.0.10", "--timeout", "2"],
    );
    assert!(out.contains("added 10.0.0.10/32"), "{out}");
    assert!(!fetch("cl1"), "set change applies to the next new flow");
    std::thread::sleep(Duration::from_millis(2300));
    let list = natgw_cli(&t, &["set", "list", "blocked"]);
    assert!(
        !list.contains("10.0.0.10/32"),
        "entry should have expired:\n{list}"
    );
    assert!(fetch("cl1"), "after the entry expired, cl1 gets out again");

    // An invalid config changes nothing.
    let bad = t.write_file(
        "bad.toml",
        &cfg.replace("action = \"drop\"", "action = \"dorp\""),
    );
    let out = Command::new(NATGW)
        .args(["reload", "--config", bad.to_str().unwrap(), "--socket"])
        .arg(t.natgw_control_socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not one of snat"),
        "{out:?}"
    );
    assert!(
        !fetch("cl2"),
        "the refused reload left the rules as they were"
    );

    let r = chat.finish(Duration::from_secs(20));
    let line = r.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{r:?}: {e}"));
    assert_eq!(v["error"], serde_json::Value::Null, "connection broke: {v}");
    assert_eq!(v["sent"], v["ok"], "lost echoes: {v}");
    assert!(v["sent"].as_u64().unwrap() > 200, "too few messages: {v}");
    drop(web);
}
