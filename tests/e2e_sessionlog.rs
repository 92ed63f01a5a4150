//! NAT session logging as an operator of shared addresses uses it: the
//! abuse desk asks "who was 203.0.113.1:P at time T", and the answer is in
//! the IPFIX collector's records and the syslog lines.
//!
//! natgw (AF_XDP) in the shared netns topology logs to a collector on the
//! gateway's loopback: IPFIX (UDP 4739) and syslog (UDP 5514). tshark
//! captures both and decodes the IPFIX with its own dissector (templates,
//! RFC 8158 fields); a plain UDP receiver writes the syslog lines to a
//! file. Traffic: UDP flows through masquerade, HTTP through the DNAT
//! port, a small SNAT pool that runs out of ports. Every flow `natgw
//! flows` showed must have its create and delete records with the same
//! inside and outside tuples, the counters of the delete must match, and
//! `natgw stats` must say nothing was lost.
//!
//! Needs root (namespaces) and tshark (scripts/setup.sh); skipped with a
//! message otherwise, unless it must run (root, `CI`, `NATGW_E2E=1`).

mod netns;

use netns::{DNAT_PORT, GW_WAN, OUT, OUT2, SRV, Spec, Topology};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NATGW: &str = env!("CARGO_BIN_EXE_natgw");
const IPFIX_PORT: u16 = 4739;
const SYSLOG_PORT: u16 = 5514;
/// UDP flows opened through masquerade.
const UDP_FLOWS: usize = 20;

/// Receives both outputs on the gateway's loopback (so the kernel does
/// not answer port-unreachable) and writes each syslog datagram as a line.
const RECEIVER: &str = r#"
import socket, select, sys
socks = {}
for port in (4739, 5514):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    socks[s] = port
out = open(sys.argv[1], "a", buffering=1)
print("READY", flush=True)
while True:
    r, _, _ = select.select(list(socks), [], [])
    for s in r:
        d = s.recv(65535)
        if socks[s] == 5514:
            out.write(d.decode() + "\n")
"#;

fn have_tshark() -> bool {
    let ok = Command::new("tshark").arg("--version").output().is_ok();
    if !ok {
        assert!(
            !netns::e2e_required(),
            "tshark missing: run scripts/setup.sh (Debian package tshark)"
        );
        eprintln!("SKIPPED: tshark missing (scripts/setup.sh installs it)");
    }
    ok
}

/// The topology's config with a 2-port SNAT pool for UDP to OUT2 (before
/// the masquerade rule), short timeouts, and `logging`.
fn config(t: &Topology, name: &str, logging: &str) -> PathBuf {
    let base = netns::natgw_config(&t.natgw_control_socket(), "");
    let tiny = format!(
        "[[rule]]\nname = \"tiny-pool\"\noif = \"wan0\"\ndst = \"{OUT2}\"\nproto = \"udp\"\n\
         action = \"snat\"\nto = \"{GW_WAN}\"\nports = \"6000-6001\"\n\n[[rule]]\nname = \"lan-out\""
    );
    let mut c = base.replacen("[[rule]]\nname = \"lan-out\"", &tiny, 1);
    assert!(
        c.contains("tiny-pool"),
        "the topology config changed: {base}"
    );
    // UDP flows outlive the three 2-second rounds of `udp-flows` (so the
    // pool stays taken), then end on their own.
    c += "\n[timeouts]\nudp = 8\nudp_stream = 8\ntcp_fin_wait = 3\ntcp_close_wait = 3\n\
          tcp_last_ack = 3\ntcp_time_wait = 3\ntcp_close = 3\n";
    c += logging;
    t.write_file(name, &c)
}

fn natgw_json(t: &Topology, args: &[&str]) -> Value {
    t.natgw_json(NATGW, args)
}

/// A flow as `natgw flows` shows it: inside and outside view of the first
/// packet (src, sport, dst, dport each), protocol, packets, bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Session {
    proto: u8,
    /// (src, sport, dst, dport) as it arrived.
    orig: (String, u16, String, u16),
    /// The same packet as it left (after NAT).
    xlat: (String, u16, String, u16),
}

