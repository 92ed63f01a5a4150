//! SCENARIOS 3 (load balancing) on the pure core: a director with a VIP on
//! the public side and real servers on the LAN, driven with frames and a
//! virtual clock. The live version with real HTTP servers is in
//! tests/e2e_lb.rs.

mod common;

use common::*;
use natgw::conntrack::TcpState;
use natgw::engine::DropReason;
use natgw::lb::{Change, Health, RealSpec, ServiceKey};
use std::collections::HashMap;

const VIP: &str = "203.0.113.10";

fn service(sched: &str, extra: &str, reals: &[(&str, u32)]) -> String {
    let mut s = format!(
        "[[service]]\naddress = \"{VIP}\"\nport = 80\nproto = \"tcp\"\nscheduler = \"{sched}\"\n{extra}\n"
    );
    for (addr, w) in reals {
        s.push_str(&format!(
            "[[service.real]]\naddress = \"{addr}\"\nport = 8080\nweight = {w}\n"
        ));
    }
    s
}

fn key() -> ServiceKey {
    ServiceKey {
        vip: u32::from(ip(VIP)),
        port: 80,
        proto: PROTO_TCP,
    }
}

const R1: &str = "10.0.0.11";
const R2: &str = "10.0.0.12";
const R3: &str = "10.0.0.13";

/// Opens `n` connections from distinct client ports; returns how many
/// went to each real server address.
fn spread(gw: &Gw, client: &str, n: u16) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for i in 0..n {
        let syn = tcp(
            &format!("{client}:{}", 20000 + i),
            &format!("{VIP}:80"),
            SYN,
            b"",
        );
        let v = gw.on_wan(&syn).seen();
        assert_eq!(v.dport, 8080, "port mapping VIP:80 -> RIP:8080");
        assert_eq!(
            v.src.to_string(),
            client,
            "classic LVS-NAT keeps the client address"
        );
        *m.entry(v.dst.to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn rr_spreads_new_connections_evenly() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1), (R2, 1), (R3, 1)]));
    let m = spread(&gw, "198.51.100.7", 300);
    assert_eq!(
        m.values().copied().collect::<Vec<_>>(),
        vec![100; 3],
        "{m:?}"
    );
}

#[test]
fn wrr_follows_weights() {
    let gw = Gw::with("", &service("wrr", "", &[(R1, 3), (R2, 1)]));
    let m = spread(&gw, "198.51.100.7", 400);
    assert_eq!(m[R1], 300);
    assert_eq!(m[R2], 100);
}

#[test]
fn sh_keeps_a_client_on_one_server() {
    let gw = Gw::with("", &service("sh", "", &[(R1, 1), (R2, 1), (R3, 1)]));
    for c in 1..=20 {
        let m = spread(&gw, &format!("198.51.100.{c}"), 10);
        assert_eq!(m.len(), 1, "client {c} spread over {m:?}");
    }
}

#[test]
fn replies_come_back_from_the_vip_and_counts_follow_tcp_state() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1)]));
    let c = "198.51.100.7:40000";
    let out = gw.on_wan(&tcp(c, &format!("{VIP}:80"), SYN, b"")).seen();
    assert_eq!(out.dst_sa(), sa(&format!("{R1}:8080")));
    let st = || gw.engine.services(gw.now)[0].reals[0];
    assert_eq!((st().active, st().inactive, st().conns), (0, 1, 1));
    // SYN-ACK from the real server leaves as the VIP.
    let back = gw
        .on_lan(&tcp(&format!("{R1}:8080"), c, SYN | ACK, b""))
        .seen();
    assert_eq!(back.src_sa(), sa(&format!("{VIP}:80")));
    assert_eq!(back.dst_sa(), sa(c));
    gw.on_wan(&tcp(c, &format!("{VIP}:80"), ACK, b"")).seen();
    assert_eq!((st().active, st().inactive), (1, 0), "established = active");
    gw.on_wan(&tcp(c, &format!("{VIP}:80"), FIN | ACK, b""))
        .seen();
    assert_eq!((st().active, st().inactive), (0, 1), "closing = inactive");
    // The live flow's packets and bytes are the server's already (kept as
    // packets pass, not summed from the flow table), equal to the flow's.
    let flow = gw.engine.flows(gw.now)[0].clone();
    let s = st();
    assert_eq!((s.packets_in, s.packets_out), (3, 1));
    assert_eq!(
        (s.packets_in, s.packets_out),
        (flow.packets[0], flow.packets[1])
    );
    assert_eq!((s.bytes_in, s.bytes_out), (flow.bytes[0], flow.bytes[1]));
    // The flow ends: nothing is counted any more, but its traffic is kept.
    let n = gw.engine.flush(|_| true);
    assert_eq!(n, 1);
    let s = st();
    assert_eq!((s.active, s.inactive), (0, 0));
    assert_eq!((s.packets_in, s.packets_out), (3, 1));
}

