//! The e2e scenarios (the stories of docs SCENARIOS.md §1–2), each a
//! function of a built and configured [`Topology`]: the gateway in it may
//! be the Linux kernel (tests/e2e_kernel.rs, the reference) or natgw — the
//! functions don't know and don't care. Each panics with what a user would
//! have seen when the gateway gets it wrong.
//!
//! They need [`Spec::standard`](super::Spec::standard) (cl1, cl2, srv
//! inside; out, out2, rtr, far outside) and a gateway configured like
//! [`KERNEL_RULESET`](super::KERNEL_RULESET) /
//! [`NATGW_CONFIG`](super::NATGW_CONFIG). Helper programs are python3
//! ([`PY_TOOLS`]) plus curl, ping and traceroute.

use super::{DNAT_PORT, FAR, GW_LAN, GW_WAN, OUT, OUT2, RTR, SRV_PORT, Topology};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A scenario: panics when the gateway gets it wrong.
pub type Scenario = fn(&Topology);

/// Every scenario, by name, for test files that run them all.
pub const ALL: &[(&str, Scenario)] = &[
    ("masquerade_http", masquerade_http),
    ("udp_1000_flows", udp_1000_flows),
    ("ping_two_hosts", ping_two_hosts),
    ("dnat_port_forward", dnat_port_forward),
    ("hairpin", hairpin),
    ("icmp_errors", icmp_errors),
    ("tcp_1000_connections", tcp_1000_connections),
    ("same_source_mapping", same_source_mapping),
    ("icmp_errors_other_protocols", icmp_errors_other_protocols),
    ("fragments_out_of_order", fragments_out_of_order),
];

/// Runs a PY_TOOLS subcommand to completion and parses its JSON line.
fn py_json(t: &Topology, host: &str, args: &[&str], timeout: Duration) -> Value {
    let out = t.spawn_py(host, args).finish(timeout);
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("[{host}] {args:?}: bad output {out:?}: {e}"))
}

fn curl(t: &Topology, host: &str, url: &str) -> String {
    t.run(host, &format!("curl -sS --noproxy '*' --max-time 10 {url}"))
}

fn timed(name: &str, t0: Instant) {
    eprintln!("scenario {name}: {:.2?}", t0.elapsed());
}

/// §1 masquerade: inside hosts fetch a page from an outside HTTP server;
/// the server sees every one of them as the gateway's outside address.
pub fn masquerade_http(t: &Topology) {
    let t0 = Instant::now();
    let web = t.spawn_py("out", &["http-server", "8000"]).ready();
    let clients = ["cl1", "cl2", "srv"];
    for host in clients {
        let body = curl(t, host, &format!("http://{OUT}:8000/"));
        assert!(
            body.starts_with(&format!("peer {GW_WAN}:")),
            "[{host}] outside server saw {body:?}, expected the gateway's outside address {GW_WAN}"
        );
    }
    let gets = web.lines_starting("GET ", clients.len(), Duration::from_secs(5));
    assert_eq!(gets.len(), clients.len(), "server log: {gets:?}");
    assert!(
        gets.iter()
            .all(|l| l.starts_with(&format!("GET {GW_WAN}:"))),
        "server log shows inside addresses: {gets:?}"
    );
    timed("masquerade_http", t0);
}

/// §1 masquerade, UDP: 1000 flows (1000 source ports of one inside host)
/// to one outside server; every flow is answered (unanswered requests are
/// sent again, at most twice, and at least 95% must be answered the first
/// time), each flow got its own outside port, all from the gateway's
/// outside address.
pub fn udp_1000_flows(t: &Topology) {
    let t0 = Instant::now();
    let _echo = t.spawn_py("out", &["udp-echo", "7000"]).ready();
    // Neighbours resolved first: this is about flows, not ARP queues.
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {OUT}"));
    let r = py_json(
        t,
        "cl1",
        &["udp-flows", OUT, "7000", "1000"],
        Duration::from_secs(30),
    );
    eprintln!("udp_1000_flows: {r}");
    assert_eq!(r["local_ports"], 1000, "{r}");
    assert_eq!(r["answered"], 1000, "not every UDP flow was answered: {r}");
    // Retries (two more rounds for the unanswered) forgive a little loss,
    // not a gateway that drops the first packet of every flow.
    let first = r["answered_by_round"][0].as_u64().unwrap_or(0);
    assert!(
        first >= 950,
        "only {first} of 1000 flows answered at the first try: {r}"
    );
    assert_eq!(
        r["bad"].as_array().map(Vec::len),
        Some(0),
        "wrong answers: {r}"
    );
    assert_eq!(r["seen_addrs"], serde_json::json!([GW_WAN]), "{r}");
    assert_eq!(r["seen_ports"], 1000, "flows shared an outside port: {r}");
    timed("udp_1000_flows", t0);
}

