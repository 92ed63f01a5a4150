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
//! Recipes 2 and 3, a tunnel from A to B with natgw as the endpoint at
//! both ends (this kernel has no ipip/gre modules), B a second natgw (in
//! namespaces this test adds to the standard topology) in front of the
//! application host:
//!
//! ```text
//!   out 203.0.113.100 ── brwan ── wan0 A 203.0.113.1 (natgw)     route 5.5.5.5 dev tun1
//!                           └──── wan0 B 203.0.113.50 (natgw)    tun1 (ipip|gre) A <-> B
//!                                 lan0 B 10.9.0.1 ── app 10.9.0.5 (+ 2.2.2.2, recipe 2: + 5.5.5.5)
//! ```
//!
//! Recipe 2: the app holds 5.5.5.5; B routes what comes from 5.5.5.5 back
//! into the tunnel (`[[route]] from = "5.5.5.5/32" dev = "tun1"`).
//! Recipe 3: B translates 5.5.5.5 -> 2.2.2.2 (`iif = "tun1"`) and marks the
//! flow (`set_mark = 3`); its replies take `[[route]] mark = 3 dev = "tun1"`.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

mod netns;

use netns::traffic::{CHAT_CLIENTS, ECHO_SERVER};
use netns::{Proc, Spec, Topology};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");

/// The service's old address (on A) and its new one (on B).
const OLD: &str = "5.5.5.5";
const NEW: &str = "2.2.2.2";
/// A's own outside address.
const A_ADDR: &str = "203.0.113.1";
const CLIENT: &str = "203.0.113.100";

/// Starts `natgw run --config CFG` in namespace `host` and waits for it.
fn spawn_natgw_with(t: &Topology, host: &str, cfg: &Path) -> Proc {
    spawn_natgw_flags(t, host, cfg, "")
}

