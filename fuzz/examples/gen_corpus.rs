//! Writes the checked-in seed corpora, `fuzz/seeds/<target>/`, from real
//! frames (built with etherparse), real configs and real snapshots.
//! Run from fuzz/: `cargo run --release --example gen_corpus`. Deterministic:
//! running it again gives the same files.

use etherparse::PacketBuilder;
use natgw::conntrack::Time;
use natgw::engine::Counters;
use natgw::packet::Link;
use natgw::snapshot::{Snapshot, encode};
use natgw_fuzz::{harness, icmp_error_about};
use std::fs;
use std::path::Path;

const HOST: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GW: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GW_WAN: [u8; 6] = [2, 0, 0, 0, 1, 1];
const ROUTER: [u8; 6] = [2, 0, 0, 0, 1, 0xfe];

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST, GW)
        .ipv4(src, dst, ttl)
        .udp(sport, dport)
        .write(&mut f, b"natgw fuzz seed")
        .unwrap();
    f
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    let mut f = Vec::new();
    let mut b = PacketBuilder::ethernet2(HOST, GW)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    for c in flags.chars() {
        b = match c {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    b.write(&mut f, if flags.contains('P') { b"GET /" } else { b"" })
        .unwrap();
    f
}

fn ping(src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let mut f = Vec::new();
    let b = PacketBuilder::ethernet2(HOST, GW).ipv4(src, dst, 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    b.write(&mut f, &[0x61; 24]).unwrap();
    f
}

/// A UDP datagram in two fragments: (first, later).
fn fragments(src: [u8; 4], dst: [u8; 4]) -> (Vec<u8>, Vec<u8>) {
    let mut whole = udp(src, dst, 4000, 7000, 64);
    whole.extend_from_slice(&[0x42; 32]);
    let ip_len = whole.len() - 14;
    whole[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
    let udp_len = (ip_len - 20) as u16;
    whole[38..40].copy_from_slice(&udp_len.to_be_bytes());
    natgw_fuzz::fix_checksums(&mut whole, Link::Ethernet);
    // First: 24 bytes of payload, MF; later: the rest at offset 3 (x8).
    let mut first = whole[..14 + 20 + 24].to_vec();
    first[16..18].copy_from_slice(&44u16.to_be_bytes());
    first[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    let mut later = whole[..14 + 20].to_vec();
    later.extend_from_slice(&whole[14 + 20 + 24..]);
    let l = (later.len() - 14) as u16;
    later[16..18].copy_from_slice(&l.to_be_bytes());
    later[20..22].copy_from_slice(&3u16.to_be_bytes());
    natgw_fuzz::fix_checksums(&mut first, Link::Ethernet);
    natgw_fuzz::fix_checksums(&mut later, Link::Ethernet);
    (first, later)
}

fn vlan(f: &[u8], tags: &[u16]) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    for (i, t) in tags.iter().enumerate() {
        let tpid: u16 = if i == 0 && tags.len() == 2 {
            0x88a8
        } else {
            0x8100
        };
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&t.to_be_bytes());
    }
    v.extend_from_slice(&f[12..]);
    v
}

/// The same frame with 8 bytes of IPv4 options (NOP NOP NOP NOP + EOL).
fn with_options(f: &[u8]) -> Vec<u8> {
    let mut v = f[..34].to_vec();
    v.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0]);
    v.extend_from_slice(&f[34..]);
    v[14] = 0x47;
    let l = (v.len() - 14) as u16;
    v[16..18].copy_from_slice(&l.to_be_bytes());
    natgw_fuzz::fix_checksums(&mut v, Link::Ethernet);
    v
}

fn arp(op_request: bool, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4], dst: [u8; 6]) -> Vec<u8> {
    let a = natgw::packet::arp::Arp {
        op: if op_request { 1 } else { 2 },
        sha,
        spa: u32::from_be_bytes(spa),
        tha: if op_request { [0; 6] } else { GW_WAN },
        tpa: u32::from_be_bytes(tpa),
    };
    let mut b = vec![0u8; 60];
    let n = natgw::packet::arp::write(&mut b, dst, sha, &a).unwrap();
    b.truncate(n);
    b
}