/// §1 ping through the NAT: two inside hosts ping one outside host at the
/// same time, first with ping(8), then with raw echo requests that carry
/// the same ICMP identifier from both hosts (the NAT must tell them apart).
pub fn ping_two_hosts(t: &Topology) {
    let t0 = Instant::now();
    let cmd = format!("ping -n -q -c 20 -i 0.05 -W 2 {OUT}");
    let a = t.spawn("cl1", &cmd);
    let b = t.spawn("cl2", &cmd);
    for (host, p) in [("cl1", a), ("cl2", b)] {
        let out = p.finish(Duration::from_secs(20));
        assert!(
            out.contains("20 packets transmitted, 20 received"),
            "[{host}] ping lost replies:\n{out}"
        );
    }
    let a = t.spawn_py("cl1", &["ping-id", OUT, "4660", "20"]);
    let b = t.spawn_py("cl2", &["ping-id", OUT, "4660", "20"]);
    for (host, p) in [("cl1", a), ("cl2", b)] {
        let out = p.finish(Duration::from_secs(20));
        let r: Value = serde_json::from_str(out.trim()).expect("ping-id json");
        assert_eq!(
            r["received"], 20,
            "[{host}] same-identifier echo lost replies: {r}"
        );
        assert_eq!(r["bad"], 0, "[{host}] corrupted echo replies: {r}");
    }
    timed("ping_two_hosts", t0);
}

/// §2 port forwarding: outside clients reach the inside server through
/// GW_WAN:8080, and the server sees their real addresses.
pub fn dnat_port_forward(t: &Topology) {
    let t0 = Instant::now();
    let web = t
        .spawn_py("srv", &["http-server", &SRV_PORT.to_string()])
        .ready();
    for (host, addr) in [("out", OUT), ("out2", OUT2)] {
        let body = curl(t, host, &format!("http://{GW_WAN}:{DNAT_PORT}/"));
        assert!(
            body.starts_with(&format!("peer {addr}:")),
            "[{host}] inside server saw {body:?}, expected the client's own address {addr}"
        );
    }
    let gets = web.lines_starting("GET ", 2, Duration::from_secs(5));
    assert_eq!(gets.len(), 2, "server log: {gets:?}");
    timed("dnat_port_forward", t0);
}

/// §2 hairpinning: inside clients reach the inside server by its public
/// address GW_WAN:8080 (repeatedly: no ICMP redirect may short-cut it);
/// the server sees the gateway's inside address, so replies come back
/// through the gateway.
pub fn hairpin(t: &Topology) {
    let t0 = Instant::now();
    let _web = t
        .spawn_py("srv", &["http-server", &SRV_PORT.to_string()])
        .ready();
    for round in 0..3 {
        for host in ["cl1", "cl2"] {
            let body = curl(t, host, &format!("http://{GW_WAN}:{DNAT_PORT}/"));
            assert!(
                body.starts_with(&format!("peer {GW_LAN}:")),
                "[{host}] round {round}: server saw {body:?}, expected the gateway's inside address {GW_LAN}"
            );
        }
    }
    timed("hairpin", t0);
}

/// §1 ICMP errors through the NAT (RFC 5508): port unreachable from an
/// outside host reaches the inside socket (ECONNREFUSED), TTL exceeded
/// from the gateway (TTL 1) and from the router beyond it (TTL 2) reach
/// the probing socket (IP_RECVERR) with the quoted datagram translated
/// back (its destination and payload as sent), and traceroute shows the
/// path: gateway, rtr, far. A gateway that takes more than one TTL
/// ([`Topology::set_gw_ttl_cost`], natgw's TUN backend: 3) shows up at as
/// many hops, the first answering, later ones answering or silent.
pub fn icmp_errors(t: &Topology) {
    let t0 = Instant::now();
    let r = py_json(
        t,
        "cl1",
        &["udp-refused", OUT, "9"],
        Duration::from_secs(15),
    );
    assert_eq!(
        r["result"], "ECONNREFUSED",
        "UDP to a closed outside port: {r}"
    );

    // Linux routers quote as much of the datagram as fits (RFC 1812); the
    // gateway's own errors may quote only the 8 bytes RFC 792 asks for.
    struct Probe<'a> {
        what: &'static str,
        host: &'static str,
        port: &'static str,
        ttl: &'a str,
        errno: &'static str,
        ty: u8,
        code: u8,
        offender: &'static str,
        whole: bool,
    }
    let cost = usize::from(t.gw_ttl_cost());
    let ttl_rtr = (cost + 1).to_string();
    let cases = [
        Probe {
            what: "port unreachable",
            host: OUT,
            port: "9",
            ttl: "0",
            errno: "ECONNREFUSED",
            ty: 3,
            code: 3,
            offender: OUT,
            whole: true,
        },
        Probe {
            what: "TTL to expire at rtr",
            host: FAR,
            port: "33434",
            ttl: &ttl_rtr,
            errno: "EHOSTUNREACH",
            ty: 11,
            code: 0,
            offender: RTR,
            whole: true,
        },
        Probe {
            what: "TTL 1 (expires at the gateway)",
            host: FAR,
            port: "33434",
            ttl: "1",
            errno: "EHOSTUNREACH",
            ty: 11,
            code: 0,
            offender: GW_LAN,
            whole: false,
        },
    ];
    for Probe {
        what,
        host,
        port,
        ttl,
        errno,
        ty,
        code,
        offender,
        whole,
    } in cases
    {
        let r = py_json(
            t,
            "cl1",
            &["probe", host, port, ttl],
            Duration::from_secs(15),
        );
        eprintln!("icmp_errors: {what}: {r}");
        assert_eq!(r["result"], "error", "{what}: no ICMP error came back: {r}");
        assert_eq!(r["errno"], errno, "{what}: {r}");
        assert_eq!(r["origin"], 2, "{what}: not an ICMP error: {r}");
        assert_eq!(r["type"], ty, "{what}: {r}");
        assert_eq!(r["code"], code, "{what}: {r}");
        assert_eq!(r["offender"], offender, "{what}: {r}");
        let dst = format!("{host}:{port}");
        assert_eq!(
            r["quoted_dst"],
            dst.as_str(),
            "{what}: quoted datagram not translated back: {r}"
        );
        assert_eq!(
            r["quoted_prefix_ok"], true,
            "{what}: quoted payload altered: {r}"
        );
        if whole {
            assert_eq!(
                r["quoted_whole"], true,
                "{what}: quoted datagram cut short: {r}"
            );
        }
    }

    // traceroute: the gateway (at `cost` hops, the last ones may stay
    // silent), then rtr, then far.
    let out = t.run(
        "cl2",
        &format!("traceroute -n -q 1 -w 1 -m {} {FAR}", cost + 4),
    );
    let hops: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let mut want: Vec<&str> = (0..cost)
        .map(|i| match hops.get(i) {
            Some(&"*") if i > 0 => "*",
            _ => GW_LAN,
        })
        .collect();
    want.extend([RTR, FAR]);
    assert_eq!(hops, want, "traceroute through the NAT:\n{out}");
    timed("icmp_errors", t0);
}