fn proto_number(p: &str) -> u8 {
    match p {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        p => p.parse().unwrap_or(0),
    }
}

fn sessions_listed(t: &Topology) -> Vec<(Session, [u64; 2])> {
    let v = natgw_json(t, &["flows"]);
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let p = |v: &Value| v.as_u64().unwrap() as u16;
    // `natgw flows --json`: the list of flows.
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let (o, r) = (&f["orig"], &f["reply"]);
            let sess = Session {
                proto: proto_number(f["proto"].as_str().unwrap()),
                orig: (s(&o["src"]), p(&o["sport"]), s(&o["dst"]), p(&o["dport"])),
                // The reply tuple inverted is the original as it left.
                xlat: (s(&r["dst"]), p(&r["dport"]), s(&r["src"]), p(&r["sport"])),
            };
            let pk = &f["packets"];
            (sess, [pk[0].as_u64().unwrap(), pk[1].as_u64().unwrap()])
        })
        .collect()
}

/// One IPFIX data record as tshark decoded it: field name -> value.
type Record = HashMap<String, String>;

/// tshark's decoding of the capture: per IPFIX message its sequence
/// number and data records, in order.
fn decode_ipfix(pcap: &Path) -> Vec<(u64, Vec<Record>)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-d",
            &format!("udp.port=={IPFIX_PORT},cflow"),
            "-Y",
            "cflow",
            "-T",
            "json",
        ])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "tshark: {out:?}");
    let packets: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    let mut msgs = Vec::new();
    for p in packets.as_array().unwrap() {
        let c = &p["_source"]["layers"]["cflow"];
        assert_eq!(c["cflow.version"], "10", "not IPFIX: {c}");
        let seq = c["cflow.sequence"].as_str().unwrap().parse().unwrap();
        let mut records = Vec::new();
        for (k, set) in c.as_object().unwrap() {
            if !k.starts_with("Set ") {
                continue;
            }
            for (k, flow) in set.as_object().unwrap() {
                if !k.starts_with("Flow ") {
                    continue;
                }
                records.push(
                    flow.as_object()
                        .unwrap()
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect(),
                );
            }
        }
        msgs.push((seq, records));
    }
    msgs
}

fn record_session(r: &Record) -> Session {
    let g = |k: &str| {
        r.get(k)
            .unwrap_or_else(|| panic!("no {k} in {r:?}"))
            .clone()
    };
    let port = |k: &str| g(k).parse::<u16>().unwrap();
    Session {
        proto: g("cflow.protocol").parse().unwrap(),
        orig: (
            g("cflow.srcaddr"),
            port("cflow.srcport"),
            g("cflow.dstaddr"),
            port("cflow.dstport"),
        ),
        xlat: (
            g("cflow.post_natsource_ipv4_address"),
            port("cflow.post_naptsource_transport_port"),
            g("cflow.post_natdestination_ipv4_address"),
            port("cflow.post_naptdestination_transport_port"),
        ),
    }
}

fn syslog_line_of(s: &Session) -> String {
    let proto = match s.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        p => p.to_string(),
    };
    format!(
        "proto={proto} src={}:{} xsrc={}:{} dst={}:{} xdst={}:{}",
        s.orig.0, s.orig.1, s.xlat.0, s.xlat.1, s.orig.2, s.orig.3, s.xlat.2, s.xlat.3
    )
}