const LAN_HOST: [u8; 4] = [10, 0, 0, 2];
const POOL_HOST: [u8; 4] = [10, 0, 0, 70];
const REMOTE: [u8; 4] = [198, 51, 100, 7];
const WAN: [u8; 4] = [203, 0, 113, 1];

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

fn frame_seeds(out: &Path) {
    let d = out.join("frame");
    let (first, later) = fragments(LAN_HOST, REMOTE);
    let mut err_udp = udp(LAN_HOST, REMOTE, 5000, 53, 64);
    err_udp = icmp_error_about(&err_udp, Link::Ethernet, 3, 3, None, 8).unwrap();
    let tcp_syn = tcp(LAN_HOST, REMOTE, 40000, 80, "S");
    let err_tcp = icmp_error_about(&tcp_syn, Link::Ethernet, 11, 0, Some(0xc6336401), 40).unwrap();
    let err_ping = icmp_error_about(
        &ping(LAN_HOST, REMOTE, 7, false),
        Link::Ethernet,
        3,
        1,
        None,
        32,
    )
    .unwrap();
    let mut zero_udp = udp(LAN_HOST, REMOTE, 5000, 53, 64);
    zero_udp[40..42].fill(0);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("udp", udp(LAN_HOST, REMOTE, 5000, 53, 64)),
        ("udp-zero-csum", zero_udp),
        ("tcp-syn", tcp_syn),
        ("tcp-psh", tcp(REMOTE, WAN, 80, 40000, "PA")),
        ("tcp-rst", tcp(REMOTE, WAN, 80, 40000, "RA")),
        ("ping", ping(LAN_HOST, REMOTE, 7, false)),
        ("pong-id0", ping(REMOTE, WAN, 0, true)),
        ("icmp-err-udp", err_udp),
        ("icmp-err-tcp", err_tcp),
        ("icmp-err-ping", err_ping),
        ("frag-first", first),
        ("frag-later", later),
        ("vlan", vlan(&udp(LAN_HOST, REMOTE, 5000, 53, 64), &[42])),
        ("qinq", vlan(&tcp(LAN_HOST, REMOTE, 1, 2, "S"), &[100, 42])),
        (
            "ip-options",
            with_options(&udp(LAN_HOST, REMOTE, 5000, 53, 64)),
        ),
        ("ttl1", udp(LAN_HOST, REMOTE, 5000, 33434, 1)),
    ];
    for (i, (name, f)) in frames.iter().enumerate() {
        // Mode i % 5 (rewrite, l3-only, icmp error, echo reply, time
        // exceeded), Ethernet; every fourth also as raw IP.
        let mode = if name.starts_with("icmp-err") {
            2
        } else if name.starts_with("ping") {
            3
        } else if *name == "ttl1" {
            4
        } else {
            (i % 2) as u8
        };
        let mut h = vec![mode << 1];
        h.extend_from_slice(&[203, 0, 113, 1, 198, 51, 100, 7, 0x9c, 0x40, 0, 53]);
        let mut data = h.clone();
        data.extend_from_slice(f);
        write(&d, &format!("{name}"), &data);
        if i % 4 == 0 {
            let mut raw = h;
            raw[0] |= 1;
            raw.extend_from_slice(&f[14..]);
            write(&d, &format!("{name}-raw-ip"), &raw);
        }
    }
}

/// Engine ops (see natgw_fuzz::harness::run).
struct Ops(Vec<u8>);

impl Ops {
    fn new(variant: u8) -> Ops {
        Ops(vec![variant])
    }
    fn frame(mut self, iif: u8, f: &[u8]) -> Self {
        self.0.push(iif << 3);
        self.0.extend_from_slice(&(f.len() as u16).to_be_bytes());
        self.0.extend_from_slice(f);
        self
    }
    fn ms(mut self, ms: u16) -> Self {
        self.0.push(4);
        self.0.extend_from_slice(&ms.to_be_bytes());
        self
    }
    fn secs(mut self, s: u16) -> Self {
        self.0.push(0x84);
        self.0.extend_from_slice(&s.to_be_bytes());
        self
    }
    fn expire(mut self) -> Self {
        self.0.extend_from_slice(&[5, 255]);
        self
    }
    fn reply(mut self, k: u8, flags: u8) -> Self {
        self.0.extend_from_slice(&[6, k, flags]);
        self
    }
    fn icmp_error(mut self, k: u8, from_router: bool) -> Self {
        let o = if from_router { 0x87 } else { 7 };
        self.0.extend_from_slice(&[o, k, 0, 3, 40]);
        self
    }
}