/// §1 TCP at scale: 1000 connections from one inside host to an outside
/// server are all open at once, then each sends 8 KiB, gets it echoed,
/// and closes cleanly (FIN both ways, no reset); the server saw them all
/// from the gateway's outside address, on 1000 distinct ports.
pub fn tcp_1000_connections(t: &Topology) {
    let t0 = Instant::now();
    const N: usize = 1000;
    let server = t.spawn_py("out", &["tcp-server", "9000"]).ready();
    let r = py_json(
        t,
        "cl1",
        &["tcp-clients", OUT, "9000", &N.to_string(), "8192"],
        Duration::from_secs(90),
    );
    eprintln!("tcp_1000_connections: {r}");
    assert_eq!(r["connected"], N, "connections failed: {r}");
    assert_eq!(r["ok"], N, "transfers failed: {r}");
    // The server logs a line per connection once it has closed its side.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let lines = server.lines();
        let done: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with("done "))
            .cloned()
            .collect();
        let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error ")).collect();
        assert!(errors.is_empty(), "server-side errors: {errors:?}");
        if done.len() >= N || Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        done.len(),
        N,
        "server finished only {} connections",
        done.len()
    );
    let mut ports = std::collections::HashSet::new();
    for l in &done {
        // "done IP:PORT BYTES"
        let mut f = l.split_whitespace().skip(1);
        let (peer, bytes) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        let (ip, port) = peer.split_once(':').unwrap_or(("", ""));
        assert_eq!(ip, GW_WAN, "server saw an untranslated source: {l}");
        assert_eq!(bytes, "8192", "server got a short stream: {l}");
        ports.insert(port.to_string());
    }
    assert_eq!(ports.len(), N, "connections shared an outside port");
    timed("tcp_1000_connections", t0);
}