/// [`spawn_natgw_with`] with extra `natgw run` flags (e.g. `--takeover`).
fn spawn_natgw_flags(t: &Topology, host: &str, cfg: &Path, flags: &str) -> Proc {
    let p = t.spawn(
        host,
        &format!("exec {NATGW} run --config {} {flags} 2>&1", cfg.display()),
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
    // Meanwhile others use the new address (straight to B).
    let direct = t.spawn(
        "out",
        &format!("exec python3 {} {NEW} 9100 20 14 0.05", chat.display()),
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
    for (what, p) in [
        ("100 connections", many),
        ("long-lived", long),
        ("20 to the new address", direct),
    ] {
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

// ---------------------------------------------------------------------------
// Recipes 2 and 3: a tunnel A <-> B

/// B's outside address and its inside network.
const B_ADDR: &str = "203.0.113.50";
const APP: &str = "10.9.0.5";

/// B (namespace `<prefix>-gwb`, natgw) and the app host (`<prefix>-app`)
/// added to a standard topology: B's wan0 is a port of the outside bridge,
/// its lan0 is wired straight to the app. Removed on drop (processes in
/// them killed by pid, XDP pins a killed natgw left, the namespaces),
/// panics included.
struct SiteB<'a> {
    t: &'a Topology,
    names: Vec<String>,
}

impl<'a> SiteB<'a> {
    fn new(t: &'a Topology, app_holds_old: bool) -> SiteB<'a> {
        let names = vec![t.ns("gwb"), t.ns("app")];
        let b = SiteB { t, names };
        let sh = |cmd: &str| {
            let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
            assert!(
                o.status.success(),
                "`{cmd}` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let (gwb, app, sw) = (t.ns("gwb"), t.ns("app"), t.ns("sw"));
        sh(&format!("ip netns add {gwb} && ip netns add {app}"));
        sh(&format!(
            "ip link add name wan0 netns {gwb} type veth peer name w-gwb netns {sw} && \
             ip link add name lan0 netns {gwb} type veth peer name eth0 netns {app}"
        ));
        let common = "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up";
        t.run(
            "gwb",
            &format!(
                "{common}; sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0; \
                 ip addr add {B_ADDR}/24 dev wan0; ip addr add 10.9.0.1/24 dev lan0; \
                 ethtool -K wan0 tx off >/dev/null 2>&1; ethtool -K lan0 tx off >/dev/null 2>&1; \
                 ip link set wan0 up; ip link set lan0 up"
            ),
        );
        t.run(
            "sw",
            "ethtool -K w-gwb tx off >/dev/null 2>&1; ip link set w-gwb master brwan; ip link set w-gwb up",
        );
        let old = if app_holds_old {
            format!("ip addr add {OLD}/32 dev lo;")
        } else {
            String::new()
        };
        t.run(
            "app",
            &format!(
                "{common}; ip addr add {APP}/24 dev eth0; ip addr add {NEW}/32 dev lo; {old} \
                 ethtool -K eth0 tx off >/dev/null 2>&1; ip link set eth0 up; \
                 n=0; until [ \"$(cat /sys/class/net/eth0/carrier)\" = 1 ]; do n=$((n+1)); [ $n -lt 300 ] || exit 1; sleep 0.01; done; \
                 ip route add default via 10.9.0.1"
            ),
        );
        b
    }
}

impl Drop for SiteB<'_> {
    fn drop(&mut self) {
        for ns in &self.names {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).output();
                }
            }
        }
        // XDP pins a killed natgw left: /sys/fs/bpf/natgw/<netns inode>-<ifindex>.
        let inodes: Vec<String> = self
            .names
            .iter()
            .filter_map(|n| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(format!("/run/netns/{n}"))
                    .ok()
                    .map(|m| m.ino().to_string())
            })
            .collect();
        for dir in ["/sys/fs/bpf/natgw", "/run/natgw/bpffs/natgw"] {
            let Ok(dir) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if inodes.iter().any(|i| name.split('-').next() == Some(i)) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = self.t;
    }
}

fn tunnel_section(mode: &str, local: &str, remote: &str) -> String {
    let key = if mode == "gre" { "key = 7\n" } else { "" };
    format!(
        "\n[[tunnel]]\nname = \"tun1\"\nmode = \"{mode}\"\n{key}local = \"{local}\"\nremote = \"{remote}\"\n"
    )
}

/// A's config: the standard one plus the tunnel and 5.5.5.5 into it.
fn a_config(sock: &Path, mode: &str, extra: &str, backend: &str) -> String {
    let mut cfg = netns::natgw_config(sock, &format!("backend = \"{backend}\""));
    cfg += &tunnel_section(mode, A_ADDR, B_ADDR);
    cfg += &format!("\n[[route]]\nto = \"{OLD}/32\"\ndev = \"tun1\"\n{extra}");
    cfg
}

/// B's config for recipe 2 (`recipe3` false) or 3.
fn b_config(sock: &Path, mode: &str, recipe3: bool, backend: &str) -> String {
    let mut cfg = format!(
        r#"[gateway]
control_socket = {sock:?}
unmatched = "forward"
backend = "{backend}"

[[interface]]
name = "lan0"
role = "inside"
address = "10.9.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "{B_ADDR}/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"

[[route]]
to = "{NEW}/32"
via = "{APP}"
{}"#,
        tunnel_section(mode, B_ADDR, A_ADDR),
        sock = sock.display().to_string(),
    );
    if recipe3 {
        cfg += &format!(
            r#"
[[rule]]
name = "moved"
iif = "tun1"
dst = "{OLD}"
action = "dnat"
to = "{NEW}"
set_mark = 3

[[route]]
to = "0.0.0.0/0"
dev = "tun1"
mark = 3
"#
        );
    } else {
        cfg += &format!(
            r#"
[[route]]
to = "{OLD}/32"
via = "{APP}"

[[route]]
to = "0.0.0.0/0"
dev = "tun1"
from = "{OLD}/32"
"#
        );
    }
    cfg
}

/// A UDP socket with DF (IP_PMTUDISC_DO) sends a full-size datagram to
/// HOST:PORT until the kernel learns a smaller path MTU from an ICMP
/// fragmentation-needed; prints the path MTU it ends with.
const PMTU_PROBE: &str = r#"
import errno, json, socket, sys, time
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.connect((host, port))
res = {"mtu": None, "emsgsize": False}
for i in range(20):
    try:
        s.send(b"x" * 1472)
    except OSError as e:
        if e.errno == errno.EMSGSIZE:
            res["emsgsize"] = True
            break
        # ECONNREFUSED from an earlier datagram: try again.
    time.sleep(0.1)
res["mtu"] = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
print(json.dumps(res), flush=True)
"#;

/// Recipes 2 and 3 live: the client reaches the service on 5.5.5.5
/// (through A and the tunnel) and on 2.2.2.2 (straight to B) at once; the
/// application sees the client's own address both ways; the replies come
/// back through the tunnel (A's decap counter moves); an ICMP error from
/// the application gets back to the client; a DF datagram too big for the
/// tunnel gets fragmentation-needed with the tunnel MTU (the client's
/// kernel learns it); 100 connections and a long-lived one through the
/// tunnel survive a `natgw reload` on A and then a handover of B to a new
/// process (`natgw run --takeover`), which keeps the flows (and their
/// marks).
fn tunnel_recipe(test: &str, mode: &str, recipe3: bool) {
    tunnel_recipe_on(test, mode, recipe3, "afxdp");
}

fn tunnel_recipe_on(test: &str, mode: &str, recipe3: bool, backend: &str) {
    let Some(t) = Topology::new_or_skip(Spec::standard(), test) else {
        return;
    };
    let site = SiteB::new(&t, !recipe3);
    if backend == "tun" {
        // The kernel routes into and out of natgw's TUN devices.
        // The kernel routes what natgw writes (the TUN backend uses no
        // routes of its own): B's kernel needs natgw's routes too.
        t.set_gw_forwarding(true);
        t.run(
            "gwb",
            &format!(
                "sysctl -q -w net.ipv4.ip_forward=1; ip route add {OLD}/32 via {APP}; \
                 ip route add {NEW}/32 via {APP}; ip route add default via 203.0.113.254"
            ),
        );
    }
    t.run("out", &format!("ip route add {OLD}/32 via {A_ADDR}"));
    t.run("out", &format!("ip route add {NEW}/32 via {B_ADDR}"));
    let a_sock = t.natgw_control_socket();
    let b_sock: PathBuf = t.dir().join("b.sock");
    let a_cfg = t.write_file("a.toml", &a_config(&a_sock, mode, "", backend));
    let b_cfg = t.write_file("b.toml", &b_config(&b_sock, mode, recipe3, backend));
    let _a = spawn_natgw_with(&t, "gw", &a_cfg);
    let mut b = spawn_natgw_with(&t, "gwb", &b_cfg);

    let web = t.spawn_py("app", &["http-server", "80"]).ready();
    let echo = t.write_file("echo.py", ECHO_SERVER);
    let _echo = t
        .spawn("app", &format!("exec python3 {} 9100", echo.display()))
        .ready();

    for round in 0..3 {
        for addr in [OLD, NEW] {
            let body = curl(&t, "out", &format!("http://{addr}/"));
            assert!(
                body.starts_with(&format!("peer {CLIENT}:")),
                "round {round}: via {addr} the app saw {body:?}, expected the client {CLIENT}"
            );
        }
    }
    let gets = web.lines_starting("GET ", 6, Duration::from_secs(5));
    assert_eq!(gets.len(), 6, "app log: {gets:?}");

    // Both ends counted the tunnel's traffic both ways, and dropped nothing.
    let tunnel_line = |sock: &Path| {
        let s = natgw_cli(sock, &["stats"]);
        s.lines()
            .find(|l| l.starts_with("tunnel tun1 "))
            .unwrap_or_else(|| panic!("no tunnel line in natgw stats:\n{s}"))
            .to_string()
    };
    let count = |line: &str, word: &str| -> u64 {
        let i = line
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {line}"))
            + word.len();
        line[i..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches(',')
            .parse()
            .unwrap()
    };
    for (who, sock) in [("A", &a_sock), ("B", &b_sock)] {
        let l = tunnel_line(sock);
        assert!(
            count(&l, "decap ") >= 15 && count(&l, "encap ") >= 15 && l.ends_with("dropped 0"),
            "{who}: {l}"
        );
        assert!(l.contains(&format!("({mode} ")), "{who}: {l}");
    }
    // B tracks the flows; recipe 3's carry the mark.
    let flows = natgw_cli(&b_sock, &["flows", "--src", CLIENT, "--dport", "80"]);
    assert!(
        flows.contains(&format!("dst={OLD}")) && flows.contains("tunnel=tun1"),
        "B's flows: {flows}"
    );
    let a_flows = natgw_cli(&a_sock, &["flows", "--src", CLIENT, "--dport", "80"]);
    assert!(
        a_flows.contains(&format!("src={CLIENT} dst={OLD}")) && a_flows.contains("tunnel=tun1"),
        "A's flows: {a_flows}"
    );
    if recipe3 {
        assert!(
            flows.contains(&format!("src={NEW} dst={CLIENT}")) && flows.contains("mark=3"),
            "B's flows: {flows}"
        );
    }

    // An ICMP error from the application (UDP to a closed port) reaches
    // the client.
    let r = py_json(
        &t,
        "out",
        &["udp-refused", OLD, "9"],
        Duration::from_secs(15),
    );
    assert_eq!(
        r["result"], "ECONNREFUSED",
        "UDP to a closed port via the tunnel: {r}"
    );

    // A DF datagram of 1500 bytes does not fit the tunnel (1500 minus the
    // overhead): A answers fragmentation-needed with the tunnel MTU.
    let tmtu = 1500 - if mode == "gre" { 28 } else { 20 };
    let probe = t.write_file("pmtu.py", PMTU_PROBE);
    let out = t.run("out", &format!("python3 {} {OLD} 9", probe.display()));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(v["mtu"], tmtu, "the client's path MTU to {OLD}: {v}");
    assert_eq!(v["emsgsize"], true, "{v}");
    let stats = natgw_cli(&a_sock, &["stats"]);
    assert!(
        stats.contains("fragmentation-needed sent (tunnel mtu): "),
        "A's stats: {stats}"
    );

    // 100 connections plus a long-lived one through the tunnel, across a
    // reload of A.
    let chat = t.write_file("chat.py", CHAT_CLIENTS);
    let many = t.spawn(
        "out",
        &format!("exec python3 {} {OLD} 9100 100 14 0.05", chat.display()),
    );
    let long = t.spawn(
        "out",
        &format!("exec python3 {} {OLD} 9100 1 18 0.01", chat.display()),
    );
    // Meanwhile others use the new address (straight to B).
    let direct = t.spawn(
        "out",
        &format!("exec python3 {} {NEW} 9100 20 18 0.05", chat.display()),
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
    let a2 = t.write_file(
        "a2.toml",
        &a_config(
            &a_sock,
            mode,
            "\n[[rule]]\nname = \"unrelated\"\ndst = \"192.0.2.99\"\naction = \"drop\"\n",
            backend,
        ),
    );
    let out = natgw_cli(&a_sock, &["reload", "--config", a2.to_str().unwrap()]);
    assert!(out.contains("keep their translation"), "reload said: {out}");
    // Hand B (decapsulation, policy routes, recipe 3's marked flows) over
    // to a new process while the connections run.
    std::thread::sleep(Duration::from_secs(1));
    let b2 = spawn_natgw_flags(&t, "gwb", &b_cfg, "--takeover");
    assert!(
        b.wait(Duration::from_secs(10)).is_some(),
        "the old B did not exit after handing over:\n{}",
        b.stdout()
    );
    let log = b2.stdout();
    let copied = log
        .lines()
        // The stepped handover (AF_XDP) or the one-shot one (TUN).
        .find(|l| l.contains("takeover: copied") || l.contains("handed over"))
        .unwrap_or_else(|| panic!("no takeover line in B's log:\n{log}"));
    eprintln!("B handover: {copied}");
    let flows = natgw_cli(&b_sock, &["flows", "--src", CLIENT, "--dport", "9100"]);
    // The connections that came through the tunnel (to the old address).
    let tunneled: Vec<&str> = flows
        .lines()
        .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("dst={OLD} ")))
        .collect();
    assert!(
        tunneled.len() >= 101,
        "the new B holds the connections: {flows}"
    );
    if recipe3 {
        assert!(
            tunneled
                .iter()
                .all(|l| l.contains("mark=3") && l.contains("tunnel=tun1")),
            "the new B keeps the marks: {flows}"
        );
    }
    let mut b = b2;
    for (what, p) in [
        ("100 connections", many),
        ("long-lived", long),
        ("20 to the new address", direct),
    ] {
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
    eprintln!(
        "A: {}\nB (new): {}",
        tunnel_line(&a_sock),
        tunnel_line(&b_sock)
    );
    b.terminate(Duration::from_secs(10));
    drop(site);
}

#[test]
fn recipe2_ipip_tunnel_app_sees_the_client() {
    tunnel_recipe("recipe2_ipip", "ipip", false);
}

#[test]
fn recipe2_gre_tunnel_app_sees_the_client() {
    tunnel_recipe("recipe2_gre", "gre", false);
}

#[test]
fn recipe3_gre_tunnel_dnat_and_mark_on_b() {
    tunnel_recipe("recipe3_gre", "gre", true);
}

#[test]
fn recipe3_ipip_tunnel_dnat_and_mark_on_b() {
    tunnel_recipe("recipe3_ipip", "ipip", true);
}

/// Recipe 2 on the TUN backend at both ends (the kernel routes the outer
/// and inner datagrams natgw writes). B's takeover is the one-shot kind
/// on this backend.
#[test]
fn recipe2_gre_tunnel_on_the_tun_backend() {
    tunnel_recipe_on("recipe2_gre_tun", "gre", false, "tun");
}