const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FINACK: u8 = 0x11;

fn engine_seeds(out: &Path) {
    let d = out.join("engine");
    let (first, later) = fragments(LAN_HOST, REMOTE);
    let seeds: Vec<(&str, Ops)> = vec![
        (
            "udp-reply-error",
            Ops::new(2)
                .frame(0, &udp(LAN_HOST, REMOTE, 5000, 53, 64))
                .reply(0, 0)
                .icmp_error(1, false)
                .icmp_error(0, true),
        ),
        (
            "tcp-handshake-close",
            Ops::new(2)
                .frame(0, &tcp(LAN_HOST, REMOTE, 40000, 80, "S"))
                .reply(0, SYNACK)
                .frame(0, &tcp(LAN_HOST, REMOTE, 40000, 80, "A"))
                .frame(0, &tcp(LAN_HOST, REMOTE, 40000, 80, "PA"))
                .reply(0, ACK)
                .frame(0, &tcp(LAN_HOST, REMOTE, 40000, 80, "FA"))
                .reply(0, FINACK)
                .secs(30)
                .expire(),
        ),
        (
            "dnat-8080",
            Ops::new(2)
                .frame(1, &tcp(REMOTE, WAN, 51000, 8080, "S"))
                .reply(0, SYNACK)
                .icmp_error(0, false),
        ),
        (
            "dnat-addr",
            Ops::new(2)
                .frame(1, &udp(REMOTE, [203, 0, 113, 2], 5000, 1234, 64))
                .reply(0, 0),
        ),
        (
            "lb-tcp",
            Ops::new(2)
                .frame(1, &tcp(REMOTE, [203, 0, 113, 20], 51000, 80, "S"))
                .reply(0, SYNACK)
                .frame(1, &tcp(REMOTE, [203, 0, 113, 20], 51001, 80, "S"))
                .reply(0, SYNACK)
                .frame(1, &tcp(REMOTE, [203, 0, 113, 20], 51002, 80, "A")),
        ),
        (
            "lb-udp-fullnat",
            Ops::new(2)
                .frame(1, &udp(REMOTE, [203, 0, 113, 21], 5353, 53, 64))
                .reply(0, 0),
        ),
        (
            "ping",
            Ops::new(2)
                .frame(0, &ping(LAN_HOST, REMOTE, 77, false))
                .reply(0, 0)
                .frame(0, &ping(LAN_HOST, [10, 0, 0, 1], 78, false))
                .frame(1, &ping(REMOTE, WAN, 9, true)),
        ),
        (
            "table-full",
            Ops::new(0)
                .frame(0, &udp(LAN_HOST, REMOTE, 1, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 2, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 3, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 4, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 5, 53, 64))
                .reply(0, 0)
                .ms(500)
                .frame(0, &tcp(LAN_HOST, REMOTE, 6, 80, "S"))
                .secs(11)
                .expire()
                .frame(0, &udp(LAN_HOST, REMOTE, 7, 53, 64)),
        ),
        (
            "table-full-no-early-drop",
            Ops::new(4)
                .frame(0, &udp(LAN_HOST, REMOTE, 1, 53, 64))
                .reply(0, 0)
                .frame(0, &udp(LAN_HOST, REMOTE, 2, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 3, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 4, 53, 64))
                .frame(0, &udp(LAN_HOST, REMOTE, 5, 53, 64)),
        ),
        (
            "ttl-expired",
            Ops::new(2)
                .frame(0, &udp(LAN_HOST, REMOTE, 5000, 33434, 1))
                .frame(1, &udp(REMOTE, WAN, 53, 5000, 1))
                .icmp_error(0, false),
        ),
        (
            "fragments",
            Ops::new(2)
                .frame(0, &first)
                .frame(0, &later)
                .secs(31)
                .frame(0, &later),
        ),
        (
            "netmap",
            Ops::new(2)
                .frame(2, &udp([172, 16, 1, 5], REMOTE, 6000, 53, 64))
                .reply(0, 0)
                .frame(1, &udp(REMOTE, [198, 51, 100, 9], 53, 6000, 64)),
        ),
        (
            "snat-pool-exhaust",
            Ops::new(3)
                .frame(0, &udp(POOL_HOST, REMOTE, 1024, 53, 64))
                .frame(0, &udp(POOL_HOST, REMOTE, 1025, 53, 64))
                .frame(0, &udp(POOL_HOST, REMOTE, 1026, 53, 64))
                .frame(0, &udp(POOL_HOST, REMOTE, 1027, 53, 64))
                .frame(0, &udp(POOL_HOST, REMOTE, 1028, 53, 64))
                .reply(2, 0),
        ),
        (
            "eim-eif",
            Ops::new(2)
                .frame(0, &udp(LAN_HOST, REMOTE, 5000, 3478, 64))
                .reply(0, 0)
                .frame(1, &udp([192, 0, 2, 99], WAN, 4444, 5000, 64))
                .reply(0, 0)
                .secs(40)
                .expire(),
        ),
        (
            "hairpin",
            Ops::new(2)
                .frame(0, &tcp([10, 0, 0, 9], WAN, 41000, 8080, "S"))
                .reply(0, SYNACK),
        ),
        (
            "unmatched-drop",
            Ops::new(10)
                .frame(2, &udp([172, 16, 0, 9], [10, 0, 0, 2], 1, 2, 64))
                .frame(1, &udp(REMOTE, [10, 0, 0, 2], 1, 2, 64))
                .frame(1, &udp(REMOTE, WAN, 1, 9, 64)),
        ),
        (
            "tun-udp-tcp",
            Ops::new(34)
                .frame(0, &udp(LAN_HOST, REMOTE, 5000, 53, 64))
                .reply(0, 0)
                .frame(0, &tcp(LAN_HOST, REMOTE, 40000, 80, "S"))
                .reply(0, SYNACK)
                .icmp_error(0, true),
        ),
        (
            "vlan-options",
            Ops::new(2)
                .frame(0, &vlan(&udp(LAN_HOST, REMOTE, 5000, 53, 64), &[42]))
                .reply(0, 0)
                .frame(0, &with_options(&tcp(LAN_HOST, REMOTE, 1, 80, "S")))
                .reply(0, SYNACK),
        ),
        (
            "rst-and-stray",
            Ops::new(2)
                .frame(1, &tcp(REMOTE, WAN, 80, 40000, "RA"))
                .frame(1, &ping(REMOTE, WAN, 5, true))
                .frame(
                    1,
                    &icmp_error_about(&udp(WAN, REMOTE, 1, 2, 64), Link::Ethernet, 3, 3, None, 8)
                        .unwrap(),
                ),
        ),
    ];
    for (name, ops) in seeds {
        write(&d, name, &ops.0);
    }
}