/// RFC 4787 REQ-1 / RFC 5382 REQ-1 with the default masquerade, as
/// Linux's "same source" lookup gives it: cl1 holds outside port P (its
/// own) towards out; cl2, from the same port to the same server, gets
/// another port Q, and keeps Q towards another port of out and towards
/// out2, where P would have been free. UDP, then TCP (connections held
/// open, so no closed state is involved).
pub fn same_source_mapping(t: &Topology) {
    let t0 = Instant::now();
    let _echo = [
        t.spawn_py("out", &["udp-echo", "7000"]).ready(),
        t.spawn_py("out", &["udp-echo", "7001"]).ready(),
        t.spawn_py("out2", &["udp-echo", "7000"]).ready(),
        t.spawn_py("out", &["tcp-peer", "8100"]).ready(),
        t.spawn_py("out", &["tcp-peer", "8101"]).ready(),
        t.spawn_py("out2", &["tcp-peer", "8100"]).ready(),
    ];
    for host in ["cl1", "cl2"] {
        t.run(
            host,
            &format!("ping -n -q -c 1 -W 2 {OUT} && ping -n -q -c 1 -W 2 {OUT2}"),
        );
    }
    for (proto, port, lport) in [("udp", 7000, "40000"), ("tcp", 8100, "41000")] {
        let first = format!("{OUT}:{port}");
        // cl1 keeps its flow open (TCP) while cl2 runs.
        let cl1 = t.spawn_py("cl1", &["mapping", proto, lport, "8", &first]);
        let line = cl1
            .wait_for_line("{", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{proto}: cl1 got no answer: {:?}", cl1.lines()));
        let r: Value = serde_json::from_str(&line).expect("mapping json");
        let p = format!("{GW_WAN}:{lport}");
        assert_eq!(
            r["seen"][&first],
            p.as_str(),
            "{proto}: cl1 should keep its port: {r}"
        );
        let dsts = [
            first.clone(),
            format!("{OUT}:{}", port + 1),
            format!("{OUT2}:{port}"),
        ];
        let mut args = vec!["mapping", proto, lport, "0"];
        args.extend(dsts.iter().map(String::as_str));
        let r = py_json(t, "cl2", &args, Duration::from_secs(20));
        eprintln!("same_source_mapping {proto}: cl2 {r}");
        let q = r["seen"][&dsts[0]].as_str().unwrap_or("none").to_string();
        assert!(
            q.starts_with(&format!("{GW_WAN}:")),
            "{proto}: cl2 not translated: {r}"
        );
        assert_ne!(
            q, p,
            "{proto}: cl2 shares cl1's mapping towards {first}: {r}"
        );
        for d in &dsts[1..] {
            assert_eq!(
                r["seen"][d].as_str(),
                Some(q.as_str()),
                "{proto}: cl2:{lport} got another mapping towards {d} (address-dependent mapping): {r}"
            );
        }
        drop(cl1);
    }
    timed("same_source_mapping", t0);
}

/// RFC 5508 4.1 for protocols without ports: cl1 sends a datagram of IP
/// protocol 253 and a GRE packet to out, whose kernel answers with
/// destination unreachable (protocol, or port for GRE when ip_gre is
/// loaded); the error reaches cl1 quoting cl1's own address and the bytes
/// it sent. Then out sends the same protocols to the gateway's address
/// (the replies of cl1's flows): they reach cl1, whose kernel answers
/// with an error that reaches out from the gateway's address, quoting
/// what out sent.
pub fn icmp_errors_other_protocols(t: &Topology) {
    let t0 = Instant::now();
    let cl1 = t.addr("cl1");
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {OUT}"));
    for proto in ["253", "47"] {
        for (host, to, me, sees_from) in [("cl1", OUT, cl1, OUT), ("out", GW_WAN, OUT, GW_WAN)] {
            let r = py_json(
                t,
                host,
                &["proto-error", to, proto],
                Duration::from_secs(20),
            );
            eprintln!("icmp_errors_other_protocols {proto} {host}: {r}");
            assert_eq!(
                r["result"], "error",
                "[{host}] proto {proto}: no ICMP error came back: {r}"
            );
            assert_eq!(r["type"], 3, "[{host}] {r}");
            let codes: &[u64] = if proto == "47" { &[2, 3] } else { &[2] };
            assert!(
                codes.contains(&r["code"].as_u64().unwrap_or(99)),
                "[{host}] proto {proto}: {r}"
            );
            assert_eq!(r["from"], sees_from, "[{host}] error's source: {r}");
            assert_eq!(
                (r["inner_src"].as_str(), r["inner_dst"].as_str()),
                (Some(me), Some(to)),
                "[{host}] quoted datagram not translated back: {r}"
            );
            assert_eq!(r["inner_proto"], proto.parse::<u64>().unwrap(), "{r}");
            assert_eq!(
                r["quoted_prefix_ok"], true,
                "[{host}] quoted bytes altered: {r}"
            );
            assert_eq!(r["checksums_ok"], true, "[{host}] bad checksum: {r}");
        }
    }
    timed("icmp_errors_other_protocols", t0);
}

/// IPv4 fragments sent last first, both ways (as some stacks and ECMP
/// paths deliver them): cl1 sends a 2500-byte UDP datagram to out's echo
/// server in three fragments, last first; the echo (fragmented by out's
/// kernel) comes back whole. Then out sends a datagram to cl1's mapping,
/// last fragment first; cl1's socket gets it whole. Repeated with a new
/// flow each round.
pub fn fragments_out_of_order(t: &Topology) {
    let t0 = Instant::now();
    let _echo = t.spawn_py("out", &["udp-echo", "7000"]).ready();
    t.run("cl1", &format!("ping -n -q -c 1 -W 2 {OUT}"));
    let cl1 = t.addr("cl1");
    for round in 0..3 {
        let size = (2500 + round * 8).to_string();
        let rx = t.spawn_py("cl1", &["frag-echo", cl1, OUT, "7000", &size, "15"]);
        let line = rx
            .wait_for_line("\"phase\": \"out\"", Duration::from_secs(15))
            .unwrap_or_else(|| panic!("round {round}: cl1 printed nothing: {:?}", rx.lines()));
        let r: Value = serde_json::from_str(&line).expect("frag-echo json");
        eprintln!("fragments_out_of_order round {round}: {r}");
        assert_eq!(
            r["ok"], true,
            "round {round}: datagram sent last fragment first was lost: {r}"
        );
        let mapped = r["mapped"].as_str().unwrap_or("").to_string();
        let (addr, port) = mapped.split_once(':').unwrap_or(("", ""));
        assert_eq!(addr, GW_WAN, "round {round}: not translated: {r}");
        let sent = py_json(
            t,
            "out",
            &["frag-send", OUT, "7000", GW_WAN, port, &size],
            Duration::from_secs(15),
        );
        assert_eq!(sent["sent"], 3, "{sent}");
        let out = rx.finish(Duration::from_secs(20));
        let r: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("round {round}: {out:?}: {e}"));
        assert_eq!(
            r["in_ok"], true,
            "round {round}: inbound datagram sent last fragment first was lost: {r}"
        );
    }
    timed("fragments_out_of_order", t0);
}

