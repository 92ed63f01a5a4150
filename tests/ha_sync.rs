//! HA state sync between two natgw engines over real UDP sockets on the
//! loopback (no namespaces needed): what the standby holds after the active
//! node's traffic, a late start's bulk resync, loss and reordering on the
//! link, and hostile datagrams on the sync port. The keepalived failover
//! with real traffic is tests/e2e_ha.rs.

mod common;

use common::*;
use natgw::conntrack::{FlowRecord, TcpState};
use natgw::control::config::Config;
use natgw::dataplane::sys;
use natgw::engine::{Counters, DropReason, Engine, Verdict};
use natgw::ha::{Ha, HaConfig, HaStatus, Role};
use natgw::packet::{Link, Tuple};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn engine() -> Arc<Engine> {
    let text = ConfigText::seeded()
        .table("limits", "max_flows = 100000")
        .rule(masquerade_lan())
        .raw(
            "\n[[service]]\naddress = \"203.0.113.10\"\nport = 9200\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"10.0.0.5\"\nport = 9100\n",
        )
        .text();
    let cfg = Config::parse(&text, Path::new("ha.toml")).expect("config");
    Arc::new(cfg.build_engine().expect("engine"))
}

/// A free loopback UDP address (bound, then released for natgw).
fn free_addr() -> SocketAddrV4 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    match s.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    }
}

fn ha_cfg(local: SocketAddrV4, peer: SocketAddrV4, key: Option<&str>) -> HaConfig {
    HaConfig {
        local,
        peer,
        key: key.map(|k| k.as_bytes().to_vec()),
        refresh_secs: 1,
        max_datagram: 1472,
    }
}

struct Node {
    engine: Arc<Engine>,
    ha: Ha,
    counters: Counters,
}

impl Node {
    fn start(cfg: HaConfig, role: Role) -> Node {
        let engine = engine();
        let ha = Ha::start(cfg, engine.clone(), role).expect("ha starts");
        Node {
            engine,
            ha,
            counters: Counters::default(),
        }
    }

    /// Runs `frame` through the node's engine as received on `iface`.
    fn send(&self, iface: &str, frame: &[u8]) -> Verdict {
        let mut buf = vec![0u8; frame.len() + 128];
        buf[..frame.len()].copy_from_slice(frame);
        let iif = self.engine.interface_id(iface).unwrap();
        self.engine.process(
            &mut buf,
            frame.len(),
            Link::Ethernet,
            iif,
            sys::now(),
            &self.counters,
        )
    }

    /// Flows by original tuple: reply tuple and TCP state (what must match).
    fn flows(&self) -> HashMap<Tuple, (Tuple, TcpState)> {
        self.engine
            .flows(sys::now())
            .into_iter()
            .map(|r: FlowRecord| (r.orig, (r.reply, r.tcp_state)))
            .collect()
    }

    fn status(&self) -> HaStatus {
        self.ha.status()
    }
}

