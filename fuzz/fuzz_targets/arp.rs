//! ARP (src/packet/arp.rs) and the worker's ARP handling. Oracle: `parse`
//! accepts exactly the Ethernet/IPv4 ARP packets etherparse reads, with the
//! same fields; `write` then `parse` gives the packet back; a reply swaps
//! sender and target. Then the input's frames go through a worker on an
//! in-memory device (3 ports, virtual clock; ops: a variant byte, then
//! `o & 3` 0/1 a frame of `u8` bytes on port `(o >> 2) % 3`, 2 the clock
//! moves `u16` ms, 3 a round): every ARP frame it sends is a
//! request from its own port or a reply for an address the gateway owns
//! to the asker; every IPv4 frame it sends has a valid header checksum; the
//! device's frame accounting holds after every round (checked by it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw::conntrack::Time;
use natgw::dataplane::WorkerStats;
use natgw::dataplane::device::Device;
use natgw::dataplane::mem::{MemDevice, MemPortSpec, VirtualClock};
use natgw::dataplane::neigh::Neighbours;
use natgw::dataplane::worker::Worker;
use natgw::packet::{Link, arp};
use natgw_fuzz::{Input, harness, ip_header_ok, ipv4};
use std::sync::Arc;
use std::time::Duration;

fuzz_target!(|data: &[u8]| run(data));

const MACS: [[u8; 6]; 3] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 2, 1]];
const ADDRS: [u32; 3] = [0x0a00_0001, 0xcb00_7101, 0xac10_0001];

fn run(data: &[u8]) {
    check_codec(data);
    let mut inp = Input::new(data);
    let Some(variant) = inp.u8() else {
        return;
    };
    let cfg = &harness::configs()[(variant & 31) as usize];
    let engine = Arc::new(cfg.build_engine().expect("harness config builds"));
    let ports: Vec<MemPortSpec> = (0..3)
        .map(|i| MemPortSpec {
            ifid: i as natgw::nat::IfId,
            mac: MACS[i],
            addr: ADDRS[i],
        })
        .collect();
    let dev = MemDevice::new(Link::Ethernet, &ports, 32, 2048);
    let clock = VirtualClock::new(Time::from_secs(1000));
    let neigh = Arc::new(Neighbours::default());
    let stats = Arc::new(WorkerStats::new("fuzz".into()));
    let mut w = Worker::new(dev, clock.clone(), engine.clone(), neigh, stats, 8);
    let mut rounds = 0;
    while let Some(op) = inp.u8() {
        rounds += 1;
        if rounds > 64 {
            break;
        }
        let port = (op as usize >> 2) % 3;
        match op & 3 {
            0 | 1 => {
                let len = inp.u8().unwrap_or(0) as usize;
                let mut f = inp.take(len).to_vec();
                check_codec(&f);
                natgw_fuzz::fix_checksums(&mut f, Link::Ethernet);
                w.device_mut().inject(port, &f);
            }
            2 => clock.advance(Duration::from_millis(inp.u16().unwrap_or(0) as u64)),
            _ => {
                w.poll().expect("poll");
                for p in 0..3 {
                    w.device_mut().complete(p);
                    for f in w.device_mut().take_sent(p) {
                        check_sent(&engine, p, &f);
                    }
                }
            }
        }
    }
    w.poll().expect("poll");
}

/// What the worker sent out of port `p`.
fn check_sent(engine: &natgw::engine::Engine, p: usize, f: &[u8]) {
    assert!(f.len() >= 14, "runt frame sent: {f:02x?}");
    assert_eq!(&f[6..12], &MACS[p], "sent with another port's source MAC");
    if f[12..14] == [0x08, 0x06] {
        let a = arp::parse(f).expect("natgw sent an ARP frame it cannot parse");
        if a.is_request() {
            assert_eq!(
                (a.sha, a.spa),
                (MACS[p], ADDRS[p]),
                "request not from the port"
            );
            assert_eq!(&f[0..6], &[0xff; 6], "request not broadcast");
        } else {
            assert_eq!(a.op, arp::ARP_REPLY);
            assert_eq!(a.sha, MACS[p]);
            assert!(
                engine.is_local(a.spa),
                "ARP reply for {:#x}, not ours",
                a.spa
            );
            assert_eq!(&f[0..6], &a.tha, "reply not to the asker");
        }
    } else if let Some(s) = ipv4(f, Link::Ethernet) {
        assert!(
            ip_header_ok(&s),
            "IPv4 frame sent with a bad header checksum"
        );
    }
}

/// `parse` against etherparse, `write`/`parse` round trip, `reply`.
fn check_codec(data: &[u8]) {
    let ours = arp::parse(data);
    let theirs = (data.len() >= 42 && data[12..14] == [0x08, 0x06])
        .then(|| etherparse::ArpPacketSlice::from_slice(&data[14..]).ok())
        .flatten()
        .filter(|a| {
            a.hw_addr_type() == etherparse::ArpHardwareId::ETHERNET
                && a.proto_addr_type() == etherparse::EtherType::IPV4
                && a.hw_addr_size() == 6
                && a.proto_addr_size() == 4
        });
    match (ours, theirs) {
        (None, None) => return,
        (Some(a), Some(t)) => {
            assert_eq!(a.op, t.operation().0);
            assert_eq!(&a.sha[..], t.sender_hw_addr());
            assert_eq!(&a.spa.to_be_bytes()[..], t.sender_protocol_addr());
            assert_eq!(&a.tha[..], t.target_hw_addr());
            assert_eq!(&a.tpa.to_be_bytes()[..], t.target_protocol_addr());
        }
        (o, t) => panic!("natgw {o:?}, etherparse {:?}", t.map(|t| t.to_packet())),
    }
    let a = ours.unwrap();
    for room in [41usize, 42, 50, 60, 64] {
        let mut buf = vec![0xa5u8; room];
        match arp::write(&mut buf, [1; 6], [2; 6], &a) {
            None => assert!(room < 42),
            Some(n) => {
                assert_eq!(n, room.min(60));
                assert_eq!(arp::parse(&buf[..n]), Some(a));
                assert!(buf[42..n].iter().all(|&b| b == 0), "padding not zero");
            }
        }
    }
    let r = a.reply([9; 6]);
    assert_eq!(
        (r.op, r.sha, r.spa, r.tha, r.tpa),
        (arp::ARP_REPLY, [9; 6], a.tpa, a.sha, a.spa)
    );
    assert!(!r.is_request());
    assert_eq!(a.is_request(), a.op == arp::ARP_REQUEST);
}
