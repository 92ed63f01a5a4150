//! The `[metrics]` endpoint as an operator uses it: natgw (AF_XDP) in the
//! shared netns topology with a virtual service, traffic through it, the
//! page checked by `promtool check metrics`, and a real Prometheus server
//! (started by the test in the gateway's namespace, scraping natgw over
//! its loopback) whose query API gives back the counters `natgw stats` and
//! `natgw services` show. Plus the refusals: a port in use stops `natgw
//! run` before it attaches anything, and a reload to an address it cannot
//! use (or cannot parse) changes nothing.
//!
//! Needs root (namespaces) and the Debian package `prometheus`
//! (scripts/setup.sh); skipped with a message otherwise, unless it must
//! run (root, `CI`, `NATGW_E2E=1`).

mod netns;

use netns::{OUT, SRV, Spec, Topology};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");
/// A virtual service on the outside network, one real server: srv.
const VIP: &str = "203.0.113.10";
const METRICS: &str = "127.0.0.1:9469";
const PROM: &str = "127.0.0.1:9090";

/// The topology's natgw config plus a virtual service and `[metrics]`
/// listening on `listen` (None: no `[metrics]`), written as `name`.
fn config(t: &Topology, name: &str, listen: Option<&str>, extra: &str) -> PathBuf {
    let mut c = netns::natgw_config(&t.natgw_control_socket(), "");
    c += &format!(
        "\n[[service]]\naddress = \"{VIP}\"\nport = 80\nproto = \"tcp\"\nscheduler = \"rr\"\n\
         [[service.real]]\naddress = \"{SRV}\"\nport = 80\n"
    );
    c += extra;
    if let Some(l) = listen {
        c += &format!("\n[metrics]\nlisten = \"{l}\"\n");
    }
    t.write_file(name, &c)
}

fn start_natgw(t: &Topology, cfg: &Path) -> netns::Proc {
    let p = t.spawn(
        "gw",
        &format!("exec {NATGW} run --config {} 2>&1", cfg.display()),
    );
    if p.wait_for_line("natgw running", Duration::from_secs(20))
        .is_none()
    {
        panic!("natgw did not start:\n{}", p.stdout());
    }
    p
}

/// Both tools must be there; None (skip) only where skipping is allowed.
fn have_prometheus() -> bool {
    let ok = Command::new("promtool").arg("--version").output().is_ok()
        && Command::new("prometheus").arg("--version").output().is_ok();
    if !ok {
        assert!(
            !netns::e2e_required(),
            "promtool/prometheus missing: run scripts/setup.sh (Debian package prometheus)"
        );
        eprintln!("SKIPPED: promtool/prometheus missing (scripts/setup.sh installs them)");
    }
    ok
}

fn natgw_json(t: &Topology, args: &[&str]) -> Value {
    t.natgw_json(NATGW, args)
}