fn arp_seeds(out: &Path) {
    let d = out.join("arp");
    let poll = 3u8;
    let inject = |port: u8, f: &[u8]| {
        let mut v = vec![port << 2, f.len() as u8];
        v.extend_from_slice(f);
        v
    };
    let req = arp(true, HOST, LAN_HOST, [10, 0, 0, 1], [0xff; 6]);
    let req_vip = arp(
        true,
        ROUTER,
        [203, 0, 113, 254],
        [203, 0, 113, 20],
        [0xff; 6],
    );
    let rep = arp(false, ROUTER, [203, 0, 113, 254], WAN, GW_WAN);
    let mut s1 = vec![2u8];
    s1.extend(inject(0, &req));
    s1.push(poll);
    write(&d, "request-for-gw", &s1);
    let mut s2 = vec![2u8];
    s2.extend(inject(0, &udp(LAN_HOST, REMOTE, 5000, 53, 64)));
    s2.push(poll);
    s2.extend(inject(1, &rep));
    s2.push(poll);
    s2.extend(inject(1, &req_vip));
    s2.push(poll);
    write(&d, "resolve-next-hop", &s2);
    let mut s3 = vec![2u8];
    s3.extend(inject(0, &udp(LAN_HOST, REMOTE, 5000, 53, 64)));
    s3.push(poll);
    s3.extend_from_slice(&[2, 0x07, 0xd0]); // 2 s: the held frame times out
    s3.push(poll);
    s3.extend(inject(0, &ping(LAN_HOST, [10, 0, 0, 1], 3, false)));
    s3.push(poll);
    write(&d, "hold-timeout-and-ping", &s3);
    // Bare ARP frames for the codec (variant byte taken from the MAC).
    write(&d, "bare-request", &req);
    write(&d, "bare-reply", &rep[..42]);
}

