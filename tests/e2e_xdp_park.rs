//! The XDP program between two natgw processes: with no AF_XDP socket
//! registered it parks natgw's frames in a BPF queue instead of losing
//! them; released, it stays attached (pinned) and keeps parking; the next
//! attach adopts it with the parked frames; dropped, it detaches and its
//! pins go; pins of a vanished namespace are cleaned up.
//!
//! Uses the minimal topology (cl1 ── lan0 gw) and the public loader API
//! (`natgw::dataplane::xdp`) directly, no natgw process. The attach runs on
//! a thread that entered the gateway's namespace (XDP attach and the pin
//! directory name are per network namespace).
//!
//! Needs root (network namespaces, bpffs); skipped with a message otherwise.

mod netns;

use natgw::dataplane::xdp::{self, ParkQueue, XdpProg};
use netns::{Spec, Topology};
use std::fs::File;
use std::time::{Duration, Instant};

const PORT: u16 = 9999;

/// Runs `f` on a thread inside namespace `ns` (the thread leaves nothing
/// behind: it ends with `f`).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// Attaches natgw's program to the gateway's lan0.
fn attach(t: &Topology) -> XdpProg {
    in_ns(&t.ns("gw"), || {
        let ifindex = natgw::dataplane::sys::ifindex("lan0").expect("lan0");
        XdpProg::attach("lan0", ifindex, None).expect("attach XDP to lan0")
    })
}

/// The minimal topology, cl1 told the gateway's MAC (a parked ARP request
/// would get no answer).
fn topology(test: &str) -> Option<Topology> {
    let t = Topology::new_or_skip(Spec::minimal(), test)?;
    let mac = t.run("gw", "cat /sys/class/net/lan0/address");
    t.run(
        "cl1",
        &format!(
            "ip neigh replace {} lladdr {} dev eth0 nud permanent",
            netns::GW_LAN,
            mac.trim()
        ),
    );
    Some(t)
}

/// Sends one UDP datagram per payload from cl1 to the gateway, in order.
fn send_udp(t: &Topology, payloads: &[String]) {
    let list = payloads
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for p in [{list}]:\n    s.sendto(p.encode(), ('{}', {PORT}))\n",
        netns::GW_LAN
    );
    let out = t.exec_args(
        "cl1",
        &netns::python(),
        &["-c", &script],
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "sending UDP from cl1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A popped frame: its UDP payload to PORT (None for any other frame), age.
struct Popped {
    udp_payload: Option<Vec<u8>>,
    age: Duration,
    queue: u32,
}

/// Pops everything parked.
fn drain(q: &ParkQueue) -> Vec<Popped> {
    let mut buf = vec![0u8; ParkQueue::MAX_FRAME];
    let mut out = Vec::new();
    while let Some(p) = q.pop(&mut buf).expect("pop") {
        let frame = &buf[..p.len];
        let udp_payload = etherparse::SlicedPacket::from_ethernet(frame)
            .ok()
            .and_then(|s| match s.transport {
                Some(etherparse::TransportSlice::Udp(u)) if u.destination_port() == PORT => {
                    Some(u.payload().to_vec())
                }
                _ => None,
            });
        out.push(Popped {
            udp_payload,
            age: Duration::from_nanos(p.age_ns),
            queue: p.queue,
        });
    }
    out
}

fn payloads(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag}-{i:03}-natgw-parked"))
        .collect()
}