/// A client that reuses the 4-tuple of a finished connection (the server
/// closed first, so the client port is free again at once) opens a new
/// connection, scheduled afresh like IPVS's conn_reuse_mode 1: rr moves on
/// to the next server, and the old server's counts are released.
#[test]
fn a_reused_client_port_is_scheduled_afresh() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1), (R2, 1)]));
    let c = "198.51.100.7:40000";
    let vip = format!("{VIP}:80");
    let first = gw.on_wan(&tcp(c, &vip, SYN, b"")).seen();
    let server = first.dst_sa().to_string();
    gw.on_lan(&tcp(&server, c, SYN | ACK, b"")).seen();
    gw.on_wan(&tcp(c, &vip, ACK, b"")).seen();
    // The server closes first; the client answers; TIME_WAIT.
    gw.on_lan(&tcp(&server, c, FIN | ACK, b"")).seen();
    gw.on_wan(&tcp(c, &vip, FIN | ACK, b"")).seen();
    gw.on_lan(&tcp(&server, c, ACK, b"")).seen();
    assert_eq!(gw.engine.flows(gw.now)[0].tcp_state, TcpState::TimeWait);
    let again = gw.on_wan(&tcp(c, &vip, SYN, b"")).seen();
    assert_ne!(
        again.dst_sa(),
        first.dst_sa(),
        "rr schedules the reopened connection to the next server"
    );
    let flows = gw.engine.flows(gw.now);
    assert_eq!(flows.len(), 1, "the old flow is replaced: {flows:?}");
    assert_eq!(flows[0].tcp_state, TcpState::SynSent);
    let reals = &gw.engine.services(gw.now)[0].reals;
    let conns: Vec<_> = reals.iter().map(|r| (r.active, r.inactive)).collect();
    assert_eq!(conns.iter().map(|c| c.0 + c.1).sum::<u32>(), 1, "{conns:?}");
    // The reply comes back from the new server through the VIP.
    let back = gw
        .on_lan(&tcp(&again.dst_sa().to_string(), c, SYN | ACK, b""))
        .seen();
    assert_eq!(back.src_sa(), sa(&vip));
}

#[test]
fn mid_stream_segments_do_not_start_connections() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1)]));
    let out = gw.on_wan(&tcp("198.51.100.7:40000", &format!("{VIP}:80"), ACK, b"x"));
    assert_eq!(out, Out::Drop(DropReason::LbNotSyn));
}

#[test]
fn weight_zero_drains_and_down_servers_get_nothing() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1), (R2, 1)]));
    let c = "198.51.100.7:40000";
    // A connection to R1 (first in rr order).
    let first = gw.on_wan(&tcp(c, &format!("{VIP}:80"), SYN, b"")).seen();
    assert_eq!(first.dst.to_string(), R1);
    // Drain R1.
    let lb = gw.engine.lb();
    let t = lb
        .apply(&Change::EditReal {
            service: key(),
            real: RealSpec {
                addr: u32::from(ip(R1)),
                port: 8080,
                weight: 0,
            },
        })
        .unwrap();
    gw.engine.swap_lb(t);
    let m = spread(&gw, "198.51.100.8", 10);
    assert_eq!(
        m.get(R1),
        None,
        "no new connection reaches a drained server"
    );
    // The established connection carries on.
    let again = gw
        .on_wan(&tcp(c, &format!("{VIP}:80"), ACK, b"more"))
        .seen();
    assert_eq!(again.dst.to_string(), R1);
    // Mark R2 down too: nobody can take new connections.
    gw.engine
        .lb()
        .set_health(key(), u32::from(ip(R2)), 8080, Health::Down)
        .unwrap();
    let out = gw.on_wan(&tcp("198.51.100.9:1234", &format!("{VIP}:80"), SYN, b""));
    assert_eq!(out, Out::Drop(DropReason::LbNoServer));
}