fn snapshot_seeds(out: &Path) {
    let d = out.join("snapshot");
    let cfg = &harness::configs()[3];
    let engine = cfg.build_engine().unwrap();
    let c = Counters::default();
    let now = Time::from_secs(1000);
    let frames = [
        (0, udp(LAN_HOST, REMOTE, 5000, 3478, 64)),
        (0, tcp(LAN_HOST, REMOTE, 40000, 80, "S")),
        (0, ping(LAN_HOST, REMOTE, 7, false)),
        (0, udp(POOL_HOST, REMOTE, 1024, 53, 64)),
        (1, tcp(REMOTE, [203, 0, 113, 20], 51000, 80, "S")),
        (1, udp(REMOTE, [203, 0, 113, 21], 5353, 53, 64)),
        (2, udp([172, 16, 1, 5], REMOTE, 6000, 53, 64)),
    ];
    for (iif, f) in &frames {
        let mut b = f.clone();
        b.resize(2048, 0);
        let _ = engine.process(&mut b, f.len(), Link::Ethernet, *iif, now, &c);
    }
    if let Some(set) = engine.sets().get("pool") {
        set.add_until("10.0.0.99/32".parse().unwrap(), Some(Time::from_secs(1300)));
    }
    let mut s = Snapshot::capture_at(&engine, now, 1_700_000_000_000_000_000);
    s.counters = Some(c.snapshot());
    let full = encode(&s);
    write(&d, "v2-flows", &[&[0u8][..], &full].concat());
    // The payload alone, for the header-fixing mode (bit 0).
    write(&d, "v2-payload", &[&[1u8][..], &full[32..]].concat());
    let empty = Snapshot::capture_at(&cfg.build_engine().unwrap(), now, 1);
    write(&d, "v2-empty", &[&[0u8][..], &encode(&empty)].concat());
    write(
        &d,
        "v2-empty-payload",
        &[&[1u8][..], &encode(&empty)[32..]].concat(),
    );
    // Payload of one flow only, through the version-1 decoder (bit 1).
    let mut one = s.clone();
    one.flows.truncate(1);
    one.services = None;
    one.counters = None;
    write(
        &d,
        "v1-try-payload",
        &[&[3u8][..], &encode(&one)[32..]].concat(),
    );
    write(&d, "bad-magic", b"\0NATGWSNQ");
}

fn config_seeds(out: &Path) {
    let d = out.join("config");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, path) in [
        ("example", "examples/natgw.toml"),
        ("topology", "scripts/topology/natgw.toml"),
    ] {
        if let Ok(t) = fs::read(root.join(path)) {
            write(&d, name, &t);
        }
    }
    for v in [0u8, 13, 42] {
        write(
            &d,
            &format!("harness-{v}"),
            harness::config_text(v).as_bytes(),
        );
    }
    write(
        &d,
        "minimal",
        b"[[interface]]\nname = \"lan0\"\nrole = \"inside\"\naddress = \"10.0.0.1/24\"\n",
    );
    write(&d, "bad-field", b"[limits]\nmax_flows = 0\n");
    write(&d, "bad-toml", b"[[interface]\nname = ");
}

