//! The engine's own cost of a tunnel (issue 14), in one process, no I/O:
//! 64-byte UDP (60-byte frames) on 1024 live flows through
//!
//! - `plain`: gateway A routing to B's network by a plain route;
//! - `encap`: A routing it into an IPIP / GRE tunnel (encapsulation);
//! - `decap`: B receiving the tunnel's packets (decapsulation, then the
//!   flow lookup of the inner datagram) — beside B routing the same inner
//!   datagram unencapsulated (`plain` at B).
//!
//! Each case runs `ROUNDS` times, interleaved, `N` packets a round; the
//! report is the fastest round of each (the least disturbed by other work
//! on a shared machine) and the median.
//!
//! `cargo run --release --example tunnel_cost`

use natgw::conntrack::Time;
use natgw::control::config::Config;
use natgw::engine::{Counters, Engine, Verdict};
use natgw::packet::Link;
use natgw::packet::tunnel::{Mode, encap};
use std::path::Path;
use std::time::Instant;

const N: usize = 200_000;
const ROUNDS: usize = 9;
const FLOWS: u16 = 1024;

fn engine(text: &str) -> Engine {
    Config::parse(text, Path::new("tunnel_cost.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .build_engine()
        .expect("engine")
}

fn gw(lan: &str, wan: &str, routes: &str) -> String {
    format!(
        "[gateway]\nunmatched = \"forward\"\n\n[[interface]]\nname = \"lan0\"\nrole = \"inside\"\naddress = \"{lan}\"\n\n[[interface]]\nname = \"wan0\"\nrole = \"outside\"\naddress = \"{wan}\"\n{routes}"
    )
}

fn tunnel(mode: &str, local: &str, remote: &str) -> String {
    let key = if mode == "gre" { "key = 7\n" } else { "" };
    format!(
        "\n[[tunnel]]\nname = \"tun1\"\nmode = \"{mode}\"\n{key}local = \"{local}\"\nremote = \"{remote}\"\n"
    )
}

/// A 60-byte Ethernet + IPv4 + UDP frame of flow `i` from 10.0.0.10 to
/// 10.9.0.5 (full checksums).
fn frame(i: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 10], [10, 9, 0, 5], 64)
        .udp(1024 + i, 7000);
    let mut v = Vec::new();
    b.write(&mut v, &[0u8; 18]).expect("frame");
    v
}

/// Runs `frames` round-robin through `e` on `iif`, `N` packets; returns
/// ns per packet (the frame copy into the buffer included, as a worker's
/// receive does not have it: the same for every case).
fn run(e: &Engine, frames: &[Vec<u8>], iif: u16, c: &Counters) -> f64 {
    let mut buf = vec![0u8; 2048];
    let t0 = Instant::now();
    for k in 0..N {
        let f = &frames[k % frames.len()];
        buf[..f.len()].copy_from_slice(f);
        let v = e.process(
            &mut buf,
            f.len(),
            Link::Ethernet,
            iif,
            Time(1_000_000_000),
            c,
        );
        if !matches!(v, Verdict::Forward { .. } | Verdict::Reply { .. }) {
            panic!("not forwarded: {v:?}");
        }
    }
    t0.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let plain_a = engine(&gw(
        "10.0.0.1/24",
        "203.0.113.1/24",
        "\n[[route]]\nto = \"10.9.0.0/24\"\nvia = \"203.0.113.50\"\n",
    ));
    let plain_b = engine(&gw("10.9.0.1/24", "203.0.113.50/24", ""));
    let frames: Vec<Vec<u8>> = (0..FLOWS).map(frame).collect();
    let mut cases: Vec<(String, Engine, Vec<Vec<u8>>, u16)> = vec![
        ("plain at A".into(), plain_a, frames.clone(), 0),
        ("plain at B".into(), plain_b, frames.clone(), 1),
    ];
    for (mode, m) in [("ipip", Mode::Ipip), ("gre", Mode::Gre { key: Some(7) })] {
        let a = engine(&gw(
            "10.0.0.1/24",
            "203.0.113.1/24",
            &format!(
                "{}\n[[route]]\nto = \"10.9.0.0/24\"\ndev = \"tun1\"\n",
                tunnel(mode, "203.0.113.1", "203.0.113.50")
            ),
        ));
        let b = engine(&gw(
            "10.9.0.1/24",
            "203.0.113.50/24",
            &tunnel(mode, "203.0.113.50", "203.0.113.1"),
        ));
        // What B receives: A's frames in the tunnel.
        let wrapped: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut v = f.clone();
                v.resize(f.len() + 64, 0);
                let n = encap(&mut v, 14, f.len(), m, 0xcb00_7101, 0xcb00_7132).expect("room");
                v.truncate(n);
                v
            })
            .collect();
        cases.push((format!("encap {mode} at A"), a, frames.clone(), 0));
        cases.push((format!("decap {mode} at B"), b, wrapped, 1));
    }
    let c = Counters::default();
    // Create every flow once (new-flow cost is not what is measured).
    for (_, e, f, iif) in &cases {
        let mut buf = vec![0u8; 2048];
        for fr in f {
            buf[..fr.len()].copy_from_slice(fr);
            let _ = e.process(
                &mut buf,
                fr.len(),
                Link::Ethernet,
                *iif,
                Time(1_000_000_000),
                &c,
            );
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (k, (_, e, f, iif)) in cases.iter_mut().enumerate() {
            times[k].push(run(e, f, *iif, &c));
        }
    }
    println!(
        "engine ns per packet, 60-byte UDP frames, {FLOWS} flows, {ROUNDS} rounds x {N} packets (interleaved)"
    );
    println!("{:<18} {:>8} {:>8}", "case", "min", "median");
    let mut res = Vec::new();
    for (k, (name, ..)) in cases.iter().enumerate() {
        let mut t = times[k].clone();
        t.sort_by(f64::total_cmp);
        let (min, med) = (t[0], t[t.len() / 2]);
        println!("{name:<18} {min:>8.1} {med:>8.1}");
        res.push((name.clone(), min));
    }
    let get = |n: &str| {
        res.iter()
            .find(|(k, _)| k == n)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    for mode in ["ipip", "gre"] {
        println!(
            "{mode}: encap +{:.1} ns, decap +{:.1} ns per packet over plain forwarding (fastest rounds)",
            get(&format!("encap {mode} at A")) - get("plain at A"),
            get(&format!("decap {mode} at B")) - get("plain at B")
        );
    }
}