/// Opens `n` TCP connections from the LAN through `node` (SYN out, SYN-ACK
/// back to the translated address, ACK out: ESTABLISHED).
fn connect(node: &Node, first: u16, n: u16) {
    for i in 0..n {
        let src = format!("10.0.0.2:{}", first + i);
        let dst = "198.51.100.7:443";
        assert!(matches!(
            node.send("lan0", &tcp(&src, dst, SYN, b"")),
            Verdict::Forward { .. }
        ));
        let orig = Tuple {
            src: u32::from(ip("10.0.0.2")),
            dst: u32::from(ip("198.51.100.7")),
            sport: first + i,
            dport: 443,
            proto: PROTO_TCP,
        };
        let r = node.engine.table().get(&orig).expect("flow created");
        let back = format!(
            "198.51.100.7:443 -> {}:{}",
            std::net::Ipv4Addr::from(r.reply.dst),
            r.reply.dport
        );
        let (s, d) = back.split_once(" -> ").unwrap();
        assert!(matches!(
            node.send("wan0", &tcp(s, d, SYN | ACK, b"")),
            Verdict::Forward { .. }
        ));
        let _ = node.send("lan0", &tcp(&src, dst, ACK, b""));
    }
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

fn pair(key: Option<&str>) -> (Node, Node) {
    let (a, b) = (free_addr(), free_addr());
    let active = Node::start(ha_cfg(a, b, key), Role::Master);
    let standby = Node::start(ha_cfg(b, a, key), Role::Backup);
    (active, standby)
}

#[test]
fn the_standby_holds_every_flow_of_the_active_node_with_the_same_translation() {
    let (a, b) = pair(None);
    wait_for(5, "the standby's first bulk resync", || b.status().in_sync);
    connect(&a, 20000, 300);
    assert_eq!(a.flows().len(), 300);
    wait_for(5, "300 established flows on the standby", || {
        b.flows() == a.flows()
    });
    assert!(
        b.flows()
            .values()
            .all(|(_, st)| *st == TcpState::Established)
    );
    // The standby forwards nothing, even a packet of a flow it holds.
    let v = b.send(
        "lan0",
        &tcp("10.0.0.2:20000", "198.51.100.7:443", ACK, b"x"),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Standby));
    assert_eq!(b.counters.drops(DropReason::Standby), 1);
    // A connection that ends is gone on both (FIN both ways, then flush).
    let gone = a.engine.flush(|r| r.orig.sport < 20010);
    assert_eq!(gone, 10);
    wait_for(5, "the flushed flows gone from the standby", || {
        b.flows().len() == 290
    });
    // Ports stay reserved exactly as on the active node.
    let ports = |n: &Node| {
        n.engine
            .nat()
            .port_usage()
            .into_iter()
            .map(|u| (u.addr, u.proto, u.flows))
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(&b), ports(&a));

    // The standby becomes active: it forwards the flows it was given,
    // with the same translation.
    b.ha.set_role(Role::Master);
    a.ha.set_role(Role::Backup);
    let v = b.send(
        "lan0",
        &tcp("10.0.0.2:20100", "198.51.100.7:443", ACK, b"x"),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    let st = a.status();
    assert!(st.counters["changes_sent"] >= 300, "{st:?}");
    assert_eq!(st.counters.get("refused_bad_checksum"), None);
}

#[test]
fn a_node_that_starts_late_gets_everything_in_one_bulk_before_it_says_in_sync() {
    let (pa, pb) = (free_addr(), free_addr());
    let a = Node::start(ha_cfg(pa, pb, None), Role::Master);
    connect(&a, 30000, 2000);
    lb_connect(&a);
    let b = Node::start(ha_cfg(pb, pa, None), Role::Backup);
    assert!(!b.status().in_sync, "a fresh standby is not in sync");
    wait_for(10, "the bulk resync", || b.status().in_sync);
    // In sync means everything is there, not "some of it".
    assert_eq!(b.flows(), a.flows());
    let s = b.status();
    assert_eq!(s.counters["bulks_received"], 1, "{s:?}");
    assert_eq!(s.counters["bulk_flows_received"], 2020);
    assert_eq!(a.status().counters["bulks_sent"], 1);
}

/// A UDP relay between the two nodes: node A talks to `to_a`, node B to
/// `to_b`. Every `drop_every`-th datagram is dropped (0: none), every 7th
/// held back behind the next one (with loss on); what goes from A to B is
/// recorded, and a test can send to B from the relay's address (as "the
/// peer").
struct Relay {
    stop: Arc<AtomicBool>,
    to_a: SocketAddrV4,
    to_b: SocketAddrV4,
    b_side: UdpSocket,
    b: SocketAddrV4,
    recorded: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Relay {
    fn start(a: SocketAddrV4, b: SocketAddrV4, drop_every: u64) -> Relay {
        let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = |s: &UdpSocket| match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(x) => x,
            _ => unreachable!(),
        };
        let (to_a, to_b) = (addr(&sa), addr(&sb));
        sa.set_nonblocking(true).unwrap();
        sb.set_nonblocking(true).unwrap();
        let b_side = sb.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (st, rec) = (stop.clone(), recorded.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let (mut n, mut dropped) = (0u64, 0u64);
            let mut held: Vec<(bool, Vec<u8>)> = Vec::new();
            while !st.load(Ordering::Relaxed) {
                let mut idle = true;
                for (from, to, dst, a_to_b) in [(&sa, &sb, b, true), (&sb, &sa, a, false)] {
                    while let Ok((len, _)) = from.recv_from(&mut buf) {
                        idle = false;
                        n += 1;
                        if a_to_b {
                            rec.lock().push(buf[..len].to_vec());
                        }
                        if drop_every > 0 && n % drop_every == 0 {
                            dropped += 1;
                            continue;
                        }
                        if drop_every > 0 && n % 7 == 0 {
                            held.push((a_to_b, buf[..len].to_vec()));
                            continue;
                        }
                        let _ = to.send_to(&buf[..len], dst);
                        for (ab, d) in held.drain(..) {
                            let (s, t) = if ab { (&sb, b) } else { (&sa, a) };
                            let _ = s.send_to(&d, t);
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            (n, dropped)
        });
        Relay {
            stop,
            to_a,
            to_b,
            b_side,
            b,
            recorded,
            thread: Some(thread),
        }
    }

    /// Sends `d` to node B from the address B knows as its peer.
    fn to_b_as_peer(&self, d: &[u8]) {
        self.b_side.send_to(d, self.b).unwrap();
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn loss_and_reordering_on_the_sync_link_leave_the_standby_right() {
    let (pa, pb) = (free_addr(), free_addr());
    let link = Relay::start(pa, pb, 10);
    let a = Node::start(ha_cfg(pa, link.to_a, None), Role::Master);
    let b = Node::start(ha_cfg(pb, link.to_b, None), Role::Backup);
    wait_for(10, "the first bulk through the lossy link", || {
        b.status().in_sync
    });
    connect(&a, 40000, 3000);
    wait_for(20, "3000 flows on the standby despite 10% loss", || {
        b.flows() == a.flows()
    });
    let (n, dropped) = link.stop();
    assert!(dropped >= n / 11, "the link dropped {dropped} of {n}");
    let (sa, sb) = (a.status(), b.status());
    assert!(
        sa.counters.get("resent").copied().unwrap_or(0) > 0,
        "{sa:?}"
    );
    assert!(
        sb.counters.get("nacks_sent").copied().unwrap_or(0) > 0,
        "{sb:?}"
    );
    assert!(sb.in_sync, "{sb:?}");
}

#[test]
fn hostile_datagrams_on_the_sync_port_are_counted_and_never_applied() {
    use natgw::ha::wire::{self, Auth, Header, Kind};
    let key = "0123456789abcdef-shared";
    let signed = |h: Header, body: &[u8], k: &str| wire::encode(&h, body, &Auth::Hmac(k.into()));
    let (pa, pb) = (free_addr(), free_addr());
    let relay = Relay::start(pa, pb, 0);
    let b = Node::start(ha_cfg(pb, relay.to_b, Some(key)), Role::Backup);
    let data = Header {
        seq: 1,
        ..Header::new(Kind::Data, 99)
    };
    // From "the peer's" address: random bytes, a truncated datagram, the
    // wrong version, a CRC-only datagram to a keyed node, the wrong key,
    // and a correctly signed datagram whose body is not a snapshot payload.
    let mut rng = 0x1234_5678_u64;
    for _ in 0..200 {
        let len = (rng % 1500) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        relay.to_b_as_peer(&bytes);
        std::thread::sleep(Duration::from_micros(200));
    }
    let wrong_key = signed(data, b"", "wrong-key-0123456789");
    relay.to_b_as_peer(&wrong_key[..30]);
    let mut other_version = signed(data, b"", key);
    other_version[4] = wire::VERSION + 1;
    relay.to_b_as_peer(&other_version);
    relay.to_b_as_peer(&wire::encode(&data, b"", &Auth::Crc));
    relay.to_b_as_peer(&wrong_key);
    relay.to_b_as_peer(&signed(data, b"\xff\xff\xff\xff\xff", key));
    // From anywhere else, even correctly signed.
    let foreign = UdpSocket::bind("127.0.0.1:0").unwrap();
    foreign.send_to(&signed(data, b"", key), pb).unwrap();
    let refused = |c: &BTreeMap<String, u64>| -> u64 {
        c.iter()
            .filter(|(k, _)| k.starts_with("refused_"))
            .map(|(_, v)| v)
            .sum()
    };
    let end = Instant::now() + Duration::from_secs(5);
    while refused(&b.status().counters) < 206 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused(&b.status().counters) >= 206, "{:?}", b.status());
    let c = b.status().counters;
    for k in [
        "refused_foreign",
        "refused_bad_auth",
        "refused_bad_version",
        "refused_bad_body",
    ] {
        assert!(c.get(k).copied().unwrap_or(0) >= 1, "{k}: {c:?}");
    }
    assert!(b.flows().is_empty(), "nothing applied");
    assert_eq!(c.get("flows_applied"), None);

    // The real peer starts: sync works through all that.
    let a = Node::start(ha_cfg(pa, relay.to_a, Some(key)), Role::Master);
    connect(&a, 50000, 50);
    wait_for(10, "the standby in sync with the real peer", || {
        b.status().in_sync && b.flows() == a.flows()
    });
    // The peer restarts (a new stream); the old stream's datagrams,
    // replayed from the peer's address, are refused, nothing re-applied.
    let old: Vec<Vec<u8>> = relay.recorded.lock().clone();
    drop(a);
    let a2 = Node::start(ha_cfg(pa, relay.to_a, Some(key)), Role::Master);
    wait_for(10, "the standby sees the new stream", || {
        b.status().peer_epoch == Some(a2.status().epoch) && b.status().in_sync
    });
    let before = b.status().counters;
    for d in &old {
        relay.to_b_as_peer(d);
    }
    wait_for(5, "the replay counted", || {
        let c = b.status().counters;
        c.get("refused_stale_epoch").copied().unwrap_or(0)
            >= before.get("refused_stale_epoch").copied().unwrap_or(0) + old.len() as u64 / 2
    });
    assert_eq!(
        b.status().counters.get("flows_applied"),
        before.get("flows_applied"),
        "a replay applies nothing"
    );
    relay.stop();
}

/// 20 connections from 198.51.100.7 to the virtual service.
fn lb_connect(a: &Node) {
    for p in 0..20u16 {
        let client = format!("198.51.100.7:{}", 41000 + p);
        let v = a.send("wan0", &tcp(&client, "203.0.113.10:9200", SYN, b""));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let back = format!("198.51.100.7:{}", 41000 + p);
        let v = a.send("lan0", &tcp("10.0.0.5:9100", &back, SYN | ACK, b""));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let _ = a.send("wan0", &tcp(&client, "203.0.113.10:9200", ACK, b""));
    }
}

#[test]
fn load_balanced_connections_carry_on_on_the_standby() {
    let (a, b) = pair(None);
    wait_for(5, "the standby's first bulk resync", || b.status().in_sync);
    lb_connect(&a);
    wait_for(5, "the LB flows on the standby", || b.flows() == a.flows());
    b.ha.set_role(Role::Master);
    a.ha.set_role(Role::Backup);
    for p in 0..20u16 {
        let client = format!("198.51.100.7:{}", 41000 + p);
        let v = b.send("wan0", &tcp(&client, "203.0.113.10:9200", ACK | PSH, b"x"));
        assert!(matches!(v, Verdict::Forward { .. }), "conn {p}: {v:?}");
    }
    // And back: the old node has them too.
    a.ha.set_role(Role::Master);
    b.ha.set_role(Role::Backup);
    let v = a.send(
        "wan0",
        &tcp("198.51.100.7:41000", "203.0.113.10:9200", ACK | PSH, b"y"),
    );
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}
