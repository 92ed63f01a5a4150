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
);

natgw_scenarios!(tun:
    masquerade_http,
    udp_1000_flows,
    ping_two_hosts,
    dnat_port_forward,
    hairpin,
    icmp_errors,
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
    for bad in ["port_exhausted", "flow_table_full", "tx_full", "flow_race"] {
        assert!(
            drops.get(bad).is_none(),
            "{bad} drops during the run: {drops}"
        );
    }
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
/// untranslated while it is down.
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
}

/// A config natgw cannot apply is refused with a clear error before
/// anything is attached.
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