/// The helper programs, one python3 script with subcommands (run through
/// [`Topology::spawn_py`]): `http-server PORT`, `udp-echo PORT`,
/// `udp-flows HOST PORT N`, `ping-id HOST IDENT COUNT`,
/// `udp-refused HOST PORT`, `probe HOST PORT TTL`, `tcp-server PORT`,
/// `tcp-clients HOST PORT N SIZE`, `tcp-peer PORT`,
/// `mapping udp|tcp LPORT HOLD_S HOST:PORT...`, `proto-error HOST PROTO`,
/// `frag-echo SRC HOST PORT SIZE WAIT_S`, `frag-send SRC SPORT DST DPORT SIZE`.
/// Servers print READY once listening;
/// clients print one JSON line.
/// What [`tcp_out_of_window_probe`] saw: the client's and the server's
/// reports.
pub struct WindowProbe {
    pub client: Value,
    pub server: Value,
}

impl WindowProbe {
    /// The injected data or RST reached the inside host.
    pub fn reached_inside(&self) -> bool {
        self.client["saw_injected"] == true || self.client["saw_rst"] == true
    }

    /// The conversation went on after the injection, both ways.
    pub fn carried_on(&self) -> bool {
        self.client["received"] == "hello\nafter\n" && self.server["answer"] == "ack\ndone\n"
    }
}

/// A blind injection from the outside: out's server, knowing its TCP
/// connection's sequence numbers (it reads its own first segment), sends
/// to cl1's mapping a data segment and a RST half the sequence space
/// away, then carries on the conversation.
pub fn tcp_out_of_window_probe(t: &Topology) -> WindowProbe {
    let server = t.spawn_py("out", &["window-server", OUT, "7100"]).ready();
    let client = py_json(
        t,
        "cl1",
        &["window-client", OUT, "7100"],
        Duration::from_secs(25),
    );
    let server: Value = serde_json::from_str(
        server
            .finish(Duration::from_secs(15))
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or(Value::Null);
    eprintln!("tcp_out_of_window: client {client}\n  server {server}");
    assert_eq!(
        server["learnt"], true,
        "server did not see its own segment: {server}"
    );
    WindowProbe { client, server }
}

/// [`tcp_out_of_window_probe`] through a gateway that tracks windows:
/// neither segment reaches the inside host, no reset ends the
/// connection, and the conversation carries on.
pub fn tcp_out_of_window(t: &Topology) {
    let t0 = Instant::now();
    let p = tcp_out_of_window_probe(t);
    assert!(
        !p.reached_inside(),
        "an out-of-window segment reached the inside host: {}",
        p.client
    );
    assert!(
        p.carried_on(),
        "the connection did not carry on (client {}, server {})",
        p.client,
        p.server
    );
    timed("tcp_out_of_window", t0);
}

pub const PY_TOOLS: &str = r####"
# natgw e2e helpers: one script, one subcommand per job. Servers print
# "READY" once they listen; clients print one JSON line with results.
import asyncio, errno, json, os, resource, select, socket, struct, sys, time

IP_RECVERR = 11


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def ready():
    print("READY", flush=True)


def out(obj):
    print(json.dumps(obj), flush=True)


def http_server(port):
    """HTTP server whose answer (and log line) is the peer it sees."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            peer = "%s:%d" % self.client_address[:2]
            body = ("peer %s\n" % peer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            print("GET " + peer, flush=True)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("0.0.0.0", port), H)
    ready()
    srv.serve_forever()


def udp_echo(port):
    """Echoes each datagram followed by ' IP:PORT' of its sender."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    ready()
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(data + (" %s:%d" % peer).encode(), peer)


def udp_flows(host, port, n):
    """n sockets, each its own source port, one request each; missing
    answers are asked again (at most 3 rounds)."""
    raise_nofile()
    port = int(port)
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.setblocking(False)
        socks.append(s)
    local_ports = {s.getsockname()[1] for s in socks}
    ep = select.epoll()
    fd2i = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        fd2i[s.fileno()] = i
    seen = {}
    bad = []
    sends = 0
    rounds = 0
    per_round = []
    for rnd in range(3):
        missing = [i for i in range(n) if i not in seen]
        if not missing:
            break
        rounds += 1
        for k, i in enumerate(missing):
            socks[i].sendto(b"flow %d" % i, (host, port))
            sends += 1
            if k % 64 == 63:
                time.sleep(0.001)
        deadline = time.time() + 2.0
        while len(seen) < n and time.time() < deadline:
            for fd, _ in ep.poll(0.05):
                i = fd2i[fd]
                while True:
                    try:
                        data, peer = socks[i].recvfrom(4096)
                    except BlockingIOError:
                        break
                    parts = data.decode().split()
                    if (parts[:2] != ["flow", str(i)] or len(parts) != 3
                            or peer != (host, port)):
                        bad.append(data.decode())
                        continue
                    seen[i] = parts[2]
        per_round.append(len(seen))
    mapped = set(seen.values())
    out({
        "flows": n,
        "local_ports": len(local_ports),
        "answered": len(seen),
        "sends": sends,
        "rounds": rounds,
        "answered_by_round": per_round,
        "seen_addrs": sorted({m.split(":")[0] for m in mapped}),
        "seen_ports": len({m.split(":")[1] for m in mapped}),
        "bad": bad[:5],
    })


def icmp_checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping_id(host, ident, count):
    """Echo requests with a fixed identifier (so two inside hosts can
    collide on purpose); counts the replies that match."""
    ident, count = int(ident), int(count)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setblocking(False)
    got = set()
    bad = 0
    for rnd in range(3):
        for seq in range(count):
            if seq in got:
                continue
            payload = b"natgw-e2e-%d" % seq
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            csum = icmp_checksum(hdr + payload)
            s.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload, (host, 0))
        deadline = time.time() + 1.5
        while len(got) < count and time.time() < deadline:
            r, _, _ = select.select([s], [], [], 0.05)
            if not r:
                continue
            pkt, addr = s.recvfrom(2048)
            ihl = (pkt[0] & 15) * 4
            icmp = pkt[ihl:]
            if len(icmp) < 8 or icmp[0] != 0 or addr[0] != host:
                continue
            _, _, _, rid, seq = struct.unpack("!BBHHH", icmp[:8])
            if rid != ident:
                continue
            if icmp[8:] != b"natgw-e2e-%d" % seq or icmp_checksum(icmp) != 0:
                bad += 1
                continue
            got.add(seq)
        if len(got) == count:
            break
    out({"sent": count, "received": len(got), "bad": bad})