/// Real sync datagrams: an active node (a harness engine with a real
/// `Ha` sync thread) sends its changes, heartbeats and, when asked, a
/// bulk resync to a socket standing in for the peer; each seed hands them
/// to the `ha` target's receiver as raw datagrams from the peer (op 0),
/// settling now and then (op 4). Not deterministic (epochs are start
/// times, HMACs follow), so `gen_corpus ha` writes these alone.
fn ha_seeds(out: &Path) {
    use natgw::ha::wire::{self, Auth, Header, Kind};
    use natgw::ha::{Ha, HaConfig, Role};
    use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let d = out.join("ha");
    let _ = fs::remove_dir_all(&d);
    for (keyed, key) in [(false, None), (true, Some(natgw_fuzz::ha::KEY.to_vec()))] {
        let text = harness::config_text(64);
        let cfg = natgw::control::config::Config::parse(&text, Path::new("fuzz.toml")).unwrap();
        let engine = Arc::new(cfg.build_engine().unwrap());
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let SocketAddr::V4(peer_addr) = peer.local_addr().unwrap() else {
            unreachable!()
        };
        let local = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let SocketAddr::V4(a) = s.local_addr().unwrap() else {
                unreachable!()
            };
            a
        };
        let ha = Ha::start(
            HaConfig {
                local,
                peer: peer_addr,
                key: key.clone(),
                refresh_secs: 1,
                max_datagram: 1472,
            },
            engine.clone(),
            Role::Master,
        )
        .unwrap();
        let c = Counters::default();
        let lan = engine.interface_id("lan0").unwrap();
        let wan = engine.interface_id("wan0").unwrap();
        let now = natgw::dataplane::sys::now;
        for i in 0..12u16 {
            for (f, iif) in [
                (udp(LAN_HOST, REMOTE, 5000 + i, 53, 64), lan),
                (tcp(LAN_HOST, REMOTE, 40000 + i, 80, "S"), lan),
                (tcp(REMOTE, WAN, 1234 + i, 8080, "S"), wan),
            ] {
                let mut buf = f.clone();
                buf.resize(2048, 0);
                let _ = engine.process(&mut buf, f.len(), Link::Ethernet, iif, now(), &c);
            }
        }
        let auth = key.map_or(Auth::Crc, Auth::Hmac);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut asked = false;
        let end = Instant::now() + Duration::from_millis(900);
        let mut buf = [0u8; 65536];
        while Instant::now() < end {
            if let Ok((n, _)) = peer.recv_from(&mut buf) {
                let dgram = buf[..n].to_vec();
                if !asked
                    && let Ok((h, _)) = wire::decode(&dgram, &auth)
                    && h.kind == Kind::Alive
                {
                    // Ask for a bulk, as a standby that starts does.
                    let r = wire::encode(&Header::new(Kind::Resync, h.epoch), &[], &auth);
                    peer.send_to(&r, SocketAddrV4::from(local)).unwrap();
                    asked = true;
                }
                got.push(dgram);
            }
        }
        drop(ha);
        for (i, chunk) in got.chunks(40).take(4).enumerate() {
            for master in [false, true] {
                let mut seed = vec![u8::from(keyed) | if master { 2 } else { 0 }];
                for (k, g) in chunk.iter().enumerate() {
                    seed.push(0);
                    seed.extend_from_slice(&(g.len() as u16).to_be_bytes());
                    seed.extend_from_slice(g);
                    if k % 8 == 7 {
                        seed.extend_from_slice(&[4, 1]);
                    }
                }
                let name = format!(
                    "{}-{}-{i}",
                    if keyed { "hmac" } else { "crc" },
                    if master { "master" } else { "backup" }
                );
                write(&d, &name, &seed);
            }
        }
    }
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    if std::env::args().nth(1).as_deref() == Some("ha") {
        ha_seeds(&out);
        let n = fs::read_dir(out.join("ha")).map(|d| d.count()).unwrap_or(0);
        println!("seeds/ha: {n} files");
        return;
    }
    let _ = fs::remove_dir_all(&out);
    frame_seeds(&out);
    engine_seeds(&out);
    arp_seeds(&out);
    snapshot_seeds(&out);
    config_seeds(&out);
    ha_seeds(&out);
    for t in ["frame", "engine", "arp", "snapshot", "config", "ha"] {
        let n = fs::read_dir(out.join(t)).map(|d| d.count()).unwrap_or(0);
        println!("seeds/{t}: {n} files");
    }
}