/// The UDP payloads among the popped frames, in pop order.
fn udp_payloads(popped: &[Popped]) -> Vec<String> {
    popped
        .iter()
        .filter_map(|p| p.udp_payload.as_ref())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// The XDP program id on lan0 per `ip -j link`, or None (no program).
fn xdp_prog_id(t: &Topology) -> Option<u64> {
    let out = t.run("gw", "ip -j -d link show dev lan0");
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
}

#[test]
fn frames_without_a_socket_are_parked_byte_for_byte_in_order() {
    let Some(t) = topology("frames_without_a_socket_are_parked") else {
        return;
    };
    let prog = attach(&t);
    assert!(prog.pinned(), "bpffs is mounted: the program is pinned");
    assert!(!prog.adopted(), "nothing to adopt on a fresh interface");
    eprintln!("attached in {:?} mode", prog.mode);
    // Unregistering a queue that has no socket is fine.
    prog.unregister(0).expect("unregister an empty queue");
    let q = prog.park_queue().expect("park queue");
    assert!(drain(&q).iter().all(|p| p.udp_payload.is_none()));

    let sent = payloads("a", 20);
    send_udp(&t, &sent);
    let popped = drain(&q);
    assert_eq!(
        udp_payloads(&popped),
        sent,
        "every datagram parked, in order"
    );
    for p in popped.iter().filter(|p| p.udp_payload.is_some()) {
        assert!(p.age < Duration::from_secs(10), "age {:?}", p.age);
        assert_eq!(p.queue, 0, "veth receives on queue 0");
    }
    // Ages grow toward the oldest: the first popped is the oldest.
    let ages: Vec<Duration> = popped.iter().map(|p| p.age).collect();
    assert!(ages.first() >= ages.last(), "oldest first: {ages:?}");
    let c = prog.counters();
    assert!(c[4] >= sent.len() as u64, "counted as parked: {c:?}");
    assert_eq!(c[0], 0, "nothing redirected: {c:?}");
    assert_eq!(c[5] + c[6], 0, "nothing dropped: {c:?}");
    assert!(
        q.pop(&mut [0u8; ParkQueue::MAX_FRAME]).unwrap().is_none(),
        "drained"
    );

    // A buffer too small for a frame is refused before anything is popped.
    send_udp(&t, &payloads("b", 1));
    assert!(q.pop(&mut [0u8; 100]).is_err());
    assert_eq!(udp_payloads(&drain(&q)), payloads("b", 1));
    drop(prog);
}

#[test]
fn released_program_keeps_parking_and_is_adopted() {
    let Some(t) = topology("released_program_keeps_parking") else {
        return;
    };
    let old = attach(&t);
    let dir = old.pin_dir().expect("pinned").to_path_buf();
    let old_id = xdp_prog_id(&t).expect("program attached");
    old.release();

    // No process holds it: still attached, still parking.
    assert_eq!(
        xdp_prog_id(&t),
        Some(old_id),
        "still attached after release"
    );
    assert!(dir.join("link").exists() && dir.join("parked").exists());
    let sent = payloads("handover", 50);
    send_udp(&t, &sent);

    let new = attach(&t);
    assert!(new.adopted(), "the pinned link is adopted");
    assert!(new.pinned());
    let new_id = xdp_prog_id(&t).expect("program attached");
    assert_ne!(new_id, old_id, "the new process's program runs now");
    let c = new.counters();
    assert!(c[4] >= sent.len() as u64, "counters carried over: {c:?}");
    let q = new.park_queue().expect("park queue");
    assert_eq!(
        udp_payloads(&drain(&q)),
        sent,
        "frames parked between the processes are there for the new one"
    );

    // A normal stop: detached, pins gone.
    drop(new);
    assert_eq!(xdp_prog_id(&t), None, "detached after drop");
    assert!(!dir.exists(), "pin directory {} removed", dir.display());
}

#[test]
fn stale_pins_of_a_deleted_namespace_are_removed() {
    let Some(t) = topology("stale_pins_of_a_deleted_namespace") else {
        return;
    };
    let prog = attach(&t);
    let dir = prog.pin_dir().expect("pinned").to_path_buf();
    prog.release();
    xdp::remove_stale_pins();
    assert!(dir.exists(), "a live interface's pins are kept");

    let out = std::process::Command::new("ip")
        .args(["netns", "del", &t.ns("gw")])
        .output()
        .expect("ip netns del");
    assert!(out.status.success(), "ip netns del gw");
    // The namespace (and the veth) go away asynchronously.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut removed = 0;
    while dir.exists() && Instant::now() < deadline {
        removed += xdp::remove_stale_pins();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir.exists(), "stale pins {} removed", dir.display());
    assert!(removed >= 1);
}

/// Creates and pins at `path` a per-CPU array of u64 with `entries`
/// entries, as an older natgw's `stats` map might have been (python3 and
/// the bpf(2) syscall: the tests have no `unsafe` and no bpftool).
fn pin_old_stats_map(path: &std::path::Path, entries: u32) {
    let script = r#"
import ctypes, platform, struct, sys
nr = {"x86_64": 321, "aarch64": 280}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
attr = ctypes.create_string_buffer(struct.pack("IIIII", 6, 4, 8, int(sys.argv[2]), 0), 128)
fd = libc.syscall(nr, 0, attr, 128)  # BPF_MAP_CREATE, PERCPU_ARRAY
assert fd >= 0, ctypes.get_errno()
path = ctypes.create_string_buffer(sys.argv[1].encode())
attr = ctypes.create_string_buffer(struct.pack("QII", ctypes.addressof(path), fd, 0), 128)
assert libc.syscall(nr, 6, attr, 128) == 0, ctypes.get_errno()  # BPF_OBJ_PIN
"#;
    let out = std::process::Command::new(netns::python())
        .args(["-c", script, path.to_str().unwrap(), &entries.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pinning a map: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_incompatible_pinned_map_is_recreated_and_the_rest_kept() {
    let Some(t) = topology("an_incompatible_pinned_map") else {
        return;
    };
    let old = attach(&t);
    let dir = old.pin_dir().expect("pinned").to_path_buf();
    old.release();
    let sent = payloads("compat", 5);
    send_udp(&t, &sent);
    // An older natgw had 4 counters: its `stats` pin differs from ours.
    std::fs::remove_file(dir.join("stats")).expect("unpin stats");
    pin_old_stats_map(&dir.join("stats"), 4);

    let new = attach(&t);
    assert!(new.adopted(), "the link is adopted all the same");
    assert_eq!(new.counters(), [0; xdp::N_COUNTERS], "fresh counters");
    let q = new.park_queue().expect("park queue");
    assert_eq!(
        udp_payloads(&drain(&q)),
        sent,
        "the compatible `parked` map was kept with its frames"
    );
    send_udp(&t, &payloads("after", 3));
    assert!(new.counters()[4] >= 3, "the new `stats` map counts");
    assert_eq!(udp_payloads(&drain(&q)), payloads("after", 3));
    drop(new);
    assert!(!dir.exists());
    assert_eq!(xdp_prog_id(&t), None);
}

#[test]
fn an_old_process_dropping_after_the_takeover_leaves_the_new_ones_pins() {
    let Some(t) = topology("old_process_dropping_after_takeover") else {
        return;
    };
    let old = attach(&t);
    let dir = old.pin_dir().expect("pinned").to_path_buf();
    // The new process adopts while the old one still holds its link.
    let new = attach(&t);
    assert!(new.adopted());
    let new_id = xdp_prog_id(&t);
    drop(old);
    assert!(dir.join("link").exists(), "the new process's pins stay");
    assert_eq!(xdp_prog_id(&t), new_id, "the new program stays attached");
    send_udp(&t, &payloads("still", 2));
    let q = new.park_queue().expect("park queue");
    assert_eq!(udp_payloads(&drain(&q)), payloads("still", 2));
    drop(new);
    assert_eq!(xdp_prog_id(&t), None);
    assert!(!dir.exists());
}
