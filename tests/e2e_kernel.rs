//! The e2e scenarios (tests/netns/scenarios.rs) with the Linux kernel as
//! the gateway: ip_forward plus the nftables ruleset equivalent to natgw's
//! config (netns::KERNEL_RULESET). This is the reference natgw is held to;
//! the same scenario functions run against natgw elsewhere.
//!
//! Needs root (network namespaces); skipped with a message otherwise.
//! Each test builds its own namespaces (unique names), so they run in
//! parallel; all are removed on drop, failures included.

mod netns;

use netns::{Spec, Topology, scenarios};

/// A standard topology with the kernel as the gateway, or None (skip).
fn kernel_gateway(test: &str) -> Option<Topology> {
    let t = Topology::new_or_skip(Spec::standard(), test)?;
    t.use_kernel_gateway();
    Some(t)
}

macro_rules! kernel_scenario {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let Some(t) = kernel_gateway(stringify!($name)) else { return };
            scenarios::$name(&t);
        }
    )*};
}

kernel_scenario!(
    masquerade_http,
    udp_1000_flows,
    ping_two_hosts,
    dnat_port_forward,
    hairpin,
    icmp_errors,
    tcp_1000_connections,
    same_source_mapping,
    icmp_errors_other_protocols,
    fragments_out_of_order,
);

/// The blind injection of `scenarios::tcp_out_of_window` with the kernel
/// as the gateway: conntrack finds both segments out of window (INVALID),
/// so neither is translated to the inside host; with no `ct state invalid
/// drop` in the ruleset they go up the gateway's own stack instead. The
/// kernel's verdict on the connection is printed (on this machine its
/// stack answers the data segment with a RST that ends the connection;
/// natgw drops both and the conversation carries on).
#[test]
fn tcp_out_of_window() {
    let Some(t) = kernel_gateway("tcp_out_of_window") else {
        return;
    };
    let p = scenarios::tcp_out_of_window_probe(&t);
    assert!(
        !p.reached_inside(),
        "the kernel passed an out-of-window segment inside: {}",
        p.client
    );
    eprintln!(
        "kernel NAT: connection carried on after the injection: {}",
        p.carried_on()
    );
}

/// The natgw config the natgw runs use must say what the kernel ruleset
/// says; at least it must be one natgw accepts.
#[test]
fn natgw_config_is_valid() {
    let dir = std::env::temp_dir().join(format!("ngt-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("natgw.toml");
    let text = netns::natgw_config(&dir.join("natgw.sock"), "ipv6 = \"drop\"");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_natgw"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run natgw check");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "natgw check rejected the e2e config:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without a gateway that forwards, nothing crosses: the scenarios can't
/// pass by accident (e.g. through a path around the gateway).
#[test]
fn bare_gateway_forwards_nothing() {
    let Some(t) = Topology::new_or_skip(Spec::standard(), "bare_gateway_forwards_nothing") else {
        return;
    };
    // The hosts reach the gateway itself...
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {}", netns::GW_LAN));
    t.run("out", &format!("ping -n -q -c 1 -W 2 {}", netns::GW_WAN));
    // ...and the outside router's far side is reachable from outside hosts...
    t.run("out", &format!("ping -n -q -c 1 -W 2 {}", netns::FAR));
    // ...but not through the bare gateway.
    let o = t.exec("cl1", &format!("ping -n -q -c 1 -W 1 {}", netns::OUT));
    assert!(!o.status.success(), "bare gateway forwarded a ping");
    // And outside hosts have no route to the LAN at all.
    let o = t.exec("out", &format!("ping -n -q -c 1 -W 1 {}", netns::CL1));
    assert!(
        !o.status.success(),
        "outside host reached the LAN untranslated"
    );
}

/// What a user who runs the suite without root sees, and what CI sees: this
/// test binary, run again as an unprivileged user on one e2e test, skips
/// it (passes, with a SKIPPED line) when nothing asks for e2e tests, and
/// fails naming the reason under `CI=true` or `NATGW_E2E=1`.
#[test]
fn skipping_is_a_failure_under_ci() {
    if let Some(why) = netns::skip_reason() {
        assert!(!netns::e2e_required(), "cannot run: {why}");
        eprintln!("SKIPPED skipping_is_a_failure_under_ci: {why}");
        return;
    }
    // A copy that the unprivileged user may execute.
    let dir = std::env::temp_dir().join(format!("ngt-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("e2e_kernel");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["bare_gateway_forwards_nothing", "--exact", "--nocapture"])
            .env_remove("CI")
            .env_remove("NATGW_E2E")
            .current_dir(&dir);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().expect("run setpriv");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, text) = run(&[]);
    assert!(
        ok && text.contains("SKIPPED bare_gateway_forwards_nothing: not root"),
        "without CI, an unprivileged run should skip with the reason:\n{text}"
    );
    for env in [[("CI", "true")], [("NATGW_E2E", "1")]] {
        let (ok, text) = run(&env);
        assert!(
            !ok && text.contains("end-to-end test cannot run: not root"),
            "with {env:?}, an unprivileged run must fail with the reason:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