#[test]
fn afxdp_every_flow_is_logged_to_ipfix_and_syslog() {
    let Some(t) = Topology::new_or_skip(Spec::standard(), "sessionlog") else {
        return;
    };
    if !have_tshark() {
        return;
    }
    let syslog_file = t.dir().join("syslog.txt");
    let pcap = t.dir().join("log.pcapng");
    let receiver = t.write_file("receiver.py", RECEIVER);
    let _recv = t
        .spawn(
            "gw",
            &format!(
                "exec python3 -u {} {}",
                receiver.display(),
                syslog_file.display()
            ),
        )
        .ready();
    let mut tshark = t.spawn(
        "gw",
        &format!(
            "exec tshark -i lo -f 'udp port {IPFIX_PORT} or udp port {SYSLOG_PORT}' -w {} 2>&1",
            pcap.display()
        ),
    );
    assert!(
        tshark
            .wait_for_line("Capturing on", Duration::from_secs(20))
            .is_some(),
        "tshark did not start: {}",
        tshark.stdout()
    );
    let cfg = config(
        &t,
        "natgw.toml",
        &format!(
            "\n[logging]\nipfix = \"127.0.0.1:{IPFIX_PORT}\"\nipfix_domain = 42\n\
             syslog = \"127.0.0.1:{SYSLOG_PORT}\"\n"
        ),
    );
    let gw = t.spawn(
        "gw",
        &format!("exec {NATGW} run --config {} 2>&1", cfg.display()),
    );
    assert!(
        gw.wait_for_line(
            "session log: IPFIX to 127.0.0.1:4739 (domain 42), syslog to udp 127.0.0.1:5514",
            Duration::from_secs(20)
        )
        .is_some(),
        "natgw did not start with its session log:\n{}",
        gw.stdout()
    );

    // Traffic: UDP flows through masquerade, HTTP in through the DNAT
    // port, UDP to OUT2 through a pool of two ports (the rest refused).
    let _echo = t.spawn_py("out", &["udp-echo", "7000"]).ready();
    let _echo2 = t.spawn_py("out2", &["udp-echo", "7000"]).ready();
    let _web = t.spawn_py("srv", &["http-server", "80"]).ready();
    // Flows natgw listed after each step (a flow may end before the next):
    // the latest packet counts of each.
    let mut listed: HashMap<Session, [u64; 2]> = HashMap::new();
    let list = |listed: &mut HashMap<Session, [u64; 2]>| {
        std::thread::sleep(Duration::from_millis(200));
        listed.extend(sessions_listed(&t));
    };
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {OUT}"));
    let out = t
        .spawn_py("cl1", &["udp-flows", OUT, "7000", &UDP_FLOWS.to_string()])
        .finish(Duration::from_secs(30));
    assert!(
        out.contains(&format!("\"answered\": {UDP_FLOWS}")),
        "UDP flows: {out}"
    );
    list(&mut listed);
    let body = t.run(
        "out",
        &format!("curl -sS --noproxy '*' --max-time 10 http://{GW_WAN}:{DNAT_PORT}/"),
    );
    assert!(body.starts_with(&format!("peer {OUT}:")), "{body}");
    list(&mut listed);
    let tiny = t
        .spawn_py("cl2", &["udp-flows", OUT2, "7000", "5"])
        .finish(Duration::from_secs(30));
    assert!(
        tiny.contains("\"answered\": 2"),
        "pool of two ports: {tiny}"
    );

    list(&mut listed);
    let udp_flows = listed.iter().filter(|(s, _)| s.orig.3 == 7000).count();
    assert_eq!(udp_flows, UDP_FLOWS + 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|(s, _)| s.proto == 6 && s.xlat.2 == SRV && s.orig.3 == DNAT_PORT),
        "no DNAT flow listed: {listed:?}"
    );

    // Every flow ends on its (short) timer; the deletes follow.
    let until = Instant::now() + Duration::from_secs(30);
    while !sessions_listed(&t).is_empty() {
        assert!(Instant::now() < until, "flows did not expire");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = natgw_json(&t, &["stats"]);
    let log = &stats["session_log"];
    tshark.terminate(Duration::from_secs(10));

    // IPFIX, as tshark's dissector reads it.
    let msgs = decode_ipfix(&pcap);
    assert!(!msgs.is_empty(), "no IPFIX captured");
    // Sequence numbers count the data records before each message: none
    // went missing between natgw and the collector.
    let mut seq = 0;
    for (s, recs) in &msgs {
        assert_eq!(*s, seq, "IPFIX sequence: {msgs:?}");
        seq += recs.len() as u64;
    }
    let records: Vec<&Record> = msgs.iter().flat_map(|(_, r)| r).collect();
    let by_event = |e: &str| -> Vec<&Record> {
        records
            .iter()
            .copied()
            .filter(|r| r.get("cflow.nat_event").map(String::as_str) == Some(e))
            .collect()
    };
    let (creates, deletes) = (by_event("4"), by_event("5"));
    let syslog = std::fs::read_to_string(&syslog_file).unwrap_or_default();
    for (s, packets) in &listed {
        let c: Vec<_> = creates.iter().filter(|r| record_session(r) == *s).collect();
        assert_eq!(c.len(), 1, "create records of {s:?}: {c:?}");
        let d: Vec<_> = deletes.iter().filter(|r| record_session(r) == *s).collect();
        assert_eq!(d.len(), 1, "delete records of {s:?}");
        let d = d[0];
        let n = |k: &str| d[k].parse::<u64>().unwrap();
        if s.proto == 17 {
            // No packet after the listing.
            assert_eq!(n("cflow.initiator_packets"), packets[0], "{d:?}");
            assert_eq!(n("cflow.responder_packets"), packets[1], "{d:?}");
        } else {
            // The TCP close's last segments may come after it.
            assert!(n("cflow.initiator_packets") >= packets[0], "{d:?}");
            assert!(n("cflow.responder_packets") >= packets[1], "{d:?}");
        }
        let line = syslog_line_of(s);
        for ev in ["create", "delete"] {
            let n = syslog
                .lines()
                .filter(|l| l.contains(" natgw ") && l.contains(&format!(" {ev} - {line}")))
                .count();
            assert_eq!(n, 1, "syslog {ev} lines with `{line}`:\n{syslog}");
        }
    }
    assert_eq!(
        creates.len(),
        listed.len(),
        "create records of flows natgw never listed"
    );
    // The pool ran out: one record (at most one per second), and its line.
    let exhausted = by_event("12");
    assert!(
        !exhausted.is_empty(),
        "no ports-exhausted record: {records:?}"
    );
    assert_eq!(exhausted[0]["cflow.post_natsource_ipv4_address"], GW_WAN);
    assert_eq!(exhausted[0]["cflow.protocol"], "17");
    assert!(
        syslog.contains(&format!(" ports_exhausted - proto=udp xsrc={GW_WAN}")),
        "{syslog}"
    );
    // natgw's own account: everything exported, nothing lost.
    let count = |k: &str| {
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == k)
            .and_then(|e| e[1].as_u64())
            .unwrap()
    };
    assert_eq!(count("create") as usize, creates.len(), "{log}");
    assert_eq!(count("delete") as usize, deletes.len(), "{log}");
    assert_eq!(log["dropped_ring_full"], 0, "{log}");
    assert_eq!(log["dropped_send_failed"], 0, "{log}");
    assert_eq!(
        log["syslog_lines"].as_u64().unwrap() as usize,
        syslog.lines().count(),
        "{log}"
    );
}

