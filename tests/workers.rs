//! Several workers on one gateway: every worker thread forwards through
//! the same engine and its one shared flow table (any packet may land on
//! any worker, so a flow's two directions may be handled by two threads),
//! while flows are opened and closed around them.
//!
//! What an operator would check after a busy day: no packet of a live
//! connection was dropped or sent out with another connection's
//! translation, and the table holds exactly the connections that are open.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const SERVER: &str = "198.51.100.20:53";

/// Opens a UDP flow from `inside` and returns the outside endpoint it got.
fn open(gw: &Gw, inside: SocketAddrV4) -> SocketAddrV4 {
    let out = gw.on_lan(&udp(&inside.to_string(), SERVER, b"q")).seen();
    assert_eq!(out.dst_sa(), sa(SERVER));
    let reply = gw
        .on_wan(&udp(SERVER, &out.src_sa().to_string(), b"a"))
        .seen();
    assert_eq!(reply.dst_sa(), inside, "the reply of a new flow");
    out.src_sa()
}

fn inside(host: u8, port: u16) -> SocketAddrV4 {
    sa(&format!("10.0.0.{host}:{port}"))
}

/// Two workers keep sending both directions of their own 256 flows each
/// (their tuples spread over the index shards, so both workers read the
/// same shards) while
/// a third thread opens flows of other hosts and closes them again, which
/// takes the shards' write locks and makes them grow. Every packet of a
/// live flow goes out with that flow's translation; nothing is dropped.
#[test]
fn two_workers_and_a_churning_control_thread_share_the_flow_table() {
    let gw = Gw::of(ConfigText::seeded().rule(masquerade_lan()));
    let flows: Vec<Vec<(SocketAddrV4, SocketAddrV4)>> = (0..2u8)
        .map(|w| {
            (0..256u16)
                .map(|k| {
                    let i = inside(10 + w, 20_000 + k);
                    (i, open(&gw, i))
                })
                .collect()
        })
        .collect();
    let live = gw.engine.table().len();
    assert_eq!(live, 512);

    let stop = AtomicBool::new(false);
    let (rounds, churned) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for mine in &flows {
            let (gw, stop, rounds) = (&gw, &stop, &rounds);
            s.spawn(move || {
                let frames: Vec<_> = mine
                    .iter()
                    .map(|&(i, o)| {
                        let q = udp(&i.to_string(), SERVER, b"q");
                        (i, o, q, udp(SERVER, &o.to_string(), b"a"))
                    })
                    .collect();
                while !stop.load(Relaxed) {
                    for (i, o, q, a) in &frames {
                        let out = gw.on_lan(q).seen();
                        assert_eq!(out.src_sa(), *o, "flow {i} lost its translation");
                        assert_eq!(gw.on_wan(a).seen().dst_sa(), *i, "the reply to {o}");
                    }
                    rounds.fetch_add(1, Relaxed);
                }
            });
        }
        let (gw, stop, churned) = (&gw, &stop, &churned);
        s.spawn(move || {
            let start = Instant::now();
            let mut batch = 0u16;
            while start.elapsed() < Duration::from_millis(600) {
                let opened: HashMap<SocketAddrV4, SocketAddrV4> = (0..512u16)
                    .map(|k| {
                        let i = inside(100 + (batch % 50) as u8, 1024 + k);
                        (i, open(gw, i))
                    })
                    .collect();
                let closed = gw.engine.flush(|r| {
                    opened.contains_key(&SocketAddrV4::new(r.orig.src.into(), r.orig.sport))
                });
                assert_eq!(closed, opened.len(), "the churned flows all close");
                churned.fetch_add(closed as u64, Relaxed);
                batch += 1;
            }
            stop.store(true, Relaxed);
        });
    });
    assert!(
        rounds.load(Relaxed) >= 4,
        "the workers made only {} rounds",
        rounds.load(Relaxed)
    );
    assert!(
        churned.load(Relaxed) >= 1024,
        "too little churn to mean anything"
    );
    assert_eq!(
        gw.engine.table().len(),
        live,
        "exactly the open flows remain"
    );
    assert_eq!(
        gw.counters.snapshot().drops,
        Default::default(),
        "no packet was dropped"
    );
}