def udp_refused(host, port):
    """A plain connected UDP socket: send, recv -> ECONNREFUSED?"""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, int(port)))
    s.settimeout(1.0)
    for attempt in range(1, 6):
        try:
            s.send(b"anyone?")
            s.recv(100)
            return out({"result": "reply"})
        except ConnectionRefusedError:
            return out({"result": "ECONNREFUSED", "attempts": attempt})
        except socket.timeout:
            continue
        except OSError as e:
            return out({"result": errno.errorcode.get(e.errno, str(e.errno))})
    out({"result": "timeout"})


def probe(host, port, ttl):
    """UDP probe with IP_TTL and IP_RECVERR; reports the ICMP error the
    socket gets: errno, type, code, offender, and what it quotes."""
    ttl = int(ttl)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
    if ttl > 0:
        s.setsockopt(socket.SOL_IP, socket.IP_TTL, ttl)
    s.connect((host, int(port)))
    s.setblocking(False)
    payload = b"natgw-probe-%d" % os.getpid()
    poller = select.poll()
    poller.register(s.fileno(), select.POLLIN | select.POLLERR)
    for attempt in range(1, 6):
        s.send(payload)
        deadline = time.time() + 1.0
        while time.time() < deadline:
            poller.poll(50)
            try:
                data, anc, flags, addr = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE)
            except BlockingIOError:
                try:
                    s.recv(2048)
                    return out({"result": "reply"})
                except (BlockingIOError, ConnectionRefusedError, OSError):
                    pass
                continue
            for level, typ, cd in anc:
                if level == socket.SOL_IP and typ == IP_RECVERR:
                    ee_errno, origin, itype, icode, _pad, _info, _data = struct.unpack("=IBBBBII", cd[:16])
                    offender = socket.inet_ntoa(cd[20:24]) if len(cd) >= 24 else None
                    return out({
                        "result": "error",
                        "errno": errno.errorcode.get(ee_errno, str(ee_errno)),
                        "origin": origin,
                        "type": itype,
                        "code": icode,
                        "offender": offender,
                        "quoted_dst": "%s:%d" % addr[:2] if addr else None,
                        "quoted_len": len(data),
                        "quoted_prefix_ok": data == payload[:len(data)],
                        "quoted_whole": data == payload,
                        "attempts": attempt,
                    })
    out({"result": "timeout"})


async def tcp_server_main(port):
    raise_nofile()

    async def handle(r, w):
        peer = w.get_extra_info("peername")
        total = 0
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                total += len(d)
                w.write(d)
                await w.drain()
            w.close()
            await w.wait_closed()
            print("done %s:%d %d" % (peer[0], peer[1], total), flush=True)
        except Exception as e:
            print("error %s:%d %r" % (peer[0], peer[1], e), flush=True)

    srv = await asyncio.start_server(handle, "0.0.0.0", port, backlog=4096)
    ready()
    await srv.serve_forever()