/// `GET http://ADDR/metrics` from the gateway's namespace.
fn scrape(t: &Topology, addr: &str) -> Option<String> {
    let o = t.exec_timeout(
        "gw",
        &format!("curl -sS --fail --noproxy '*' --max-time 5 http://{addr}/metrics"),
        Duration::from_secs(10),
    );
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// One instant query to the Prometheus server: the first sample's value.
fn prom_query(t: &Topology, q: &str) -> Option<f64> {
    let o = t.exec_timeout(
        "gw",
        &format!(
            "curl -sS --noproxy '*' --max-time 5 -G --data-urlencode 'query={q}' http://{PROM}/api/v1/query"
        ),
        Duration::from_secs(10),
    );
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    assert_eq!(v["status"], "success", "query {q}: {v}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls `q` until it equals `want` (Prometheus scrapes every second);
/// returns the last value seen.
fn prom_until(t: &Topology, q: &str, want: f64, within: Duration) -> Option<f64> {
    let until = Instant::now() + within;
    loop {
        let v = prom_query(t, q);
        if v == Some(want) || Instant::now() >= until {
            return v;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn afxdp_prometheus_scrapes_what_natgw_stats_shows() {
    let Some(t) = Topology::new_or_skip(Spec::standard(), "metrics_prom") else {
        return;
    };
    if !have_prometheus() {
        return;
    }
    let cfg = config(&t, "metrics.toml", Some(METRICS), "");
    let _gw = start_natgw(&t, &cfg);
    let _real = t.spawn_py("srv", &["http-server", "80"]).ready();
    let _web = t.spawn_py("out", &["http-server", "8000"]).ready();

    // A real Prometheus server in the gateway's namespace, scraping natgw
    // every second.
    let prom_dir = t.dir().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom_cfg = t.write_file(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: natgw\n    static_configs:\n      - targets: [\"{METRICS}\"]\n"
        ),
    );
    let prom = t.spawn(
        "gw",
        &format!(
            "exec prometheus --config.file={} --storage.tsdb.path={} --web.listen-address={PROM} 2>&1",
            prom_cfg.display(),
            prom_dir.join("data").display()
        ),
    );
    assert!(
        prom.wait_for_line(
            "Server is ready to receive web requests",
            Duration::from_secs(60)
        )
        .is_some(),
        "prometheus did not start:\n{}",
        prom.stdout()
    );

    // Traffic while Prometheus scrapes: a ping stream, masqueraded HTTP,
    // and five connections to the virtual service.
    let ping = t.spawn("cl1", &format!("exec ping -q -i 0.05 -c 60 {OUT}"));
    for host in ["cl1", "cl2"] {
        let body = t.run(
            host,
            &format!("curl -sS --noproxy '*' --max-time 10 http://{OUT}:8000/"),
        );
        assert!(body.starts_with("peer 203.0.113.1:"), "{body}");
    }
    for _ in 0..5 {
        let body = t.run(
            "out",
            &format!("curl -sS --noproxy '*' --max-time 10 http://{VIP}/"),
        );
        assert!(body.starts_with(&format!("peer {OUT}:")), "{body}");
    }
    // The page as a scraper sees it passes promtool's checks.
    let page = scrape(&t, METRICS).expect("GET /metrics");
    let file = t.write_file("metrics.txt", &page);
    let lint = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    for name in [
        "natgw_conntrack_entries ",
        "natgw_conntrack_entries_limit 262144",
        "natgw_packets_total{worker=",
        "natgw_drops_total{worker=",
        "natgw_engine_packet_duration_seconds_bucket{",
        "natgw_nat_port_flows{address=\"203.0.113.1\",proto=\"tcp\"}",
        "natgw_ipvs_backend_connections_total{local_address=\"203.0.113.10\",local_port=\"80\",remote_address=\"10.0.0.5\",remote_port=\"80\",proto=\"TCP\"}",
    ] {
        assert!(page.contains(name), "no {name} in\n{page}");
    }
    let out = ping.finish(Duration::from_secs(20));
    assert!(out.contains(" 0% packet loss"), "{out}");

    // Traffic has stopped: what Prometheus scraped equals natgw's own view.
    std::thread::sleep(Duration::from_millis(500));
    let stats = natgw_json(&t, &["stats"]);
    let created = stats["total"]["flows_created"].as_u64().unwrap();
    assert!(created >= 1 + 2 + 5, "flows: {stats}");
    let seen = prom_until(
        &t,
        "sum(natgw_flows_created_total)",
        created as f64,
        Duration::from_secs(20),
    );
    assert_eq!(
        seen,
        Some(created as f64),
        "Prometheus vs natgw stats flows_created"
    );
    let services = natgw_json(&t, &["services", "--stats"]);
    let real = &services["services"][0]["reals"][0];
    assert_eq!(real["conns"], 5, "{services}");
    let pin = real["packets_in"].as_u64().unwrap();
    assert!(
        pin >= 5 * 5,
        "5 HTTP connections carry more packets: {real}"
    );
    let q = "natgw_ipvs_backend_incoming_packets_total{remote_address=\"10.0.0.5\"}";
    assert_eq!(
        prom_until(&t, q, pin as f64, Duration::from_secs(10)),
        Some(pin as f64),
        "Prometheus vs natgw services packets_in"
    );
    assert_eq!(
        prom_query(&t, "natgw_ipvs_backend_connections_total"),
        Some(5.0)
    );
    assert_eq!(prom_query(&t, "up{job=\"natgw\"}"), Some(1.0));
}

/// A listener that holds `addr` in the gateway's namespace until dropped.
fn hold_port(t: &Topology, addr: &str) -> netns::Proc {
    let (ip, port) = addr.split_once(':').unwrap();
    let p = t.spawn(
        "gw",
        &format!(
            "exec python3 -c 'import socket,time; s=socket.socket(); s.bind((\"{ip}\", {port})); s.listen(); print(\"bound\", flush=True); time.sleep(600)'"
        ),
    );
    assert!(
        p.wait_for_line("bound", Duration::from_secs(10)).is_some(),
        "{}",
        p.stdout()
    );
    p
}

fn reload(t: &Topology, cfg: &Path) -> (bool, String) {
    let o = Command::new(NATGW)
        .args(["reload", "--config"])
        .arg(cfg)
        .arg("--socket")
        .arg(t.natgw_control_socket())
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn afxdp_bad_metrics_config_is_refused_and_a_reload_changes_nothing() {
    let Some(t) = Topology::new_or_skip(Spec::minimal(), "metrics_bad") else {
        return;
    };
    let busy = "127.0.0.1:9471";
    let _holder = hold_port(&t, busy);

    // Port in use: natgw run says so, exits non-zero, attaches nothing.
    let cfg = config(&t, "busy.toml", Some(busy), "");
    let o = t.exec_timeout(
        "gw",
        &format!("{NATGW} run --config {} 2>&1", cfg.display()),
        Duration::from_secs(30),
    );
    let msg = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("metrics.listen: cannot listen on 127.0.0.1:9471: Address already in use"),
        "{msg}"
    );
    let link = t.run("gw", "ip -d link show dev lan0");
    assert!(
        !link.contains("xdp"),
        "an XDP program was attached:\n{link}"
    );
    assert!(!t.natgw_control_socket().exists());

    // Running on a free port; a ping stream shows forwarding carries on.
    let good = "127.0.0.1:9472";
    let cfg = config(&t, "good.toml", Some(good), "");
    let _gw = start_natgw(&t, &cfg);
    assert!(scrape(&t, good).is_some());
    let code = |args: &str| {
        t.run(
            "gw",
            &format!("curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {args}"),
        )
    };
    assert_eq!(code(&format!("http://{good}/")), "404");
    assert_eq!(code(&format!("-X POST http://{good}/metrics")), "405");
    let pings = || {
        t.exec_timeout(
            "cl1",
            &format!("ping -c 1 -W 2 {OUT}"),
            Duration::from_secs(5),
        )
        .status
        .success()
    };
    assert!(pings());

    // A reload to the busy port, which would also drop ICMP to OUT:
    // refused, nothing changes (rules, endpoint).
    let drop_ping = format!("\n[[rule]]\ndst = \"{OUT}\"\nproto = \"icmp\"\naction = \"drop\"\n");
    let to_busy = config(&t, "to_busy.toml", Some(busy), &drop_ping);
    let (ok, msg) = reload(&t, &to_busy);
    assert!(!ok, "{msg}");
    assert!(
        msg.contains("metrics.listen: cannot listen on 127.0.0.1:9471")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(pings(), "the refused reload's drop rule is in force");
    assert!(scrape(&t, good).is_some(), "the endpoint moved");

    // Unparsable: the same.
    let bad = config(&t, "bad.toml", Some("127.0.0.1"), &drop_ping);
    let (ok, msg) = reload(&t, &bad);
    assert!(!ok, "{msg}");
    assert!(
        msg.contains("metrics.listen: `127.0.0.1` is not ADDRESS:PORT"),
        "{msg}"
    );
    assert!(pings());
    assert!(scrape(&t, good).is_some());

    // A good reload moves the endpoint. natgw counts two reloads: the one
    // to the busy port failed, this one succeeded (`natgw reload` checked
    // the unparsable file itself and never sent it).
    let moved = "127.0.0.1:9473";
    let cfg = config(&t, "moved.toml", Some(moved), "");
    let (ok, msg) = reload(&t, &cfg);
    assert!(ok, "{msg}");
    let page = scrape(&t, moved).expect("the endpoint on its new address");
    assert!(
        page.contains("natgw_reloads_total{result=\"success\"} 1\n")
            && page.contains("natgw_reloads_total{result=\"failure\"} 1\n"),
        "{page}"
    );
    let until = Instant::now() + Duration::from_secs(3);
    while scrape(&t, good).is_some() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        scrape(&t, good).is_none(),
        "still served on the old address"
    );
    assert!(pings());
}

/// `natgw run --takeover`: the new process serves the endpoint on the same
/// port once the old one let it go, and says it took over; the old
/// process's counters come along as `worker="carried"`.
#[test]
fn afxdp_takeover_moves_the_endpoint_to_the_new_process() {
    let Some(t) = Topology::new_or_skip(Spec::minimal(), "metrics_takeover") else {
        return;
    };
    let addr = "127.0.0.1:9474";
    let cfg = config(&t, "takeover.toml", Some(addr), "");
    let mut old = start_natgw(&t, &cfg);
    t.run("cl1", &format!("ping -c 3 -i 0.2 -W 2 {OUT}"));
    let before = scrape(&t, addr).expect("old natgw's page");
    assert!(before.contains("natgw_takeovers_total 0\n"), "{before}");
    let new = t.spawn(
        "gw",
        &format!(
            "exec {NATGW} run --config {} --takeover 2>&1",
            cfg.display()
        ),
    );
    assert!(
        new.wait_for_line("natgw running", Duration::from_secs(30))
            .is_some(),
        "takeover failed:\n{}\nold:\n{}",
        new.stdout(),
        old.stdout()
    );
    assert!(
        old.wait(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "the old natgw did not exit cleanly:\n{}",
        old.stdout()
    );
    let until = Instant::now() + Duration::from_secs(5);
    let mut page = None;
    while page.is_none() && Instant::now() < until {
        page = scrape(&t, addr);
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = page.unwrap_or_else(|| panic!("no endpoint after the takeover:\n{}", new.stdout()));
    assert!(page.contains("natgw_takeovers_total 1\n"), "{page}");
    assert!(page.contains("natgw_takeover_duration_seconds "), "{page}");
    assert!(
        page.contains("natgw_flows_created_total{worker=\"carried\"} "),
        "{page}"
    );
    t.run("cl1", &format!("ping -c 2 -i 0.2 -W 2 {OUT}"));
}