#[test]
fn removed_server_keeps_its_flows() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1), (R2, 1)]));
    let c = "198.51.100.7:40000";
    gw.on_wan(&tcp(c, &format!("{VIP}:80"), SYN, b"")).seen();
    let t = gw
        .engine
        .lb()
        .apply(&Change::DelReal {
            service: key(),
            addr: u32::from(ip(R1)),
            port: 8080,
        })
        .unwrap();
    gw.engine.swap_lb(t);
    let again = gw.on_wan(&tcp(c, &format!("{VIP}:80"), ACK, b"x")).seen();
    assert_eq!(again.dst.to_string(), R1);
    assert_eq!(
        spread(&gw, "198.51.100.8", 4).keys().collect::<Vec<_>>(),
        vec![R2]
    );
}

#[test]
fn fullnat_translates_the_client_to_the_director() {
    let gw = Gw::with("", &service("rr", "forward = \"fullnat\"", &[(R1, 1)]));
    let c = "198.51.100.7:40000";
    let out = gw.on_wan(&tcp(c, &format!("{VIP}:80"), SYN, b"")).seen();
    assert_eq!(out.dst_sa(), sa(&format!("{R1}:8080")));
    assert_eq!(
        out.src.to_string(),
        "10.0.0.1",
        "the real server sees the director"
    );
    let back = gw
        .on_lan(&tcp(
            &format!("{R1}:8080"),
            &out.src_sa().to_string(),
            SYN | ACK,
            b"",
        ))
        .seen();
    assert_eq!(
        (back.src_sa(), back.dst_sa()),
        (sa(&format!("{VIP}:80")), sa(c))
    );
}

#[test]
fn the_director_answers_for_its_vip() {
    let gw = Gw::with("", &service("rr", "", &[(R1, 1)]));
    assert!(gw.engine.is_local(u32::from(ip(VIP))));
    let out = gw.on_wan(&ping("198.51.100.7", VIP, 9, 1));
    assert!(
        matches!(out, Out::Reply { .. } | Out::Local),
        "{}",
        out.short()
    );
}

#[test]
fn bad_service_configs_are_refused_with_their_place() {
    let bad = [
        (
            service("rr", "", &[]).replace("port = 80\nproto", "port = 80\nproto = \"sctp\"\n#"),
            "proto",
        ),
        (service("fastest", "", &[(R1, 1)]), "unknown scheduler"),
        (service("rr", "forward = \"dr\"", &[(R1, 1)]), "forward"),
        (
            service("rr", "persistence_netmask = 24", &[(R1, 1)]),
            "needs `persistence`",
        ),
        (
            format!(
                "{}{}",
                service("rr", "", &[(R1, 1)]),
                service("rr", "", &[(R2, 1)])
            ),
            "defined twice",
        ),
        (
            service("rr", "[service.check]\ntype = \"tcp\"\nrise = 0", &[]),
            "rise",
        ),
        (
            service("rr", "", &[(R1, 1)])
                .replace(VIP, "203.0.113.1")
                .replace("port = 80\n", "port = 61000\n"),
            "reserved for health-check",
        ),
    ];
    for (text, want) in bad {
        let cfg = config("", &text);
        let Err(e) = natgw::control::config::Config::parse(&cfg, std::path::Path::new("lb.toml"))
        else {
            panic!("accepted:\n{text}")
        };
        let err = e.to_string();
        assert!(
            err.contains(want) && err.contains("lb.toml:"),
            "{err}\n--\n{text}"
        );
    }
}