async def tcp_clients_main(host, port, n, size):
    """Opens n connections at once, and only when all are up sends size
    bytes on each, half-closes, and checks the echo and the server's EOF."""
    raise_nofile()
    t0 = time.time()

    async def connect(i):
        return await asyncio.wait_for(asyncio.open_connection(host, port), 30)

    conns = await asyncio.gather(*[connect(i) for i in range(n)], return_exceptions=True)
    errors = [repr(c) for c in conns if isinstance(c, BaseException)]
    up = [c for c in conns if not isinstance(c, BaseException)]
    t1 = time.time()

    async def xfer(i, r, w):
        payload = ((b"%08d" % i) * (size // 8 + 1))[:size]
        w.write(payload)
        await w.drain()
        w.write_eof()
        got = await asyncio.wait_for(r.read(), 30)
        w.close()
        await w.wait_closed()
        if got != payload:
            raise ValueError("conn %d: got %d bytes, %s" % (i, len(got), "differ" if len(got) == size else "short"))
        return True

    res = await asyncio.gather(*[xfer(i, r, w) for i, (r, w) in enumerate(up)], return_exceptions=True)
    ok = sum(1 for x in res if x is True)
    errors += [repr(x) for x in res if x is not True]
    out({"conns": n, "connected": len(up), "ok": ok, "errors": errors[:5],
         "connect_s": round(t1 - t0, 3), "total_s": round(time.time() - t0, 3)})


async def tcp_peer_main(port):
    """Tells each TCP client the address it sees, then holds the
    connection until the client closes it."""
    async def handle(r, w):
        w.write(("%s:%d\n" % w.get_extra_info("peername")[:2]).encode())
        await w.drain()
        await r.read()
        w.close()

    srv = await asyncio.start_server(handle, "0.0.0.0", port)
    ready()
    await srv.serve_forever()


def mapping(proto, lport, hold, dsts):
    """From local port lport, one flow to each HOST:PORT in turn (UDP to a
    udp-echo, TCP to a tcp-peer); prints what each server saw as the
    source, then keeps the flows open for hold seconds."""
    lport, hold = int(lport), float(hold)
    seen, socks = {}, []
    for d in dsts:
        host, port = d.rsplit(":", 1)
        addr = (host, int(port))
        if proto == "udp":
            if not socks:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", lport))
                s.settimeout(1.0)
                socks.append(s)
            s = socks[0]
            for _ in range(3):
                s.sendto(b"map", addr)
                try:
                    data, peer = s.recvfrom(512)
                except socket.timeout:
                    continue
                if peer == addr:
                    seen[d] = data.decode().split()[-1]
                    break
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", lport))
            s.settimeout(5.0)
            try:
                s.connect(addr)
                seen[d] = s.makefile("r").readline().strip()
            except OSError as e:
                seen[d] = "error " + repr(e)
            socks.append(s)
    out({"seen": seen})
    time.sleep(hold)


def proto_error(host, proto):
    """Sends a datagram of IP protocol proto (47: a GRE header first) to
    host from a raw socket, closes that socket, and reports the ICMP
    destination unreachable that comes back about it."""
    proto = int(proto)
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.setblocking(False)
    body = b"natgw-proto-%d-%d" % (proto, os.getpid())
    if proto == 47:
        body = struct.pack("!HH", 0, 0x88B5) + body
    for attempt in range(1, 6):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        s.sendto(body, (host, 0))
        s.close()
        deadline = time.time() + 1.0
        while time.time() < deadline:
            r, _, _ = select.select([icmp], [], [], 0.05)
            if not r:
                continue
            pkt, addr = icmp.recvfrom(2048)
            ihl = (pkt[0] & 15) * 4
            m = pkt[ihl:]
            if len(m) < 28 or m[0] != 3:
                continue
            inner = m[8:]
            iihl = (inner[0] & 15) * 4
            if inner[9] != proto:
                continue
            quoted = inner[iihl:]
            return out({
                "result": "error", "type": m[0], "code": m[1], "from": addr[0],
                "inner_src": socket.inet_ntoa(inner[12:16]),
                "inner_dst": socket.inet_ntoa(inner[16:20]),
                "inner_proto": inner[9],
                "quoted_prefix_ok": len(quoted) >= 8 and body.startswith(quoted[:len(body)]),
                "checksums_ok": icmp_checksum(m) == 0 and icmp_checksum(inner[:iihl]) == 0,
                "attempts": attempt,
            })
    out({"result": "timeout"})


def udp_fragments(src, sport, dst, dport, payload, ident, size=1000):
    """A UDP datagram as IPv4 fragments of size bytes of payload each, in
    order (header and UDP checksums filled in)."""
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    c = icmp_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    frags = []
    for off in range(0, len(udp), size):
        chunk = udp[off:off + size]
        fo = (off // 8) | (0x2000 if off + size < len(udp) else 0)
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), ident, fo, 64, 17, 0,
                        socket.inet_aton(src), socket.inet_aton(dst))
        h = h[:10] + struct.pack("!H", icmp_checksum(h)) + h[12:]
        frags.append(h + chunk)
    return frags


def send_reversed(frags, dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for f in reversed(frags):
        s.sendto(f, (dst, 0))
    s.close()


def pattern(size):
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def frag_echo(src, host, port, size, wait):
    """A datagram to a udp-echo at host:port, sent last fragment first from
    a UDP socket's port; prints whether the echo came back whole and the
    mapping the server saw, then waits up to wait seconds for a datagram of
    size bytes from host:port (see frag_send) and prints whether it came."""
    port, size, wait = int(port), int(size), float(wait)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(1.0)
    sport = s.getsockname()[1]
    data = pattern(size)
    ok, mapped, attempts = False, None, 0
    for attempt in range(1, 4):
        attempts = attempt
        send_reversed(udp_fragments(src, sport, host, port, data, 0x4000 + attempt), host)
        try:
            while True:
                got, peer = s.recvfrom(65535)
                if peer == (host, port) and got.startswith(data):
                    ok, mapped = True, got[len(data):].decode().strip()
                    break
        except socket.timeout:
            pass
        if ok:
            break
    print(json.dumps({"phase": "out", "ok": ok, "mapped": mapped, "attempts": attempts}), flush=True)
    deadline = time.time() + wait
    in_ok, sizes = False, []
    while time.time() < deadline and not in_ok:
        try:
            got, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        sizes.append(len(got))
        in_ok = peer == (host, port) and got == data
    out({"phase": "in", "in_ok": in_ok, "sizes": sizes[:5]})


def frag_send(src, sport, dst, dport, size):
    """A UDP datagram of size bytes (the frag-echo pattern), last fragment
    first, three times (new IP ids) half a second apart."""
    for i in range(3):
        send_reversed(udp_fragments(src, int(sport), dst, int(dport), pattern(int(size)), 0x6000 + i), dst)
        time.sleep(0.5)
    out({"sent": 3})


def tcp_csum(src, dst, seg):
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp_segment(src, dst, sport, dport, seq, ack, flags, payload):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xffffffff, ack & 0xffffffff,
                      5 << 4, flags, 502, 0, 0)
    c = tcp_csum(src, dst, hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def window_server(me, port):
    """Accepts one TCP connection, learns its sequence numbers from its
    own first segment (packet socket), then injects, as the peer would,
    a data segment and a RST half the sequence space away, and then
    carries on the conversation: prints what it saw."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(1)
    # ETH_P_ALL: a packet socket of one protocol sees only what comes in.
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    ready()
    c, peer = ls.accept()
    c.settimeout(5)
    c.sendall(b"hello\n")
    seq = ack = None
    deadline = time.time() + 5
    while seq is None and time.time() < deadline:
        sniff.settimeout(1)
        try:
            pkt, addr = sniff.recvfrom(65536)
        except socket.timeout:
            continue
        if addr[1] != 0x0800 or len(pkt) < 40:
            continue
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != 6 or socket.inet_ntoa(pkt[16:20]) != peer[0]:
            continue
        sp, dp, sq, ak = struct.unpack("!HHII", pkt[ihl:ihl + 12])
        doff = (pkt[ihl + 12] >> 4) * 4
        if sp == int(port) and dp == peer[1] and pkt[ihl + doff:] == b"hello\n":
            seq, ack = (sq + 6) & 0xffffffff, ak
    res = {"peer": "%s:%d" % peer, "learnt": seq is not None}
    if seq is None:
        out(res)
        return
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    far = seq + (1 << 31)
    raw.sendto(tcp_segment(me, peer[0], int(port), peer[1], far, ack, 0x18, b"INJECTED\n"), (peer[0], 0))
    # The RST carries data too (RFC 9293 allows it), to be told from a real one.
    raw.sendto(tcp_segment(me, peer[0], int(port), peer[1], far + 12345, 0, 0x04, b"INJECTED-RST\n"), (peer[0], 0))
    time.sleep(1)
    try:
        c.sendall(b"after\n")
        got = b""
        while not got.endswith(b"done\n"):
            d = c.recv(4096)
            if not d:
                break
            got += d
        res["answer"] = got.decode(errors="replace")
    except OSError as e:
        res["error"] = repr(e)
    out(res)


def window_client(host, port):
    """Connects, answers "hello" with "ack" and "after" with "done";
    prints everything it received, and whether any segment from the
    server's port that reached this host carried the injected data or
    the RST flag (packet socket)."""
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(6)
    got, res = b"", {}
    try:
        while b"after\n" not in got:
            d = s.recv(4096)
            if not d:
                res["eof"] = True
                break
            got += d
            if got.startswith(b"hello\n") and "acked" not in res:
                res["acked"] = True
                s.sendall(b"ack\n")
        if b"after\n" in got:
            s.sendall(b"done\n")
            time.sleep(0.5)
    except OSError as e:
        res["error"] = repr(e)
    res["received"] = got.decode(errors="replace")
    res["saw_injected"] = res["saw_rst"] = False
    sniff.setblocking(False)
    while True:
        try:
            pkt, addr = sniff.recvfrom(65536)
        except BlockingIOError:
            break
        if addr[1] != 0x0800 or addr[2] == socket.PACKET_OUTGOING or len(pkt) < 40 or pkt[9] != 6:
            continue
        ihl = (pkt[0] & 15) * 4
        if struct.unpack("!H", pkt[ihl:ihl + 2])[0] != int(port):
            continue
        if b"INJECTED\n" in pkt[ihl + 20:]:
            res["saw_injected"] = True
        if pkt[ihl + 13] & 4 and b"INJECTED-RST" in pkt[ihl + 20:]:
            res["saw_rst"] = True
    out(res)

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "http-server":
        http_server(int(args[0]))
    elif cmd == "udp-echo":
        udp_echo(int(args[0]))
    elif cmd == "udp-flows":
        udp_flows(args[0], args[1], int(args[2]))
    elif cmd == "ping-id":
        ping_id(*args)
    elif cmd == "udp-refused":
        udp_refused(*args)
    elif cmd == "probe":
        probe(*args)
    elif cmd == "tcp-server":
        asyncio.run(tcp_server_main(int(args[0])))
    elif cmd == "frag-echo":
        frag_echo(*args)
    elif cmd == "frag-send":
        frag_send(*args)
    elif cmd == "proto-error":
        proto_error(*args)
    elif cmd == "window-server":
        window_server(*args)
    elif cmd == "window-client":
        window_client(*args)
    elif cmd == "tcp-peer":
        asyncio.run(tcp_peer_main(int(args[0])))
    elif cmd == "mapping":
        mapping(args[0], args[1], args[2], args[3:])
    elif cmd == "tcp-clients":
        asyncio.run(tcp_clients_main(args[0], int(args[1]), int(args[2]), int(args[3])))
    else:
        sys.exit("unknown subcommand " + cmd)


main()
"####;