#[test]
fn afxdp_logging_outputs_are_checked_and_a_reload_changes_them() {
    let Some(t) = Topology::new_or_skip(Spec::minimal(), "sessionlog_cfg") else {
        return;
    };
    // A syslog socket that does not exist: natgw does not start, and says
    // which output and why.
    let bad = config(
        &t,
        "bad.toml",
        "\n[logging]\nsyslog = \"/nonexistent/natgw-test.sock\"\n",
    );
    let o = t.exec_timeout(
        "gw",
        &format!("{NATGW} run --config {} 2>&1", bad.display()),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("logging.syslog /nonexistent/natgw-test.sock: No such file or directory"),
        "{text}"
    );
    let xdp = t.exec_timeout("gw", "ip link show lan0", Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "XDP attached by a natgw that refused to start"
    );

    // Running without logging; a reload to a bad output changes nothing, a
    // good one turns logging on.
    let off = config(&t, "off.toml", "");
    let mut gw = t.spawn(
        "gw",
        &format!("exec {NATGW} run --config {} 2>&1", off.display()),
    );
    assert!(
        gw.wait_for_line("natgw running", Duration::from_secs(20))
            .is_some(),
        "{}",
        gw.stdout()
    );
    let reload = |cfg: &Path| {
        Command::new(NATGW)
            .args(["reload", "--socket"])
            .arg(t.natgw_control_socket())
            .arg("--config")
            .arg(cfg)
            .output()
            .unwrap()
    };
    let r = reload(&bad);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("logging.syslog /nonexistent/natgw-test.sock")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(natgw_json(&t, &["stats"])["session_log"].is_null());
    let sock = t.dir().join("syslog.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let on = config(
        &t,
        "on.toml",
        &format!(
            "\n[logging]\nsyslog = \"{}\"\nsyslog_facility = \"local3\"\n",
            sock.display()
        ),
    );
    let r = reload(&on);
    assert!(r.status.success(), "{r:?}");
    let log = &natgw_json(&t, &["stats"])["session_log"];
    assert_eq!(
        log["outputs"][0],
        format!("syslog unix {}", sock.display()),
        "{log}"
    );
    // A flow through the gateway now shows up on the local socket.
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {}", t.addr("out")));
    let mut buf = [0u8; 2048];
    let n = listener.recv(&mut buf).expect("a syslog line");
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(
        line.starts_with("<158>1 ")
            && line.contains(" natgw ")
            && line.contains(" create - proto=icmp src="),
        "{line}"
    );

    // A per-source limit of one flow: cl1's next flow is refused, and the
    // refusal is logged (RFC 8158 quota exceeded, max entries per user).
    let limited = config(
        &t,
        "limited.toml",
        &format!(
            "\n[limits]\nflows_per_source = 1\n\n[logging]\nsyslog = \"{}\"\nsyslog_facility = \"local3\"\n",
            sock.display()
        ),
    );
    let r = reload(&limited);
    assert!(r.status.success(), "{r:?}");
    let o = t.exec_timeout(
        "cl1",
        &format!("ping -n -q -c 1 -W 1 {}", t.addr("out")),
        Duration::from_secs(10),
    );
    assert!(!o.status.success(), "the second flow got through: {o:?}");
    let want = format!(" source_limit - src={} flows_per_source=1", t.addr("cl1"));
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let n = listener.recv(&mut buf).expect("a source_limit line");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.ends_with(&want) {
            assert!(line.starts_with("<156>1 "), "a warning: {line}");
            break;
        }
        assert!(Instant::now() < until, "no `{want}` line; last: {line}");
    }

    // Syslog over TCP (RFC 6587 octet counting): with nothing listening
    // the reload is refused; with a receiver, lines arrive framed.
    let tcp = config(
        &t,
        "tcp.toml",
        "\n[logging]\nsyslog = \"tcp:127.0.0.1:6514\"\n",
    );
    let r = reload(&tcp);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("logging.syslog tcp:127.0.0.1:6514: Connection refused")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let received = t.dir().join("tcp-syslog.txt");
    let _receiver = t.spawn(
        "gw",
        &format!(
            "exec socat -u TCP-LISTEN:6514,bind=127.0.0.1,reuseaddr OPEN:{},creat,append",
            received.display()
        ),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !reload(&tcp).status.success() {
        assert!(Instant::now() < until, "the TCP receiver never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        natgw_json(&t, &["stats"])["session_log"]["outputs"][0],
        "syslog tcp 127.0.0.1:6514"
    );
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {}", t.addr("out")));
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        if text.contains(" create - proto=icmp src=") {
            break text;
        }
        assert!(Instant::now() < until, "no create line over TCP: {text:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each frame is `LENGTH SP LINE`, back to back.
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let (len, after) = rest.split_once(' ').expect("a length");
        let len: usize = len
            .parse()
            .unwrap_or_else(|_| panic!("bad frame at {rest:?}"));
        let line = &after[..len];
        assert!(
            line.starts_with("<13") && line.contains(" natgw "),
            "{line}"
        );
        rest = &after[len..];
    }

    // natgw stops with no snapshot and no HA peer to carry its flows on:
    // the live ping flow ends here, and its delete line is sent first.
    let before = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(!before.contains(" delete - proto=icmp"), "{before}");
    let st = gw.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{}", gw.stdout());
    assert!(
        gw.stdout()
            .contains("live flow(s) logged as ended at the stop"),
        "{}",
        gw.stdout()
    );
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        if text.contains(" delete - proto=icmp src=") {
            break;
        }
        assert!(
            Instant::now() < until,
            "no delete line at the stop: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
