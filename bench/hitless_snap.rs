//! Writes the snapshot `bench/hitless.sh` starts natgw from for its
//! 1M-flow handover (`EVENTS=handover-1m`): N live UDP flows that the
//! shared topology's `lan-out` masquerade rule (src 10.0.0.0/24, out of
//! wan0 = 203.0.113.1) could have made, as a running natgw writes them.
//!
//! Masquerade without `mapping = "endpoint-independent"` is
//! endpoint-dependent: an outside port is unique per remote, so N flows
//! need not fit one address's 64k ports. Flow i: inside host
//! 10.0.0.20 + i mod 200, port 1024 + (i / 200) mod 5000 (1M distinct
//! inside endpoints), to remote 198.18.0.0 + i / 50000 port 53 (20
//! remotes), outside 203.0.113.1 port 10000 + i mod 50000 (unique per
//! remote). None of them is the benchmark's own stream (10.0.0.10 to
//! 203.0.113.100:9). Two-way (SEEN_REPLY | ASSURED, the `udp_stream`
//! timeout of 120 s), LEFT seconds left at the capture, which is now.
//!
//! Usage: `cargo run --release --example hitless_snap -- OUT [N [LEFT]]`
//! (N = 1000000, LEFT = 110).

use natgw::conntrack::{TcpState, flags};
use natgw::nat::nat_flags;
use natgw::packet::{Tuple, proto};
use natgw::snapshot::{self, FlowEntry, Snapshot};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn ip(s: &str) -> u32 {
    s.parse::<Ipv4Addr>().expect("address").into()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: hitless_snap OUT [N [LEFT_S]]");
        std::process::exit(2);
    };
    let n: u32 = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let left_s: u64 = args.next().map_or(110, |s| s.parse().expect("LEFT_S"));
    assert!(
        n <= 20 * 50_000,
        "at most 1,000,000 flows (20 remotes x 50,000 ports)"
    );
    let t = Instant::now();
    let (inside, remote, outside) = (ip("10.0.0.20"), ip("198.18.0.0"), ip("203.0.113.1"));
    let flows = (0..n)
        .map(|i| {
            let orig = Tuple {
                src: inside + i % 200,
                dst: remote + i / 50_000,
                sport: 1024 + ((i / 200) % 5000) as u16,
                dport: 53,
                proto: proto::UDP,
            };
            let out = Tuple {
                src: outside,
                sport: 10_000 + (i % 50_000) as u16,
                ..orig
            };
            FlowEntry {
                orig,
                reply: out.invert(),
                tcp_state: TcpState::None,
                flags: flags::SEEN_REPLY | flags::ASSURED | nat_flags::SNAT,
                mark: 0,
                packets: [3, 2],
                bytes: [180, 240],
                // Spread a little so they do not all run out at once.
                remaining_ns: (left_s * 1000 - u64::from(i % 1000)) * 1_000_000,
                age_ns: 0,
            }
        })
        .collect::<Vec<_>>();
    debug_assert!(flows.iter().all(FlowEntry::is_consistent));
    let snap = Snapshot {
        version: snapshot::CURRENT_VERSION,
        captured_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64,
        flows,
        eim: vec![],
        sets: vec![],
        persistence: vec![],
        services: Some(vec![]),
        counters: None,
    };
    let bytes = snapshot::write_atomic(&out, &snap).unwrap_or_else(|e| {
        eprintln!("hitless_snap: {e}");
        std::process::exit(1);
    });
    eprintln!(
        "hitless_snap: {n} flows, {bytes} bytes, {} in {:?}",
        out.display(),
        t.elapsed()
    );
}
